//! Backing up one directory into one snapshot.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rustic_core::repofile::SnapshotFile;
use rustic_core::{BackupOptions, ParentOptions, SnapshotGroupCriterion, SnapshotOptions};
use serde::{Deserialize, Serialize};

use super::error::describe;
use super::source::VolumeSource;
use super::{EngineError, Repository, warnings};
use crate::names::SNAPSHOT_HOST;

/// Every snapshot stores its volume at the root of its tree, whatever host path it was read
/// from, so `restic restore <id> --target DIR` gives back the volume as it was.
const SNAPSHOT_PATH: &str = "/";

/// What to back up and how to label it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupRequest {
    /// The directory whose contents become the snapshot.
    pub source: PathBuf,
    /// Snapshot tags, each stored as `key=value`.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The snapshot label, such as `<namespace>/<pvc>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The snapshot to compare against, so unchanged files are not read again.
    #[serde(default)]
    pub parent: Parent,
}

/// Which snapshot a backup compares against.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Parent {
    /// None: every file is read.
    #[default]
    None,
    /// The latest snapshot with the same host, label and tags (the snapshot path of every
    /// Ferry snapshot is the same), as restic picks its parent by host and paths.
    Latest,
    /// This snapshot, given by ID or unique prefix, whatever its label and tags.
    Snapshot(String),
}

impl From<Option<String>> for Parent {
    fn from(snapshot: Option<String>) -> Self {
        snapshot.map_or(Parent::None, Parent::Snapshot)
    }
}

/// What a backup did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupOutcome {
    /// The new snapshot's ID; absent when the source was empty and no snapshot was taken.
    pub snapshot_id: Option<String>,
    /// The parent the backup compared against.
    pub parent: Option<String>,
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    /// Bytes of new data added to the repository, before compression.
    pub data_added: u64,
    /// Number of data blobs the snapshot references.
    pub data_blobs: u64,
    /// Entries that could not be read and are missing from the snapshot.
    pub unreadable: u64,
    /// Messages for the user: the first unreadable entries, a missing parent.
    pub warnings: Vec<String>,
}

impl Repository {
    /// Backs up `request.source` into a new snapshot. A source with no entries gives no
    /// snapshot. Entries that cannot be read are left out, counted and named in the outcome.
    pub fn backup(self, request: &BackupRequest) -> Result<BackupOutcome, EngineError> {
        let source = &request.source;
        let source_error = |cause: String| EngineError::Source {
            path: source.clone(),
            cause,
        };
        let volume = VolumeSource::open(source, self.counters.clone())
            .map_err(|err| source_error(err.to_string()))?;
        if volume
            .is_empty()
            .map_err(|err| source_error(err.to_string()))?
        {
            return Ok(BackupOutcome::default());
        }

        let backup_error = |err: Box<rustic_core::RusticError>| EngineError::Backup {
            path: source.clone(),
            cause: describe(&err),
        };
        let repo = self
            .repo
            .to_indexed_ids()
            .map_err(|err| EngineError::LoadIndex {
                location: self.location.clone(),
                cause: describe(&err),
            })?;

        let mut outcome = BackupOutcome::default();
        let parent = match &request.parent {
            Parent::None => ParentOptions::default().force(true),
            Parent::Latest => ParentOptions::default().group_by(
                SnapshotGroupCriterion::new()
                    .hostname(true)
                    .label(true)
                    .paths(true)
                    .tags(true),
            ),
            Parent::Snapshot(parent) => match repo.get_snapshot_from_str(parent, |_| true) {
                // The snapshot named is used whatever its host, label or tags.
                Ok(snapshot) => ParentOptions::default()
                    .group_by(SnapshotGroupCriterion::new())
                    .parents(vec![snapshot.id.to_hex().to_string()]),
                Err(err) => {
                    outcome.warnings.push(format!(
                        "parent snapshot {parent} could not be used, so every file was read again: {}",
                        describe(&err)
                    ));
                    ParentOptions::default().force(true)
                }
            },
        };

        let snapshot = new_snapshot(request).map_err(backup_error)?;
        let options = BackupOptions::default()
            .as_path(PathBuf::from(SNAPSHOT_PATH))
            // A volume re-attached elsewhere, or a CSI clone, gets new inode numbers.
            .parent_opts(parent.ignore_inode(true));
        // Warnings of an earlier call in this process belong to that call.
        warnings::take();
        let saved = repo
            .archive(&options, &volume, snapshot, std::slice::from_ref(source))
            .map_err(backup_error)?;
        let collected = warnings::take();
        outcome.unreadable = collected.count;
        if collected.count > 0 {
            outcome.warnings.push(format!(
                "{} entries could not be read and are missing from the snapshot",
                collected.count
            ));
            outcome.warnings.extend(collected.first);
        }
        outcome.warnings.extend(volume.socket_warning());

        outcome.record(&saved);
        self.counters.finish(outcome.bytes, outcome.files);
        Ok(outcome)
    }
}

/// A snapshot with Ferry's host, the request's label and its tags as `key=value`.
fn new_snapshot(request: &BackupRequest) -> Result<SnapshotFile, Box<rustic_core::RusticError>> {
    let mut snapshot = SnapshotOptions::default()
        .host(Some(SNAPSHOT_HOST.to_owned()))
        .to_snapshot()?;
    snapshot.label = request.label.clone().unwrap_or_default();
    for (key, value) in &request.tags {
        snapshot.tags.add(format!("{key}={value}"));
    }
    Ok(snapshot)
}

impl BackupOutcome {
    /// Takes the saved snapshot's ID and its summary's figures.
    fn record(&mut self, saved: &SnapshotFile) {
        let summary = saved.summary.clone().unwrap_or_default();
        self.snapshot_id = Some(saved.id.to_hex().to_string());
        self.parent = saved.parent.map(|parent| parent.to_hex().to_string());
        self.files = summary.total_files_processed;
        self.dirs = summary.total_dirs_processed;
        self.bytes = summary.total_bytes_processed;
        self.files_new = summary.files_new;
        self.files_changed = summary.files_changed;
        self.files_unmodified = summary.files_unmodified;
        self.data_added = summary.data_added;
        self.data_blobs = summary.data_blobs;
    }
}
