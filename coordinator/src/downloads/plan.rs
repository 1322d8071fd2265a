//! The decisions of the DownloadRequest controller, without a client: what to do with a
//! request at a given moment, and which file of the location a target is.

use std::time::Duration;

use ferry_shared::crd::{DownloadRequestPhase, DownloadTarget, DownloadTargetKind};
use ferry_shared::layout::key;
use k8s_openapi::jiff::Timestamp;

/// What to do with a request now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// It is New: answer it.
    Answer,
    /// It was answered and its time is up.
    Delete,
    /// It was answered; look again when its time is up.
    WaitFor(Duration),
}

/// What a request has, as far as its fate goes.
pub struct Answered {
    pub phase: DownloadRequestPhase,
    pub created: Option<Timestamp>,
    /// When the URL of a Processed request stops working.
    pub expiration: Option<Timestamp>,
}

/// A Processed request lives until its URL expires; a Failed one for `validity` after it was
/// created, long enough for its client to read why.
pub fn next(request: &Answered, validity: Duration, now: Timestamp) -> Next {
    let end_of_validity = request
        .created
        .and_then(|created| created.checked_add(validity).ok());
    let end = match request.phase {
        DownloadRequestPhase::New => return Next::Answer,
        DownloadRequestPhase::Processed => request.expiration.or(end_of_validity),
        DownloadRequestPhase::Failed => end_of_validity,
    };
    match end.map(|end| end.duration_since(now)) {
        Some(left) if left.is_positive() => {
            Next::WaitFor(Duration::try_from(left).unwrap_or(Duration::ZERO))
        }
        _ => Next::Delete,
    }
}

/// When a URL made at `now` for `validity` expires, and so how long it is valid: the status
/// shows whole seconds, and the URL must not outlive what it shows.
pub fn expiration(now: Timestamp, validity: Duration) -> (Timestamp, Duration) {
    let end = now
        .checked_add(validity)
        .ok()
        .and_then(|end| Timestamp::from_second(end.as_second()).ok())
        .unwrap_or(now);
    let valid = Duration::try_from(end.duration_since(now)).unwrap_or(Duration::ZERO);
    (end, valid)
}

/// One file of a backup or restore: its key in the location, and what it is, for a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub key: String,
    /// Such as `log for backup "b"`.
    pub description: String,
}

/// How long the check that a file exists may wait out its object store: well inside the time
/// a client waits for its answer.
pub const CHECK_BUDGET: Duration = Duration::from_secs(15);

/// Why `target` names no Backup or Restore there could be, if it does not: the name is
/// part of the file's key, so only a valid object name is looked up.
pub fn valid_target(target: &DownloadTarget) -> Result<(), String> {
    let name = &target.name;
    let valid = name.len() <= 253 && name.split('.').all(ferry_shared::storage::is_dns_label);
    if valid {
        Ok(())
    } else {
        Err(format!("{name:?} is not the name of a Backup or Restore"))
    }
}

/// The file `target` asks for.
pub fn file(target: &DownloadTarget) -> File {
    let name = &target.name;
    let (key, what) = match target.kind {
        DownloadTargetKind::BackupLog => (key::backup_logs(name), "log for backup"),
        DownloadTargetKind::BackupContents => (key::resources(name), "objects for backup"),
        DownloadTargetKind::BackupResults => (
            key::pod_volume_backups(name),
            "pod volume backup results for backup",
        ),
        DownloadTargetKind::RestoreLog => (key::restore_logs(name), "log for restore"),
        DownloadTargetKind::RestoreResults => (key::restore_results(name), "results for restore"),
    };
    File {
        key,
        description: format!("{what} \"{name}\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALIDITY: Duration = Duration::from_secs(600);

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    #[test]
    fn only_object_names_are_looked_up() {
        let target = |name: &str| DownloadTarget {
            kind: DownloadTargetKind::BackupLog,
            name: name.to_owned(),
        };
        for name in ["b1", "nightly-20261126030000", "a.b"] {
            assert_eq!(valid_target(&target(name)), Ok(()), "{name}");
        }
        for name in ["", "../x", "a/b", "A", "a..b", ".a", &"a".repeat(254)] {
            assert!(valid_target(&target(name)).is_err(), "{name}");
        }
    }

    #[test]
    fn requests_are_answered_then_kept_until_they_expire() {
        use DownloadRequestPhase::{Failed, New, Processed};
        let cases = [
            (New, Some(0), None, 5000, Next::Answer),
            (
                Processed,
                Some(0),
                Some(600),
                100,
                Next::WaitFor(Duration::from_secs(500)),
            ),
            (Processed, Some(0), Some(600), 600, Next::Delete),
            (Processed, Some(0), Some(600), 700, Next::Delete),
            // No expiration: the validity from creation.
            (
                Processed,
                Some(0),
                None,
                60,
                Next::WaitFor(Duration::from_secs(540)),
            ),
            (
                Failed,
                Some(0),
                None,
                1,
                Next::WaitFor(Duration::from_secs(599)),
            ),
            (Failed, Some(0), None, 600, Next::Delete),
            (Failed, None, None, 0, Next::Delete),
        ];
        for (phase, created, expiration, now, want) in cases {
            let request = Answered {
                phase,
                created: created.map(at),
                expiration: expiration.map(at),
            };
            assert_eq!(
                next(&request, VALIDITY, at(now)),
                want,
                "{phase:?} created {created:?} expiring {expiration:?} at {now}"
            );
        }
    }

    #[test]
    fn a_url_expires_on_the_whole_second_its_status_shows() {
        let now = at(0).checked_add(Duration::from_millis(700)).unwrap();
        assert_eq!(
            expiration(now, VALIDITY),
            (at(600), Duration::from_millis(599_300))
        );
        assert_eq!(
            expiration(at(0), VALIDITY),
            (at(600), VALIDITY),
            "already whole"
        );
    }

    #[test]
    fn each_target_is_its_file_in_the_layout() {
        let target = |kind, name: &str| DownloadTarget {
            kind,
            name: name.to_owned(),
        };
        let cases = [
            (
                target(DownloadTargetKind::BackupLog, "b"),
                "backups/b/b-logs.gz",
                "log for backup \"b\"",
            ),
            (
                target(DownloadTargetKind::BackupContents, "b"),
                "backups/b/b-resources.tar.gz",
                "objects for backup \"b\"",
            ),
            (
                target(DownloadTargetKind::BackupResults, "b"),
                "backups/b/b-podvolumebackups.json.gz",
                "pod volume backup results for backup \"b\"",
            ),
            (
                target(DownloadTargetKind::RestoreLog, "r"),
                "restores/r/restore-r-logs.gz",
                "log for restore \"r\"",
            ),
            (
                target(DownloadTargetKind::RestoreResults, "r"),
                "restores/r/restore-r-results.gz",
                "results for restore \"r\"",
            ),
        ];
        for (target, key, description) in cases {
            assert_eq!(
                file(&target),
                File {
                    key: key.to_owned(),
                    description: description.to_owned()
                }
            );
        }
    }
}
