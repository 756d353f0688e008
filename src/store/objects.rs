//! Reads of object states, their resourceVersions and watch checkpoints.

#[cfg(test)]
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::{codec, io, ObjectKey, Store, StoreError, StoredObject};

/// Read failures injected by tests ([`Store::fail_reads`]).
#[cfg(test)]
#[derive(Debug, Default)]
pub(super) struct ReadFaults {
    on: AtomicBool,
    failed: AtomicU64,
}

#[cfg(test)]
impl ReadFaults {
    /// An I/O error for `step` while failures are on.
    fn check(&self, step: &'static str) -> Result<(), StoreError> {
        if !self.on.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.failed.fetch_add(1, Ordering::SeqCst);
        Err(io(step)(sled::Error::Io(std::io::Error::other(
            "injected read failure",
        ))))
    }
}

impl Store {
    /// The stored state of one object.
    pub fn object(&self, key: &ObjectKey) -> Result<Option<StoredObject>, StoreError> {
        #[cfg(test)]
        self.faults.check("read object")?;
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
        #[cfg(test)]
        self.faults.check("read version")?;
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

    /// While `on`, every read of object states and versions fails as an I/O error would:
    /// lets tests show what a failing read does to the batch being built.
    #[cfg(test)]
    pub(crate) fn fail_reads(&self, on: bool) {
        self.faults.on.store(on, Ordering::SeqCst);
    }

    /// How many reads [`Store::fail_reads`] has failed so far.
    #[cfg(test)]
    pub(crate) fn failed_reads(&self) -> u64 {
        self.faults.failed.load(Ordering::SeqCst)
    }

    /// Stored objects whose key starts with `prefix` (see
    /// [`object_prefix`](super::object_prefix)), in key order, from the first key after
    /// `after` (all of them when `None`). States are read as the iterator advances.
    pub fn objects_after(
        &self,
        prefix: &[u8],
        after: Option<&ObjectKey>,
    ) -> Box<dyn Iterator<Item = Result<(ObjectKey, StoredObject), StoreError>> + Send + '_> {
        #[cfg(test)]
        if let Err(e) = self.faults.check("scan objects") {
            return Box::new(std::iter::once(Err(e)));
        }
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
        #[cfg(test)]
        if let Err(e) = self.faults.check("scan objects") {
            return Box::new(std::iter::once(Err(e)));
        }
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

    /// True when the store holds a checkpoint or an object state of `watch`.
    pub fn has_watch_state(&self, watch: &str) -> Result<bool, StoreError> {
        let prefix = super::keys::object_prefix(watch, None);
        let t = self.t()?;
        let any = |tree: &sled::Tree| {
            tree.scan_prefix(&prefix)
                .next()
                .transpose()
                .map(|first| first.is_some())
                .map_err(io("read state"))
        };
        Ok(any(&t.checkpoints)? || any(&t.versions)?)
    }

    /// True when a scope whose state key starts with `prefix` has a checkpoint: for the
    /// kinds of a whole-group watch (`{watch}/`), whether the group was watched before.
    pub fn has_checkpoint_under(&self, prefix: &str) -> Result<bool, StoreError> {
        Ok(self
            .t()?
            .checkpoints
            .scan_prefix(prefix.as_bytes())
            .next()
            .transpose()
            .map_err(io("read checkpoint"))?
            .is_some())
    }

    /// Every checkpoint whose state key starts with `prefix`, as (state key, namespace or
    /// `*`, resourceVersion), in key order: the kinds of a whole-group watch (`{watch}/`)
    /// as far as the store knows them.
    pub fn checkpoints_under(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        let mut out = Vec::new();
        for item in self.t()?.checkpoints.scan_prefix(prefix.as_bytes()) {
            let (k, v) = item.map_err(io("read checkpoint"))?;
            let Some(split) = k.iter().position(|b| *b == 0) else {
                continue;
            };
            out.push((
                String::from_utf8_lossy(&k[..split]).into_owned(),
                String::from_utf8_lossy(&k[split + 1..]).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            ));
        }
        Ok(out)
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
}
