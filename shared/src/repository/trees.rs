//! Reading a snapshot's trees, for a backup's parent and for a restore. The first tree read
//! from a pack brings the whole range of that pack's trees, kept within a budget, since the
//! trees of one snapshot are mostly stored together: a snapshot on object storage then costs
//! a request per pack of trees rather than one per directory.

use std::collections::HashMap;
use std::sync::Arc;

use aes256ctr_poly1305aes::Aes256CtrPoly1305Aes;
use bytes::Bytes;
use rustic_core::repofile::Tree;
use rustic_core::{FileType, TreeId, WriteBackend};

use super::crypto::decode_blob;
use super::index::TreeLocations;

/// The most bytes of tree packs kept at once.
const CACHE_BUDGET: usize = 32 << 20;

/// Reads trees of the repository.
pub(super) struct TreeReader {
    backend: Arc<dyn WriteBackend>,
    cipher: Aes256CtrPoly1305Aes,
    locations: TreeLocations,
    /// Ranges of tree packs read, by pack.
    cache: HashMap<usize, Bytes>,
    cached: usize,
}

impl TreeReader {
    pub(super) fn new(
        backend: Arc<dyn WriteBackend>,
        cipher: Aes256CtrPoly1305Aes,
        locations: TreeLocations,
    ) -> Self {
        Self {
            backend,
            cipher,
            locations,
            cache: HashMap::new(),
            cached: 0,
        }
    }

    /// The tree `id`.
    pub(super) fn read(&mut self, id: TreeId) -> Result<Tree, String> {
        let location = *self
            .locations
            .blobs
            .get(&*id)
            .ok_or("it is not in the index")?;
        let range = self.pack_range(location.pack)?;
        let pack = self.locations.packs[location.pack];
        let start = (location.offset - pack.start) as usize;
        let mut raw = range
            .get(start..start + location.length as usize)
            .ok_or("its pack is shorter than the index says")?
            .to_vec();
        let plain = decode_blob(&self.cipher, &mut raw, location.uncompressed, &id)?;
        serde_json::from_slice(&plain).map_err(|err| format!("it is not a tree: {err}"))
    }

    /// The bytes of pack `pack` that its trees span, read once.
    fn pack_range(&mut self, pack: usize) -> Result<Bytes, String> {
        if let Some(range) = self.cache.get(&pack) {
            return Ok(range.clone());
        }
        let trees = self.locations.packs[pack];
        let range = self
            .backend
            .read_partial(
                FileType::Pack,
                &trees.id,
                true,
                trees.start,
                trees.end - trees.start,
            )
            .map_err(|err| super::error::describe(&err))?;
        if self.cached + range.len() > CACHE_BUDGET {
            self.cache.clear();
            self.cached = 0;
        }
        self.cached += range.len();
        self.cache.insert(pack, range.clone());
        Ok(range)
    }
}
