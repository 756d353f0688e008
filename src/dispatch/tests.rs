//! The dispatcher's window and cursor logic against an in-process sink whose acks the test
//! scripts (delays, failures). The real brokers are exercised in `tests/`.

use super::*;
use crate::store::{Batch, StoreOptions, Write};
use crbridge_sink_api::{Event, PendingAck};
use std::sync::Mutex;

/// Publishes instantly; each ack resolves after `delay(seq)` and fails once for `fail_once`.
struct ScriptedSink {
    store: Store,
    window: usize,
    fail_once: Mutex<Option<String>>,
    /// (event id, the sink's stored cursor when it was published).
    published: Mutex<Vec<(String, u64)>>,
}

impl Sink for ScriptedSink {
    fn publish<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<PendingAck, SinkError>> {
        Box::pin(async move {
            let cursor = self.store.cursor("s").unwrap();
            self.published
                .lock()
                .unwrap()
                .push((event.id.clone(), cursor));
            let n: u64 = event.id.trim_start_matches("e").parse().unwrap();
            let fail = {
                let mut f = self.fail_once.lock().unwrap();
                if f.as_deref() == Some(event.id.as_str()) {
                    f.take();
                    true
                } else {
                    false
                }
            };
            let ack: PendingAck = Box::pin(async move {
                // Later events are acked sooner: acks arrive out of order.
                tokio::time::sleep(Duration::from_millis(2 * (12 - n.min(12)))).await;
                if fail {
                    Err(SinkError::retriable("ack", "scripted failure"))
                } else {
                    Ok(())
                }
            });
            Ok(ack)
        })
    }

    fn healthcheck(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async { Ok(()) })
    }

    fn window(&self) -> usize {
        self.window
    }
}

/// Events 1..=10; 5 belongs to another watch; 7 and 8 are the same object (uid "u7").
fn event(n: u64) -> OutboxEntry {
    let watch = if n == 5 { "other" } else { "w" };
    let uid = format!("u{}", if n == 8 { 7 } else { n });
    crate::store::test_entry(&format!("e{n}"), watch, &uid, 0)
}

async fn run_until_cursor(fail: Option<&str>, window: usize) -> (Vec<(String, u64)>, u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    let writes = (1..=10).map(|n| Write::Emit(event(n))).collect();
    let last = store
        .commit(&Batch {
            writes,
            checkpoints: vec![],
        })
        .unwrap()
        .unwrap();
    let sink = Arc::new(ScriptedSink {
        store: store.clone(),
        window,
        fail_once: Mutex::new(fail.map(str::to_string)),
        published: Mutex::new(Vec::new()),
    });
    let s2 = sink.clone();
    let (_durable_tx, durable) = watch::channel(last);
    let stats = Arc::new(DispatchStats::default());
    let d = Dispatcher {
        name: "s".into(),
        watches: ["w".to_string()].into_iter().collect(),
        store: store.clone(),
        connector: Arc::new(move || {
            let s = s2.clone();
            Box::pin(async move { Ok(s as Arc<dyn Sink>) })
        }),
        durable,
        stats: stats.clone(),
        drain_timeout: Duration::from_secs(1),
        policy: SinkPolicy::default(),
        metrics: Arc::new(crate::metrics::Metrics::new()),
    };
    let cancel = CancellationToken::new();
    let task = tokio::spawn(d.run(cancel.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stats.cursor.load(Ordering::Relaxed) < 10 {
        assert!(tokio::time::Instant::now() < deadline, "cursor stuck");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cancel.cancel();
    task.await.unwrap();
    let published = sink.published.lock().unwrap().clone();
    (published, store.cursor("s").unwrap())
}

#[tokio::test]
async fn window_publishes_ahead_and_cursor_follows_contiguous_acks() {
    let (published, cursor) = run_until_cursor(None, 4).await;
    let ids: Vec<&str> = published.iter().map(|(id, _)| id.as_str()).collect();
    // Event 5 belongs to a watch this sink does not carry: skipped, yet the cursor passes it.
    assert_eq!(ids, ["e1", "e2", "e3", "e4", "e6", "e7", "e8", "e9", "e10"]);
    assert_eq!(cursor, 10);
    // A window of 4: e4 was published before e1 was acked (cursor still 0).
    assert_eq!(published[3], ("e4".to_string(), 0));
    // e8 is the same object as e7: it waited for e7's ack (cursor at least 7).
    let e8 = published.iter().find(|(id, _)| id == "e8").unwrap();
    assert!(e8.1 >= 7, "e8 sent while e7 was in flight: {published:?}");
}

#[tokio::test]
async fn failed_ack_resends_from_the_cursor_with_the_same_ids() {
    let (published, cursor) = run_until_cursor(Some("e3"), 4).await;
    assert_eq!(cursor, 10);
    let ids: Vec<&str> = published.iter().map(|(id, _)| id.as_str()).collect();
    let first = ids.iter().position(|i| *i == "e3").unwrap();
    let first_resend = first + 1 + ids[first + 1..].iter().position(|i| *i == "e3").unwrap();
    // Before the failure, e1..e4 and possibly more were sent; after it, sending starts over
    // at e3, when the stored cursor says 2 (e1, e2 acked, e3 not).
    assert_eq!(published[first_resend], ("e3".to_string(), 2));
    // Every event reached the sink; the repeats are bounded by the window.
    for n in [1, 2, 3, 4, 6, 7, 8, 9, 10] {
        assert!(ids.contains(&format!("e{n}").as_str()));
    }
    assert!(ids.len() <= 9 + 4, "too many re-sends: {ids:?}");
}
