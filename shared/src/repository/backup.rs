//! Backing up one directory into one snapshot.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rustic_core::SnapshotOptions;
use rustic_core::repofile::SnapshotFile;
use serde::{Deserialize, Serialize};

use super::archive::{self, ArchiveError};
use super::error::describe;
use super::source::VolumeSource;
use super::{EngineError, Repository};
use crate::names::SNAPSHOT_HOST;

/// How many unreadable entries the outcome names; the rest are only counted.
const NAMED_UNREADABLE: usize = 10;

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

        let mut outcome = BackupOutcome::default();
        let mut snapshot = new_snapshot(request).map_err(|err| EngineError::Backup {
            path: source.clone(),
            cause: describe(&err),
        })?;
        let parent = self.parent(request, &snapshot, &mut outcome.warnings)?;
        snapshot.parent = parent.as_ref().map(|parent| parent.id);
        let archived = archive::archive(
            &self.repo,
            self.backends.repository(),
            &volume,
            snapshot,
            parent.map(|parent| parent.tree),
            &self.counters,
        )
        .map_err(|err| match err {
            ArchiveError::Index(cause) => EngineError::LoadIndex {
                location: self.location.clone(),
                cause,
            },
            err => EngineError::Backup {
                path: source.clone(),
                cause: err.to_string(),
            },
        })?;
        outcome.unreadable = archived.skipped.len() as u64;
        if !archived.skipped.is_empty() {
            outcome.warnings.push(format!(
                "{} entries could not be read and are missing from the snapshot",
                archived.skipped.len()
            ));
            outcome.warnings.extend(
                archived
                    .skipped
                    .iter()
                    .take(NAMED_UNREADABLE)
                    .map(ToString::to_string),
            );
        }
        if let Some(first) = archived.parent_failures.first() {
            outcome.warnings.push(format!(
                "{} trees of the parent snapshot could not be read, so the files under them were \
                 read again; run a check of the repository: {first}",
                archived.parent_failures.len()
            ));
        }
        outcome.warnings.extend(volume.socket_warning());

        outcome.record(&archived.snapshot);
        self.counters.finish(outcome.bytes, outcome.files);
        Ok(outcome)
    }

    /// The snapshot the request compares against, if any: for the latest, one of the same
    /// group as the new snapshot `wanted`. A named parent that cannot be used is warned of, and
    /// every file is read.
    fn parent(
        &self,
        request: &BackupRequest,
        wanted: &SnapshotFile,
        warnings: &mut Vec<String>,
    ) -> Result<Option<SnapshotFile>, EngineError> {
        match &request.parent {
            Parent::None => Ok(None),
            Parent::Latest => {
                let snapshots = self
                    .repo
                    .get_all_snapshots()
                    .map_err(self.read_error("the snapshots"))?;
                Ok(snapshots
                    .into_iter()
                    .filter(|snapshot| same_group(snapshot, wanted))
                    .max_by(|a, b| a.time.cmp(&b.time)))
            }
            Parent::Snapshot(parent) => match self.repo.get_snapshot_from_str(parent, |_| true) {
                // The snapshot named is used whatever its host, label or tags.
                Ok(snapshot) => Ok(Some(snapshot)),
                Err(err) => {
                    warnings.push(format!(
                        "parent snapshot {parent} could not be used, so every file was read again: {}",
                        describe(&err)
                    ));
                    Ok(None)
                }
            },
        }
    }
}

/// Whether two snapshots have the same host, label, paths and tags, as restic groups them to
/// find a parent.
fn same_group(snapshot: &SnapshotFile, wanted: &SnapshotFile) -> bool {
    snapshot.hostname == wanted.hostname
        && snapshot.label == wanted.label
        && snapshot.paths == wanted.paths
        && snapshot.tags == wanted.tags
}

/// A snapshot with Ferry's host, the request's label and its tags as `key=value`.
fn new_snapshot(request: &BackupRequest) -> Result<SnapshotFile, Box<rustic_core::RusticError>> {
    let mut snapshot = SnapshotOptions::default()
        .host(Some(SNAPSHOT_HOST.to_owned()))
        .to_snapshot()?;
    snapshot.label = request.label.clone().unwrap_or_default();
    snapshot.paths.add(SNAPSHOT_PATH.to_owned());
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
