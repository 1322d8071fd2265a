//! Progress as atomic counters. The engine adds to them from its worker threads; whoever runs
//! the engine reads a [`ProgressSnapshot`] whenever it wants to publish one. Waits on the object
//! store are progress too: the counters hold the current one, and tell each to a listener.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rustic_core::{Progress, ProgressBars, ProgressType, RusticProgress};
use serde::{Deserialize, Serialize};

use crate::retry::{RetryObserver, StoreWait};

/// Hears of each wait on the object store as it begins.
type WaitListener = Box<dyn Fn(&StoreWait) + Send + Sync>;

/// Bytes and files done, and their totals, for one transfer, and whether it is waiting on the
/// object store.
#[derive(Default)]
pub struct ProgressCounters {
    bytes_done: AtomicU64,
    bytes_total: AtomicU64,
    files_done: AtomicU64,
    files_total: AtomicU64,
    waits: Mutex<Waits>,
    listener: OnceLock<WaitListener>,
}

/// The requests waiting on the object store now, and the latest wait of any of them.
#[derive(Debug, Default)]
struct Waits {
    retrying: usize,
    latest: Option<StoreWait>,
}

impl fmt::Debug for ProgressCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProgressCounters")
            .field("progress", &self.snapshot())
            .field("waiting", &self.current_wait())
            .finish_non_exhaustive()
    }
}

/// A consistent-enough reading of [`ProgressCounters`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgressSnapshot {
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub files_done: u64,
    pub files_total: u64,
}

impl ProgressCounters {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn add_bytes(&self, bytes: u64) {
        self.bytes_done.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn add_files(&self, files: u64) {
        self.files_done.fetch_add(files, Ordering::Relaxed);
    }

    pub fn set_totals(&self, bytes: u64, files: u64) {
        self.bytes_total.store(bytes, Ordering::Relaxed);
        self.files_total.store(files, Ordering::Relaxed);
    }

    /// Sets every counter at once, for the final figures of a finished transfer.
    pub fn finish(&self, bytes: u64, files: u64) {
        self.set_totals(bytes, files);
        self.bytes_done.store(bytes, Ordering::Relaxed);
        self.files_done.store(files, Ordering::Relaxed);
    }

    /// Tells `listener` of each wait on the object store from now on. Only the first listener
    /// set is kept.
    pub fn listen_for_waits(&self, listener: impl Fn(&StoreWait) + Send + Sync + 'static) {
        let _ = self.listener.set(Box::new(listener));
    }

    /// The wait on the object store going on now, if any: the latest retry while any request
    /// is being retried.
    pub fn current_wait(&self) -> Option<StoreWait> {
        self.waits().latest.clone()
    }

    fn waits(&self) -> std::sync::MutexGuard<'_, Waits> {
        self.waits
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn snapshot(&self) -> ProgressSnapshot {
        ProgressSnapshot {
            bytes_done: self.bytes_done.load(Ordering::Relaxed),
            bytes_total: self.bytes_total.load(Ordering::Relaxed),
            files_done: self.files_done.load(Ordering::Relaxed),
            files_total: self.files_total.load(Ordering::Relaxed),
        }
    }
}

impl RetryObserver for ProgressCounters {
    fn waiting(&self, wait: &StoreWait) {
        {
            let mut waits = self.waits();
            if wait.retry == 1 {
                waits.retrying += 1;
            }
            waits.latest = Some(wait.clone());
        }
        if let Some(listener) = self.listener.get() {
            listener(wait);
        }
    }

    fn ended(&self, _operation: &str, _succeeded: bool) {
        let mut waits = self.waits();
        waits.retrying = waits.retrying.saturating_sub(1);
        if waits.retrying == 0 {
            waits.latest = None;
        }
    }
}

/// Feeds rustic's byte progress ("backing up...") into the counters and ignores its other
/// spinners. It is deliberately not hidden: rustic skips its size scan for hidden progress.
#[derive(Debug, Clone)]
pub(crate) struct CounterBars(pub Arc<ProgressCounters>);

impl ProgressBars for CounterBars {
    fn progress(&self, progress_type: ProgressType, _prefix: &str) -> Progress {
        match progress_type {
            ProgressType::Bytes => Progress::new(ByteProgress(self.0.clone())),
            ProgressType::Spinner | ProgressType::Counter => Progress::new(Ignored),
        }
    }
}

#[derive(Debug)]
struct ByteProgress(Arc<ProgressCounters>);

impl RusticProgress for ByteProgress {
    fn is_hidden(&self) -> bool {
        false
    }
    // The total comes from Ferry's own scan, which also counts files.
    fn set_length(&self, _len: u64) {}
    fn set_title(&self, _title: &str) {}
    fn inc(&self, inc: u64) {
        self.0.add_bytes(inc);
    }
    fn finish(&self) {}
}

#[derive(Debug)]
struct Ignored;

impl RusticProgress for Ignored {
    fn is_hidden(&self) -> bool {
        false
    }
    fn set_length(&self, _len: u64) {}
    fn set_title(&self, _title: &str) {}
    fn inc(&self, _inc: u64) {}
    fn finish(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(operation: &str, retry: u32) -> StoreWait {
        StoreWait {
            operation: operation.to_owned(),
            cause: "Unexpected (send http request): connection refused".to_owned(),
            retry,
            next_in_millis: 500,
        }
    }

    #[test]
    fn a_wait_lasts_while_any_request_is_retried() {
        let counters = ProgressCounters::new();
        assert_eq!(counters.current_wait(), None);
        counters.waiting(&wait("write", 1));
        counters.waiting(&wait("read", 1));
        counters.waiting(&wait("write", 2));
        counters.ended("read", true);
        assert_eq!(counters.current_wait(), Some(wait("write", 2)));
        counters.ended("write", false);
        assert_eq!(counters.current_wait(), None);
    }
}
