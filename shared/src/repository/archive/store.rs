//! Saving blobs: each is compressed (in repositories of version 2, where that makes it
//! smaller), encrypted and added to a pack of its type; a full pack is written by the thread
//! that filled it, and listed in the next index file. The format is restic's:
//!
//! - a pack is its encrypted blobs, then its encrypted header, then the header's length as a
//!   little-endian `u32`; a header entry is the blob's type, its stored length, its
//!   uncompressed length if compressed, and its ID;
//! - an index file is JSON listing packs and their blobs; index and snapshot files are stored
//!   encrypted, compressed first (behind a `2` byte) in version 2.
//!
//! A pack's and a file's ID is the SHA-256 of what is stored; a blob's is that of its
//! plaintext.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aes256ctr_poly1305aes::Aes256CtrPoly1305Aes;
use rustic_core::repofile::{BlobType, ConfigFile};
use rustic_core::{FileType, Id, WriteBackend};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::super::crypto;
use super::super::index::IdSet;
use super::{ArchiveError, lock};

/// Tree packs are kept smaller than data packs, as rustic makes them.
const TREE_PACK_SIZE: usize = 4 << 20;
/// An index file is written once it lists this many blobs, as restic does.
const INDEX_BLOBS: usize = 50_000;

/// The most blobs in one pack. restic refuses a pack whose header is over 16 MiB, which half a
/// million tiny blobs would make; rustic closes packs at this count.
const MOST_BLOBS: usize = 10_000;
/// The largest blob as sealed: a maximal chunk, stored uncompressed, with its nonce and tag.
const LARGEST_SEALED: usize = (8 << 20) + 32;

/// The byte before the compressed JSON of a file in a version 2 repository.
const COMPRESSED_FILE: u8 = 2;

/// What a backup added of one type of blob.
#[derive(Debug, Default)]
pub(super) struct Added {
    blobs: AtomicU64,
    /// Bytes before compression.
    bytes: AtomicU64,
    /// Bytes as stored.
    packed: AtomicU64,
}

impl Added {
    fn record(&self, plain: usize, sealed: usize) {
        self.blobs.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(plain as u64, Ordering::Relaxed);
        self.packed.fetch_add(sealed as u64, Ordering::Relaxed);
    }

    /// Blobs, bytes before compression, and bytes as stored.
    pub(super) fn figures(&self) -> (u64, u64, u64) {
        (
            self.blobs.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
            self.packed.load(Ordering::Relaxed),
        )
    }
}

/// Where blobs go: shared by the threads of one backup.
pub(super) struct Store {
    backend: Arc<dyn WriteBackend>,
    cipher: Aes256CtrPoly1305Aes,
    /// The zstd level, in repositories that compress.
    compression: Option<i32>,
    data: Kind,
    tree: Kind,
    index: Mutex<Vec<IndexPack>>,
}

/// The blobs of one type: those the repository and this backup hold, the pack being filled,
/// and what this backup added.
struct Kind {
    known: Mutex<IdSet>,
    pack: Mutex<Pack>,
    added: Added,
}

impl Store {
    /// A store for the repository of `config`, which already holds the blobs in `data` and
    /// `trees`.
    pub(super) fn new(
        backend: Arc<dyn WriteBackend>,
        cipher: Aes256CtrPoly1305Aes,
        config: &ConfigFile,
        data: IdSet,
        trees: IdSet,
    ) -> Result<Self, ArchiveError> {
        let compression = config
            .zstd()
            .map_err(|err| ArchiveError::Config(err.to_string()))?;
        let data_pack = usize::try_from(config.packsize(BlobType::Data).0).unwrap_or(16 << 20);
        Ok(Self {
            backend,
            cipher,
            compression,
            data: Kind::new(data, BlobType::Data, data_pack),
            tree: Kind::new(trees, BlobType::Tree, TREE_PACK_SIZE),
            index: Mutex::default(),
        })
    }

    /// What this backup added of blobs of type `blob`.
    pub(super) fn added(&self, blob: BlobType) -> &Added {
        &self.kind(blob).added
    }

    fn kind(&self, blob: BlobType) -> &Kind {
        match blob {
            BlobType::Data => &self.data,
            BlobType::Tree => &self.tree,
        }
    }

    /// Takes the blob `id` on for saving: true if neither the repository nor this backup
    /// holds it yet, in which case the caller must [`Store::save`] it.
    pub(super) fn claim(&self, blob: BlobType, id: Id) -> bool {
        lock(&self.kind(blob).known).insert(id)
    }

    /// Whether the repository or this backup holds the blob `id`.
    pub(super) fn holds(&self, blob: BlobType, id: &Id) -> bool {
        lock(&self.kind(blob).known).contains(id)
    }

    /// Counts the blob `id` as missing, so that it is saved again if it is claimed.
    pub(super) fn forget(&self, blob: BlobType, id: &Id) {
        lock(&self.kind(blob).known).remove(id);
    }

    /// Compresses, encrypts and packs a claimed blob; writes the pack if it is full.
    pub(super) fn save(
        &self,
        blob: BlobType,
        hash: [u8; 32],
        plain: &[u8],
    ) -> Result<(), ArchiveError> {
        let compressed = match self.compression {
            Some(level) => zstd::bulk::compress(plain, level)
                .map_err(|err| ArchiveError::Compress(err.to_string()))?,
            None => Vec::new(),
        };
        let uncompressed = u32::try_from(plain.len()).map_err(|_| ArchiveError::BlobTooLarge)?;
        let (stored, uncompressed) = if self.compression.is_some() && compressed.len() < plain.len()
        {
            (&compressed[..], Some(uncompressed))
        } else {
            (plain, None)
        };
        let sealed = crypto::seal(&self.cipher, stored).map_err(ArchiveError::Encrypt)?;
        self.verify(&sealed, uncompressed, plain)?;
        self.kind(blob).added.record(plain.len(), sealed.len());
        let full = lock(&self.kind(blob).pack).add(hash, &sealed, uncompressed);
        match full {
            Some(pack) => self.write_pack(pack),
            None => Ok(()),
        }
    }

    /// Opens a sealed blob again and checks that it gives back its plaintext, as restic does
    /// before it stores a blob: memory that flipped a bit while the blob was compressed or
    /// encrypted fails the backup instead of storing a blob no restore can read.
    fn verify(
        &self,
        sealed: &[u8],
        uncompressed: Option<u32>,
        plain: &[u8],
    ) -> Result<(), ArchiveError> {
        let mut copy = sealed.to_vec();
        let opened = crypto::open(&self.cipher, &mut copy, &"a blob just encrypted")
            .map_err(ArchiveError::Verify)?;
        let same = match uncompressed {
            Some(length) => zstd::bulk::decompress(opened, length as usize)
                .is_ok_and(|decompressed| decompressed == plain),
            None => opened == plain,
        };
        if same {
            Ok(())
        } else {
            Err(ArchiveError::Verify(
                "a blob just compressed and encrypted does not give back its data".to_owned(),
            ))
        }
    }

    /// Writes the packs being filled, then the index of every pack not yet listed.
    pub(super) fn flush(&self) -> Result<(), ArchiveError> {
        for kind in [&self.data, &self.tree] {
            let pack = lock(&kind.pack).take();
            if !pack.blobs.is_empty() {
                self.write_pack(pack)?;
            }
        }
        let packs = std::mem::take(&mut *lock(&self.index));
        if packs.is_empty() {
            return Ok(());
        }
        self.write_file(FileType::Index, &IndexFile { packs })
            .map(|_| ())
    }

    /// Seals and writes a full pack, and lists it for the index.
    fn write_pack(&self, pack: Pack) -> Result<(), ArchiveError> {
        let (bytes, listed) = pack.seal(&self.cipher)?;
        let hash: [u8; 32] = Sha256::digest(&bytes).into();
        self.backend
            .write_bytes(
                FileType::Pack,
                &Id::new(hash),
                listed.cacheable(),
                bytes.into(),
            )
            .map_err(|err| ArchiveError::Write(super::super::error::describe(&err)))?;
        let full = {
            let mut index = lock(&self.index);
            index.push(listed.with_id(hash));
            if index.iter().map(|pack| pack.blobs.len()).sum::<usize>() >= INDEX_BLOBS {
                std::mem::take(&mut *index)
            } else {
                Vec::new()
            }
        };
        if !full.is_empty() {
            self.write_file(FileType::Index, &IndexFile { packs: full })?;
        }
        Ok(())
    }

    /// Stores `value` as an encrypted JSON file of type `file`; returns its ID.
    pub(super) fn write_file(
        &self,
        file: FileType,
        value: &impl Serialize,
    ) -> Result<Id, ArchiveError> {
        let json =
            serde_json::to_vec(value).map_err(|err| ArchiveError::Encode(err.to_string()))?;
        let plain = match self.compression {
            Some(level) => {
                let mut plain = vec![COMPRESSED_FILE];
                plain.extend(
                    zstd::bulk::compress(&json, level)
                        .map_err(|err| ArchiveError::Compress(err.to_string()))?,
                );
                plain
            }
            None => json,
        };
        let sealed = crypto::seal(&self.cipher, &plain).map_err(ArchiveError::Encrypt)?;
        let id = Id::new(Sha256::digest(&sealed).into());
        self.backend
            .write_bytes(file, &id, true, sealed.into())
            .map_err(|err| ArchiveError::Write(super::super::error::describe(&err)))?;
        Ok(id)
    }
}

impl Kind {
    fn new(known: IdSet, blob: BlobType, target: usize) -> Self {
        Self {
            known: Mutex::new(known),
            pack: Mutex::new(Pack::new(blob, target)),
            added: Added::default(),
        }
    }
}

/// A pack being filled: its encrypted blobs, one after the other, and their entries.
struct Pack {
    blob: BlobType,
    target: usize,
    bytes: Vec<u8>,
    blobs: Vec<IndexBlob>,
}

impl Pack {
    fn new(blob: BlobType, target: usize) -> Self {
        Self {
            blob,
            target,
            bytes: Vec::new(),
            blobs: Vec::new(),
        }
    }

    /// Adds a sealed blob; returns the pack, leaving an empty one in its place, once it has
    /// reached its size or its number of blobs.
    fn add(&mut self, id: [u8; 32], sealed: &[u8], uncompressed: Option<u32>) -> Option<Pack> {
        if self.bytes.capacity() == 0 {
            // Room for the blob that takes the pack past its size, so that it never doubles;
            // pages reserved and never written take no memory.
            self.bytes.reserve(self.target + LARGEST_SEALED);
        }
        self.blobs.push(IndexBlob {
            id,
            blob: self.blob,
            offset: self.bytes.len() as u32,
            length: sealed.len() as u32,
            uncompressed_length: uncompressed,
        });
        self.bytes.extend_from_slice(sealed);
        (self.bytes.len() >= self.target || self.blobs.len() >= MOST_BLOBS).then(|| self.take())
    }

    fn take(&mut self) -> Pack {
        std::mem::replace(self, Pack::new(self.blob, self.target))
    }

    /// The pack as stored, and its entry for the index (without its ID, which is the hash
    /// of what is stored).
    fn seal(self, cipher: &Aes256CtrPoly1305Aes) -> Result<(Vec<u8>, Listed), ArchiveError> {
        let mut header = Vec::with_capacity(self.blobs.len() * 41);
        for blob in &self.blobs {
            let compressed = blob.uncompressed_length.is_some();
            header.push(match (blob.blob, compressed) {
                (BlobType::Data, false) => 0,
                (BlobType::Tree, false) => 1,
                (BlobType::Data, true) => 2,
                (BlobType::Tree, true) => 3,
            });
            header.extend_from_slice(&blob.length.to_le_bytes());
            if let Some(uncompressed) = blob.uncompressed_length {
                header.extend_from_slice(&uncompressed.to_le_bytes());
            }
            header.extend_from_slice(&blob.id);
        }
        let header = crypto::seal(cipher, &header).map_err(ArchiveError::Encrypt)?;
        let mut bytes = self.bytes;
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(&(header.len() as u32).to_le_bytes());
        Ok((bytes, Listed(self.blobs)))
    }
}

/// The blobs of a sealed pack, to be listed in the index under the pack's ID.
struct Listed(Vec<IndexBlob>);

impl Listed {
    /// Packs of trees are worth keeping in a cache; packs of data are not.
    fn cacheable(&self) -> bool {
        self.0
            .first()
            .is_some_and(|blob| blob.blob == BlobType::Tree)
    }

    fn with_id(self, id: [u8; 32]) -> IndexPack {
        IndexPack { id, blobs: self.0 }
    }
}

/// An index file, as restic writes it.
#[derive(Serialize)]
struct IndexFile {
    packs: Vec<IndexPack>,
}

#[derive(Serialize)]
struct IndexPack {
    #[serde(serialize_with = "hex")]
    id: [u8; 32],
    blobs: Vec<IndexBlob>,
}

#[derive(Serialize)]
struct IndexBlob {
    #[serde(serialize_with = "hex")]
    id: [u8; 32],
    #[serde(rename = "type")]
    blob: BlobType,
    offset: u32,
    length: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    uncompressed_length: Option<u32>,
}

fn hex<S: serde::Serializer>(id: &[u8; 32], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&hex::encode(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pack_closes_at_its_size_or_at_its_number_of_blobs() {
        let mut pack = Pack::new(BlobType::Data, 1 << 20);
        for blob in 1..MOST_BLOBS {
            assert!(pack.add([0; 32], &[0; 33], None).is_none(), "blob {blob}");
        }
        let full = pack
            .add([0; 32], &[0; 33], None)
            .expect("closed at the count");
        assert_eq!(full.blobs.len(), MOST_BLOBS);
        assert!(pack.blobs.is_empty());

        let full = pack
            .add([1; 32], &vec![0; 1 << 20], None)
            .expect("closed at the size");
        assert_eq!(full.blobs.len(), 1);
    }
}
