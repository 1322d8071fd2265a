//! `ferry`: the command line of Ferry's users. It installs Ferry, creates and reads Backups,
//! Restores, Schedules, storage locations and repositories, follows a backup or restore with
//! live progress, and reads logs and results through DownloadRequests and the server's state
//! through ServerStatusRequests.

mod backup;
mod connect;
mod describe;
mod download;
mod error;
mod install;
mod location;
mod operation;
mod output;
mod remove;
mod repository;
mod request;
mod restore;
mod schedule;
mod selection;
mod version;
mod wait;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use error::CliError;
use output::Format;

/// Ferry: back up and restore the data of Kubernetes pod volumes.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, disable_help_subcommand = true)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Flags every command takes, as kubectl's.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// The kubeconfig file; else $KUBECONFIG, else ~/.kube/config, else the pod's service
    /// account.
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use; else its current context.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The namespace Ferry is installed in.
    #[arg(
        short = 'n',
        long,
        global = true,
        env = "FERRY_NAMESPACE",
        default_value = "ferry"
    )]
    pub namespace: String,
    /// How reads print: aligned columns, or the objects as JSON or YAML.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install Ferry into the cluster: its CRDs, RBAC, coordinator and node agents.
    Install(Box<install::InstallArgs>),
    /// Remove Ferry from the cluster; the data in the storage locations stays.
    Uninstall(install::UninstallArgs),
    /// Create, read and delete Backups.
    #[command(subcommand)]
    Backup(backup::BackupCommand),
    /// Create, read and delete Restores.
    #[command(subcommand)]
    Restore(restore::RestoreCommand),
    /// Create, read, pause and delete Schedules.
    #[command(subcommand)]
    Schedule(schedule::ScheduleCommand),
    /// Read and create storage locations, and choose the default one.
    #[command(subcommand)]
    Location(location::LocationCommand),
    /// Read the repositories that hold the volume data.
    #[command(subcommand)]
    Repository(repository::RepositoryCommand),
    /// The version of this client, and of the coordinator and node agents in the cluster.
    Version(version::VersionArgs),
}

/// Runs `ferry` with the process's arguments; every failure is one line on stderr and exit
/// code 1.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => {
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            let rendered = err.render().to_string();
            eprintln!(
                "{}",
                rendered.lines().next().unwrap_or("error: bad arguments")
            );
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let global = cli.global;
    match cli.command {
        Command::Install(args) => install::install(&global, *args).await,
        Command::Uninstall(args) => install::uninstall(&global, args).await,
        Command::Version(args) => version::run(&global, args).await,
        Command::Backup(command) => backup::run(&connect::ferry(&global).await?, command).await,
        Command::Restore(command) => restore::run(&connect::ferry(&global).await?, command).await,
        Command::Schedule(command) => schedule::run(&connect::ferry(&global).await?, command).await,
        Command::Location(command) => location::run(&connect::ferry(&global).await?, command).await,
        Command::Repository(command) => {
            repository::run(&connect::ferry(&global).await?, command).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_command_and_flag_is_documented() {
        Cli::command().debug_assert();
        fn check(command: &clap::Command, path: &str) {
            for arg in command.get_arguments() {
                if matches!(arg.get_id().as_str(), "help" | "version") {
                    continue;
                }
                assert!(
                    arg.get_help().is_some(),
                    "{path} --{} has no help",
                    arg.get_id()
                );
            }
            for sub in command.get_subcommands() {
                let path = format!("{path} {}", sub.get_name());
                assert!(sub.get_about().is_some(), "{path} has no help");
                check(sub, &path);
            }
        }
        check(&Cli::command(), "ferry");
    }
}
