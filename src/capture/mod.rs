//! The capture stage: turns what the watch loops observed into committed events.
//!
//! A single task owns every write to the store's object states, outbox and checkpoints, so
//! there is no write contention and per-object order is the order the server reported.
//! For each observation it looks up the last published state, decides (pure `diff` and
//! `event` code) whether and what to publish, and appends to a [`Batch`]. A batch is
//! committed in one transaction, flushed, and only then announced to the dispatchers as
//! durable. A failing commit (disk full, I/O error) is retried with backoff and nothing is
//! dropped: the bounded channel from the watches fills and the watches wait.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crbridge_sink_api::ChangeKind;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::backoff::Backoff;
use crate::config::InitialMode;
use crate::diff::{self, Rules, Verdict};
use crate::event::{self, Change, Identity};
use crate::metrics::{self, Metrics};
use crate::store::{
    checkpoint_key, now_ms, object_key, object_prefix, Batch, ObjectKey, OutboxEntry, Store,
    StoredObject, Write,
};
use crate::watch::{ListMode, Observed, Origin, ScopeId, SnapshotDone, SnapshotRequest};

/// Free space the state directory needs before a failed store is reopened: sled writes a
/// fresh segment (512 KiB) on recovery, and reopening on a full disk only fails again.
const MIN_FREE_TO_REOPEN: u64 = 4 << 20;

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
}

/// An on-demand snapshot being written, one page per batch.
struct Snapshotting {
    scope: ScopeId,
    request: SnapshotRequest,
    /// The last key written; the next page starts after it.
    after: Option<ObjectKey>,
    /// Events written so far.
    events: usize,
}

/// What starts or continues a batch.
enum Next {
    Observed(Observed),
    /// The next page of a snapshot.
    Page(Snapshotting),
}

/// Objects of one snapshot page, in key order.
type Page = Vec<(ObjectKey, Arc<StoredObject>)>;

/// A pending state per key within the batch being built (`None`: removed).
type Overlay = HashMap<ObjectKey, Option<Arc<StoredObject>>>;

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

    /// Waits until the outbox has room. False when `shutdown` fired first: the caller then
    /// leaves its observations uncommitted (the checkpoint did not move past them, so the
    /// next run observes them again).
    async fn wait_for_room(&self, shutdown: &CancellationToken) -> bool {
        let mut warned = false;
        loop {
            match self.store.outbox_bytes() {
                Ok(b) if b < self.max_outbox_bytes => break,
                Ok(b) => {
                    if !warned {
                        warn!(
                            outbox_bytes = b,
                            max_bytes = self.max_outbox_bytes,
                            "outbox full: watches paused until the slowest sink catches up"
                        );
                        warned = true;
                    }
                }
                Err(e) => warn!(error = %e, "reading outbox size failed"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
        if warned {
            info!("outbox has room again: watches resume");
        }
        true
    }

    /// Runs until every sender of `rx` is dropped, then returns after the last commit.
    /// `shutdown` only ends a wait for room in a full outbox.
    pub async fn run(self, mut rx: mpsc::Receiver<Observed>, shutdown: CancellationToken) {
        // On-demand snapshots with objects left: the next page of the first starts the next
        // batch. Other observations share the batches, so watches never wait for a whole
        // snapshot.
        let mut carry: VecDeque<Snapshotting> = VecDeque::new();
        loop {
            let first = match carry.pop_front() {
                Some(s) => Next::Page(s),
                None => match rx.recv().await {
                    Some(obs) => Next::Observed(obs),
                    None => break,
                },
            };
            if !self.wait_for_room(&shutdown).await {
                continue;
            }
            let mut batch = Batch::default();
            let mut overlay = Overlay::new();
            let mut pending = Some(first);
            let mut n = 0;
            let mut finished = Vec::new();
            // At most one snapshot page per batch: a batch stays within one page plus
            // MAX_BATCH observations however many snapshots are requested at once.
            let mut paged = false;
            while let Some(next) = pending.take() {
                n += 1;
                let snapshot = match next {
                    Next::Page(s) => Some(s),
                    Next::Observed(obs) => {
                        self.metrics
                            .observed
                            .get_or_create(&metrics::watch(&self.scopes[obs.scope()].watch))
                            .inc();
                        // A list's end scans stored state, which must not miss this
                        // batch's writes: it is handled against the overlay, after
                        // everything before it.
                        match self.observe(obs, &mut batch, &mut overlay) {
                            Ok(snapshot) => snapshot,
                            Err(e) => {
                                error!(error = %e, "reading state failed; observation dropped, the next relist reconciles it");
                                None
                            }
                        }
                    }
                };
                if let Some(mut s) = snapshot {
                    if std::mem::replace(&mut paged, true) {
                        carry.push_back(s);
                    } else {
                        match self.snapshot_page(&mut s, &mut batch, &overlay) {
                            Ok(true) => carry.push_back(s),
                            Ok(false) => finished.push(s),
                            Err(e) => {
                                error!(error = %e, snapshot = %s.request.id, events = s.events, "reading state failed; snapshot stopped");
                            }
                        }
                    }
                }
                if n < MAX_BATCH {
                    pending = rx.try_recv().ok().map(Next::Observed);
                }
            }
            let last = self.commit(batch).await;
            for s in finished {
                if let Some(tx) = s.request.done {
                    let _ = tx.send(SnapshotDone {
                        events: s.events,
                        last_seq: last,
                    });
                }
            }
        }
        debug!("capture stopped: all watches ended");
    }

    /// Commits and announces a batch; returns the durable sequence number after it.
    async fn commit(&self, batch: Batch) -> u64 {
        if batch.is_empty() {
            return *self.durable.borrow();
        }
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        loop {
            let started = std::time::Instant::now();
            let result = match self.store.commit(&batch) {
                Ok(last) => self.store.flush().await.map(|_| last),
                Err(e) => Err(e),
            };
            match result {
                Ok(last) => {
                    self.metrics
                        .commit_seconds
                        .observe(started.elapsed().as_secs_f64());
                    self.stats.healthy.store(true, Ordering::Relaxed);
                    if let Some(seq) = last {
                        self.durable.send_replace(seq);
                    }
                    return *self.durable.borrow();
                }
                Err(e) => {
                    self.stats.healthy.store(false, Ordering::Relaxed);
                    self.metrics.error("commit");
                    let wait = backoff.next_delay();
                    error!(error = %e, retry_in = ?wait, "committing changes failed; watches are paused until it succeeds");
                    tokio::time::sleep(wait).await;
                    // sled fails every later operation after an I/O error, even once the
                    // cause (a full disk) is gone: start it afresh once there is room again.
                    if self
                        .store
                        .space_available()
                        .is_none_or(|b| b >= MIN_FREE_TO_REOPEN)
                    {
                        let store = self.store.clone();
                        match tokio::task::spawn_blocking(move || store.reopen()).await {
                            Ok(Ok(())) => info!("state store reopened"),
                            Ok(Err(e)) => warn!(error = %e, "reopening the state store failed"),
                            Err(e) => warn!(error = %e, "reopening the state store panicked"),
                        }
                    }
                }
            }
        }
    }

    fn lookup(
        &self,
        overlay: &Overlay,
        key: &ObjectKey,
    ) -> Result<Option<Arc<StoredObject>>, crate::store::StoreError> {
        match overlay.get(key) {
            Some(v) => Ok(v.clone()),
            None => Ok(self.store.object(key)?.map(Arc::new)),
        }
    }

    /// Adds what `obs` changes to the batch. A snapshot request is handed back instead,
    /// for [`Capture::run`] to write page by page.
    fn observe(
        &self,
        obs: Observed,
        batch: &mut Batch,
        overlay: &mut Overlay,
    ) -> Result<Option<Snapshotting>, crate::store::StoreError> {
        match obs {
            Observed::Upsert {
                scope,
                object,
                origin,
                received,
            } => self
                .upsert(scope, object, origin, received, batch, overlay)
                .map(|()| None),
            Observed::Delete {
                scope,
                object,
                received,
            } => self
                .delete(scope, object, received, batch, overlay)
                .map(|()| None),
            Observed::Bookmark {
                scope,
                resource_version,
            } => {
                self.checkpoint(scope, resource_version, batch);
                Ok(None)
            }
            Observed::ListDone {
                scope,
                resource_version,
                seen,
                mode,
            } => self
                .list_done(scope, resource_version, &seen, mode, batch, overlay)
                .map(|()| None),
            Observed::Snapshot { scope, request } => Ok(Some(Snapshotting {
                scope,
                request,
                after: None,
                events: 0,
            })),
        }
    }

    fn checkpoint(&self, scope: ScopeId, rv: String, batch: &mut Batch) {
        let s = &self.scopes[scope];
        batch
            .checkpoints
            .push((checkpoint_key(&s.watch, s.namespace.as_deref()), rv));
    }

    fn entry(&self, scope: ScopeId, change: &Change<'_>) -> Option<OutboxEntry> {
        let s = &self.scopes[scope];
        if change.kind != ChangeKind::Snapshot && !s.events.contains(&change.kind) {
            return None;
        }
        match event::build(&s.identity, change) {
            Ok(event) => {
                let labels = metrics::watch_type(&s.watch, change.kind.as_str());
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

    fn upsert(
        &self,
        scope: ScopeId,
        mut object: Value,
        origin: Origin,
        received: SystemTime,
        batch: &mut Batch,
        overlay: &mut Overlay,
    ) -> Result<(), crate::store::StoreError> {
        let s = &self.scopes[scope];
        let Some(id) = ObjectId::of(&object) else {
            warn!(watch = %s.watch, "object without metadata.uid / resourceVersion ignored");
            return Ok(());
        };
        if origin == Origin::Watch {
            self.checkpoint(scope, id.rv.clone(), batch);
        }
        let key = object_key(&s.watch, &id.namespace, &id.uid);
        // An object a relist finds unchanged is recognised by its resourceVersion alone,
        // without reading (and paging in) its stored state. Watch events are nearly always
        // newer, so they go straight to the state read below.
        if matches!(origin, Origin::List(_)) && !overlay.contains_key(&key) {
            if let Some(stored_rv) = self.store.version(&key)? {
                if !is_newer(&id.rv, &stored_rv) {
                    self.stats.stale.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
            }
        }
        let prev = self.lookup(overlay, &key)?;
        if let Some(p) = &prev {
            if !is_newer(&id.rv, &p.resource_version) {
                self.stats.stale.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        }
        let changed_by = diff::changed_by(&object);
        diff::clean(&mut object);
        let inferred = matches!(origin, Origin::List(_));
        let (kind, patch) = match (&prev, origin) {
            (None, Origin::List(ListMode::Initial)) => match s.initial {
                InitialMode::Snapshot => (Some(ChangeKind::Snapshot), None),
                InitialMode::Skip => (None, None),
            },
            (None, _) => (Some(ChangeKind::Created), None),
            (Some(p), _) => match diff::compare(&p.object, &object, &s.rules) {
                Verdict::Noop => {
                    self.stats.suppressed.fetch_add(1, Ordering::Relaxed);
                    self.metrics
                        .suppressed
                        .get_or_create(&metrics::watch(&s.watch))
                        .inc();
                    return Ok(());
                }
                Verdict::Changed(patch) => (Some(ChangeKind::Updated), Some(patch)),
            },
        };
        // Serialized once: the event's data and the stored state share the text.
        let object_json = match serde_json::value::to_raw_value(&object) {
            Ok(json) => json,
            Err(e) => {
                warn!(watch = %s.watch, error = %e, "object cannot be serialized; skipped");
                return Ok(());
            }
        };
        let entry = kind.and_then(|kind| {
            self.entry(
                scope,
                &Change {
                    kind,
                    object: &object,
                    object_json: Some(&object_json),
                    resource_version: &id.rv,
                    patch: patch.as_ref(),
                    previous_resource_version: prev.as_ref().map(|p| p.resource_version.as_str()),
                    // A first-start snapshot is the object as it is, not a reconstruction.
                    inferred: inferred && kind != ChangeKind::Snapshot,
                    changed_by: changed_by.as_deref(),
                    observed: received,
                    snapshot_id: None,
                },
            )
        });
        batch.writes.push(Write::Put {
            key: key.clone(),
            resource_version: id.rv.clone(),
            object_json,
            event: entry,
        });
        let state = StoredObject {
            resource_version: id.rv,
            object,
        };
        overlay.insert(key, Some(Arc::new(state)));
        Ok(())
    }

    fn delete(
        &self,
        scope: ScopeId,
        mut object: Value,
        received: SystemTime,
        batch: &mut Batch,
        overlay: &mut Overlay,
    ) -> Result<(), crate::store::StoreError> {
        let s = &self.scopes[scope];
        let Some(id) = ObjectId::of(&object) else {
            return Ok(());
        };
        self.checkpoint(scope, id.rv.clone(), batch);
        let key = object_key(&s.watch, &id.namespace, &id.uid);
        // The event carries the deleted object from the watch; of the stored state only
        // its resourceVersion is needed.
        let prev_rv = match overlay.get(&key) {
            Some(state) => state.as_ref().map(|s| s.resource_version.clone()),
            None => self.store.version(&key)?,
        };
        let Some(prev_rv) = prev_rv else {
            // Never published (e.g. filtered or skipped): nothing to retract.
            return Ok(());
        };
        diff::clean(&mut object);
        let entry = self.entry(
            scope,
            &Change {
                kind: ChangeKind::Deleted,
                object: &object,
                object_json: None,
                resource_version: &id.rv,
                patch: None,
                previous_resource_version: Some(&prev_rv),
                inferred: false,
                changed_by: None,
                observed: received,
                snapshot_id: None,
            },
        );
        overlay.insert(key.clone(), None);
        batch.writes.push(Write::Remove { key, event: entry });
        Ok(())
    }

    /// Up to `limit` objects of the scope after key `after`, as this batch leaves them (the
    /// store overlaid with the batch's writes), in key order; and whether more follow.
    fn current_page(
        &self,
        scope: ScopeId,
        overlay: &Overlay,
        after: Option<&ObjectKey>,
        limit: usize,
    ) -> Result<(Page, bool), crate::store::StoreError> {
        let s = &self.scopes[scope];
        let prefix = object_prefix(&s.watch, s.namespace.as_deref());
        let mut out: Page = Vec::new();
        let mut more = false;
        for item in self.store.objects_after(&prefix, after) {
            let (key, stored) = item?;
            if overlay.contains_key(&key) {
                continue;
            }
            if out.len() == limit {
                more = true;
                break;
            }
            out.push((key, Arc::new(stored)));
        }
        // Every stored key not scanned sorts after every scanned one, so the `limit`
        // smallest of scanned and overlaid keys are the page.
        for (key, state) in overlay.iter() {
            let in_range = key.as_bytes().starts_with(&prefix)
                && after.is_none_or(|a| key.as_bytes() > a.as_bytes());
            if let (true, Some(state)) = (in_range, state) {
                out.push((key.clone(), state.clone()));
            }
        }
        out.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        if out.len() > limit {
            out.truncate(limit);
            more = true;
        }
        Ok((out, more))
    }

    /// One page of an on-demand snapshot: the current (last published) state of the next
    /// objects in key order. Each page goes into the outbox after everything captured for
    /// its objects before it and before anything later, so a snapshot event never
    /// overtakes a newer change of its object; a big scope is written page by page, never
    /// held in memory or in one transaction whole. True when objects remain.
    fn snapshot_page(
        &self,
        s: &mut Snapshotting,
        batch: &mut Batch,
        overlay: &Overlay,
    ) -> Result<bool, crate::store::StoreError> {
        let (page, more) =
            self.current_page(s.scope, overlay, s.after.as_ref(), self.snapshot_page)?;
        for (_, state) in &page {
            let entry = self.entry(
                s.scope,
                &Change {
                    kind: ChangeKind::Snapshot,
                    object: &state.object,
                    object_json: None,
                    resource_version: &state.resource_version,
                    patch: None,
                    previous_resource_version: Some(&state.resource_version),
                    inferred: false,
                    changed_by: None,
                    observed: SystemTime::now(),
                    snapshot_id: Some(&s.request.id),
                },
            );
            if let Some(mut entry) = entry {
                entry.sinks = s.request.sinks.clone();
                batch.writes.push(Write::Emit(entry));
                s.events += 1;
            }
        }
        if let Some((key, _)) = page.into_iter().last() {
            s.after = Some(key);
        }
        Ok(more)
    }

    fn list_done(
        &self,
        scope: ScopeId,
        rv: String,
        seen: &HashSet<String>,
        mode: ListMode,
        batch: &mut Batch,
        overlay: &mut Overlay,
    ) -> Result<(), crate::store::StoreError> {
        let s = &self.scopes[scope];
        // Keys first: only the states of objects that are gone are read (a relist of 100k
        // objects would otherwise decode every stored state).
        let prefix = object_prefix(&s.watch, s.namespace.as_deref());
        let mut gone: Vec<ObjectKey> = Vec::new();
        for key in self.store.object_keys_with_prefix(&prefix) {
            let key = key?;
            if !overlay.contains_key(&key) && !seen.contains(key.uid()) {
                gone.push(key);
            }
        }
        gone.extend(
            overlay
                .iter()
                .filter(|(k, v)| {
                    v.is_some() && k.as_bytes().starts_with(&prefix) && !seen.contains(k.uid())
                })
                .map(|(k, _)| k.clone()),
        );
        gone.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for key in gone {
            let Some(stored) = self.lookup(overlay, &key)? else {
                continue;
            };
            let entry = self.entry(
                scope,
                &Change {
                    kind: ChangeKind::Deleted,
                    object: &stored.object,
                    object_json: None,
                    resource_version: &stored.resource_version,
                    patch: None,
                    previous_resource_version: Some(&stored.resource_version),
                    inferred: true,
                    changed_by: None,
                    observed: SystemTime::now(),
                    snapshot_id: None,
                },
            );
            overlay.insert(key.clone(), None);
            batch.writes.push(Write::Remove { key, event: entry });
        }
        debug!(watch = %s.watch, mode = ?mode, resource_version = %rv, "list reconciled");
        self.checkpoint(scope, rv, batch);
        Ok(())
    }
}

/// The identifying fields of a raw object.
struct ObjectId {
    uid: String,
    namespace: String,
    rv: String,
}

impl ObjectId {
    fn of(object: &Value) -> Option<ObjectId> {
        let meta = object.get("metadata")?;
        let s = |k: &str| meta.get(k).and_then(Value::as_str).map(str::to_string);
        Some(ObjectId {
            uid: s("uid")?,
            namespace: s("namespace").unwrap_or_default(),
            rv: s("resourceVersion")?,
        })
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
