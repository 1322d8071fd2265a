//! The restore target, reached only through directory handles.
//!
//! The target is opened once; every entry is then created, opened, changed or removed relative
//! to that handle, with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` and the `*at` calls.
//! Another writer of the same volume (a second pod mounting the claim) may swap a restored
//! directory for a symlink at any moment: no path resolved here follows it out of the target.
//! Entries are created exclusively and their identity (device, inode, type) recorded; one
//! opened again must still be that entry. Anything else fails the restore, naming the entry,
//! before anything is written through it.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{
    FileStat, Mode, SFlag, UtimensatFlags, fchmod, fstat, fstatat, futimens, mkdirat, mknodat,
    utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fchownat, fsync, symlinkat, unlinkat};
use rustic_core::jiff::Timestamp;
use rustic_core::repofile::Metadata;

use super::EngineError;
use crate::handles::{names, open_beneath, remove_all};

/// The most a claim file may hold; a larger one is not a claim.
const MAX_SMALL_FILE: u64 = 4096;

/// What a restore sets on an entry it created, out of the snapshot's metadata: a third of its
/// size, which counts with a hundred thousand files planned at once.
#[derive(Debug, Clone, Copy)]
pub(super) struct Attributes {
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    mtime: Option<Timestamp>,
    atime: Option<Timestamp>,
}

impl From<&Metadata> for Attributes {
    fn from(meta: &Metadata) -> Self {
        Self {
            mode: meta.mode,
            uid: meta.uid,
            gid: meta.gid,
            mtime: meta.mtime,
            atime: meta.atime,
        }
    }
}

/// What an entry was when the restore created it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Identity {
    dev: u64,
    ino: u64,
    kind: u32,
}

impl Identity {
    fn of(stat: &FileStat) -> Self {
        Self {
            dev: stat.st_dev,
            ino: stat.st_ino,
            kind: stat.st_mode & SFlag::S_IFMT.bits(),
        }
    }
}

/// The last component of a path relative to the target.
fn name_of(relative: &Path) -> &OsStr {
    relative.file_name().unwrap_or(relative.as_os_str())
}

/// The opened restore target.
pub(super) struct Target {
    root: OwnedFd,
    /// Where the target is, for messages only: nothing is opened by this path.
    path: PathBuf,
}

impl Target {
    /// Opens the target directory, creating it first if it is missing. A symlink is refused.
    pub(super) fn open(path: &Path) -> Result<Self, EngineError> {
        let error = |cause: String| EngineError::Target {
            path: path.to_owned(),
            cause,
        };
        match fs::symlink_metadata(path) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(path).map_err(|err| error(err.to_string()))?;
            }
            Err(err) => return Err(error(err.to_string())),
            Ok(metadata) if metadata.file_type().is_symlink() => {
                return Err(error(
                    "it is a symbolic link; give the real directory".to_owned(),
                ));
            }
            Ok(metadata) if !metadata.is_dir() => {
                return Err(error("it is not a directory".to_owned()));
            }
            Ok(_) => {}
        }
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let root = nix::fcntl::open(path, flags, Mode::empty())
            .map_err(|errno| error(io::Error::from(errno).to_string()))?;
        let path = path.canonicalize().map_err(|err| error(err.to_string()))?;
        Ok(Self { root, path })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The failure of `action` on `entry`: a sign of another writer when the entry is gone,
    /// exists already, or is reached through a link or another file system.
    pub(super) fn error(&self, action: &'static str, entry: &Path, errno: Errno) -> EngineError {
        match errno {
            Errno::EEXIST
            | Errno::ELOOP
            | Errno::EXDEV
            | Errno::ENOTDIR
            | Errno::EISDIR
            | Errno::ENOENT
            | Errno::ENXIO => self.changed(entry, format!("{action}: {}", errno.desc())),
            _ => self.io_error(action, entry, io::Error::from(errno)),
        }
    }

    pub(super) fn io_error(
        &self,
        action: &'static str,
        entry: &Path,
        source: io::Error,
    ) -> EngineError {
        let path = self.path.join(entry);
        if source.raw_os_error() == Some(Errno::ENOSPC as i32) {
            EngineError::TargetFull {
                action,
                path,
                source,
            }
        } else {
            EngineError::Write {
                action,
                path,
                source,
            }
        }
    }

    pub(super) fn changed(&self, entry: &Path, cause: String) -> EngineError {
        EngineError::TargetChanged {
            target: self.path.clone(),
            entry: entry.to_owned(),
            cause,
        }
    }

    /// The names directly in the target.
    pub(super) fn entries(&self) -> Result<Vec<OsString>, EngineError> {
        names(&self.root)
            .map_err(|errno| self.io_error("list", Path::new(""), io::Error::from(errno)))
    }

    /// A handle of the directory `relative` (the target itself when empty), for the `*at` calls.
    pub(super) fn open_dir(&self, relative: &Path) -> Result<OwnedFd, EngineError> {
        open_beneath(
            &self.root,
            relative,
            OFlag::O_PATH | OFlag::O_DIRECTORY,
            Mode::empty(),
        )
        .map_err(|errno| self.error("open directory", relative, errno))
    }

    /// Creates the directory `relative`, owner-only until its metadata is set, in its parent.
    pub(super) fn create_dir(
        &self,
        parent: &OwnedFd,
        relative: &Path,
    ) -> Result<Identity, EngineError> {
        let name = name_of(relative);
        mkdirat(parent, name, Mode::S_IRWXU)
            .map_err(|errno| self.error("create directory", relative, errno))?;
        self.identity_at(parent, relative, SFlag::S_IFDIR)
    }

    /// The identity of the entry `relative` just created in `parent`, which must be a `kind`.
    fn identity_at(
        &self,
        parent: &OwnedFd,
        relative: &Path,
        kind: SFlag,
    ) -> Result<Identity, EngineError> {
        let stat = fstatat(parent, name_of(relative), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|errno| self.error("look at", relative, errno))?;
        let identity = Identity::of(&stat);
        if identity.kind != kind.bits() {
            return Err(self.changed(relative, "it was replaced just after its creation".into()));
        }
        Ok(identity)
    }

    /// Creates the file `relative`, which must not exist yet, and opens it for writing.
    pub(super) fn create_file(&self, relative: &Path) -> Result<(File, Identity), EngineError> {
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL;
        let fd = open_beneath(&self.root, relative, flags, Mode::S_IRUSR | Mode::S_IWUSR)
            .map_err(|errno| self.error("create file", relative, errno))?;
        let stat = fstat(&fd).map_err(|errno| self.error("create file", relative, errno))?;
        Ok((File::from(fd), Identity::of(&stat)))
    }

    /// Opens an entry this restore created, with `flags`, checking that it still is that entry.
    /// Never blocks: a FIFO put in a file's place fails to open or fails the check.
    pub(super) fn open_created(
        &self,
        relative: &Path,
        flags: OFlag,
        expected: Identity,
    ) -> Result<OwnedFd, EngineError> {
        let fd = open_beneath(
            &self.root,
            relative,
            flags | OFlag::O_NONBLOCK,
            Mode::empty(),
        )
        .map_err(|errno| self.error("open", relative, errno))?;
        let stat = fstat(&fd).map_err(|errno| self.error("open", relative, errno))?;
        if Identity::of(&stat) != expected {
            return Err(self.changed(relative, "it was replaced by another entry".into()));
        }
        Ok(fd)
    }

    pub(super) fn create_symlink(
        &self,
        parent: &OwnedFd,
        relative: &Path,
        link: &Path,
    ) -> Result<(), EngineError> {
        symlinkat(link, parent, name_of(relative))
            .map_err(|errno| self.error("create symlink", relative, errno))
    }

    pub(super) fn create_fifo(
        &self,
        parent: &OwnedFd,
        relative: &Path,
    ) -> Result<Identity, EngineError> {
        let mode = Mode::S_IRUSR | Mode::S_IWUSR;
        mknodat(parent, name_of(relative), SFlag::S_IFIFO, mode, 0)
            .map_err(|errno| self.error("create FIFO", relative, errno))?;
        self.identity_at(parent, relative, SFlag::S_IFIFO)
    }

    /// Sets ownership (as root only), then the mode, then the times of an open entry.
    pub(super) fn set_metadata(
        &self,
        fd: impl AsFd,
        relative: &Path,
        meta: &Attributes,
        as_root: bool,
    ) -> Result<(), EngineError> {
        if as_root {
            fchown(
                &fd,
                meta.uid.map(Uid::from_raw),
                meta.gid.map(Gid::from_raw),
            )
            .map_err(|errno| self.error("set the owner of", relative, errno))?;
        }
        if let Some(mode) = meta.mode {
            fchmod(&fd, Mode::from_bits_truncate(unix_mode(mode)))
                .map_err(|errno| self.error("set the mode of", relative, errno))?;
        }
        if let Some(mtime) = &meta.mtime {
            let atime = meta.atime.as_ref().unwrap_or(mtime);
            futimens(&fd, &timespec(atime), &timespec(mtime))
                .map_err(|errno| self.error("set the times of", relative, errno))?;
        }
        Ok(())
    }

    /// A symlink's owner and times, by its name in its parent, never following it. Its own mode
    /// means nothing on Linux.
    pub(super) fn set_link_metadata(
        &self,
        parent: &OwnedFd,
        relative: &Path,
        meta: &Attributes,
        as_root: bool,
    ) -> Result<(), EngineError> {
        let name = name_of(relative);
        if as_root {
            let (uid, gid) = (meta.uid.map(Uid::from_raw), meta.gid.map(Gid::from_raw));
            fchownat(parent, name, uid, gid, AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(|errno| self.error("set the owner of", relative, errno))?;
        }
        if let Some(mtime) = &meta.mtime {
            let atime = meta.atime.as_ref().unwrap_or(mtime);
            let flag = UtimensatFlags::NoFollowSymlink;
            utimensat(parent, name, &timespec(atime), &timespec(mtime), flag)
                .map_err(|errno| self.error("set the times of", relative, errno))?;
        }
        Ok(())
    }

    /// The content of the small regular file `relative`; `None` when there is none.
    pub(super) fn read_small_file(&self, relative: &Path) -> Result<Option<Vec<u8>>, EngineError> {
        let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK;
        let fd = match open_beneath(&self.root, relative, flags, Mode::empty()) {
            Err(Errno::ENOENT) => return Ok(None),
            other => other.map_err(|errno| self.error("read", relative, errno))?,
        };
        let stat = fstat(&fd).map_err(|errno| self.error("read", relative, errno))?;
        let mut content = Vec::new();
        if Identity::of(&stat).kind == SFlag::S_IFREG.bits() {
            File::from(fd)
                .take(MAX_SMALL_FILE)
                .read_to_end(&mut content)
                .map_err(|err| self.io_error("read", relative, err))?;
        }
        Ok(Some(content))
    }

    /// Whether `relative` is a regular file in the target, reached without any link.
    pub(super) fn holds_file(&self, relative: &Path) -> bool {
        open_beneath(&self.root, relative, OFlag::O_PATH, Mode::empty())
            .and_then(fstat)
            .is_ok_and(|stat| Identity::of(&stat).kind == SFlag::S_IFREG.bits())
    }

    /// Writes `content` into the file `relative`, created anew when `create`, and makes it and
    /// its name durable before returning.
    pub(super) fn write_durably(
        &self,
        relative: &Path,
        content: &str,
        create: bool,
    ) -> Result<(), EngineError> {
        // openat2 refuses a mode without O_CREAT.
        let (flags, mode) = if create {
            let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL;
            (flags, Mode::S_IRUSR | Mode::S_IWUSR)
        } else {
            (OFlag::O_WRONLY | OFlag::O_APPEND, Mode::empty())
        };
        let fd = open_beneath(&self.root, relative, flags, mode)
            .map_err(|errno| self.error("write", relative, errno))?;
        let mut file = File::from(fd);
        file.write_all(content.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|err| self.io_error("write", relative, err))?;
        self.sync_root()
    }

    /// Removes the file `relative`, durably.
    pub(super) fn remove_file(&self, relative: &Path) -> Result<(), EngineError> {
        unlinkat(&self.root, relative, UnlinkatFlags::NoRemoveDir)
            .map_err(|errno| self.error("remove", relative, errno))?;
        self.sync_root()
    }

    fn sync_root(&self) -> Result<(), EngineError> {
        fsync(&self.root).map_err(|errno| self.error("sync", Path::new(""), errno))
    }

    /// Removes everything in the target but the names in `keep`, through handles: a symlink
    /// is removed, never followed, and a directory is entered only when reached without one.
    pub(super) fn clear(&self, keep: &[&OsStr]) -> Result<(), EngineError> {
        for name in self.entries()? {
            if keep.contains(&name.as_os_str()) {
                continue;
            }
            remove_all(&self.root, &name)
                .map_err(|failed| self.error(failed.action, &failed.entry, failed.errno))?;
        }
        self.sync_root()
    }
}

fn timespec(time: &Timestamp) -> TimeSpec {
    TimeSpec::new(time.as_second(), i64::from(time.subsec_nanosecond()))
}

/// Permission bits from the Go file mode restic stores: the low nine bits, plus Go's own
/// setuid, setgid and sticky bits.
fn unix_mode(go_mode: u32) -> u32 {
    const GO_SETUID: u32 = 1 << 23;
    const GO_SETGID: u32 = 1 << 22;
    const GO_STICKY: u32 = 1 << 20;
    let mut mode = go_mode & 0o777;
    if go_mode & GO_SETUID != 0 {
        mode |= 0o4000;
    }
    if go_mode & GO_SETGID != 0 {
        mode |= 0o2000;
    }
    if go_mode & GO_STICKY != 0 {
        mode |= 0o1000;
    }
    mode
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn go_modes_map_to_unix_permission_bits() {
        assert_eq!(unix_mode(0o644), 0o644);
        assert_eq!(unix_mode((1 << 31) | 0o755), 0o755);
        assert_eq!(unix_mode((1 << 23) | 0o755), 0o4755);
        assert_eq!(unix_mode((1 << 22) | (1 << 20) | 0o775), 0o3775);
    }

    #[test]
    fn a_missing_target_is_created_and_a_symlink_refused() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("a/b");
        let target = Target::open(&missing).unwrap();
        assert_eq!(target.path(), missing.canonicalize().unwrap());
        let link = dir.path().join("link");
        symlink(&missing, &link).unwrap();
        let err = Target::open(&link).err().unwrap().to_string();
        assert!(err.contains("symbolic link"), "{err}");
    }

    #[test]
    fn nothing_is_reached_through_a_symlink_in_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::create_dir(&victim).unwrap();
        let target = Target::open(&dir.path().join("target")).unwrap();
        symlink(&victim, target.path().join("d")).unwrap();
        let err = target.create_file(Path::new("d/f")).err().unwrap();
        assert!(matches!(err, EngineError::TargetChanged { .. }), "{err}");
        assert!(err.to_string().contains("d/f"), "{err}");
        assert!(target.open_dir(Path::new("d")).is_err());
        assert_eq!(fs::read_dir(&victim).unwrap().count(), 0);
    }

    #[test]
    fn clearing_keeps_the_named_entries_and_removes_links_not_their_targets() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("precious"), b"keep").unwrap();
        let target = Target::open(&dir.path().join("target")).unwrap();
        let root = target.path().to_owned();
        fs::create_dir_all(root.join("a/b/c")).unwrap();
        fs::write(root.join("a/b/c/f"), b"x").unwrap();
        fs::create_dir(root.join("lost+found")).unwrap();
        fs::write(root.join(".claim"), b"mine").unwrap();
        symlink(&outside, root.join("a/link")).unwrap();
        target
            .clear(&[OsStr::new("lost+found"), OsStr::new(".claim")])
            .unwrap();
        let mut left = target.entries().unwrap();
        left.sort();
        assert_eq!(
            left,
            [OsString::from(".claim"), OsString::from("lost+found")]
        );
        assert_eq!(fs::read(outside.join("precious")).unwrap(), b"keep");
    }
}
