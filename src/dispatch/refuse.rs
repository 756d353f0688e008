//! What happens to an event the sink refuses for good: the sink's `oversize` and
//! `on_error` policies.

use crbridge_sink_api::{ErrorClass, Sink, SinkError};
use tracing::{error, warn};

use super::{chain, Dispatcher};
use crate::config::{ErrorPolicy, OversizePolicy};
use crate::metrics;
use crate::store::{now_ms, DeadLetter, OutboxEntry};

impl Dispatcher {
    /// Applies the sink's policy to an event it refused for good. `Ok` means settled (sent
    /// without its object, or kept as a dead letter): the cursor may pass it. `Err` means
    /// halt at it.
    pub(super) async fn refused(
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
}

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
