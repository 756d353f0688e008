//! The admin endpoints a running instance serves on `admin.listen` (sled allows one
//! process per state directory, so `status`, `replay` and `snapshot` against a running
//! instance go through it). Every request needs `Authorization: Bearer <token>`
//! ([`auth`]); bodies are limited to [`MAX_BODY`]; one replay or snapshot runs at a time
//! (409 while one runs), and a running replay stops when the instance shuts down:
//!
//! * `GET /admin/status` — [`crate::status::Status`] as JSON;
//! * `POST /admin/replay` — body [`ReplayRequest`]; answers newline-delimited JSON:
//!   `{"progress": …}` lines, then `{"done": …}` or `{"error": "…"}`;
//! * `POST /admin/snapshot` — body [`SnapshotBody`]; answers [`SnapshotResult`] once the
//!   snapshot events are committed to the outbox (the sinks then publish them).
//!
//! * `GET /admin/deadletters[?sink=S]` — the dead letters as a JSON array of
//!   [`Listed`]; `GET /admin/deadletters/{sink}:{seq}` — one [`crate::store::DeadLetter`]
//!   (404 if none); `DELETE /admin/deadletters/{sink}:{seq}` — drops it;
//!   `POST /admin/deadletters/redrive` — body [`RedriveRequest`], publishes the letters
//!   again with their ids (holds the replay permit) and answers a JSON array of [`Redriven`].
//!
//! [`client`] is the other end, used by the CLI.

pub mod auth;
pub mod client;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::info;

use self::auth::AdminToken;
use crate::capture::{Command, SnapshotRequest};
use crate::cmd::deadletters::{LetterId, Listed, RedriveRequest, Redriven};
use crate::config::Config;
use crate::replay::{Progress, ReplayRequest};
use crate::store::Store;
use crate::watch::ScopeId;
use crate::wiring::{sink_watches, SinkSetup};

/// What the admin endpoints need from the running daemon.
pub struct Admin {
    /// The open store.
    pub store: Store,
    /// The config.
    pub config: Config,
    /// The configured sinks by name (a replay opens its own connection).
    pub sinks: HashMap<String, SinkSetup>,
    /// Scopes of each watch (and of each kind of a whole-group watch, as they start).
    pub scopes: std::sync::RwLock<HashMap<String, Vec<ScopeId>>>,
    /// Health of every scope, for `status`.
    pub health: Arc<crate::stats::ScopeList>,
    /// Capture's command channel, once it runs (not while standing by, not after
    /// shutdown).
    pub capture: Mutex<Option<mpsc::Sender<Command>>>,
    /// One permit: a replay, a snapshot or a dead-letter redrive holds it while it runs.
    pub busy: Arc<Semaphore>,
    /// Cancelled on shutdown; a running replay stops with it.
    pub shutdown: CancellationToken,
}

/// Request bodies are a few names and numbers; 64 KiB is far above any real one and keeps
/// a hostile body from costing memory.
pub const MAX_BODY: usize = 64 * 1024;

/// Body of `POST /admin/snapshot`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotBody {
    /// The watch to snapshot.
    pub watch: String,
    /// Only this sink, if set.
    pub sink: Option<String>,
}

/// Answer of `POST /admin/snapshot`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct SnapshotResult {
    /// Snapshot events written.
    pub events: usize,
    /// Outbox sequence number at or after the last of them.
    pub last_seq: u64,
}

/// One line of the replay answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplayLine {
    /// Still going.
    Progress(Progress),
    /// Finished.
    Done(Progress),
    /// Failed (one line, with a hint).
    Error(String),
}

/// The admin routes, behind the bearer `token`.
pub fn routes(admin: Arc<Admin>, token: Arc<AdminToken>) -> Router {
    Router::new()
        .route("/admin/status", get(status))
        .route("/admin/replay", post(replay))
        .route("/admin/snapshot", post(snapshot))
        .route("/admin/deadletters", get(dead_letters))
        .route("/admin/deadletters/redrive", post(redrive))
        .route(
            "/admin/deadletters/{id}",
            get(dead_letter).delete(drop_dead_letter),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(admin)
        .layer(axum::middleware::from_fn_with_state(
            token,
            auth::require_token,
        ))
}

/// Serves the admin routes on `listener` until `cancel` fires. Logs the bound address
/// (useful with port 0).
pub fn serve(
    listener: tokio::net::TcpListener,
    admin: Arc<Admin>,
    token: Arc<AdminToken>,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    if let Ok(addr) = listener.local_addr() {
        info!(addr = %addr, "admin listening");
    }
    let app = routes(admin, token).into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
    })
}

/// The permit to run a replay or a snapshot; `None` while another one runs.
fn one_at_a_time(admin: &Admin) -> Option<OwnedSemaphorePermit> {
    admin.busy.clone().try_acquire_owned().ok()
}

/// The 409 answer while another replay or snapshot runs.
fn busy() -> Response {
    fail(
        StatusCode::CONFLICT,
        "a replay or snapshot is already running on this instance (hint: wait for it to finish)"
            .into(),
    )
}

fn fail(code: StatusCode, msg: String) -> Response {
    (code, msg + "\n").into_response()
}

async fn status(State(admin): State<Arc<Admin>>) -> Response {
    match crate::status::collect(&admin.store, &admin.config, true) {
        Ok(mut s) => {
            crate::status::add_health(&mut s, &admin.health.all());
            Json(s).into_response()
        }
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Checks a snapshot or replay names a configured sink / watch.
pub fn check_names(config: &Config, sink: Option<&str>, watch: Option<&str>) -> Result<(), String> {
    if let Some(s) = sink {
        if !config.sinks.contains_key(s) {
            let known: Vec<&str> = config.sinks.keys().map(String::as_str).collect();
            return Err(format!(
                "unknown sink {s:?} (configured: {})",
                known.join(", ")
            ));
        }
    }
    if let Some(w) = watch {
        if config.watch_arg_keys(w).is_none() {
            return Err(format!(
                "unknown watch {w:?} (configured: {})",
                config.watch_args().join(", ")
            ));
        }
    }
    Ok(())
}

async fn replay(State(admin): State<Arc<Admin>>, Json(req): Json<ReplayRequest>) -> Response {
    if let Err(e) = check_names(&admin.config, Some(&req.sink), req.watch.as_deref()) {
        return fail(StatusCode::BAD_REQUEST, e);
    }
    let Some(connector) = admin.sinks.get(&req.sink).map(|s| s.connector.clone()) else {
        return fail(
            StatusCode::BAD_REQUEST,
            format!("unknown sink {}", req.sink),
        );
    };
    let Some(permit) = one_at_a_time(&admin) else {
        return busy();
    };
    let (tx, rx) = mpsc::channel::<ReplayLine>(16);
    tokio::spawn(async move {
        let _permit = permit;
        let shutdown = admin.shutdown.clone();
        let work = async {
            let sink = connector().await.map_err(|e| e.to_string())?;
            let watches = sink_watches(&admin.config, &req.sink);
            let progress_tx = tx.clone();
            let mut report = move |p: Progress| {
                let _ = progress_tx.try_send(ReplayLine::Progress(p));
            };
            crate::replay::replay(&admin.store, sink.as_ref(), &watches, &req, &mut report)
                .await
                .map_err(|e| e.to_string())
        };
        let result = tokio::select! {
            r = work => r,
            _ = shutdown.cancelled() => Err("crbridge is shutting down: replay stopped (hint: run it again; events keep their ids)".to_string()),
        };
        let last = match result {
            Ok(p) => ReplayLine::Done(p),
            Err(e) => ReplayLine::Error(e),
        };
        let _ = tx.send(last).await;
    });
    let lines = futures::stream::unfold(rx, |mut rx| async move {
        let line = rx.recv().await?;
        let mut text = serde_json::to_string(&line).unwrap_or_default();
        text.push('\n');
        Some((Ok::<_, std::convert::Infallible>(text), rx))
    });
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(lines))
        .unwrap_or_else(|e| fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

async fn snapshot(State(admin): State<Arc<Admin>>, Json(body): Json<SnapshotBody>) -> Response {
    if let Err(e) = check_names(&admin.config, body.sink.as_deref(), Some(&body.watch)) {
        return fail(StatusCode::BAD_REQUEST, e);
    }
    let Some(capture) = admin.capture.lock().ok().and_then(|c| c.clone()) else {
        return fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "not capturing (standing by for leadership, or shutting down)".into(),
        );
    };
    let Some(_permit) = one_at_a_time(&admin) else {
        return busy();
    };
    let id = format!("{:x}-{:08x}", crate::store::now_ms(), rand::random::<u32>());
    let mut result = SnapshotResult {
        events: 0,
        last_seq: 0,
    };
    let scopes = admin
        .scopes
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&body.watch)
        .cloned()
        .unwrap_or_default();
    for scope in scopes {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let request = SnapshotRequest {
            id: id.clone(),
            sinks: body.sink.clone().map(|s| vec![s]),
            done: Some(done_tx),
        };
        if capture
            .send(Command::Snapshot { scope, request })
            .await
            .is_err()
        {
            return fail(StatusCode::SERVICE_UNAVAILABLE, "shutting down".into());
        }
        match done_rx.await {
            Ok(d) => {
                result.events += d.events;
                result.last_seq = result.last_seq.max(d.last_seq);
            }
            Err(_) => return fail(StatusCode::SERVICE_UNAVAILABLE, "shutting down".into()),
        }
    }
    Json(result).into_response()
}

/// Query of `GET /admin/deadletters`.
#[derive(Debug, Deserialize)]
struct ListQuery {
    sink: Option<String>,
}

async fn dead_letters(State(admin): State<Arc<Admin>>, Query(q): Query<ListQuery>) -> Response {
    if let Err(e) = check_names(&admin.config, q.sink.as_deref(), None) {
        return fail(StatusCode::BAD_REQUEST, e);
    }
    match crate::cmd::deadletters::list(&admin.store, q.sink.as_deref()) {
        Ok(l) => Json::<Vec<Listed>>(l).into_response(),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn letter_id(id: &str) -> Result<LetterId, String> {
    id.parse()
}

async fn dead_letter(State(admin): State<Arc<Admin>>, Path(id): Path<String>) -> Response {
    let id = match letter_id(&id) {
        Ok(id) => id,
        Err(e) => return fail(StatusCode::BAD_REQUEST, e),
    };
    match admin.store.dead_letter(&id.sink, id.seq) {
        Ok(Some(l)) => Json(l).into_response(),
        Ok(None) => fail(StatusCode::NOT_FOUND, format!("no dead letter {id}")),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn drop_dead_letter(State(admin): State<Arc<Admin>>, Path(id): Path<String>) -> Response {
    let id = match letter_id(&id) {
        Ok(id) => id,
        Err(e) => return fail(StatusCode::BAD_REQUEST, e),
    };
    match admin.store.remove_dead_letter(&id.sink, id.seq) {
        Ok(true) => match admin.store.flush().await {
            Ok(()) => Json(id.to_string()).into_response(),
            Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        Ok(false) => fail(StatusCode::NOT_FOUND, format!("no dead letter {id}")),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn redrive(State(admin): State<Arc<Admin>>, Json(req): Json<RedriveRequest>) -> Response {
    let id_sink = match req.id.as_deref().map(letter_id).transpose() {
        Ok(id) => id.map(|i| i.sink),
        Err(e) => return fail(StatusCode::BAD_REQUEST, e),
    };
    for s in [req.sink.as_deref(), id_sink.as_deref()] {
        if let Err(e) = check_names(&admin.config, s, None) {
            return fail(StatusCode::BAD_REQUEST, e);
        }
    }
    let Some(_permit) = one_at_a_time(&admin) else {
        return busy();
    };
    let work = crate::cmd::deadletters::redrive(&admin.store, &admin.sinks, &req);
    let result = tokio::select! {
        r = work => r.map_err(|e| format!("{e:#}")),
        _ = admin.shutdown.cancelled() => Err("crbridge is shutting down: redrive stopped (hint: run it again; letters not yet acked are kept)".to_string()),
    };
    match result {
        Ok(done) => Json::<Vec<Redriven>>(done).into_response(),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

#[cfg(test)]
mod tests {
    use axum::body::{to_bytes, Body};
    use axum::http::{header, Request, StatusCode};
    use tower::ServiceExt;

    use super::*;

    const TOKEN: &str = "0123456789abcdef";

    fn admin(dir: &std::path::Path) -> (Arc<Admin>, Arc<AdminToken>) {
        let yaml = format!(
            "cluster: t\nstate: {{path: {}}}\nwatches:\n  - {{group: example.com, version: v1, kind: Widget}}\nsinks:\n  out: {{type: stdout}}\n",
            dir.join("state").display()
        );
        let config = crate::config::parse("t.yaml", &yaml).unwrap();
        let store = Store::open(&config.state.path, &Default::default()).unwrap();
        let sinks = SinkSetup::all(&config, "t.yaml")
            .unwrap()
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        let token_file = dir.join("token");
        std::fs::write(&token_file, TOKEN).unwrap();
        let token = AdminToken::load_or_create(Some(&token_file), dir).unwrap();
        let admin = Admin {
            store,
            config,
            sinks,
            scopes: Default::default(),
            health: Default::default(),
            capture: Mutex::new(None),
            busy: Arc::new(Semaphore::new(1)),
            shutdown: CancellationToken::new(),
        };
        (Arc::new(admin), Arc::new(token))
    }

    fn post(path: &str, body: impl Into<Body>) -> Request<Body> {
        Request::post(path)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.into())
            .unwrap()
    }

    #[tokio::test]
    async fn a_second_replay_or_snapshot_waits_its_turn() {
        let dir = tempfile::tempdir().unwrap();
        let (admin, token) = admin(dir.path());
        let held = admin.busy.clone().try_acquire_owned().unwrap();
        let app = routes(admin.clone(), token);
        let body = r#"{"sink":"out","start":{"seq":1}}"#;
        let answer = app
            .clone()
            .oneshot(post("/admin/replay", body))
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::CONFLICT);
        let text = to_bytes(answer.into_body(), 4096).await.unwrap();
        assert!(
            String::from_utf8_lossy(&text).contains("already running"),
            "{text:?}"
        );
        drop(held);
        let answer = app.oneshot(post("/admin/replay", body)).await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
    }

    fn get(path: &str) -> Request<Body> {
        Request::get(path)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn dead_letter_routes_check_ids_and_take_the_permit_to_redrive() {
        use crate::store::DeadLetter;
        let dir = tempfile::tempdir().unwrap();
        let (admin, token) = admin(dir.path());
        let entry = crate::store::test_entry("ev-1", "widgets", "u1", 1);
        let letter = DeadLetter {
            seq: 7,
            error: "refused".into(),
            at_ms: 2,
            entry,
        };
        admin.store.add_dead_letter("out", &letter).unwrap();
        let app = routes(admin.clone(), token);
        let status = |r: Request<Body>| {
            let app = app.clone();
            async move { app.oneshot(r).await.unwrap().status() }
        };
        assert_eq!(
            status(get("/admin/deadletters/out")).await,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(get("/admin/deadletters/out:8")).await,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status(get("/admin/deadletters/out:7")).await,
            StatusCode::OK
        );
        assert_eq!(
            status(get("/admin/deadletters?sink=nope")).await,
            StatusCode::BAD_REQUEST
        );
        let held = admin.busy.clone().try_acquire_owned().unwrap();
        assert_eq!(
            status(post("/admin/deadletters/redrive", "{}")).await,
            StatusCode::CONFLICT
        );
        drop(held);
        let delete = Request::delete("/admin/deadletters/out:7")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .unwrap();
        assert_eq!(status(delete).await, StatusCode::OK);
        assert_eq!(admin.store.dead_letter_count("out"), 0);
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused_and_tokens_are_required() {
        let dir = tempfile::tempdir().unwrap();
        let (admin, token) = admin(dir.path());
        let app = routes(admin, token);
        let big = format!(r#"{{"watch":"{}"}}"#, "w".repeat(MAX_BODY));
        let answer = app
            .clone()
            .oneshot(post("/admin/snapshot", big))
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let anonymous = Request::get("/admin/status").body(Body::empty()).unwrap();
        assert_eq!(
            app.oneshot(anonymous).await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
    }
}
