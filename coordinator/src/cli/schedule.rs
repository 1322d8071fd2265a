//! `ferry schedule`: create, get, describe, pause, unpause and delete.

use clap::{Args, Subcommand};
use ferry_shared::crd::{Backup, Schedule, ScheduleSpec};
use ferry_shared::names::{label, label_value};
use kube::ResourceExt;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::connect::Ferry;
use super::describe::Description;
use super::error::CliError;
use super::output::{Format, Table, print, time, write_out};
use super::remove;
use super::selection::BackupFlags;

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Create a Schedule that makes Backups on a cron schedule.
    Create(Box<CreateArgs>),
    /// List the Schedules, or show the ones named.
    Get {
        /// Schedules to show; every Schedule when none is named.
        names: Vec<String>,
    },
    /// Describe a Schedule: when it backs up, and what.
    Describe {
        /// The Schedule's name.
        name: String,
    },
    /// Stop Schedules from making Backups.
    Pause {
        /// The Schedules' names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Let paused Schedules make Backups again.
    Unpause {
        /// The Schedules' names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Delete Schedules; the Backups they made stay.
    Delete(remove::DeleteArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The Schedule's name.
    name: String,
    /// When to back up: a cron expression in UTC with five fields, such as "0 3 * * *".
    #[arg(long)]
    schedule: String,
    /// Create the Schedule paused.
    #[arg(long)]
    paused: bool,
    #[command(flatten)]
    backup: BackupFlags,
}

pub async fn run(ferry: &Ferry, command: ScheduleCommand) -> Result<(), CliError> {
    match command {
        ScheduleCommand::Create(args) => create(ferry, *args).await,
        ScheduleCommand::Get { names } => get(ferry, &names).await,
        ScheduleCommand::Describe { name } => describe(ferry, &name).await,
        ScheduleCommand::Pause { names } => set_paused(ferry, &names, true).await,
        ScheduleCommand::Unpause { names } => set_paused(ferry, &names, false).await,
        ScheduleCommand::Delete(args) => {
            let note = "the Backups it made stay";
            remove::delete::<Schedule>(ferry, args, "Schedule", note).await
        }
    }
}

async fn create(ferry: &Ferry, args: CreateArgs) -> Result<(), CliError> {
    crate::schedule::parse_cron(&args.schedule)
        .map_err(|err| CliError::InvalidFlag(format!("--schedule: {err}")))?;
    let schedule = Schedule::new(
        &args.name,
        ScheduleSpec {
            schedule: args.schedule.clone(),
            template: args.backup.spec(),
            paused: args.paused,
        },
    );
    ferry
        .api::<Schedule>()
        .create(&PostParams::default(), &schedule)
        .await
        .map_err(CliError::creating("Schedule", &args.name, &ferry.namespace))?;
    write_out(&format!(
        "Schedule {} created: it backs up at \"{}\" (UTC){}.\n",
        args.name,
        args.schedule,
        if args.paused { ", once unpaused" } else { "" }
    ))
}

async fn get(ferry: &Ferry, names: &[String]) -> Result<(), CliError> {
    let schedules: Vec<Schedule> = ferry.named_or_all("Schedule", names).await?;
    print(&schedules, names.len() == 1, ferry.format, |schedules| {
        let mut table = Table::new(&["NAME", "PHASE", "SCHEDULE", "PAUSED", "LAST BACKUP"]);
        for schedule in schedules {
            let last = schedule
                .status
                .as_ref()
                .and_then(|s| s.last_backup.as_ref());
            table.row(vec![
                schedule.name_any(),
                format!("{:?}", schedule.phase()),
                schedule.spec.schedule.clone(),
                schedule.spec.paused.to_string(),
                last.map_or_else(|| "-".to_owned(), |t| t.0.to_string()),
            ]);
        }
        table
    })
}

async fn describe(ferry: &Ferry, name: &str) -> Result<(), CliError> {
    let schedule: Schedule = ferry.get("Schedule", name).await?;
    if ferry.format != Format::Table {
        return print(&[schedule], true, ferry.format, |_| Table::new(&[]));
    }
    let template = &schedule.spec.template;
    let status = schedule.status.clone().unwrap_or_default();
    let mut description = Description::default();
    description
        .metadata(&schedule.metadata)
        .field("Phase", format!("{:?}", status.phase))
        .field("Schedule", format!("{} (UTC)", schedule.spec.schedule))
        .field("Paused", schedule.spec.paused.to_string())
        .field("Last backup", time(status.last_backup.as_ref()))
        .items("Validation errors", &status.validation_errors)
        .field("Backup template", "")
        .selection(
            &template.included_namespaces,
            &template.excluded_namespaces,
            &template.resources,
            template.label_selector.as_ref(),
        )
        .field(
            "Storage location",
            template
                .storage_location
                .clone()
                .unwrap_or_else(|| "<default>".into()),
        )
        .field(
            "TTL",
            template.ttl.clone().unwrap_or_else(|| "<default>".into()),
        );
    description.items("Recent backups", &recent_backups(ferry, name).await?);
    write_out(&description.render())
}

/// The newest Backups the Schedule made, newest first, with their phases.
async fn recent_backups(ferry: &Ferry, name: &str) -> Result<Vec<String>, CliError> {
    let selector = format!("{}={}", label::SCHEDULE_NAME, label_value(name));
    let mut backups = ferry
        .api::<Backup>()
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(CliError::from_kube)?
        .items;
    backups.sort_by_key(|backup| std::cmp::Reverse(backup.metadata.creation_timestamp.clone()));
    Ok(backups
        .iter()
        .take(RECENT_BACKUPS)
        .map(|backup| format!("{}  {:?}", backup.name_any(), backup.phase()))
        .collect())
}

/// How many of a Schedule's Backups `describe` lists.
const RECENT_BACKUPS: usize = 5;

async fn set_paused(ferry: &Ferry, names: &[String], paused: bool) -> Result<(), CliError> {
    let api = ferry.api::<Schedule>();
    let patch = json!({"spec": {"paused": paused}});
    for name in names {
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(CliError::about("Schedule", name, &ferry.namespace))?;
        let done = if paused { "paused" } else { "unpaused" };
        write_out(&format!("Schedule {name} {done}.\n"))?;
    }
    Ok(())
}
