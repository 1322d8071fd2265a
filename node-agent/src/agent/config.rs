//! `ferry-node-agent run`: the DaemonSet's settings. Every flag has an environment twin.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use ferry_shared::runtime::LogFormat;

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// This node's name, from the downward API (spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// The namespace Ferry is installed in, where its custom resources and Secrets live.
    #[arg(long, env = "FERRY_NAMESPACE", default_value = "ferry")]
    pub namespace: String,
    /// The kubelet's pods directory as mounted into the agent.
    #[arg(long, env = "FERRY_HOST_PODS", default_value = "/host_pods")]
    pub host_pods: PathBuf,
    /// The repository cache (trees and index), shared by transfers; none when absent.
    #[arg(long, env = "FERRY_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Transfers run at once on this node; the rest wait in a queue.
    #[arg(long, env = "FERRY_MAX_CONCURRENT_TRANSFERS", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_concurrent_transfers: u16,
    /// How often a running transfer's progress is written to its status.
    #[arg(long, env = "FERRY_PROGRESS_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub progress_interval: Duration,
    /// Attempts of one transfer (the first and its retries after an interruption) before it is Failed.
    #[arg(long, env = "FERRY_MAX_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,
    /// A transfer whose progress has not moved for this long, and that is not waiting on the
    /// object store within its retry budget, is stopped and tried again.
    #[arg(long, env = "FERRY_STALL_TIMEOUT", default_value = "30m", value_parser = humantime::parse_duration)]
    pub stall_timeout: Duration,
    /// Each transfer process's memory cap, such as 1Gi; unlimited when absent.
    #[arg(long, env = "FERRY_TRANSFER_MEMORY_LIMIT", value_parser = ferry_shared::size::parse_size)]
    pub transfer_memory_limit: Option<u64>,
    /// How long one request to object storage is retried while the store is out of reach
    /// (refused or dropped connections, timeouts, 5xx, SlowDown) before the transfer fails;
    /// 0 retries none.
    #[arg(long, env = "FERRY_STORAGE_RETRY_BUDGET", default_value = "5m", value_parser = humantime::parse_duration)]
    pub storage_retry_budget: Duration,
    /// How often, once its watches have synced, the agent renews its Lease
    /// (ferry-node-agent-<node> in the install namespace), which shows the coordinator that it
    /// runs; the Lease lapses after three intervals without renewal.
    #[arg(long, env = "FERRY_HEARTBEAT_INTERVAL", default_value = "30s", value_parser = parse_interval)]
    pub heartbeat_interval: Duration,
    /// Where /metrics, /livez and /readyz are served.
    #[arg(long, env = "FERRY_METRICS_ADDRESS", default_value = "0.0.0.0:8085")]
    pub metrics_address: SocketAddr,
    /// Log lines as plain text or as JSON objects.
    #[arg(long, env = "FERRY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
}

/// A heartbeat interval: a duration such as 30s, of at least a second.
fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval = humantime::parse_duration(text).map_err(|err| err.to_string())?;
    if interval < Duration::from_secs(1) {
        return Err(format!("{text} is shorter than a second"));
    }
    Ok(interval)
}
