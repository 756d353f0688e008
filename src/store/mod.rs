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
//!
//! The methods live by concern: `objects` (reads of states, versions and checkpoints),
//! `commit` (the one write path: a [`Batch`] in a transaction), `outbox` (reads and
//! garbage collection), `cursors` (per-sink cursors and dead letters).

pub mod codec;
mod commit;
mod cursors;
mod keys;
mod objects;
mod outbox;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crbridge_sink_api::Event;
use serde::{Deserialize, Serialize};

pub use commit::{Batch, Write};
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
    /// Cursors acked but maybe not written yet ([`Store::note_cursor`]); shared by every
    /// clone, kept across reopens.
    acked: Arc<std::sync::Mutex<std::collections::HashMap<String, u64>>>,
    /// Injected read failures (tests only); shared by every clone, kept across reopens.
    #[cfg(test)]
    faults: Arc<objects::ReadFaults>,
}

const NEXT_SEQ: &[u8] = b"next_seq";
const OUTBOX_BYTES: &[u8] = b"outbox_bytes";
/// Bytes the dead letters take (absent in directories of earlier releases).
const DEAD_LETTER_BYTES: &[u8] = b"dead_letter_bytes";
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
            acked: Arc::default(),
            #[cfg(test)]
            faults: Arc::default(),
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
        Self::count_dead_letters(&trees)?;
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
        fs4::available_space(&self.path).ok()
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
