//! What the repository holds, read from its index files by Ferry: the IDs of its data and tree
//! blobs, so that a backup stores each blob once, and where the trees are, so that backups and
//! restores can read trees a pack at a time. Blobs of packs that a prune marked for deletion
//! count as gone.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::num::NonZeroU32;

use rustic_core::repofile::{BlobType, IndexFile};
use rustic_core::{Id, OpenStatus, Repository as RusticRepository};

use super::error::describe;

/// Blob IDs are SHA-256 hashes: their first bytes are as good a hash as any.
#[derive(Default)]
pub(super) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes.iter().take(8) {
            self.0 = (self.0 << 8) | u64::from(byte);
        }
    }
}

/// A set of blob IDs.
pub(super) type IdSet = HashSet<Id, BuildHasherDefault<IdHasher>>;

/// The repository's blobs.
#[derive(Default)]
pub(super) struct Known {
    /// Empty unless asked for.
    pub(super) data: IdSet,
    pub(super) trees: IdSet,
    pub(super) tree_locations: TreeLocations,
}

/// Where each tree blob is stored.
#[derive(Default)]
pub(super) struct TreeLocations {
    pub(super) blobs: HashMap<Id, TreeLocation, BuildHasherDefault<IdHasher>>,
    /// Each pack holding trees, with the range of its bytes that its trees span.
    pub(super) packs: Vec<PackTrees>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct TreeLocation {
    /// The pack, as an index into [`TreeLocations::packs`].
    pub(super) pack: usize,
    pub(super) offset: u32,
    pub(super) length: u32,
    pub(super) uncompressed: Option<NonZeroU32>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct PackTrees {
    pub(super) id: Id,
    pub(super) start: u32,
    pub(super) end: u32,
}

/// Which blobs to keep track of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wanted {
    /// Trees and data, for a backup.
    All,
    /// Trees only, for a restore.
    Trees,
}

/// Reads every index file of the repository.
pub(super) fn load(repo: &RusticRepository<OpenStatus>, wanted: Wanted) -> Result<Known, String> {
    let mut known = Known::default();
    let files = repo
        .stream_files::<IndexFile>()
        .map_err(|err| describe(&err))?;
    for file in files {
        let (_, file) = file.map_err(|err| describe(&err))?;
        for pack in file.packs {
            let mut trees: Option<PackTrees> = None;
            for blob in pack.blobs {
                let id = *blob.id;
                if blob.tpe == BlobType::Data {
                    if wanted == Wanted::All {
                        known.data.insert(id);
                    }
                    continue;
                }
                let (offset, length) = (blob.location.offset, blob.location.length);
                let range = trees.get_or_insert(PackTrees {
                    id: *pack.id,
                    start: offset,
                    end: offset + length,
                });
                range.start = range.start.min(offset);
                range.end = range.end.max(offset + length);
                known.trees.insert(id);
                known.tree_locations.blobs.insert(
                    id,
                    TreeLocation {
                        pack: known.tree_locations.packs.len(),
                        offset,
                        length,
                        uncompressed: blob.location.uncompressed_length,
                    },
                );
            }
            known.tree_locations.packs.extend(trees);
        }
    }
    Ok(known)
}
