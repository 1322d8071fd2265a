//! `ferry-node-agent run`: the DaemonSet process. It watches the PodVolumeBackups and
//! PodVolumeRestores labelled for its node, and the pods on its node, runs their transfers in
//! child processes, and serves its metrics.

mod config;
mod context;
mod inputs;
mod kinds;
mod metrics;
mod transfers;

use std::sync::Arc;
use std::time::Duration;

use ferry_shared::admin::Readiness;
use ferry_shared::crd::{PodVolumeBackup, PodVolumeRestore};
use ferry_shared::names;
use ferry_shared::runtime::{self, StartError};
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
use metrics::Metrics;

/// How long transfers get to record their interruption after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Runs the agent until SIGTERM or SIGINT.
pub async fn run(settings: RunArgs) -> Result<(), StartError> {
    let client = Client::try_default().await.map_err(StartError::Connect)?;
    let metrics = Metrics::new().map_err(StartError::Metrics)?;
    let readiness = Readiness::default();
    let shutdown = CancellationToken::new();
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
        shutdown.clone(),
    ));

    let admin = runtime::start_admin(
        settings.metrics_address,
        metrics.registry(),
        readiness.clone(),
        &shutdown,
    )
    .await?;
    tokio::spawn(runtime::stop_on_signals(shutdown.clone()));

    let selector = format!("{}={}", names::label::NODE, settings.node_name);
    let backups = Controller::new(
        Api::<PodVolumeBackup>::namespaced(client.clone(), &settings.namespace),
        watcher::Config::default().labels(&selector),
    );
    let restores = Controller::new(
        Api::<PodVolumeRestore>::namespaced(client.clone(), &settings.namespace),
        watcher::Config::default().labels(&selector),
    );
    let backup_store = backups.store();
    let restore_store = restores.store();
    let waiting_restores = restore_store.clone();
    // A restore waits for its pod's restore-wait container; a change of a pod on this node
    // looks again at the restores of that pod.
    let restores = restores.watches(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default().fields(&format!("spec.nodeName={}", settings.node_name)),
        move |pod: Pod| {
            let uid = pod.uid();
            waiting_restores
                .state()
                .into_iter()
                .filter(|restore| Some(&restore.spec.pod.uid) == uid.as_ref())
                .map(|restore| ObjectRef::from_obj(&*restore))
                .collect::<Vec<_>>()
        },
    );
    {
        let readiness = readiness.clone();
        tokio::spawn(async move {
            if runtime::synced(&backup_store).await && runtime::synced(&restore_store).await {
                info!("watches synced; ready");
                readiness.set_ready();
            }
        });
    }

    info!(node = %settings.node_name, namespace = %settings.namespace, "node agent started");
    // The watches stay up until the running transfers have recorded how they ended.
    let watches = CancellationToken::new();
    let backups = backups
        .graceful_shutdown_on(watches.clone().cancelled_owned())
        .run(
            transfers::reconcile::<PodVolumeBackup>,
            transfers::error_policy::<PodVolumeBackup>,
            ctx.clone(),
        )
        .for_each(|_| async {});
    let restores = restores
        .graceful_shutdown_on(watches.clone().cancelled_owned())
        .run(
            transfers::reconcile::<PodVolumeRestore>,
            transfers::error_policy::<PodVolumeRestore>,
            ctx.clone(),
        )
        .for_each(|_| async {});
    let controllers = tokio::spawn(async move {
        tokio::join!(backups, restores);
    });

    shutdown.cancelled().await;
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
    runtime::admin_stopped(admin).await;
    Ok(())
}
