//! `ferry-coordinator`: turns Backup and Restore objects into pod-volume work. Its controllers
//! are not part of this build yet; until they are, it says so instead of pretending to run.

use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "ferry-coordinator",
    version,
    about = "Ferry's coordinator (its controllers are not built yet)"
)]
struct Cli {}

fn main() -> ExitCode {
    Cli::parse();
    eprintln!(
        "ferry-coordinator {}: the Backup and Restore controllers are not part of this build yet; \
         use `ferry-node-agent backup` and `ferry-node-agent restore` for one-off transfers",
        env!("CARGO_PKG_VERSION")
    );
    ExitCode::FAILURE
}
