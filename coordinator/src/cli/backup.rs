//! `ferry backup`: create, get, describe, logs, delete and download.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use ferry_shared::crd::{Backup, DownloadTargetKind, Schedule};
use ferry_shared::names::label_value;
use kube::ResourceExt;
use kube::api::{ListParams, PostParams};

use super::connect::Ferry;
use super::describe::{Description, hook_runs, transfers_table};
use super::download;
use super::error::CliError;
use super::operation::Operation;
use super::output::{Format, Table, print, time, write_out};
use super::remove;
use super::selection::BackupFlags;
use super::wait::{self, WaitFlags};

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Create a Backup of the selected namespaces' objects and pod volumes.
    Create(Box<CreateArgs>),
    /// List the Backups, or show the ones named.
    Get {
        /// Backups to show; every Backup when none is named.
        names: Vec<String>,
    },
    /// Describe a Backup: what it takes, and how it went.
    Describe {
        /// The Backup's name.
        name: String,
        /// Also list each pod volume: its pod, node, phase, size, files, duration, snapshot
        /// and message, and each volume that was skipped, with the reason.
        #[arg(long)]
        details: bool,
    },
    /// Print a Backup's log, read from its storage location.
    Logs {
        /// The Backup's name.
        name: String,
    },
    /// Delete Backups, with their data in the storage location and their snapshots.
    Delete(remove::DeleteArgs),
    /// Download a Backup's objects: the gzipped tarball of its resources.
    Download {
        /// The Backup's name.
        name: String,
        /// Where to write the tarball; `<name>-data.tar.gz` when absent.
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
        /// Overwrite the file if it exists.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The Backup's name.
    name: String,
    #[command(flatten)]
    flags: BackupFlags,
    /// Take the spec from this Schedule's template, as the Schedule would.
    #[arg(long, value_name = "SCHEDULE", conflicts_with_all = ["BackupFlags", "Selection"])]
    from_schedule: Option<String>,
    #[command(flatten)]
    wait: WaitFlags,
}

pub async fn run(ferry: &Ferry, command: BackupCommand) -> Result<(), CliError> {
    match command {
        BackupCommand::Create(args) => create(ferry, *args).await,
        BackupCommand::Get { names } => get(ferry, &names).await,
        BackupCommand::Describe { name, details } => describe(ferry, &name, details).await,
        BackupCommand::Logs { name } => logs(ferry, DownloadTargetKind::BackupLog, &name).await,
        BackupCommand::Delete(args) => {
            let note = "its data is removed from the storage location, and its snapshots forgotten, before it goes";
            remove::delete::<Backup>(ferry, args, "Backup", note).await
        }
        BackupCommand::Download { name, file, force } => save(ferry, &name, file, force).await,
    }
}

async fn create(ferry: &Ferry, args: CreateArgs) -> Result<(), CliError> {
    let backup = match &args.from_schedule {
        Some(schedule) => {
            let schedule: Schedule = ferry.get("Schedule", schedule).await?;
            crate::schedule::backup_of(&schedule, &args.name)
        }
        None => Backup::new(&args.name, args.flags.spec()),
    };
    ferry
        .api::<Backup>()
        .create(&PostParams::default(), &backup)
        .await
        .map_err(CliError::creating("Backup", &args.name, &ferry.namespace))?;
    if args.wait.wait {
        return wait::follow::<Backup>(ferry, &args.name, &args.wait).await;
    }
    let name = &args.name;
    write_out(&format!(
        "Backup {name} created. See how it goes with `ferry backup describe {name}` or `ferry backup logs {name}`; `--wait` follows it.\n"
    ))
}

async fn get(ferry: &Ferry, names: &[String]) -> Result<(), CliError> {
    let backups: Vec<Backup> = ferry.named_or_all("Backup", names).await?;
    print(&backups, names.len() == 1, ferry.format, |backups| {
        let mut table = Table::new(&[
            "NAME", "PHASE", "VOLUMES", "ERRORS", "WARNINGS", "CREATED", "EXPIRES", "LOCATION",
        ]);
        for backup in backups {
            let summary = backup.summary();
            let expires = backup.status.as_ref().and_then(|s| s.expiration.as_ref());
            table.row(vec![
                backup.name_any(),
                format!("{:?}", summary.phase),
                format!(
                    "{}/{}",
                    summary.transfers.completed, summary.transfers.total
                ),
                summary.errors.len().to_string(),
                summary.warnings.len().to_string(),
                time(backup.metadata.creation_timestamp.as_ref()),
                expires.map_or_else(|| "-".to_owned(), |t| t.0.to_string()),
                backup
                    .spec
                    .storage_location
                    .clone()
                    .unwrap_or_else(|| "<default>".into()),
            ]);
        }
        table
    })
}

async fn describe(ferry: &Ferry, name: &str, details: bool) -> Result<(), CliError> {
    let backup: Backup = ferry.get("Backup", name).await?;
    if ferry.format != Format::Table {
        return print(&[backup], true, ferry.format, |_| Table::new(&[]));
    }
    let mut text = description(&backup).render();
    if details {
        let pvbs = transfers_of::<Backup>(ferry, name).await?;
        let skipped: Vec<String> = backup
            .status
            .iter()
            .flat_map(|status| &status.skipped_volumes)
            .map(|v| format!("{}/{}: {}", v.pod, v.volume, v.reason))
            .collect();
        text.push_str("\nPod volume backups:\n");
        text.push_str(&transfers_table(&pvbs).render());
        text.push_str("\nSkipped volumes:\n");
        text.push_str(&indented(&skipped));
        let hooks = backup.status.map(|status| status.hooks).unwrap_or_default();
        text.push_str("\nHooks:\n");
        text.push_str(&hook_runs(&hooks));
    } else {
        text.push_str("\nRun `ferry backup describe --details` for each pod volume.\n");
    }
    write_out(&text)
}

/// Each item on a line of its own, indented, or `  <none>`.
pub fn indented(items: &[String]) -> String {
    if items.is_empty() {
        return "  <none>\n".to_owned();
    }
    items.iter().map(|item| format!("  {item}\n")).collect()
}

fn description(backup: &Backup) -> Description {
    let spec = &backup.spec;
    let status = backup.status.clone().unwrap_or_default();
    let mut description = Description::default();
    description
        .metadata(&backup.metadata)
        .selection(
            &spec.included_namespaces,
            &spec.excluded_namespaces,
            &spec.resources,
            spec.label_selector.as_ref(),
        )
        .field(
            "Storage location",
            spec.storage_location
                .clone()
                .unwrap_or_else(|| "<default>".into()),
        )
        .field(
            "Volumes",
            match spec.default_volumes_to_fs_backup {
                Some(true) => "every eligible volume (opt-out)",
                Some(false) => "the annotated volumes (opt-in)",
                None => "the coordinator's default",
            },
        )
        .field(
            "TTL",
            spec.ttl.clone().unwrap_or_else(|| "<default>".into()),
        )
        .field(
            "Volume timeout",
            spec.volume_timeout
                .clone()
                .unwrap_or_else(|| "<default>".into()),
        )
        .field("Expiration", time(status.expiration.as_ref()))
        .outcome(&backup.summary(), Backup::ITEMS_DONE)
        .hooks(&status.hooks)
        .items("Timed-out volumes", &status.timed_out_volumes);
    description
}

/// The transfers of the Backup or Restore `name`, sorted by volume.
pub async fn transfers_of<K: Operation>(
    ferry: &Ferry,
    name: &str,
) -> Result<Vec<K::Transfer>, CliError> {
    use ferry_shared::crd::PodVolumeTransfer;
    let selector = format!("{}={}", K::TRANSFER_LABEL, label_value(name));
    let mut items = ferry
        .api::<K::Transfer>()
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(CliError::from_kube)?
        .items;
    items.sort_by_key(PodVolumeTransfer::volume_path);
    Ok(items)
}

/// Prints a log or results file of a Backup or Restore.
pub async fn logs(ferry: &Ferry, kind: DownloadTargetKind, name: &str) -> Result<(), CliError> {
    let text = download::gunzipped(&download::fetch(ferry, kind, name).await?)?;
    write_out(&String::from_utf8_lossy(&text))
}

async fn save(
    ferry: &Ferry,
    name: &str,
    file: Option<PathBuf>,
    force: bool,
) -> Result<(), CliError> {
    let path = file.unwrap_or_else(|| PathBuf::from(format!("{name}-data.tar.gz")));
    if path.exists() && !force {
        return Err(CliError::Refused(format!(
            "{} exists; add --force to overwrite it",
            path.display()
        )));
    }
    let bytes = download::fetch(ferry, DownloadTargetKind::BackupContents, name).await?;
    std::fs::write(&path, &bytes)
        .map_err(CliError::io(format!("cannot write {}", path.display())))?;
    write_out(&format!(
        "Backup {name}'s objects are in {}.\n",
        path.display()
    ))
}
