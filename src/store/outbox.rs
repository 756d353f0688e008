//! Reading the outbox (sequence numbers, ranges, sizes) and garbage-collecting what every
//! sink has acknowledged.

use super::{
    codec, io, last_event_key, u64_of, OutboxEntry, Store, StoreError, GC_MS, GC_SEQ, NEXT_SEQ,
    OUTBOX_BYTES,
};

impl Store {
    /// The highest sequence number ever assigned (0 when none).
    pub fn last_seq(&self) -> Result<u64, StoreError> {
        Ok(
            match self.t()?.meta.get(NEXT_SEQ).map_err(io("read meta"))? {
                Some(v) => u64_of(&v)?.saturating_sub(1),
                None => 0,
            },
        )
    }

    /// Outbox entries with sequence numbers in `from..=to`, in order.
    pub fn outbox_range(
        &self,
        from: u64,
        to: u64,
    ) -> Box<dyn Iterator<Item = Result<(u64, OutboxEntry), StoreError>> + Send + '_> {
        let t = match self.t() {
            Ok(t) => t,
            Err(e) => return Box::new(std::iter::once(Err(e))),
        };
        let iter = t.outbox.range(from.to_be_bytes()..=to.to_be_bytes());
        Box::new(iter.map(|r| {
            let (k, v) = r.map_err(io("read outbox"))?;
            Ok((u64_of(&k)?, codec::decode_entry(&v)?))
        }))
    }

    /// The oldest retained sequence number, if the outbox is not empty.
    pub fn first_seq(&self) -> Result<Option<u64>, StoreError> {
        match self.t()?.outbox.first().map_err(io("read outbox"))? {
            Some((k, _)) => Ok(Some(u64_of(&k)?)),
            None => Ok(None),
        }
    }

    /// When the last event of `watch` was written (ms since the epoch).
    pub fn last_event_ms(&self, watch: &str) -> Result<Option<u64>, StoreError> {
        match self
            .t()?
            .meta
            .get(last_event_key(watch))
            .map_err(io("read meta"))?
        {
            Some(v) => Ok(Some(u64_of(&v)?)),
            None => Ok(None),
        }
    }

    /// The highest sequence number and newest write time (ms) garbage collection removed:
    /// a replay from at or before them is no longer possible.
    pub fn gc_mark(&self) -> Result<(u64, u64), StoreError> {
        let get = |k: &[u8]| -> Result<u64, StoreError> {
            match self.t()?.meta.get(k).map_err(io("read meta"))? {
                Some(v) => u64_of(&v),
                None => Ok(0),
            }
        };
        Ok((get(GC_SEQ)?, get(GC_MS)?))
    }

    /// Bytes of event data in the outbox.
    pub fn outbox_bytes(&self) -> Result<u64, StoreError> {
        match self.t()?.meta.get(OUTBOX_BYTES).map_err(io("read meta"))? {
            Some(v) => u64_of(&v),
            None => Ok(0),
        }
    }

    /// Bytes the outbox budget (`state.outbox.max_bytes`) counts: the outbox's event data
    /// and the dead letters.
    pub fn stored_bytes(&self) -> Result<u64, StoreError> {
        Ok(self.outbox_bytes()? + self.dead_letter_bytes()?)
    }

    /// Deletes outbox entries with `seq <= upto` that were written before `older_than_ms`
    /// or, regardless of age, while the outbox and the dead letters together hold more
    /// than `max_bytes`. Returns how many
    /// entries were removed. Callers pass the slowest sink cursor as `upto`.
    pub fn gc_outbox(
        &self,
        upto: u64,
        older_than_ms: u64,
        max_bytes: u64,
    ) -> Result<usize, StoreError> {
        let mut removed = 0;
        let mut freed = 0u64;
        let mut mark = None;
        let total = self.stored_bytes()?;
        for r in self.t()?.outbox.range(..=upto.to_be_bytes()) {
            let (k, v) = r.map_err(io("read outbox"))?;
            let entry = codec::decode_entry(&v)?;
            let over_budget = total.saturating_sub(freed) > max_bytes;
            if entry.written_ms >= older_than_ms && !over_budget {
                break;
            }
            self.t()?.outbox.remove(&k).map_err(io("gc outbox"))?;
            freed += v.len() as u64;
            removed += 1;
            mark = Some((u64_of(&k)?, entry.written_ms));
        }
        if let Some((seq, ms)) = mark {
            self.t()?
                .meta
                .insert(GC_SEQ, &seq.to_be_bytes())
                .map_err(io("write meta"))?;
            let old_ms = self.gc_mark()?.1;
            self.t()?
                .meta
                .insert(GC_MS, &ms.max(old_ms).to_be_bytes())
                .map_err(io("write meta"))?;
        }
        if freed > 0 {
            self.t()?
                .meta
                .update_and_fetch(OUTBOX_BYTES, |old| {
                    let cur = old.and_then(|o| u64_of(o).ok()).unwrap_or(0);
                    Some(cur.saturating_sub(freed).to_be_bytes().to_vec())
                })
                .map_err(io("write meta"))?;
        }
        Ok(removed)
    }
}
