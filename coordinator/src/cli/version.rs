//! `ferry version`: this client's version, and through a ServerStatusRequest the
//! coordinator's, with each node agent's version and readiness.

use std::time::Duration;

use clap::Args;
use ferry_shared::crd::{
    ServerStatusRequest, ServerStatusRequestPhase, ServerStatusRequestSpec,
    ServerStatusRequestStatus,
};
use kube::api::{DeleteParams, PostParams};
use kube::runtime::wait::await_condition;
use serde::Serialize;

use super::Global;
use super::connect::{self, Ferry};
use super::describe::Description;
use super::error::CliError;
use super::output::{Format, Table, age, print, time, write_out};

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
    let server = ask(&ferry, args.timeout).await?;
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

/// Asks the coordinator through a ServerStatusRequest, and deletes the request.
async fn ask(ferry: &Ferry, timeout: Duration) -> Result<ServerStatusRequestStatus, CliError> {
    let api = ferry.api::<ServerStatusRequest>();
    let mut request = ServerStatusRequest::new("", ServerStatusRequestSpec {});
    request.metadata.name = None;
    request.metadata.generate_name = Some("ferry-version-".to_owned());
    let created = api
        .create(&PostParams::default(), &request)
        .await
        .map_err(CliError::from_kube)?;
    let name = created.metadata.name.clone().unwrap_or_default();
    let answered = tokio::time::timeout(
        timeout,
        await_condition(
            api.clone(),
            &name,
            |request: Option<&ServerStatusRequest>| {
                request.is_none_or(|r| r.phase() == ServerStatusRequestPhase::Processed)
            },
        ),
    )
    .await;
    let _ = api.delete(&name, &DeleteParams::default()).await;
    answered
        .map_err(|_| CliError::NoAnswer(timeout))?
        .map_err(|err| CliError::Refused(format!("lost the watch on the request: {err}")))?
        .and_then(|request| request.status)
        .ok_or_else(|| CliError::Refused("the status request was deleted unanswered".into()))
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
