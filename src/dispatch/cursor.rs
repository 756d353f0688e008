//! When a dispatcher writes its cursor to the store.
//!
//! Every ack moves the cursor in memory ([`crate::store::Store::note_cursor`]: status,
//! metrics and garbage collection see it at once), but the sled write waits until
//! [`CURSOR_EVERY`] has passed since the previous one. At a trickle of one event per batch
//! a sled insert per ack cost about a tenth of crbridge's CPU per event (BENCHMARKS.md
//! §1). A crash can therefore lose up to that interval of cursor moves (plus sled's flush
//! cadence, as before), and the events in it are sent again with their own ids: the
//! cursor never runs ahead of acks, it only lags them for a moment. Leaving the
//! publishing state (a failure, shutdown) writes what is pending at once.

use std::time::Duration;

use tokio::time::Instant;

/// The least time between two sled writes of one sink's cursor.
pub const CURSOR_EVERY: Duration = Duration::from_millis(100);

/// A sink's cursor as acked and as last written.
#[derive(Debug, Clone)]
pub(super) struct CursorWrites {
    every: Duration,
    /// When the cursor was last written; `None` before the first write.
    written_at: Option<Instant>,
    /// Acked but not yet written.
    pending: Option<u64>,
}

impl CursorWrites {
    /// Nothing acked yet; writes at most once per `every`.
    pub fn new(every: Duration) -> Self {
        CursorWrites {
            every,
            written_at: None,
            pending: None,
        }
    }

    /// The cursor moved to `seq` at `now`: `Some(seq)` when it is to be written now,
    /// `None` when the write waits until [`CursorWrites::due_at`].
    pub fn advance(&mut self, seq: u64, now: Instant) -> Option<u64> {
        match self.written_at {
            Some(at) if now < at + self.every => {
                self.pending = Some(seq);
                None
            }
            _ => {
                self.pending = None;
                self.written_at = Some(now);
                Some(seq)
            }
        }
    }

    /// When the pending cursor is to be written, if one is pending.
    pub fn due_at(&self) -> Option<Instant> {
        // A cursor is pending only after a first write.
        self.pending.and(self.written_at).map(|at| at + self.every)
    }

    /// The pending cursor, to be written now (at `now`), if any.
    pub fn take(&mut self, now: Instant) -> Option<u64> {
        let seq = self.pending.take()?;
        self.written_at = Some(now);
        Some(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY: Duration = Duration::from_millis(100);

    #[test]
    fn the_first_ack_is_written_at_once_and_later_ones_once_per_interval() {
        let t0 = Instant::now();
        let mut w = CursorWrites::new(EVERY);
        assert_eq!(w.advance(1, t0), Some(1));
        assert_eq!(w.due_at(), None, "nothing pending after a write");
        assert_eq!(w.advance(2, t0 + Duration::from_millis(10)), None);
        assert_eq!(w.advance(3, t0 + Duration::from_millis(20)), None);
        assert_eq!(
            w.due_at(),
            Some(t0 + EVERY),
            "due one interval after the write"
        );
        assert_eq!(
            w.advance(4, t0 + EVERY),
            Some(4),
            "an ack once the interval passed writes"
        );
        assert_eq!(w.due_at(), None, "the write carried the pending cursor");
    }

    #[test]
    fn a_pending_cursor_is_taken_once_and_restarts_the_interval() {
        let t0 = Instant::now();
        let mut w = CursorWrites::new(EVERY);
        w.advance(1, t0);
        w.advance(7, t0 + Duration::from_millis(1));
        let t1 = t0 + EVERY;
        assert_eq!(w.take(t1), Some(7));
        assert_eq!(w.take(t1), None, "taken once");
        assert_eq!(
            w.advance(8, t1 + Duration::from_millis(1)),
            None,
            "the take was a write"
        );
        assert_eq!(w.due_at(), Some(t1 + EVERY));
    }

    #[test]
    fn the_cursor_written_never_goes_past_the_acked_one() {
        // Whatever the timing, every value handed out for writing is one that was acked,
        // and the last acked one is written or pending.
        let t0 = Instant::now();
        let mut w = CursorWrites::new(EVERY);
        let mut last_written = 0;
        for seq in 1..=500u64 {
            let now = t0 + Duration::from_millis(seq * 7 % 1000 + seq);
            if let Some(s) = w.advance(seq, now) {
                assert_eq!(s, seq);
                last_written = s;
            }
        }
        let end = t0 + Duration::from_secs(10);
        let last = w.take(end).unwrap_or(last_written);
        assert_eq!(last, 500);
    }
}
