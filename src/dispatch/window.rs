//! The window of events in flight between one (re)start of publishing and the next failure.

use std::collections::{HashMap, VecDeque};

use crbridge_sink_api::{BoxFuture, PendingAck, SinkError};
use futures::stream::FuturesOrdered;
use futures::StreamExt;
use tokio::sync::watch;

use crate::store::OutboxEntry;

/// One event awaiting its ack: sequence, the entry (kept to apply the refusal policy), and
/// the broker's answer.
pub(super) type InFlight = BoxFuture<'static, Acked>;

/// An answer for one event in flight, in outbox order.
pub(super) type Acked = (u64, Option<OutboxEntry>, Result<(), SinkError>);

/// Events read ahead from the outbox and events in flight, in outbox order. Discarded on a
/// failure: publishing restarts at the cursor with a new window.
pub(super) struct Window {
    /// The next outbox sequence to publish.
    pub next: u64,
    /// Entries read from the outbox, not yet published.
    pub buffer: VecDeque<(u64, OutboxEntry)>,
    /// The events in flight.
    pub flight: Flight,
    /// Highest durable outbox sequence, from capture.
    pub durable: watch::Receiver<u64>,
}

impl Window {
    /// An empty window whose first event is the one after `cursor`.
    pub fn new(cursor: u64, durable: watch::Receiver<u64>) -> Self {
        Window {
            next: cursor + 1,
            buffer: VecDeque::new(),
            flight: Flight {
                in_flight: FuturesOrdered::new(),
                busy: HashMap::new(),
            },
            durable,
        }
    }
}

/// Events handed to the sink whose answers are awaited, in outbox order.
pub(super) struct Flight {
    /// Acks in outbox order.
    in_flight: FuturesOrdered<InFlight>,
    /// Objects with an event in flight. The next event of such an object waits for that
    /// ack: after a failure the re-send then never puts an older version of an object
    /// behind a newer one (a newer one was never sent), and different objects still
    /// share the window.
    busy: HashMap<String, usize>,
}

impl Flight {
    /// Events in flight.
    pub fn len(&self) -> usize {
        self.in_flight.len()
    }

    /// Nothing in flight.
    pub fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// Whether an event of object `uid` is in flight.
    pub fn is_busy(&self, uid: &str) -> bool {
        self.busy.contains_key(uid)
    }

    /// Adds an event whose answer is already known (skipped, or settled by the policy).
    pub fn push_settled(&mut self, seq: u64, result: Result<(), SinkError>) {
        self.in_flight
            .push_back(Box::pin(async move { (seq, None, result) }));
    }

    /// Adds an event that counts as acked, kept for the latency metric.
    pub fn push_acked(&mut self, seq: u64, entry: OutboxEntry) {
        self.in_flight
            .push_back(Box::pin(async move { (seq, Some(entry), Ok(())) }));
    }

    /// Adds a published event whose ack is `pending`; its object is busy until the ack.
    pub fn push_pending(&mut self, seq: u64, entry: OutboxEntry, pending: PendingAck) {
        *self.busy.entry(entry.event.route.uid.clone()).or_default() += 1;
        self.in_flight
            .push_back(Box::pin(async move { (seq, Some(entry), pending.await) }));
    }

    /// The next answer in outbox order (`None` when nothing is in flight); frees its object.
    pub async fn next_acked(&mut self) -> Option<Acked> {
        let acked = self.in_flight.next().await?;
        if let Some(e) = &acked.1 {
            let uid = &e.event.route.uid;
            if let Some(n) = self.busy.get_mut(uid) {
                *n -= 1;
                if *n == 0 {
                    self.busy.remove(uid);
                }
            }
        }
        Some(acked)
    }
}
