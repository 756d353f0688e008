//! The watch state machine, without I/O: which request comes next.
//!
//! ```text
//!            checkpoint?                      last page
//!   Start ──── yes ────────────> Watching ◀──────────── Listing ◀─┐ page with a
//!     │                            │  ▲                    ▲      │ continue token
//!     └──── no ── Listing(Initial) │  └ stream ended, idle,│──────┘
//!                                  │    other errors       │
//!                                  └──── 410 Gone ─────────┘ Listing(Relist)
//!                                        or 3 undecodable events in a row
//!
//!   Listing / Watching ── 404 (kind not served) or 403 (forbidden) ──> Unavailable
//!   Unavailable ── resolved by discovery ──> the state it left (a list starts over; a watch
//!                                            resumes from its resourceVersion, and a 410
//!                                            then relists)
//! ```
//!
//! A kind that is not served (CRD missing or deleted, version no longer served) or not
//! allowed (RBAC) takes only its own scope to `Unavailable`; the loop re-resolves it with a
//! long backoff while every other scope carries on (issue 15).
//!
//! Within `Watching`, each event and bookmark moves the resourceVersion forward while the
//! stream stays open ([`Then::Read`]); the loop resumes from it after any interruption.
//! [`State::next`] handles what a response said, [`State::after_failure`] a failed request.
//!
//! Resuming from a checkpoint keeps every intermediate state the server still has in its
//! watch history; only a 410 Gone (history compacted) costs a relist, after which the
//! pipeline reconciles against stored state.

use std::collections::HashSet;

/// Undecodable watch events, or internal server errors answering the watch, in a row after
/// which the watch relists: reopening from the same resourceVersion would only fetch the
/// same broken event again (an API server whose etcd history lost an event's previous
/// value, for one, answers every watch from before it with a 500).
pub const MAX_UNDECODABLE: u32 = 3;

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
        /// Undecodable events since the last decoded one (each ended the stream).
        undecodable: u32,
    },
    /// The kind is not served or not allowed: resolve it again (discovery), then go on
    /// with `resume`.
    Unavailable {
        /// Where to go on once the kind is served.
        resume: Box<State>,
    },
}

/// A failed request, classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// 410 Gone / "too old resource version" / expired continue token.
    Gone,
    /// 404: the kind is not served (CRD missing or deleted, version no longer served).
    NotServed,
    /// 403: RBAC does not allow the request.
    Forbidden,
    /// A watch event that could not be decoded.
    Undecodable,
    /// 500 from a reachable API server: it cannot serve the request as asked.
    ServerError,
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
    /// Discovery found the kind (in `Unavailable`).
    Resolved,
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
            404 => Failure::NotServed,
            403 => Failure::Forbidden,
            500 => Failure::ServerError,
            _ => Failure::Other,
        }
    }

    /// True for the failures that make a kind unavailable until it resolves again.
    pub fn unavailable(self) -> bool {
        matches!(self, Failure::NotServed | Failure::Forbidden)
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

    /// A watch from `rv`, with no undecodable events behind it.
    pub fn watching(rv: impl Into<String>) -> State {
        State::Watching {
            rv: rv.into(),
            undecodable: 0,
        }
    }

    /// The first state after reading the checkpoint.
    pub fn start(checkpoint: Option<String>) -> State {
        match checkpoint {
            Some(rv) if !rv.is_empty() => State::watching(rv),
            _ => State::list(ListMode::Initial),
        }
    }

    /// Resolve the kind first, then go on with `self` (a kind not served at start).
    pub fn after_resolving(self) -> State {
        State::Unavailable {
            resume: Box::new(self),
        }
    }

    /// Where to go on once the kind is served again: a list starts over (its continue
    /// token belongs to a snapshot of a resource that went away); a watch resumes from
    /// its resourceVersion.
    fn resume_point(self) -> State {
        match self {
            State::Listing { mode, .. } => State::list(mode),
            State::Watching { rv, .. } => State::watching(rv),
            State::Unavailable { resume } => *resume,
            State::Start => State::Start,
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
                            State::watching(rv.clone()),
                            Then::ListDone {
                                resource_version: rv,
                                seen,
                                mode,
                            },
                        )
                    }
                }
            }
            // A decoded event: the undecodable streak is over.
            (State::Watching { rv, .. }, Input::Changed { resource_version }) => {
                (State::watching(resource_version.unwrap_or(rv)), Then::Read)
            }
            (State::Watching { .. }, Input::Bookmark { resource_version }) => {
                (State::watching(resource_version), Then::Read)
            }
            // Reopen from the last resourceVersion seen: nothing in between is lost.
            (s @ State::Watching { .. }, Input::Ended | Input::Idle) => (s, Then::Request),
            (State::Unavailable { resume }, Input::Resolved) => (*resume, Then::Request),
            (s, _) => (s, Then::Request),
        }
    }

    /// The state after a request made in `self` failed.
    pub fn after_failure(self, failure: Failure) -> State {
        match (self, failure) {
            (State::Watching { .. }, Failure::Gone) => State::list(ListMode::Relist),
            // An expired continue token: the snapshot is gone, list again from the start.
            (State::Listing { mode, .. }, Failure::Gone) => State::list(mode),
            // Still unavailable (or discovery failed): resolve again later.
            (s @ State::Unavailable { .. }, _) => s,
            (s @ (State::Listing { .. } | State::Watching { .. }), f) if f.unavailable() => {
                s.resume_point().after_resolving()
            }
            (State::Watching { rv, undecodable }, Failure::Undecodable | Failure::ServerError) => {
                if undecodable + 1 >= MAX_UNDECODABLE {
                    State::list(ListMode::Relist)
                } else {
                    State::Watching {
                        rv,
                        undecodable: undecodable + 1,
                    }
                }
            }
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
                    State::watching("10"),
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
                State::watching(""),
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
        let w = State::watching("7");
        let changed = |rv: Option<&str>| Input::Changed {
            resource_version: rv.map(str::to_string),
        };
        assert_eq!(
            w.clone().next(changed(Some("8"))),
            (State::watching("8"), Then::Read)
        );
        // An object without a resourceVersion keeps the last one.
        assert_eq!(w.clone().next(changed(None)), (w.clone(), Then::Read));
        assert_eq!(
            w.clone().next(Input::Bookmark {
                resource_version: "9".into()
            }),
            (State::watching("9"), Then::Read)
        );
    }

    #[test]
    fn ended_or_idle_watch_reopens_from_the_same_rv() {
        let w = State::watching("7");
        assert_eq!(w.clone().next(Input::Ended), (w.clone(), Then::Request));
        assert_eq!(w.clone().next(Input::Idle), (w.clone(), Then::Request));
    }

    #[test]
    fn inputs_foreign_to_a_state_change_nothing() {
        let w = State::watching("7");
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
        for code in [0, 400, 429, 503, 504] {
            assert_eq!(Failure::from_code(code), Failure::Other);
        }
        assert_eq!(Failure::from_code(500), Failure::ServerError);
    }

    #[test]
    fn checkpoint_resumes_without_list() {
        assert_eq!(State::start(Some("42".into())), State::watching("42"));
        assert_eq!(State::start(None), State::list(ListMode::Initial));
        assert_eq!(
            State::start(Some(String::new())),
            State::list(ListMode::Initial)
        );
    }

    #[test]
    fn gone_while_watching_relists_other_errors_retry() {
        let w = State::watching("7");
        assert_eq!(
            w.clone().after_failure(Failure::Gone),
            State::list(ListMode::Relist)
        );
        assert_eq!(w.clone().after_failure(Failure::Other), w);
    }

    #[test]
    fn a_watch_the_server_keeps_failing_with_500_relists_a_list_retries() {
        let mut w = State::watching("7");
        for _ in 1..MAX_UNDECODABLE {
            w = w.after_failure(Failure::ServerError);
            assert!(matches!(w, State::Watching { .. }), "{w:?}");
        }
        assert_eq!(
            w.after_failure(Failure::ServerError),
            State::list(ListMode::Relist)
        );
        let l = State::list(ListMode::Initial);
        assert_eq!(l.clone().after_failure(Failure::ServerError), l);
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

    #[test]
    fn not_served_or_forbidden_makes_the_scope_unavailable_keeping_where_it_was() {
        for f in [Failure::NotServed, Failure::Forbidden] {
            // A watch keeps its resourceVersion (a stale one costs a 410 and a relist later).
            let w = State::watching("7");
            let u = w.clone().after_failure(f);
            assert_eq!(u, w.clone().after_resolving());
            assert_eq!(u.clone().next(Input::Resolved), (w.clone(), Then::Request));
            // A list starts over in its mode: its continue token is worthless now.
            let l = State::Listing {
                mode: ListMode::Relist,
                continue_token: Some("t".into()),
                list_rv: Some("5".into()),
                seen: set(&["u"]),
            };
            let u = l.after_failure(f);
            assert_eq!(
                u.next(Input::Resolved),
                (State::list(ListMode::Relist), Then::Request)
            );
        }
    }

    #[test]
    fn unavailable_stays_so_until_resolved() {
        let u = State::watching("7").after_resolving();
        for f in [
            Failure::NotServed,
            Failure::Forbidden,
            Failure::Other,
            Failure::Gone,
        ] {
            assert_eq!(u.clone().after_failure(f), u);
        }
        // Watch inputs do not belong to it.
        assert_eq!(u.clone().next(Input::Ended), (u.clone(), Then::Request));
    }

    #[test]
    fn a_kind_missing_at_start_resolves_before_the_checkpoint_is_used() {
        let u = State::start(Some("42".into())).after_resolving();
        assert_eq!(
            u.next(Input::Resolved),
            (State::watching("42"), Then::Request)
        );
        let u = State::start(None).after_resolving();
        assert_eq!(
            u.next(Input::Resolved),
            (State::list(ListMode::Initial), Then::Request)
        );
    }

    #[test]
    fn undecodable_events_retry_then_relist_and_a_decoded_one_resets_the_count() {
        let w = State::watching("7");
        let once = w.clone().after_failure(Failure::Undecodable);
        assert_eq!(
            once,
            State::Watching {
                rv: "7".into(),
                undecodable: 1
            }
        );
        // A decoded event in between: the streak starts over.
        let (reset, _) = once.clone().next(Input::Changed {
            resource_version: Some("8".into()),
        });
        assert_eq!(reset, State::watching("8"));
        let mut s = w;
        for _ in 1..MAX_UNDECODABLE {
            s = s.after_failure(Failure::Undecodable);
            assert!(matches!(s, State::Watching { .. }), "{s:?}");
        }
        assert_eq!(
            s.after_failure(Failure::Undecodable),
            State::list(ListMode::Relist)
        );
    }

    #[test]
    fn forbidden_and_not_found_codes_classify_as_unavailable() {
        assert_eq!(Failure::from_code(404), Failure::NotServed);
        assert_eq!(Failure::from_code(403), Failure::Forbidden);
        assert!(Failure::NotServed.unavailable() && Failure::Forbidden.unavailable());
        assert!(!Failure::Other.unavailable() && !Failure::Undecodable.unavailable());
    }
}
