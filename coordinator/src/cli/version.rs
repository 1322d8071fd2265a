//! `ferry version`: this client's version, and through a ServerStatusRequest the
//! coordinator's, with each node agent's version and readiness.

use std::time::Duration;

use clap::Args;
use ferry_shared::crd::{
    ServerStatusRequest, ServerStatusRequestPhase, ServerStatusRequestSpec,
    ServerStatusRequestStatus,
};
use serde::Serialize;

use super::Global;
use super::connect::{self, Ferry};
use super::describe::Description;
use super::error::CliError;
use super::output::{Format, Table, age, print, time, write_out};
use super::request::ask;

#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Only the client's version; the cluster is not asked.
    #[arg(long)]
    client_only: bool,
    /// How long the coordinator has to answer.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// What `version` reports.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Versions {
    client_version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    server: Option<ServerStatusRequestStatus>,
}

pub async fn run(global: &Global, args: VersionArgs) -> Result<(), CliError> {
    let client_version = env!("CARGO_PKG_VERSION");
    if args.client_only {
        let versions = Versions {
            client_version,
            server: None,
        };
        return print(&[versions], true, global.output, |_| {
            client_table(client_version)
        });
    }
    if global.output == Format::Table {
        write_out(&client_table(client_version).render())?;
    }
    let ferry = connect::ferry(global).await?;
    let server = ask_server(&ferry, args.timeout).await?;
    if global.output != Format::Table {
        let versions = Versions {
            client_version,
            server: Some(server),
        };
        return print(&[versions], true, global.output, |_| Table::new(&[]));
    }
    write_out(&server_text(&server))
}

fn client_table(version: &str) -> Table {
    let mut table = Table::new(&["CLIENT VERSION"]);
    table.row(vec![version.to_owned()]);
    table
}

/// Asks the coordinator through a ServerStatusRequest.
async fn ask_server(
    ferry: &Ferry,
    timeout: Duration,
) -> Result<ServerStatusRequestStatus, CliError> {
    let request = ServerStatusRequest::new("", ServerStatusRequestSpec {});
    let answered = |r: &ServerStatusRequest| r.phase() == ServerStatusRequestPhase::Processed;
    let answer = ask(ferry, request, "ferry-version-", timeout, answered).await?;
    Ok(answer.status.unwrap_or_default())
}

fn server_text(server: &ServerStatusRequestStatus) -> String {
    let mut description = Description::default();
    description
        .field(
            "Server version",
            server.server_version.clone().unwrap_or_default(),
        )
        .field("Server started", time(server.server_start_time.as_ref()));
    let mut text = format!("\n{}\n", description.render());
    if server.node_agents.is_empty() {
        text.push_str("No node agents: is the DaemonSet running?\n");
        return text;
    }
    let mut table = Table::new(&["NODE", "AGENT VERSION", "READY", "LAST SEEN"]);
    for agent in &server.node_agents {
        table.row(vec![
            agent.node.clone(),
            agent.version.clone().unwrap_or_else(|| "-".into()),
            agent.ready.to_string(),
            agent
                .last_seen
                .as_ref()
                .map_or_else(|| "never".to_owned(), |t| format!("{} ago", age(Some(t)))),
        ]);
    }
    text.push_str(&table.render());
    text
}
