//! One dispatcher per sink: reads the outbox from the sink's cursor, publishes with a
//! bounded window of events in flight, and advances the cursor over the contiguous prefix
//! of events the broker acknowledged.
//!
//! The loop is the explicit state machine in `state.rs` (Connecting, Publishing,
//! BackingOff, Draining); `run` does the I/O each state asks for (`publish.rs` fills the
//! window of `window.rs`; `refuse.rs` applies the policy for refused events) and feeds the
//! outcome back as the machine's input.
//!
//! Only events the capture stage announced as durable are read, so the cursor can never
//! point past an entry a crash could lose. After a failure the dispatcher resumes at the
//! cursor: events that were in flight are sent again with their original ids (bounded by
//! the window), and brokers or consumers drop the duplicates by id. At most one event per
//! object is in flight, so a re-send never lands an older version of an object after a
//! newer one.

mod cursor;
mod publish;
mod refuse;
mod state;
mod window;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crbridge_sink_api::{BoxFuture, Sink, SinkError};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::backoff::Backoff;
use crate::config::SinkPolicy;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};
use cursor::CursorWrites;
pub use cursor::CURSOR_EVERY;
use state::{Delay, Effect, Input, State, HALTED_RETRY};
use window::Window;

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
    pub watches: crate::config::WatchSet,
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
    /// The least time between two writes of the cursor to the store ([`CURSOR_EVERY`]);
    /// every ack moves it in memory at once.
    pub cursor_every: Duration,
    /// What happens to events the sink refuses for good.
    pub policy: SinkPolicy,
    /// Where to count.
    pub metrics: Arc<Metrics>,
}

impl Dispatcher {
    /// Runs until `cancel` fires and in-flight acks are drained.
    pub async fn run(self, cancel: CancellationToken) {
        let mut io = Io {
            backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(30)),
            sink: None,
            window: None,
            wait: Duration::ZERO,
            drain_deadline: None,
            cursor: CursorWrites::new(self.cursor_every),
        };
        let mut state = State::Connecting;
        // What applying an effect produced (a cursor write failed), handled before any
        // further I/O.
        let mut follow_up: Option<Outcome> = None;
        loop {
            let outcome = match follow_up.take() {
                Some(o) => o,
                None => {
                    if !matches!(state, State::Publishing) {
                        // Out of publishing (a failure, draining, done): what is acked is
                        // written now, not when the interval ends.
                        // A failure only repeats sends after a restart: logged, and the
                        // next write carries the cursor.
                        if let Err(e) = self.write_pending_cursor(&mut io.cursor) {
                            warn!(sink = %self.name, error = %e, "writing cursor failed");
                        }
                    }
                    match self.act(state, &mut io, &cancel).await {
                        Some(o) => o,
                        None => return,
                    }
                }
            };
            let (next, effect) = state.next(outcome.input);
            follow_up = self.apply(effect, &outcome, next, &mut io);
            state = next;
        }
    }

    /// The I/O `state` asks for, as the machine's input; `None` when done.
    async fn act(&self, state: State, io: &mut Io, cancel: &CancellationToken) -> Option<Outcome> {
        Some(match state {
            State::Connecting => self.connect(&mut io.sink, cancel).await,
            State::Publishing => match io.sink.clone() {
                Some(s) => {
                    self.publish(s.as_ref(), &mut io.window, &mut io.cursor, cancel)
                        .await
                }
                // Not reached: Publishing is entered only with a sink.
                None => Input::Retriable { connected: false }.into(),
            },
            State::BackingOff { .. } => match sleep_or_cancel(io.wait, cancel).await {
                true => Input::Cancelled.into(),
                false => Input::BackoffElapsed.into(),
            },
            State::Draining { .. } => {
                let deadline = *io
                    .drain_deadline
                    .get_or_insert_with(|| tokio::time::Instant::now() + self.drain_timeout);
                self.drain(&mut io.window, deadline).await.into()
            }
            State::Parked => {
                cancel.cancelled().await;
                Input::Cancelled.into()
            }
            State::Done => return None,
        })
    }

    /// Applies the effect of the transition that `outcome` caused into `next`.
    fn apply(
        &self,
        effect: Effect,
        outcome: &Outcome,
        next: State,
        io: &mut Io,
    ) -> Option<Outcome> {
        match effect {
            Effect::None => None,
            Effect::Healthy => {
                self.stats.healthy.store(true, Ordering::Relaxed);
                None
            }
            Effect::Advance { seq } => {
                self.stats.cursor.store(seq, Ordering::Relaxed);
                self.store.note_cursor(&self.name, seq);
                let write = io.cursor.advance(seq, tokio::time::Instant::now());
                match write.map_or(Ok(()), |seq| self.store.set_cursor(&self.name, seq)) {
                    Ok(()) => {
                        io.backoff.reset();
                        None
                    }
                    Err(e) if matches!(next, State::Draining { .. }) => {
                        warn!(sink = %self.name, error = %e, "writing cursor during drain failed");
                        Some(Input::Drained.into())
                    }
                    Err(e) => io
                        .sink
                        .as_deref()
                        .map(|s| self.failure(s, self.store_err(e))),
                }
            }
            Effect::Failed { label, disconnect } => {
                self.stats.healthy.store(false, Ordering::Relaxed);
                self.metrics.error(label);
                if disconnect {
                    io.sink = None;
                }
                io.window = None;
                io.wait = match next {
                    State::BackingOff {
                        delay: Delay::Halted,
                        ..
                    } => HALTED_RETRY,
                    _ => io.backoff.next_delay(),
                };
                let (error, wait) = (outcome.error.as_deref().unwrap_or_default(), io.wait);
                match outcome.input {
                    Input::ConnectFailed => {
                        warn!(sink = %self.name, error, retry_in = ?wait, "connecting sink failed")
                    }
                    Input::Halt { .. } => {
                        error!(sink = %self.name, error, "event cannot be published; the sink is halted at it and retried slowly until the operator acts")
                    }
                    _ => {
                        warn!(sink = %self.name, error, retry_in = ?wait, "publishing failed; resending from the cursor")
                    }
                }
                None
            }
        }
    }

    /// Connecting: builds the sink unless shutdown was requested.
    async fn connect(
        &self,
        sink: &mut Option<Arc<dyn Sink>>,
        cancel: &CancellationToken,
    ) -> Outcome {
        if cancel.is_cancelled() {
            return Input::Cancelled.into();
        }
        match (self.connector)().await {
            Ok(s) => {
                info!(sink = %self.name, "sink connected");
                *sink = Some(s);
                Input::Connected.into()
            }
            Err(e) => Outcome {
                input: Input::ConnectFailed,
                error: Some(chain(&e)),
            },
        }
    }

    /// Writes the cursor acked since the last write, if any.
    fn write_pending_cursor(&self, cursor: &mut CursorWrites) -> Result<(), StoreError> {
        match cursor.take(tokio::time::Instant::now()) {
            Some(seq) => self.store.set_cursor(&self.name, seq),
            None => Ok(()),
        }
    }

    fn store_err(&self, source: StoreError) -> DispatchError {
        DispatchError::Store {
            sink: self.name.clone(),
            source,
        }
    }

    fn sink_err(&self, seq: u64, source: SinkError) -> DispatchError {
        DispatchError::Sink {
            sink: self.name.clone(),
            seq,
            source,
        }
    }
}

/// What the driver keeps between states.
struct Io {
    backoff: Backoff,
    /// The connected sink, from Connecting until a failure that disconnected it.
    sink: Option<Arc<dyn Sink>>,
    /// The events in flight, from the first publish until a failure.
    window: Option<Window>,
    /// The wait of the current back-off, decided when entering it.
    wait: Duration,
    /// When draining gives up, set when it starts.
    drain_deadline: Option<tokio::time::Instant>,
    /// The cursor as acked and as written.
    cursor: CursorWrites,
}

/// What the I/O of one state produced: the machine's input and, for a failure, the error
/// (with its causes) to log.
struct Outcome {
    input: Input,
    error: Option<String>,
}

impl From<Input> for Outcome {
    fn from(input: Input) -> Self {
        Outcome { input, error: None }
    }
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
