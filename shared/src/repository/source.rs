//! The backup source: a volume read through directory handles, so that a pod changing its
//! volume during a backup can never steer the agent, which runs as root, outside it.
//!
//! A walk by path, which opens each file again by path, follows a file or directory that the
//! pod swapped for a symlink between the walk and the open. Here
//! the volume is opened once; each directory is opened relative to its parent's handle with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, and each file relative to its directory's
//! handle with `O_NOFOLLOW | O_NONBLOCK`. A file is read only if it is still the regular file
//! (device and inode) that the walk saw; an entry whose type changed in between is left out
//! with a warning, never recorded twice. FIFOs, sockets and devices are recorded as metadata
//! and never opened. The metadata recorded is what restic records, so the restic CLI restores
//! every snapshot the same way.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};
use nix::unistd::{Gid, Group, Uid, User};
use rustic_core::jiff::Timestamp;
use rustic_core::repofile::{Metadata, Node, NodeType};

use super::ProgressCounters;
use crate::handles::{names, open_beneath};

/// Entries named word for word in the socket warning; the rest are counted.
const NAMED_SOCKETS: usize = 5;

/// A volume opened for backup.
pub(crate) struct VolumeSource {
    root: Arc<OwnedFd>,
    path: PathBuf,
    counters: Arc<ProgressCounters>,
    sockets: Arc<Mutex<Vec<PathBuf>>>,
}

/// Why a volume cannot be backed up at all.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenSourceError {
    #[error("it is a symbolic link; give the real directory")]
    Symlink,
    #[error("it is not a directory")]
    NotDirectory,
    #[error("{0}")]
    Io(Errno),
}

impl VolumeSource {
    /// Opens the volume at `path`, which must be a directory and not a symlink.
    pub(crate) fn open(
        path: &Path,
        counters: Arc<ProgressCounters>,
    ) -> Result<Self, OpenSourceError> {
        let root = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|err| match err {
            // O_DIRECTORY is checked before O_NOFOLLOW, so a symlink reads as "not a directory".
            Errno::ELOOP | Errno::ENOTDIR if is_symlink(path) => OpenSourceError::Symlink,
            Errno::ENOTDIR => OpenSourceError::NotDirectory,
            err => OpenSourceError::Io(err),
        })?;
        Ok(Self {
            root: Arc::new(root),
            path: path.to_owned(),
            counters,
            sockets: Arc::default(),
        })
    }

    /// Whether the volume holds no entries at all.
    pub(crate) fn is_empty(&self) -> Result<bool, OpenSourceError> {
        list(&self.root)
            .map(|names| names.len() == 0)
            .map_err(OpenSourceError::Io)
    }

    /// A warning naming the sockets the backup met, which have no contents to keep.
    pub(crate) fn socket_warning(&self) -> Option<String> {
        let sockets = self
            .sockets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if sockets.is_empty() {
            return None;
        }
        let named: Vec<String> = sockets
            .iter()
            .take(NAMED_SOCKETS)
            .map(|path| relative(&self.path, path))
            .collect();
        let more = sockets.len().saturating_sub(NAMED_SOCKETS);
        Some(format!(
            "{} sockets were recorded as names only, since a socket has no contents to back up \
             and a restore does not recreate it: {}{}",
            sockets.len(),
            named.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ))
    }

    fn walk(&self) -> Walk {
        Walk::new(&self.root, &self.path)
    }
}

impl VolumeSource {
    /// Totals the bytes of regular files and the entries that are not directories, for
    /// progress; what cannot be read is left to the backup to report.
    pub(crate) fn count_totals(&self) {
        let (mut bytes, mut files) = (0, 0);
        for visit in self.walk() {
            let Visit::Found(Ok(found)) = visit else {
                continue;
            };
            let kind = file_kind(&found.stat);
            if kind != SFlag::S_IFDIR {
                files += 1;
            }
            if kind == SFlag::S_IFREG {
                bytes += u64::try_from(found.stat.st_size).unwrap_or(0);
            }
        }
        self.counters.set_totals(bytes, files);
    }

    /// The volume's entries in restic's order, each with restic's metadata.
    pub(crate) fn entries(&self) -> Entries {
        Entries {
            walk: self.walk(),
            counters: self.counters.clone(),
            sockets: self.sockets.clone(),
            users: HashMap::new(),
            groups: HashMap::new(),
        }
    }
}

/// A regular file the walk saw, to be opened relative to its directory's handle.
#[derive(Debug)]
pub(crate) struct VolumeFile {
    dir: Arc<OwnedFd>,
    name: OsString,
    path: PathBuf,
    device: u64,
    inode: u64,
}

impl VolumeFile {
    /// The file's path, for messages.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the file beneath its directory, if it is still the regular file the walk saw.
    pub(crate) fn open(self) -> Result<File, Skipped> {
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
        let fd = open_entry(&self.dir, &self.name, flags)
            .map_err(|err| Skipped::from_open(&self.path, err))?;
        let stat = fstat(&fd).map_err(|err| Skipped::io(&self.path, err))?;
        if file_kind(&stat) != SFlag::S_IFREG
            || stat.st_dev != self.device
            || stat.st_ino != self.inode
        {
            return Err(Skipped::replaced(&self.path));
        }
        Ok(File::from(fd))
    }
}

/// One entry of the volume: its node, and for a regular file, the file to read.
pub(crate) struct Entry {
    pub(crate) node: Node,
    pub(crate) open: Option<VolumeFile>,
}

/// One step of the walk, in restic's order: a directory's entry comes before its contents,
/// and the walk leaves each directory it entered (the volume's root last).
pub(crate) enum Step {
    Entry(Box<Entry>),
    Skipped(Skipped),
    Leave,
}

/// The backup's view of the walk: each entry with restic's metadata.
pub(crate) struct Entries {
    walk: Walk,
    counters: Arc<ProgressCounters>,
    sockets: Arc<Mutex<Vec<PathBuf>>>,
    users: HashMap<u32, Option<String>>,
    groups: HashMap<u32, Option<String>>,
}

impl Iterator for Entries {
    type Item = Step;

    fn next(&mut self) -> Option<Step> {
        Some(match self.walk.next()? {
            Visit::Leave => Step::Leave,
            Visit::Found(Ok(found)) => match self.entry(found) {
                Ok(entry) => Step::Entry(Box::new(entry)),
                Err(skipped) => Step::Skipped(skipped),
            },
            Visit::Found(Err(skipped)) => Step::Skipped(skipped),
        })
    }
}

impl Entries {
    fn entry(&mut self, found: Found) -> Result<Entry, Skipped> {
        let stat = &found.stat;
        let mut open = None;
        let node_type = match file_kind(stat) {
            SFlag::S_IFDIR => NodeType::Dir,
            SFlag::S_IFREG => {
                open = Some(VolumeFile {
                    dir: found.dir.clone(),
                    name: found.name.clone(),
                    path: found.path.clone(),
                    device: stat.st_dev,
                    inode: stat.st_ino,
                });
                NodeType::File
            }
            SFlag::S_IFLNK => {
                let target = readlinkat(found.dir.as_ref(), found.name.as_os_str()).map_err(
                    |err| match err {
                        Errno::EINVAL | Errno::ENOENT => Skipped::replaced(&found.path),
                        err => Skipped::io(&found.path, err),
                    },
                )?;
                NodeType::from_link(Path::new(&target))
            }
            SFlag::S_IFIFO => NodeType::Fifo,
            SFlag::S_IFCHR => NodeType::Chardev {
                device: stat.st_rdev,
            },
            SFlag::S_IFBLK => NodeType::Dev {
                device: stat.st_rdev,
            },
            SFlag::S_IFSOCK => {
                self.sockets
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .push(found.path.clone());
                NodeType::Socket
            }
            _ => return Err(Skipped::unknown_type(&found.path)),
        };
        if !matches!(node_type, NodeType::Dir) {
            self.counters.add_files(1);
        }
        let meta = self.metadata(&found);
        Ok(Entry {
            node: Node::new_node(&found.name, node_type, meta),
            open,
        })
    }

    /// restic's metadata of an entry: access time recorded as the modification time, the
    /// device only for hard-linked files, names of the owner and group where known.
    fn metadata(&mut self, found: &Found) -> Metadata {
        let stat = &found.stat;
        let is_dir = file_kind(stat) == SFlag::S_IFDIR;
        let mtime = Timestamp::new(stat.st_mtime, nanos(stat.st_mtime_nsec)).ok();
        let user = self
            .users
            .entry(stat.st_uid)
            .or_insert_with(|| user_name(stat.st_uid))
            .clone();
        let group = self
            .groups
            .entry(stat.st_gid)
            .or_insert_with(|| group_name(stat.st_gid))
            .clone();
        let hard_linked = !is_dir && stat.st_nlink > 1;
        let mut meta = Metadata {
            mode: Some(go_mode(stat.st_mode)),
            mtime,
            atime: mtime,
            ctime: Timestamp::new(stat.st_ctime, nanos(stat.st_ctime_nsec)).ok(),
            uid: Some(stat.st_uid),
            gid: Some(stat.st_gid),
            user,
            group,
            inode: stat.st_ino,
            device_id: if hard_linked { stat.st_dev } else { 0 },
            size: if is_dir {
                0
            } else {
                u64::try_from(stat.st_size).unwrap_or(0)
            },
            links: if is_dir { 0 } else { stat.st_nlink },
            extended_attributes: Vec::new(),
        };
        set_extended_attributes(&mut meta, &found.dir, &found.name);
        meta
    }
}

/// One entry of the walk, with the handle of the directory that holds it.
struct Found {
    dir: Arc<OwnedFd>,
    name: OsString,
    path: PathBuf,
    stat: FileStat,
}

/// One directory being walked: its handle, its path as the archiver names it, and the names
/// in it still to visit, in restic's order.
struct Frame {
    dir: Arc<OwnedFd>,
    path: PathBuf,
    names: std::vec::IntoIter<OsString>,
}

/// A depth-first walk of the volume through directory handles, each directory's entries in
/// byte order of their names, as the archiver needs them.
struct Walk {
    stack: Vec<Frame>,
    /// The volume itself could not be listed; reported as the walk's only item.
    failed: Option<Skipped>,
}

impl Walk {
    fn new(root: &Arc<OwnedFd>, path: &Path) -> Self {
        match list(root) {
            Ok(names) => Self {
                stack: vec![Frame {
                    dir: root.clone(),
                    path: path.to_owned(),
                    names,
                }],
                failed: None,
            },
            Err(err) => Self {
                stack: Vec::new(),
                failed: Some(Skipped::io(path, err)),
            },
        }
    }

    /// Reads an entry's metadata; a directory is opened beneath its parent and listed, and
    /// left out if it is no longer the directory that was seen.
    fn visit(
        &mut self,
        dir: Arc<OwnedFd>,
        name: OsString,
        path: PathBuf,
    ) -> Result<Found, Skipped> {
        let stat = fstatat(dir.as_ref(), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|err| Skipped::io(&path, err))?;
        if file_kind(&stat) != SFlag::S_IFDIR {
            return Ok(Found {
                dir,
                name,
                path,
                stat,
            });
        }
        let child = open_entry(&dir, &name, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
            .map_err(|err| Skipped::from_open(&path, err))?;
        let opened = fstat(&child).map_err(|err| Skipped::io(&path, err))?;
        if opened.st_dev != stat.st_dev || opened.st_ino != stat.st_ino {
            return Err(Skipped::replaced(&path));
        }
        let names = list(&child).map_err(|err| Skipped::io(&path, err))?;
        self.stack.push(Frame {
            dir: Arc::new(child),
            path: path.clone(),
            names,
        });
        Ok(Found {
            dir,
            name,
            path,
            stat: opened,
        })
    }
}

/// One step of a [`Walk`].
enum Visit {
    /// An entry, read or left out; a directory is entered when it is found.
    Found(Result<Found, Skipped>),
    /// The walk has seen every entry of the directory it entered last.
    Leave,
}

impl Iterator for Walk {
    type Item = Visit;

    fn next(&mut self) -> Option<Visit> {
        if let Some(failed) = self.failed.take() {
            return Some(Visit::Found(Err(failed)));
        }
        let frame = self.stack.last_mut()?;
        let Some(name) = frame.names.next() else {
            self.stack.pop();
            return Some(Visit::Leave);
        };
        let dir = frame.dir.clone();
        let path = frame.path.join(&name);
        Some(Visit::Found(self.visit(dir, name, path)))
    }
}

/// An entry left out of the backup, and why.
#[derive(Debug)]
pub(crate) struct Skipped {
    path: PathBuf,
    cause: String,
}

impl Skipped {
    fn io(path: &Path, err: Errno) -> Self {
        Self {
            path: path.to_owned(),
            cause: err.desc().to_owned(),
        }
    }

    fn replaced(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            cause: "it was replaced while the backup read it, so it is left out".to_owned(),
        }
    }

    fn unknown_type(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            cause: "it is of an unknown file type".to_owned(),
        }
    }

    /// Opening beneath a directory handle fails with ELOOP or ENOTDIR when the entry became a
    /// symlink or changed type, and with EXDEV or EAGAIN when a rename raced the lookup.
    fn from_open(path: &Path, err: Errno) -> Self {
        match err {
            Errno::ELOOP | Errno::ENOTDIR | Errno::ENOENT | Errno::EXDEV | Errno::EAGAIN => {
                Self::replaced(path)
            }
            err => Self::io(path, err),
        }
    }

    /// A file that failed while it was read.
    pub(crate) fn read(path: &Path, err: &std::io::Error) -> Self {
        Self {
            path: path.to_owned(),
            cause: err.to_string(),
        }
    }
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot read `{}`: {}", self.path.display(), self.cause)
    }
}

/// Opens the entry `name` of `dir` beneath it, never through a symlink.
fn open_entry(dir: &OwnedFd, name: &OsStr, flags: OFlag) -> nix::Result<OwnedFd> {
    open_beneath(dir, Path::new(name), flags, Mode::empty())
}

/// The names in a directory, sorted by their bytes as the archiver needs them, each once: a
/// listing taken while entries are renamed may return a name twice, and a tree must not hold it
/// twice.
fn list(dir: &OwnedFd) -> nix::Result<std::vec::IntoIter<OsString>> {
    let mut names = names(dir)?;
    names.sort_unstable();
    names.dedup();
    Ok(names.into_iter())
}

/// Records the extended attributes, read through the held directory handle so that the name
/// is looked up in that directory and a symlink is never followed. A listing that fails records
/// none. rustic_core does not export the attribute type, so the list goes through its serde form
/// (values in base64), which only entries with attributes pay for.
fn set_extended_attributes(meta: &mut Metadata, dir: &OwnedFd, name: &OsStr) {
    let path = Path::new("/proc/self/fd")
        .join(dir.as_raw_fd().to_string())
        .join(name);
    let Ok(names) = xattr::list(&path) else {
        return;
    };
    let attributes: Vec<serde_json::Value> = names
        .map(|attribute| {
            let value = xattr::get(&path, &attribute).ok().flatten();
            serde_json::json!({
                "name": attribute.to_string_lossy(),
                "value": value.map(|bytes| BASE64.encode(bytes)),
            })
        })
        .collect();
    if attributes.is_empty() {
        return;
    }
    if let Ok(parsed) = serde_json::from_value(serde_json::Value::Array(attributes)) {
        meta.extended_attributes = parsed;
    }
}

fn is_symlink(path: &Path) -> bool {
    fstatat(AT_FDCWD, path, AtFlags::AT_SYMLINK_NOFOLLOW)
        .is_ok_and(|stat| file_kind(&stat) == SFlag::S_IFLNK)
}

fn file_kind(stat: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits())
}

fn nanos(nanoseconds: i64) -> i32 {
    i32::try_from(nanoseconds).unwrap_or(0)
}

fn user_name(uid: u32) -> Option<String> {
    User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|user| user.name)
}

fn group_name(gid: u32) -> Option<String> {
    Group::from_gid(Gid::from_raw(gid))
        .ok()
        .flatten()
        .map(|group| group.name)
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The file mode as Go's `io/fs` writes it, which is what restic stores: the permission bits,
/// one type bit, and Go's own setuid, setgid and sticky bits.
fn go_mode(mode: u32) -> u32 {
    const GO_DIR: u32 = 1 << 31;
    const GO_SYMLINK: u32 = 1 << 27;
    const GO_DEVICE: u32 = 1 << 26;
    const GO_FIFO: u32 = 1 << 25;
    const GO_SOCKET: u32 = 1 << 24;
    const GO_SETUID: u32 = 1 << 23;
    const GO_SETGID: u32 = 1 << 22;
    const GO_CHARDEV: u32 = 1 << 21;
    const GO_STICKY: u32 = 1 << 20;
    const GO_IRREGULAR: u32 = 1 << 19;
    let kind = match SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => 0,
        SFlag::S_IFDIR => GO_DIR,
        SFlag::S_IFLNK => GO_SYMLINK,
        SFlag::S_IFBLK => GO_DEVICE,
        SFlag::S_IFCHR => GO_CHARDEV | GO_DEVICE,
        SFlag::S_IFIFO => GO_FIFO,
        SFlag::S_IFSOCK => GO_SOCKET,
        _ => GO_IRREGULAR,
    };
    let special = [
        (0o4000, GO_SETUID),
        (0o2000, GO_SETGID),
        (0o1000, GO_STICKY),
    ]
    .iter()
    .filter(|(bit, _)| mode & bit != 0)
    .fold(0, |bits, (_, go)| bits | go);
    (mode & 0o777) | kind | special
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_map_to_go_file_modes() {
        assert_eq!(go_mode(0o100_644), 0o644);
        assert_eq!(go_mode(0o040_755), (1 << 31) | 0o755);
        assert_eq!(go_mode(0o120_777), (1 << 27) | 0o777);
        assert_eq!(go_mode(0o010_600), (1 << 25) | 0o600);
        assert_eq!(go_mode(0o140_755), (1 << 24) | 0o755);
        assert_eq!(go_mode(0o060_660), (1 << 26) | 0o660);
        assert_eq!(go_mode(0o104_755), (1 << 23) | 0o755);
        assert_eq!(
            go_mode(0o043_775),
            (1 << 31) | (1 << 22) | (1 << 20) | 0o775
        );
    }
}
