//! The capture stage: turns what the watch loops observed into committed events.
//!
//! A single task owns every write to the store's object states, outbox and checkpoints, so
//! there is no write contention and per-object order is the order the server reported.
//! For each observation it looks up the last published state, decides (pure `diff` and
//! `event` code) whether and what to publish, and appends to a batch. A batch is
//! committed in one transaction, flushed, and only then announced to the dispatchers as
//! durable. A failing store read while the batch is built, or a failing commit (disk full,
//! I/O error), fails the whole batch: nothing of it is written, so no checkpoint moves past
//! an observation that did not become state and events. The batch is built again from the
//! same observations until it commits, and nothing is dropped: the bounded channel from
//! the watches fills and the watches wait.
//!
//! Observations come from the watches; [`Command`]s (on-demand snapshots) come from the
//! operator on a channel of their own. The parts:
//!
//! * `batch.rs`: `BatchBuilder`, the batch and the in-batch view of states not yet
//!   committed, through which every read and write goes;
//! * `observe.rs`: upserts, deletes, bookmarks;
//! * `filter.rs`: the watch's `filter` verdict for a change, and its error policy;
//! * `reconcile.rs`: a list's end, deletions inferred for objects the list did not see;
//! * `snapshot.rs`: on-demand snapshots, one page per batch;
//! * `commit.rs`: backpressure on a full outbox; building and committing a batch, again
//!   after a backoff and a reopen of the store while that fails;
//! * this file: the loop that fills batches from both channels.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use crbridge_sink_api::ChangeKind;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

mod batch;
mod command;
mod commit;
mod filter;
mod observe;
mod reconcile;
mod scopes;
mod snapshot;

pub use command::{Command, SnapshotDone, SnapshotRequest};
pub use scopes::NewScopes;

use crate::config::{FilterErrors, InitialMode};
use crate::diff::Rules;
use crate::event::{self, Change, Identity};
use crate::filter::Filter;
use crate::metrics::{self, Metrics};
use crate::redact::Redactor;
use crate::store::{checkpoint_key, now_ms, OutboxEntry, Store, StoreError};
use crate::watch::{Observed, ScopeId};
use batch::BatchBuilder;
use snapshot::{PageWritten, Snapshotting};

/// How many observations at most go into one transaction.
const MAX_BATCH: usize = 512;

/// What capture needs to know about one watch scope.
#[derive(Debug, Clone)]
pub struct ScopeRules {
    /// Watch name.
    pub watch: String,
    /// Namespace of the scope (`None`: all).
    pub namespace: Option<String>,
    /// Event identity of the kind.
    pub identity: Identity,
    /// Normalization rules.
    pub rules: Rules,
    /// Which change kinds are published (`events` in the config).
    pub events: HashSet<ChangeKind>,
    /// What the very first start emits.
    pub initial: InitialMode,
    /// The kind appeared in its group while the group was already watched (a whole-group
    /// watch): its first list holds objects created since, published as `created`
    /// whatever `initial` says.
    pub appeared: bool,
    /// Which changes are published (`filter`); `None`: all.
    pub filter: Option<Filter>,
    /// What a change does when `filter` fails on it.
    pub filter_errors: FilterErrors,
    /// Values replaced by keyed hashes before anything else (`redact`); `None`: none.
    pub redact: Option<Redactor>,
}

/// Counters of what capture decided.
#[derive(Debug, Default)]
pub struct CaptureStats {
    /// Updates dropped because nothing meaningful changed.
    pub suppressed: AtomicU64,
    /// Observations older than the stored state, ignored.
    pub stale: AtomicU64,
    /// False while commits fail.
    pub healthy: AtomicBool,
}

/// The capture task.
pub struct Capture {
    store: Store,
    scopes: Vec<ScopeRules>,
    durable: watch::Sender<u64>,
    stats: Arc<CaptureStats>,
    metrics: Arc<Metrics>,
    max_outbox_bytes: u64,
    /// Objects per page of an on-demand snapshot.
    snapshot_page: usize,
    /// Objects whose filter failure was logged.
    warned: filter::Warned,
    /// Scopes that start while capture runs (whole-group watches).
    new_scopes: Option<Arc<NewScopes>>,
}

/// What starts or continues a batch.
enum Next {
    Observed(Observed),
    Command(Command),
    /// The next page of a snapshot.
    Page(Snapshotting),
}

/// One input of a batch. Kept until the batch is committed: a batch whose building or
/// commit failed is built again from the same inputs, against the store as it is then.
enum Input {
    Observed(Observed),
    /// The next page of a snapshot.
    Page(Snapshotting),
}

/// Which channel closed.
enum Channel {
    Observed,
    Commands,
}

/// The two channels into capture, each dropped from here once all its senders are gone.
struct Inputs {
    observed: Option<mpsc::Receiver<Observed>>,
    commands: Option<mpsc::Receiver<Command>>,
}

impl Inputs {
    /// The next input; `None` once both channels are closed. Commands go first: they are
    /// rare, and an operator's request should not queue behind a flood of observations.
    async fn recv(&mut self) -> Option<Next> {
        async fn from<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
            match rx {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        }
        while self.observed.is_some() || self.commands.is_some() {
            let Inputs { observed, commands } = &mut *self;
            // `None` inside: that channel closed.
            let next = tokio::select! {
                biased;
                c = from(commands) => c.map(Next::Command).ok_or(Channel::Commands),
                o = from(observed) => o.map(Next::Observed).ok_or(Channel::Observed),
            };
            match next {
                Ok(next) => return Some(next),
                Err(Channel::Commands) => self.commands = None,
                Err(Channel::Observed) => self.observed = None,
            }
        }
        None
    }

    /// The next input if one is waiting, commands first.
    fn try_recv(&mut self) -> Option<Next> {
        if let Some(Ok(c)) = self.commands.as_mut().map(mpsc::Receiver::try_recv) {
            return Some(Next::Command(c));
        }
        let o = self.observed.as_mut()?.try_recv().ok()?;
        Some(Next::Observed(o))
    }
}

impl Capture {
    /// Capture over `scopes` (indexed by [`ScopeId`]), announcing durable sequence numbers
    /// on `durable`.
    pub fn new(
        store: Store,
        scopes: Vec<ScopeRules>,
        durable: watch::Sender<u64>,
        stats: Arc<CaptureStats>,
    ) -> Self {
        stats.healthy.store(true, Ordering::Relaxed);
        Capture {
            store,
            scopes,
            durable,
            stats,
            metrics: Arc::new(Metrics::new()),
            max_outbox_bytes: u64::MAX,
            snapshot_page: MAX_BATCH,
            warned: filter::Warned::default(),
            new_scopes: None,
        }
    }

    /// Takes the rules of scopes started after it from `new` (kinds a whole-group watch
    /// finds later); their ids continue the ones given to [`Capture::new`].
    pub fn with_new_scopes(mut self, new: Arc<NewScopes>) -> Self {
        self.new_scopes = Some(new);
        self
    }

    /// Adds the scopes registered since the last look. Called for every input before its
    /// scope is looked up: a scope is registered before its loop starts.
    fn adopt_new_scopes(&mut self) {
        if let Some(new) = &self.new_scopes {
            self.scopes.extend(new.take());
        }
    }

    /// Reports to these metrics (a private set otherwise).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Bounds the outbox: while it holds `bytes` or more (unacked by the slowest sink, so
    /// garbage collection cannot free it), capture waits and the watches with it. A watch
    /// held back long enough to lose its place in the server's history recovers through a
    /// relist and reconcile, so final states are never lost.
    pub fn with_max_outbox_bytes(mut self, bytes: u64) -> Self {
        self.max_outbox_bytes = bytes;
        self
    }

    /// Runs until every sender of `observed` and of `commands` is dropped, then returns
    /// after the last commit. `shutdown` only ends a wait for room in a full outbox.
    pub async fn run(
        mut self,
        observed: mpsc::Receiver<Observed>,
        commands: mpsc::Receiver<Command>,
        shutdown: CancellationToken,
    ) {
        let mut inputs = Inputs {
            observed: Some(observed),
            commands: Some(commands),
        };
        // On-demand snapshots with objects left: the next page of the first starts the next
        // batch. Other observations share the batches, so watches never wait for a whole
        // snapshot.
        let mut carry: VecDeque<Snapshotting> = VecDeque::new();
        loop {
            let first = match carry.pop_front() {
                Some(s) => Next::Page(s),
                None => match inputs.recv().await {
                    Some(next) => next,
                    None => break,
                },
            };
            if !self.wait_for_room(&shutdown).await {
                continue;
            }
            let (taken, deferred) = self.take(first, &mut inputs);
            // The inputs stay here until their batch is committed: a batch that fails is
            // built again from them.
            let (page, last) = self.commit(|batch| self.build(&taken, batch)).await;
            // A snapshot moves on only once its page is committed.
            let snapshot = taken.into_iter().find_map(|input| match input {
                Input::Page(s) => Some(s),
                Input::Observed(_) => None,
            });
            if let (Some(mut s), Some(page)) = (snapshot, page) {
                if s.advance(page) {
                    carry.push_back(s);
                } else {
                    s.reply(last);
                }
            }
            carry.extend(deferred);
        }
        debug!("capture stopped: all watches ended");
    }

    /// Takes `first` and whatever else is waiting, up to [`MAX_BATCH`] inputs, for one
    /// batch. At most one snapshot page goes into a batch, so a batch stays within one page
    /// plus [`MAX_BATCH`] observations however many snapshots are requested at once; the
    /// other snapshots are returned apart, in the order they came, to start later batches.
    fn take(&mut self, first: Next, inputs: &mut Inputs) -> (Vec<Input>, Vec<Snapshotting>) {
        let mut taken = Vec::new();
        let mut deferred = Vec::new();
        let mut paged = false;
        let mut pending = Some(first);
        let mut n = 0;
        while let Some(next) = pending.take() {
            n += 1;
            self.adopt_new_scopes();
            let snapshot = match next {
                Next::Page(s) => Some(s),
                Next::Command(Command::Snapshot { scope, request }) => {
                    Some(Snapshotting::new(scope, request))
                }
                Next::Observed(obs) => {
                    self.metrics
                        .observed
                        .get_or_create(&{
                            let s = &self.scopes[obs.scope()];
                            metrics::watch(&s.identity.cluster, &s.watch)
                        })
                        .inc();
                    taken.push(Input::Observed(obs));
                    None
                }
            };
            if let Some(s) = snapshot {
                if std::mem::replace(&mut paged, true) {
                    deferred.push(s);
                } else {
                    taken.push(Input::Page(s));
                }
            }
            if n < MAX_BATCH {
                pending = inputs.try_recv();
            }
        }
        (taken, deferred)
    }

    /// Adds what `taken` changes to `batch`, in order; returns what the snapshot page among
    /// them wrote, if there is one. A failing store read fails the whole batch: skipping
    /// one observation would let the batch's checkpoints move past it.
    fn build(
        &self,
        taken: &[Input],
        batch: &mut BatchBuilder<'_>,
    ) -> Result<Option<PageWritten>, StoreError> {
        let mut written = None;
        for input in taken {
            match input {
                Input::Observed(obs) => self.observe(obs, batch)?,
                Input::Page(s) => written = Some(self.snapshot_page(s, batch)?),
            }
        }
        Ok(written)
    }

    /// Moves the scope's checkpoint to `rv` when the batch commits.
    fn checkpoint(&self, scope: ScopeId, rv: String, batch: &mut BatchBuilder<'_>) {
        let s = &self.scopes[scope];
        batch.checkpoint(checkpoint_key(&s.watch, s.namespace.as_deref()), rv);
    }

    /// The outbox entry for `change`, unless the scope does not publish its kind or the
    /// object cannot be turned into an event.
    fn entry(&self, scope: ScopeId, change: &Change<'_>) -> Option<OutboxEntry> {
        let s = &self.scopes[scope];
        if change.kind != ChangeKind::Snapshot && !s.events.contains(&change.kind) {
            return None;
        }
        match event::build(&s.identity, change) {
            Ok(event) => {
                let labels =
                    metrics::watch_type(&s.identity.cluster, &s.watch, change.kind.as_str());
                self.metrics.events.get_or_create(&labels).inc();
                if change.inferred {
                    self.metrics.inferred.get_or_create(&labels).inc();
                }
                Some(OutboxEntry {
                    watch: s.watch.clone(),
                    sinks: None,
                    written_ms: now_ms(),
                    observed_us: micros(change.observed),
                    event,
                })
            }
            Err(e) => {
                warn!(watch = %s.watch, error = %e, "object cannot be turned into an event; skipped");
                None
            }
        }
    }
}

/// Microseconds since the epoch.
fn micros(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// True unless `candidate` is known to be older than or equal to `stored`.
/// resourceVersions are opaque to clients, but every API server backed by etcd uses the
/// etcd revision, an integer; when either does not parse, nothing is assumed.
pub fn is_newer(candidate: &str, stored: &str) -> bool {
    match (candidate.parse::<u64>(), stored.parse::<u64>()) {
        (Ok(c), Ok(s)) => c > s,
        _ => candidate != stored,
    }
}

#[cfg(test)]
mod tests;
