//! Restoring a snapshot into an empty directory, with bounded memory, through directory handles.
//!
//! rustic_core's own restore keeps up to twenty whole pack ranges and their decoded blobs in
//! flight (gigabytes for a gigabyte of data) and panics on I/O errors. Ferry plans the restore
//! itself instead:
//!
//! 1. claim the target (see `claim.rs`), walk the snapshot's trees, checking every name, and
//!    create the directories and the empty files;
//! 2. look up every data blob in the index and group the blobs by pack into read ranges of at
//!    most [`MAX_RANGE`] bytes, so neighbouring blobs cost one request;
//! 3. a few workers each read one range at a time, decrypt, decompress and verify each blob,
//!    and write it at its offsets, creating each file with its first blob and setting its
//!    owner, mode and times once its last byte is written;
//! 4. create symlinks and FIFOs, then set the directories' metadata, deepest first.
//!
//! Memory is bounded by the workers times one range and its largest blob, whatever the size of
//! the snapshot. Safety: names are single path components, and every entry is created, written
//! and changed through handles that never lead out of the target (see `target.rs`), whatever
//! another writer does to the target meanwhile.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::num::NonZeroU32;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use aes256ctr_poly1305aes::Aes256CtrPoly1305Aes;
use bytes::BytesMut;
use nix::fcntl::OFlag;
use nix::unistd::Uid;
use rustic_core::repofile::{NodeType, SnapshotFile};
use rustic_core::{DataId, FileType, IndexedFullStatus, Repository as RusticRepository, TreeId};
use serde::{Deserialize, Serialize};

use super::claim::{self, Claim, Decision, FINISHED_LINE, IGNORED_IN_TARGET};
use super::crypto::{cipher, decode_blob};
use super::error::describe;
use super::index::{self, Wanted};
use super::target::{Attributes, Identity, Target};
use super::trees::TreeReader;
use super::{EngineError, ProgressCounters, Repository};

/// The most bytes of one pack read in one request (a single larger blob is read whole).
const MAX_RANGE: u32 = 4 * 1024 * 1024;
/// Blobs closer than this in a pack are read together, the gap read and dropped.
const MAX_GAP: u32 = 64 * 1024;
/// Workers reading, decoding and writing in parallel.
const WORKERS: usize = 4;

/// What to restore, and where.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreRequest {
    /// A snapshot ID, or a unique prefix of one.
    pub snapshot: String,
    /// An empty (or missing) directory to restore into.
    pub target: PathBuf,
    /// Who claims the target while restoring into it (the PodVolumeRestore's UID in the
    /// agent), so that a later attempt by the same owner may resume; the full snapshot ID when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Finish an interrupted attempt of the same owner and snapshot, instead of refusing a
    /// target that is not empty.
    #[serde(default)]
    pub resume: bool,
}

/// What a restore did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreOutcome {
    pub snapshot_id: String,
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    pub warnings: Vec<String>,
}

/// A restore whose data and metadata are all in place, still claiming its target, so that the
/// caller can write its own last word (the done-marker) before [`Restored::release`].
#[must_use = "the target stays claimed until the restore is released"]
pub struct Restored {
    outcome: RestoreOutcome,
    target: Target,
    claim: Claim,
}

impl Restored {
    /// The restored directory.
    pub fn target(&self) -> &Path {
        self.target.path()
    }

    /// Removes the restore's claim from the target: the restore is complete.
    pub fn release(self) -> Result<RestoreOutcome, EngineError> {
        self.target.remove_file(Path::new(self.claim.name()))?;
        Ok(self.outcome)
    }
}

impl Repository {
    /// Restores a snapshot into `request.target`, which must be empty or missing (or hold an
    /// interrupted attempt of the same restore, when `request.resume` allows).
    pub fn restore(self, request: &RestoreRequest) -> Result<RestoreOutcome, EngineError> {
        self.restore_claimed(request, None)?.release()
    }

    /// Restores like [`Repository::restore`], but leaves the target claimed until
    /// [`Restored::release`]. `done_marker`, relative to the target, is the file the caller
    /// writes before releasing: finding it beside this restore's claim means an earlier
    /// attempt finished, and nothing is restored again.
    pub fn restore_claimed(
        self,
        request: &RestoreRequest,
        done_marker: Option<&Path>,
    ) -> Result<Restored, EngineError> {
        let target = Target::open(&request.target)?;
        let snapshot = self
            .repo
            .get_snapshot_from_str(&request.snapshot, |_| true)
            .map_err(|_| EngineError::SnapshotNotFound {
                id: request.snapshot.clone(),
                location: self.location.clone(),
            })?;
        let snapshot_id = snapshot.id.to_hex().to_string();
        let refuse = |cause: String| EngineError::Target {
            path: request.target.clone(),
            cause,
        };
        let owner = request.owner.as_deref().unwrap_or(&snapshot_id);
        let claim = Claim::new(owner).map_err(refuse)?;
        let found = claim::inspect(&target, &claim, done_marker)?;
        let decision = claim::decide(&found, &snapshot_id, request.resume);
        if let Decision::Refuse(cause) = decision {
            return Err(refuse(cause));
        }
        let outcome = self.restore_snapshot(&snapshot, &target, &claim, &decision)?;
        Ok(Restored {
            outcome,
            target,
            claim,
        })
    }

    /// Restores the snapshot into the inspected target (or, when an earlier attempt finished,
    /// only counts it), and marks the claim finished.
    fn restore_snapshot(
        self,
        snapshot: &SnapshotFile,
        target: &Target,
        claim: &Claim,
        decision: &Decision,
    ) -> Result<RestoreOutcome, EngineError> {
        let cipher = cipher(&self.repo.key());
        let trees =
            index::load(&self.repo, Wanted::Trees).map_err(|cause| EngineError::LoadIndex {
                location: self.location.clone(),
                cause,
            })?;
        let mut trees = TreeReader::new(
            self.backends.repository(),
            cipher.clone(),
            trees.tree_locations,
        );
        let repo = self
            .repo
            .to_indexed()
            .map_err(|err| EngineError::LoadIndex {
                location: self.location.clone(),
                cause: describe(&err),
            })?;
        let mut tree = Walk::for_snapshot(snapshot);
        tree.walk(&mut trees, snapshot.tree)?;
        drop(trees);
        let plan = plan_reads(&repo, &tree)?;
        // The index is not needed past the plan; the writing has its memory.
        drop(repo);
        let total_bytes: u64 = tree
            .files
            .iter()
            .map(|file| file.remaining.load(Ordering::Relaxed))
            .sum();
        // Files as a backup counts them: every entry that is not a directory.
        let total_files = (tree.files.len() + tree.specials.len()) as u64;
        let outcome = RestoreOutcome {
            snapshot_id: snapshot.id.to_hex().to_string(),
            files: total_files,
            dirs: tree.dirs.len() as u64,
            bytes: total_bytes,
            warnings: tree.warnings(),
        };
        if *decision == Decision::Finished {
            self.counters.finish(total_bytes, total_files);
            return Ok(outcome);
        }
        self.counters.set_totals(total_bytes, total_files);
        claim_target(target, claim, &outcome.snapshot_id, decision)?;
        let writer = Writer {
            target,
            counters: &self.counters,
            as_root: Uid::effective().is_root(),
        };
        let dirs = writer.create_entries(&tree)?;
        writer.write_contents(&self.backends, &cipher, &tree, &plan)?;
        writer.create_specials(&tree)?;
        writer.set_dir_metadata(&tree, &dirs)?;
        target
            .write_durably(Path::new(claim.name()), FINISHED_LINE, false)
            .map(|()| outcome)
    }
}

/// Writes the claim into a target that holds nothing else (clearing an interrupted attempt
/// first), and checks that nothing else appeared meanwhile: another restore that found the
/// target empty too.
fn claim_target(
    target: &Target,
    claim: &Claim,
    snapshot_id: &str,
    decision: &Decision,
) -> Result<(), EngineError> {
    let claim_path = Path::new(claim.name());
    if *decision == Decision::Restart {
        let mut keep: Vec<&OsStr> = IGNORED_IN_TARGET.iter().map(OsStr::new).collect();
        keep.push(claim.name());
        target.clear(&keep)?;
        // Only the claim is left, so the target may be empty for a moment while the claim is
        // written anew, whole even if a crash had cut it short.
        target.remove_file(claim_path)?;
    }
    target.write_durably(claim_path, &Claim::content(snapshot_id), true)?;
    let intruder = target.entries()?.into_iter().find(|name| {
        name != claim.name() && !IGNORED_IN_TARGET.iter().any(|ignored| name == *ignored)
    });
    match intruder {
        Some(name) => Err(target.changed(
            Path::new(&name),
            "it appeared while the restore claimed the empty target".to_owned(),
        )),
        None => Ok(()),
    }
}

/// One regular file of the snapshot.
struct PlannedFile {
    path: PathBuf,
    content: Box<[DataId]>,
    meta: Attributes,
    /// Bytes not yet written, from the plan; the file is done when this reaches zero.
    remaining: AtomicU64,
    /// Set by the one worker that creates the file: what it created, or `None` when that
    /// failed (and that worker reports why).
    created: OnceLock<Option<Identity>>,
}

/// A symlink, FIFO, device or socket.
struct Special {
    path: PathBuf,
    node_type: NodeType,
    meta: Attributes,
}

/// Everything in the snapshot, by kind, with paths relative to the target.
#[derive(Default)]
struct Walk {
    /// In the order they must be created: every parent before its children.
    dirs: Vec<(PathBuf, Attributes)>,
    files: Vec<PlannedFile>,
    specials: Vec<Special>,
    has_xattrs: bool,
}

/// The most files a walk makes room for up front, from the snapshot's own count.
const MOST_FILES_RESERVED: u64 = 1 << 22;

impl Walk {
    /// An empty walk with room for the files the snapshot's summary counts (up to a bound, as
    /// the summary is only the snapshot's word), so that the list is not grown by doubling,
    /// when old and new would be held at once.
    fn for_snapshot(snapshot: &SnapshotFile) -> Self {
        let files = snapshot
            .summary
            .as_ref()
            .map_or(0, |summary| summary.total_files_processed)
            .min(MOST_FILES_RESERVED);
        Self {
            files: Vec::with_capacity(usize::try_from(files).unwrap_or(0)),
            ..Self::default()
        }
    }

    fn walk(&mut self, trees: &mut TreeReader, root: TreeId) -> Result<(), EngineError> {
        let mut pending = vec![(PathBuf::new(), root)];
        while let Some((dir, tree_id)) = pending.pop() {
            let tree = trees
                .read(tree_id)
                .map_err(|cause| EngineError::ReadRepository {
                    what: format!("the tree of {}", display_dir(&dir)),
                    cause,
                })?;
            let mut seen = HashSet::new();
            for node in tree.nodes {
                let name = node.name().into_owned();
                check_name(&dir, &name, &mut seen)?;
                let path = dir.join(&name);
                self.has_xattrs |= !node.meta.extended_attributes.is_empty();
                match node.node_type {
                    NodeType::Dir => {
                        let subtree = node.subtree.ok_or_else(|| EngineError::UnsafeEntry {
                            parent: dir.clone(),
                            entry: name.to_string_lossy().into_owned(),
                            cause: "the directory has no tree".to_owned(),
                        })?;
                        self.dirs.push((path.clone(), Attributes::from(&node.meta)));
                        pending.push((path, subtree));
                    }
                    NodeType::File => self.files.push(PlannedFile {
                        path,
                        content: node.content.unwrap_or_default().into_boxed_slice(),
                        meta: Attributes::from(&node.meta),
                        remaining: AtomicU64::new(0),
                        created: OnceLock::new(),
                    }),
                    node_type => self.specials.push(Special {
                        path,
                        node_type,
                        meta: Attributes::from(&node.meta),
                    }),
                }
            }
        }
        Ok(())
    }

    /// What the restore leaves out, as warnings: devices, sockets, extended attributes.
    fn warnings(&self) -> Vec<String> {
        let mut warnings: Vec<String> = self
            .specials
            .iter()
            .filter_map(|special| match special.node_type {
                NodeType::Dev { .. } | NodeType::Chardev { .. } => Some(format!(
                    "device node {} was not restored",
                    special.path.display()
                )),
                NodeType::Socket => Some(format!(
                    "socket {} was not restored (a socket belongs to the program that made it)",
                    special.path.display()
                )),
                _ => None,
            })
            .collect();
        if self.has_xattrs {
            warnings.push("extended attributes in the snapshot were not restored".to_owned());
        }
        warnings
    }
}

fn display_dir(dir: &Path) -> String {
    if dir.as_os_str().is_empty() {
        "the snapshot root".to_owned()
    } else {
        dir.display().to_string()
    }
}

/// A name from a snapshot must be one plain path component, unique in its directory.
fn check_name(dir: &Path, name: &OsStr, seen: &mut HashSet<OsString>) -> Result<(), EngineError> {
    let bytes = name.as_bytes();
    let cause = if bytes.is_empty() {
        Some("the name is empty")
    } else if name == "." || name == ".." {
        Some("the name refers to a directory itself or its parent")
    } else if bytes.contains(&b'/') {
        Some("the name contains a slash")
    } else if bytes.contains(&0) {
        Some("the name contains a NUL byte")
    } else if !seen.insert(name.to_owned()) {
        Some("the name appears twice in its directory")
    } else {
        None
    };
    match cause {
        Some(cause) => Err(EngineError::UnsafeEntry {
            parent: dir.to_owned(),
            entry: name.to_string_lossy().into_owned(),
            cause: cause.to_owned(),
        }),
        None => Ok(()),
    }
}

/// Where one blob's plaintext goes, as (file index, offset in the file). Most blobs go to one
/// place, which then needs no allocation of its own.
struct Targets {
    first: (usize, u64),
    more: Vec<(usize, u64)>,
}

impl Targets {
    fn iter(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        std::iter::once(self.first).chain(self.more.iter().copied())
    }
}

/// One blob to decode from a range, and where its plaintext goes.
struct RangeBlob {
    id: DataId,
    /// Offset of the blob inside the range's bytes.
    start: usize,
    length: usize,
    uncompressed: Option<NonZeroU32>,
    targets: Targets,
}

/// One read request: a stretch of one pack.
struct ReadRange {
    pack: rustic_core::Id,
    offset: u32,
    length: u32,
    blobs: Vec<RangeBlob>,
}

/// A data blob's place in its pack (by the pack's index in the list of packs), and where its
/// bytes go.
struct Located {
    id: DataId,
    pack: usize,
    offset: u32,
    length: u32,
    uncompressed: Option<NonZeroU32>,
    targets: Targets,
}

/// The read requests that fetch every blob of the tree's files: by pack, in pack order,
/// neighbouring blobs read together.
fn plan_reads(
    repo: &RusticRepository<IndexedFullStatus>,
    tree: &Walk,
) -> Result<Vec<ReadRange>, EngineError> {
    let (packs, mut blobs) = locate_blobs(repo, tree)?;
    blobs.sort_unstable_by(|a, b| (packs[a.pack], a.offset).cmp(&(packs[b.pack], b.offset)));
    let mut ranges = Vec::new();
    let mut current: Option<ReadRange> = None;
    for blob in blobs {
        let end = blob.offset + blob.length;
        let fits = current.as_ref().is_some_and(|range| {
            let range_end = range.offset + range.length;
            range.pack == packs[blob.pack]
                && blob.offset >= range_end
                && blob.offset - range_end <= MAX_GAP
                && end - range.offset <= MAX_RANGE
        });
        if !fits {
            ranges.extend(current.take());
            current = Some(ReadRange {
                pack: packs[blob.pack],
                offset: blob.offset,
                length: 0,
                blobs: Vec::new(),
            });
        }
        if let Some(range) = current.as_mut() {
            range.blobs.push(RangeBlob {
                id: blob.id,
                start: (blob.offset - range.offset) as usize,
                length: blob.length as usize,
                uncompressed: blob.uncompressed,
                targets: blob.targets,
            });
            range.length = end - range.offset;
        }
    }
    ranges.extend(current);
    Ok(ranges)
}

/// The packs holding the tree's data, and every data blob of the tree's files with the places
/// it goes; a blob that several files or places hold is listed once.
fn locate_blobs(
    repo: &RusticRepository<IndexedFullStatus>,
    tree: &Walk,
) -> Result<(Vec<rustic_core::Id>, Vec<Located>), EngineError> {
    let mut packs = Vec::new();
    let mut pack_index: HashMap<rustic_core::Id, usize> = HashMap::new();
    // At most one entry per reference, reserved at once rather than grown by doubling.
    let references = tree.files.iter().map(|file| file.content.len()).sum();
    let mut blobs: Vec<Located> = Vec::with_capacity(references);
    let mut seen: HashMap<DataId, usize> = HashMap::with_capacity(references);
    for (index, file) in tree.files.iter().enumerate() {
        let mut offset = 0u64;
        for id in &file.content {
            let entry = repo
                .get_index_entry(id)
                .map_err(|err| EngineError::ReadData {
                    path: file.path.clone(),
                    pack: "(unknown)".to_owned(),
                    cause: format!(
                        "data blob {id} is not in the index; the repository is damaged, run a check: {}",
                        describe(&err)
                    ),
                })?;
            let target = (index, offset);
            offset += u64::from(entry.location.data_length());
            if let Some(&known) = seen.get(id) {
                blobs[known].targets.more.push(target);
                continue;
            }
            let pack = *pack_index.entry(*entry.pack).or_insert_with(|| {
                packs.push(*entry.pack);
                packs.len() - 1
            });
            seen.insert(*id, blobs.len());
            blobs.push(Located {
                id: *id,
                pack,
                offset: entry.location.offset,
                length: entry.location.length,
                uncompressed: entry.location.uncompressed_length,
                targets: Targets {
                    first: target,
                    more: Vec::new(),
                },
            });
        }
        // The blobs, not the recorded size, say how much a file holds.
        file.remaining.store(offset, Ordering::Relaxed);
    }
    Ok((packs, blobs))
}

/// The handle of the directory whose entries were created last: a tree's entries come
/// together, so consecutive entries mostly share it.
struct Parents<'a> {
    target: &'a Target,
    last: Option<(PathBuf, OwnedFd)>,
}

impl<'a> Parents<'a> {
    fn new(target: &'a Target) -> Self {
        Self { target, last: None }
    }

    fn of(&mut self, relative: &Path) -> Result<&OwnedFd, EngineError> {
        let parent = relative.parent().unwrap_or(Path::new(""));
        let (path, handle) = match self.last.take() {
            Some((path, handle)) if path == parent => (path, handle),
            _ => (parent.to_owned(), self.target.open_dir(parent)?),
        };
        Ok(&self.last.insert((path, handle)).1)
    }
}

struct Writer<'a> {
    target: &'a Target,
    counters: &'a ProgressCounters,
    /// Ownership is restored only by root; anyone else keeps their own.
    as_root: bool,
}

impl Writer<'_> {
    /// Creates every directory (owner-only until its metadata is set) and every empty file,
    /// with its metadata; the workers create the others as they write them. Returns what each
    /// directory is, in the order of `tree.dirs`.
    fn create_entries(&self, tree: &Walk) -> Result<Vec<Identity>, EngineError> {
        let mut parents = Parents::new(self.target);
        let mut dirs = Vec::with_capacity(tree.dirs.len());
        for (path, _) in &tree.dirs {
            let parent = parents.of(path)?;
            dirs.push(self.target.create_dir(parent, path)?);
        }
        for file in tree.files.iter().filter(|file| file.content.is_empty()) {
            let (handle, _) = self.target.create_file(&file.path)?;
            self.target
                .set_metadata(&handle, &file.path, &file.meta, self.as_root)?;
            self.counters.add_files(1);
        }
        Ok(dirs)
    }

    fn write_contents(
        &self,
        backends: &rustic_core::RepositoryBackends,
        cipher: &Aes256CtrPoly1305Aes,
        tree: &Walk,
        ranges: &[ReadRange],
    ) -> Result<(), EngineError> {
        let backend = backends.repository();
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let first_error: Mutex<Option<EngineError>> = Mutex::new(None);
        std::thread::scope(|scope| {
            for _ in 0..WORKERS.min(ranges.len()) {
                scope.spawn(|| {
                    let mut worker = Worker {
                        writer: self,
                        tree,
                        open: None,
                    };
                    while !failed.load(Ordering::Relaxed) {
                        let Some(range) = ranges.get(next.fetch_add(1, Ordering::Relaxed)) else {
                            break;
                        };
                        if let Err(err) = worker.restore_range(backend.as_ref(), cipher, range) {
                            failed.store(true, Ordering::Relaxed);
                            let mut slot = first_error
                                .lock()
                                .unwrap_or_else(|poisoned| poisoned.into_inner());
                            slot.get_or_insert(err);
                        }
                    }
                });
            }
        });
        match first_error
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
        {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// Creates symlinks and FIFOs, each with its metadata; devices and sockets are left out
    /// (with a warning each, from the walk).
    fn create_specials(&self, tree: &Walk) -> Result<(), EngineError> {
        let mut parents = Parents::new(self.target);
        for special in &tree.specials {
            let path = &special.path;
            match &special.node_type {
                NodeType::Symlink { .. } => {
                    let parent = parents.of(path)?;
                    let link = special.node_type.to_link();
                    self.target.create_symlink(parent, path, link)?;
                    self.target
                        .set_link_metadata(parent, path, &special.meta, self.as_root)?;
                }
                NodeType::Fifo => {
                    let created = self.target.create_fifo(parents.of(path)?, path)?;
                    let handle = self.target.open_created(path, OFlag::O_RDONLY, created)?;
                    self.target
                        .set_metadata(&handle, path, &special.meta, self.as_root)?;
                }
                _ => {}
            }
            self.counters.add_files(1);
        }
        Ok(())
    }

    /// Directories last, deepest first, so that creating or changing a child never touches a
    /// parent's time afterwards.
    fn set_dir_metadata(&self, tree: &Walk, dirs: &[Identity]) -> Result<(), EngineError> {
        for ((path, meta), created) in tree.dirs.iter().zip(dirs).rev() {
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
            let handle = self.target.open_created(path, flags, *created)?;
            self.target
                .set_metadata(&handle, path, meta, self.as_root)?;
        }
        Ok(())
    }
}

/// One worker's state: the file it wrote last stays open for the next blob.
struct Worker<'a> {
    writer: &'a Writer<'a>,
    tree: &'a Walk,
    open: Option<(usize, File)>,
}

impl Worker<'_> {
    fn restore_range(
        &mut self,
        backend: &dyn rustic_core::WriteBackend,
        cipher: &Aes256CtrPoly1305Aes,
        range: &ReadRange,
    ) -> Result<(), EngineError> {
        let first_path = || {
            range
                .blobs
                .first()
                .map(|blob| self.tree.files[blob.targets.first.0].path.clone())
                .unwrap_or_default()
        };
        let read = backend
            .read_partial(
                FileType::Pack,
                &range.pack,
                false,
                range.offset,
                range.length,
            )
            .map_err(|err| EngineError::ReadData {
                path: self.writer.target.path().join(first_path()),
                pack: range.pack.to_string(),
                cause: describe(&err),
            })?;
        let mut bytes = read
            .try_into_mut()
            .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
        let received = bytes.len();
        for blob in &range.blobs {
            let raw = bytes
                .get_mut(blob.start..blob.start + blob.length)
                .ok_or_else(|| EngineError::ReadData {
                    path: self.writer.target.path().join(first_path()),
                    pack: range.pack.to_string(),
                    cause: format!(
                        "the pack returned {received} bytes where {} were expected",
                        range.length
                    ),
                })?;
            let plain = decode_blob(cipher, raw, blob.uncompressed, &blob.id).map_err(|cause| {
                EngineError::ReadData {
                    path: self.writer.target.path().join(first_path()),
                    pack: range.pack.to_string(),
                    cause,
                }
            })?;
            for (file, offset) in blob.targets.iter() {
                self.write(file, offset, &plain)?;
            }
        }
        Ok(())
    }

    fn write(&mut self, index: usize, offset: u64, data: &[u8]) -> Result<(), EngineError> {
        let file = &self.tree.files[index];
        let target = self.writer.target;
        if self.open.as_ref().is_none_or(|(open, _)| *open != index) {
            let Some(handle) = self.handle(file)? else {
                // Its creator failed and reports why; the restore stops with that.
                return Ok(());
            };
            self.open = Some((index, handle));
        }
        let Some((_, handle)) = &self.open else {
            return Ok(());
        };
        handle
            .write_all_at(data, offset)
            .map_err(|err| target.io_error("write", &file.path, err))?;
        let written = data.len() as u64;
        self.writer.counters.add_bytes(written);
        if file.remaining.fetch_sub(written, Ordering::Relaxed) == written {
            target.set_metadata(handle, &file.path, &file.meta, self.writer.as_root)?;
            self.writer.counters.add_files(1);
        }
        Ok(())
    }

    /// A handle to write `file`: created by the first worker to need it, reopened (and checked
    /// to be that same file) by the others. `None` when its creation failed.
    fn handle(&self, file: &PlannedFile) -> Result<Option<File>, EngineError> {
        let target = self.writer.target;
        let mut outcome = None;
        let created = file.created.get_or_init(|| {
            let result = target.create_file(&file.path);
            let identity = result.as_ref().ok().map(|(_, identity)| *identity);
            outcome = Some(result);
            identity
        });
        match (outcome, created) {
            (Some(result), _) => result.map(|(handle, _)| Some(handle)),
            (None, Some(identity)) => target
                .open_created(&file.path, OFlag::O_WRONLY, *identity)
                .map(|handle| Some(File::from(handle))),
            (None, None) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_names_are_refused() {
        let mut seen = HashSet::new();
        for name in ["", ".", "..", "a/b", "/etc", "nul\0byte"] {
            let err = check_name(Path::new("dir"), OsStr::new(name), &mut seen);
            assert!(err.is_err(), "{name:?} was accepted");
        }
        assert!(check_name(Path::new("dir"), OsStr::new("..."), &mut seen).is_ok());
        assert!(check_name(Path::new("dir"), OsStr::from_bytes(b"caf\xe9"), &mut seen).is_ok());
        let twice = check_name(Path::new("dir"), OsStr::new("..."), &mut seen);
        assert!(twice.is_err(), "a duplicate name was accepted");
    }
}
