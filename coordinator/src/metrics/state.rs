//! Metrics of the Ferry objects in the cluster, read from the controllers' caches at each
//! scrape: they hold after a restart, and go away with the objects they are of.
//!
//! - `ferry_backup_last_successful_timestamp_seconds{schedule}`: when the newest Completed
//!   Backup of each schedule finished (`schedule=""` for Backups made by hand); for an enabled
//!   schedule with none yet, when the schedule was made, so that an alert can tell a schedule
//!   that has never succeeded.
//! - `ferry_schedule_period_seconds{schedule}`: for each enabled, unpaused schedule, the time
//!   from its latest run time to its next, which an alert adds a margin to.
//! - `ferry_backup_storage_location_available{location}`: 1 when the last check found the
//!   location Available, 0 when Unavailable.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ferry_shared::crd::{
    Backup, BackupStorageLocation, OperationPhase, Schedule, SchedulePhase, StorageLocationPhase,
};
use ferry_shared::names::{self, label};
use ferry_shared::time::unix_seconds;
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, Opts};

use crate::schedule::{around, parse_cron};

/// The series of one gauge: its labels' values, and the value.
type Series = BTreeMap<String, f64>;

/// The caches the metrics are read from.
pub struct StateMetrics {
    backups: Store<Backup>,
    schedules: Store<Schedule>,
    locations: Store<BackupStorageLocation>,
    descs: Vec<Desc>,
}

/// Each gauge: its name, help and label.
const GAUGES: [(&str, &str, &str); 3] = [
    (
        "ferry_backup_last_successful_timestamp_seconds",
        "When the newest Completed Backup of each schedule finished, in Unix seconds (the schedule is empty for Backups made by hand); for an enabled schedule without one, when the schedule was made.",
        "schedule",
    ),
    (
        "ferry_schedule_period_seconds",
        "For each enabled, unpaused Schedule, the seconds from its latest run time to its next.",
        "schedule",
    ),
    (
        "ferry_backup_storage_location_available",
        "1 when the last check found the storage location Available, 0 when Unavailable.",
        "location",
    ),
];

impl StateMetrics {
    pub fn new(
        backups: Store<Backup>,
        schedules: Store<Schedule>,
        locations: Store<BackupStorageLocation>,
    ) -> prometheus::Result<Self> {
        let descs = GAUGES
            .iter()
            .map(|(name, help, label)| {
                Desc::new(
                    (*name).to_owned(),
                    (*help).to_owned(),
                    vec![(*label).to_owned()],
                    Default::default(),
                )
            })
            .collect::<prometheus::Result<_>>()?;
        Ok(Self {
            backups,
            schedules,
            locations,
            descs,
        })
    }
}

impl Collector for StateMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let schedules = self.schedules.state();
        let values = [
            last_successful(&self.backups.state(), &schedules),
            periods(&schedules, Utc::now()),
            availability(&self.locations.state()),
        ];
        GAUGES
            .iter()
            .zip(values)
            .filter_map(|((name, help, label), series)| {
                let gauge = GaugeVec::new(Opts::new(*name, *help), &[label]).ok()?;
                for (value_of_label, value) in series {
                    gauge.with_label_values(&[&value_of_label]).set(value);
                }
                Some(gauge.collect())
            })
            .flatten()
            .collect()
    }
}

/// The schedule a Schedule's Backups are labelled with.
fn schedule_label(schedule: &Schedule) -> String {
    names::label_value(&schedule.name_any())
}

fn enabled(schedule: &Schedule) -> bool {
    schedule.phase() == SchedulePhase::Enabled
}

/// The newest completion of a Completed Backup per schedule; an enabled schedule without one
/// counts from its creation.
fn last_successful(backups: &[Arc<Backup>], schedules: &[Arc<Schedule>]) -> Series {
    let mut newest = Series::new();
    for schedule in schedules.iter().filter(|s| enabled(s)) {
        if let Some(created) = &schedule.metadata.creation_timestamp {
            newest.insert(schedule_label(schedule), unix_seconds(created));
        }
    }
    let mut completed = Series::new();
    for backup in backups {
        let status = backup.status.as_ref();
        let Some(finished) = status.and_then(|s| s.completion_timestamp.as_ref()) else {
            continue;
        };
        if backup.phase() != OperationPhase::Completed {
            continue;
        }
        let schedule = backup
            .labels()
            .get(label::SCHEDULE_NAME)
            .cloned()
            .unwrap_or_default();
        let at = completed.entry(schedule).or_insert(f64::MIN);
        *at = at.max(unix_seconds(finished));
    }
    newest.extend(completed);
    newest
}

/// The period around `now` of each enabled, unpaused schedule.
fn periods(schedules: &[Arc<Schedule>], now: DateTime<Utc>) -> Series {
    schedules
        .iter()
        .filter(|schedule| enabled(schedule) && !schedule.spec.paused)
        .filter_map(|schedule| {
            let cron = parse_cron(&schedule.spec.schedule).ok()?;
            let (latest, next) = around(&cron, now);
            let period = (next? - latest?).num_milliseconds() as f64 / 1000.0;
            Some((schedule_label(schedule), period))
        })
        .collect()
}

fn availability(locations: &[Arc<BackupStorageLocation>]) -> Series {
    locations
        .iter()
        .filter_map(|location| {
            let phase = location.status.as_ref()?.phase?;
            let up = phase == StorageLocationPhase::Available;
            Some((location.name_any(), if up { 1.0 } else { 0.0 }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use ferry_shared::crd::{
        BackupSpec, BackupStatus, BackupStorageLocationStatus, ScheduleSpec, ScheduleStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    use super::*;

    fn at(text: &str) -> Time {
        Time(text.parse().unwrap())
    }

    fn backup(schedule: Option<&str>, phase: OperationPhase, finished: &str) -> Arc<Backup> {
        let mut backup = Backup::new("b", BackupSpec::default());
        if let Some(schedule) = schedule {
            backup.metadata.labels =
                Some([(label::SCHEDULE_NAME.to_owned(), schedule.to_owned())].into());
        }
        backup.status = Some(BackupStatus {
            phase,
            completion_timestamp: Some(at(finished)),
            ..BackupStatus::default()
        });
        Arc::new(backup)
    }

    fn schedule(name: &str, cron: &str, phase: SchedulePhase, paused: bool) -> Arc<Schedule> {
        let spec = ScheduleSpec {
            schedule: cron.to_owned(),
            template: BackupSpec::default(),
            paused,
        };
        let mut schedule = Schedule::new(name, spec);
        schedule.metadata.creation_timestamp = Some(at("2026-11-01T00:00:00Z"));
        schedule.status = Some(ScheduleStatus {
            phase,
            ..ScheduleStatus::default()
        });
        Arc::new(schedule)
    }

    fn series(pairs: &[(&str, f64)]) -> Series {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    fn unix(text: &str) -> f64 {
        unix_seconds(&at(text))
    }

    /// A case: its name, the Backups and Schedules, and the series expected.
    type Case = (&'static str, Vec<Arc<Backup>>, Vec<Arc<Schedule>>, Series);

    #[test]
    fn the_newest_completed_backup_of_each_schedule_counts_or_else_the_schedule_itself() {
        use OperationPhase::{Completed, Failed, PartiallyFailed};
        let enabled = SchedulePhase::Enabled;
        let cases: [Case; 4] = [
            (
                "by hand, newest wins",
                vec![
                    backup(None, Completed, "2026-11-20T03:00:00Z"),
                    backup(None, Completed, "2026-11-21T03:00:00Z"),
                    backup(None, Failed, "2026-11-22T03:00:00Z"),
                ],
                vec![],
                series(&[("", unix("2026-11-21T03:00:00Z"))]),
            ),
            (
                "a schedule that never succeeded counts from its creation",
                vec![backup(
                    Some("nightly"),
                    PartiallyFailed,
                    "2026-11-21T03:00:00Z",
                )],
                vec![schedule("nightly", "0 3 * * *", enabled, false)],
                series(&[("nightly", unix("2026-11-01T00:00:00Z"))]),
            ),
            (
                "a success replaces the creation",
                vec![backup(Some("nightly"), Completed, "2026-11-21T03:00:00Z")],
                vec![schedule("nightly", "0 3 * * *", enabled, false)],
                series(&[("nightly", unix("2026-11-21T03:00:00Z"))]),
            ),
            (
                "an invalid schedule has no series of its own",
                vec![],
                vec![schedule(
                    "bad",
                    "0 3 * *",
                    SchedulePhase::FailedValidation,
                    false,
                )],
                series(&[]),
            ),
        ];
        for (name, backups, schedules, expected) in cases {
            assert_eq!(last_successful(&backups, &schedules), expected, "{name}");
        }
    }

    #[test]
    fn a_schedules_period_is_the_gap_around_now_and_paused_ones_have_none() {
        let enabled = SchedulePhase::Enabled;
        let day = 86_400.0;
        // A Saturday: a weekday schedule's gap runs from Friday to Monday.
        let saturday: DateTime<Utc> = "2026-11-28T12:00:00Z".parse().unwrap();
        let cases = [
            ("nightly", "0 3 * * *", enabled, false, Some(day)),
            ("weekdays", "0 2 * * 1-5", enabled, false, Some(3.0 * day)),
            ("hourly", "15 * * * *", enabled, false, Some(3600.0)),
            ("paused", "0 3 * * *", enabled, true, None),
            ("new", "0 3 * * *", SchedulePhase::New, false, None),
        ];
        for (name, cron, phase, paused, expected) in cases {
            let period = periods(&[schedule(name, cron, phase, paused)], saturday);
            assert_eq!(period.get(name).copied(), expected, "{name}");
        }
    }

    #[test]
    fn only_checked_locations_have_an_availability() {
        let location = |name: &str, phase: Option<StorageLocationPhase>| {
            let spec = serde_json::from_value(json!({"provider": "s3"})).unwrap();
            let mut location = BackupStorageLocation::new(name, spec);
            location.status = Some(BackupStorageLocationStatus {
                phase,
                ..BackupStorageLocationStatus::default()
            });
            Arc::new(location)
        };
        let locations = [
            location("up", Some(StorageLocationPhase::Available)),
            location("down", Some(StorageLocationPhase::Unavailable)),
            location("unchecked", None),
        ];
        assert_eq!(
            availability(&locations),
            series(&[("up", 1.0), ("down", 0.0)])
        );
    }
}
