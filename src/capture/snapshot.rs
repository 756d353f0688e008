//! On-demand snapshots, written page by page: each page goes into the outbox after
//! everything captured for its objects before it and before anything later, so a snapshot
//! event never overtakes a newer change of its object; a big scope is never held in memory
//! or in one transaction whole.

use std::time::SystemTime;

use crbridge_sink_api::ChangeKind;

use super::batch::BatchBuilder;
use super::{Capture, SnapshotDone, SnapshotRequest};
use crate::event::Change;
use crate::filter::Input;
use crate::store::{object_prefix, ObjectKey, StoreError};
use crate::watch::ScopeId;

/// An on-demand snapshot being written, one page per batch.
pub(super) struct Snapshotting {
    scope: ScopeId,
    request: SnapshotRequest,
    /// The last key written; the next page starts after it.
    after: Option<ObjectKey>,
    /// Events written so far.
    events: usize,
}

impl Snapshotting {
    /// A snapshot of `scope` that has written nothing yet.
    pub(super) fn new(scope: ScopeId, request: SnapshotRequest) -> Self {
        Snapshotting {
            scope,
            request,
            after: None,
            events: 0,
        }
    }

    /// Moves past the page `written`, now committed. True when objects remain.
    pub(super) fn advance(&mut self, written: PageWritten) -> bool {
        if written.after.is_some() {
            self.after = written.after;
        }
        self.events += written.events;
        written.more
    }

    /// Tells the requester, if it still listens, that every page is committed, up to
    /// `last_seq`.
    pub(super) fn reply(self, last_seq: u64) {
        if let Some(tx) = self.request.done {
            let _ = tx.send(SnapshotDone {
                events: self.events,
                last_seq,
            });
        }
    }
}

/// What one page of a snapshot wrote into a batch; the snapshot moves past it with
/// [`Snapshotting::advance`] once the batch is committed (a batch that fails is built
/// again, and writes the same page).
pub(super) struct PageWritten {
    /// The page's last key.
    after: Option<ObjectKey>,
    /// Events the page wrote.
    events: usize,
    /// True when objects remain after the page.
    more: bool,
}

impl Capture {
    /// Writes the next page of `s` into `batch`: the current (last published) state of the
    /// next objects in key order, as the batch leaves them, those the watch's filter passes.
    pub(super) fn snapshot_page(
        &self,
        s: &Snapshotting,
        batch: &mut BatchBuilder<'_>,
    ) -> Result<PageWritten, StoreError> {
        let scope = &self.scopes[s.scope];
        let prefix = object_prefix(&scope.watch, scope.namespace.as_deref());
        let (page, more) = batch.page(&prefix, s.after.as_ref(), self.snapshot_page)?;
        let mut events = 0;
        for (key, state) in &page {
            // A snapshot stands alone: the filter sees it with no old object and no patch.
            let input = Input {
                kind: ChangeKind::Snapshot,
                object: &state.object,
                old_object: None,
                patch: None,
            };
            if !self.passes(s.scope, key.uid(), &input) {
                continue;
            }
            let published = scope.rules.published(&state.object);
            let change = Change::new(
                ChangeKind::Snapshot,
                &published,
                &state.resource_version,
                SystemTime::now(),
            )
            .with_previous(Some(&state.resource_version))
            .with_snapshot_id(&s.request.id);
            if let Some(mut entry) = self.entry(s.scope, &change) {
                entry.sinks = s.request.sinks.clone();
                batch.emit(entry);
                events += 1;
            }
        }
        Ok(PageWritten {
            after: page.into_iter().last().map(|(key, _)| key),
            events,
            more,
        })
    }
}
