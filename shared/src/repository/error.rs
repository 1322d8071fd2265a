//! The engine's errors. Each variant names the action that failed and carries what a user needs
//! to act on it.

use std::io;
use std::path::PathBuf;

use rustic_core::RusticError;

/// An engine failure.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The backend could not be set up from the location's options.
    #[error("cannot reach the repository at {location}: {cause}")]
    OpenBackend { location: String, cause: String },

    /// The password opens none of the repository's keys.
    #[error("wrong password for the repository at {location}: no key in it matches the password")]
    WrongPassword { location: String },

    /// Opening the repository failed for another reason (unreachable, damaged, not a repository).
    #[error("cannot open the repository at {location}: {cause}")]
    OpenRepository { location: String, cause: String },

    /// The repository does not exist, and the action does not create one.
    #[error(
        "there is no repository at {location}: check the location; the coordinator creates a namespace's repository before its first backup, and `ferry-node-agent backup` creates one when run by hand"
    )]
    NoRepository { location: String },

    /// Creating a new repository failed.
    #[error("cannot create a repository at {location}: {cause}")]
    InitRepository { location: String, cause: String },

    /// Loading the repository's index failed.
    #[error("cannot load the index of the repository at {location}: {cause}")]
    LoadIndex { location: String, cause: String },

    /// The backup source is missing or is not a directory.
    #[error("cannot back up {}: {cause}", path.display())]
    Source { path: PathBuf, cause: String },

    /// The backup itself failed; no snapshot was saved.
    #[error("backup of {} failed, no snapshot was saved: {cause}", path.display())]
    Backup { path: PathBuf, cause: String },

    /// No snapshot matches the given ID.
    #[error("snapshot {id} was not found in the repository at {location}")]
    SnapshotNotFound { id: String, location: String },

    /// Reading snapshots or trees failed.
    #[error("cannot read {what} from the repository: {cause}")]
    ReadRepository { what: String, cause: String },

    /// The restore target cannot be used.
    #[error("cannot restore into {}: {cause}", path.display())]
    Target { path: PathBuf, cause: String },

    /// The snapshot holds an entry that would escape or clash inside the restore target.
    #[error("snapshot entry {entry:?} under {} is unsafe to restore: {cause}", parent.display())]
    UnsafeEntry {
        parent: PathBuf,
        entry: String,
        cause: String,
    },

    /// Reading or decoding repository data failed during a restore.
    #[error("cannot read data of {} from pack {pack}: {cause}", path.display())]
    ReadData {
        path: PathBuf,
        pack: String,
        cause: String,
    },

    /// Writing into the restore target failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Write {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// An entry of the restore target is not what the restore created: another writer
    /// replaced or moved it while the restore ran.
    #[error(
        "cannot restore into {}: {} is not what this restore created ({cause}); another writer changed the target during the restore, and nothing was written through it: stop every other writer of this volume, then restore again",
        target.display(),
        entry.display()
    )]
    TargetChanged {
        target: PathBuf,
        entry: PathBuf,
        cause: String,
    },

    /// The restore target's filesystem has no room left.
    #[error(
        "cannot {action} {}: the disk is full (ENOSPC: {source}); make room on the volume or enlarge it, then restore again",
        path.display()
    )]
    TargetFull {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Forgetting snapshots failed.
    #[error("cannot forget snapshots: {cause}")]
    Forget { cause: String },

    /// Pruning failed.
    #[error("cannot prune the repository: {cause}")]
    Prune { cause: String },

    /// Checking failed to run (not: the check found errors).
    #[error("cannot check the repository: {cause}")]
    Check { cause: String },
}

/// The whole story of a rustic error on one line: its guidance, then each cause in turn. The
/// first line alone is often misleading (a refused connection reads as a missing file).
pub(crate) fn describe(err: &RusticError) -> String {
    let mut text = err.display_log();
    let mut source = std::error::Error::source(err);
    let mut depth = 0;
    while let Some(cause) = source {
        // display_log already names the first two levels.
        if depth >= 2 {
            text.push_str(": ");
            text.push_str(&cause.to_string());
        }
        source = cause.source();
        depth += 1;
    }
    text.strip_prefix("Error: ").unwrap_or(&text).to_owned()
}

impl EngineError {
    /// A stable name for the kind of failure, for events, metrics and scripts.
    pub fn category(&self) -> &'static str {
        match self {
            Self::OpenBackend { .. } => "OpenBackend",
            Self::WrongPassword { .. } => "WrongPassword",
            Self::OpenRepository { .. } => "OpenRepository",
            Self::NoRepository { .. } => "NoRepository",
            Self::InitRepository { .. } => "InitRepository",
            Self::LoadIndex { .. } => "LoadIndex",
            Self::Source { .. } => "Source",
            Self::Backup { .. } => "Backup",
            Self::SnapshotNotFound { .. } => "SnapshotNotFound",
            Self::ReadRepository { .. } => "ReadRepository",
            Self::Target { .. } => "Target",
            Self::UnsafeEntry { .. } => "UnsafeEntry",
            Self::ReadData { .. } => "ReadData",
            Self::Write { .. } => "Write",
            Self::TargetChanged { .. } => "TargetChanged",
            Self::TargetFull { .. } => "TargetFull",
            Self::Forget { .. } => "Forget",
            Self::Prune { .. } => "Prune",
            Self::Check { .. } => "Check",
        }
    }
}
