//! What the repository holds already, read from its index files: the IDs of its data and tree
//! blobs, so that a backup stores each blob once, and where the trees are, so that a parent
//! snapshot's trees can be read. Blobs of packs that a prune marked for deletion count as gone.

use std::collections::HashMap;
use std::num::NonZeroU32;

use rustic_core::repofile::{BlobType, IndexFile};
use rustic_core::{Id, OpenStatus, Repository as RusticRepository};

use super::ArchiveError;
use super::store::IdSet;

/// The repository's blobs.
pub(super) struct Known {
    pub(super) data: IdSet,
    pub(super) trees: IdSet,
    pub(super) tree_locations: TreeLocations,
}

/// Where each tree blob is stored.
#[derive(Default)]
pub(super) struct TreeLocations {
    pub(super) blobs: HashMap<Id, TreeLocation>,
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

/// Reads every index file of the repository.
pub(super) fn load(repo: &RusticRepository<OpenStatus>) -> Result<Known, ArchiveError> {
    let index_error = |err: Box<rustic_core::RusticError>| {
        ArchiveError::Index(super::super::error::describe(&err))
    };
    let mut known = Known {
        data: IdSet::default(),
        trees: IdSet::default(),
        tree_locations: TreeLocations::default(),
    };
    for file in repo.stream_files::<IndexFile>().map_err(index_error)? {
        let (_, file) = file.map_err(index_error)?;
        for pack in file.packs {
            let mut trees: Option<PackTrees> = None;
            for blob in pack.blobs {
                let id = *blob.id;
                if blob.tpe == BlobType::Data {
                    known.data.insert(id);
                    continue;
                }
                let end = blob.location.offset + blob.location.length;
                let range = trees.get_or_insert(PackTrees {
                    id: *pack.id,
                    start: blob.location.offset,
                    end,
                });
                range.start = range.start.min(blob.location.offset);
                range.end = range.end.max(end);
                known.trees.insert(id);
                known.tree_locations.blobs.insert(
                    id,
                    TreeLocation {
                        pack: known.tree_locations.packs.len(),
                        offset: blob.location.offset,
                        length: blob.location.length,
                        uncompressed: blob.location.uncompressed_length,
                    },
                );
            }
            known.tree_locations.packs.extend(trees);
        }
    }
    Ok(known)
}
