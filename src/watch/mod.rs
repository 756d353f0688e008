//! One watch loop per scope (a watched kind in one namespace, or in all): list / watch
//! against the API server, resuming from the checkpoint, reporting what it sees to the
//! capture stage through a bounded channel.
//!
//! kube-rs's `watcher()` always starts with a list; crbridge must resume from a stored
//! resourceVersion instead, so this loop drives `Api::list` / `Api::watch` itself through
//! the explicit [`State`] machine in `state.rs`.

mod raw;
mod state;

pub use raw::RawApi;
pub use state::{Failure, ListMode, State};

use std::time::{Duration, SystemTime};

use futures::{StreamExt, TryStreamExt};
use kube::api::{ApiResource, ListParams, WatchEvent, WatchParams};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::metrics::{self, Metrics};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Index of a scope in the capture stage's table.
pub type ScopeId = usize;

/// How an object reached the bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A watch event: a change as it happened.
    Watch,
    /// A list item, during the first start or a relist.
    List(ListMode),
}

/// What a watch loop reports, in the order it saw it.
#[derive(Debug)]
pub enum Observed {
    /// An object exists in this state (added, modified, or listed).
    Upsert {
        /// Which scope.
        scope: ScopeId,
        /// The raw object.
        object: Value,
        /// Watch or list.
        origin: Origin,
        /// When the bridge received it.
        received: SystemTime,
    },
    /// The server reported the object deleted.
    Delete {
        /// Which scope.
        scope: ScopeId,
        /// The object as the server last had it.
        object: Value,
        /// When the bridge received it.
        received: SystemTime,
    },
    /// Progress without a change: checkpoint this resourceVersion.
    Bookmark {
        /// Which scope.
        scope: ScopeId,
        /// The bookmark's resourceVersion.
        resource_version: String,
    },
    /// The list is complete: everything stored for the scope that was not `seen` is gone.
    ListDone {
        /// Which scope.
        scope: ScopeId,
        /// The list's resourceVersion, to checkpoint.
        resource_version: String,
        /// uids seen in the list.
        seen: std::collections::HashSet<String>,
        /// Why the list ran.
        mode: ListMode,
    },
}

impl Observed {
    /// The scope the observation belongs to.
    pub fn scope(&self) -> ScopeId {
        match self {
            Observed::Upsert { scope, .. }
            | Observed::Delete { scope, .. }
            | Observed::Bookmark { scope, .. }
            | Observed::ListDone { scope, .. } => *scope,
        }
    }
}

/// One watched kind in one namespace (or all).
#[derive(Clone)]
pub struct Scope {
    /// Index in the capture table.
    pub id: ScopeId,
    /// The watch name from the config.
    pub watch: String,
    /// The namespace, or `None` for all namespaces / cluster-scoped kinds.
    pub namespace: Option<String>,
    /// The resource.
    pub resource: ApiResource,
    /// List / watch requests for this scope.
    pub api: RawApi,
    /// Server-side label selector.
    pub label_selector: Option<String>,
    /// Server-side field selector.
    pub field_selector: Option<String>,
    /// Objects per list page.
    pub page_size: u32,
}

/// Liveness and readiness of one scope's loop, read by `/healthz` and `/readyz`.
#[derive(Debug, Default)]
pub struct ScopeHealth {
    /// True once the scope has listed or resumed its watch: its events flow.
    pub synced: AtomicBool,
    /// Last time (ms since the epoch) the loop made progress: a page, a watch opened, an
    /// event or a bookmark.
    pub last_progress_ms: AtomicU64,
}

impl ScopeHealth {
    fn progress(&self) {
        self.last_progress_ms
            .store(crate::store::now_ms(), Ordering::Relaxed);
    }
}

/// A watch stream that delivers nothing (not even a bookmark or the server's close at its
/// timeout) for this long is presumed dead and reopened: the server closes every watch
/// after 290 s, so silence beyond that means a lost connection.
const IDLE_WATCH: Duration = Duration::from_secs(330);

/// The channel to capture closed: the pipeline is shutting down.
#[derive(Debug)]
struct Closed;

/// Runs one scope until `cancel` fires. `checkpoint` is the stored resourceVersion.
pub async fn run(
    scope: Scope,
    checkpoint: Option<String>,
    tx: mpsc::Sender<Observed>,
    health: Arc<ScopeHealth>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    health.progress();
    let ctx = Ctx {
        scope: &scope,
        tx: &tx,
        health: &health,
        metrics: &metrics,
    };
    let ns = scope.namespace.as_deref().unwrap_or("*");
    let mut state = State::start(checkpoint);
    if let State::Watching { rv } = &state {
        info!(watch = %scope.watch, namespace = ns, resource_version = %rv, "watch resumed from checkpoint");
    }
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
    loop {
        let step = tokio::select! {
            _ = cancel.cancelled() => return,
            r = step(&ctx, state.clone()) => r,
        };
        state = match step {
            Ok(next) => {
                backoff.reset();
                next
            }
            Err(StepError::Closed) => return,
            Err(StepError::Failed {
                failure,
                message,
                resume,
            }) => {
                if failure == Failure::Gone {
                    metrics
                        .gone
                        .get_or_create(&metrics::watch(&scope.watch))
                        .inc();
                    warn!(watch = %scope.watch, namespace = ns, error = %message, "resourceVersion expired (410 Gone), relisting");
                } else {
                    metrics.error("watch");
                    let wait = backoff.next_delay();
                    warn!(watch = %scope.watch, namespace = ns, error = %message, retry_in = ?wait, "watch request failed");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                resume.after_failure(failure)
            }
        };
    }
}

enum StepError {
    /// Capture is gone: stop.
    Closed,
    /// A request failed; `resume` is the state to continue from (progress kept).
    Failed {
        failure: Failure,
        message: String,
        resume: State,
    },
}

fn failed(e: &kube::Error, resume: State) -> StepError {
    StepError::Failed {
        failure: classify(e),
        message: e.to_string(),
        resume,
    }
}

impl From<Closed> for StepError {
    fn from(_: Closed) -> Self {
        StepError::Closed
    }
}

fn classify(e: &kube::Error) -> Failure {
    match e {
        kube::Error::Api(s) if s.code == 410 => Failure::Gone,
        _ => Failure::Other,
    }
}

async fn send(tx: &mpsc::Sender<Observed>, o: Observed) -> Result<(), Closed> {
    tx.send(o).await.map_err(|_| Closed)
}

/// What a step needs besides its state.
struct Ctx<'a> {
    scope: &'a Scope,
    tx: &'a mpsc::Sender<Observed>,
    health: &'a ScopeHealth,
    metrics: &'a Metrics,
}

/// One request's worth of work in `state`, returning the next state.
async fn step(ctx: &Ctx<'_>, state: State) -> Result<State, StepError> {
    let Ctx {
        scope,
        tx,
        health,
        metrics,
    } = *ctx;
    match state {
        State::Start => Ok(State::list(ListMode::Initial)),
        State::Listing {
            mode,
            continue_token,
            list_rv,
            mut seen,
        } => {
            if continue_token.is_none() {
                metrics
                    .relists
                    .get_or_create(&metrics::watch(&scope.watch))
                    .inc();
                info!(watch = %scope.watch, namespace = scope.namespace.as_deref().unwrap_or("*"), mode = ?mode, "listing");
            }
            let mut lp = ListParams::default().limit(scope.page_size);
            lp.label_selector = scope.label_selector.clone();
            lp.field_selector = scope.field_selector.clone();
            lp.continue_token = continue_token.clone();
            let page = match scope.api.list(&lp).await {
                Ok(page) => page,
                Err(e) => {
                    let resume = State::Listing {
                        mode,
                        continue_token,
                        list_rv,
                        seen,
                    };
                    return Err(failed(&e, resume));
                }
            };
            health.progress();
            let rv = list_rv.or(page.metadata.resource_version.clone());
            for item in page.items {
                if let Some(uid) = raw::meta_str(&item, "uid") {
                    seen.insert(uid.to_string());
                }
                send(
                    tx,
                    Observed::Upsert {
                        scope: scope.id,
                        object: raw::with_type(&scope.resource, item),
                        origin: Origin::List(mode),
                        received: SystemTime::now(),
                    },
                )
                .await?;
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => Ok(State::Listing {
                    mode,
                    continue_token: Some(token),
                    list_rv: rv,
                    seen,
                }),
                None => {
                    let rv = rv.unwrap_or_default();
                    send(
                        tx,
                        Observed::ListDone {
                            scope: scope.id,
                            resource_version: rv.clone(),
                            seen,
                            mode,
                        },
                    )
                    .await?;
                    health.synced.store(true, Ordering::Relaxed);
                    Ok(State::Watching { rv })
                }
            }
        }
        State::Watching { mut rv } => {
            metrics
                .watch_restarts
                .get_or_create(&metrics::watch(&scope.watch))
                .inc();
            let mut wp = WatchParams::default().timeout(290);
            wp.label_selector = scope.label_selector.clone();
            wp.field_selector = scope.field_selector.clone();
            let stream = match scope.api.watch(&wp, &rv).await {
                Ok(s) => s,
                Err(e) => return Err(failed(&e, State::Watching { rv })),
            };
            let mut stream = stream.boxed();
            health.progress();
            health.synced.store(true, Ordering::Relaxed);
            loop {
                let next = match tokio::time::timeout(IDLE_WATCH, stream.try_next()).await {
                    Ok(n) => n,
                    Err(_) => {
                        debug!(watch = %scope.watch, "watch silent too long; reopening");
                        return Ok(State::Watching { rv });
                    }
                };
                health.progress();
                let ev = match next {
                    Ok(Some(ev)) => ev,
                    // The server closed the watch (timeout): reopen from where we are.
                    Ok(None) => return Ok(State::Watching { rv }),
                    Err(e) => {
                        // Progress made so far is kept: retry from the last resourceVersion.
                        debug!(watch = %scope.watch, error = %e, "watch stream error");
                        return Err(failed(&e, State::Watching { rv }));
                    }
                };
                match ev {
                    WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                        let received = SystemTime::now();
                        if let Some(v) = raw::meta_str(&o, "resourceVersion") {
                            rv = v.to_string();
                        }
                        send(
                            tx,
                            Observed::Upsert {
                                scope: scope.id,
                                object: raw::with_type(&scope.resource, o),
                                origin: Origin::Watch,
                                received,
                            },
                        )
                        .await?;
                    }
                    WatchEvent::Deleted(o) => {
                        let received = SystemTime::now();
                        if let Some(v) = raw::meta_str(&o, "resourceVersion") {
                            rv = v.to_string();
                        }
                        send(
                            tx,
                            Observed::Delete {
                                scope: scope.id,
                                object: raw::with_type(&scope.resource, o),
                                received,
                            },
                        )
                        .await?;
                    }
                    WatchEvent::Bookmark(b) => {
                        rv = b.metadata.resource_version.clone();
                        send(
                            tx,
                            Observed::Bookmark {
                                scope: scope.id,
                                resource_version: b.metadata.resource_version,
                            },
                        )
                        .await?;
                    }
                    WatchEvent::Error(status) => {
                        let failure = if status.code == 410 {
                            Failure::Gone
                        } else {
                            Failure::Other
                        };
                        return Err(StepError::Failed {
                            failure,
                            message: format!("{} (code {})", status.message, status.code),
                            resume: State::Watching { rv },
                        });
                    }
                }
            }
        }
    }
}
