//! The dispatcher's window and cursor logic against an in-process sink whose acks the test
//! scripts (delays, failures). The real brokers are exercised in `tests/`.

use super::*;
use crate::config::ErrorPolicy;
use crate::store::{Batch, OutboxEntry, StoreOptions, Write};
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
        cursor_every: CURSOR_EVERY,
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

/// A sink for the state machine's driver: acks each event `ack_after` after publishing it,
/// refuses `refuse` for good, and reports every publish (id, time).
struct TimedSink {
    ack_after: Duration,
    refuse: Option<&'static str>,
    published: watch::Sender<Vec<(String, tokio::time::Instant)>>,
}

impl Sink for TimedSink {
    fn publish<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<PendingAck, SinkError>> {
        Box::pin(async move {
            self.published
                .send_modify(|p| p.push((event.id.clone(), tokio::time::Instant::now())));
            if self.refuse == Some(event.id.as_str()) {
                return Err(SinkError::permanent("publish", "scripted refusal"));
            }
            let after = self.ack_after;
            let ack: PendingAck = Box::pin(async move {
                tokio::time::sleep(after).await;
                Ok(())
            });
            Ok(ack)
        })
    }

    fn healthcheck(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async { Ok(()) })
    }

    fn window(&self) -> usize {
        4
    }
}

/// A dispatcher running over events e1..=e3.
struct Running {
    _dir: tempfile::TempDir,
    _durable: watch::Sender<u64>,
    store: Store,
    stats: Arc<DispatchStats>,
    published: watch::Receiver<Vec<(String, tokio::time::Instant)>>,
    connects: Arc<Mutex<Vec<tokio::time::Instant>>>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn start(
    ack_after: Duration,
    refuse: Option<&'static str>,
    connect_failures: usize,
    policy: SinkPolicy,
    drain_timeout: Duration,
) -> Running {
    start_with(
        ack_after,
        refuse,
        connect_failures,
        policy,
        drain_timeout,
        CURSOR_EVERY,
    )
}

/// [`start`], writing the cursor at most once per `cursor_every`.
fn start_with(
    ack_after: Duration,
    refuse: Option<&'static str>,
    connect_failures: usize,
    policy: SinkPolicy,
    drain_timeout: Duration,
    cursor_every: Duration,
) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    let writes = (1..=3)
        .map(|n| {
            Write::Emit(crate::store::test_entry(
                &format!("e{n}"),
                "w",
                &format!("u{n}"),
                0,
            ))
        })
        .collect();
    let last = store
        .commit(&Batch {
            writes,
            checkpoints: vec![],
        })
        .unwrap()
        .unwrap();
    let (published_tx, published) = watch::channel(Vec::new());
    let sink = Arc::new(TimedSink {
        ack_after,
        refuse,
        published: published_tx,
    });
    let connects = Arc::new(Mutex::new(Vec::new()));
    let attempts = connects.clone();
    // Kept by `Running`: capture stays open.
    let (durable_tx, durable) = watch::channel(last);
    let stats = Arc::new(DispatchStats::default());
    let d = Dispatcher {
        name: "s".into(),
        watches: ["w".to_string()].into_iter().collect(),
        store: store.clone(),
        connector: Arc::new(move || {
            let sink = sink.clone();
            let mut attempts = attempts.lock().unwrap();
            attempts.push(tokio::time::Instant::now());
            let fail = attempts.len() <= connect_failures;
            Box::pin(async move {
                if fail {
                    Err(SinkError::retriable("connect", "scripted"))
                } else {
                    Ok(sink as Arc<dyn Sink>)
                }
            })
        }),
        durable,
        stats: stats.clone(),
        drain_timeout,
        cursor_every,
        policy,
        metrics: Arc::new(crate::metrics::Metrics::new()),
    };
    let cancel = CancellationToken::new();
    let task = tokio::spawn(d.run(cancel.clone()));
    Running {
        _dir: dir,
        _durable: durable_tx,
        store,
        stats,
        published,
        connects,
        cancel,
        task,
    }
}

impl Running {
    /// The publishes so far, once `done` holds for them.
    async fn published_until(
        &mut self,
        done: impl Fn(&[(String, tokio::time::Instant)]) -> bool,
    ) -> Vec<(String, tokio::time::Instant)> {
        // Paused time: the deadline passes only if the dispatcher is stuck.
        let wait = self.published.wait_for(|p| done(p));
        let p = tokio::time::timeout(Duration::from_secs(3600), wait)
            .await
            .expect("publishes missing")
            .unwrap()
            .clone();
        p
    }

    /// Cancels and waits for the dispatcher to finish; how long that took.
    async fn stop(self) -> (Duration, u64) {
        let at = tokio::time::Instant::now();
        self.cancel.cancel();
        self.task.await.unwrap();
        (at.elapsed(), self.store.cursor("s").unwrap())
    }
}

#[tokio::test(start_paused = true)]
async fn cancel_drains_the_acks_in_flight() {
    let mut r = start(
        Duration::from_secs(5),
        None,
        0,
        SinkPolicy::default(),
        Duration::from_secs(60),
    );
    r.published_until(|p| p.len() == 3).await;
    assert_eq!(r.store.cursor("s").unwrap(), 0);
    let (took, cursor) = r.stop().await;
    assert_eq!(cursor, 3, "drain advanced the cursor over the acks");
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(6),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn drain_gives_up_at_its_deadline() {
    let mut r = start(
        Duration::from_secs(120),
        None,
        0,
        SinkPolicy::default(),
        Duration::from_secs(1),
    );
    r.published_until(|p| p.len() == 3).await;
    let (took, cursor) = r.stop().await;
    assert_eq!(cursor, 0);
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(2),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn failed_connects_back_off_until_the_sink_connects() {
    let mut r = start(
        Duration::ZERO,
        None,
        2,
        SinkPolicy::default(),
        Duration::from_secs(1),
    );
    r.published_until(|p| p.len() == 3).await;
    assert!(r.stats.healthy.load(Ordering::Relaxed));
    let connects = r.connects.lock().unwrap().clone();
    assert_eq!(connects.len(), 3);
    // Backoff from 200 ms, doubling, each delay jittered to between half and all of it.
    assert!(connects[1] - connects[0] >= Duration::from_millis(100));
    assert!(connects[2] - connects[1] >= Duration::from_millis(200));
    let (_, cursor) = r.stop().await;
    assert_eq!(cursor, 3);
}

#[tokio::test(start_paused = true)]
async fn halt_retries_the_refused_event_slowly_and_holds_the_cursor() {
    let policy = SinkPolicy {
        on_error: ErrorPolicy::Halt,
        ..SinkPolicy::default()
    };
    let mut r = start(
        Duration::ZERO,
        Some("e2"),
        0,
        policy,
        Duration::from_secs(1),
    );
    let published = r
        .published_until(|p| p.iter().filter(|(id, _)| id == "e2").count() == 3)
        .await;
    let tries: Vec<tokio::time::Instant> = published
        .iter()
        .filter(|(id, _)| id == "e2")
        .map(|(_, at)| *at)
        .collect();
    for pair in tries.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= state::HALTED_RETRY && gap < state::HALTED_RETRY + Duration::from_secs(1),
            "{gap:?}"
        );
    }
    assert!(!r.stats.healthy.load(Ordering::Relaxed));
    assert_eq!(r.stats.cursor.load(Ordering::Relaxed), 1);
    // Nothing slow is in flight: stops at once.
    let (took, cursor) = r.stop().await;
    assert_eq!(took, Duration::ZERO);
    assert_eq!(cursor, 1);
}

/// Waits (paused time) until the dispatcher has acked up to `seq`.
async fn acked_up_to(stats: &DispatchStats, seq: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
    while stats.cursor.load(Ordering::Relaxed) < seq {
        assert!(tokio::time::Instant::now() < deadline, "acks missing");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn every_ack_moves_the_cursor_at_once_and_the_write_waits_for_its_interval() {
    let every = Duration::from_secs(10);
    let r = start_with(
        Duration::from_secs(1),
        None,
        0,
        SinkPolicy::default(),
        Duration::from_secs(60),
        every,
    );
    acked_up_to(&r.stats, 3).await;
    assert_eq!(
        r.store.cursor("s").unwrap(),
        3,
        "status and GC see every ack"
    );
    assert_eq!(
        r.store.written_cursor("s").unwrap(),
        1,
        "the first ack is written, the next ones wait for the interval"
    );
    tokio::time::sleep(every).await;
    assert_eq!(
        r.store.written_cursor("s").unwrap(),
        3,
        "with no further ack, the pending cursor is written when the interval ends"
    );
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn stopping_writes_the_cursor_acked_since_the_last_write() {
    let r = start_with(
        Duration::from_secs(1),
        None,
        0,
        SinkPolicy::default(),
        Duration::from_secs(60),
        Duration::from_secs(3600),
    );
    acked_up_to(&r.stats, 3).await;
    let store = r.store.clone();
    assert_eq!(store.written_cursor("s").unwrap(), 1);
    r.stop().await;
    assert_eq!(
        store.written_cursor("s").unwrap(),
        3,
        "shutdown writes what was acked, long before the interval ends"
    );
}
