//! `ferry-node-agent`: see `ferry_node_agent::cli`.

use std::process::ExitCode;

use clap::Parser;
use ferry_node_agent::cli::{self, Cli};

fn main() -> ExitCode {
    cli::run(Cli::parse())
}
