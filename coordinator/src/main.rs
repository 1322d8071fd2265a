//! `ferry-coordinator`: the coordinator's Deployment process.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ferry_coordinator::{RunArgs, jobs};

/// Ferry's coordinator: turns Backup, Restore and Schedule objects into pod-volume work, and
/// keeps repositories, storage locations and the backup catalogue in order.
#[derive(Debug, Parser)]
#[command(name = "ferry-coordinator", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controllers (the Deployment's command).
    Run(Box<RunArgs>),
    /// Run one repository job read as JSON from stdin; the coordinator starts this itself.
    #[command(name = "repository-job", hide = true)]
    RepositoryJob {
        /// Memory cap of this process in bytes.
        #[arg(long)]
        memory_limit: Option<u64>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::RepositoryJob { memory_limit } => jobs::run_child(memory_limit),
        Command::Run(args) => {
            ferry_shared::runtime::init_logging(args.log_format);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(runtime) => runtime,
                Err(err) => {
                    eprintln!("ferry-coordinator: cannot start the async runtime: {err}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(ferry_coordinator::run(*args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!(%err, "coordinator stopped");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent_and_every_run_flag_has_an_environment_twin() {
        Cli::command().debug_assert();
        let command = Cli::command();
        let run = command.find_subcommand("run").expect("run");
        for arg in run.get_arguments() {
            if arg.get_id() == "help" {
                continue;
            }
            assert!(
                arg.get_env().is_some(),
                "--{} has no environment twin",
                arg.get_id()
            );
            assert!(arg.get_help().is_some(), "--{} has no help", arg.get_id());
        }
    }
}
