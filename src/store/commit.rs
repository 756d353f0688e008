//! The one write path: a [`Batch`] of object states, outbox entries and checkpoints in one
//! sled transaction, then [`Store::flush`] to make it durable.

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::{
    codec, io, last_event_key, u64_of, ObjectKey, OutboxEntry, Store, StoreError, NEXT_SEQ,
    OUTBOX_BYTES,
};

/// One write of a batch.
#[derive(Debug, Clone)]
pub enum Write {
    /// Store `object` under `key` (and append `event` to the outbox, if any).
    Put {
        /// Where.
        key: ObjectKey,
        /// resourceVersion of the new state.
        resource_version: String,
        /// The new state (the clean object) as JSON, serialized once for event and state.
        object_json: Box<serde_json::value::RawValue>,
        /// The event the change produced; `None` for a silent update (no-op, initial skip).
        event: Option<OutboxEntry>,
    },
    /// Remove `key` (and append `event`, if any).
    Remove {
        /// Where.
        key: ObjectKey,
        /// The deletion event.
        event: Option<OutboxEntry>,
    },
    /// Append an event that changes no state (a snapshot).
    Emit(OutboxEntry),
}

/// What one transaction writes.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// Object writes and their events, in order.
    pub writes: Vec<Write>,
    /// Watch checkpoints to set: (checkpoint key, resourceVersion).
    pub checkpoints: Vec<(Vec<u8>, String)>,
}

impl Batch {
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.checkpoints.is_empty()
    }
}

impl Store {
    /// Writes `batch` in one transaction. Returns the sequence number of the last outbox
    /// entry written, if any. Nothing is durable until [`Store::flush`].
    pub fn commit(&self, batch: &Batch) -> Result<Option<u64>, StoreError> {
        // Encode outside the transaction: the closure may run more than once and must do
        // no work but tree operations.
        let mut encoded: Vec<EncodedWrite<'_>> = Vec::with_capacity(batch.writes.len());
        let mut last_event: std::collections::BTreeMap<&str, u64> = Default::default();
        for w in &batch.writes {
            if let Write::Put { event: Some(e), .. }
            | Write::Remove { event: Some(e), .. }
            | Write::Emit(e) = w
            {
                last_event.insert(e.watch.as_str(), e.written_ms);
            }
            let (obj, ev) = match w {
                Write::Put {
                    key,
                    resource_version,
                    object_json,
                    event,
                } => (
                    Some((
                        key,
                        Some((
                            codec::encode_state(resource_version, object_json.get())?,
                            resource_version.as_str(),
                        )),
                    )),
                    event.as_ref(),
                ),
                Write::Remove { key, event } => (Some((key, None)), event.as_ref()),
                Write::Emit(e) => (None, Some(e)),
            };
            encoded.push((obj, ev.map(codec::encode_entry).transpose()?));
        }
        let t = self.t()?;
        let result = (&t.objects, &t.versions, &t.outbox, &t.checkpoints, &t.meta).transaction(
            |(objects, versions, outbox, checkpoints, meta)| {
                let mut seq = match meta.get(NEXT_SEQ)? {
                    Some(v) => u64_of(&v).map_err(ConflictableTransactionError::Abort)?,
                    None => 1,
                };
                let mut bytes = match meta.get(OUTBOX_BYTES)? {
                    Some(v) => u64_of(&v).map_err(ConflictableTransactionError::Abort)?,
                    None => 0,
                };
                let mut last = None;
                for (obj, ev) in &encoded {
                    match obj {
                        Some((key, Some((value, rv)))) => {
                            objects.insert(key.as_bytes(), value.as_slice())?;
                            versions.insert(key.as_bytes(), rv.as_bytes())?;
                        }
                        Some((key, None)) => {
                            objects.remove(key.as_bytes())?;
                            versions.remove(key.as_bytes())?;
                        }
                        None => {}
                    }
                    if let Some(ev) = ev {
                        outbox.insert(&seq.to_be_bytes(), ev.as_slice())?;
                        bytes += ev.len() as u64;
                        last = Some(seq);
                        seq += 1;
                    }
                }
                for (key, rv) in &batch.checkpoints {
                    checkpoints.insert(key.as_slice(), rv.as_bytes())?;
                }
                meta.insert(NEXT_SEQ, &seq.to_be_bytes())?;
                meta.insert(OUTBOX_BYTES, &bytes.to_be_bytes())?;
                for (watch, ms) in &last_event {
                    meta.insert(last_event_key(watch), &ms.to_be_bytes())?;
                }
                Ok(last)
            },
        );
        match result {
            Ok(last) => Ok(last),
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(source)) => Err(StoreError::Io {
                step: "commit",
                source,
            }),
        }
    }

    /// Makes everything written so far durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.t()?.db.flush_async().await.map_err(io("flush"))?;
        Ok(())
    }
}

/// A write with its values serialized: (object key and new state or removal, outbox entry).
type EncodedWrite<'a> = (
    Option<(&'a ObjectKey, Option<(Vec<u8>, &'a str)>)>,
    Option<Vec<u8>>,
);
