//! The watch loop of one scope: the I/O each [`State`] asks for, through [`ListWatch`].
//!
//! `step` makes one request (a list page, or a watch read until it ends), reports what it
//! saw to capture, and lets the pure [`State::next`] decide the next state; `run` repeats
//! steps, applies backoff after failures and [`State::after_failure`].
//!
//! A kind that is not served or not allowed is this scope's problem only: the loop reports
//! it in [`ScopeHealth::unavailable`] (read by `/readyz`, `status` and the metrics), logs
//! each change of reason once, and re-resolves with [`UNAVAILABLE_MIN`]..[`UNAVAILABLE_MAX`]
//! backoff, never ending.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::TryStreamExt;
use kube::api::{ListParams, WatchEvent, WatchParams};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::raw::{self, ListWatch};
use super::state::{Failure, Input, ListMode, State, Then};
use super::{Observed, Origin, Reason, Scope, ScopeHealth, Unavailable};
use crate::backoff::Backoff;
use crate::metrics::{self, Metrics};

/// A watch stream that delivers nothing (not even a bookmark or the server's close at its
/// timeout) for this long is presumed dead and reopened: the server closes every watch
/// after 290 s, so silence beyond that means a lost connection.
pub(super) const IDLE_WATCH: Duration = Duration::from_secs(330);

/// First retry after a kind turned out unavailable: a CRD applied just after crbridge
/// started is picked up within seconds.
pub(super) const UNAVAILABLE_MIN: Duration = Duration::from_secs(5);
/// Longest wait between resolutions of an unavailable kind: a CRD or an RBAC rule comes
/// back by an operator's hand, so a few minutes is soon enough, and a cluster with many
/// missing kinds is not asked every second.
pub(super) const UNAVAILABLE_MAX: Duration = Duration::from_secs(300);

/// The channel to capture closed: the pipeline is shutting down.
#[derive(Debug)]
struct Closed;

/// Runs one scope until `cancel` fires. `checkpoint` is the stored resourceVersion.
pub async fn run<A: ListWatch>(
    scope: Scope<A>,
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
    if let State::Watching { rv, .. } = &state {
        info!(watch = %scope.watch, namespace = ns, resource_version = %rv, "watch resumed from checkpoint");
    }
    if !scope.resolved {
        state = state.after_resolving();
    }
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
    let mut unavailable_backoff = Backoff::new(UNAVAILABLE_MIN, UNAVAILABLE_MAX);
    loop {
        let resolving = matches!(state, State::Unavailable { .. });
        let step = tokio::select! {
            _ = cancel.cancelled() => return,
            r = step(&ctx, state.clone()) => r,
        };
        state = match step {
            Ok(next) => {
                // Resolving is not being served: a 403 shows only on the next request.
                if !resolving {
                    backoff.reset();
                    unavailable_backoff.reset();
                    health.clear_failing();
                }
                next
            }
            Err(StepError::Closed) => return,
            Err(StepError::Failed {
                failure,
                message,
                resume,
            }) => {
                let was_watching = matches!(resume, State::Watching { .. });
                let next = resume.after_failure(failure);
                if failure == Failure::Gone {
                    metrics
                        .gone
                        .get_or_create(&metrics::watch(&scope.cluster, &scope.watch))
                        .inc();
                    warn!(watch = %scope.watch, namespace = ns, error = %message, "resourceVersion expired (410 Gone), relisting");
                } else if let State::Unavailable { .. } = next {
                    metrics.error("watch");
                    let wait = unavailable_backoff.next_delay();
                    let why = Unavailable {
                        reason: match failure {
                            Failure::Forbidden => Reason::Forbidden,
                            Failure::NotServed => Reason::NotFound,
                            _ => Reason::Other,
                        },
                        message,
                    };
                    health.synced.store(false, Ordering::Relaxed);
                    let before = health.set_unavailable(Some(why.clone()));
                    if before.as_ref() != Some(&why) {
                        warn!(watch = %scope.watch, namespace = ns, reason = why.reason.as_str(), error = %why.message, retry_in = ?wait, "watch unavailable; other watches go on, retrying");
                    } else {
                        debug!(watch = %scope.watch, namespace = ns, error = %why.message, retry_in = ?wait, "watch still unavailable");
                    }
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                } else {
                    metrics.error("watch");
                    health.set_failing(&message);
                    let wait = backoff.next_delay();
                    if failure == Failure::ServerError
                        && was_watching
                        && matches!(next, State::Listing { .. })
                    {
                        warn!(watch = %scope.watch, namespace = ns, error = %message, "the API server keeps failing this watch; relisting");
                    } else if failure == Failure::Undecodable {
                        let relist = was_watching && matches!(next, State::Listing { .. });
                        warn!(watch = %scope.watch, namespace = ns, error = %message, relist, "undecodable answer from the API server");
                    } else {
                        warn!(watch = %scope.watch, namespace = ns, error = %message, retry_in = ?wait, "watch request failed");
                    }
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                next
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

fn failed<A>(ctx: &Ctx<'_, A>, e: &kube::Error, resume: State) -> StepError {
    let failure = classify(e);
    let message = match e {
        kube::Error::Api(s) => describe(ctx, failure, &s.message, &resume),
        _ => e.to_string(),
    };
    StepError::Failed {
        failure,
        message,
        resume,
    }
}

/// The words for a failure: what a person reads in `/readyz`, `status` and the log.
fn describe<A>(ctx: &Ctx<'_, A>, failure: Failure, server: &str, resume: &State) -> String {
    let r = &ctx.scope.resource;
    match failure {
        Failure::Forbidden => format!("forbidden: {server}"),
        // Discovery's own answer already names the kind.
        Failure::NotServed if matches!(resume, State::Unavailable { .. }) => server.to_string(),
        Failure::NotServed => format!(
            "kind {}/{} {} is not served (404)",
            if r.group.is_empty() { "core" } else { &r.group },
            r.version,
            r.kind
        ),
        _ => server.to_string(),
    }
}

impl From<Closed> for StepError {
    fn from(_: Closed) -> Self {
        StepError::Closed
    }
}

fn classify(e: &kube::Error) -> Failure {
    match e {
        kube::Error::Api(s) => Failure::from_code(s.code),
        kube::Error::SerdeError(_) => Failure::Undecodable,
        _ => Failure::Other,
    }
}

async fn send(tx: &mpsc::Sender<Observed>, o: Observed) -> Result<(), Closed> {
    tx.send(o).await.map_err(|_| Closed)
}

/// What a step needs besides its state.
struct Ctx<'a, A> {
    scope: &'a Scope<A>,
    tx: &'a mpsc::Sender<Observed>,
    health: &'a ScopeHealth,
    metrics: &'a Metrics,
}

/// One request's worth of work in `state`, returning the next state.
async fn step<A: ListWatch>(ctx: &Ctx<'_, A>, state: State) -> Result<State, StepError> {
    match state {
        State::Start => Ok(State::list(ListMode::Initial)),
        State::Listing { .. } => list_page(ctx, state).await,
        State::Watching { .. } => watch(ctx, state).await,
        State::Unavailable { .. } => match ctx.scope.api.resolve().await {
            Ok(()) => Ok(state.next(Input::Resolved).0),
            Err(e) => Err(failed(ctx, &e, state)),
        },
    }
}

impl<A> Ctx<'_, A> {
    /// A list or watch request succeeded: the kind is served and allowed.
    fn served(&self) {
        if let Some(was) = self.health.set_unavailable(None) {
            info!(watch = %self.scope.watch, namespace = self.scope.namespace.as_deref().unwrap_or("*"), was = %was.message, "watch available again");
        }
    }
}

/// Listing: one page, its objects to capture; after the last page, the list's end.
async fn list_page<A: ListWatch>(ctx: &Ctx<'_, A>, state: State) -> Result<State, StepError> {
    let Ctx {
        scope,
        tx,
        health,
        metrics,
    } = *ctx;
    let State::Listing {
        mode,
        continue_token,
        ..
    } = &state
    else {
        return Ok(state);
    };
    let mode = *mode;
    if continue_token.is_none() {
        metrics
            .relists
            .get_or_create(&metrics::watch(&scope.cluster, &scope.watch))
            .inc();
        info!(watch = %scope.watch, namespace = scope.namespace.as_deref().unwrap_or("*"), mode = ?mode, "listing");
    }
    let mut lp = ListParams::default().limit(scope.page_size);
    lp.label_selector = scope.label_selector.clone();
    lp.field_selector = scope.field_selector.clone();
    lp.continue_token = continue_token.clone();
    let page = match scope.api.list(&lp).await {
        Ok(page) => page,
        Err(e) => return Err(failed(ctx, &e, state)),
    };
    ctx.served();
    health.progress();
    let uids = page
        .items
        .iter()
        .filter_map(|item| raw::meta_str(item, "uid"))
        .map(str::to_string)
        .collect();
    for item in page.items {
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
    let (next, then) = state.next(Input::Page {
        resource_version: page.metadata.resource_version,
        uids,
        continue_token: page.metadata.continue_,
    });
    if let Then::ListDone {
        resource_version,
        seen,
        mode,
    } = then
    {
        send(
            tx,
            Observed::ListDone {
                scope: scope.id,
                resource_version,
                seen,
                mode,
            },
        )
        .await?;
        health.synced.store(true, Ordering::Relaxed);
        health.clear_failing();
    }
    Ok(next)
}

/// Watching: opens a watch and reports its events until it ends, goes idle or fails.
async fn watch<A: ListWatch>(ctx: &Ctx<'_, A>, mut state: State) -> Result<State, StepError> {
    let Ctx {
        scope,
        health,
        metrics,
        ..
    } = *ctx;
    let State::Watching { rv, .. } = &state else {
        return Ok(state);
    };
    metrics
        .watch_restarts
        .get_or_create(&metrics::watch(&scope.cluster, &scope.watch))
        .inc();
    let mut wp = WatchParams::default().timeout(290);
    wp.label_selector = scope.label_selector.clone();
    wp.field_selector = scope.field_selector.clone();
    let mut stream = match scope.api.watch(&wp, rv).await {
        Ok(s) => s,
        Err(e) => return Err(failed(ctx, &e, state)),
    };
    ctx.served();
    health.progress();
    health.synced.store(true, Ordering::Relaxed);
    health.clear_failing();
    loop {
        let input = match tokio::time::timeout(IDLE_WATCH, stream.try_next()).await {
            Err(_) => {
                debug!(watch = %scope.watch, "watch silent too long; reopening");
                Input::Idle
            }
            // The server closed the watch (timeout): reopen from where we are.
            Ok(Ok(None)) => {
                health.progress();
                Input::Ended
            }
            Ok(Err(e)) => {
                let failed = failed(ctx, &e, state);
                // An undecodable event is no progress: a stream of them must not look
                // alive, and the machine relists after a few.
                if !matches!(
                    failed,
                    StepError::Failed {
                        failure: Failure::Undecodable,
                        ..
                    }
                ) {
                    health.progress();
                }
                // Progress made so far is kept: retry from the last resourceVersion.
                debug!(watch = %scope.watch, error = %e, "watch stream error");
                return Err(failed);
            }
            Ok(Ok(Some(ev))) => {
                health.progress();
                report(ctx, ev, &state).await?
            }
        };
        let (next, then) = state.next(input);
        state = next;
        if !matches!(then, Then::Read) {
            return Ok(state);
        }
    }
}

/// Sends one watch event to capture; the machine's input for it. `state` is where the
/// watch is, to resume from if the event is an error.
async fn report<A: ListWatch>(
    ctx: &Ctx<'_, A>,
    ev: WatchEvent<serde_json::Value>,
    state: &State,
) -> Result<Input, StepError> {
    let scope = ctx.scope;
    let rv_of = |o: &serde_json::Value| raw::meta_str(o, "resourceVersion").map(str::to_string);
    let input = match ev {
        WatchEvent::Added(o) | WatchEvent::Modified(o) => {
            let received = SystemTime::now();
            let resource_version = rv_of(&o);
            send(
                ctx.tx,
                Observed::Upsert {
                    scope: scope.id,
                    object: raw::with_type(&scope.resource, o),
                    origin: Origin::Watch,
                    received,
                },
            )
            .await?;
            Input::Changed { resource_version }
        }
        WatchEvent::Deleted(o) => {
            let received = SystemTime::now();
            let resource_version = rv_of(&o);
            send(
                ctx.tx,
                Observed::Delete {
                    scope: scope.id,
                    object: raw::with_type(&scope.resource, o),
                    received,
                },
            )
            .await?;
            Input::Changed { resource_version }
        }
        WatchEvent::Bookmark(b) => {
            send(
                ctx.tx,
                Observed::Bookmark {
                    scope: scope.id,
                    resource_version: b.metadata.resource_version.clone(),
                },
            )
            .await?;
            Input::Bookmark {
                resource_version: b.metadata.resource_version,
            }
        }
        WatchEvent::Error(status) => {
            let failure = Failure::from_code(status.code);
            let message = if failure.unavailable() {
                describe(ctx, failure, &status.message, state)
            } else {
                format!("{} (code {})", status.message, status.code)
            };
            return Err(StepError::Failed {
                failure,
                message,
                resume: state.clone(),
            });
        }
    };
    Ok(input)
}
