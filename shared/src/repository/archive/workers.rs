//! The threads that read files: each takes a batch of files, cuts each into chunks, hashes
//! them and saves those the repository lacks. Small files are read in batches, so that a file
//! costs no hand-off between threads of its own. The chunks of a large file are offered to the
//! other workers to compress and encrypt, so one large file keeps every core busy; a worker
//! whose offer finds the queue full saves the chunk itself.

use std::sync::{Arc, Mutex};
use std::thread::{Scope, ScopedJoinHandle};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use rustic_core::repofile::BlobType;
use rustic_core::{DataId, Id};
use sha2::{Digest, Sha256};

use super::super::ProgressCounters;
use super::super::source::{Skipped, VolumeFile};
use super::chunker::{ChunkParams, Chunks};
use super::store::Store;
use super::{ArchiveError, lock};

/// What became of one file: its content and how many bytes it held when read, or why it is
/// left out.
pub(super) type FileResult = Result<(Vec<DataId>, u64), Skipped>;

/// Files to read, in the walk's order.
pub(super) struct Batch {
    pub(super) seq: u64,
    pub(super) files: Vec<(VolumeFile, u64)>,
}

/// The results of one batch, in its order; an error stops the backup.
pub(super) struct Done {
    pub(super) seq: u64,
    pub(super) results: Result<Vec<FileResult>, ArchiveError>,
}

/// A chunk offered to any worker to save.
struct Chunk {
    hash: [u8; 32],
    data: Vec<u8>,
}

/// The worker threads of one backup.
pub(super) struct Workers<'scope> {
    jobs: Option<Sender<Batch>>,
    pub(super) done: Receiver<Done>,
    threads: Vec<ScopedJoinHandle<'scope, ()>>,
    failure: Arc<Mutex<Option<ArchiveError>>>,
}

/// What every worker shares.
struct Shared<'scope> {
    store: &'scope Store,
    params: ChunkParams,
    counters: &'scope ProgressCounters,
    chunks: (Sender<Chunk>, Receiver<Chunk>),
    failure: Arc<Mutex<Option<ArchiveError>>>,
}

impl<'scope> Workers<'scope> {
    /// Starts `count` workers in `scope`.
    pub(super) fn start<'env>(
        scope: &'scope Scope<'scope, 'env>,
        count: usize,
        store: &'scope Store,
        params: ChunkParams,
        counters: &'scope ProgressCounters,
    ) -> Self {
        let (jobs, job_queue) = crossbeam_channel::unbounded::<Batch>();
        let (done_sender, done) = crossbeam_channel::unbounded();
        let failure = Arc::new(Mutex::new(None));
        let shared = Arc::new(Shared {
            store,
            params,
            counters,
            chunks: crossbeam_channel::bounded(count),
            failure: failure.clone(),
        });
        let threads = (0..count)
            .map(|_| {
                let (shared, job_queue, done_sender) =
                    (shared.clone(), job_queue.clone(), done_sender.clone());
                scope.spawn(move || shared.work(&job_queue, &done_sender))
            })
            .collect();
        Self {
            jobs: Some(jobs),
            done,
            threads,
            failure,
        }
    }

    /// Hands a batch to the workers.
    pub(super) fn send(&self, batch: Batch) -> Result<(), ArchiveError> {
        self.jobs
            .as_ref()
            .and_then(|jobs| jobs.send(batch).ok())
            .ok_or_else(|| ArchiveError::Worker("the workers stopped".to_owned()))
    }

    /// Lets the workers finish what they hold and waits for them; returns the first error of
    /// a chunk saved for another worker.
    pub(super) fn finish(mut self) -> Result<(), ArchiveError> {
        self.jobs = None;
        for thread in self.threads.drain(..) {
            thread
                .join()
                .map_err(|_| ArchiveError::Worker("a worker panicked".to_owned()))?;
        }
        match lock(&self.failure).take() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}

impl Shared<'_> {
    /// Saves offered chunks first, then reads batches until there are no more.
    fn work(&self, jobs: &Receiver<Batch>, done: &Sender<Done>) {
        let offered = &self.chunks.1;
        loop {
            while let Ok(chunk) = offered.try_recv() {
                self.save_offered(chunk);
            }
            crossbeam_channel::select! {
                recv(offered) -> chunk => {
                    if let Ok(chunk) = chunk {
                        self.save_offered(chunk);
                    }
                }
                recv(jobs) -> batch => {
                    let Ok(batch) = batch else { break };
                    let results = self.read_batch(batch.files);
                    // A backup that stopped no longer listens.
                    let _ = done.send(Done { seq: batch.seq, results });
                }
            }
        }
        while let Ok(chunk) = offered.try_recv() {
            self.save_offered(chunk);
        }
    }

    fn save_offered(&self, chunk: Chunk) {
        if let Err(err) = self.store.save(BlobType::Data, chunk.hash, &chunk.data) {
            lock(&self.failure).get_or_insert(err);
        }
    }

    /// Reads a batch; a panic while reading fails the backup rather than leaving it waiting
    /// for a batch that never comes back.
    fn read_batch(&self, files: Vec<(VolumeFile, u64)>) -> Result<Vec<FileResult>, ArchiveError> {
        let read = || {
            files
                .into_iter()
                .map(|(file, size)| self.read_file(file, size))
                .collect()
        };
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(read))
            .unwrap_or_else(|_| Err(ArchiveError::Worker("a worker panicked".to_owned())))
    }

    /// Reads one file, saving the chunks the repository lacks.
    fn read_file(&self, file: VolumeFile, size: u64) -> Result<FileResult, ArchiveError> {
        let path = file.path().to_owned();
        let reader = match file.open() {
            Ok(reader) => reader,
            Err(skipped) => return Ok(Err(skipped)),
        };
        let offer = size > self.params.min() as u64;
        let mut chunks = Chunks::new(self.params, reader, size);
        let mut content = Vec::new();
        let mut read = 0;
        loop {
            let chunk = match chunks.next_chunk() {
                Ok(Some(chunk)) => chunk,
                Ok(None) => return Ok(Ok((content, read))),
                Err(err) => return Ok(Err(Skipped::read(&path, &err))),
            };
            self.counters.add_bytes(chunk.len() as u64);
            read += chunk.len() as u64;
            let hash: [u8; 32] = Sha256::digest(&chunk).into();
            let id = Id::new(hash);
            if self.store.claim(BlobType::Data, id) {
                if offer {
                    self.offer(Chunk { hash, data: chunk })?;
                } else {
                    self.store.save(BlobType::Data, hash, &chunk)?;
                }
            }
            content.push(DataId::from(id));
        }
    }

    /// Offers a chunk to the other workers, or saves it when none has room.
    fn offer(&self, chunk: Chunk) -> Result<(), ArchiveError> {
        match self.chunks.0.try_send(chunk) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(chunk) | TrySendError::Disconnected(chunk)) => {
                self.store.save(BlobType::Data, chunk.hash, &chunk.data)
            }
        }
    }
}
