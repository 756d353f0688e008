//! What one observation changes: an upsert is compared with the last published state
//! (stale, no-op, created, updated, or a first-start snapshot), a delete retracts what was
//! published, a bookmark only moves the checkpoint, a list's end reconciles.

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use crbridge_sink_api::ChangeKind;
use serde_json::Value;
use tracing::warn;

use super::batch::BatchBuilder;
use super::{is_newer, Capture};
use crate::config::InitialMode;
use crate::diff::{self, Verdict};
use crate::event::Change;
use crate::filter::Input;
use crate::metrics;
use crate::store::{object_key, StoreError, StoredObject};
use crate::watch::{ListMode, Observed, Origin, ScopeId};

impl Capture {
    /// Adds what `obs` changes to the batch. `obs` is only read: if the batch fails, it
    /// is built again from the same observations.
    pub(super) fn observe(
        &self,
        obs: &Observed,
        batch: &mut BatchBuilder<'_>,
    ) -> Result<(), StoreError> {
        match obs {
            Observed::Upsert {
                scope,
                object,
                origin,
                received,
            } => self.upsert(*scope, object, *origin, *received, batch),
            Observed::Delete {
                scope,
                object,
                received,
            } => self.delete(*scope, object, *received, batch),
            Observed::Bookmark {
                scope,
                resource_version,
            } => {
                self.checkpoint(*scope, resource_version.clone(), batch);
                Ok(())
            }
            // A list's end scans stored state, which must not miss this batch's writes: it
            // is handled against the batch, after everything before it.
            Observed::ListDone {
                scope,
                resource_version,
                seen,
                mode,
            } => self.reconcile(*scope, resource_version.clone(), seen, *mode, batch),
        }
    }

    fn upsert(
        &self,
        scope: ScopeId,
        object: &Value,
        origin: Origin,
        received: SystemTime,
        batch: &mut BatchBuilder<'_>,
    ) -> Result<(), StoreError> {
        let s = &self.scopes[scope];
        let Some(id) = ObjectId::of(object) else {
            warn!(watch = %s.watch, "object without metadata.uid / resourceVersion ignored");
            return Ok(());
        };
        if origin == Origin::Watch {
            self.checkpoint(scope, id.rv.clone(), batch);
        }
        let key = object_key(&s.watch, &id.namespace, &id.uid);
        // An object a relist finds unchanged is recognised by its resourceVersion alone,
        // without reading (and paging in) its stored state. Watch events are nearly always
        // newer, so they go straight to the state read below.
        if matches!(origin, Origin::List(_)) {
            if let Some(stored_rv) = batch.version(&key)? {
                if !is_newer(&id.rv, &stored_rv) {
                    self.stats.stale.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
            }
        }
        let prev = batch.state(&key)?;
        if let Some(p) = &prev {
            if !is_newer(&id.rv, &p.resource_version) {
                self.stats.stale.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        }
        let changed_by = diff::changed_by(object);
        let mut object = object.clone();
        diff::clean(&mut object);
        // Before anything is compared, filtered, stored or published.
        if let Some(r) = &s.redact {
            r.apply(&mut object);
        }
        let inferred = matches!(origin, Origin::List(_));
        // The event this change would be: an object with no stored state was never
        // published, so consumers meet it as created (or in the first-start snapshot),
        // whatever the server's event was.
        let (kind, patch) = match (&prev, origin) {
            (None, Origin::List(ListMode::Initial)) if !s.appeared => (ChangeKind::Snapshot, None),
            (None, _) => (ChangeKind::Created, None),
            (Some(p), _) => match diff::compare(&p.object, &object, &s.rules) {
                Verdict::Noop => {
                    self.stats.suppressed.fetch_add(1, Ordering::Relaxed);
                    self.metrics
                        .suppressed
                        .get_or_create(&metrics::watch(&s.identity.cluster, &s.watch))
                        .inc();
                    return Ok(());
                }
                Verdict::Changed(patch) => (ChangeKind::Updated, Some(patch)),
            },
        };
        let input = Input {
            kind,
            object: &object,
            old_object: prev.as_ref().map(|p| &p.object),
            patch: patch.as_ref(),
        };
        if !self.passes(scope, &id.uid, &input) {
            // Not published, so not stored: the stored state stays what consumers last
            // saw. The checkpoint (set above) still moves past the change.
            return Ok(());
        }
        // `initial: skip` stores what exists at the first start without publishing it.
        let kind = match (kind, s.initial) {
            (ChangeKind::Snapshot, InitialMode::Skip) => None,
            (kind, _) => Some(kind),
        };
        // Serialized once: without a projection the event's data and the stored state
        // share the text. The stored state is the whole clean object; the event carries
        // its projection (`fields`).
        let serialize = |v: &Value| match serde_json::value::to_raw_value(v) {
            Ok(json) => Some(json),
            Err(e) => {
                warn!(watch = %s.watch, error = %e, "object cannot be serialized; skipped");
                None
            }
        };
        let Some(object_json) = serialize(&object) else {
            return Ok(());
        };
        let published = s.rules.published(&object);
        let published_json = match &published {
            Cow::Borrowed(_) => None,
            Cow::Owned(p) => match serialize(p) {
                Some(json) => Some(json),
                None => return Ok(()),
            },
        };
        let entry = kind.and_then(|kind| {
            let change = Change::new(kind, &published, &id.rv, received)
                .with_object_json(published_json.as_deref().unwrap_or(&object_json))
                .with_patch(patch.as_ref())
                .with_previous(prev.as_ref().map(|p| p.resource_version.as_str()))
                // A first-start snapshot is the object as it is, not a reconstruction.
                .with_inferred(inferred && kind != ChangeKind::Snapshot)
                .with_changed_by(changed_by.as_deref());
            self.entry(scope, &change)
        });
        drop(published);
        let state = StoredObject {
            resource_version: id.rv,
            object,
        };
        batch.put(key, state, object_json, entry);
        Ok(())
    }

    fn delete(
        &self,
        scope: ScopeId,
        object: &Value,
        received: SystemTime,
        batch: &mut BatchBuilder<'_>,
    ) -> Result<(), StoreError> {
        let s = &self.scopes[scope];
        let Some(id) = ObjectId::of(object) else {
            return Ok(());
        };
        self.checkpoint(scope, id.rv.clone(), batch);
        let key = object_key(&s.watch, &id.namespace, &id.uid);
        self.warned.forget(&s.watch, &id.uid);
        // A delete is published exactly when the object was: consumers never keep a ghost
        // of a deleted object, and never hear of one they did not see. The filter is not
        // asked. The event carries the deleted object from the watch; of the stored state
        // only its resourceVersion is needed.
        let Some(prev_rv) = batch.version(&key)? else {
            // Never published (filtered out): nothing to retract.
            return Ok(());
        };
        let mut object = object.clone();
        diff::clean(&mut object);
        if let Some(r) = &s.redact {
            r.apply(&mut object);
        }
        let published = s.rules.published(&object);
        let change = Change::new(ChangeKind::Deleted, &published, &id.rv, received)
            .with_previous(Some(&prev_rv));
        let entry = self.entry(scope, &change);
        batch.remove(key, entry);
        Ok(())
    }
}

/// The identifying fields of a raw object.
struct ObjectId {
    uid: String,
    namespace: String,
    rv: String,
}

impl ObjectId {
    fn of(object: &Value) -> Option<ObjectId> {
        let meta = object.get("metadata")?;
        let s = |k: &str| meta.get(k).and_then(Value::as_str).map(str::to_string);
        Some(ObjectId {
            uid: s("uid")?,
            namespace: s("namespace").unwrap_or_default(),
            rv: s("resourceVersion")?,
        })
    }
}
