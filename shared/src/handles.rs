//! File operations relative to directory handles, for trees that a hostile pod may change while
//! Ferry, as root, works in them: its volumes during a backup, restore targets, and the restore
//! marker. A path handed to the kernel is resolved beneath a handle Ferry holds, never through a
//! symlink, a magic link or `..`, so no swap can take an operation outside that directory.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{Mode, SFlag, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

/// Opens `path` relative to `dir` without following any symlink or magic link and without
/// leaving `dir`; the empty path opens `dir` itself. `O_NOFOLLOW` and `O_CLOEXEC` are always
/// added.
pub fn open_beneath(dir: impl AsFd, path: &Path, flags: OFlag, mode: Mode) -> nix::Result<OwnedFd> {
    // openat2 takes no empty path: the directory itself is ".".
    let path = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .mode(mode)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    openat2(dir, path, how)
}

/// The names in the directory `dir`, but `.` and `..`, in the order the file system lists them.
/// The listing reads through a new open of the directory, never through `dir` or a duplicate of
/// it: those share one read offset, so two listings of one handle at once (a backup's size scan
/// beside its walk) would take entries from each other.
pub fn names(dir: impl AsFd) -> nix::Result<Vec<OsString>> {
    let listing = open_beneath(
        dir,
        Path::new(""),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        Mode::empty(),
    )?;
    let mut listing = Dir::from_fd(listing)?;
    let mut names = Vec::new();
    for entry in listing.iter() {
        let entry = entry?;
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name != "." && name != ".." {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

/// A removal that failed: the entry, relative to the starting directory, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoveError {
    pub entry: PathBuf,
    pub action: &'static str,
    pub errno: Errno,
}

/// Removes `name` from `dir` like `rm -rf`, through handles: a symlink is removed, never
/// followed, and a directory is entered only when reached beneath `dir` without one. Nothing
/// there is not an error. Any depth is removed, without recursion.
pub fn remove_all(dir: impl AsFd, name: &OsStr) -> Result<(), RemoveError> {
    enum Step {
        Empty(PathBuf),
        Remove(PathBuf),
    }
    let dir = dir.as_fd();
    let fail = |entry: &Path, action, errno| RemoveError {
        entry: entry.to_owned(),
        action,
        errno,
    };
    let top = PathBuf::from(name);
    // The type first: where `dir` may not be written, a directory is still emptied.
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Err(Errno::ENOENT) => return Ok(()),
        Err(errno) => return Err(fail(&top, "inspect", errno)),
        Ok(stat) if stat.st_mode & SFlag::S_IFMT.bits() != SFlag::S_IFDIR.bits() => {
            return unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)
                .map_err(|errno| fail(&top, "remove", errno));
        }
        Ok(_) => {}
    }
    // Children go on top of their directory's removal, so they are gone before it.
    let mut steps = vec![Step::Remove(top.clone()), Step::Empty(top)];
    while let Some(step) = steps.pop() {
        match step {
            Step::Empty(path) => {
                let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
                let handle = open_beneath(dir, &path, flags, Mode::empty())
                    .map_err(|errno| fail(&path, "open directory", errno))?;
                for child in names(&handle).map_err(|errno| fail(&path, "list", errno))? {
                    let entry = path.join(&child);
                    match unlinkat(&handle, child.as_os_str(), UnlinkatFlags::NoRemoveDir) {
                        Ok(()) | Err(Errno::ENOENT) => {}
                        Err(Errno::EISDIR) => {
                            steps.push(Step::Remove(entry.clone()));
                            steps.push(Step::Empty(entry));
                        }
                        Err(errno) => return Err(fail(&entry, "remove", errno)),
                    }
                }
            }
            Step::Remove(path) => {
                let parent = path.parent().unwrap_or(Path::new(""));
                let handle = open_beneath(
                    dir,
                    parent,
                    OFlag::O_PATH | OFlag::O_DIRECTORY,
                    Mode::empty(),
                )
                .map_err(|errno| fail(parent, "open directory", errno))?;
                let last = path.file_name().unwrap_or(path.as_os_str());
                unlinkat(&handle, last, UnlinkatFlags::RemoveDir)
                    .map_err(|errno| fail(&path, "remove directory", errno))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn open_dir(path: &Path) -> OwnedFd {
        nix::fcntl::open(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).unwrap()
    }

    #[test]
    fn opening_never_follows_a_link_nor_leaves_the_directory() {
        let outside = tempfile::tempdir().unwrap();
        fs::create_dir(outside.path().join("sub")).unwrap();
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("real")).unwrap();
        symlink(outside.path(), root.path().join("link")).unwrap();
        let dir = open_dir(root.path());
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
        assert!(open_beneath(&dir, Path::new("real"), flags, Mode::empty()).is_ok());
        assert!(open_beneath(&dir, Path::new(""), flags, Mode::empty()).is_ok());
        for path in ["link", "link/sub", "../", "/tmp"] {
            let err = open_beneath(&dir, Path::new(path), flags, Mode::empty()).unwrap_err();
            assert!(
                matches!(err, Errno::ELOOP | Errno::EXDEV | Errno::ENOTDIR),
                "{path}: {err}"
            );
        }
    }

    #[test]
    fn names_list_a_directory_and_keep_its_handle_usable() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("a"), b"").unwrap();
        fs::create_dir(root.path().join("b")).unwrap();
        let dir = open_dir(root.path());
        let mut listed = names(&dir).unwrap();
        listed.sort();
        assert_eq!(listed, ["a", "b"]);
        assert_eq!(
            names(&dir).unwrap().len(),
            2,
            "a second listing sees the same"
        );
    }

    #[test]
    fn listings_of_one_handle_at_once_each_see_every_name_once() {
        let root = tempfile::tempdir().unwrap();
        for i in 0..500 {
            fs::write(root.path().join(format!("f{i}")), b"").unwrap();
        }
        let dir = open_dir(root.path());
        std::thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| {
                    for _ in 0..50 {
                        let mut listed = names(&dir).unwrap();
                        listed.sort();
                        listed.dedup();
                        assert_eq!(listed.len(), 500);
                    }
                });
            }
        });
    }

    #[test]
    fn removing_a_tree_removes_links_not_their_targets() {
        let outside = tempfile::tempdir().unwrap();
        fs::create_dir(outside.path().join("sub")).unwrap();
        fs::write(outside.path().join("sub/precious"), b"keep me").unwrap();
        let root = tempfile::tempdir().unwrap();
        let deep: PathBuf = std::iter::once("tree").chain(["d"; 100]).collect();
        fs::create_dir_all(root.path().join(&deep)).unwrap();
        fs::write(root.path().join(&deep).join("file"), b"x").unwrap();
        symlink(outside.path(), root.path().join("tree/dir-link")).unwrap();
        symlink(
            outside.path().join("sub/precious"),
            root.path().join("tree/d/file-link"),
        )
        .unwrap();
        fs::write(root.path().join("kept"), b"k").unwrap();
        let dir = open_dir(root.path());

        remove_all(&dir, OsStr::new("tree")).unwrap();
        remove_all(&dir, OsStr::new("tree")).unwrap();
        symlink(outside.path(), root.path().join("link")).unwrap();
        remove_all(&dir, OsStr::new("link")).unwrap();

        assert_eq!(names(&dir).unwrap(), ["kept"]);
        assert_eq!(
            fs::read(outside.path().join("sub/precious")).unwrap(),
            b"keep me"
        );
    }
}
