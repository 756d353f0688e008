//! Per-sink state: the acknowledged cursor and the dead letters.

use serde::{Deserialize, Serialize};

use super::{io, u64_of, DeadLetter, Store, StoreError};

impl Store {
    /// The last sequence number `sink` has been acked for (0 when none).
    pub fn cursor(&self, sink: &str) -> Result<u64, StoreError> {
        match self.t()?.cursors.get(sink).map_err(io("read cursor"))? {
            Some(v) => u64_of(&v),
            None => Ok(0),
        }
    }

    /// True when `sink` has a cursor (it has run before).
    pub fn has_cursor(&self, sink: &str) -> Result<bool, StoreError> {
        self.t()?
            .cursors
            .contains_key(sink)
            .map_err(io("read cursor"))
    }

    /// Records that `sink` is acked up to and including `seq`. Durable at the next flush;
    /// a cursor lost in a crash only repeats sends (same ids), never skips.
    pub fn set_cursor(&self, sink: &str, seq: u64) -> Result<(), StoreError> {
        self.t()?
            .cursors
            .insert(sink, &seq.to_be_bytes())
            .map_err(io("write cursor"))?;
        Ok(())
    }

    /// Number of dead letters of `sink`.
    pub fn dead_letter_count(&self, sink: &str) -> usize {
        let mut prefix = sink.as_bytes().to_vec();
        prefix.push(0);
        self.t()
            .map_or(0, |t| t.dead_letters.scan_prefix(prefix).keys().count())
    }

    /// Keeps an event `sink` refused for good.
    pub fn add_dead_letter(&self, sink: &str, letter: &DeadLetter) -> Result<(), StoreError> {
        let mut key = sink.as_bytes().to_vec();
        key.push(0);
        key.extend_from_slice(&letter.seq.to_be_bytes());
        self.t()?
            .dead_letters
            .insert(key, encode(letter)?)
            .map_err(io("write dead letter"))?;
        Ok(())
    }

    /// The dead letters of `sink`, oldest first.
    pub fn dead_letters(&self, sink: &str) -> Result<Vec<DeadLetter>, StoreError> {
        let mut prefix = sink.as_bytes().to_vec();
        prefix.push(0);
        self.t()?
            .dead_letters
            .scan_prefix(prefix)
            .values()
            .map(|v| decode(&v.map_err(io("read dead letters"))?, "dead letter"))
            .collect()
    }
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Corrupt {
        what: "value to encode",
        detail: e.to_string(),
    })
}

fn decode<T: for<'de> Deserialize<'de>>(v: &[u8], what: &'static str) -> Result<T, StoreError> {
    serde_json::from_slice(v).map_err(|e| StoreError::Corrupt {
        what,
        detail: e.to_string(),
    })
}
