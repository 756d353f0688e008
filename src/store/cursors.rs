//! Per-sink state: the acknowledged cursor and the dead letters.

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::{io, u64_of, DeadLetter, Store, StoreError, Trees, DEAD_LETTER_BYTES};

impl Store {
    /// The last sequence number `sink` has been acked for (0 when none): the one noted in
    /// memory ([`Store::note_cursor`]) if any, else the one written.
    pub fn cursor(&self, sink: &str) -> Result<u64, StoreError> {
        if let Some(seq) = self.noted_cursor(sink) {
            return Ok(seq);
        }
        self.written_cursor(sink)
    }

    /// The cursor of `sink` as written in sled (0 when none): what a restart resumes from.
    pub fn written_cursor(&self, sink: &str) -> Result<u64, StoreError> {
        match self.t()?.cursors.get(sink).map_err(io("read cursor"))? {
            Some(v) => u64_of(&v),
            None => Ok(0),
        }
    }

    /// True when `sink` has a cursor (it has run before).
    pub fn has_cursor(&self, sink: &str) -> Result<bool, StoreError> {
        if self.noted_cursor(sink).is_some() {
            return Ok(true);
        }
        self.t()?
            .cursors
            .contains_key(sink)
            .map_err(io("read cursor"))
    }

    /// Records that `sink` is acked up to and including `seq`, and writes it. Durable at the
    /// next flush; a cursor lost in a crash only repeats sends (same ids), never skips.
    pub fn set_cursor(&self, sink: &str, seq: u64) -> Result<(), StoreError> {
        self.note_cursor(sink, seq);
        self.t()?
            .cursors
            .insert(sink, &seq.to_be_bytes())
            .map_err(io("write cursor"))?;
        Ok(())
    }

    /// Records that `sink` is acked up to and including `seq`, in memory only:
    /// [`Store::cursor`] answers it at once, a restart resumes from the last
    /// [`Store::set_cursor`]. Dispatchers note every ack and write once in a while
    /// (`dispatch::cursor`).
    pub fn note_cursor(&self, sink: &str, seq: u64) {
        if let Ok(mut acked) = self.acked.lock() {
            // Every ack of every sink comes here: no allocation once the sink is known.
            match acked.get_mut(sink) {
                Some(noted) => *noted = seq,
                None => {
                    acked.insert(sink.to_string(), seq);
                }
            }
        }
    }

    fn noted_cursor(&self, sink: &str) -> Option<u64> {
        self.acked.lock().ok()?.get(sink).copied()
    }

    /// Number of dead letters of `sink`.
    pub fn dead_letter_count(&self, sink: &str) -> usize {
        let mut prefix = sink.as_bytes().to_vec();
        prefix.push(0);
        self.t()
            .map_or(0, |t| t.dead_letters.scan_prefix(prefix).keys().count())
    }

    /// Keeps an event `sink` refused for good. Its bytes count in the outbox budget
    /// ([`Store::stored_bytes`]).
    pub fn add_dead_letter(&self, sink: &str, letter: &DeadLetter) -> Result<(), StoreError> {
        let key = dead_letter_key(sink, letter.seq);
        let value = encode(letter)?;
        self.dead_letter_write(&key, Some(&value), "write dead letter")?;
        Ok(())
    }

    /// Bytes the kept dead letters take (as stored).
    pub fn dead_letter_bytes(&self) -> Result<u64, StoreError> {
        match self
            .t()?
            .meta
            .get(DEAD_LETTER_BYTES)
            .map_err(io("read meta"))?
        {
            Some(v) => u64_of(&v),
            None => Ok(0),
        }
    }

    /// Writes (`Some`) or deletes (`None`) the dead letter at `key` and moves the byte
    /// count with it, in one transaction; returns the bytes the key held before (`None`:
    /// it held nothing).
    fn dead_letter_write(
        &self,
        key: &[u8],
        value: Option<&[u8]>,
        what: &'static str,
    ) -> Result<Option<u64>, StoreError> {
        let t = self.t()?;
        let result = (&t.dead_letters, &t.meta).transaction(|(letters, meta)| {
            let old = match value {
                Some(v) => letters.insert(key, v)?,
                None => letters.remove(key)?,
            };
            let before = match meta.get(DEAD_LETTER_BYTES)? {
                Some(v) => u64_of(&v).map_err(ConflictableTransactionError::Abort)?,
                None => 0,
            };
            let after = before.saturating_sub(old.as_ref().map_or(0, |o| o.len() as u64))
                + value.map_or(0, |v| v.len() as u64);
            meta.insert(DEAD_LETTER_BYTES, &after.to_be_bytes())?;
            Ok(old.map(|o| o.len() as u64))
        });
        result.map_err(|e| match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => io(what)(e),
        })
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

    /// Every dead letter, or those of `sink`, with their sink's name: by sink name, then
    /// oldest first.
    pub fn all_dead_letters(
        &self,
        sink: Option<&str>,
    ) -> Result<Vec<(String, DeadLetter)>, StoreError> {
        let t = self.t()?;
        let iter = match sink {
            Some(s) => {
                let mut prefix = s.as_bytes().to_vec();
                prefix.push(0);
                t.dead_letters.scan_prefix(prefix)
            }
            None => t.dead_letters.iter(),
        };
        iter.map(|kv| {
            let (k, v) = kv.map_err(io("read dead letters"))?;
            let end = k.iter().position(|b| *b == 0).unwrap_or(k.len());
            let name = String::from_utf8_lossy(&k[..end]).into_owned();
            Ok((name, decode(&v, "dead letter")?))
        })
        .collect()
    }

    /// The dead letter of `sink` at outbox sequence `seq`, if kept.
    pub fn dead_letter(&self, sink: &str, seq: u64) -> Result<Option<DeadLetter>, StoreError> {
        self.t()?
            .dead_letters
            .get(dead_letter_key(sink, seq))
            .map_err(io("read dead letter"))?
            .map(|v| decode(&v, "dead letter"))
            .transpose()
    }

    /// Deletes the dead letters kept since before `cutoff_ms` (retention); returns them with
    /// their sink's name.
    pub fn expire_dead_letters(
        &self,
        cutoff_ms: u64,
    ) -> Result<Vec<(String, DeadLetter)>, StoreError> {
        let mut gone = Vec::new();
        for (sink, letter) in self.all_dead_letters(None)? {
            if letter.at_ms < cutoff_ms && self.remove_dead_letter(&sink, letter.seq)? {
                gone.push((sink, letter));
            }
        }
        Ok(gone)
    }

    /// Deletes the dead letter of `sink` at `seq`; true when there was one.
    pub fn remove_dead_letter(&self, sink: &str, seq: u64) -> Result<bool, StoreError> {
        Ok(self
            .dead_letter_write(&dead_letter_key(sink, seq), None, "delete dead letter")?
            .is_some())
    }

    /// While the outbox and the dead letters together take more than `max_bytes`, deletes
    /// the oldest dead letters; returns them with their sink's name. Garbage collection
    /// calls it after freeing what it could of the acked outbox, so the budget bounds the
    /// disk even when a sink refuses everything.
    pub fn trim_dead_letters(
        &self,
        max_bytes: u64,
    ) -> Result<Vec<(String, DeadLetter)>, StoreError> {
        let mut over = self.stored_bytes()?.saturating_sub(max_bytes);
        if over == 0 {
            return Ok(Vec::new());
        }
        let mut letters = self.all_dead_letters(None)?;
        letters.sort_by_key(|(_, l)| (l.at_ms, l.seq));
        let mut gone = Vec::new();
        for (sink, letter) in letters {
            if over == 0 {
                break;
            }
            let key = dead_letter_key(&sink, letter.seq);
            if let Some(freed) = self.dead_letter_write(&key, None, "delete dead letter")? {
                over = over.saturating_sub(freed);
                gone.push((sink, letter));
            }
        }
        Ok(gone)
    }

    /// Drops the dead-letter byte count, as a directory of an earlier release has none.
    #[cfg(test)]
    pub(crate) fn forget_dead_letter_count(&self) {
        self.t().unwrap().meta.remove(DEAD_LETTER_BYTES).unwrap();
    }

    /// Counts the dead letters' bytes when a directory from an earlier release has none
    /// counted yet. Nothing else runs yet.
    pub(super) fn count_dead_letters(t: &Trees) -> Result<(), StoreError> {
        if t.meta
            .contains_key(DEAD_LETTER_BYTES)
            .map_err(io("read meta"))?
        {
            return Ok(());
        }
        let mut bytes = 0u64;
        for v in t.dead_letters.iter().values() {
            bytes += v.map_err(io("count dead letters"))?.len() as u64;
        }
        t.meta
            .insert(DEAD_LETTER_BYTES, &bytes.to_be_bytes())
            .map_err(io("count dead letters"))?;
        Ok(())
    }
}

fn dead_letter_key(sink: &str, seq: u64) -> Vec<u8> {
    let mut key = sink.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key
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

#[cfg(test)]
mod tests {
    use super::super::{test_entry, DeadLetter, Store};

    fn letter(seq: u64, at_ms: u64) -> DeadLetter {
        DeadLetter {
            seq,
            error: "refused".into(),
            at_ms,
            entry: test_entry(&format!("ev-{seq}"), "w", "u", 1),
        }
    }

    #[test]
    fn dead_letters_past_retention_expire_and_the_rest_stay() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &Default::default()).unwrap();
        store.add_dead_letter("a", &letter(1, 100)).unwrap();
        store.add_dead_letter("a", &letter(2, 300)).unwrap();
        store.add_dead_letter("b", &letter(3, 150)).unwrap();
        let gone = store.expire_dead_letters(200).unwrap();
        let ids: Vec<(String, u64)> = gone.iter().map(|(s, l)| (s.clone(), l.seq)).collect();
        assert_eq!(ids, vec![("a".into(), 1), ("b".into(), 3)]);
        let left: Vec<u64> = store
            .all_dead_letters(None)
            .unwrap()
            .iter()
            .map(|(_, l)| l.seq)
            .collect();
        assert_eq!(left, vec![2]);
        assert!(store.dead_letter("a", 2).unwrap().is_some());
        assert!(store.dead_letter("a", 1).unwrap().is_none());
    }

    #[test]
    fn dead_letter_bytes_follow_adds_replacements_and_removals() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &Default::default()).unwrap();
        assert_eq!(store.dead_letter_bytes().unwrap(), 0);
        store.add_dead_letter("a", &letter(1, 100)).unwrap();
        let one = store.dead_letter_bytes().unwrap();
        assert!(one > 0);
        store.add_dead_letter("a", &letter(1, 100)).unwrap();
        assert_eq!(
            store.dead_letter_bytes().unwrap(),
            one,
            "a replaced letter counts once"
        );
        store.add_dead_letter("b", &letter(2, 100)).unwrap();
        assert_eq!(store.dead_letter_bytes().unwrap(), 2 * one);
        assert_eq!(
            store.stored_bytes().unwrap(),
            2 * one,
            "counted in the outbox budget"
        );
        assert!(store.remove_dead_letter("a", 1).unwrap());
        assert!(!store.remove_dead_letter("a", 1).unwrap());
        assert_eq!(store.dead_letter_bytes().unwrap(), one);
    }

    #[tokio::test]
    async fn dead_letter_bytes_are_counted_again_in_a_directory_without_a_count() {
        let dir = tempfile::tempdir().unwrap();
        let expected = {
            let store = Store::open(dir.path(), &Default::default()).unwrap();
            store.add_dead_letter("a", &letter(1, 100)).unwrap();
            store.add_dead_letter("a", &letter(2, 100)).unwrap();
            let n = store.dead_letter_bytes().unwrap();
            store.forget_dead_letter_count();
            store.flush().await.unwrap();
            n
        };
        let store = Store::open(dir.path(), &Default::default()).unwrap();
        assert_eq!(store.dead_letter_bytes().unwrap(), expected);
    }

    #[test]
    fn over_the_budget_the_oldest_dead_letters_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &Default::default()).unwrap();
        store.add_dead_letter("b", &letter(3, 300)).unwrap();
        store.add_dead_letter("a", &letter(1, 200)).unwrap();
        store.add_dead_letter("a", &letter(2, 100)).unwrap();
        let one = store.dead_letter_bytes().unwrap() / 3;
        assert!(
            store.trim_dead_letters(3 * one).unwrap().is_empty(),
            "within budget"
        );
        let gone = store.trim_dead_letters(one + one / 2).unwrap();
        let seqs: Vec<u64> = gone.iter().map(|(_, l)| l.seq).collect();
        assert_eq!(seqs, vec![2, 1], "oldest first, until under budget");
        assert!(store.dead_letter("b", 3).unwrap().is_some());
        assert!(store.stored_bytes().unwrap() <= one + one / 2);
    }
}
