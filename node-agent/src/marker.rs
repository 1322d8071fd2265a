//! The restore done-marker: the empty file `<volume>/.velero/<restore UID>`.
//!
//! The node agent writes it once a volume's data is restored; the restore helper, the first init
//! container of the restored pod, waits for it in every volume and then removes `.velero`. The
//! directory name, the file name and the modes are Velero's, so both helpers understand both
//! agents (DESIGN.md §2, "Restore marker").
//!
//! The volume belongs to a pod whose user may be hostile and may change it while the agent, as
//! root, works in it. So every step goes through directory handles: the volume is opened once,
//! and `.velero` and the marker are removed, created and set up relative to it, never by a path
//! that a symlink swapped in could redirect.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use ferry_shared::handles::remove_all;
use ferry_shared::names::RESTORE_HELPER_USER;
use nix::errno::Errno;
use nix::fcntl::{OFlag, open, openat};
use nix::sys::stat::{Mode, fchmod, mkdirat};
use nix::unistd::{Gid, Uid, fchown, fsync};

/// The directory, directly in the volume, that holds the marker.
pub const MARKER_DIR: &str = ".velero";
/// Mode of the marker directory.
pub const MARKER_DIR_MODE: u32 = 0o755;
/// Mode of the marker file.
pub const MARKER_FILE_MODE: u32 = 0o644;

/// The longest file name Linux accepts (`NAME_MAX`).
const MAX_UID_LEN: usize = 255;

/// Flags for opening a directory that must not be a symlink.
const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Errors of the marker protocol. The message names the action, the path and the cause, because
/// it goes as it is into a PodVolumeRestore's status (a full disk must say so); the cause is also
/// the `source`, for callers that look at its kind.
#[derive(Debug, thiserror::Error)]
pub enum MarkerError {
    #[error("invalid restore UID {uid:?}: {reason}")]
    InvalidRestoreUid { uid: String, reason: &'static str },
    #[error("cannot remove the old marker directory {}: {source}", path.display())]
    RemoveStale {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot create the marker directory {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the marker file {}: {source}", path.display())]
    WriteFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot sync {} to disk: {source}", path.display())]
    Sync {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot check the marker file {}: {source}", path.display())]
    Check {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Checks that `restore_uid` can serve as the marker's file name: one path component, never a
/// way out of `.velero`.
pub fn validate_restore_uid(restore_uid: &str) -> Result<(), MarkerError> {
    let reason = if restore_uid.is_empty() {
        Some("it is empty")
    } else if restore_uid == "." || restore_uid == ".." {
        Some("it is a relative directory name")
    } else if restore_uid.contains('/') {
        Some("it contains '/'")
    } else if restore_uid.contains('\0') {
        Some("it contains a NUL byte")
    } else if restore_uid.len() > MAX_UID_LEN {
        Some("it is longer than 255 bytes")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(MarkerError::InvalidRestoreUid {
            uid: restore_uid.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// The marker file of `restore_uid` in `volume_dir`.
pub fn marker_path(volume_dir: &Path, restore_uid: &str) -> PathBuf {
    volume_dir.join(MARKER_DIR).join(restore_uid)
}

/// Replaces `<volume_dir>/.velero` with a directory that holds only the empty file
/// `<restore_uid>`, and syncs both to disk, so the marker survives a node crash once this returns.
///
/// A `.velero` restored from the backup may be anything, a symlink included: it is removed, never
/// followed.
///
/// The directory and the file keep Velero's modes (0755, 0644) but belong to
/// [`RESTORE_HELPER_USER`]: the helper runs as that non-root user, and could not otherwise remove
/// a root-owned `.velero`, so the marker would stay in the volume for good. Owning the directory
/// is all the helper needs to empty it; a world-writable directory would have let any user of
/// the pod plant entries in it too. Only root can give files away, so a marker written by an
/// unprivileged process (a test, the command line) stays its own.
pub fn write_marker(volume_dir: &Path, restore_uid: &str) -> Result<(), MarkerError> {
    validate_restore_uid(restore_uid)?;
    let dir_path = volume_dir.join(MARKER_DIR);
    let create_dir_err = |source: Errno| MarkerError::CreateDir {
        path: dir_path.clone(),
        source: source.into(),
    };
    let volume = open(volume_dir, DIR_FLAGS, Mode::empty()).map_err(create_dir_err)?;
    remove_stale(&volume).map_err(|source| MarkerError::RemoveStale {
        path: dir_path.clone(),
        source,
    })?;

    mkdirat(
        &volume,
        MARKER_DIR,
        Mode::from_bits_truncate(MARKER_DIR_MODE),
    )
    .map_err(create_dir_err)?;
    // O_NOFOLLOW makes sure what is opened is not a link swapped in since; the mode given at
    // creation is masked by the umask, fchmod on the handle is not.
    let dir = openat(&volume, MARKER_DIR, DIR_FLAGS, Mode::empty()).map_err(create_dir_err)?;
    give_to_helper(&dir, MARKER_DIR_MODE).map_err(create_dir_err)?;

    let file_path = dir_path.join(restore_uid);
    let write_file_err = |source: Errno| MarkerError::WriteFile {
        path: file_path.clone(),
        source: source.into(),
    };
    // The UID is one path component (checked above), so O_EXCL | O_NOFOLLOW relative to the
    // directory's handle cannot be redirected: O_EXCL fails on anything already there.
    let file = openat(
        &dir,
        restore_uid,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(MARKER_FILE_MODE),
    )
    .map_err(write_file_err)?;
    give_to_helper(&file, MARKER_FILE_MODE).map_err(write_file_err)?;

    sync(&file, &file_path)?;
    sync(&dir, &dir_path)?;
    sync(&volume, volume_dir)
}

/// Sets the mode of an entry this process created, and when running as root, gives it to the
/// restore helper's user and group.
fn give_to_helper(fd: &OwnedFd, mode: u32) -> nix::Result<()> {
    if Uid::effective().is_root() {
        fchown(
            fd,
            Some(Uid::from_raw(RESTORE_HELPER_USER)),
            Some(Gid::from_raw(RESTORE_HELPER_USER)),
        )?;
    }
    fchmod(fd, Mode::from_bits_truncate(mode))
}

/// Whether `volume_dir` holds the marker of `restore_uid`: `Ok(false)` while it does not exist
/// yet, an error when it cannot be told (a bad UID, no permission to look).
pub fn probe_marker(volume_dir: &Path, restore_uid: &str) -> Result<bool, MarkerError> {
    validate_restore_uid(restore_uid)?;
    let path = marker_path(volume_dir, restore_uid);
    match fs::symlink_metadata(&path) {
        Ok(meta) => Ok(meta.is_file()),
        Err(err) if is_absent(&err) => Ok(false),
        Err(source) => Err(MarkerError::Check { path, source }),
    }
}

/// Whether `volume_dir` holds the marker of `restore_uid`; anything that cannot be checked counts
/// as absent.
pub fn marker_present(volume_dir: &Path, restore_uid: &str) -> bool {
    probe_marker(volume_dir, restore_uid).unwrap_or(false)
}

/// Removes `<volume_dir>/.velero`, whatever it is (a symlink is removed, not followed). Nothing
/// there is not an error.
pub fn remove_marker_dir(volume_dir: &Path) -> io::Result<()> {
    let volume = open(volume_dir, DIR_FLAGS, Mode::empty())?;
    remove_stale(&volume)
}

/// Removes the volume's `.velero` through handles, so no link in it is ever followed.
fn remove_stale(volume: &OwnedFd) -> io::Result<()> {
    remove_all(volume, OsStr::new(MARKER_DIR)).map_err(|failed| {
        io::Error::other(format!(
            "cannot {} {}: {}",
            failed.action,
            failed.entry.display(),
            failed.errno.desc()
        ))
    })
}

/// A missing directory on the way counts as "no marker yet", like a missing file: a volume whose
/// `.velero` is a plain file has no marker either.
fn is_absent(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

fn sync(fd: &OwnedFd, path: &Path) -> Result<(), MarkerError> {
    fsync(fd).map_err(|source| MarkerError::Sync {
        path: path.to_owned(),
        source: source.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;
    use std::fs::Permissions;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

    const UID: &str = "6f3c2a4e-9d1b-4c7a-8e5f-0a1b2c3d4e5f";

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn writes_an_empty_marker_with_exact_modes() {
        let vol = tempfile::tempdir().unwrap();
        write_marker(vol.path(), UID).unwrap();

        let dir = vol.path().join(".velero");
        let file = dir.join(UID);
        assert_eq!(mode(&dir), 0o755);
        assert_eq!(mode(&file), 0o644);
        assert_eq!(fs::metadata(&file).unwrap().len(), 0);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        assert!(marker_present(vol.path(), UID));
        assert!(probe_marker(vol.path(), UID).unwrap());
    }

    #[test]
    fn replaces_a_stale_marker_dir() {
        let vol = tempfile::tempdir().unwrap();
        let dir = vol.path().join(".velero");
        fs::create_dir_all(dir.join("nested")).unwrap();
        fs::write(dir.join("old-restore-uid"), b"").unwrap();
        fs::write(dir.join("nested/file"), b"x").unwrap();
        fs::set_permissions(&dir, Permissions::from_mode(0o700)).unwrap();
        fs::write(vol.path().join("data.db"), b"user data").unwrap();

        write_marker(vol.path(), UID).unwrap();

        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [UID]);
        assert_eq!(mode(&dir), 0o755);
        assert!(!marker_present(vol.path(), "old-restore-uid"));
        assert_eq!(fs::read(vol.path().join("data.db")).unwrap(), b"user data");
    }

    #[test]
    fn writing_twice_keeps_one_marker() {
        let vol = tempfile::tempdir().unwrap();
        write_marker(vol.path(), "first").unwrap();
        write_marker(vol.path(), UID).unwrap();
        assert!(!marker_present(vol.path(), "first"));
        assert!(marker_present(vol.path(), UID));
    }

    #[test]
    fn replaces_a_plain_file_named_velero() {
        let vol = tempfile::tempdir().unwrap();
        fs::write(vol.path().join(".velero"), b"not a dir").unwrap();
        assert!(!marker_present(vol.path(), UID));
        write_marker(vol.path(), UID).unwrap();
        assert!(marker_present(vol.path(), UID));
    }

    #[test]
    fn does_not_follow_a_velero_symlink() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("precious"), b"keep me").unwrap();
        let vol = tempfile::tempdir().unwrap();
        symlink(outside.path(), vol.path().join(".velero")).unwrap();

        write_marker(vol.path(), UID).unwrap();

        let dir = vol.path().join(".velero");
        assert!(fs::symlink_metadata(&dir).unwrap().is_dir());
        assert!(marker_present(vol.path(), UID));
        assert_eq!(
            fs::read(outside.path().join("precious")).unwrap(),
            b"keep me"
        );
        assert!(!outside.path().join(UID).exists());
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_stale_tree_is_removed_without_following_the_links_inside_it() {
        let outside = tempfile::tempdir().unwrap();
        fs::create_dir(outside.path().join("sub")).unwrap();
        fs::write(outside.path().join("sub/precious"), b"keep me").unwrap();
        let vol = tempfile::tempdir().unwrap();
        let stale = vol.path().join(".velero");
        fs::create_dir_all(stale.join("a/b")).unwrap();
        symlink(outside.path(), stale.join("a/b/dir-link")).unwrap();
        symlink(
            outside.path().join("sub/precious"),
            stale.join("a/file-link"),
        )
        .unwrap();
        std::os::unix::net::UnixListener::bind(stale.join("a/b/socket")).unwrap();

        write_marker(vol.path(), UID).unwrap();

        let names: Vec<_> = fs::read_dir(&stale)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [UID]);
        assert_eq!(
            fs::read(outside.path().join("sub/precious")).unwrap(),
            b"keep me"
        );
    }

    #[test]
    fn a_deeply_nested_stale_tree_is_removed() {
        let vol = tempfile::tempdir().unwrap();
        let deep: PathBuf = std::iter::once(".velero")
            .chain(std::iter::repeat_n("d", 200))
            .collect();
        fs::create_dir_all(vol.path().join(&deep)).unwrap();
        fs::write(vol.path().join(deep).join("leaf"), b"x").unwrap();
        write_marker(vol.path(), UID).unwrap();
        let names: Vec<_> = fs::read_dir(vol.path().join(".velero"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, [UID]);
    }

    #[test]
    fn the_marker_belongs_to_the_restore_helper_when_root_writes_it() {
        let vol = tempfile::tempdir().unwrap();
        write_marker(vol.path(), UID).unwrap();
        let owner = |path: &Path| {
            let meta = fs::symlink_metadata(path).unwrap();
            (meta.uid(), meta.gid())
        };
        let expected = if Uid::effective().is_root() {
            (RESTORE_HELPER_USER, RESTORE_HELPER_USER)
        } else {
            owner(vol.path())
        };
        let dir = vol.path().join(".velero");
        assert_eq!(owner(&dir), expected);
        assert_eq!(owner(&dir.join(UID)), expected);
        assert_eq!(mode(&dir), 0o755);
        assert_eq!(mode(&dir.join(UID)), 0o644);
    }

    #[test]
    fn remove_marker_dir_removes_a_symlink_not_its_target() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("precious"), b"keep me").unwrap();
        let vol = tempfile::tempdir().unwrap();
        symlink(outside.path(), vol.path().join(".velero")).unwrap();

        remove_marker_dir(vol.path()).unwrap();

        assert!(fs::symlink_metadata(vol.path().join(".velero")).is_err());
        assert!(outside.path().join("precious").exists());
    }

    #[test]
    fn remove_marker_dir_keeps_the_volume_data() {
        let vol = tempfile::tempdir().unwrap();
        fs::write(vol.path().join("data"), b"d").unwrap();
        write_marker(vol.path(), UID).unwrap();

        remove_marker_dir(vol.path()).unwrap();
        remove_marker_dir(vol.path()).unwrap();

        assert!(!vol.path().join(".velero").exists());
        assert!(vol.path().join("data").exists());
    }

    #[test]
    fn rejects_unsafe_uids() {
        let vol = tempfile::tempdir().unwrap();
        let long = "a".repeat(256);
        for uid in [
            "",
            ".",
            "..",
            "a/b",
            "/abs",
            "../x",
            "nul\0byte",
            long.as_str(),
        ] {
            let err = write_marker(vol.path(), uid).unwrap_err();
            assert!(
                matches!(err, MarkerError::InvalidRestoreUid { .. }),
                "{uid:?}: {err}"
            );
            assert!(!marker_present(vol.path(), uid), "{uid:?}");
        }
        assert!(!vol.path().join(".velero").exists());
        validate_restore_uid(UID).unwrap();
        validate_restore_uid(&"a".repeat(255)).unwrap();
    }

    #[test]
    fn a_marker_of_another_restore_does_not_count() {
        let vol = tempfile::tempdir().unwrap();
        write_marker(vol.path(), "other-restore").unwrap();
        assert!(!marker_present(vol.path(), UID));
        assert!(!probe_marker(vol.path(), UID).unwrap());
    }

    #[test]
    fn errors_name_the_path_and_the_cause() {
        let vol = tempfile::tempdir().unwrap();
        let missing = vol.path().join("no-such-volume");
        let err = write_marker(&missing, UID).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot create the marker directory {}/.velero: No such file or directory (os error 2)",
                missing.display()
            )
        );
        let cause = err.source().unwrap().downcast_ref::<io::Error>().unwrap();
        assert_eq!(cause.kind(), io::ErrorKind::NotFound);
    }
}
