//! The watch state machine, without I/O: which request comes next.
//!
//! ```text
//!            checkpoint?                      last page
//!   Start ──── yes ────────────> Watching ◀──────────── Listing
//!     │                            │  ▲                    ▲
//!     └──── no ── Listing(Initial) │  └ stream ended,      │
//!                                  │    other errors       │
//!                                  └──── 410 Gone ─────────┘ Listing(Relist)
//! ```
//!
//! Resuming from a checkpoint keeps every intermediate state the server still has in its
//! watch history; only a 410 Gone (history compacted) costs a relist, after which the
//! pipeline reconciles against stored state.

use std::collections::HashSet;

/// Why a list is running, which decides how its objects are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListMode {
    /// No checkpoint: the very first start of this scope (`initial: snapshot | skip`).
    Initial,
    /// The checkpoint expired (410 Gone): reconcile, marking events inferred.
    Relist,
}

/// Where a watch scope is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Nothing done yet: look at the checkpoint.
    Start,
    /// Listing page by page.
    Listing {
        /// Why.
        mode: ListMode,
        /// Token for the next page; `None` for the first.
        continue_token: Option<String>,
        /// The list's resourceVersion (from its first page).
        list_rv: Option<String>,
        /// uids seen so far (not the objects: the list is never held in memory).
        seen: HashSet<String>,
    },
    /// Streaming changes after a resourceVersion.
    Watching {
        /// The last resourceVersion seen (event or bookmark).
        rv: String,
    },
}

/// A failed request, classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// 410 Gone / "too old resource version" / expired continue token.
    Gone,
    /// Anything else: network, timeout, 5xx, 429. Retried after backoff.
    Other,
}

impl State {
    /// A fresh list.
    pub fn list(mode: ListMode) -> State {
        State::Listing {
            mode,
            continue_token: None,
            list_rv: None,
            seen: HashSet::new(),
        }
    }

    /// The first state after reading the checkpoint.
    pub fn start(checkpoint: Option<String>) -> State {
        match checkpoint {
            Some(rv) if !rv.is_empty() => State::Watching { rv },
            _ => State::list(ListMode::Initial),
        }
    }

    /// The state after a request made in `self` failed.
    pub fn after_failure(self, failure: Failure) -> State {
        match (self, failure) {
            (State::Watching { .. }, Failure::Gone) => State::list(ListMode::Relist),
            // An expired continue token: the snapshot is gone, list again from the start.
            (State::Listing { mode, .. }, Failure::Gone) => State::list(mode),
            (s, _) => s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_resumes_without_list() {
        assert_eq!(
            State::start(Some("42".into())),
            State::Watching { rv: "42".into() }
        );
        assert_eq!(State::start(None), State::list(ListMode::Initial));
        assert_eq!(
            State::start(Some(String::new())),
            State::list(ListMode::Initial)
        );
    }

    #[test]
    fn gone_while_watching_relists_other_errors_retry() {
        let w = State::Watching { rv: "7".into() };
        assert_eq!(
            w.clone().after_failure(Failure::Gone),
            State::list(ListMode::Relist)
        );
        assert_eq!(w.clone().after_failure(Failure::Other), w);
    }

    #[test]
    fn expired_continue_restarts_list_in_same_mode() {
        let mut seen = HashSet::new();
        seen.insert("u".to_string());
        let l = State::Listing {
            mode: ListMode::Initial,
            continue_token: Some("t".into()),
            list_rv: Some("5".into()),
            seen,
        };
        assert_eq!(
            l.clone().after_failure(Failure::Gone),
            State::list(ListMode::Initial)
        );
        assert_eq!(l.clone().after_failure(Failure::Other), l);
    }
}
