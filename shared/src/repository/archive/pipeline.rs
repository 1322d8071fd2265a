//! The walk and the trees, on the backup's own thread, with the workers between them.
//!
//! The walk turns each entry into an event, in order, and compares it with the parent
//! snapshot: an unchanged file takes its parent's content and is never opened, and the other
//! files are read by the workers in batches. Events leave the queue in order as their files
//! come back, to be built into trees. The queue and the batches out are bounded, so memory
//! stays the same whatever the size of the volume.

use std::collections::{HashMap, VecDeque};

use rustic_core::TreeId;
use rustic_core::repofile::{BlobType, Node, NodeType, Tree};

use super::super::ProgressCounters;
use super::super::source::{Entry, Skipped, Step, VolumeFile};
use super::super::trees::TreeReader;
use super::ArchiveError;
use super::store::Store;
use super::tree::{Change, Counts, TreeBuilder};
use super::workers::{Batch, FileResult, Workers};

/// The most events waiting for their files before the walk waits for the oldest.
const MOST_EVENTS: usize = 4096;
/// The most batches out with the workers at once.
const MOST_BATCHES: usize = 8;
/// A batch is sent once it holds this many files or bytes; a file at least as large as a
/// chunk's minimum goes alone.
const BATCH_FILES: usize = 64;
const BATCH_BYTES: u64 = 4 << 20;

/// One step of the walk, waiting its turn to be built into the trees.
enum Event {
    Enter(Node, Option<TreeId>),
    Leaf(Node, Change),
    /// A file being read by the workers, in the batch `seq`.
    Read(Node, Change, u64),
    Leave,
}

/// One backup's walk and trees.
pub(super) struct Pipeline<'a, 'scope> {
    store: &'a Store,
    workers: &'a Workers<'scope>,
    parents: &'a mut TreeReader,
    counters: &'a ProgressCounters,
    /// The smallest file read alone.
    alone: u64,
    /// The parent snapshot's tree of each directory the walk is in.
    parent_trees: Vec<Option<Tree>>,
    events: VecDeque<Event>,
    batch: Vec<(VolumeFile, u64)>,
    batch_bytes: u64,
    /// The sequence number of the batch being filled.
    next_seq: u64,
    out: usize,
    done: HashMap<u64, std::vec::IntoIter<FileResult>>,
    builder: TreeBuilder,
    skipped: Vec<Skipped>,
    parent_failures: Vec<String>,
}

/// What a walk made: the root tree, what the snapshot holds, the entries left out, and why
/// trees of the parent could not be read (their files were read again).
pub(super) struct Walked {
    pub(super) root: TreeId,
    pub(super) counts: Counts,
    pub(super) skipped: Vec<Skipped>,
    pub(super) parent_failures: Vec<String>,
}

impl<'a, 'scope> Pipeline<'a, 'scope> {
    pub(super) fn new(
        store: &'a Store,
        workers: &'a Workers<'scope>,
        parents: &'a mut TreeReader,
        counters: &'a ProgressCounters,
        alone: u64,
        parent: Option<TreeId>,
    ) -> Self {
        let mut parent_failures = Vec::new();
        let root = parent
            .and_then(|tree| parent_tree(store, parents, tree, &mut parent_failures))
            .map(by_name);
        Self {
            store,
            workers,
            parents,
            counters,
            alone,
            parent_trees: vec![root],
            events: VecDeque::new(),
            batch: Vec::new(),
            batch_bytes: 0,
            next_seq: 0,
            out: 0,
            done: HashMap::new(),
            builder: TreeBuilder::new(parent),
            skipped: Vec::new(),
            parent_failures,
        }
    }

    /// Walks every step, and returns the root tree and what the snapshot holds.
    pub(super) fn run(mut self, steps: impl Iterator<Item = Step>) -> Result<Walked, ArchiveError> {
        for step in steps {
            match step {
                Step::Entry(entry) => self.entry(*entry)?,
                Step::Skipped(skipped) => self.skipped.push(skipped),
                Step::Leave => {
                    self.parent_trees.pop();
                    self.events.push_back(Event::Leave);
                }
            }
            self.settle(MOST_EVENTS)?;
        }
        self.send_batch()?;
        self.settle(0)?;
        let (root, counts) = self.builder.finish(self.store)?;
        Ok(Walked {
            root,
            counts,
            skipped: self.skipped,
            parent_failures: self.parent_failures,
        })
    }

    /// Queues one entry: a directory is entered, an unchanged file takes its parent's
    /// content, and any other file goes to a batch.
    fn entry(&mut self, entry: Entry) -> Result<(), ArchiveError> {
        let Entry { node, open, .. } = entry;
        let previous = self.previous(&node);
        if node.is_dir() {
            let subtree = previous.and_then(|previous| previous.subtree);
            let tree = subtree.and_then(|id| {
                parent_tree(self.store, self.parents, id, &mut self.parent_failures)
            });
            self.parent_trees.push(tree.map(by_name));
            self.events.push_back(Event::Enter(node, subtree));
            return Ok(());
        }
        let change = match &previous {
            None => Change::New,
            Some(previous) if self.unchanged(&node, previous) => Change::Unmodified,
            Some(_) => Change::Changed,
        };
        let Some(file) = open else {
            self.events.push_back(Event::Leaf(node, change));
            return Ok(());
        };
        if change == Change::Unmodified {
            let mut node = node;
            node.content = previous.and_then(|previous| previous.content);
            self.counters.add_bytes(node.meta.size);
            self.events.push_back(Event::Leaf(node, change));
            return Ok(());
        }
        let size = node.meta.size;
        if size >= self.alone {
            self.send_batch()?;
        }
        self.batch.push((file, size));
        self.batch_bytes += size;
        self.events
            .push_back(Event::Read(node, change, self.next_seq));
        if size >= self.alone || self.batch.len() >= BATCH_FILES || self.batch_bytes >= BATCH_BYTES
        {
            self.send_batch()?;
        }
        Ok(())
    }

    /// The parent snapshot's entry of the same name and kind in this directory.
    fn previous(&self, node: &Node) -> Option<Node> {
        let tree = self.parent_trees.last()?.as_ref()?;
        let found = tree
            .nodes
            .binary_search_by(|other| other.name.as_str().cmp(&node.name))
            .ok()?;
        let previous = &tree.nodes[found];
        (previous.node_type == node.node_type).then(|| previous.clone())
    }

    /// Whether a file is as the parent recorded it (size, modification and change times; not
    /// the inode, which a volume attached elsewhere changes), with all its content stored.
    fn unchanged(&self, node: &Node, previous: &Node) -> bool {
        let (now, then) = (&node.meta, &previous.meta);
        now.size == then.size
            && now.mtime == then.mtime
            && now.ctime == then.ctime
            && match (&node.node_type, &previous.content) {
                (NodeType::File, Some(content)) => content
                    .iter()
                    .all(|id| self.store.holds(BlobType::Data, id)),
                (NodeType::File, None) => false,
                _ => true,
            }
    }

    fn send_batch(&mut self) -> Result<(), ArchiveError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        while self.out >= MOST_BATCHES {
            self.receive()?;
        }
        let files = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        self.workers.send(Batch {
            seq: self.next_seq,
            files,
        })?;
        self.next_seq += 1;
        self.out += 1;
        Ok(())
    }

    /// Waits for one batch to come back.
    fn receive(&mut self) -> Result<(), ArchiveError> {
        let done = self
            .workers
            .done
            .recv()
            .map_err(|_| ArchiveError::Worker("the workers stopped".to_owned()))?;
        self.out -= 1;
        self.done.insert(done.seq, done.results?.into_iter());
        Ok(())
    }

    /// Builds the events whose files are back, oldest first, and waits for the oldest files
    /// while more than `most` events are queued.
    fn settle(&mut self, most: usize) -> Result<(), ArchiveError> {
        while let Ok(done) = self.workers.done.try_recv() {
            self.out -= 1;
            self.done.insert(done.seq, done.results?.into_iter());
        }
        while let Some(event) = self.events.front() {
            if let Event::Read(_, _, seq) = *event
                && !self.done.contains_key(&seq)
            {
                if self.events.len() <= most {
                    return Ok(());
                }
                if seq == self.next_seq {
                    self.send_batch()?;
                }
                self.receive()?;
                continue;
            }
            if let Some(event) = self.events.pop_front() {
                self.build(event)?;
            }
        }
        Ok(())
    }

    fn build(&mut self, event: Event) -> Result<(), ArchiveError> {
        match event {
            Event::Enter(node, parent) => self.builder.enter(node, parent),
            Event::Leaf(node, change) => self.builder.add(node, change),
            Event::Leave => self.builder.leave(self.store)?,
            Event::Read(mut node, change, seq) => {
                let result = self.done.get_mut(&seq).and_then(Iterator::next);
                if self.done.get(&seq).is_some_and(|rest| rest.len() == 0) {
                    self.done.remove(&seq);
                }
                match result {
                    Some(Ok((content, read))) => {
                        // What was read, not what the walk saw, is the file: restic restores a
                        // file by its recorded size.
                        node.meta.size = read;
                        node.content = Some(content);
                        self.builder.add(node, change);
                    }
                    Some(Err(skipped)) => self.skipped.push(skipped),
                    None => {
                        return Err(ArchiveError::Worker(format!(
                            "batch {seq} came back with fewer files than it took"
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The parent's tree `id`. One that cannot be read is recorded, and costs reading the files
/// under it again; it is damaged in the repository, so the store forgets it: the same tree made
/// now is stored again rather than referred to.
fn parent_tree(
    store: &Store,
    parents: &mut TreeReader,
    id: TreeId,
    failures: &mut Vec<String>,
) -> Option<Tree> {
    match parents.read(id) {
        Ok(tree) => Some(tree),
        Err(cause) => {
            failures.push(format!("tree {id}: {cause}"));
            store.forget(BlobType::Tree, &id);
            None
        }
    }
}

/// A parent tree with its nodes in the order [`Pipeline::previous`] searches them: by their
/// stored names, which escaping can order differently from the raw names a tree is sorted by.
fn by_name(mut tree: Tree) -> Tree {
    tree.nodes.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    tree
}
