//! `ferry restore`: create, get, describe, logs and delete.

use clap::{Args, Subcommand, ValueEnum};
use ferry_shared::crd::{DownloadTargetKind, ExistingResourcePolicy, Restore, RestoreSpec};
use kube::ResourceExt;
use kube::api::PostParams;

use super::backup::{indented, logs, transfers_of};
use super::connect::Ferry;
use super::describe::{Description, hook_runs, transfers_table};
use super::error::CliError;
use super::operation::Operation;
use super::output::{Format, Table, print, time, write_out};
use super::remove;
use super::selection::{Selection, namespace_mappings};
use super::wait::{self, WaitFlags};

#[derive(Debug, Subcommand)]
pub enum RestoreCommand {
    /// Create a Restore from a Backup, or from a Schedule's newest completed Backup.
    Create(Box<CreateArgs>),
    /// List the Restores, or show the ones named.
    Get {
        /// Restores to show; every Restore when none is named.
        names: Vec<String>,
    },
    /// Describe a Restore: what it takes, and how it went.
    Describe {
        /// The Restore's name.
        name: String,
        /// Also list each pod volume restore: its pod, node, phase, size, files, duration,
        /// snapshot and message.
        #[arg(long)]
        details: bool,
    },
    /// Print a Restore's log, read from the storage location.
    Logs {
        /// The Restore's name.
        name: String,
    },
    /// Print what a Restore did with each object, read from the storage location.
    Results {
        /// The Restore's name.
        name: String,
    },
    /// Delete Restores; what they restored stays.
    Delete(remove::DeleteArgs),
}

/// What a restore does with an object that exists already.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Existing {
    /// Keep it, with a warning.
    None,
    /// Update it to the backed-up version.
    Update,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("source").required(true))]
pub struct CreateArgs {
    /// The Restore's name; `<backup or schedule>-<UTC time>` when absent.
    name: Option<String>,
    /// The Backup to restore from.
    #[arg(long, value_name = "BACKUP", group = "source")]
    from_backup: Option<String>,
    /// Restore from this Schedule's newest completed Backup.
    #[arg(long, value_name = "SCHEDULE", group = "source")]
    from_schedule: Option<String>,
    #[command(flatten)]
    selection: Selection,
    /// Restore namespaces under new names, as `old:new`, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "OLD:NEW")]
    namespace_mappings: Vec<String>,
    /// What to do with an object that already exists.
    #[arg(long, value_enum, default_value_t = Existing::None)]
    existing_resource_policy: Existing,
    /// Keep the node ports of NodePort and LoadBalancer Services, instead of letting the
    /// cluster choose new ones.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    preserve_nodeports: Option<bool>,
    #[command(flatten)]
    wait: WaitFlags,
}

pub async fn run(ferry: &Ferry, command: RestoreCommand) -> Result<(), CliError> {
    match command {
        RestoreCommand::Create(args) => create(ferry, *args).await,
        RestoreCommand::Get { names } => get(ferry, &names).await,
        RestoreCommand::Describe { name, details } => describe(ferry, &name, details).await,
        RestoreCommand::Logs { name } => logs(ferry, DownloadTargetKind::RestoreLog, &name).await,
        RestoreCommand::Results { name } => {
            logs(ferry, DownloadTargetKind::RestoreResults, &name).await
        }
        RestoreCommand::Delete(args) => {
            let note = "the objects and data it restored stay";
            remove::delete::<Restore>(ferry, args, "Restore", note).await
        }
    }
}

fn spec(args: &CreateArgs) -> Result<RestoreSpec, CliError> {
    let selection = &args.selection;
    Ok(RestoreSpec {
        backup_name: args.from_backup.clone(),
        schedule_name: args.from_schedule.clone(),
        included_namespaces: selection.include_namespaces.clone(),
        excluded_namespaces: selection.exclude_namespaces.clone(),
        resources: selection.resources(),
        preserve_node_ports: args.preserve_nodeports,
        namespace_mapping: namespace_mappings(&args.namespace_mappings)?,
        label_selector: selection.selector.clone(),
        existing_resource_policy: match args.existing_resource_policy {
            Existing::None => ExistingResourcePolicy::None,
            Existing::Update => ExistingResourcePolicy::Update,
        },
        hooks: None,
    })
}

async fn create(ferry: &Ferry, args: CreateArgs) -> Result<(), CliError> {
    let spec = spec(&args)?;
    let name = args.name.clone().unwrap_or_else(|| {
        let source = args
            .from_backup
            .as_deref()
            .or(args.from_schedule.as_deref())
            .unwrap_or("restore");
        crate::schedule::backup_name(source, chrono::Utc::now())
    });
    ferry
        .api::<Restore>()
        .create(&PostParams::default(), &Restore::new(&name, spec))
        .await
        .map_err(CliError::creating("Restore", &name, &ferry.namespace))?;
    if args.wait.wait {
        return wait::follow::<Restore>(ferry, &name, &args.wait).await;
    }
    write_out(&format!(
        "Restore {name} created. See how it goes with `ferry restore describe {name}` or `ferry restore logs {name}`; `--wait` follows it.\n"
    ))
}

async fn get(ferry: &Ferry, names: &[String]) -> Result<(), CliError> {
    let restores: Vec<Restore> = ferry.named_or_all("Restore", names).await?;
    print(&restores, names.len() == 1, ferry.format, |restores| {
        let mut table = Table::new(&[
            "NAME", "BACKUP", "PHASE", "VOLUMES", "ERRORS", "WARNINGS", "CREATED",
        ]);
        for restore in restores {
            let summary = restore.summary();
            table.row(vec![
                restore.name_any(),
                backup_of(restore),
                format!("{:?}", summary.phase),
                format!(
                    "{}/{}",
                    summary.transfers.completed, summary.transfers.total
                ),
                summary.errors.len().to_string(),
                summary.warnings.len().to_string(),
                time(restore.metadata.creation_timestamp.as_ref()),
            ]);
        }
        table
    })
}

/// The Backup a Restore restores from, as far as it is known.
fn backup_of(restore: &Restore) -> String {
    let chosen = restore.status.as_ref().and_then(|s| s.backup_name.clone());
    chosen
        .or_else(|| restore.spec.backup_name.clone())
        .or_else(|| {
            let schedule = restore.spec.schedule_name.as_ref()?;
            Some(format!("<newest of schedule {schedule}>"))
        })
        .unwrap_or_else(|| "-".to_owned())
}

async fn describe(ferry: &Ferry, name: &str, details: bool) -> Result<(), CliError> {
    let restore: Restore = ferry.get("Restore", name).await?;
    if ferry.format != Format::Table {
        return print(&[restore], true, ferry.format, |_| Table::new(&[]));
    }
    let spec = &restore.spec;
    let status = restore.status.clone().unwrap_or_default();
    let mappings: Vec<String> = spec
        .namespace_mapping
        .iter()
        .map(|(from, to)| format!("{from} → {to}"))
        .collect();
    let mut description = Description::default();
    description
        .metadata(&restore.metadata)
        .field("Backup", backup_of(&restore))
        .selection(
            &spec.included_namespaces,
            &spec.excluded_namespaces,
            &spec.resources,
            spec.label_selector.as_ref(),
        )
        .field("Namespace mappings", super::output::list(&mappings))
        .field(
            "Existing objects",
            format!("{:?}", spec.existing_resource_policy).to_lowercase(),
        )
        .outcome(&restore.summary(), Restore::ITEMS_DONE)
        .hooks(&status.hooks);
    let mut text = description.render();
    if details {
        let pvrs = transfers_of::<Restore>(ferry, name).await?;
        text.push_str("\nPod volume restores:\n");
        text.push_str(&transfers_table(&pvrs).render());
        text.push_str("\nTimed-out volumes:\n");
        text.push_str(&indented(&status.timed_out_volumes));
        text.push_str("\nHooks:\n");
        text.push_str(&hook_runs(&status.hooks));
    } else {
        text.push_str("\nRun `ferry restore describe --details` for each pod volume.\n");
    }
    write_out(&text)
}
