//! Backing up one directory into one snapshot.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustic_core::{
    BackupOptions, LocalSource, ParentOptions, ReadSource, ReadSourceEntry, RusticResult,
    SnapshotOptions,
};
use serde::{Deserialize, Serialize};
use walkdir::WalkDir;

use super::error::describe;
use super::{EngineError, ProgressCounters, Repository, warnings};
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
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
        let metadata = std::fs::metadata(source).map_err(|err| source_error(err.to_string()))?;
        if !metadata.is_dir() {
            return Err(source_error("it is not a directory".to_owned()));
        }
        let mut entries = std::fs::read_dir(source).map_err(|err| source_error(err.to_string()))?;
        if entries.next().is_none() {
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
        let mut parents = Vec::new();
        if let Some(parent) = &request.parent {
            match repo.get_snapshot_from_str(parent, |_| true) {
                Ok(snapshot) => {
                    let id = snapshot.id.to_hex().to_string();
                    outcome.parent = Some(id.clone());
                    parents.push(id);
                }
                Err(err) => outcome.warnings.push(format!(
                    "parent snapshot {parent} could not be used, so every file was read again: {}",
                    describe(&err)
                )),
            }
        }

        let mut snapshot = SnapshotOptions::default()
            .host(Some(SNAPSHOT_HOST.to_owned()))
            .to_snapshot()
            .map_err(backup_error)?;
        snapshot.label = request.label.clone().unwrap_or_default();
        for (key, value) in &request.tags {
            snapshot.tags.add(format!("{key}={value}"));
        }
        let options = BackupOptions::default()
            .as_path(PathBuf::from(SNAPSHOT_PATH))
            .parent_opts(
                ParentOptions::default()
                    .force(parents.is_empty())
                    .parents(parents)
                    // A volume re-attached elsewhere, or a CSI clone, gets new inode numbers.
                    .ignore_inode(true),
            );
        let local = LocalSource::new(
            options.ignore_save_opts,
            &options.excludes,
            &options.ignore_filter_opts,
            std::slice::from_ref(source),
        )
        .map_err(backup_error)?;
        let counting = CountingSource {
            inner: local,
            root: source.clone(),
            counters: self.counters.clone(),
        };

        // Warnings of an earlier call in this process belong to that call.
        warnings::take();
        let saved = repo
            .archive(&options, &counting, snapshot, std::slice::from_ref(source))
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

        let summary = saved.summary.unwrap_or_default();
        outcome.snapshot_id = Some(saved.id.to_hex().to_string());
        outcome.files = summary.total_files_processed;
        outcome.dirs = summary.total_dirs_processed;
        outcome.bytes = summary.total_bytes_processed;
        outcome.files_new = summary.files_new;
        outcome.files_changed = summary.files_changed;
        outcome.files_unmodified = summary.files_unmodified;
        outcome.data_added = summary.data_added;
        outcome.data_blobs = summary.data_blobs;
        self.counters.finish(outcome.bytes, outcome.files);
        Ok(outcome)
    }
}

/// rustic's local source, counting the entries the archiver takes, and totalling files and
/// bytes in its size scan so that progress has a file count as well as bytes.
struct CountingSource {
    inner: LocalSource,
    root: PathBuf,
    counters: Arc<ProgressCounters>,
}

impl ReadSource for CountingSource {
    type Open = <LocalSource as ReadSource>::Open;
    type Iter = CountingEntries;

    fn size(&self) -> RusticResult<Option<u64>> {
        let (bytes, files) = scan(&self.root);
        self.counters.set_totals(bytes, files);
        Ok(Some(bytes))
    }

    fn entries(&self) -> Self::Iter {
        CountingEntries {
            inner: self.inner.entries(),
            counters: self.counters.clone(),
        }
    }
}

struct CountingEntries {
    inner: <LocalSource as ReadSource>::Iter,
    counters: Arc<ProgressCounters>,
}

impl Iterator for CountingEntries {
    type Item = RusticResult<ReadSourceEntry<<LocalSource as ReadSource>::Open>>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.inner.next()?;
        if let Ok(entry) = &item
            && !entry.node.is_dir()
        {
            self.counters.add_files(1);
        }
        Some(item)
    }
}

/// Bytes of regular files and the number of non-directory entries under `root`, as the
/// archiver will see them (symlinks are not followed). Unreadable parts are skipped here; the
/// archiver reports them.
fn scan(root: &Path) -> (u64, u64) {
    let mut bytes = 0;
    let mut files = 0;
    for entry in WalkDir::new(root).min_depth(1).into_iter().flatten() {
        if entry.file_type().is_dir() {
            continue;
        }
        files += 1;
        if entry.file_type().is_file()
            && let Ok(metadata) = entry.metadata()
        {
            bytes += metadata.len();
        }
    }
    (bytes, files)
}
