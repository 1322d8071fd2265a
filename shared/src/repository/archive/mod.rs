//! Ferry's archiver: a volume into a snapshot, in restic's repository format.
//!
//! The backup's thread walks the volume through directory handles ([`super::source`]) and
//! compares each entry with the parent snapshot; a small pool of workers reads the files that
//! changed, in batches, and cuts, hashes, compresses, encrypts and packs their chunks; the
//! backup's thread builds the trees from the results, in the walk's order. A file costs no
//! thread hand-off of its own, which on volumes of many small files is what decides the
//! speed; a large file's chunks are shared out so that every core compresses.
//!
//! What is written is what restic writes, so restic reads, checks and restores it, and the
//! chunk boundaries are restic's, so the two deduplicate against each other. Packs are written
//! first, then the index that lists them, then the snapshot: a backup that stops leaves only
//! packs that no snapshot uses, for a prune to remove.

mod chunker;
mod pipeline;
mod store;
mod tree;
mod workers;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustic_core::jiff::Zoned;
use rustic_core::repofile::{BlobType, SnapshotFile, SnapshotSummary};
use rustic_core::{FileType, OpenStatus, Repository as RusticRepository, TreeId, WriteBackend};

use super::ProgressCounters;
use super::crypto;
use super::index::{self, Wanted};
use super::source::{Skipped, VolumeSource};
use super::trees::TreeReader;
use chunker::ChunkParams;
use pipeline::Pipeline;
use store::Store;
use tree::Counts;
use workers::Workers;

/// The most worker threads, whatever the number of cores.
const MOST_WORKERS: usize = 8;

/// Why a backup stopped.
#[derive(Debug, thiserror::Error)]
pub(super) enum ArchiveError {
    #[error("the repository's settings cannot be used: {0}")]
    Config(String),
    #[error("cannot read the repository's index: {0}")]
    Index(String),
    #[error("cannot compress: {0}")]
    Compress(String),
    #[error("cannot encrypt: {0}")]
    Encrypt(String),
    #[error("cannot verify what was stored, so the backup stopped (check the node's memory): {0}")]
    Verify(String),
    #[error("cannot encode: {0}")]
    Encode(String),
    #[error("a chunk is larger than a pack can record")]
    BlobTooLarge,
    #[error("cannot write to the repository: {0}")]
    Write(String),
    #[error("{0}")]
    Worker(String),
}

/// A saved snapshot, the entries left out of it, and the parent's trees that could not be
/// read (whose files were read again).
pub(super) struct Archived {
    pub(super) snapshot: SnapshotFile,
    pub(super) skipped: Vec<Skipped>,
    pub(super) parent_failures: Vec<String>,
}

/// Backs up `volume` into `snapshot` (whose host, label, tags, paths and parent are set),
/// comparing with the parent's tree `parent`.
pub(super) fn archive(
    repo: &RusticRepository<OpenStatus>,
    backend: Arc<dyn WriteBackend>,
    volume: &VolumeSource,
    mut snapshot: SnapshotFile,
    parent: Option<TreeId>,
    counters: &ProgressCounters,
) -> Result<Archived, ArchiveError> {
    let start = Zoned::now();
    let clock = Instant::now();
    let config = repo.config();
    let params = ChunkParams::of(config).map_err(ArchiveError::Config)?;
    let known = index::load(repo, Wanted::All).map_err(ArchiveError::Index)?;
    let cipher = crypto::cipher(&repo.key());
    let store = Store::new(
        backend.clone(),
        cipher.clone(),
        config,
        known.data,
        known.trees,
    )?;
    let mut parents = TreeReader::new(backend, cipher, known.tree_locations);
    let threads = std::thread::available_parallelism()
        .map_or(2, usize::from)
        .min(MOST_WORKERS);
    let walked = std::thread::scope(|scope| {
        scope.spawn(|| volume.count_totals());
        let workers = Workers::start(scope, threads, &store, params, counters);
        let walked = Pipeline::new(
            &store,
            &workers,
            &mut parents,
            counters,
            params.min() as u64,
            parent,
        )
        .run(volume.entries());
        let finished = workers.finish();
        let walked = walked?;
        finished.map(|()| walked)
    })?;
    store.flush()?;
    snapshot.tree = walked.root;
    snapshot.summary = Some(summary(&walked.counts, &store, start, clock.elapsed()));
    let id = store.write_file(FileType::Snapshot, &snapshot)?;
    snapshot.id = id.into();
    Ok(Archived {
        snapshot,
        skipped: walked.skipped,
        parent_failures: walked.parent_failures,
    })
}

fn summary(counts: &Counts, store: &Store, start: Zoned, took: Duration) -> SnapshotSummary {
    let (data_blobs, data_bytes, data_packed) = store.added(BlobType::Data).figures();
    let (tree_blobs, tree_bytes, tree_packed) = store.added(BlobType::Tree).figures();
    let mut summary = SnapshotSummary::default();
    summary.files_new = counts.files_new;
    summary.files_changed = counts.files_changed;
    summary.files_unmodified = counts.files_unmodified;
    summary.total_files_processed = counts.files;
    summary.total_bytes_processed = counts.bytes;
    summary.dirs_new = counts.dirs_new;
    summary.dirs_changed = counts.dirs_changed;
    summary.dirs_unmodified = counts.dirs_unmodified;
    summary.total_dirs_processed = counts.dirs;
    summary.data_blobs = data_blobs;
    summary.tree_blobs = tree_blobs;
    summary.data_added_files = data_bytes;
    summary.data_added_files_packed = data_packed;
    summary.data_added_trees = tree_bytes;
    summary.data_added_trees_packed = tree_packed;
    summary.data_added = data_bytes + tree_bytes;
    summary.data_added_packed = data_packed + tree_packed;
    summary.command = "ferry-node-agent backup".to_owned();
    summary.backup_start = start;
    summary.backup_end = Zoned::now();
    summary.backup_duration = took.as_secs_f64();
    summary.total_duration = took.as_secs_f64();
    summary
}

/// Locks `mutex`; a thread that panicked holding it left nothing half-done that matters here.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
