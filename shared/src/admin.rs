//! The admin HTTP server of both binaries: `/metrics` in Prometheus text format (with
//! `ferry_ready`), `/livez`, and `/readyz`, which answers 503 until the process says it is
//! ready (its watches have synced).
//! A binary may serve routes of its own beside them (the coordinator's `/downloads/`).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, IntGauge, Registry, TextEncoder};

/// Whether the process is ready to serve; starts false.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set_ready(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct AdminState {
    registry: Registry,
    readiness: Readiness,
}

/// The admin routes, with the binary's own `extra` routes beside them, for serving or for
/// tests.
pub fn router(registry: Registry, readiness: Readiness, extra: Router) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(AdminState {
            registry,
            readiness,
        })
        .merge(extra)
}

/// Serves the admin routes and `extra` on a bound listener until `shutdown` completes.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    registry: Registry,
    readiness: Readiness,
    extra: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(registry, readiness, extra))
        .with_graceful_shutdown(shutdown)
        .await
}

/// `ferry_ready`: 1 once the process is ready, else 0, so that an alert can tell a process that
/// runs but does not work.
fn readiness_metric(readiness: &Readiness) -> Vec<MetricFamily> {
    IntGauge::new(
        "ferry_ready",
        "1 once the process is ready (its watches have synced), else 0.",
    )
    .map(|gauge| {
        gauge.set(i64::from(readiness.is_ready()));
        gauge.collect()
    })
    .unwrap_or_default()
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    let mut families = state.registry.gather();
    families.extend(readiness_metric(&state.readiness));
    let mut body = Vec::new();
    match TextEncoder::new().encode(&families, &mut body) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
            body,
        )
            .into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

async fn ready(State(state): State<AdminState>) -> impl IntoResponse {
    if state.readiness.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: watches have not synced yet",
        )
    }
}
