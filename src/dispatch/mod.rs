//! One dispatcher per sink: reads the outbox from the sink's cursor, publishes with a
//! bounded window of events in flight, and advances the cursor over the contiguous prefix
//! of events the broker acknowledged.
//!
//! ```text
//!   Connecting ──ok──> Publishing ──retriable error──> BackingOff ──> Publishing
//!       ▲  │                │   └──permanent error──> BackingOff (max delay, ERROR log)
//!       └──┘ error+backoff  └──cancel──> Draining (await in-flight acks, deadline) ──> done
//! ```
//!
//! Only events the capture stage announced as durable are read, so the cursor can never
//! point past an entry a crash could lose. After a failure the dispatcher resumes at the
//! cursor: events that were in flight are sent again with their original ids (bounded by
//! the window), and brokers or consumers drop the duplicates by id. At most one event per
//! object is in flight, so a re-send never lands an older version of an object after a
//! newer one.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crbridge_sink_api::{BoxFuture, ErrorClass, Sink, SinkError};
use futures::stream::FuturesOrdered;
use futures::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::backoff::Backoff;
use crate::config::{ErrorPolicy, OversizePolicy, SinkPolicy};
use crate::metrics::{self, Metrics};
use crate::store::{now_ms, now_us, DeadLetter, OutboxEntry, Store, StoreError};

/// Builds (connects) a sink; called again after the sink failed to connect.
pub type Connector =
    Arc<dyn Fn() -> BoxFuture<'static, Result<Arc<dyn Sink>, SinkError>> + Send + Sync>;

/// Counters and health of one dispatcher.
#[derive(Debug, Default)]
pub struct DispatchStats {
    /// The sink's cursor (last acked sequence of the contiguous prefix).
    pub cursor: AtomicU64,
    /// True while connected and publishing without errors.
    pub healthy: AtomicBool,
}

/// Why publishing stopped.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// The sink refused or failed an event.
    #[error("sink {sink}: event seq {seq}: {source}")]
    Sink {
        /// Sink name.
        sink: String,
        /// Outbox sequence number of the event.
        seq: u64,
        /// The sink's error.
        #[source]
        source: SinkError,
    },
    /// Reading the outbox or writing the cursor failed.
    #[error("sink {sink}: {source}")]
    Store {
        /// Sink name.
        sink: String,
        /// The store's error.
        #[source]
        source: StoreError,
    },
}

/// A dispatcher for one sink.
pub struct Dispatcher {
    /// Sink name (cursor key).
    pub name: String,
    /// Watches whose events go to this sink.
    pub watches: HashSet<String>,
    /// The store.
    pub store: Store,
    /// Connects the sink.
    pub connector: Connector,
    /// Highest durable outbox sequence, from capture.
    pub durable: watch::Receiver<u64>,
    /// Counters.
    pub stats: Arc<DispatchStats>,
    /// How long shutdown waits for in-flight acks.
    pub drain_timeout: Duration,
    /// What happens to events the sink refuses for good.
    pub policy: SinkPolicy,
    /// Where to count.
    pub metrics: Arc<Metrics>,
}

impl Dispatcher {
    /// Runs until `cancel` fires and in-flight acks are drained.
    pub async fn run(self, cancel: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        let mut sink: Option<Arc<dyn Sink>> = None;
        loop {
            if cancel.is_cancelled() {
                return;
            }
            let s = match &sink {
                Some(s) => s.clone(),
                None => match (self.connector)().await {
                    Ok(s) => {
                        info!(sink = %self.name, "sink connected");
                        sink = Some(s.clone());
                        s
                    }
                    Err(e) => {
                        self.stats.healthy.store(false, Ordering::Relaxed);
                        self.metrics.error("connect");
                        let wait = backoff.next_delay();
                        warn!(sink = %self.name, error = %chain(&e), retry_in = ?wait, "connecting sink failed");
                        if sleep_or_cancel(wait, &cancel).await {
                            return;
                        }
                        continue;
                    }
                },
            };
            self.stats.healthy.store(true, Ordering::Relaxed);
            match self.pump(s.as_ref(), &cancel, &mut backoff).await {
                Ok(()) => return,
                Err(e) => {
                    self.stats.healthy.store(false, Ordering::Relaxed);
                    self.metrics.error("publish");
                    if !s.is_connected() {
                        sink = None;
                    }
                    let permanent =
                        matches!(&e, DispatchError::Sink { source, .. } if !source.is_retriable());
                    let wait = if permanent {
                        error!(sink = %self.name, error = %chain(&e), "event cannot be published; the sink is halted at it and retried slowly until the operator acts");
                        Duration::from_secs(30)
                    } else {
                        let wait = backoff.next_delay();
                        warn!(sink = %self.name, error = %chain(&e), retry_in = ?wait, "publishing failed; resending from the cursor");
                        wait
                    };
                    if sleep_or_cancel(wait, &cancel).await {
                        return;
                    }
                }
            }
        }
    }

    fn store_err(&self) -> impl Fn(StoreError) -> DispatchError + '_ {
        move |source| DispatchError::Store {
            sink: self.name.clone(),
            source,
        }
    }

    /// Publishes from the cursor until cancelled (Ok) or a failure (Err).
    async fn pump(
        &self,
        sink: &dyn Sink,
        cancel: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Result<(), DispatchError> {
        let window = sink.window().max(1);
        let mut acked = self.store.cursor(&self.name).map_err(self.store_err())?;
        self.stats.cursor.store(acked, Ordering::Relaxed);
        let mut next = acked + 1;
        let mut buffer: VecDeque<(u64, OutboxEntry)> = VecDeque::new();
        let mut in_flight: FuturesOrdered<InFlight<'_>> = FuturesOrdered::new();
        // Objects with an event in flight. The next event of such an object waits for that
        // ack: after a failure the re-send then never puts an older version of an object
        // behind a newer one (a newer one was never sent), and different objects still
        // share the window.
        let mut busy: HashMap<String, usize> = HashMap::new();
        let mut durable = self.durable.clone();
        loop {
            let upto = *durable.borrow_and_update();
            while in_flight.len() < window && next <= upto {
                if buffer.is_empty() {
                    let to = upto.min(next + window as u64);
                    for item in self.store.outbox_range(next, to) {
                        buffer.push_back(item.map_err(self.store_err())?);
                    }
                    match buffer.front() {
                        None => {
                            // Garbage-collected below us (cannot happen while GC respects
                            // every cursor): skip ahead rather than stall.
                            warn!(sink = %self.name, from = next, to, "outbox entries missing; skipping");
                            next = to + 1;
                            continue;
                        }
                        Some((seq, _)) if *seq > next => {
                            warn!(sink = %self.name, from = next, to = *seq - 1, "outbox entries missing; skipping");
                        }
                        _ => {}
                    }
                }
                match buffer.front() {
                    None => break,
                    Some((_, e)) if busy.contains_key(&e.event.route.uid) => break,
                    Some(_) => {}
                }
                let Some((seq, entry)) = buffer.pop_front() else {
                    break;
                };
                next = seq + 1;
                let for_us = self.watches.contains(&entry.watch)
                    && entry.sinks.as_ref().is_none_or(|s| s.contains(&self.name));
                if !for_us {
                    in_flight.push_back(Box::pin(async move { (seq, None, Ok(())) }));
                    continue;
                }
                match sink.publish(&entry.event).await {
                    Ok(pending) if ack_before_broker() => {
                        // Test-only weakening (debug builds): count the hand-over as the
                        // ack. The fault suite runs with it to prove it detects the loss.
                        tokio::spawn(pending);
                        in_flight.push_back(Box::pin(async move { (seq, Some(entry), Ok(())) }));
                    }
                    Ok(pending) => {
                        *busy.entry(entry.event.route.uid.clone()).or_default() += 1;
                        in_flight
                            .push_back(Box::pin(async move { (seq, Some(entry), pending.await) }))
                    }
                    Err(e) if e.is_retriable() => return Err(self.sink_err(seq, e)),
                    Err(e) => {
                        // Refused before it was handed over: settle it now, in order with
                        // the acks before it.
                        let settled = self.refused(sink, seq, &entry, e).await;
                        in_flight.push_back(Box::pin(async move { (seq, None, settled) }));
                    }
                }
            }
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    self.drain(&mut in_flight, &mut acked).await;
                    return Ok(());
                }
                Some((seq, entry, result)) = in_flight.next(), if !in_flight.is_empty() => {
                    if let Some(e) = &entry {
                        let uid = &e.event.route.uid;
                        if let Some(n) = busy.get_mut(uid) {
                            *n -= 1;
                            if *n == 0 {
                                busy.remove(uid);
                            }
                        }
                    }
                    if let (Ok(()), Some(e)) = (&result, &entry) {
                        let since_us = match e.observed_us {
                            0 => e.written_ms.saturating_mul(1000),
                            us => us,
                        };
                        let secs = now_us().saturating_sub(since_us) as f64 / 1e6;
                        let label = metrics::sink(&self.name);
                        self.metrics.publish_latency.get_or_create(&label).observe(secs);
                        self.metrics.published.get_or_create(&label).inc();
                    }
                    let result = match (result, entry) {
                        (Err(e), Some(entry)) if !e.is_retriable() => {
                            self.refused(sink, seq, &entry, e).await
                        }
                        (r, _) => r,
                    };
                    match result {
                        Ok(()) => {
                            acked = seq;
                            self.stats.cursor.store(seq, Ordering::Relaxed);
                            self.store.set_cursor(&self.name, seq).map_err(self.store_err())?;
                            backoff.reset();
                        }
                        Err(source) => return Err(self.sink_err(seq, source)),
                    }
                }
                changed = durable.changed(), if in_flight.len() < window => {
                    if changed.is_err() {
                        // Capture is gone: nothing new will come; finish what is in flight.
                        self.drain(&mut in_flight, &mut acked).await;
                        cancel.cancelled().await;
                        return Ok(());
                    }
                }
            }
        }
    }

    fn sink_err(&self, seq: u64, source: SinkError) -> DispatchError {
        DispatchError::Sink {
            sink: self.name.clone(),
            seq,
            source,
        }
    }

    /// Applies the sink's policy to an event it refused for good. `Ok` means settled (sent
    /// without its object, or kept as a dead letter): the cursor may pass it. `Err` means
    /// halt at it.
    async fn refused(
        &self,
        sink: &dyn Sink,
        seq: u64,
        entry: &OutboxEntry,
        mut error: SinkError,
    ) -> Result<(), SinkError> {
        if error.class == ErrorClass::TooLarge && self.policy.oversize == OversizePolicy::PatchOnly
        {
            if let Some(trimmed) = without_object(entry) {
                let attempt = match sink.publish(&trimmed.event).await {
                    Ok(pending) => pending.await,
                    Err(e) => Err(e),
                };
                match attempt {
                    Ok(()) => {
                        warn!(sink = %self.name, seq, id = %entry.event.id, "event too large; sent without data.object");
                        return Ok(());
                    }
                    Err(e) if e.is_retriable() => return Err(e),
                    Err(e) => error = e,
                }
            }
        }
        match self.policy.on_error {
            ErrorPolicy::Halt => Err(error),
            ErrorPolicy::Deadletter => {
                let letter = DeadLetter {
                    seq,
                    error: chain(&error),
                    at_ms: now_ms(),
                    entry: entry.clone(),
                };
                if let Err(e) = self.store.add_dead_letter(&self.name, &letter) {
                    // Not kept, so not settled: halt here rather than lose it.
                    return Err(SinkError::retriable("dead letter", e.to_string()));
                }
                self.metrics
                    .dead_letters
                    .get_or_create(&metrics::sink(&self.name))
                    .inc();
                error!(sink = %self.name, seq, id = %entry.event.id, subject = %entry.event.subject, error = %letter.error, "event refused by the sink; kept as a dead letter");
                Ok(())
            }
        }
    }

    /// Awaits in-flight acks (in order) until the first failure or the deadline, advancing
    /// the cursor over what was acked.
    async fn drain(&self, in_flight: &mut FuturesOrdered<InFlight<'_>>, acked: &mut u64) {
        let deadline = tokio::time::Instant::now() + self.drain_timeout;
        while !in_flight.is_empty() {
            match tokio::time::timeout_at(deadline, in_flight.next()).await {
                Ok(Some((seq, _, Ok(())))) => {
                    *acked = seq;
                    self.stats.cursor.store(seq, Ordering::Relaxed);
                    if let Err(e) = self.store.set_cursor(&self.name, seq) {
                        warn!(sink = %self.name, error = %e, "writing cursor during drain failed");
                        return;
                    }
                }
                Ok(Some((_, _, Err(_)))) | Ok(None) => return,
                Err(_) => {
                    warn!(sink = %self.name, pending = in_flight.len(), "drain deadline passed; unacked events will be re-sent after restart");
                    return;
                }
            }
        }
    }
}

/// `CRBRIDGE_TEST_ACK_BEFORE_BROKER=1` in a debug build: acknowledge events when the client
/// takes them, not when the broker does. Exists only so the fault suite can show that it
/// catches the loss this causes; release builds ignore it.
fn ack_before_broker() -> bool {
    #[cfg(debug_assertions)]
    {
        static FLAG: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *FLAG.get_or_init(|| {
            std::env::var("CRBRIDGE_TEST_ACK_BEFORE_BROKER").is_ok_and(|v| v == "1")
        })
    }
    #[cfg(not(debug_assertions))]
    {
        false
    }
}

/// One event awaiting its ack: sequence, the entry (kept to apply the refusal policy), and
/// the broker's answer.
type InFlight<'a> = BoxFuture<'a, (u64, Option<OutboxEntry>, Result<(), SinkError>)>;

/// The entry with `data.object` removed, or `None` when it has none to remove.
fn without_object(entry: &OutboxEntry) -> Option<OutboxEntry> {
    let mut data: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(entry.event.data.get()).ok()?;
    data.remove("object")?;
    let raw = serde_json::value::RawValue::from_string(serde_json::to_string(&data).ok()?).ok()?;
    let mut trimmed = entry.clone();
    trimmed.event.data = raw;
    Some(trimmed)
}

async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

/// An error with its causes, one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests;
