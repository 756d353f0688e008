//! The end of a list: everything stored for the scope that the list did not see is gone,
//! and its deletion is inferred (the watch missed it, e.g. while the bridge was down or
//! after a 410 Gone).

use std::collections::HashSet;
use std::time::SystemTime;

use crbridge_sink_api::ChangeKind;
use tracing::debug;

use super::batch::BatchBuilder;
use super::Capture;
use crate::event::Change;
use crate::store::{object_prefix, StoreError};
use crate::watch::{ListMode, ScopeId};

impl Capture {
    /// Adds an inferred deletion for every object of `scope` that is not in `seen`, then
    /// checkpoints the list's resourceVersion `rv`. Runs against the batch, so it sees
    /// this batch's writes (the list's own items among them).
    pub(super) fn reconcile(
        &self,
        scope: ScopeId,
        rv: String,
        seen: &HashSet<String>,
        mode: ListMode,
        batch: &mut BatchBuilder<'_>,
    ) -> Result<(), StoreError> {
        let s = &self.scopes[scope];
        let prefix = object_prefix(&s.watch, s.namespace.as_deref());
        // Keys first: only the states of objects that are gone are read.
        // Only stored objects can be missing, and only published ones are stored (a
        // watch's filter keeps the others out), so no delete is inferred for an object
        // consumers never saw.
        for key in batch.missing(&prefix, seen)? {
            self.warned.forget(&s.watch, key.uid());
            let Some(stored) = batch.state(&key)? else {
                continue;
            };
            let published = s.rules.published(&stored.object);
            let change = Change::new(
                ChangeKind::Deleted,
                &published,
                &stored.resource_version,
                SystemTime::now(),
            )
            .with_previous(Some(&stored.resource_version))
            .with_inferred(true);
            let entry = self.entry(scope, &change);
            batch.remove(key, entry);
        }
        debug!(watch = %s.watch, mode = ?mode, resource_version = %rv, "list reconciled");
        self.checkpoint(scope, rv, batch);
        Ok(())
    }
}
