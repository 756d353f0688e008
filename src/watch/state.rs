//! The watch state machine, without I/O: which request comes next.
//!
//! ```text
//!            checkpoint?                      last page
//!   Start ──── yes ────────────> Watching ◀──────────── Listing ◀─┐ page with a
//!     │                            │  ▲                    ▲      │ continue token
//!     └──── no ── Listing(Initial) │  └ stream ended, idle,│──────┘
//!                                  │    other errors       │
//!                                  └──── 410 Gone ─────────┘ Listing(Relist)
//! ```
//!
//! Within `Watching`, each event and bookmark moves the resourceVersion forward while the
//! stream stays open ([`Then::Read`]); the loop resumes from it after any interruption.
//! [`State::next`] handles what a response said, [`State::after_failure`] a failed request.
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

/// What a response in the current state said (its objects go to capture; only what the
/// next request depends on is here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A list page.
    Page {
        /// The list's resourceVersion, as the page reports it.
        resource_version: Option<String>,
        /// uids of the page's objects.
        uids: Vec<String>,
        /// The token for the next page; `None` or empty on the last page.
        continue_token: Option<String>,
    },
    /// A watch event with an object (added, modified, deleted).
    Changed {
        /// The object's resourceVersion, when it has one.
        resource_version: Option<String>,
    },
    /// A watch bookmark.
    Bookmark {
        /// Its resourceVersion.
        resource_version: String,
    },
    /// The server closed the watch (its timeout).
    Ended,
    /// The watch stream was silent for too long: presumed dead.
    Idle,
}

/// What the loop does after a transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Then {
    /// Keep reading the open watch stream.
    Read,
    /// This request is over: make the one the new state asks for.
    Request,
    /// The list is complete: report it to capture, mark the scope synced, then watch.
    ListDone {
        /// The list's resourceVersion (empty when the server sent none).
        resource_version: String,
        /// uids of every listed object.
        seen: HashSet<String>,
        /// Why the list ran.
        mode: ListMode,
    },
}

impl Failure {
    /// The failure a Status code (of a request or a watch ERROR event) stands for.
    pub fn from_code(code: u16) -> Failure {
        match code {
            410 => Failure::Gone,
            _ => Failure::Other,
        }
    }
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

    /// The state after `input` arrived in `self`, and what the loop does next. Inputs that
    /// do not belong to the state leave it unchanged and end the request.
    pub fn next(self, input: Input) -> (State, Then) {
        match (self, input) {
            (
                State::Listing {
                    mode,
                    list_rv,
                    mut seen,
                    ..
                },
                Input::Page {
                    resource_version,
                    uids,
                    continue_token,
                },
            ) => {
                // The first page's resourceVersion is the list's: later pages repeat it.
                let rv = list_rv.or(resource_version);
                seen.extend(uids);
                match continue_token.filter(|c| !c.is_empty()) {
                    Some(token) => (
                        State::Listing {
                            mode,
                            continue_token: Some(token),
                            list_rv: rv,
                            seen,
                        },
                        Then::Request,
                    ),
                    None => {
                        let rv = rv.unwrap_or_default();
                        (
                            State::Watching { rv: rv.clone() },
                            Then::ListDone {
                                resource_version: rv,
                                seen,
                                mode,
                            },
                        )
                    }
                }
            }
            (State::Watching { rv }, Input::Changed { resource_version }) => (
                State::Watching {
                    rv: resource_version.unwrap_or(rv),
                },
                Then::Read,
            ),
            (State::Watching { .. }, Input::Bookmark { resource_version }) => (
                State::Watching {
                    rv: resource_version,
                },
                Then::Read,
            ),
            // Reopen from the last resourceVersion seen: nothing in between is lost.
            (State::Watching { rv }, Input::Ended | Input::Idle) => {
                (State::Watching { rv }, Then::Request)
            }
            (s, _) => (s, Then::Request),
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

    fn page(rv: Option<&str>, uids: &[&str], token: Option<&str>) -> Input {
        Input::Page {
            resource_version: rv.map(str::to_string),
            uids: uids.iter().map(|u| u.to_string()).collect(),
            continue_token: token.map(str::to_string),
        }
    }

    fn set(uids: &[&str]) -> HashSet<String> {
        uids.iter().map(|u| u.to_string()).collect()
    }

    #[test]
    fn page_with_token_lists_on_keeping_the_first_pages_rv() {
        let (s, then) =
            State::list(ListMode::Initial).next(page(Some("10"), &["a", "b"], Some("c1")));
        assert_eq!(then, Then::Request);
        assert_eq!(
            s,
            State::Listing {
                mode: ListMode::Initial,
                continue_token: Some("c1".into()),
                list_rv: Some("10".into()),
                seen: set(&["a", "b"]),
            }
        );
        let (s, then) = s.next(page(Some("11"), &["c"], Some("c2")));
        assert_eq!(then, Then::Request);
        let State::Listing {
            list_rv,
            seen,
            continue_token,
            ..
        } = s
        else {
            panic!("{s:?}")
        };
        assert_eq!(list_rv.as_deref(), Some("10"));
        assert_eq!(continue_token.as_deref(), Some("c2"));
        assert_eq!(seen, set(&["a", "b", "c"]));
    }

    #[test]
    fn last_page_reports_the_list_and_watches_from_its_rv() {
        let first = State::Listing {
            mode: ListMode::Relist,
            continue_token: Some("c1".into()),
            list_rv: Some("10".into()),
            seen: set(&["a"]),
        };
        // An empty token counts as none.
        for token in [None, Some("")] {
            assert_eq!(
                first.clone().next(page(Some("11"), &["b"], token)),
                (
                    State::Watching { rv: "10".into() },
                    Then::ListDone {
                        resource_version: "10".into(),
                        seen: set(&["a", "b"]),
                        mode: ListMode::Relist,
                    }
                )
            );
        }
    }

    #[test]
    fn single_page_list_without_rv_watches_from_empty() {
        assert_eq!(
            State::list(ListMode::Initial).next(page(None, &[], None)),
            (
                State::Watching { rv: String::new() },
                Then::ListDone {
                    resource_version: String::new(),
                    seen: HashSet::new(),
                    mode: ListMode::Initial,
                }
            )
        );
    }

    #[test]
    fn watch_events_and_bookmarks_move_the_rv_and_keep_reading() {
        let w = State::Watching { rv: "7".into() };
        let changed = |rv: Option<&str>| Input::Changed {
            resource_version: rv.map(str::to_string),
        };
        assert_eq!(
            w.clone().next(changed(Some("8"))),
            (State::Watching { rv: "8".into() }, Then::Read)
        );
        // An object without a resourceVersion keeps the last one.
        assert_eq!(w.clone().next(changed(None)), (w.clone(), Then::Read));
        assert_eq!(
            w.clone().next(Input::Bookmark {
                resource_version: "9".into()
            }),
            (State::Watching { rv: "9".into() }, Then::Read)
        );
    }

    #[test]
    fn ended_or_idle_watch_reopens_from_the_same_rv() {
        let w = State::Watching { rv: "7".into() };
        assert_eq!(w.clone().next(Input::Ended), (w.clone(), Then::Request));
        assert_eq!(w.clone().next(Input::Idle), (w.clone(), Then::Request));
    }

    #[test]
    fn inputs_foreign_to_a_state_change_nothing() {
        let w = State::Watching { rv: "7".into() };
        assert_eq!(
            w.clone().next(page(Some("1"), &["a"], None)),
            (w, Then::Request)
        );
        let l = State::list(ListMode::Initial);
        assert_eq!(l.clone().next(Input::Ended), (l, Then::Request));
        assert_eq!(
            State::Start.next(Input::Idle),
            (State::Start, Then::Request)
        );
    }

    #[test]
    fn status_codes_classify() {
        assert_eq!(Failure::from_code(410), Failure::Gone);
        for code in [0, 400, 429, 500, 504] {
            assert_eq!(Failure::from_code(code), Failure::Other);
        }
    }

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
