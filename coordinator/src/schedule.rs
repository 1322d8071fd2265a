//! The Schedule controller: a cron expression (UTC, five fields) makes Backups named
//! `<schedule>-<YYYYMMDDhhmmss>` from the template. A new schedule backs up at once, for its
//! latest due time; after that, only the latest missed time fires, with no backfill after
//! downtime. `paused` stops it.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;
use ferry_shared::crd::{Backup, Schedule, SchedulePhase, ScheduleStatus};
use ferry_shared::names::{self, label};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::PostParams;
use kube::runtime::controller::Action;
use tracing::info;

use crate::context::Context;
use crate::error::Error;

/// Parses a five-field cron expression.
pub fn parse_cron(expression: &str) -> Result<Cron, String> {
    let fields = expression.split_whitespace().count();
    if fields != 5 {
        return Err(format!(
            "schedule {expression:?} has {fields} fields; give five: minute hour day-of-month month day-of-week, such as \"0 3 * * *\""
        ));
    }
    Cron::from_str(expression)
        .map_err(|err| format!("schedule {expression:?} is not a valid cron expression: {err}"))
}

/// What the schedule should do at `now`, having last fired at `last`.
#[derive(Debug, PartialEq, Eq)]
pub struct Due {
    /// The time to make a Backup for, if one is due.
    pub fire: Option<DateTime<Utc>>,
    /// The next time after `now`.
    pub next: Option<DateTime<Utc>>,
}

pub fn due(cron: &Cron, last: DateTime<Utc>, now: DateTime<Utc>) -> Due {
    let (latest, next) = around(cron, now);
    Due {
        fire: latest.filter(|latest| *latest > last),
        next,
    }
}

/// The cron's latest time at or before `now`, and its next time after `now`.
pub fn around(cron: &Cron, now: DateTime<Utc>) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    (
        cron.find_previous_occurrence(&now, true).ok(),
        cron.find_next_occurrence(&now, false).ok(),
    )
}

/// The name of the Backup made for `time`.
pub fn backup_name(schedule: &str, time: DateTime<Utc>) -> String {
    format!("{schedule}-{}", time.format("%Y%m%d%H%M%S"))
}

/// The Backup `name` that `schedule` makes: its template, labelled with the schedule's name.
pub fn backup_of(schedule: &Schedule, name: &str) -> Backup {
    let mut backup = Backup::new(name, schedule.spec.template.clone());
    backup.metadata.labels = Some(
        [(
            label::SCHEDULE_NAME.to_owned(),
            names::label_value(&schedule.name_any()),
        )]
        .into(),
    );
    backup
}

fn to_chrono(time: &Time) -> DateTime<Utc> {
    DateTime::from_timestamp(time.0.as_second(), 0).unwrap_or_default()
}

fn to_time(time: DateTime<Utc>) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(time.timestamp()).unwrap_or_default())
}

pub async fn reconcile(schedule: Arc<Schedule>, ctx: Arc<Context>) -> Result<Action, Error> {
    let status = schedule.status.clone().unwrap_or_default();
    let cron = match validate(&schedule) {
        Ok(cron) => cron,
        Err(errors) => {
            if status.phase != SchedulePhase::FailedValidation || status.validation_errors != errors
            {
                ctx.event(&*schedule, true, "FailedValidation", errors.join("; "))
                    .await;
                let failed = ScheduleStatus {
                    phase: SchedulePhase::FailedValidation,
                    validation_errors: errors,
                    ..status
                };
                ctx.apply_status(&*schedule, &failed).await?;
            }
            return Ok(Action::await_change());
        }
    };
    let mut next_status = ScheduleStatus {
        phase: SchedulePhase::Enabled,
        validation_errors: Vec::new(),
        ..status.clone()
    };
    if schedule.spec.paused {
        if next_status != status {
            ctx.apply_status(&*schedule, &next_status).await?;
        }
        return Ok(Action::await_change());
    }
    let last = status
        .last_backup
        .as_ref()
        .map(to_chrono)
        .unwrap_or_default();
    let now = Utc::now();
    let due = due(&cron, last, now);
    if let Some(fire) = due.fire {
        create_backup(&schedule, &ctx, fire).await?;
        next_status.last_backup = Some(to_time(fire));
    }
    if next_status != status {
        ctx.apply_status(&*schedule, &next_status).await?;
    }
    Ok(due.next.map_or_else(Action::await_change, |next| {
        let wait = (next - now).to_std().unwrap_or_default();
        Action::requeue(wait.max(Duration::from_millis(200)))
    }))
}

/// The schedule's cron expression, once it and its backup template are valid; else every
/// reason they are not.
fn validate(schedule: &Schedule) -> Result<Cron, Vec<String>> {
    let mut errors = Vec::new();
    let cron = parse_cron(&schedule.spec.schedule)
        .map_err(|err| errors.push(err))
        .ok();
    let template = Backup::new("template", schedule.spec.template.clone());
    errors.extend(crate::backup::spec_errors(&template));
    match cron {
        Some(cron) if errors.is_empty() => Ok(cron),
        _ => Err(errors),
    }
}

/// Creates the backup the schedule makes at `fire`, unless it exists.
async fn create_backup(
    schedule: &Schedule,
    ctx: &Context,
    fire: DateTime<Utc>,
) -> Result<(), Error> {
    let name = backup_name(&schedule.name_any(), fire);
    let backup = backup_of(schedule, &name);
    match ctx
        .api::<Backup>()
        .create(&PostParams::default(), &backup)
        .await
    {
        Ok(_) => {
            info!(schedule = %schedule.name_any(), backup = %name, "scheduled backup created");
            let note = format!("created backup {name}");
            ctx.event(schedule, false, "BackupCreated", note).await;
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn five_field_expressions_are_accepted_and_others_refused() {
        assert!(parse_cron("0 3 * * *").is_ok());
        assert!(parse_cron("*/5 * * * 1-5").is_ok());
        for bad in ["", "0 3 * *", "0 0 3 * * *", "61 * * * *", "every day"] {
            assert!(parse_cron(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_the_latest_missed_time_fires() {
        let cron = parse_cron("0 3 * * *").unwrap();
        let due_now = due(
            &cron,
            at("2026-11-20T03:00:00Z"),
            at("2026-11-22T04:30:00Z"),
        );
        assert_eq!(due_now.fire, Some(at("2026-11-22T03:00:00Z")));
        assert_eq!(due_now.next, Some(at("2026-11-23T03:00:00Z")));
        let not_yet = due(
            &cron,
            at("2026-11-22T03:00:00Z"),
            at("2026-11-22T04:30:00Z"),
        );
        assert_eq!(not_yet.fire, None);
    }

    #[test]
    fn backups_are_named_by_their_utc_time() {
        assert_eq!(
            backup_name("daily", at("2026-11-22T03:00:00Z")),
            "daily-20261122030000"
        );
    }
}
