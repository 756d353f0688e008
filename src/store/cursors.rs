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
        let key = dead_letter_key(sink, letter.seq);
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
            .t()?
            .dead_letters
            .remove(dead_letter_key(sink, seq))
            .map_err(io("delete dead letter"))?
            .is_some())
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
}
