//! `ferry-coordinator run`: the Deployment's settings. Every flag has an environment twin.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use ferry_shared::runtime::LogFormat;

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The namespace Ferry is installed in, where its custom resources, Secrets and Lease live.
    #[arg(long, env = "FERRY_NAMESPACE", default_value = "ferry")]
    pub namespace: String,
    /// Where /metrics, /livez and /readyz are served.
    #[arg(long, env = "FERRY_METRICS_ADDRESS", default_value = "0.0.0.0:8085")]
    pub metrics_address: SocketAddr,
    /// Log lines as plain text or as JSON objects.
    #[arg(long, env = "FERRY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
    /// Take the Lease before starting the controllers, and exit when it is lost.
    #[arg(long, env = "FERRY_LEADER_ELECT")]
    pub leader_elect: bool,
    /// Name of the Lease, in the install namespace, that the leader holds.
    #[arg(long, env = "FERRY_LEASE_NAME", default_value = "ferry-coordinator")]
    pub lease_name: String,
    /// How long a Lease is valid without renewal; the leader renews it every third of this.
    #[arg(long, env = "FERRY_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,
    /// This replica's name in the Lease; the pod name in a cluster.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Image of the restore-wait init container put first into every restored pod.
    #[arg(
        long,
        env = "FERRY_RESTORE_HELPER_IMAGE",
        default_value = "ghcr.io/ferry-dev/ferry:0.1.0"
    )]
    pub restore_helper_image: String,
    /// Command of the restore-wait init container; its only argument is the restore's UID.
    #[arg(
        long,
        env = "FERRY_RESTORE_HELPER_COMMAND",
        default_value = "/usr/local/bin/ferry-restore-helper"
    )]
    pub restore_helper_command: String,
    /// Namespaces that Restores may not create objects in, comma-separated; a Restore that
    /// would ends FailedValidation. Without the flag: kube-system, kube-public,
    /// kube-node-lease and the install namespace. An empty value denies none.
    #[arg(
        long,
        env = "FERRY_RESTORE_NAMESPACE_DENYLIST",
        value_name = "NAMESPACES"
    )]
    pub restore_namespace_denylist: Option<String>,
    /// How long a Backup is kept when its spec gives no ttl.
    #[arg(long, env = "FERRY_DEFAULT_BACKUP_TTL", default_value = "720h", value_parser = humantime::parse_duration)]
    pub default_backup_ttl: Duration,
    /// How long one volume's transfer may run when the Backup gives no volumeTimeout.
    #[arg(long, env = "FERRY_DEFAULT_VOLUME_TIMEOUT", default_value = "4h", value_parser = humantime::parse_duration)]
    pub default_volume_timeout: Duration,
    /// Back up every eligible volume (opt-out) when the Backup does not say, instead of only
    /// the volumes named in the pod annotation (opt-in).
    #[arg(long, env = "FERRY_DEFAULT_VOLUMES_TO_FS_BACKUP")]
    pub default_volumes_to_fs_backup: bool,
    /// How often each repository is maintained (forget, prune, check) when its
    /// BackupRepository gives no maintenanceFrequency.
    #[arg(long, env = "FERRY_MAINTENANCE_FREQUENCY", default_value = "168h", value_parser = humantime::parse_duration)]
    pub maintenance_frequency: Duration,
    /// How often a storage location's availability is checked when it does not say.
    #[arg(long, env = "FERRY_VALIDATION_FREQUENCY", default_value = "1m", value_parser = humantime::parse_duration)]
    pub validation_frequency: Duration,
    /// How often the backups in a storage location are synced into the cluster when it does
    /// not say.
    #[arg(long, env = "FERRY_SYNC_PERIOD", default_value = "1m", value_parser = humantime::parse_duration)]
    pub sync_period: Duration,
    /// Memory cap of each repository-maintenance process, such as 1Gi; unlimited when absent.
    #[arg(long, env = "FERRY_MAINTENANCE_MEMORY_LIMIT", value_parser = ferry_shared::size::parse_size)]
    pub maintenance_memory_limit: Option<u64>,
    /// How long one repository job (create, forget, or maintenance) may run before it is
    /// stopped and counted as failed; a stalled object store then cannot hold a repository's
    /// lock for ever.
    #[arg(long, env = "FERRY_REPOSITORY_JOB_TIMEOUT", default_value = "6h", value_parser = humantime::parse_duration)]
    pub repository_job_timeout: Duration,
    /// How long one request to object storage is retried while the store is out of reach
    /// (refused or dropped connections, timeouts, 5xx, SlowDown) before it fails; 0 retries none.
    #[arg(long, env = "FERRY_STORAGE_RETRY_BUDGET", default_value = "5m", value_parser = humantime::parse_duration)]
    pub storage_retry_budget: Duration,
    /// The Service in front of this coordinator's HTTP server, as NAME:PORT in the install
    /// namespace: download URLs of filesystem locations point at it.
    #[arg(long, env = "FERRY_DOWNLOAD_SERVICE", default_value = "ferry-coordinator:8085", value_parser = parse_service)]
    pub download_service: DownloadService,
    /// How long a download URL works.
    #[arg(long, env = "FERRY_DOWNLOAD_VALIDITY", default_value = "10m", value_parser = humantime::parse_duration, hide = true)]
    pub download_validity: Duration,
}

/// A Service's name and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadService {
    pub name: String,
    pub port: u16,
}

fn parse_service(text: &str) -> Result<DownloadService, String> {
    let (name, port) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not NAME:PORT"))?;
    let port = port
        .parse()
        .map_err(|err| format!("{port:?} is not a port: {err}"))?;
    if !ferry_shared::storage::is_dns_label(name) {
        return Err(format!("{name:?} is not a Service name"));
    }
    Ok(DownloadService {
        name: name.to_owned(),
        port,
    })
}

impl RunArgs {
    /// The namespaces that Restores may not write to.
    pub fn denied_restore_namespaces(&self) -> BTreeSet<String> {
        crate::protected::denylist(self.restore_namespace_denylist.as_deref(), &self.namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_download_service_is_a_name_and_a_port() {
        assert_eq!(
            parse_service("ferry-coordinator:8085"),
            Ok(DownloadService {
                name: "ferry-coordinator".into(),
                port: 8085
            })
        );
        for bad in [
            "ferry-coordinator",
            "ferry:http",
            "Ferry:80",
            ":80",
            "a.b:80",
        ] {
            assert!(parse_service(bad).is_err(), "{bad}");
        }
    }
}
