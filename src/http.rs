//! The HTTP endpoints on `http.listen`: `/metrics` (Prometheus), `/healthz` (the loops are
//! alive), `/readyz` (every watch synced, every sink healthy, commits succeeding). Nothing
//! here changes state, so nothing here asks for credentials; the admin API, which does, has
//! its own listener and token ([`crate::admin::serve`]).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::stats::{liveness_problems, readiness_problems, Stats};

/// Why an HTTP listener did not start.
#[derive(Debug, thiserror::Error)]
#[error("{key} {addr}: {source}")]
pub struct HttpError {
    /// The config key of the address (`http.listen`, `admin.listen`).
    pub key: &'static str,
    /// The configured address.
    pub addr: SocketAddr,
    /// The bind error.
    #[source]
    pub source: std::io::Error,
}

/// Binds `addr`, configured at `key` (first, so a taken port fails before anything starts).
pub async fn bind(
    key: &'static str,
    addr: SocketAddr,
) -> Result<tokio::net::TcpListener, HttpError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError { key, addr, source })
}

/// Serves on `listener` until `cancel` fires. Logs the bound address (useful with port 0).
pub fn serve(
    listener: tokio::net::TcpListener,
    stats: Arc<Stats>,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let bound = listener.local_addr().ok();
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(stats);
    if let Some(addr) = bound {
        info!(addr = %addr, "http listening");
    }
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
    })
}

async fn metrics(State(stats): State<Arc<Stats>>) -> impl IntoResponse {
    stats.refresh_watch_gauges();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        stats.metrics.encode(),
    )
}

fn answer(problems: Vec<String>) -> (StatusCode, String) {
    if problems.is_empty() {
        (StatusCode::OK, "ok\n".into())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, problems.join("\n") + "\n")
    }
}

async fn healthz(State(stats): State<Arc<Stats>>) -> impl IntoResponse {
    answer(liveness_problems(&stats))
}

async fn readyz(State(stats): State<Arc<Stats>>) -> impl IntoResponse {
    answer(readiness_problems(&stats))
}
