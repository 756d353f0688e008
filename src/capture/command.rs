//! Commands to the capture stage: requests from an operator (the admin endpoint, the CLI),
//! carried on their own bounded channel beside the watches' observations.

use crate::watch::ScopeId;

/// What capture is asked to do, apart from what the watches observed.
#[derive(Debug)]
pub enum Command {
    /// Emit every stored object of the scope as a `snapshot` event.
    Snapshot {
        /// Which scope.
        scope: ScopeId,
        /// The request.
        request: SnapshotRequest,
    },
}

/// An on-demand snapshot of one scope (not from a watch: from `crbridge snapshot`).
#[derive(Debug)]
pub struct SnapshotRequest {
    /// Unique id of the request; part of every event id it produces.
    pub id: String,
    /// Only these sinks, when set.
    pub sinks: Option<Vec<String>>,
    /// Told, once the events are committed, how many there were and the last sequence.
    pub done: Option<tokio::sync::oneshot::Sender<SnapshotDone>>,
}

/// The result of a snapshot request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotDone {
    /// Events written.
    pub events: usize,
    /// Outbox sequence number at or after the last of them.
    pub last_seq: u64,
}
