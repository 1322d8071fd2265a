//! What both long-running binaries share: logging, stopping on signals, and knowing when a
//! controller's watch has synced.

use std::net::SocketAddr;
use std::time::Duration;

use clap::ValueEnum;
use kube::runtime::reflector::Store;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::admin::{self, Readiness};

/// Why a long-running binary could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot connect to the Kubernetes API: {0}")]
    Connect(#[source] kube::Error),
    #[error("cannot set up metrics: {0}")]
    Metrics(#[source] prometheus::Error),
    #[error("cannot find this program's own executable, needed to start its child processes: {0}")]
    Executable(#[source] std::io::Error),
    #[error("cannot serve metrics on {address}: {source}")]
    Admin {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What a long-running binary runs beside its controllers: the server of `/metrics`, `/livez`
/// and `/readyz`, its readiness, and the token that SIGTERM or SIGINT cancels.
pub struct Service {
    pub readiness: Readiness,
    /// Cancelled on the first SIGTERM or SIGINT; cancelling it also stops the admin server.
    pub shutdown: CancellationToken,
    admin: JoinHandle<std::io::Result<()>>,
}

impl Service {
    /// Serves the admin endpoints, and the binary's `extra` routes, on `address`, and listens
    /// for SIGTERM and SIGINT.
    pub async fn start(
        address: SocketAddr,
        registry: prometheus::Registry,
        extra: axum::Router,
    ) -> Result<Self, StartError> {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|source| StartError::Admin { address, source })?;
        let readiness = Readiness::default();
        let shutdown = CancellationToken::new();
        let admin = tokio::spawn(admin::serve_on(
            listener,
            registry,
            readiness.clone(),
            extra,
            shutdown.clone().cancelled_owned(),
        ));
        tokio::spawn(stop_on_signals(shutdown.clone()));
        Ok(Self {
            readiness,
            shutdown,
            admin,
        })
    }

    /// Stops the admin server and waits for it, logging how it failed if it did.
    pub async fn stop(self) {
        self.shutdown.cancel();
        match self.admin.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => error!(%err, "metrics server failed"),
            Err(err) => error!(%err, "metrics server task failed"),
        }
    }
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

/// Starts logging to stderr, as plain lines or JSON objects; `RUST_LOG` filters.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Plain => builder.with_ansi(false).init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT.
async fn stop_on_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot listen for SIGTERM; stop the process with SIGKILL");
        return;
    };
    tokio::select! {
        _ = terminate.recv() => info!("SIGTERM received"),
        _ = interrupt.recv() => info!("SIGINT received"),
    }
    shutdown.cancel();
}

/// Whether a controller's store has had its first full list. kube-runtime wakes only the latest
/// task waiting on a store's readiness, and the controller itself waits on it too, so this asks
/// again until the answer is there.
pub async fn synced<K>(store: &Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        if let Ok(result) =
            tokio::time::timeout(Duration::from_millis(200), store.wait_until_ready()).await
        {
            return result.is_ok();
        }
    }
}
