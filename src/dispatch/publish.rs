//! The I/O of the publishing and draining states: fill the window from the outbox, hand
//! events to the sink, and collect the broker's acks in outbox order.

use std::sync::atomic::Ordering;

use crbridge_sink_api::Sink;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::cursor::CursorWrites;
use super::state::Input;
use super::window::Window;
use super::{DispatchError, Dispatcher, Outcome};
use crate::metrics;
use crate::store::now_us;

impl Dispatcher {
    /// Publishing: fills the window and waits until the oldest event in flight settles, a
    /// request fails, capture closes or `cancel` fires; writes the cursor when it is due
    /// meanwhile. Opens a window at the cursor first when there is none.
    pub(super) async fn publish(
        &self,
        sink: &dyn Sink,
        window: &mut Option<Window>,
        cursor: &mut CursorWrites,
        cancel: &CancellationToken,
    ) -> Outcome {
        let w = match window {
            Some(w) => w,
            None => {
                if cancel.is_cancelled() {
                    return Input::Cancelled.into();
                }
                let cursor = match self.store.cursor(&self.name) {
                    Ok(c) => c,
                    Err(source) => return self.failure(sink, self.store_err(source)),
                };
                self.stats.cursor.store(cursor, Ordering::Relaxed);
                window.insert(Window::new(cursor, self.durable.clone()))
            }
        };
        match self.publish_in(sink, w, cursor, cancel).await {
            Ok(input) => input.into(),
            Err(e) => self.failure(sink, e),
        }
    }

    /// The state machine's input for a failure while publishing.
    pub(super) fn failure(&self, sink: &dyn Sink, e: DispatchError) -> Outcome {
        let connected = sink.is_connected();
        let halt = matches!(&e, DispatchError::Sink { source, .. } if !source.is_retriable());
        Outcome {
            input: if halt {
                Input::Halt { connected }
            } else {
                Input::Retriable { connected }
            },
            error: Some(super::chain(&e)),
        }
    }

    async fn publish_in(
        &self,
        sink: &dyn Sink,
        w: &mut Window,
        cursor: &mut CursorWrites,
        cancel: &CancellationToken,
    ) -> Result<Input, DispatchError> {
        let window = sink.window().max(1);
        loop {
            let upto = *w.durable.borrow_and_update();
            self.fill(sink, w, window, upto).await?;
            let due = cursor.due_at();
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(Input::Cancelled),
                Some((seq, entry, result)) = w.flight.next_acked(), if !w.flight.is_empty() => {
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
                    return match result {
                        Ok(()) => Ok(Input::Settled { seq }),
                        Err(source) => Err(self.sink_err(seq, source)),
                    };
                }
                _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    self.write_pending_cursor(cursor).map_err(|e| self.store_err(e))?;
                }
                changed = w.durable.changed(), if w.flight.len() < window => {
                    if changed.is_err() {
                        // Capture is gone: nothing new will come; finish what is in flight.
                        return Ok(Input::CaptureClosed);
                    }
                }
            }
        }
    }

    /// Hands events to the sink until `window` are in flight or the durable ones (up to
    /// `upto`) are all out.
    async fn fill(
        &self,
        sink: &dyn Sink,
        w: &mut Window,
        window: usize,
        upto: u64,
    ) -> Result<(), DispatchError> {
        while w.flight.len() < window && w.next <= upto {
            if w.buffer.is_empty() {
                let to = upto.min(w.next + window as u64);
                for item in self.store.outbox_range(w.next, to) {
                    w.buffer.push_back(item.map_err(|e| self.store_err(e))?);
                }
                match w.buffer.front() {
                    None => {
                        // Garbage-collected below us (cannot happen while GC respects
                        // every cursor): skip ahead rather than stall.
                        warn!(sink = %self.name, from = w.next, to, "outbox entries missing; skipping");
                        w.next = to + 1;
                        continue;
                    }
                    Some((seq, _)) if *seq > w.next => {
                        warn!(sink = %self.name, from = w.next, to = *seq - 1, "outbox entries missing; skipping");
                    }
                    _ => {}
                }
            }
            match w.buffer.front() {
                None => break,
                Some((_, e)) if w.flight.is_busy(&e.event.route.uid) => break,
                Some(_) => {}
            }
            let Some((seq, entry)) = w.buffer.pop_front() else {
                break;
            };
            w.next = seq + 1;
            let for_us = self.watches.contains(&entry.watch)
                && entry.sinks.as_ref().is_none_or(|s| s.contains(&self.name));
            if !for_us {
                w.flight.push_settled(seq, Ok(()));
                continue;
            }
            match sink.publish(&entry.event).await {
                Ok(pending) if ack_before_broker() => {
                    // Test-only weakening (debug builds): count the hand-over as the
                    // ack. The fault suite runs with it to prove it detects the loss.
                    tokio::spawn(pending);
                    w.flight.push_acked(seq, entry);
                }
                Ok(pending) => w.flight.push_pending(seq, entry, pending),
                Err(e) if e.is_retriable() => return Err(self.sink_err(seq, e)),
                Err(e) => {
                    // Refused before it was handed over: settle it now, in order with
                    // the acks before it.
                    let settled = self.refused(sink, seq, &entry, e).await;
                    w.flight.push_settled(seq, settled);
                }
            }
        }
        Ok(())
    }

    /// Draining: the next ack in outbox order, until the first failure or `deadline`.
    pub(super) async fn drain(&self, window: &mut Option<Window>, deadline: Instant) -> Input {
        let Some(w) = window else {
            return Input::Drained;
        };
        if w.flight.is_empty() {
            return Input::Drained;
        }
        match tokio::time::timeout_at(deadline, w.flight.next_acked()).await {
            Ok(Some((seq, _, Ok(())))) => Input::Settled { seq },
            Ok(Some((_, _, Err(_)))) | Ok(None) => Input::Drained,
            Err(_) => {
                warn!(sink = %self.name, pending = w.flight.len(), "drain deadline passed; unacked events will be re-sent after restart");
                Input::Drained
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
