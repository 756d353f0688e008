//! The batch being built: the store [`Batch`] and its overlay, the states this batch has
//! written but not yet committed.
//!
//! Every read capture makes while building a batch goes through [`BatchBuilder`], so it sees
//! the store as the batch will leave it: an object put earlier in the batch has its new
//! state, one removed earlier in the batch is gone. Reads of the store itself only happen
//! for keys the batch has not touched.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::value::RawValue;

use crate::store::{Batch, ObjectKey, OutboxEntry, Store, StoreError, StoredObject, Write};

/// Objects of one page, in key order.
pub(super) type Page = Vec<(ObjectKey, Arc<StoredObject>)>;

/// One batch under construction over `store`.
pub(super) struct BatchBuilder<'s> {
    store: &'s Store,
    batch: Batch,
    /// A pending state per key written in this batch (`None`: removed).
    overlay: HashMap<ObjectKey, Option<Arc<StoredObject>>>,
}

impl<'s> BatchBuilder<'s> {
    /// An empty batch over `store`.
    pub(super) fn new(store: &'s Store) -> Self {
        BatchBuilder {
            store,
            batch: Batch::default(),
            overlay: HashMap::new(),
        }
    }

    /// The batch to commit.
    pub(super) fn into_batch(self) -> Batch {
        self.batch
    }

    /// The state of `key` as this batch leaves it.
    pub(super) fn state(&self, key: &ObjectKey) -> Result<Option<Arc<StoredObject>>, StoreError> {
        match self.overlay.get(key) {
            Some(state) => Ok(state.clone()),
            None => Ok(self.store.object(key)?.map(Arc::new)),
        }
    }

    /// The resourceVersion of `key` as this batch leaves it; reads no stored state, only
    /// the version.
    pub(super) fn version(&self, key: &ObjectKey) -> Result<Option<String>, StoreError> {
        match self.overlay.get(key) {
            Some(state) => Ok(state.as_ref().map(|s| s.resource_version.clone())),
            None => self.store.version(key),
        }
    }

    /// Sets a watch checkpoint when the batch commits.
    pub(super) fn checkpoint(&mut self, key: Vec<u8>, resource_version: String) {
        self.batch.checkpoints.push((key, resource_version));
    }

    /// Stores `state` (serialized as `object_json`) under `key`, appending `event` if any.
    pub(super) fn put(
        &mut self,
        key: ObjectKey,
        state: StoredObject,
        object_json: Box<RawValue>,
        event: Option<OutboxEntry>,
    ) {
        self.batch.writes.push(Write::Put {
            key: key.clone(),
            resource_version: state.resource_version.clone(),
            object_json,
            event,
        });
        self.overlay.insert(key, Some(Arc::new(state)));
    }

    /// Removes `key`, appending `event` if any.
    pub(super) fn remove(&mut self, key: ObjectKey, event: Option<OutboxEntry>) {
        self.overlay.insert(key.clone(), None);
        self.batch.writes.push(Write::Remove { key, event });
    }

    /// Appends an event that changes no state.
    pub(super) fn emit(&mut self, entry: OutboxEntry) {
        self.batch.writes.push(Write::Emit(entry));
    }

    /// Keys under `prefix` that exist as this batch leaves them and whose uid is not in
    /// `seen`, in key order. Keys only: no stored state is read (a relist of 100k objects
    /// would otherwise decode every one).
    pub(super) fn missing(
        &self,
        prefix: &[u8],
        seen: &std::collections::HashSet<String>,
    ) -> Result<Vec<ObjectKey>, StoreError> {
        let mut gone: Vec<ObjectKey> = Vec::new();
        for key in self.store.object_keys_with_prefix(prefix) {
            let key = key?;
            if !self.overlay.contains_key(&key) && !seen.contains(key.uid()) {
                gone.push(key);
            }
        }
        gone.extend(
            self.overlay
                .iter()
                .filter(|(k, v)| {
                    v.is_some() && k.as_bytes().starts_with(prefix) && !seen.contains(k.uid())
                })
                .map(|(k, _)| k.clone()),
        );
        gone.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        Ok(gone)
    }

    /// Up to `limit` objects under `prefix` after key `after`, as this batch leaves them, in
    /// key order; and whether more follow.
    pub(super) fn page(
        &self,
        prefix: &[u8],
        after: Option<&ObjectKey>,
        limit: usize,
    ) -> Result<(Page, bool), StoreError> {
        let mut out: Page = Vec::new();
        let mut more = false;
        for item in self.store.objects_after(prefix, after) {
            let (key, stored) = item?;
            if self.overlay.contains_key(&key) {
                continue;
            }
            if out.len() == limit {
                more = true;
                break;
            }
            out.push((key, Arc::new(stored)));
        }
        // Every stored key not scanned sorts after every scanned one, so the `limit`
        // smallest of scanned and overlaid keys are the page.
        for (key, state) in &self.overlay {
            let in_range = key.as_bytes().starts_with(prefix)
                && after.is_none_or(|a| key.as_bytes() > a.as_bytes());
            if let (true, Some(state)) = (in_range, state) {
                out.push((key.clone(), state.clone()));
            }
        }
        out.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        if out.len() > limit {
            out.truncate(limit);
            more = true;
        }
        Ok((out, more))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{object_key, object_prefix, StoreOptions};
    use serde_json::json;

    fn state(rv: &str) -> StoredObject {
        StoredObject {
            resource_version: rv.into(),
            object: json!({"metadata": {"resourceVersion": rv}}),
        }
    }

    fn json(s: &StoredObject) -> Box<RawValue> {
        serde_json::value::to_raw_value(&s.object).unwrap()
    }

    /// A store holding a (rv 1) and b (rv 2), committed.
    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let mut b = BatchBuilder::new(&store);
        for (uid, rv) in [("a", "1"), ("b", "2")] {
            let s = state(rv);
            let j = json(&s);
            b.put(object_key("w", "ns", uid), s, j, None);
        }
        let batch = b.into_batch();
        store.commit(&batch).unwrap();
        (dir, store)
    }

    fn uids(page: &Page) -> Vec<&str> {
        page.iter().map(|(k, _)| k.uid()).collect()
    }

    #[test]
    fn reads_see_the_batch_before_the_store() {
        let (_dir, store) = store();
        let mut b = BatchBuilder::new(&store);
        let (a, bk, c) = (
            object_key("w", "ns", "a"),
            object_key("w", "ns", "b"),
            object_key("w", "ns", "c"),
        );
        assert_eq!(b.version(&a).unwrap().as_deref(), Some("1"));
        let s = state("5");
        let j = json(&s);
        b.put(a.clone(), s, j, None);
        b.remove(bk.clone(), None);
        assert_eq!(b.version(&a).unwrap().as_deref(), Some("5"));
        assert_eq!(b.state(&a).unwrap().unwrap().resource_version, "5");
        assert_eq!(b.version(&bk).unwrap(), None);
        assert!(b.state(&bk).unwrap().is_none());
        assert!(b.state(&c).unwrap().is_none());
        // Nothing reaches the store before the commit.
        assert_eq!(store.version(&bk).unwrap().as_deref(), Some("2"));
        assert_eq!(b.into_batch().writes.len(), 2);
    }

    #[test]
    fn missing_and_pages_merge_store_and_batch_in_key_order() {
        let (_dir, store) = store();
        let mut b = BatchBuilder::new(&store);
        let s = state("3");
        let j = json(&s);
        b.put(object_key("w", "ns", "c"), s, j, None);
        b.remove(object_key("w", "ns", "a"), None);
        let prefix = object_prefix("w", None);
        let seen = ["b".to_string()].into_iter().collect();
        let missing = b.missing(&prefix, &seen).unwrap();
        assert_eq!(missing.iter().map(|k| k.uid()).collect::<Vec<_>>(), ["c"]);
        let (page, more) = b.page(&prefix, None, 1).unwrap();
        assert_eq!((uids(&page), more), (vec!["b"], true));
        let (page, more) = b.page(&prefix, Some(&page[0].0), 1).unwrap();
        assert_eq!((uids(&page), more), (vec!["c"], false));
        let (page, more) = b.page(&prefix, None, 10).unwrap();
        assert_eq!((uids(&page), more), (vec!["b", "c"], false));
    }
}
