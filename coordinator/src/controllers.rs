//! The coordinator's controllers: what each watches, and the one way each is run, with a
//! growing pause after a failed reconcile.

use std::future::Future;
use std::sync::Arc;

use ferry_shared::admin::Readiness;
use ferry_shared::crd::{
    Backup, BackupRepository, BackupStorageLocation, DownloadRequest, OperationPhase,
    PodVolumeBackup, PodVolumeRestore, Restore, Schedule, ServerStatusRequest,
};
use ferry_shared::names::label;
use ferry_shared::runtime;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backoff;
use crate::context::Context;
use crate::error::Error;
use crate::metrics::StateMetrics;
use crate::{backup, downloads, location, repository, restore, schedule, server_status};

/// The coordinator's controllers, each with what it watches.
pub struct Controllers {
    backups: Controller<Backup>,
    restores: Controller<Restore>,
    repositories: Controller<BackupRepository>,
    locations: Controller<BackupStorageLocation>,
    schedules: Controller<Schedule>,
    downloads: Controller<DownloadRequest>,
    server_statuses: Controller<ServerStatusRequest>,
}

impl Controllers {
    pub fn new(client: &Client, namespace: &str) -> Self {
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
                        backup.phase() == OperationPhase::InProgress
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
            downloads: Controller::new(Api::namespaced(client.clone(), namespace), config()),
            server_statuses: Controller::new(Api::namespaced(client.clone(), namespace), config()),
        }
    }

    /// The metrics read from the caches of Backups, Schedules and storage locations.
    pub fn state_metrics(&self) -> Result<StateMetrics, prometheus::Error> {
        StateMetrics::new(
            self.backups.store(),
            self.schedules.store(),
            self.locations.store(),
        )
    }

    /// Marks the coordinator ready once every controller's watches have synced.
    pub fn ready_when_synced(&self, readiness: Readiness) {
        let stores = (
            self.backups.store(),
            self.restores.store(),
            self.repositories.store(),
            self.locations.store(),
            self.schedules.store(),
            self.downloads.store(),
            self.server_statuses.store(),
        );
        tokio::spawn(async move {
            if runtime::synced(&stores.0).await
                && runtime::synced(&stores.1).await
                && runtime::synced(&stores.2).await
                && runtime::synced(&stores.3).await
                && runtime::synced(&stores.4).await
                && runtime::synced(&stores.5).await
                && runtime::synced(&stores.6).await
            {
                info!("watches synced; ready");
                readiness.set_ready();
            }
        });
    }

    /// Runs every controller until `stop`, letting each finish the reconciles under way.
    pub async fn run(self, ctx: Arc<Context>, stop: CancellationToken) {
        tokio::join!(
            drive(self.backups, backup::reconcile, &ctx, &stop),
            drive(self.restores, restore::reconcile, &ctx, &stop),
            drive(self.repositories, repository::reconcile, &ctx, &stop),
            drive(self.locations, location::reconcile, &ctx, &stop),
            drive(self.schedules, schedule::reconcile, &ctx, &stop),
            drive(self.downloads, downloads::reconcile, &ctx, &stop),
            drive(self.server_statuses, server_status::reconcile, &ctx, &stop),
        );
    }
}

/// Runs one controller with `reconcile` until `stop`.
async fn drive<K, F, Fut>(
    controller: Controller<K>,
    reconcile: F,
    ctx: &Arc<Context>,
    stop: &CancellationToken,
) where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    F: Fn(Arc<K>, Arc<Context>) -> Fut + Copy + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
{
    controller
        .graceful_shutdown_on(stop.clone().cancelled_owned())
        .run(
            move |object, ctx| settled(object, ctx, reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {})
        .await;
}

/// Runs `reconcile`, and forgets the object's earlier failures when it succeeds.
async fn settled<K, F, Fut>(
    object: Arc<K>,
    ctx: Arc<Context>,
    reconcile: F,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()>,
    F: FnOnce(Arc<K>, Arc<Context>) -> Fut,
    Fut: Future<Output = Result<Action, Error>>,
{
    let key = backoff::key(&*object);
    let result = reconcile(object, ctx.clone()).await;
    if result.is_ok() {
        ctx.backoff.succeeded(&key);
    }
    result
}

fn error_policy<K: Resource<DynamicType = ()>>(
    object: Arc<K>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let pause = ctx.backoff.failed(backoff::key(&*object));
    warn!(name = %object.name_any(), %error, retry_in = ?pause, "reconcile failed");
    Action::requeue(pause)
}
