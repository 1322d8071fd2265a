//! `ferry-node-agent`'s command line. `backup` and `restore` run one transfer without any
//! cluster, through the same child process the agent uses: the embedded default, and the
//! operator's disaster-recovery tool.

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ferry_shared::repository::{
    BackupOutcome, BackupRequest, OpenMode, Parent, ProgressCounters, ProgressSnapshot, Repository,
    RepositoryConfig, RepositoryLocation, RestoreOutcome, RestoreRequest, S3Location,
    UNCHECKED_TLS, read_ca_bundle,
};
use ferry_shared::subprocess;

use crate::agent;
use crate::transfer::{self, Event, Job, Operation, Outcome, ProgressReport, TransferProcess};

#[derive(Debug, Parser)]
#[command(
    name = "ferry-node-agent",
    version,
    about = "Ferry's node agent and transfer tool"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node agent: the transfers of this node's PodVolumeBackups and PodVolumeRestores.
    Run(Box<agent::RunArgs>),
    /// Create a restic-format repository, unless there is one already.
    Init(RepositoryArgs),
    /// Back up a directory into a restic-format repository, creating the repository if needed.
    Backup(BackupArgs),
    /// Restore a snapshot into an empty directory, or finish an interrupted restore (--resume).
    Restore(RestoreArgs),
    /// Run one transfer job, read as JSON from stdin, writing JSON events to stdout. The agent
    /// and the commands above start this; it is not meant to be run by hand.
    Transfer(TransferArgs),
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The directory to back up; its contents become the snapshot's root.
    #[arg(long, env = "FERRY_SOURCE")]
    pub source: PathBuf,
    /// A snapshot tag as key=value; repeat for more.
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    pub tags: Vec<(String, String)>,
    /// The snapshot label, such as <namespace>/<pvc>.
    #[arg(long)]
    pub label: Option<String>,
    /// The snapshot to compare against, so that unchanged files are not read again. Without
    /// it, the latest snapshot with the same label and tags is the parent.
    #[arg(long, conflicts_with = "no_parent")]
    pub parent: Option<String>,
    /// Compare against no snapshot: read every file again.
    #[arg(long)]
    pub no_parent: bool,
    #[command(flatten)]
    pub repository: RepositoryArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The snapshot ID, or a unique prefix of it.
    #[arg(long)]
    pub snapshot: String,
    /// The directory to restore into; it must be empty or missing.
    #[arg(long)]
    pub target: PathBuf,
    /// Write the done-marker .velero/<UID> into the target once all data is restored.
    #[arg(long, value_name = "UID")]
    pub restore_uid: Option<String>,
    /// Finish an interrupted restore of the same snapshot into this target (killed, or stopped
    /// by a full disk): what it left is cleared and the snapshot restored again. Without it, a
    /// target that is not empty is refused.
    #[arg(long)]
    pub resume: bool,
    #[command(flatten)]
    pub repository: RepositoryArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Args)]
pub struct TransferArgs {
    /// Cap this process's heap at this many bytes.
    #[arg(long)]
    pub memory_limit: Option<u64>,
}

/// Where the repository is and how to open it. An S3 repository is given either as
/// `--repository s3:<endpoint>/<bucket>/<prefix>` or by `--s3-bucket` and its companions.
#[derive(Debug, Args)]
pub struct RepositoryArgs {
    /// The repository: a local path, or s3:http(s)://host[:port]/bucket[/prefix].
    #[arg(
        long,
        short = 'r',
        env = "FERRY_REPOSITORY",
        required_unless_present = "s3_bucket"
    )]
    pub repository: Option<String>,
    /// A file holding the repository password (one line).
    #[arg(long, env = "FERRY_PASSWORD_FILE")]
    pub password_file: PathBuf,
    /// The S3 bucket, when --repository is not given.
    #[arg(long, env = "FERRY_S3_BUCKET", conflicts_with = "repository")]
    pub s3_bucket: Option<String>,
    /// The repository's prefix inside the S3 bucket.
    #[arg(
        long,
        env = "FERRY_S3_PREFIX",
        default_value = "",
        requires = "s3_bucket"
    )]
    pub s3_prefix: String,
    /// The S3 endpoint URL; AWS when absent.
    #[arg(long, env = "FERRY_S3_ENDPOINT", requires = "s3_bucket")]
    pub s3_endpoint: Option<String>,
    /// The S3 region.
    #[arg(long, env = "FERRY_S3_REGION")]
    pub s3_region: Option<String>,
    /// The S3 access key ID.
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    pub s3_access_key_id: Option<String>,
    /// The S3 secret access key.
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
    /// Address the bucket as <bucket>.<host> rather than <host>/<bucket>.
    #[arg(long, env = "FERRY_S3_VIRTUAL_HOST_STYLE")]
    pub s3_virtual_host_style: bool,
    /// A PEM file of the CA certificates that may have signed the S3 endpoint's certificate,
    /// trusted besides the system's (as restic's --cacert).
    #[arg(long, env = "FERRY_S3_CA_CERT", value_name = "FILE", value_parser = read_ca_bundle)]
    pub s3_ca_cert: Option<String>,
    /// Accept any TLS certificate from the S3 endpoint, unchecked: for tests only.
    #[arg(long, env = "FERRY_S3_INSECURE_SKIP_TLS_VERIFY")]
    pub s3_insecure_skip_tls_verify: bool,
    /// A cache directory for the repository's trees and index; none when absent.
    #[arg(long, env = "FERRY_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// How long one request to object storage is retried while the store is out of reach
    /// (refused or dropped connections, timeouts, 5xx, SlowDown) before the command fails;
    /// 0 retries none.
    #[arg(long, env = "FERRY_STORAGE_RETRY_BUDGET", default_value = "5m", value_parser = humantime::parse_duration)]
    pub storage_retry_budget: Duration,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// How often progress is printed, such as 10s or 500ms.
    #[arg(long, env = "FERRY_PROGRESS_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub progress_interval: Duration,
    /// Print one JSON object per line (progress, warnings, result) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Cap the transfer process's memory, such as 512Mi or 2G; unlimited when absent.
    #[arg(long, env = "FERRY_MEMORY_LIMIT", value_parser = ferry_shared::size::parse_size)]
    pub memory_limit: Option<u64>,
}

fn parse_tag(tag: &str) -> Result<(String, String), String> {
    match tag.split_once('=') {
        Some((key, value)) if !key.is_empty() && !tag.contains(',') => {
            Ok((key.to_owned(), value.to_owned()))
        }
        _ => Err(format!(
            "`{tag}` is not a tag of the form key=value (without commas)"
        )),
    }
}

impl RepositoryArgs {
    fn config(&self) -> Result<RepositoryConfig, String> {
        let mut location = match (&self.repository, &self.s3_bucket) {
            (Some(repository), _) => RepositoryLocation::parse(repository)?,
            (None, Some(bucket)) => RepositoryLocation::S3(S3Location {
                endpoint: self.s3_endpoint.clone(),
                bucket: bucket.clone(),
                prefix: self.s3_prefix.trim_matches('/').to_owned(),
                ..S3Location::default()
            }),
            (None, None) => return Err("give --repository or --s3-bucket".to_owned()),
        };
        if let RepositoryLocation::S3(s3) = &mut location {
            s3.region.clone_from(&self.s3_region);
            s3.access_key_id.clone_from(&self.s3_access_key_id);
            s3.secret_access_key.clone_from(&self.s3_secret_access_key);
            s3.virtual_host_style = self.s3_virtual_host_style;
            s3.ca_cert.clone_from(&self.s3_ca_cert);
            s3.insecure_skip_tls_verify = self.s3_insecure_skip_tls_verify;
            if s3.insecure_skip_tls_verify {
                eprintln!("warning: {UNCHECKED_TLS}");
            }
        }
        let password = fs::read_to_string(&self.password_file).map_err(|err| {
            format!(
                "cannot read the password file {}: {err}",
                self.password_file.display()
            )
        })?;
        let password = password.lines().next().unwrap_or_default().to_owned();
        if password.is_empty() {
            return Err(format!(
                "the password file {} is empty",
                self.password_file.display()
            ));
        }
        Ok(RepositoryConfig {
            location,
            password,
            cache_dir: self.cache_dir.clone(),
            retry_budget: self.storage_retry_budget,
        })
    }
}

/// Runs a command line; the exit code is 0 on success and 1 on any failure.
pub fn run(cli: Cli) -> ExitCode {
    // The engine's blocking calls, and the S3 backend's own runtime, run outside any other.
    match &cli.command {
        Command::Transfer(args) => return run_transfer(args),
        Command::Init(args) => return run_init(args),
        _ => {}
    }
    if let Command::Run(args) = &cli.command {
        agent::init_logging(args.log_format);
    }
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(run_command(cli.command)),
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run_command(command: Command) -> ExitCode {
    let (job, run) = match command {
        Command::Transfer(args) => return run_transfer(&args),
        Command::Init(args) => return run_init(&args),
        Command::Run(args) => return run_agent(*args).await,
        Command::Backup(args) => (
            args.repository.config().map(|repository| Job {
                repository,
                operation: Operation::Backup {
                    request: BackupRequest {
                        source: args.source,
                        tags: args.tags.into_iter().collect(),
                        label: args.label,
                        parent: match (args.parent, args.no_parent) {
                            (Some(parent), _) => Parent::Snapshot(parent),
                            (None, true) => Parent::None,
                            (None, false) => Parent::Latest,
                        },
                    },
                    create_repository: true,
                },
                progress_interval: args.run.progress_interval,
            }),
            args.run,
        ),
        Command::Restore(args) => (
            args.repository.config().map(|repository| Job {
                repository,
                operation: Operation::Restore {
                    request: RestoreRequest {
                        snapshot: args.snapshot,
                        target: args.target,
                        // The claim is the snapshot's own: any later run of the same
                        // snapshot may resume it.
                        owner: None,
                        resume: args.resume,
                    },
                    restore_uid: args.restore_uid,
                },
                progress_interval: args.run.progress_interval,
            }),
            args.run,
        ),
    };
    let job = match job {
        Ok(job) => job,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::FAILURE;
        }
    };
    let program = match std::env::current_exe() {
        Ok(program) => program,
        Err(err) => {
            eprintln!("error: cannot find this program's own executable: {err}");
            return ExitCode::FAILURE;
        }
    };
    let process = TransferProcess {
        program,
        memory_limit: run.memory_limit,
        grace: Duration::from_secs(10),
    };
    let json = run.json;
    let result = process
        .run(&job, |event| print_event(event, json), interrupted())
        .await;
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(err) => {
            // A failure the child reported was already printed as an event in JSON mode.
            if json && matches!(err, transfer::TransferError::Failed { .. }) {
                return ExitCode::FAILURE;
            }
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run_agent(args: agent::RunArgs) -> ExitCode {
    match agent::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(%err, "the node agent stopped");
            // Kubernetes shows this file's contents as the container's last state.
            let _ = fs::write("/dev/termination-log", err.to_string());
            ExitCode::FAILURE
        }
    }
}

fn run_init(args: &RepositoryArgs) -> ExitCode {
    let result = args.config().and_then(|config| {
        let location = config.location.restic_identifier();
        let existed =
            Repository::open(&config, OpenMode::Existing, ProgressCounters::new()).is_ok();
        if existed {
            return Ok(format!("the repository at {location} exists already"));
        }
        Repository::open(&config, OpenMode::CreateIfMissing, ProgressCounters::new())
            .map(|_| format!("created the repository at {location}"))
            .map_err(|err| err.to_string())
    });
    match result {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run_transfer(args: &TransferArgs) -> ExitCode {
    if let Some(limit) = args.memory_limit
        && let Err(err) = subprocess::limit_memory(limit)
    {
        eprintln!("error: cannot set the memory limit to {limit} bytes: {err}");
        return ExitCode::FAILURE;
    }
    if transfer::run_stdio() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn interrupted() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// Prints an event; a closed stdout (a pipe whose reader went away) is not an error.
fn print_event(event: &Event, json: bool) {
    let line = if json {
        serde_json::to_string(event).ok()
    } else {
        match event {
            // Nothing to show before the source is scanned or the snapshot is read; a wait on
            // the object store has its own line.
            Event::Progress(report) if report.counters == ProgressSnapshot::default() => None,
            Event::Progress(report) => Some(progress_line(report)),
            Event::Waiting(wait) => Some(format!("{} request: {wait}", wait.operation)),
            Event::Warning { message } => Some(format!("warning: {message}")),
            Event::Completed(Outcome::Backup(outcome)) => Some(backup_summary(outcome)),
            Event::Completed(Outcome::Restore(outcome)) => Some(restore_summary(outcome)),
            Event::Failed { .. } => None,
        }
    };
    if let Some(line) = line {
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    }
}

fn progress_line(report: &ProgressReport) -> String {
    let counters = &report.counters;
    let percent = if counters.bytes_total > 0 {
        format!(
            " ({:.0}%)",
            100.0 * counters.bytes_done as f64 / counters.bytes_total as f64
        )
    } else {
        String::new()
    };
    let eta = report
        .eta_seconds
        .map(|eta| format!(", ETA {}", clock(eta)))
        .unwrap_or_default();
    let waiting = report
        .waiting
        .as_ref()
        .map(|wait| format!("; {wait}"))
        .unwrap_or_default();
    format!(
        "[{}] {} / {}{percent}, {} / {} files, {}/s{eta}{waiting}",
        clock(report.elapsed_seconds as u64),
        bytes(counters.bytes_done),
        bytes(counters.bytes_total),
        counters.files_done,
        counters.files_total,
        bytes(report.bytes_per_second),
    )
}

fn backup_summary(outcome: &BackupOutcome) -> String {
    let Some(id) = &outcome.snapshot_id else {
        return "the source is empty, so no snapshot was taken".to_owned();
    };
    let parent = outcome
        .parent
        .as_deref()
        .map(|parent| format!(" against parent {}", short(parent)))
        .unwrap_or_default();
    format!(
        "snapshot {} saved{parent}: {} files ({} new, {} changed, {} unchanged), {} dirs, {} read, {} of new data\nsnapshot ID: {id}",
        short(id),
        outcome.files,
        outcome.files_new,
        outcome.files_changed,
        outcome.files_unmodified,
        outcome.dirs,
        bytes(outcome.bytes),
        bytes(outcome.data_added),
    )
}

fn restore_summary(outcome: &RestoreOutcome) -> String {
    format!(
        "snapshot {} restored: {} files, {} dirs, {}",
        short(&outcome.snapshot_id),
        outcome.files,
        outcome.dirs,
        bytes(outcome.bytes),
    )
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

fn clock(seconds: u64) -> String {
    format!(
        "{}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

fn bytes(count: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = count as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{count} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn tags_must_be_key_value_pairs() {
        assert_eq!(parse_tag("ns=shop"), Ok(("ns".into(), "shop".into())));
        assert_eq!(parse_tag("empty="), Ok(("empty".into(), String::new())));
        assert!(parse_tag("novalue").is_err());
        assert!(parse_tag("=x").is_err());
        assert!(parse_tag("a=b,c=d").is_err());
    }

    #[test]
    fn byte_counts_read_naturally() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(1046082964), "997.6 MiB");
        assert_eq!(clock(3725), "1:02:05");
    }
}
