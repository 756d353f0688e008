//! One watch loop per scope (a watched kind in one namespace, or in all): list / watch
//! against the API server, resuming from the checkpoint, reporting what it sees to the
//! capture stage through a bounded channel.
//!
//! kube-rs's `watcher()` always starts with a list; crbridge must resume from a stored
//! resourceVersion instead, so this loop drives list / watch requests itself through the
//! explicit [`State`] machine in `state.rs` (pure transitions). `watcher.rs` does the I/O
//! each state asks for through the [`ListWatch`] trait of `raw.rs`, which [`RawApi`]
//! implements against the API server and the tests implement with a script.

mod raw;
mod state;
mod watcher;

pub use raw::{
    discover, discover_group, Discovered, GroupKind, KindRef, ListWatch, RawApi, WatchStream,
};
pub use state::{Failure, ListMode, State, MAX_UNDECODABLE};
pub use watcher::run;

use std::time::SystemTime;

use kube::api::ApiResource;
use serde_json::Value;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// Index of a scope in the capture stage's table.
pub type ScopeId = usize;

/// How an object reached the bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A watch event: a change as it happened.
    Watch,
    /// A list item, during the first start or a relist.
    List(ListMode),
}

/// What a watch loop reports, in the order it saw it.
#[derive(Debug)]
pub enum Observed {
    /// An object exists in this state (added, modified, or listed).
    Upsert {
        /// Which scope.
        scope: ScopeId,
        /// The raw object.
        object: Value,
        /// Watch or list.
        origin: Origin,
        /// When the bridge received it.
        received: SystemTime,
    },
    /// The server reported the object deleted.
    Delete {
        /// Which scope.
        scope: ScopeId,
        /// The object as the server last had it.
        object: Value,
        /// When the bridge received it.
        received: SystemTime,
    },
    /// Progress without a change: checkpoint this resourceVersion.
    Bookmark {
        /// Which scope.
        scope: ScopeId,
        /// The bookmark's resourceVersion.
        resource_version: String,
    },
    /// The list is complete: everything stored for the scope that was not `seen` is gone.
    ListDone {
        /// Which scope.
        scope: ScopeId,
        /// The list's resourceVersion, to checkpoint.
        resource_version: String,
        /// uids seen in the list.
        seen: std::collections::HashSet<String>,
        /// Why the list ran.
        mode: ListMode,
    },
}

impl Observed {
    /// The scope the observation belongs to.
    pub fn scope(&self) -> ScopeId {
        match self {
            Observed::Upsert { scope, .. }
            | Observed::Delete { scope, .. }
            | Observed::Bookmark { scope, .. }
            | Observed::ListDone { scope, .. } => *scope,
        }
    }
}

/// One watched kind in one namespace (or all), listed and watched through `A`.
#[derive(Clone)]
pub struct Scope<A = RawApi> {
    /// Index in the capture table.
    pub id: ScopeId,
    /// The cluster it is in.
    pub cluster: String,
    /// The scope's state key: the watch name from the config, prefixed with the cluster
    /// in a fleet ([`crate::config::Config::state_key`]).
    pub watch: String,
    /// The namespace, or `None` for all namespaces / cluster-scoped kinds.
    pub namespace: Option<String>,
    /// The resource.
    pub resource: ApiResource,
    /// List / watch requests for this scope.
    pub api: A,
    /// Server-side label selector.
    pub label_selector: Option<String>,
    /// Server-side field selector.
    pub field_selector: Option<String>,
    /// Objects per list page.
    pub page_size: u32,
    /// False when discovery did not find the kind at start: the loop resolves it first.
    pub resolved: bool,
}

/// Liveness and readiness of one scope's loop, read by `/healthz` and `/readyz`.
#[derive(Debug, Default)]
pub struct ScopeHealth {
    /// True once the scope has listed or resumed its watch: its events flow.
    pub synced: AtomicBool,
    /// Last time (ms since the epoch) the loop made progress: a page, a watch opened, an
    /// event or a bookmark.
    pub last_progress_ms: AtomicU64,
    /// Set while the kind is not served or not allowed, and the loop re-resolves it.
    pub unavailable: Mutex<Option<Unavailable>>,
    /// Set while requests fail (the API server unreachable, answering errors): since when
    /// (ms since the epoch) and the last error. Cleared by the next step that succeeds.
    pub failing: Mutex<Option<(u64, String)>>,
}

/// Why a scope's kind is unavailable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    /// The class, for metric labels.
    pub reason: Reason,
    /// What the server said, for people: `kind example.com/v1 Widget is not served (404)`,
    /// `forbidden: <RBAC message>`.
    pub message: String,
}

/// Why a kind is unavailable, as a fixed set (metric label values, never free text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// 403 from RBAC.
    Forbidden,
    /// 404: not served.
    NotFound,
    /// Discovery itself failed while resolving again (network, 5xx).
    Other,
}

impl Reason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Forbidden => "forbidden",
            Reason::NotFound => "not_found",
            Reason::Other => "other",
        }
    }
}

impl ScopeHealth {
    fn progress(&self) {
        self.last_progress_ms
            .store(crate::store::now_ms(), Ordering::Relaxed);
    }

    /// Why the scope is unavailable, if it is.
    pub fn unavailable(&self) -> Option<Unavailable> {
        self.unavailable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Since when (ms since the epoch) and with what last error the scope's requests fail,
    /// if they do.
    pub fn failing(&self) -> Option<(u64, String)> {
        self.failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records a failed request; the start of the failure stays the first one's.
    fn set_failing(&self, message: &str) {
        let mut f = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        let since = f.as_ref().map_or_else(crate::store::now_ms, |(s, _)| *s);
        *f = Some((since, message.to_owned()));
    }

    /// Records a step that succeeded.
    fn clear_failing(&self) {
        *self.failing.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Records the scope unavailable for `why`; the previous reason, if any.
    fn set_unavailable(&self, why: Option<Unavailable>) -> Option<Unavailable> {
        std::mem::replace(
            &mut *self.unavailable.lock().unwrap_or_else(|p| p.into_inner()),
            why,
        )
    }
}

#[cfg(test)]
mod tests;
