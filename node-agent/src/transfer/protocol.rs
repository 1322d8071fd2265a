//! What the agent and its transfer process say to each other: one [`Job`] as JSON on the
//! child's stdin, and [`Event`]s as JSON lines on its stdout.

use std::time::Duration;

use ferry_shared::repository::{
    BackupOutcome, BackupRequest, ProgressCounters, ProgressSnapshot, RepositoryConfig,
    RestoreOutcome, RestoreRequest,
};
use ferry_shared::retry::StoreWait;
use serde::{Deserialize, Serialize};

/// One transfer for one child process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub repository: RepositoryConfig,
    pub operation: Operation,
    /// How often the child reports progress.
    #[serde(with = "millis")]
    pub progress_interval: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Operation {
    /// Back up a directory.
    Backup {
        #[serde(flatten)]
        request: BackupRequest,
        /// Create the repository if there is none. Only a lone user may: two transfers that
        /// both create one would each write their own key and config. In a cluster the
        /// coordinator creates repositories.
        #[serde(default)]
        create_repository: bool,
    },
    /// Restore a snapshot into an empty directory, or finish an interrupted attempt of the
    /// same restore.
    Restore {
        #[serde(flatten)]
        request: RestoreRequest,
        /// When set, the done-marker `.velero/<restoreUid>` is written once the data is in.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        restore_uid: Option<String>,
    },
}

/// A line the transfer process writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum Event {
    Progress(ProgressReport),
    /// A request to the object store failed for a reason that may pass, and is tried again.
    Waiting(StoreWait),
    Warning {
        message: String,
    },
    Completed(Outcome),
    Failed {
        category: String,
        message: String,
    },
}

/// Progress with the rate and the time left, as of one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgressReport {
    #[serde(flatten)]
    pub counters: ProgressSnapshot,
    pub bytes_per_second: u64,
    /// Seconds left at the current rate; absent while unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<u64>,
    pub elapsed_seconds: f64,
    /// The wait on the object store going on now, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<StoreWait>,
}

impl ProgressReport {
    pub fn new(counters: ProgressSnapshot, elapsed: Duration) -> Self {
        let seconds = elapsed.as_secs_f64();
        let bytes_per_second = if seconds > 0.0 {
            (counters.bytes_done as f64 / seconds) as u64
        } else {
            0
        };
        let eta_seconds = (bytes_per_second > 0 && counters.bytes_total >= counters.bytes_done)
            .then(|| (counters.bytes_total - counters.bytes_done) / bytes_per_second);
        Self {
            counters,
            bytes_per_second,
            eta_seconds,
            elapsed_seconds: seconds,
            waiting: None,
        }
    }

    /// The progress in `counters`, with any wait on the object store, `elapsed` into the
    /// transfer.
    pub fn of(counters: &ProgressCounters, elapsed: Duration) -> Self {
        Self {
            waiting: counters.current_wait(),
            ..Self::new(counters.snapshot(), elapsed)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "operation", rename_all = "camelCase")]
pub enum Outcome {
    Backup(BackupOutcome),
    Restore(RestoreOutcome),
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(duration.as_millis().try_into().unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(deserializer)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_and_eta_follow_from_the_counters() {
        let counters = ProgressSnapshot {
            bytes_done: 100,
            bytes_total: 400,
            files_done: 1,
            files_total: 4,
        };
        let report = ProgressReport::new(counters, Duration::from_secs(10));
        assert_eq!(report.bytes_per_second, 10);
        assert_eq!(report.eta_seconds, Some(30));
        let start = ProgressReport::new(ProgressSnapshot::default(), Duration::ZERO);
        assert_eq!((start.bytes_per_second, start.eta_seconds), (0, None));
    }

    #[test]
    fn events_are_tagged_json_lines() {
        let line = serde_json::to_string(&Event::Failed {
            category: "WrongPassword".into(),
            message: "m".into(),
        })
        .unwrap();
        assert_eq!(
            line,
            r#"{"event":"failed","category":"WrongPassword","message":"m"}"#
        );
    }
}
