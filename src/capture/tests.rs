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
}

fn rules(initial: InitialMode) -> ScopeRules {
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
    }
}

fn fixture(initial: InitialMode) -> Fixture {
    fixture_paged(initial, MAX_BATCH)
}

/// A fixture whose on-demand snapshots write `page` objects per batch.
fn fixture_paged(initial: InitialMode, page: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    let (tx, rx) = mpsc::channel(16);
    let (commands, crx) = mpsc::channel(16);
    let (dtx, durable) = watch::channel(0);
    let stats = Arc::new(CaptureStats::default());
    let mut cap = Capture::new(store.clone(), vec![rules(initial)], dtx, stats.clone());
    cap.snapshot_page = page;
    let task = tokio::spawn(cap.run(rx, crx, CancellationToken::new()));
    Fixture {
        _dir: dir,
        store,
        tx,
        commands,
        durable,
        task,
        stats,
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
