//! `ferry-node-agent run`: the DaemonSet process. It watches the PodVolumeBackups and
//! PodVolumeRestores labelled for its node, and the pods on its node, runs their transfers in
//! child processes, serves its metrics, and renews its heartbeat Lease.

mod config;
mod context;
mod heartbeat;
mod inputs;
mod kinds;
mod metrics;
mod transfers;

use std::sync::Arc;
use std::time::Duration;

use ferry_shared::admin::Readiness;
use ferry_shared::crd::{PodVolumeBackup, PodVolumeRestore};
use ferry_shared::names;
use ferry_shared::runtime::{self, Service, StartError};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use config::RunArgs;
pub use ferry_shared::runtime::{LogFormat, init_logging};

use crate::transfer::TransferProcess;
use context::Context;
use kinds::TransferKind;
use metrics::Metrics;

/// How long transfers get to record their interruption after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Runs the agent until SIGTERM or SIGINT.
pub async fn run(settings: RunArgs) -> Result<(), StartError> {
    let client = Client::try_default().await.map_err(StartError::Connect)?;
    let metrics = Metrics::new().map_err(StartError::Metrics)?;
    let service = Service::start(
        settings.metrics_address,
        metrics.registry(),
        axum::Router::new(),
    )
    .await?;
    let process = TransferProcess {
        program: std::env::current_exe().map_err(StartError::Executable)?,
        memory_limit: settings.transfer_memory_limit,
        grace: Duration::from_secs(10),
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        &settings,
        process,
        metrics.clone(),
        service.shutdown.clone(),
    ));

    let controllers = Controllers::new(&client, &settings);
    controllers.ready_when_synced(service.readiness.clone());
    let heartbeat = heartbeat::Heartbeat {
        namespace: settings.namespace.clone(),
        node: settings.node_name.clone(),
        interval: settings.heartbeat_interval,
    };
    let heartbeat = tokio::spawn(heartbeat.keep(
        client.clone(),
        service.readiness.clone(),
        service.shutdown.clone(),
    ));
    info!(node = %settings.node_name, namespace = %settings.namespace, "node agent started");
    // The watches stay up until the running transfers have recorded how they ended.
    let watches = CancellationToken::new();
    let controllers = tokio::spawn(controllers.run(ctx.clone(), watches.clone()));

    service.shutdown.cancelled().await;
    info!("stopping: recording running transfers for retry");
    if tokio::time::timeout(SHUTDOWN_GRACE, ctx.wait_for_transfers())
        .await
        .is_err()
    {
        warn!("transfers did not stop in time");
    }
    watches.cancel();
    if let Err(err) = controllers.await {
        error!(%err, "a controller task failed");
    }
    if let Err(err) = heartbeat.await {
        error!(%err, "the heartbeat task failed");
    }
    service.stop().await;
    Ok(())
}

/// The agent's two controllers, one per transfer kind, each watching the transfers labelled
/// for this node.
struct Controllers {
    backups: Controller<PodVolumeBackup>,
    restores: Controller<PodVolumeRestore>,
}

impl Controllers {
    fn new(client: &Client, settings: &RunArgs) -> Self {
        let selector = format!("{}={}", names::label::NODE, settings.node_name);
        let labelled = || watcher::Config::default().labels(&selector);
        let backups = Controller::new(
            Api::<PodVolumeBackup>::namespaced(client.clone(), &settings.namespace),
            labelled(),
        );
        let restores = Controller::new(
            Api::<PodVolumeRestore>::namespaced(client.clone(), &settings.namespace),
            labelled(),
        );
        let waiting = restores.store();
        // A restore waits for its pod's restore-wait container; a change of a pod on this node
        // looks again at the restores of that pod.
        let restores = restores.watches(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default().fields(&format!("spec.nodeName={}", settings.node_name)),
            move |pod: Pod| {
                let uid = pod.uid();
                waiting
                    .state()
                    .into_iter()
                    .filter(|restore| Some(&restore.spec.pod.uid) == uid.as_ref())
                    .map(|restore| ObjectRef::from_obj(&*restore))
                    .collect::<Vec<_>>()
            },
        );
        Self { backups, restores }
    }

    /// Marks the agent ready once both watches have synced.
    fn ready_when_synced(&self, readiness: Readiness) {
        let (backups, restores) = (self.backups.store(), self.restores.store());
        tokio::spawn(async move {
            if runtime::synced(&backups).await && runtime::synced(&restores).await {
                info!("watches synced; ready");
                readiness.set_ready();
            }
        });
    }

    /// Runs both controllers until `watches` is cancelled.
    async fn run(self, ctx: Arc<Context>, watches: CancellationToken) {
        tokio::join!(
            drive(self.backups, &ctx, &watches),
            drive(self.restores, &ctx, &watches)
        );
    }
}

/// Runs one transfer kind's controller until `watches` is cancelled.
async fn drive<K: TransferKind>(
    controller: Controller<K>,
    ctx: &Arc<Context>,
    watches: &CancellationToken,
) {
    controller
        .graceful_shutdown_on(watches.clone().cancelled_owned())
        .run(
            transfers::reconcile::<K>,
            transfers::error_policy::<K>,
            ctx.clone(),
        )
        .for_each(|_| async {})
        .await;
}
