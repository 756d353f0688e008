//! Replay: re-publish retained outbox events to one sink, in their original order and with
//! their original ids, without touching the sink's cursor. Used by `crbridge replay`
//! directly on a stopped instance's state, and by a running instance's admin endpoint.

use std::time::Duration;

use crbridge_sink_api::{BoxFuture, Sink, SinkError};
use futures::stream::FuturesOrdered;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError};

/// Where a replay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Start {
    /// At this outbox sequence number.
    Seq(u64),
    /// At the first event written at or after this time (ms since the epoch).
    SinceMs(u64),
}

/// What to replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayRequest {
    /// The sink to publish to.
    pub sink: String,
    /// Where to start.
    pub start: Start,
    /// Stop after events written at this time (ms since the epoch), if set.
    pub until_ms: Option<u64>,
    /// Only this watch's events, if set.
    pub watch: Option<String>,
}

/// How far a replay got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Events acknowledged by the broker so far.
    pub sent: u64,
    /// Outbox entries looked at so far.
    pub scanned: u64,
    /// Entries in the range (an upper bound of what will be sent).
    pub total: u64,
    /// The last sequence number acknowledged.
    pub last_seq: u64,
}

/// Why a replay could not run or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The start lies in what garbage collection already removed.
    #[error("{requested} is no longer retained: the outbox was garbage-collected up to seq {gc_seq}; the oldest retained event is {oldest} (hint: start there, or raise state.outbox.retention / max_bytes)")]
    Gone {
        /// The requested start, as the user gave it.
        requested: String,
        /// Highest sequence number removed.
        gc_seq: u64,
        /// The oldest retained point, or "none (the outbox is empty)".
        oldest: String,
    },
    /// The outbox could not be read.
    #[error("reading the outbox: {0}")]
    Store(#[from] StoreError),
    /// The broker failed; `progress` says where to resume.
    #[error("sink failed after {sent} events: {source} (hint: resume with --from-seq {resume})", sent = progress.sent, resume = progress.last_seq + 1)]
    Sink {
        /// How far it got.
        progress: Progress,
        /// The sink's error.
        #[source]
        source: SinkError,
    },
}

fn format_time(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// The oldest retained point, for messages.
fn oldest(store: &Store) -> Result<String, StoreError> {
    let Some(first) = store.first_seq()? else {
        return Ok("none (the outbox is empty)".into());
    };
    let written = store
        .outbox_range(first, first)
        .next()
        .transpose()?
        .map(|(_, e)| format_time(e.written_ms))
        .unwrap_or_default();
    Ok(format!("seq {first} written {written}"))
}

/// The first sequence number to replay, or why it is gone.
pub fn resolve_start(store: &Store, start: Start) -> Result<u64, ReplayError> {
    let (gc_seq, gc_ms) = store.gc_mark()?;
    // Sequence numbers start at 1 and have no holes, so a start is gone only when garbage
    // collection removed something at or after it; with nothing collected, any start at or
    // before the oldest retained event is a full replay.
    let collected = gc_seq > 0;
    match start {
        Start::Seq(n) => {
            if collected && n.max(1) <= gc_seq {
                return Err(ReplayError::Gone {
                    requested: format!("seq {n}"),
                    gc_seq,
                    oldest: oldest(store)?,
                });
            }
            Ok(n.max(1))
        }
        Start::SinceMs(t) => {
            if collected && t <= gc_ms {
                return Err(ReplayError::Gone {
                    requested: format!("events since {}", format_time(t)),
                    gc_seq,
                    oldest: oldest(store)?,
                });
            }
            let first = store.first_seq()?.unwrap_or(1);
            for item in store.outbox_range(first, u64::MAX) {
                let (seq, e) = item?;
                if e.written_ms >= t {
                    return Ok(seq);
                }
            }
            Ok(store.last_seq()? + 1)
        }
    }
}

/// Replays `req` through `sink` (which carries the watches in `sink_watches`), calling
/// `progress` now and then. Returns the final progress.
pub async fn replay(
    store: &Store,
    sink: &dyn Sink,
    sink_watches: &crate::config::WatchSet,
    req: &ReplayRequest,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Progress, ReplayError> {
    let start = resolve_start(store, req.start)?;
    let last = store.last_seq()?;
    let mut p = Progress {
        total: (last + 1).saturating_sub(start),
        last_seq: start.saturating_sub(1),
        ..Default::default()
    };
    progress(p);
    let window = sink.window().max(1);
    let mut in_flight: FuturesOrdered<BoxFuture<'_, (u64, Result<(), SinkError>)>> =
        FuturesOrdered::new();
    let mut entries = store.outbox_range(start, last);
    let mut exhausted = false;
    let mut last_report = std::time::Instant::now();
    loop {
        while !exhausted && in_flight.len() < window {
            let Some(item) = entries.next() else {
                exhausted = true;
                break;
            };
            let (seq, entry) = item?;
            p.scanned += 1;
            if req.until_ms.is_some_and(|u| entry.written_ms > u) {
                exhausted = true;
                break;
            }
            let wanted = sink_watches.selects(req.watch.as_deref(), &entry.watch)
                && entry.sinks.as_ref().is_none_or(|s| s.contains(&req.sink));
            if !wanted {
                continue;
            }
            let pending = sink
                .publish(&entry.event)
                .await
                .map_err(|source| ReplayError::Sink {
                    progress: p,
                    source,
                })?;
            in_flight.push_back(Box::pin(async move { (seq, pending.await) }));
        }
        let Some((seq, result)) = in_flight.next().await else {
            break;
        };
        result.map_err(|source| ReplayError::Sink {
            progress: p,
            source,
        })?;
        p.sent += 1;
        p.last_seq = seq;
        if last_report.elapsed() >= Duration::from_secs(1) {
            progress(p);
            last_report = std::time::Instant::now();
        }
    }
    progress(p);
    Ok(p)
}

/// Parses a `--since` / `--until` value: RFC 3339 (`2026-11-24T05:00:00Z`) or a duration
/// ago (`15m`, `2h`). Returns ms since the epoch.
pub fn parse_time(s: &str) -> Result<u64, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0));
    }
    match crbridge_sink_api::units::parse_duration(s) {
        Ok(d) => Ok(crate::store::now_ms().saturating_sub(d.as_millis() as u64)),
        Err(_) => Err(format!(
            "{s:?} is neither a time (2026-11-24T05:00:00Z) nor a duration ago (15m, 2h)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Batch, OutboxEntry, StoreOptions, Write};

    fn entry(n: u64) -> OutboxEntry {
        crate::store::test_entry(&format!("e{n}"), "w", &format!("u{n}"), n * 1000)
    }

    #[test]
    fn start_points_and_garbage_collected_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        store
            .commit(&Batch {
                writes: (1..=10).map(|n| Write::Emit(entry(n))).collect(),
                checkpoints: vec![],
            })
            .unwrap();
        assert_eq!(resolve_start(&store, Start::Seq(3)).unwrap(), 3);
        assert_eq!(resolve_start(&store, Start::SinceMs(4500)).unwrap(), 5);
        // Acked up to 6 and older than 4.5 s: 1..=4 go.
        store.gc_outbox(6, 4500, u64::MAX).unwrap();
        let err = resolve_start(&store, Start::Seq(2))
            .unwrap_err()
            .to_string();
        assert!(err.contains("seq 2 is no longer retained"), "{err}");
        assert!(err.contains("oldest retained event is seq 5"), "{err}");
        assert!(resolve_start(&store, Start::SinceMs(1000)).is_err());
        assert_eq!(resolve_start(&store, Start::SinceMs(4001)).unwrap(), 5);
        assert_eq!(resolve_start(&store, Start::Seq(5)).unwrap(), 5);
    }

    #[test]
    fn a_start_before_everything_is_a_full_replay_while_nothing_was_collected() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        store
            .commit(&Batch {
                writes: (1..=3).map(|n| Write::Emit(entry(n))).collect(),
                checkpoints: vec![],
            })
            .unwrap();
        assert_eq!(resolve_start(&store, Start::Seq(0)).unwrap(), 1);
        assert_eq!(resolve_start(&store, Start::Seq(1)).unwrap(), 1);
        assert_eq!(resolve_start(&store, Start::SinceMs(0)).unwrap(), 1);
        // Once seq 1 is collected, 0 and 1 lie in the gap.
        store.gc_outbox(1, u64::MAX, u64::MAX).unwrap();
        assert!(resolve_start(&store, Start::Seq(0)).is_err());
        assert!(resolve_start(&store, Start::Seq(1)).is_err());
        assert_eq!(resolve_start(&store, Start::Seq(2)).unwrap(), 2);
    }

    #[test]
    fn times_parse_as_rfc3339_or_ago() {
        assert_eq!(parse_time("1970-01-01T00:00:01Z").unwrap(), 1000);
        let ago = parse_time("1h").unwrap();
        assert!(crate::store::now_ms() - ago >= 3_600_000);
        assert!(parse_time("yesterday").unwrap_err().contains("yesterday"));
    }
}
