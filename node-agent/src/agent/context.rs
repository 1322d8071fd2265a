//! What every transfer task of the agent shares: the client, the settings, the transfer
//! slots, the metrics, and the transfers running on this node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::metrics::{Metrics, Operation};
use crate::transfer::TransferProcess;

/// What every transfer task shares.
pub struct Context {
    pub client: Client,
    pub namespace: String,
    pub node: String,
    pub host_pods: std::path::PathBuf,
    pub cache_dir: Option<std::path::PathBuf>,
    pub storage_retry_budget: Duration,
    pub progress_interval: Duration,
    pub stall_timeout: Duration,
    pub max_attempts: u32,
    pub process: TransferProcess,
    pub slots: Arc<Semaphore>,
    pub metrics: Metrics,
    /// Cancelled on SIGTERM; every transfer's token is a child of it.
    pub shutdown: CancellationToken,
    running: Mutex<HashMap<(Operation, String), CancellationToken>>,
    pub(super) tasks: TaskTracker,
}

impl Context {
    pub fn new(
        client: Client,
        settings: &super::config::RunArgs,
        process: TransferProcess,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            client,
            namespace: settings.namespace.clone(),
            node: settings.node_name.clone(),
            host_pods: settings.host_pods.clone(),
            cache_dir: settings.cache_dir.clone(),
            storage_retry_budget: settings.storage_retry_budget,
            progress_interval: settings.progress_interval,
            stall_timeout: settings.stall_timeout,
            max_attempts: settings.max_attempts,
            process,
            slots: Arc::new(Semaphore::new(usize::from(
                settings.max_concurrent_transfers,
            ))),
            metrics,
            shutdown,
            running: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
        }
    }

    /// Waits until every transfer task has ended; no new ones start after this is called.
    pub async fn wait_for_transfers(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    pub(super) fn running(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(Operation, String), CancellationToken>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
