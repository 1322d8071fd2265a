//! `ferry-restore-helper`: the first init container of a restored pod. See
//! `ferry_node_agent::restore_helper`.

use std::process::ExitCode;

use clap::Parser;
use ferry_node_agent::restore_helper::{self, Args};
use tracing::warn;

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .init();
    if let Err(err) = restore_helper::exit_on_termination_signals() {
        warn!("cannot handle SIGTERM, the pod may take its whole grace period to stop: {err}");
    }
    restore_helper::run(&args)
}
