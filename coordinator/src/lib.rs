//! The coordinator: turns Backup, Restore and Schedule objects into PodVolumeBackups and
//! PodVolumeRestores, keeps repositories and storage locations in order, and keeps the
//! catalogue of backups in object storage; answers DownloadRequests and ServerStatusRequests.

mod backoff;
mod backup;
pub mod cli;
pub mod config;
mod context;
mod controllers;
mod downloads;
mod error;
mod hooks;
pub mod jobs;
mod leader;
mod location;
mod metrics;
mod overdue;
mod password;
mod plan;
mod protected;
mod repository;
mod resources;
mod restore;
mod schedule;
mod server_status;

use std::sync::Arc;
use std::time::Duration;

use ferry_shared::runtime::{Service, StartError};
use kube::Client;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

pub use config::RunArgs;

use context::{Context, Server};
use controllers::Controllers;
use downloads::DownloadTable;
use jobs::JobRunner;
use metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("cannot make sure the repository password exists: {0}")]
    Password(#[from] password::PasswordError),
    #[error("lost the leader Lease; exiting so that another replica leads")]
    LostLease,
}

/// A Lease identity for a replica that was given none: unique even where every container's
/// process ID is the same.
fn random_identity() -> String {
    let mut bytes = [0u8; 6];
    let _ = getrandom::fill(&mut bytes);
    format!("ferry-coordinator-{}", hex::encode(bytes))
}

/// Runs the coordinator until SIGTERM or SIGINT, or until it loses the leader Lease.
pub async fn run(settings: RunArgs) -> Result<(), CoordinatorError> {
    let started = ferry_shared::time::now();
    let client = Client::try_default().await.map_err(StartError::Connect)?;
    let metrics = Metrics::new().map_err(StartError::Metrics)?;
    let downloads = DownloadTable::default();
    let service = Service::start(
        settings.metrics_address,
        metrics.registry(),
        downloads.router(),
    )
    .await?;
    let Some(lost) = lease(&client, &settings, &service.shutdown).await else {
        return Ok(());
    };

    password::ensure(&client, &settings.namespace).await?;
    let jobs = JobRunner {
        program: std::env::current_exe().map_err(StartError::Executable)?,
        memory_limit: settings.maintenance_memory_limit,
        timeout: settings.repository_job_timeout,
        retries: metrics.storage_retries(),
    };
    let namespace = settings.namespace.clone();
    let controllers = Controllers::new(&client, &namespace);
    let state = controllers.state_metrics().map_err(StartError::Metrics)?;
    metrics.watch_state(state).map_err(StartError::Metrics)?;
    let server = Server { started, downloads };
    let ctx = Arc::new(Context::new(
        client.clone(),
        settings,
        metrics,
        jobs,
        server,
    ));
    controllers.ready_when_synced(service.readiness.clone());
    info!(%namespace, "coordinator started");
    let stop = CancellationToken::new();
    let running = tokio::spawn(controllers.run(ctx, stop.clone()));

    let lost_lease = tokio::select! {
        () = service.shutdown.cancelled() => false,
        () = lost.cancelled() => true,
    };
    info!("stopping");
    stop.cancel();
    if tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .is_err()
    {
        error!("controllers did not stop in time");
    }
    service.stop().await;
    if lost_lease {
        return Err(CoordinatorError::LostLease);
    }
    Ok(())
}

/// With `--leader-elect`, waits for the Lease and returns the token cancelled when it is lost,
/// or None when the coordinator was stopped first; without, a token never cancelled.
async fn lease(
    client: &Client,
    settings: &RunArgs,
    shutdown: &CancellationToken,
) -> Option<CancellationToken> {
    if !settings.leader_elect {
        return Some(CancellationToken::new());
    }
    let lease = leader::LeaseSettings {
        namespace: settings.namespace.clone(),
        name: settings.lease_name.clone(),
        identity: settings.identity.clone().unwrap_or_else(random_identity),
        duration: settings.lease_duration,
    };
    leader::acquire(client.clone(), lease, shutdown).await
}
