//! The trees of a snapshot, built as the walk's entries come back in order: each directory's
//! nodes are gathered until it is left, then stored as one tree blob whose ID its node in the
//! parent directory records.

use rustic_core::repofile::{BlobType, Node, NodeType, Tree};
use rustic_core::{Id, TreeId};
use sha2::{Digest, Sha256};

use super::ArchiveError;
use super::store::Store;

/// How an entry compares with the parent snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    /// The parent has no entry of that name.
    New,
    /// The parent's entry differs.
    Changed,
    /// The parent's entry is the same, and so is what it holds.
    Unmodified,
}

/// Counts of what the snapshot holds, for its summary.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Counts {
    pub(super) files: u64,
    pub(super) bytes: u64,
    pub(super) files_new: u64,
    pub(super) files_changed: u64,
    pub(super) files_unmodified: u64,
    pub(super) dirs: u64,
    pub(super) dirs_new: u64,
    pub(super) dirs_changed: u64,
    pub(super) dirs_unmodified: u64,
}

/// The directories being built, the volume's root at the bottom.
pub(super) struct TreeBuilder {
    stack: Vec<Dir>,
    root: Option<TreeId>,
    pub(super) counts: Counts,
}

struct Dir {
    /// The directory's own node; none for the root.
    node: Option<Node>,
    /// The parent snapshot's tree at this place.
    parent: Option<TreeId>,
    nodes: Vec<Node>,
}

impl TreeBuilder {
    /// Starts at the root, whose tree in the parent snapshot is `parent`.
    pub(super) fn new(parent: Option<TreeId>) -> Self {
        Self {
            stack: vec![Dir {
                node: None,
                parent,
                nodes: Vec::new(),
            }],
            root: None,
            counts: Counts::default(),
        }
    }

    /// Enters the directory of `node`; `parent` is its tree in the parent snapshot.
    pub(super) fn enter(&mut self, node: Node, parent: Option<TreeId>) {
        self.stack.push(Dir {
            node: Some(node),
            parent,
            nodes: Vec::new(),
        });
    }

    /// Adds an entry that is not a directory.
    pub(super) fn add(&mut self, node: Node, change: Change) {
        let counts = &mut self.counts;
        counts.files += 1;
        if matches!(node.node_type, NodeType::File) {
            counts.bytes += node.meta.size;
        }
        match change {
            Change::New => counts.files_new += 1,
            Change::Changed => counts.files_changed += 1,
            Change::Unmodified => counts.files_unmodified += 1,
        }
        if let Some(dir) = self.stack.last_mut() {
            dir.nodes.push(node);
        }
    }

    /// Leaves the current directory, storing its tree.
    pub(super) fn leave(&mut self, store: &Store) -> Result<(), ArchiveError> {
        let Some(dir) = self.stack.pop() else {
            return Ok(());
        };
        let id = save_tree(store, Tree { nodes: dir.nodes })?;
        let counts = &mut self.counts;
        counts.dirs += 1;
        match dir.parent {
            None => counts.dirs_new += 1,
            Some(parent) if parent == id => counts.dirs_unmodified += 1,
            Some(_) => counts.dirs_changed += 1,
        }
        match (dir.node, self.stack.last_mut()) {
            (Some(mut node), Some(parent)) => {
                node.subtree = Some(id);
                parent.nodes.push(node);
            }
            _ => self.root = Some(id),
        }
        Ok(())
    }

    /// Leaves every directory still open, and returns the root's tree.
    pub(super) fn finish(mut self, store: &Store) -> Result<(TreeId, Counts), ArchiveError> {
        while !self.stack.is_empty() {
            self.leave(store)?;
        }
        let root = self
            .root
            .ok_or_else(|| ArchiveError::Worker("the walk made no root tree".to_owned()))?;
        Ok((root, self.counts))
    }
}

/// Stores a tree as restic serialises it (JSON and a newline), unless the repository holds it.
fn save_tree(store: &Store, tree: Tree) -> Result<TreeId, ArchiveError> {
    let mut json =
        serde_json::to_vec(&tree).map_err(|err| ArchiveError::Encode(err.to_string()))?;
    json.push(b'\n');
    let hash: [u8; 32] = Sha256::digest(&json).into();
    let id = Id::new(hash);
    if store.claim(BlobType::Tree, id) {
        store.save(BlobType::Tree, hash, &json)?;
    }
    Ok(TreeId::from(id))
}
