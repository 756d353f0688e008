//! The durable state: object states, the outbox, watch checkpoints and sink cursors.
//!
//! Backed by sled 0.34 behind this small interface (so another embedded store can replace
//! it if the fault suite ever demands). Seven trees:
//!
//! | tree          | key                                   | value                       |
//! |---------------|---------------------------------------|-----------------------------|
//! | `objects`     | `{watch}\0{namespace}\0{uid}`         | [`StoredObject`] (`codec`)  |
//! | `versions`    | the same keys                         | resourceVersion             |
//! | `outbox`      | sequence number, u64 big-endian       | [`OutboxEntry`] (`codec`)   |
//! | `checkpoints` | `{watch}\0{namespace or *}`           | resourceVersion             |
//! | `cursors`     | sink name                             | last acked sequence, u64 BE |
//! | `meta`        | `next_seq`, `outbox_bytes`, …         | u64 BE                      |
//! | `deadletters` | `{sink}\0{seq}` (seq u64 BE)          | [`DeadLetter`] (JSON)       |
//!
//! [`Store::commit`] writes a [`Batch`] — object states, outbox entries and checkpoints — in
//! ONE transaction, so a crash loses all of a batch or none of it. Only then, and after a
//! flush, is the batch's last sequence published as durable: dispatchers never send an
//! event that a crash could take back, and a cursor can therefore never point past an
//! entry that is lost.
//!
//! `versions` mirrors `objects` with only the resourceVersions, in the same transactions.
//! sled keeps the leaf pages it touches in memory, values inline, so answering "is this
//! object unchanged?" (every object of a relist) and "which objects are stored?" (the
//! reconcile after a list) from small pages keeps the 4 KiB states on disk. A directory
//! from a release without it gets it built once when opened.

pub mod codec;
mod keys;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crbridge_sink_api::Event;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

pub use keys::{checkpoint_key, object_key, object_prefix, ObjectKey};

/// A failure of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database is being reopened after an I/O error; try again.
    #[error("state store is being reopened after an I/O error")]
    Reopening,
    /// The state directory could not be opened (in use by another process, unreadable).
    #[error("opening the state directory {path}: {source} (is another crbridge using it?)")]
    Open {
        /// The directory.
        path: String,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// A read, write, transaction or flush failed (disk full, I/O error).
    #[error("state store {step}: {source}")]
    Io {
        /// What was being done.
        step: &'static str,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// A stored value did not decode: the state directory is damaged or from another version.
    #[error("state store: corrupt {what}: {detail}")]
    Corrupt {
        /// Which record.
        what: &'static str,
        /// Why.
        detail: String,
    },
}

fn io(step: &'static str) -> impl FnOnce(sled::Error) -> StoreError {
    move |source| StoreError::Io { step, source }
}

/// The last published state of one object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredObject {
    /// resourceVersion of the stored state.
    pub resource_version: String,
    /// The clean object (see `diff::clean`).
    pub object: serde_json::Value,
}

/// One outbox entry: the event and the watch it came from (which decides its sinks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// The watch name.
    pub watch: String,
    /// Only these sinks (of the watch's), when set: a snapshot requested for one sink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sinks: Option<Vec<String>>,
    /// When the entry was written, milliseconds since the epoch (retention).
    pub written_ms: u64,
    /// When the change was received from the API server, microseconds since the epoch
    /// (0 in entries written before this was recorded): the start of publish latency.
    #[serde(default)]
    pub observed_us: u64,
    /// The event.
    pub event: Event,
}

/// An event a sink refused for good, kept instead of dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Outbox sequence number.
    pub seq: u64,
    /// Why the sink refused it.
    pub error: String,
    /// When, milliseconds since the epoch.
    pub at_ms: u64,
    /// The entry as it was in the outbox.
    pub entry: OutboxEntry,
}

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

/// Store tuning.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// sled page cache in bytes. sled's default is 1 GiB, far too much for a sidecar-sized
    /// daemon; object states are read rarely (on change), so a small cache suffices.
    pub cache_bytes: u64,
    /// sled's background flush period. Correctness never depends on it (durable points are
    /// flushed explicitly); it only bounds how much work a crash repeats.
    pub flush_every: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_bytes: 64 << 20,
            flush_every: Duration::from_millis(200),
        }
    }
}

/// The open sled database and its trees.
struct Trees {
    db: sled::Db,
    objects: sled::Tree,
    versions: sled::Tree,
    outbox: sled::Tree,
    checkpoints: sled::Tree,
    cursors: sled::Tree,
    meta: sled::Tree,
    dead_letters: sled::Tree,
}

/// The state store. Cheap to clone; every clone sees the same database, also across
/// [`Store::reopen`].
#[derive(Clone)]
pub struct Store {
    trees: Arc<RwLock<Option<Arc<Trees>>>>,
    path: PathBuf,
    opts: StoreOptions,
}

const NEXT_SEQ: &[u8] = b"next_seq";
const OUTBOX_BYTES: &[u8] = b"outbox_bytes";
/// Set once `versions` mirrors `objects` (absent in directories of earlier releases).
const VERSIONS_BUILT: &[u8] = b"versions_built";
/// Highest sequence number and newest write time garbage collection removed.
const GC_SEQ: &[u8] = b"gc_seq";
const GC_MS: &[u8] = b"gc_ms";

fn last_event_key(watch: &str) -> Vec<u8> {
    let mut k = b"last_event\0".to_vec();
    k.extend_from_slice(watch.as_bytes());
    k
}

fn u64_of(v: &[u8]) -> Result<u64, StoreError> {
    let arr: [u8; 8] = v.try_into().map_err(|_| StoreError::Corrupt {
        what: "counter",
        detail: format!("{} bytes, expected 8", v.len()),
    })?;
    Ok(u64::from_be_bytes(arr))
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Microseconds since the epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl Store {
    /// Opens (or creates) the store in `path`. Fails if another process holds it.
    pub fn open(path: &Path, opts: &StoreOptions) -> Result<Self, StoreError> {
        Ok(Store {
            trees: Arc::new(RwLock::new(Some(Arc::new(Self::open_trees(path, opts)?)))),
            path: path.to_path_buf(),
            opts: opts.clone(),
        })
    }

    fn open_trees(path: &Path, opts: &StoreOptions) -> Result<Trees, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(opts.cache_bytes)
            .flush_every_ms(Some(opts.flush_every.as_millis().max(1) as u64))
            .open()
            .map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?;
        let tree = |name: &str| db.open_tree(name).map_err(io("open tree"));
        let trees = Trees {
            objects: tree("objects")?,
            versions: tree("versions")?,
            outbox: tree("outbox")?,
            checkpoints: tree("checkpoints")?,
            cursors: tree("cursors")?,
            meta: tree("meta")?,
            dead_letters: tree("deadletters")?,
            db,
        };
        Self::build_versions(&trees)?;
        Ok(trees)
    }

    /// Fills `versions` from `objects` in a directory written before it existed. Nothing
    /// else runs yet; an interruption leaves the marker unset and the next open starts over.
    fn build_versions(t: &Trees) -> Result<(), StoreError> {
        if t.meta
            .contains_key(VERSIONS_BUILT)
            .map_err(io("read meta"))?
        {
            return Ok(());
        }
        t.versions.clear().map_err(io("build versions"))?;
        for item in t.objects.iter() {
            let (key, value) = item.map_err(io("build versions"))?;
            let rv = codec::state_version(&value)?;
            t.versions
                .insert(key, rv.as_bytes())
                .map_err(io("build versions"))?;
        }
        t.meta
            .insert(VERSIONS_BUILT, &1u64.to_be_bytes())
            .map_err(io("build versions"))?;
        t.db.flush().map_err(io("build versions"))?;
        Ok(())
    }

    fn t(&self) -> Result<Arc<Trees>, StoreError> {
        self.trees
            .read()
            .ok()
            .and_then(|g| g.clone())
            .ok_or(StoreError::Reopening)
    }

    /// Bytes free on the state directory's file system, if the OS says.
    pub fn space_available(&self) -> Option<u64> {
        fs2::available_space(&self.path).ok()
    }

    /// Closes and reopens the database. sled keeps failing every operation after one I/O
    /// error (a full disk, say), even once the cause is gone; reopening recovers what was
    /// durable and lets work resume without restarting the process. Writes that had not
    /// been flushed are gone, which is safe: nothing announced as durable is among them,
    /// and the callers retry what they were doing.
    pub fn reopen(&self) -> Result<(), StoreError> {
        let mut guard = self.trees.write().map_err(|_| StoreError::Reopening)?;
        // Let go of the failed instance; sled releases the directory when the last
        // handle (an iterator in another task, say) is dropped, so retry briefly.
        guard.take();
        let mut last = None;
        for _ in 0..40 {
            match Self::open_trees(&self.path, &self.opts) {
                Ok(t) => {
                    *guard = Some(Arc::new(t));
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Err(last.unwrap_or(StoreError::Reopening))
    }

    /// The stored state of one object.
    pub fn object(&self, key: &ObjectKey) -> Result<Option<StoredObject>, StoreError> {
        match self
            .t()?
            .objects
            .get(key.as_bytes())
            .map_err(io("read object"))?
        {
            None => Ok(None),
            Some(v) => codec::decode_state(&v).map(Some),
        }
    }

    /// The resourceVersion of one object's stored state, without reading the state.
    pub fn version(&self, key: &ObjectKey) -> Result<Option<String>, StoreError> {
        Ok(self
            .t()?
            .versions
            .get(key.as_bytes())
            .map_err(io("read version"))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Replaces one object's stored state with raw bytes, leaving its version alone: lets
    /// tests show which paths read states.
    #[cfg(test)]
    pub(crate) fn overwrite_state_raw(&self, key: &ObjectKey, value: &[u8]) {
        self.t()
            .unwrap()
            .objects
            .insert(key.as_bytes(), value)
            .unwrap();
    }

    /// Stored objects whose key starts with `prefix` (see [`object_prefix`]), in key order,
    /// from the first key after `after` (all of them when `None`). States are read as the
    /// iterator advances.
    pub fn objects_after(
        &self,
        prefix: &[u8],
        after: Option<&ObjectKey>,
    ) -> Box<dyn Iterator<Item = Result<(ObjectKey, StoredObject), StoreError>> + Send + '_> {
        let t = match self.t() {
            Ok(t) => t,
            Err(e) => return Box::new(std::iter::once(Err(e))),
        };
        let iter = match after {
            None => t.objects.scan_prefix(prefix),
            Some(a) => t.objects.range::<&[u8], _>((
                std::ops::Bound::Excluded(a.as_bytes()),
                std::ops::Bound::Unbounded,
            )),
        };
        let prefix = prefix.to_vec();
        Box::new(
            iter.take_while(move |r| match r {
                Ok((k, _)) => k.starts_with(&prefix),
                Err(_) => true,
            })
            .map(|r| {
                let (k, v) = r.map_err(io("scan objects"))?;
                Ok((ObjectKey::from_bytes(k.to_vec()), codec::decode_state(&v)?))
            }),
        )
    }

    /// Keys of the stored objects whose key starts with `prefix`, without reading their
    /// states.
    pub fn object_keys_with_prefix(
        &self,
        prefix: &[u8],
    ) -> Box<dyn Iterator<Item = Result<ObjectKey, StoreError>> + Send + '_> {
        let t = match self.t() {
            Ok(t) => t,
            Err(e) => return Box::new(std::iter::once(Err(e))),
        };
        Box::new(t.versions.scan_prefix(prefix).keys().map(|k| {
            Ok(ObjectKey::from_bytes(
                k.map_err(io("scan objects"))?.to_vec(),
            ))
        }))
    }

    /// Number of stored objects whose key starts with `prefix`.
    pub fn count_objects(&self, prefix: &[u8]) -> usize {
        self.t()
            .map_or(0, |t| t.versions.scan_prefix(prefix).keys().count())
    }

    /// The checkpointed resourceVersion of a watch scope.
    pub fn checkpoint(&self, key: &[u8]) -> Result<Option<String>, StoreError> {
        Ok(self
            .t()?
            .checkpoints
            .get(key)
            .map_err(io("read checkpoint"))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

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

    /// Number of dead letters of `sink`.
    pub fn dead_letter_count(&self, sink: &str) -> usize {
        let mut prefix = sink.as_bytes().to_vec();
        prefix.push(0);
        self.t()
            .map_or(0, |t| t.dead_letters.scan_prefix(prefix).keys().count())
    }

    /// Bytes of event data in the outbox.
    pub fn outbox_bytes(&self) -> Result<u64, StoreError> {
        match self.t()?.meta.get(OUTBOX_BYTES).map_err(io("read meta"))? {
            Some(v) => u64_of(&v),
            None => Ok(0),
        }
    }

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

    /// Deletes outbox entries with `seq <= upto` that were written before `older_than_ms`
    /// or, regardless of age, while the outbox holds more than `max_bytes`. Returns how many
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
        let total = self.outbox_bytes()?;
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

/// A write with its values serialized: (object key and new state or removal, outbox entry).
type EncodedWrite<'a> = (
    Option<(&'a ObjectKey, Option<(Vec<u8>, &'a str)>)>,
    Option<Vec<u8>>,
);

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

/// An outbox entry for tests: a `created` event `id` of object `uid`, from `watch`.
#[cfg(test)]
pub(crate) fn test_entry(id: &str, watch: &str, uid: &str, written_ms: u64) -> OutboxEntry {
    use crbridge_sink_api::{ChangeKind, Route};
    OutboxEntry {
        watch: watch.into(),
        sinks: None,
        written_ms,
        observed_us: written_ms * 1000,
        event: Event {
            id: id.into(),
            source: "/s".into(),
            ty: "t".into(),
            subject: "x".into(),
            time: "2026-01-01T00:00:00Z".into(),
            extensions: vec![],
            data: serde_json::value::RawValue::from_string("{}".into()).unwrap_or_default(),
            route: Route {
                cluster: "c".into(),
                group: "g".into(),
                version: "v1".into(),
                kind: "K".into(),
                plural: "ks".into(),
                namespace: String::new(),
                name: "x".into(),
                change: ChangeKind::Created,
                uid: uid.into(),
            },
        },
    }
}

#[cfg(test)]
mod tests;
