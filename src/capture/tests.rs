//! Capture against a real (temporary) store, fed observations directly: no server needed.

use super::*;
use crate::config::PayloadMode;
use crate::store::{object_key, object_prefix, StoreOptions};
use crate::watch::{ListMode, Origin};
use serde_json::{json, Value};

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    tx: mpsc::Sender<Observed>,
    commands: mpsc::Sender<Command>,
    durable: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
    stats: Arc<CaptureStats>,
    metrics: Arc<Metrics>,
}

pub(super) fn rules(initial: InitialMode) -> ScopeRules {
    ScopeRules {
        watch: "widgets".into(),
        namespace: None,
        identity: Identity {
            cluster: "c1".into(),
            type_prefix: "io.crbridge.resource".into(),
            group: "example.com".into(),
            version: "v1".into(),
            kind: "Widget".into(),
            plural: "widgets".into(),
            payload: PayloadMode::FullPatch,
            dataschema: String::new(),
        },
        rules: Rules::new(false, &[]).unwrap(),
        events: [
            ChangeKind::Created,
            ChangeKind::Updated,
            ChangeKind::Deleted,
        ]
        .into_iter()
        .collect(),
        initial,
        appeared: false,
        filter: None,
        filter_errors: FilterErrors::Publish,
        redact: None,
    }
}

fn fixture(initial: InitialMode) -> Fixture {
    fixture_paged(initial, MAX_BATCH)
}

/// A fixture whose on-demand snapshots write `page` objects per batch.
fn fixture_paged(initial: InitialMode, page: usize) -> Fixture {
    fixture_with(rules(initial), page)
}

/// A fixture over one scope with `rules`.
fn fixture_with(rules: ScopeRules, page: usize) -> Fixture {
    fixture_growing(rules, page, None)
}

/// A fixture over one scope with `rules`, taking the scopes registered in `new` while it
/// runs (as whole-group watches register kinds).
fn fixture_growing(rules: ScopeRules, page: usize, new: Option<Arc<NewScopes>>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    let (tx, rx) = mpsc::channel(16);
    let (commands, crx) = mpsc::channel(16);
    let (dtx, durable) = watch::channel(0);
    let stats = Arc::new(CaptureStats::default());
    let metrics = Arc::new(Metrics::new());
    let mut cap =
        Capture::new(store.clone(), vec![rules], dtx, stats.clone()).with_metrics(metrics.clone());
    cap.snapshot_page = page;
    if let Some(new) = new {
        cap = cap.with_new_scopes(new);
    }
    let task = tokio::spawn(cap.run(rx, crx, CancellationToken::new()));
    Fixture {
        _dir: dir,
        store,
        tx,
        commands,
        durable,
        task,
        stats,
        metrics,
    }
}

fn widget(uid: &str, rv: u64, size: i64) -> Value {
    json!({"apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": format!("w-{uid}"), "namespace": "ns", "uid": uid, "resourceVersion": rv.to_string(),
            "managedFields": [{"manager": "tester", "time": "2026-01-01T00:00:00Z"}]},
        "spec": {"size": size}, "status": {"n": rv}})
}

impl Fixture {
    async fn send(&self, o: Observed) {
        self.tx.send(o).await.unwrap();
    }
    async fn upsert(&self, o: Value, origin: Origin) {
        self.send(Observed::Upsert {
            scope: 0,
            object: o,
            origin,
            received: std::time::SystemTime::now(),
        })
        .await;
    }
    async fn delete(&self, o: Value) {
        self.send(Observed::Delete {
            scope: 0,
            object: o,
            received: std::time::SystemTime::now(),
        })
        .await;
    }
    async fn list_done(&self, rv: &str, seen: &[&str], mode: ListMode) {
        self.send(Observed::ListDone {
            scope: 0,
            resource_version: rv.into(),
            seen: seen.iter().map(|s| s.to_string()).collect(),
            mode,
        })
        .await;
    }
    /// Requests an on-demand snapshot; the receiver hears when it is committed. Commands
    /// and observations travel on separate channels, so the request is sent once capture
    /// has taken every observation sent before it: the snapshot then follows them.
    async fn snapshot(
        &self,
        id: &str,
        sinks: Option<Vec<String>>,
    ) -> tokio::sync::oneshot::Receiver<SnapshotDone> {
        while self.tx.capacity() < self.tx.max_capacity() {
            tokio::task::yield_now().await;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.commands
            .send(Command::Snapshot {
                scope: 0,
                request: SnapshotRequest {
                    id: id.into(),
                    sinks,
                    done: Some(tx),
                },
            })
            .await
            .unwrap();
        rx
    }
    /// Closes the channel, waits for the last commit, returns (type, subject, inferred) of
    /// every event in the outbox.
    async fn finish(self) -> (Vec<(String, String, bool)>, Store, Arc<CaptureStats>) {
        drop(self.tx);
        drop(self.commands);
        self.task.await.unwrap();
        let durable = *self.durable.borrow();
        let events = self
            .store
            .outbox_range(1, durable)
            .map(|r| {
                let e = r.unwrap().1.event;
                let inferred =
                    e.extension("crbinferred") == Some(&crbridge_sink_api::Extension::Bool(true));
                (
                    e.ty.rsplit('.').next().unwrap().to_string(),
                    e.subject,
                    inferred,
                )
            })
            .collect();
        (events, self.store, self.stats)
    }
}

fn ev(ty: &str, name: &str, inferred: bool) -> (String, String, bool) {
    (ty.into(), format!("ns/w-{name}"), inferred)
}

#[tokio::test]
async fn watch_lifecycle_suppresses_noise_and_stale_versions() {
    let f = fixture(InitialMode::Snapshot);
    f.upsert(widget("a", 10, 1), Origin::Watch).await;
    f.upsert(widget("a", 11, 1), Origin::Watch).await; // status-only: suppressed
    f.upsert(widget("a", 12, 2), Origin::Watch).await; // real update
    f.upsert(widget("a", 11, 9), Origin::Watch).await; // older than stored: ignored
    f.delete(widget("a", 13, 2)).await;
    let (events, store, stats) = f.finish().await;
    assert_eq!(
        events,
        vec![
            ev("created", "a", false),
            ev("updated", "a", false),
            ev("deleted", "a", false)
        ]
    );
    assert_eq!(stats.suppressed.load(Ordering::Relaxed), 1);
    assert_eq!(stats.stale.load(Ordering::Relaxed), 1);
    assert_eq!(
        store
            .checkpoint(&checkpoint_key("widgets", None))
            .unwrap()
            .as_deref(),
        Some("13")
    );
    let update = store.outbox_range(2, 2).next().unwrap().unwrap().1.event;
    let data: Value = serde_json::from_str(update.data.get()).unwrap();
    assert_eq!(data["previousResourceVersion"], "10");
    // The patch is between normalized forms: what changed, no resourceVersion, and no
    // status (not included); the object is the full clean one.
    assert_eq!(
        data["patch"],
        json!([{"op": "replace", "path": "/spec/size", "value": 2}])
    );
    assert_eq!(data["object"]["metadata"]["resourceVersion"], "12");
    assert_eq!(data["object"]["status"]["n"], 12);
    assert!(data["object"]["metadata"].get("managedFields").is_none());
    assert_eq!(
        update.extension("crbchangedby"),
        Some(&crbridge_sink_api::Extension::String("tester".into()))
    );
}

#[tokio::test]
async fn relist_reconciles_creates_updates_and_deletes_as_inferred() {
    let f = fixture(InitialMode::Snapshot);
    // First start: two objects listed, snapshot events, checkpoint at the list's version.
    f.upsert(widget("a", 10, 1), Origin::List(ListMode::Initial))
        .await;
    f.upsert(widget("b", 11, 1), Origin::List(ListMode::Initial))
        .await;
    f.upsert(widget("c", 12, 1), Origin::List(ListMode::Initial))
        .await;
    f.list_done("12", &["a", "b", "c"], ListMode::Initial).await;
    // 410 later: a unchanged, b changed, c gone, d new.
    f.upsert(widget("a", 10, 1), Origin::List(ListMode::Relist))
        .await;
    f.upsert(widget("b", 20, 5), Origin::List(ListMode::Relist))
        .await;
    f.upsert(widget("d", 21, 1), Origin::List(ListMode::Relist))
        .await;
    f.list_done("22", &["a", "b", "d"], ListMode::Relist).await;
    let (events, store, _) = f.finish().await;
    assert_eq!(
        events,
        vec![
            ev("snapshot", "a", false),
            ev("snapshot", "b", false),
            ev("snapshot", "c", false),
            ev("updated", "b", true),
            ev("created", "d", true),
            ev("deleted", "c", true),
        ]
    );
    assert_eq!(
        store
            .checkpoint(&checkpoint_key("widgets", None))
            .unwrap()
            .as_deref(),
        Some("22")
    );
    assert_eq!(store.count_objects(&object_prefix("widgets", None)), 3);
}

#[tokio::test]
async fn a_relist_recognises_unchanged_objects_without_reading_their_states() {
    let f = fixture(InitialMode::Snapshot);
    f.upsert(widget("a", 10, 1), Origin::List(ListMode::Initial))
        .await;
    f.list_done("10", &["a"], ListMode::Initial).await;
    // Wait until the initial list is committed, then make a's state unreadable: only its
    // version can tell that the relisted object is unchanged.
    let mut durable = f.durable.clone();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        durable.wait_for(|seq| *seq >= 1),
    )
    .await
    .expect("the initial snapshot event was not committed within 10 s")
    .unwrap();
    f.store
        .overwrite_state_raw(&object_key("widgets", "ns", "a"), b"\x02unreadable");
    f.upsert(widget("a", 10, 1), Origin::List(ListMode::Relist))
        .await;
    let (events, _, stats) = f.finish().await;
    assert_eq!(events, vec![ev("snapshot", "a", false)]);
    assert_eq!(
        stats.stale.load(Ordering::Relaxed),
        1,
        "the unchanged object was not recognised as such"
    );
}

#[tokio::test]
async fn initial_skip_stores_silently_and_later_changes_publish() {
    let f = fixture(InitialMode::Skip);
    f.upsert(widget("a", 10, 1), Origin::List(ListMode::Initial))
        .await;
    f.list_done("10", &["a"], ListMode::Initial).await;
    f.upsert(widget("a", 11, 2), Origin::Watch).await;
    let (events, _, _) = f.finish().await;
    assert_eq!(events, vec![ev("updated", "a", false)]);
}

#[tokio::test]
async fn a_kind_that_appeared_in_its_group_lists_its_objects_as_created() {
    // Whatever `initial` says: the group was watched before the kind existed.
    for initial in [InitialMode::Snapshot, InitialMode::Skip] {
        let f = fixture_with(
            ScopeRules {
                appeared: true,
                ..rules(initial)
            },
            MAX_BATCH,
        );
        f.upsert(widget("a", 10, 1), Origin::List(ListMode::Initial))
            .await;
        f.list_done("10", &["a"], ListMode::Initial).await;
        let (events, _, _) = f.finish().await;
        assert_eq!(events, vec![ev("created", "a", true)], "{initial:?}");
    }
}

#[tokio::test]
async fn a_scope_registered_while_capture_runs_gets_its_own_rules_and_checkpoint() {
    let new = Arc::new(NewScopes::starting_at(1));
    let f = fixture_growing(rules(InitialMode::Snapshot), MAX_BATCH, Some(new.clone()));
    // As a whole-group watch does: registered first, then its loop observes.
    let id = new.add(ScopeRules {
        watch: "g/gadgets".into(),
        appeared: true,
        ..rules(InitialMode::Snapshot)
    });
    assert_eq!(id, 1);
    f.send(Observed::Upsert {
        scope: id,
        object: widget("a", 10, 1),
        origin: Origin::List(ListMode::Initial),
        received: std::time::SystemTime::now(),
    })
    .await;
    f.send(Observed::ListDone {
        scope: id,
        resource_version: "10".into(),
        seen: ["a".to_string()].into_iter().collect(),
        mode: ListMode::Initial,
    })
    .await;
    let (events, store, _) = f.finish().await;
    assert_eq!(events, vec![ev("created", "a", true)]);
    let (_, entry) = store.outbox_range(1, 1).next().unwrap().unwrap();
    assert_eq!(entry.watch, "g/gadgets");
    assert_eq!(
        store
            .checkpoint(&checkpoint_key("g/gadgets", None))
            .unwrap()
            .as_deref(),
        Some("10")
    );
    assert_eq!(
        store.checkpoint(&checkpoint_key("widgets", None)).unwrap(),
        None
    );
}

#[tokio::test]
async fn bookmarks_only_move_the_checkpoint() {
    let f = fixture(InitialMode::Snapshot);
    f.send(Observed::Bookmark {
        scope: 0,
        resource_version: "99".into(),
    })
    .await;
    let (events, store, _) = f.finish().await;
    assert!(events.is_empty());
    assert_eq!(
        store
            .checkpoint(&checkpoint_key("widgets", None))
            .unwrap()
            .as_deref(),
        Some("99")
    );
}

#[test]
fn resource_versions_compare_numerically_when_they_can() {
    assert!(is_newer("10", "9"));
    assert!(!is_newer("9", "10"));
    assert!(!is_newer("10", "10"));
    assert!(is_newer("abc", "abd"));
    assert!(!is_newer("abc", "abc"));
}

#[tokio::test]
async fn on_demand_snapshot_emits_every_current_object_once_per_request() {
    let f = fixture(InitialMode::Skip);
    f.upsert(widget("a", 10, 1), Origin::Watch).await;
    f.upsert(widget("b", 11, 1), Origin::Watch).await;
    f.upsert(widget("a", 12, 2), Origin::Watch).await;
    let rx = f.snapshot("req-1", Some(vec!["kafka".into()])).await;
    let done = rx.await.unwrap();
    assert_eq!(done.events, 2);
    // Nobody waits for this one.
    drop(f.snapshot("req-2", None).await);
    let (events, store, _) = f.finish().await;
    assert_eq!(
        events,
        vec![
            ev("created", "a", false),
            ev("created", "b", false),
            ev("updated", "a", false),
            ev("snapshot", "a", false),
            ev("snapshot", "b", false),
            ev("snapshot", "a", false),
            ev("snapshot", "b", false),
        ]
    );
    let entries: Vec<_> = store.outbox_range(4, 7).map(|r| r.unwrap().1).collect();
    assert_eq!(entries[0].sinks, Some(vec!["kafka".to_string()]));
    assert_eq!(entries[2].sinks, None);
    // The snapshot of a carries a's latest state; a second request gets new ids.
    let data: Value = serde_json::from_str(entries[0].event.data.get()).unwrap();
    assert_eq!(data["object"]["spec"]["size"], 2);
    assert_ne!(entries[0].event.id, entries[2].event.id);
    assert!(done.last_seq >= 5);
}

#[tokio::test]
async fn a_big_snapshot_is_written_page_by_page_between_other_changes() {
    // Pages of 2. On this current-thread runtime capture takes the six creations and b's
    // delete in one batch before the request is sent; f's update is queued behind the
    // request, so the batches after that are: page 1 and f's update; page 2; page 3.
    let f = fixture_paged(InitialMode::Skip, 2);
    for uid in ["a", "b", "c", "d", "e", "f"] {
        f.upsert(widget(uid, 10, 1), Origin::Watch).await;
    }
    f.delete(widget("b", 11, 1)).await;
    let rx = f.snapshot("req-big", None).await;
    f.upsert(widget("f", 12, 2), Origin::Watch).await;
    let done = rx.await.unwrap();
    assert_eq!(done.events, 5, "b was deleted before the snapshot");
    let (events, store, _) = f.finish().await;
    let mut expected: Vec<_> = ["a", "b", "c", "d", "e", "f"]
        .iter()
        .map(|uid| ev("created", uid, false))
        .collect();
    expected.extend([
        ev("deleted", "b", false),
        ev("snapshot", "a", false),
        ev("snapshot", "c", false),
        // f's update, queued behind the request, is committed with page 1 ...
        ev("updated", "f", false),
        ev("snapshot", "d", false),
        ev("snapshot", "e", false),
        ev("snapshot", "f", false),
    ]);
    assert_eq!(events, expected);
    // ... so f's snapshot event, after it, carries the updated state.
    let last = store.outbox_range(13, 13).next().unwrap().unwrap().1;
    let data: Value = serde_json::from_str(last.event.data.get()).unwrap();
    assert_eq!(data["object"]["spec"]["size"], 2);
    assert_eq!(done.last_seq, 13);
}

#[tokio::test]
async fn snapshots_requested_together_take_turns_one_page_per_batch() {
    let f = fixture_paged(InitialMode::Skip, 2);
    for uid in ["a", "b", "c"] {
        f.upsert(widget(uid, 10, 1), Origin::Watch).await;
    }
    let mut done = Vec::new();
    for id in ["req-1", "req-2"] {
        let rx = f.snapshot(id, None).await;
        done.push(rx);
    }
    for rx in done {
        assert_eq!(rx.await.unwrap().events, 3);
    }
    let (events, _, _) = f.finish().await;
    // req-2's first page waits for a batch of its own, after req-1's first page: each
    // request's events stay in key order, one page at a time.
    let snapshots: Vec<_> = events
        .iter()
        .filter(|e| e.0 == "snapshot")
        .map(|e| e.1.as_str())
        .collect();
    assert_eq!(
        snapshots,
        ["ns/w-a", "ns/w-b", "ns/w-c", "ns/w-a", "ns/w-b", "ns/w-c"]
    );
}

#[tokio::test]
async fn inputs_take_commands_first_and_end_when_both_channels_close() {
    let (otx, orx) = mpsc::channel(4);
    let (ctx, crx) = mpsc::channel(4);
    let mut inputs = Inputs {
        observed: Some(orx),
        commands: Some(crx),
    };
    let bookmark = || Observed::Bookmark {
        scope: 0,
        resource_version: "1".into(),
    };
    otx.send(bookmark()).await.unwrap();
    ctx.send(Command::Snapshot {
        scope: 0,
        request: SnapshotRequest {
            id: "r".into(),
            sinks: None,
            done: None,
        },
    })
    .await
    .unwrap();
    assert!(matches!(inputs.recv().await, Some(Next::Command(_))));
    assert!(matches!(inputs.try_recv(), Some(Next::Observed(_))));
    assert!(inputs.try_recv().is_none());
    // Either channel closing alone ends nothing.
    drop(ctx);
    otx.send(bookmark()).await.unwrap();
    assert!(matches!(inputs.recv().await, Some(Next::Observed(_))));
    drop(otx);
    assert!(inputs.recv().await.is_none());
}

impl Fixture {
    /// The scope's committed checkpoint.
    fn checkpoint(&self) -> Option<String> {
        self.store
            .checkpoint(&checkpoint_key("widgets", None))
            .unwrap()
    }

    /// Waits until the outbox holds `seq` entries, committed and announced.
    async fn committed(&self, seq: u64, what: &str) {
        let mut durable = self.durable.clone();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            durable.wait_for(|s| *s >= seq),
        )
        .await
        .unwrap_or_else(|_| panic!("{what} was not committed within 10 s"))
        .unwrap();
    }

    /// (type, subject, resourceVersion) of every committed event, read from the outbox.
    fn committed_events(&self) -> Vec<(String, String, String)> {
        let durable = *self.durable.borrow();
        self.store
            .outbox_range(1, durable)
            .map(|r| {
                let e = r.unwrap().1.event;
                // `sequence` is the resourceVersion zero-padded to 20 digits.
                let rv = match e.extension("sequence") {
                    Some(crbridge_sink_api::Extension::String(seq)) => {
                        seq.trim_start_matches('0').to_string()
                    }
                    other => panic!("event without a resourceVersion: {other:?}"),
                };
                (e.ty.rsplit('.').next().unwrap().to_string(), e.subject, rv)
            })
            .collect()
    }

    /// With the store's reads failing since before the observations of a change were sent:
    /// the checkpoint stays at `before` and the change's event `(type, name, rv)` is not
    /// committed while the reads fail, capture reports itself unhealthy; once the reads
    /// answer, the event is committed and the checkpoint reaches `after`.
    async fn holds_then_recovers(&self, before: &str, after: &str, event: (&str, &str, &str)) {
        let expected = (
            event.0.to_string(),
            format!("ns/w-{}", event.1),
            event.2.to_string(),
        );
        let held = self.committed_events().len() as u64;
        // A second failed read means the batch was built again, after the first attempt
        // had ended; a checkpoint that moved means it was committed without the change.
        let polled = async {
            while self.store.failed_reads() < 2 && self.checkpoint().as_deref() == Some(before) {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), polled)
            .await
            .expect("capture neither retried the failed read nor moved the checkpoint in 10 s");
        assert_eq!(
            self.checkpoint().as_deref(),
            Some(before),
            "the checkpoint moved past a change whose stored state could not be read"
        );
        assert!(
            !self.committed_events().contains(&expected),
            "the change was committed although its stored state could not be read"
        );
        assert!(
            !self.stats.healthy.load(Ordering::Relaxed),
            "capture reports itself healthy while its batch cannot be built"
        );
        self.store.fail_reads(false);
        self.committed(held + 1, "the change, once the store answered again,")
            .await;
        assert!(
            self.committed_events().contains(&expected),
            "{expected:?} missing from the outbox: {:?}",
            self.committed_events()
        );
        assert_eq!(self.checkpoint().as_deref(), Some(after));
        assert!(self.stats.healthy.load(Ordering::Relaxed));
    }
}

#[tokio::test]
async fn a_watch_update_whose_state_read_fails_is_retried_not_skipped() {
    let f = fixture(InitialMode::Snapshot);
    f.upsert(widget("a", 10, 1), Origin::Watch).await;
    f.committed(1, "a's creation").await;
    f.store.fail_reads(true);
    f.upsert(widget("a", 11, 2), Origin::Watch).await;
    f.holds_then_recovers("10", "11", ("updated", "a", "11"))
        .await;
    let (events, _, _) = f.finish().await;
    assert_eq!(
        events,
        vec![ev("created", "a", false), ev("updated", "a", false)]
    );
}

#[tokio::test]
async fn a_delete_whose_state_read_fails_is_retried_not_skipped() {
    let f = fixture(InitialMode::Snapshot);
    f.upsert(widget("a", 10, 1), Origin::Watch).await;
    f.committed(1, "a's creation").await;
    f.store.fail_reads(true);
    f.delete(widget("a", 12, 1)).await;
    f.holds_then_recovers("10", "12", ("deleted", "a", "12"))
        .await;
    let (events, store, _) = f.finish().await;
    assert_eq!(
        events,
        vec![ev("created", "a", false), ev("deleted", "a", false)]
    );
    assert_eq!(store.count_objects(&object_prefix("widgets", None)), 0);
}

#[tokio::test]
async fn a_list_end_whose_scan_fails_is_retried_not_skipped() {
    let f = fixture(InitialMode::Snapshot);
    f.upsert(widget("a", 10, 1), Origin::List(ListMode::Initial))
        .await;
    f.upsert(widget("b", 11, 1), Origin::List(ListMode::Initial))
        .await;
    f.list_done("12", &["a", "b"], ListMode::Initial).await;
    f.committed(2, "the initial list").await;
    // A relist that no longer sees b, then the watch's progress after it: the bookmark
    // must not carry the checkpoint past the list whose end could not be reconciled.
    f.store.fail_reads(true);
    f.list_done("20", &["a"], ListMode::Relist).await;
    f.send(Observed::Bookmark {
        scope: 0,
        resource_version: "21".into(),
    })
    .await;
    f.holds_then_recovers("12", "21", ("deleted", "b", "11"))
        .await;
    let (events, store, _) = f.finish().await;
    assert_eq!(
        events,
        vec![
            ev("snapshot", "a", false),
            ev("snapshot", "b", false),
            ev("deleted", "b", true),
        ]
    );
    assert_eq!(store.count_objects(&object_prefix("widgets", None)), 1);
}

// ---- filter: what is published, what is stored, and deletes ----

/// Rules with `filter` (and `filterErrors: drop` when `drop`).
fn filtered(initial: InitialMode, filter: &str, drop: bool) -> ScopeRules {
    ScopeRules {
        filter: Some(crate::filter::Filter::new(filter).unwrap()),
        filter_errors: if drop {
            FilterErrors::Drop
        } else {
            FilterErrors::Publish
        },
        ..rules(initial)
    }
}

/// Every committed event: (type, name, data).
fn events_with_data(store: &Store) -> Vec<(String, String, Value)> {
    store
        .outbox_range(1, u64::MAX)
        .map(|r| {
            let e = r.unwrap().1.event;
            let name = e.subject.rsplit('/').next().unwrap().to_string();
            let ty = e.ty.rsplit('.').next().unwrap().to_string();
            (ty, name, serde_json::from_str(e.data.get()).unwrap())
        })
        .collect()
}

fn watch_counter(
    f: &prometheus_client::metrics::family::Family<
        metrics::WatchLabel,
        prometheus_client::metrics::counter::Counter,
    >,
) -> u64 {
    f.get_or_create(&metrics::watch("c1", "widgets")).get()
}

#[tokio::test]
async fn a_filtered_change_is_not_stored_and_the_next_patch_goes_from_the_published_state() {
    let f = fixture_with(
        filtered(InitialMode::Snapshot, "object.spec.size >= 2", false),
        MAX_BATCH,
    );
    f.upsert(widget("a", 10, 1), Origin::Watch).await; // no match: silent, not stored
    f.upsert(widget("a", 11, 2), Origin::Watch).await; // first match: created
    f.upsert(widget("a", 12, 1), Origin::Watch).await; // no match: silent
    f.upsert(widget("a", 13, 3), Origin::Watch).await; // updated, from size 2
    f.delete(widget("a", 14, 3)).await; // was published: deleted
    f.upsert(widget("b", 15, 0), Origin::Watch).await; // never published
    f.delete(widget("b", 16, 0)).await; // ... so its delete is silent
    let metrics = f.metrics.clone();
    let (events, store, _) = f.finish().await;
    assert_eq!(
        events,
        vec![
            ev("created", "a", false),
            ev("updated", "a", false),
            ev("deleted", "a", false)
        ]
    );
    let data = events_with_data(&store);
    // First published on the server's update: created, with the whole object and no diff.
    assert_eq!(data[0].2["object"]["spec"]["size"], 2);
    assert!(data[0].2["previousResourceVersion"].is_null());
    // The update goes from what consumers saw (rv 11, size 2), not from the filtered rv 12.
    assert_eq!(data[1].2["previousResourceVersion"], "11");
    // Patches go between normalized forms (no resourceVersion, no status here).
    let norm = Rules::new(false, &[]).unwrap();
    let mut doc = norm.normalize(&data[0].2["object"]);
    let patch: json_patch::Patch = serde_json::from_value(data[1].2["patch"].clone()).unwrap();
    json_patch::patch(&mut doc, &patch).unwrap();
    assert_eq!(doc, norm.normalize(&data[1].2["object"]));
    assert!(data[1].2["patch"]
        .as_array()
        .unwrap()
        .contains(&json!({"op": "replace", "path": "/spec/size", "value": 3})));
    assert_eq!(data[2].2["previousResourceVersion"], "13");
    // The checkpoint moved past every change, published or not.
    assert_eq!(
        store
            .checkpoint(&checkpoint_key("widgets", None))
            .unwrap()
            .as_deref(),
        Some("16")
    );
    assert_eq!(store.count_objects(&object_prefix("widgets", None)), 0);
    assert_eq!(watch_counter(&metrics.filtered), 3);
    assert_eq!(watch_counter(&metrics.filter_errors), 0);
}

#[tokio::test]
async fn relists_neither_invent_nor_retract_objects_that_were_never_published() {
    let f = fixture_with(
        filtered(InitialMode::Snapshot, "object.spec.size >= 2", false),
        MAX_BATCH,
    );
    // First start: only b matches, so only b is in the snapshot and stored.
    f.upsert(widget("a", 10, 1), Origin::List(ListMode::Initial))
        .await;
    f.upsert(widget("b", 11, 2), Origin::List(ListMode::Initial))
        .await;
    f.list_done("11", &["a", "b"], ListMode::Initial).await;
    // A relist finds the same objects, then one where c never matched and is gone, and b
    // changed to a non-matching size.
    f.upsert(widget("a", 10, 1), Origin::List(ListMode::Relist))
        .await;
    f.upsert(widget("b", 11, 2), Origin::List(ListMode::Relist))
        .await;
    f.list_done("12", &["a", "b"], ListMode::Relist).await;
    f.upsert(widget("c", 13, 0), Origin::Watch).await;
    f.upsert(widget("b", 14, 1), Origin::List(ListMode::Relist))
        .await;
    f.list_done("15", &["a", "b"], ListMode::Relist).await;
    // a matches at last (seen by a relist): created, inferred.
    f.upsert(widget("a", 16, 5), Origin::List(ListMode::Relist))
        .await;
    f.list_done("17", &["a", "b"], ListMode::Relist).await;
    // Both gone while not watched: only what was published is retracted.
    f.list_done("18", &[], ListMode::Relist).await;
    let (events, store, _) = f.finish().await;
    assert_eq!(
        events,
        vec![
            ev("snapshot", "b", false),
            ev("created", "a", true),
            ev("deleted", "a", true),
            ev("deleted", "b", true),
        ]
    );
    let data = events_with_data(&store);
    // b's retraction carries what consumers last saw of it (size 2), not the filtered size.
    assert_eq!(data[3].2["object"]["spec"]["size"], 2);
    assert_eq!(store.count_objects(&object_prefix("widgets", None)), 0);
}

#[tokio::test]
async fn filter_errors_publish_by_default_and_drop_when_asked() {
    // `tier` is missing from every widget: the expression fails on each change.
    for (drop, want) in [
        (
            false,
            vec![ev("created", "a", false), ev("updated", "a", false)],
        ),
        (true, vec![]),
    ] {
        let f = fixture_with(
            filtered(InitialMode::Snapshot, "object.spec.tier == 'prod'", drop),
            MAX_BATCH,
        );
        f.upsert(widget("a", 10, 1), Origin::Watch).await;
        f.upsert(widget("a", 11, 2), Origin::Watch).await;
        let metrics = f.metrics.clone();
        let (events, _, _) = f.finish().await;
        assert_eq!(events, want, "filterErrors drop: {drop}");
        assert_eq!(watch_counter(&metrics.filter_errors), 2);
    }
}

#[test]
fn a_failing_filter_is_logged_once_per_object() {
    let warned = super::filter::Warned::default();
    assert!(warned.first("w", "a"));
    assert!(!warned.first("w", "a"));
    assert!(warned.first("w", "b"));
    assert!(warned.first("other", "a"));
    warned.forget("w", "a");
    assert!(warned.first("w", "a"));
}

#[tokio::test]
async fn snapshots_are_filtered_with_type_snapshot() {
    let f = fixture_with(
        filtered(
            InitialMode::Snapshot,
            "type != 'snapshot' || object.spec.size >= 3",
            false,
        ),
        MAX_BATCH,
    );
    f.upsert(widget("a", 10, 1), Origin::Watch).await;
    f.upsert(widget("b", 11, 5), Origin::Watch).await;
    let done = f.snapshot("s1", None).await;
    let snapshot = done.await.unwrap();
    assert_eq!(snapshot.events, 1);
    let (events, _, _) = f.finish().await;
    assert_eq!(
        events,
        vec![
            ev("created", "a", false),
            ev("created", "b", false),
            ev("snapshot", "b", false)
        ]
    );
}

#[tokio::test]
async fn initial_skip_with_a_filter_stores_only_matching_objects() {
    let f = fixture_with(
        filtered(InitialMode::Skip, "object.spec.size >= 2", false),
        MAX_BATCH,
    );
    f.upsert(widget("a", 10, 1), Origin::List(ListMode::Initial))
        .await;
    f.upsert(widget("b", 11, 2), Origin::List(ListMode::Initial))
        .await;
    f.list_done("11", &["a", "b"], ListMode::Initial).await;
    f.delete(widget("a", 12, 1)).await; // never published: silent
    f.delete(widget("b", 13, 2)).await; // known to consumers (skip): retracted
    let (events, _, _) = f.finish().await;
    assert_eq!(events, vec![ev("deleted", "b", false)]);
}

mod filter_model {
    //! Random histories of a few objects against a model of the filter semantics.

    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// Object `i` gets `size` (created if it does not exist).
        Set(usize, i64),
        /// Object `i` is deleted, observed by the watch.
        Delete(usize),
        /// Object `i` is deleted while not watched (seen only by the next relist).
        Vanish(usize),
        /// A relist of every existing object.
        Relist,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..3usize, 0..4i64).prop_map(|(i, s)| Op::Set(i, s)),
            1 => (0..3usize).prop_map(Op::Delete),
            1 => (0..3usize).prop_map(Op::Vanish),
            1 => Just(Op::Relist),
        ]
    }

    /// An object on the server: uid, resourceVersion, size.
    #[derive(Debug, Clone)]
    struct Live {
        uid: String,
        rv: u64,
        size: i64,
    }

    /// (type, uid, size, inferred) the semantics say is published; the size is that of the
    /// event's object.
    fn model(ops: &[Op]) -> Vec<(String, String, i64, bool)> {
        let passes = |size: i64| size % 2 == 0;
        let mut live: Vec<Option<Live>> = vec![None; 3];
        // What consumers last saw of each uid.
        let mut published: std::collections::HashMap<String, i64> = Default::default();
        let mut out = Vec::new();
        let mut next_uid = 0;
        let mut rv = 0;
        let change = |uid: &str,
                      size: i64,
                      inferred: bool,
                      published: &mut std::collections::HashMap<String, i64>,
                      out: &mut Vec<(String, String, i64, bool)>| {
            let kind = match published.get(uid) {
                Some(p) if *p == size => return,
                Some(_) => "updated",
                None => "created",
            };
            if passes(size) {
                published.insert(uid.to_owned(), size);
                out.push((kind.to_owned(), uid.to_owned(), size, inferred));
            }
        };
        for op in ops {
            rv += 1;
            match *op {
                Op::Set(i, size) => {
                    let l = live[i].get_or_insert_with(|| {
                        next_uid += 1;
                        Live {
                            uid: format!("u{next_uid}"),
                            rv,
                            size,
                        }
                    });
                    l.rv = rv;
                    l.size = size;
                    let uid = l.uid.clone();
                    change(&uid, size, false, &mut published, &mut out);
                }
                Op::Delete(i) => {
                    // A watched delete carries the object as the server last had it.
                    if let Some(l) = live[i].take() {
                        if published.remove(&l.uid).is_some() {
                            out.push(("deleted".into(), l.uid, l.size, false));
                        }
                    }
                }
                Op::Vanish(i) => {
                    live[i] = None;
                }
                Op::Relist => {
                    for l in live.iter().flatten() {
                        change(&l.uid, l.size, true, &mut published, &mut out);
                    }
                    let mut gone: Vec<(String, i64)> = published
                        .iter()
                        .filter(|(uid, _)| !live.iter().flatten().any(|l| &&l.uid == uid))
                        .map(|(u, s)| (u.clone(), *s))
                        .collect();
                    gone.sort();
                    for (uid, size) in gone {
                        published.remove(&uid);
                        out.push(("deleted".into(), uid, size, true));
                    }
                }
            }
        }
        out
    }

    fn object(uid: &str, rv: u64, size: i64) -> Value {
        let mut o = widget(uid, rv, size);
        o["metadata"]["name"] = json!(uid);
        o
    }

    async fn run(ops: &[Op]) -> Vec<(String, String, i64, bool)> {
        let f = fixture_with(
            filtered(InitialMode::Snapshot, "object.spec.size % 2 == 0", false),
            MAX_BATCH,
        );
        let mut live: Vec<Option<(String, u64, i64)>> = vec![None; 3];
        let mut next_uid = 0;
        let mut rv = 0;
        // The first list: empty, so that later lists are relists.
        f.list_done("0", &[], ListMode::Initial).await;
        for op in ops {
            rv += 1;
            match *op {
                Op::Set(i, size) => {
                    let l = live[i].get_or_insert_with(|| {
                        next_uid += 1;
                        (format!("u{next_uid}"), rv, size)
                    });
                    l.1 = rv;
                    l.2 = size;
                    f.upsert(object(&l.0, rv, size), Origin::Watch).await;
                }
                Op::Delete(i) => {
                    if let Some((uid, _, size)) = live[i].take() {
                        f.delete(object(&uid, rv, size)).await;
                    }
                }
                Op::Vanish(i) => live[i] = None,
                Op::Relist => {
                    let mut seen = Vec::new();
                    for (uid, lrv, size) in live.iter().flatten() {
                        f.upsert(object(uid, *lrv, *size), Origin::List(ListMode::Relist))
                            .await;
                        seen.push(uid.as_str());
                    }
                    f.list_done(&rv.to_string(), &seen, ListMode::Relist).await;
                }
            }
        }
        let store = f.finish().await.1;
        let events = events_with_data(&store);
        // Every update's patch turns the object consumers last saw into the new one
        // (their normalized forms: patches leave out what does not count as a change).
        let norm = Rules::new(false, &[]).unwrap();
        let mut last: std::collections::HashMap<String, Value> = Default::default();
        for (ty, uid, data) in &events {
            if ty == "updated" {
                let mut doc = last[uid].clone();
                let patch: json_patch::Patch =
                    serde_json::from_value(data["patch"].clone()).unwrap();
                json_patch::patch(&mut doc, &patch).unwrap();
                assert_eq!(&doc, &norm.normalize(&data["object"]), "patch of {uid}");
            }
            last.insert(uid.clone(), norm.normalize(&data["object"]));
        }
        store
            .outbox_range(1, u64::MAX)
            .zip(events)
            .map(|(r, (ty, uid, data))| {
                let inferred = r.unwrap().1.event.extension("crbinferred")
                    == Some(&crbridge_sink_api::Extension::Bool(true));
                let size = data["object"]["spec"]["size"].as_i64().unwrap();
                (ty, uid, size, inferred)
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn published_events_follow_the_filter_semantics(ops in proptest::collection::vec(op(), 0..24)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let got = rt.block_on(run(&ops));
            prop_assert_eq!(got, model(&ops));
        }
    }
}

#[tokio::test]
async fn redacted_values_are_hashed_before_they_are_compared_stored_or_published() {
    let redactor = crate::redact::Redactor::new(
        crate::redact::RedactKey::new(b"0123456789abcdef"),
        &["/spec/password".to_string()],
    );
    let f = fixture_with(
        ScopeRules {
            redact: Some(redactor.clone()),
            ..rules(InitialMode::Snapshot)
        },
        MAX_BATCH,
    );
    let with_password = |rv: u64, size: i64, password: &str| {
        let mut o = widget("a", rv, size);
        o["spec"]["password"] = json!(password);
        o
    };
    f.upsert(with_password(10, 1, "hunter2-raw"), Origin::Watch)
        .await;
    f.upsert(with_password(11, 2, "hunter2-raw"), Origin::Watch)
        .await;
    f.upsert(with_password(12, 2, "swordfish-raw"), Origin::Watch)
        .await; // still a change
    f.upsert(with_password(13, 3, "swordfish-raw"), Origin::Watch)
        .await;
    let key = object_key("widgets", "ns", "a");
    let (events, store, _) = f.finish().await;
    assert_eq!(
        events,
        vec![
            ev("created", "a", false),
            ev("updated", "a", false),
            ev("updated", "a", false),
            ev("updated", "a", false)
        ]
    );
    let data = events_with_data(&store);
    let hash = |v: &str| redactor.hash(&json!(v));
    assert_eq!(data[0].2["object"]["spec"]["password"], hash("hunter2-raw"));
    assert!(data[2].2["patch"].as_array().unwrap().contains(
        &json!({"op": "replace", "path": "/spec/password", "value": hash("swordfish-raw")})
    ));
    let all = format!(
        "{data:?}{:?}",
        store.object(&key).unwrap().map(|s| s.object)
    );
    assert!(!all.contains("-raw"), "{all}");
}

#[tokio::test]
async fn a_projection_publishes_only_its_fields_and_changes_outside_it_publish_nothing() {
    let f = fixture_with(
        ScopeRules {
            rules: Rules::new(true, &[])
                .unwrap()
                .with_fields(&["/spec/size".to_string()])
                .unwrap(),
            // The filter reads a field the projection leaves out: it sees the whole object.
            filter: Some(crate::filter::Filter::new("object.spec.tier == 'prod'").unwrap()),
            ..rules(InitialMode::Snapshot)
        },
        MAX_BATCH,
    );
    let with = |rv: u64, size: i64, note: &str| {
        let mut o = widget("a", rv, size);
        o["spec"]["tier"] = json!("prod");
        o["spec"]["note"] = json!(note);
        o
    };
    f.upsert(with(10, 1, "x"), Origin::Watch).await; // created
    f.upsert(with(11, 1, "y"), Origin::Watch).await; // outside (status counts, but is left out): nothing
    f.upsert(with(12, 2, "y"), Origin::Watch).await; // updated
    let done = f.snapshot("req-1", None).await.await.unwrap();
    assert_eq!(done.events, 1);
    f.list_done("13", &[], ListMode::Relist).await; // inferred delete
    let key = object_key("widgets", "ns", "a");
    let (events, store, stats) = f.finish().await;
    assert_eq!(
        events,
        vec![
            ev("created", "a", false),
            ev("updated", "a", false),
            ev("snapshot", "a", false),
            ev("deleted", "a", true),
        ]
    );
    assert_eq!(stats.suppressed.load(Ordering::Relaxed), 1);
    let data = events_with_data(&store);
    let projected = |rv: u64, size: i64| {
        json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w-a", "namespace": "ns", "uid": "a", "resourceVersion": rv.to_string()},
            "spec": {"size": size}})
    };
    assert_eq!(data[0].2["object"], projected(10, 1));
    assert_eq!(data[1].2["object"], projected(12, 2));
    assert_eq!(
        data[1].2["patch"],
        json!([{"op": "replace", "path": "/spec/size", "value": 2}])
    );
    // The snapshot and the inferred delete publish the stored state, projected.
    assert_eq!(data[2].2["object"], projected(12, 2));
    assert_eq!(data[3].2["object"], projected(12, 2));
    assert!(store.object(&key).unwrap().is_none());
}
