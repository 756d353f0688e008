//! The HTTP endpoints on `http.listen`: `/metrics` (Prometheus), `/healthz` (the loops are
//! alive), `/readyz` (every watch synced, every sink healthy, commits succeeding), and the
//! admin endpoints of [`crate::admin`].

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

/// Why the HTTP server did not start.
#[derive(Debug, thiserror::Error)]
#[error("http.listen {addr}: {source}")]
pub struct HttpError {
    /// The configured address.
    pub addr: SocketAddr,
    /// The bind error.
    #[source]
    pub source: std::io::Error,
}

/// Binds `addr` (first, so a taken port fails before anything starts).
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, HttpError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError { addr, source })
}

/// Serves on `listener` until `cancel` fires. Logs the bound address (useful with port 0).
pub fn serve(
    listener: tokio::net::TcpListener,
    stats: Arc<Stats>,
    admin: Arc<crate::admin::Admin>,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let bound = listener.local_addr().ok();
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(stats)
        .merge(crate::admin::routes(admin));
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
