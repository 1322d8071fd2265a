//! The coordinator: turns Backup, Restore and Schedule objects into PodVolumeBackups and
//! PodVolumeRestores, keeps repositories and storage locations in order, and keeps the
//! catalogue of backups in object storage.

mod backup;
pub mod config;
mod context;
mod error;
pub mod jobs;
mod leader;
mod location;
mod metrics;
mod overdue;
mod password;
mod plan;
mod protected;
mod repository;
mod restore;
mod schedule;

use std::sync::Arc;
use std::time::Duration;

use ferry_shared::admin::Readiness;
use ferry_shared::crd::{
    Backup, BackupRepository, BackupStorageLocation, PodVolumeBackup, PodVolumeRestore, Restore,
    Schedule,
};
use ferry_shared::names::label;
use ferry_shared::runtime::{self, StartError};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

pub use config::RunArgs;

use context::Context;
use jobs::JobRunner;
use metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("cannot make sure the repository password exists: {0}")]
    Password(String),
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
    let client = Client::try_default().await.map_err(StartError::Connect)?;
    let metrics = Metrics::new().map_err(StartError::Metrics)?;
    let readiness = Readiness::default();
    let shutdown = CancellationToken::new();
    let admin = runtime::start_admin(
        settings.metrics_address,
        metrics.registry(),
        readiness.clone(),
        &shutdown,
    )
    .await?;
    tokio::spawn(runtime::stop_on_signals(shutdown.clone()));
    let Some(lost) = lease(&client, &settings, &shutdown).await else {
        return Ok(());
    };

    password::ensure(&client, &settings.namespace)
        .await
        .map_err(CoordinatorError::Password)?;
    let jobs = JobRunner {
        program: std::env::current_exe().map_err(StartError::Executable)?,
        memory_limit: settings.maintenance_memory_limit,
        timeout: settings.repository_job_timeout,
        retries: metrics.storage_retries(),
    };
    let namespace = settings.namespace.clone();
    let ctx = Arc::new(Context::new(client.clone(), settings, metrics, jobs));
    let controllers = Controllers::new(&client, &namespace);
    controllers.ready_when_synced(readiness);
    info!(%namespace, "coordinator started");
    let stop = CancellationToken::new();
    let running = tokio::spawn(controllers.run(ctx, stop.clone()));

    let lost_lease = tokio::select! {
        () = shutdown.cancelled() => false,
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
    shutdown.cancel();
    runtime::admin_stopped(admin).await;
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

/// The coordinator's five controllers, each with what it watches.
struct Controllers {
    backups: Controller<Backup>,
    restores: Controller<Restore>,
    repositories: Controller<BackupRepository>,
    locations: Controller<BackupStorageLocation>,
    schedules: Controller<Schedule>,
}

impl Controllers {
    fn new(client: &Client, namespace: &str) -> Self {
        let config = watcher::Config::default;
        let backups = Controller::new(
            Api::<Backup>::namespaced(client.clone(), namespace),
            config(),
        )
        .owns(
            Api::<PodVolumeBackup>::namespaced(client.clone(), namespace),
            config(),
        );
        let waiting = backups.store();
        // A Backup that waits for its repositories goes on as soon as one becomes ready.
        let backups = backups.watches(
            Api::<BackupRepository>::namespaced(client.clone(), namespace),
            config(),
            move |repository: BackupRepository| {
                waiting
                    .state()
                    .into_iter()
                    .filter(|backup| {
                        backup.phase() == ferry_shared::crd::OperationPhase::InProgress
                            && backup.spec.storage_location.as_ref()
                                == Some(&repository.spec.storage_location)
                    })
                    .map(|backup| ObjectRef::from_obj(&*backup))
                    .collect::<Vec<_>>()
            },
        );
        let restores = Controller::new(
            Api::<Restore>::namespaced(client.clone(), namespace),
            config(),
        )
        .owns(
            Api::<PodVolumeRestore>::namespaced(client.clone(), namespace),
            config(),
        );
        let waiting = restores.store();
        // A restored pod's binding lets its PodVolumeRestores be labelled for its node.
        let restores = restores.watches(
            Api::<Pod>::all(client.clone()),
            config().labels(label::RESTORE_UID),
            move |pod: Pod| {
                let uid = pod.labels().get(label::RESTORE_UID).cloned();
                waiting
                    .state()
                    .into_iter()
                    .filter(|restore| restore.uid() == uid)
                    .map(|restore| ObjectRef::from_obj(&*restore))
                    .collect::<Vec<_>>()
            },
        );
        Self {
            backups,
            restores,
            repositories: Controller::new(Api::namespaced(client.clone(), namespace), config()),
            locations: Controller::new(Api::namespaced(client.clone(), namespace), config()),
            schedules: Controller::new(Api::namespaced(client.clone(), namespace), config()),
        }
    }

    /// Marks the coordinator ready once every controller's watches have synced.
    fn ready_when_synced(&self, readiness: Readiness) {
        let stores = (
            self.backups.store(),
            self.restores.store(),
            self.repositories.store(),
            self.locations.store(),
            self.schedules.store(),
        );
        tokio::spawn(async move {
            if runtime::synced(&stores.0).await
                && runtime::synced(&stores.1).await
                && runtime::synced(&stores.2).await
                && runtime::synced(&stores.3).await
                && runtime::synced(&stores.4).await
            {
                info!("watches synced; ready");
                readiness.set_ready();
            }
        });
    }

    /// Runs every controller until `stop`, letting each finish the reconciles under way.
    async fn run(self, ctx: Arc<Context>, stop: CancellationToken) {
        futures::future::join5(
            drive(self.backups, backup::reconcile, &ctx, &stop),
            drive(self.restores, restore::reconcile, &ctx, &stop),
            drive(self.repositories, repository::reconcile, &ctx, &stop),
            drive(self.locations, location::reconcile, &ctx, &stop),
            drive(self.schedules, schedule::reconcile, &ctx, &stop),
        )
        .await;
    }
}

/// Runs one controller with `reconcile` until `stop`.
async fn drive<K, F, Fut>(
    controller: Controller<K>,
    reconcile: F,
    ctx: &Arc<Context>,
    stop: &CancellationToken,
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    F: Fn(Arc<K>, Arc<Context>) -> Fut + Copy + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<kube::runtime::controller::Action, error::Error>>
        + Send
        + 'static,
{
    controller
        .graceful_shutdown_on(stop.clone().cancelled_owned())
        .run(
            move |object, ctx| error::settled(object, ctx, reconcile),
            error::error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {})
        .await;
}
