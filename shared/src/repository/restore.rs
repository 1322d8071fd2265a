//! Restoring a snapshot into an empty directory, with bounded memory.
//!
//! rustic_core's own restore keeps up to twenty whole pack ranges and their decoded blobs in
//! flight (gigabytes for a gigabyte of data) and panics on I/O errors. Ferry plans the restore
//! itself instead:
//!
//! 1. walk the snapshot's trees, checking every name, and create the directories and the
//!    empty files;
//! 2. look up every data blob in the index and group the blobs by pack into read ranges of at
//!    most [`MAX_RANGE`] bytes, so neighbouring blobs cost one request;
//! 3. a few workers each read one range at a time, decrypt, decompress and verify each blob,
//!    and write it at its offsets, creating each file with its first blob;
//! 4. create symlinks and FIFOs, then set ownership, modes and times, directories last.
//!
//! Memory is bounded by the workers times one range and its largest blob, whatever the size of
//! the snapshot. Safety: names are single path components; directories and files are created
//! anew (never through an existing entry), and symlinks are created only after all data is
//! written, so no write ever follows a link.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::num::NonZeroU32;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use aes256ctr_poly1305aes::Aes256CtrPoly1305Aes;
use aes256ctr_poly1305aes::aead::AeadInPlace;
use aes256ctr_poly1305aes::aead::generic_array::GenericArray;
use bytes::BytesMut;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag};
use nix::sys::stat::{Mode, UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchownat, mkfifo};
use rustic_core::repofile::Metadata;
use rustic_core::repofile::NodeType;
use rustic_core::{DataId, FileType, IndexedFullStatus, Repository as RusticRepository, TreeId};
use serde::{Deserialize, Serialize};

use super::error::describe;
use super::{EngineError, ProgressCounters, Repository};

/// The most bytes of one pack read in one request (a single larger blob is read whole).
const MAX_RANGE: u32 = 4 * 1024 * 1024;
/// Blobs closer than this in a pack are read together, the gap read and dropped.
const MAX_GAP: u32 = 64 * 1024;
/// Workers reading, decoding and writing in parallel.
const WORKERS: usize = 4;
/// Entries a freshly formatted volume may hold, and which a restore leaves alone.
const IGNORED_IN_TARGET: &[&str] = &["lost+found"];

/// What to restore, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreRequest {
    /// A snapshot ID, or a unique prefix of one.
    pub snapshot: String,
    /// An empty (or missing) directory to restore into.
    pub target: PathBuf,
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

impl Repository {
    /// Restores a snapshot into `request.target`, which must be empty or missing.
    pub fn restore(self, request: &RestoreRequest) -> Result<RestoreOutcome, EngineError> {
        let target = prepare_target(&request.target)?;
        let cipher = cipher(&self.repo.key());
        let repo = self
            .repo
            .to_indexed()
            .map_err(|err| EngineError::LoadIndex {
                location: self.location.clone(),
                cause: describe(&err),
            })?;
        let snapshot = repo
            .get_snapshot_from_str(&request.snapshot, |_| true)
            .map_err(|_| EngineError::SnapshotNotFound {
                id: request.snapshot.clone(),
                location: self.location.clone(),
            })?;

        let mut tree = Walk::default();
        tree.walk(&repo, snapshot.tree)?;
        let plan = plan_reads(&repo, &tree)?;
        let total_bytes: u64 = tree
            .files
            .iter()
            .map(|file| file.remaining.load(Ordering::Relaxed))
            .sum();
        // Files as a backup counts them: every entry that is not a directory.
        let total_files = (tree.files.len() + tree.specials.len()) as u64;
        self.counters.set_totals(total_bytes, total_files);

        let mut outcome = RestoreOutcome {
            snapshot_id: snapshot.id.to_hex().to_string(),
            files: total_files,
            dirs: tree.dirs.len() as u64,
            bytes: total_bytes,
            warnings: Vec::new(),
        };
        let writer = Writer {
            target: &target,
            counters: &self.counters,
        };
        writer.create_entries(&tree)?;
        writer.write_contents(&self.backends, &cipher, &tree, &plan)?;
        writer.create_specials(&tree, &mut outcome.warnings)?;
        writer.set_metadata(&tree)?;
        if tree.has_xattrs {
            outcome
                .warnings
                .push("extended attributes in the snapshot were not restored".to_owned());
        }
        Ok(outcome)
    }
}

/// Makes sure the target is an empty directory, creating it if missing, and returns its
/// canonical path.
fn prepare_target(target: &Path) -> Result<PathBuf, EngineError> {
    let error = |cause: String| EngineError::Target {
        path: target.to_owned(),
        cause,
    };
    match fs::symlink_metadata(target) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(target).map_err(|err| error(err.to_string()))?;
        }
        Err(err) => return Err(error(err.to_string())),
        Ok(metadata) if metadata.is_dir() => {
            let entries = fs::read_dir(target).map_err(|err| error(err.to_string()))?;
            let mut found = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|err| error(err.to_string()))?;
                let name = entry.file_name();
                if !IGNORED_IN_TARGET.iter().any(|ignored| name == *ignored) {
                    found.push(name.to_string_lossy().into_owned());
                }
            }
            if !found.is_empty() {
                found.sort();
                found.truncate(5);
                return Err(error(format!(
                    "the directory is not empty (it holds {}); restore only into an empty directory",
                    found.join(", ")
                )));
            }
        }
        Ok(metadata) if metadata.file_type().is_symlink() => {
            return Err(error(
                "it is a symbolic link; give the real directory".to_owned(),
            ));
        }
        Ok(_) => return Err(error("it is not a directory".to_owned())),
    }
    target.canonicalize().map_err(|err| error(err.to_string()))
}

/// One regular file of the snapshot.
struct PlannedFile {
    path: PathBuf,
    content: Vec<DataId>,
    meta: Metadata,
    /// Bytes not yet written, from the plan; the file is done when this reaches zero.
    remaining: AtomicU64,
}

/// A symlink, FIFO, device or socket.
struct Special {
    path: PathBuf,
    node_type: NodeType,
    meta: Metadata,
}

/// Everything in the snapshot, by kind, with paths relative to the target.
#[derive(Default)]
struct Walk {
    /// In the order they must be created: every parent before its children.
    dirs: Vec<(PathBuf, Metadata)>,
    files: Vec<PlannedFile>,
    specials: Vec<Special>,
    has_xattrs: bool,
}

impl Walk {
    fn walk(
        &mut self,
        repo: &RusticRepository<IndexedFullStatus>,
        root: TreeId,
    ) -> Result<(), EngineError> {
        let mut pending = vec![(PathBuf::new(), root)];
        while let Some((dir, tree_id)) = pending.pop() {
            let tree = repo
                .get_tree(&tree_id)
                .map_err(|err| EngineError::ReadRepository {
                    what: format!("the tree of {}", display_dir(&dir)),
                    cause: describe(&err),
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
                        self.dirs.push((path.clone(), node.meta));
                        pending.push((path, subtree));
                    }
                    NodeType::File => self.files.push(PlannedFile {
                        path,
                        content: node.content.unwrap_or_default(),
                        meta: node.meta,
                        remaining: AtomicU64::new(0),
                    }),
                    node_type => self.specials.push(Special {
                        path,
                        node_type,
                        meta: node.meta,
                    }),
                }
            }
        }
        Ok(())
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

/// One blob to decode from a range, and where its plaintext goes.
struct RangeBlob {
    id: DataId,
    /// Offset of the blob inside the range's bytes.
    start: usize,
    length: usize,
    uncompressed: Option<NonZeroU32>,
    /// (file index, offset in the file)
    targets: Vec<(usize, u64)>,
}

/// One read request: a stretch of one pack.
struct ReadRange {
    pack: rustic_core::Id,
    offset: u32,
    length: u32,
    blobs: Vec<RangeBlob>,
}

fn plan_reads(
    repo: &RusticRepository<IndexedFullStatus>,
    tree: &Walk,
) -> Result<Vec<ReadRange>, EngineError> {
    struct Located {
        id: DataId,
        offset: u32,
        length: u32,
        uncompressed: Option<NonZeroU32>,
        targets: Vec<(usize, u64)>,
    }
    let mut packs: HashMap<rustic_core::Id, HashMap<DataId, Located>> = HashMap::new();
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
            let located = packs
                .entry(*entry.pack)
                .or_default()
                .entry(*id)
                .or_insert_with(|| Located {
                    id: *id,
                    offset: entry.location.offset,
                    length: entry.location.length,
                    uncompressed: entry.location.uncompressed_length,
                    targets: Vec::new(),
                });
            located.targets.push((index, offset));
            offset += u64::from(entry.location.data_length());
        }
        // The blobs, not the recorded size, say how much a file holds.
        file.remaining.store(offset, Ordering::Relaxed);
    }

    let mut ranges = Vec::new();
    let mut pack_ids: Vec<_> = packs.keys().copied().collect();
    pack_ids.sort_unstable();
    for pack in pack_ids {
        let mut blobs: Vec<Located> = packs
            .remove(&pack)
            .unwrap_or_default()
            .into_values()
            .collect();
        blobs.sort_unstable_by_key(|blob| blob.offset);
        let mut current: Option<ReadRange> = None;
        for blob in blobs {
            let end = blob.offset + blob.length;
            let fits = current.as_ref().is_some_and(|range| {
                let range_end = range.offset + range.length;
                blob.offset >= range_end
                    && blob.offset - range_end <= MAX_GAP
                    && end - range.offset <= MAX_RANGE
            });
            if !fits {
                ranges.extend(current.take());
                current = Some(ReadRange {
                    pack,
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
    }
    Ok(ranges)
}

fn cipher(key: &rustic_core::repofile::MasterKey) -> Aes256CtrPoly1305Aes {
    let mut bytes = [0u8; 64];
    bytes[..32].copy_from_slice(&key.encrypt);
    bytes[32..48].copy_from_slice(&key.mac.k);
    bytes[48..].copy_from_slice(&key.mac.r);
    Aes256CtrPoly1305Aes::new(GenericArray::from_slice(&bytes))
}

/// Decrypts (in place), decompresses and verifies one blob as stored in a pack, and returns
/// its plaintext: borrowed from `raw` when the blob is not compressed.
fn decode_blob<'a>(
    cipher: &Aes256CtrPoly1305Aes,
    raw: &'a mut [u8],
    uncompressed: Option<NonZeroU32>,
    id: &DataId,
) -> Result<Cow<'a, [u8]>, String> {
    if raw.len() < 32 {
        return Err(format!("blob {id} is too short to be encrypted data"));
    }
    let (nonce, rest) = raw.split_at_mut(16);
    let split = rest.len() - 16;
    let (ciphertext, tag) = rest.split_at_mut(split);
    cipher
        .decrypt_in_place_detached(
            GenericArray::from_slice(nonce),
            &[],
            ciphertext,
            GenericArray::from_slice(tag),
        )
        .map_err(|_| format!("blob {id} fails its authentication check: the pack is damaged"))?;
    let plain = match uncompressed {
        Some(length) => {
            let length = length.get() as usize;
            let plain = zstd::bulk::decompress(ciphertext, length)
                .map_err(|err| format!("blob {id} cannot be decompressed: {err}"))?;
            if plain.len() != length {
                return Err(format!(
                    "blob {id} decompressed to {} bytes instead of {length}",
                    plain.len()
                ));
            }
            Cow::Owned(plain)
        }
        None => Cow::Borrowed(&*ciphertext),
    };
    if !id.blob_matches_reader(plain.len() as u64, &mut &*plain) {
        return Err(format!(
            "blob {id} does not match its hash: the pack is damaged"
        ));
    }
    Ok(plain)
}

struct Writer<'a> {
    target: &'a Path,
    counters: &'a ProgressCounters,
}

impl Writer<'_> {
    fn write_error(&self, action: &'static str, relative: &Path, source: io::Error) -> EngineError {
        EngineError::Write {
            action,
            path: self.target.join(relative),
            source,
        }
    }

    /// Creates every directory (owner-writable until its metadata is set) and every empty
    /// file; the workers create the others as they write them. Nothing is created through an
    /// existing entry.
    fn create_entries(&self, tree: &Walk) -> Result<(), EngineError> {
        let mut builder = DirBuilder::new();
        builder.mode(0o700);
        for (path, _) in &tree.dirs {
            builder
                .create(self.target.join(path))
                .map_err(|err| self.write_error("create directory", path, err))?;
        }
        for file in tree.files.iter().filter(|file| file.content.is_empty()) {
            open_for_writing(&self.target.join(&file.path))
                .map_err(|err| self.write_error("create file", &file.path, err))?;
            self.counters.add_files(1);
        }
        Ok(())
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

    fn create_specials(&self, tree: &Walk, warnings: &mut Vec<String>) -> Result<(), EngineError> {
        for special in &tree.specials {
            let path = self.target.join(&special.path);
            match &special.node_type {
                NodeType::Symlink { .. } => {
                    std::os::unix::fs::symlink(special.node_type.to_link(), &path)
                        .map_err(|err| self.write_error("create symlink", &special.path, err))?;
                }
                NodeType::Fifo => {
                    mkfifo(&path, Mode::from_bits_truncate(0o600)).map_err(|err| {
                        self.write_error("create FIFO", &special.path, io::Error::from(err))
                    })?;
                }
                NodeType::Dev { .. } | NodeType::Chardev { .. } => warnings.push(format!(
                    "device node {} was not restored",
                    special.path.display()
                )),
                NodeType::Socket | NodeType::File | NodeType::Dir => {}
            }
            self.counters.add_files(1);
        }
        Ok(())
    }

    /// Ownership (when running as root), then modes, then times: files and specials first,
    /// then directories deepest first, so that writing a child never touches a parent's time.
    fn set_metadata(&self, tree: &Walk) -> Result<(), EngineError> {
        let as_root = Uid::effective().is_root();
        for file in &tree.files {
            self.apply(&file.path, &file.meta, true, as_root)?;
        }
        for special in &tree.specials {
            match special.node_type {
                // A symlink's own mode means nothing on Linux, and chmod would follow it.
                NodeType::Symlink { .. } => {
                    self.apply(&special.path, &special.meta, false, as_root)?
                }
                NodeType::Fifo => self.apply(&special.path, &special.meta, true, as_root)?,
                _ => {}
            }
        }
        for (path, meta) in tree.dirs.iter().rev() {
            self.apply(path, meta, true, as_root)?;
        }
        Ok(())
    }

    fn apply(
        &self,
        relative: &Path,
        meta: &Metadata,
        chmod: bool,
        as_root: bool,
    ) -> Result<(), EngineError> {
        let path = self.target.join(relative);
        if as_root {
            fchownat(
                AT_FDCWD,
                &path,
                meta.uid.map(Uid::from_raw),
                meta.gid.map(Gid::from_raw),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|err| self.write_error("set the owner of", relative, err.into()))?;
        }
        if chmod && let Some(mode) = meta.mode {
            fs::set_permissions(
                &path,
                std::os::unix::fs::PermissionsExt::from_mode(unix_mode(mode)),
            )
            .map_err(|err| self.write_error("set the mode of", relative, err))?;
        }
        if let Some(mtime) = &meta.mtime {
            let atime = meta.atime.as_ref().unwrap_or(mtime);
            utimensat(
                AT_FDCWD,
                &path,
                &timespec(atime),
                &timespec(mtime),
                UtimensatFlags::NoFollowSymlink,
            )
            .map_err(|err| self.write_error("set the times of", relative, err.into()))?;
        }
        Ok(())
    }
}

fn timespec(time: &rustic_core::jiff::Timestamp) -> TimeSpec {
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

/// Opens a file of the restore for writing, creating it if this is its first blob. Never
/// through a symlink: the only links in the target are the ones the restore creates last.
fn open_for_writing(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(path)
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
                .and_then(|blob| blob.targets.first())
                .map(|(file, _)| self.tree.files[*file].path.clone())
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
                path: self.writer.target.join(first_path()),
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
                    path: self.writer.target.join(first_path()),
                    pack: range.pack.to_string(),
                    cause: format!(
                        "the pack returned {received} bytes where {} were expected",
                        range.length
                    ),
                })?;
            let plain = decode_blob(cipher, raw, blob.uncompressed, &blob.id).map_err(|cause| {
                EngineError::ReadData {
                    path: self.writer.target.join(first_path()),
                    pack: range.pack.to_string(),
                    cause,
                }
            })?;
            for &(file, offset) in &blob.targets {
                self.write(file, offset, &plain)?;
            }
        }
        Ok(())
    }

    fn write(&mut self, index: usize, offset: u64, data: &[u8]) -> Result<(), EngineError> {
        let file = &self.tree.files[index];
        let handle = match &self.open {
            Some((open, handle)) if *open == index => handle,
            _ => {
                let handle = open_for_writing(&self.writer.target.join(&file.path))
                    .map_err(|err| self.writer.write_error("write", &file.path, err))?;
                &self.open.insert((index, handle)).1
            }
        };
        handle
            .write_all_at(data, offset)
            .map_err(|err| self.writer.write_error("write", &file.path, err))?;
        let written = data.len() as u64;
        self.writer.counters.add_bytes(written);
        if file.remaining.fetch_sub(written, Ordering::Relaxed) == written {
            self.writer.counters.add_files(1);
        }
        Ok(())
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

    #[test]
    fn go_modes_map_to_unix_permission_bits() {
        assert_eq!(unix_mode(0o644), 0o644);
        assert_eq!(unix_mode((1 << 31) | 0o755), 0o755);
        assert_eq!(unix_mode((1 << 23) | 0o755), 0o4755);
        assert_eq!(unix_mode((1 << 22) | (1 << 20) | 0o775), 0o3775);
    }

    #[test]
    fn a_non_empty_target_is_refused_but_lost_and_found_is_allowed() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("lost+found")).unwrap();
        assert!(prepare_target(dir.path()).is_ok());
        fs::write(dir.path().join("data"), b"x").unwrap();
        let err = prepare_target(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not empty") && err.contains("data"), "{err}");
    }

    #[test]
    fn a_missing_target_is_created_and_a_symlink_refused() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("a/b");
        assert_eq!(
            prepare_target(&missing).unwrap(),
            missing.canonicalize().unwrap()
        );
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&missing, &link).unwrap();
        let err = prepare_target(&link).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
    }
}
