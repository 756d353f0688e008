//! The dispatcher's state machine, without I/O: what happens next after each outcome.
//!
//! ```text
//!   Connecting ──connected──────────────────────────> Publishing ◀─┐ settled
//!     ▲    │                                            │    │     │ (cursor moves)
//!     │    └─connect failed─> BackingOff ◀─retriable────┘    └─────┘
//!     │                        │   │       error / halt
//!     └──────── disconnected ──┘   └── still connected ──> Publishing
//!
//!   Publishing ──cancel─────────> Draining ──drained──> Done
//!   Publishing ──capture closed─> Draining ──drained──> Parked ──cancel──> Done
//!   Connecting, BackingOff ──cancel──> Done
//! ```
//!
//! A retriable failure waits with exponential backoff; a halt (an event refused for good
//! under `on_error: halt`) waits the fixed [`HALTED_RETRY`], retrying the same event until
//! the operator acts. Cancellation while connecting or backing off stops at once: nothing
//! is in flight then. Cancellation while publishing first drains the acks in flight.
//!
//! The driver (`Dispatcher::run`) does the I/O each state asks for, turns its result into an
//! [`Input`], and applies the [`Effect`] the transition returns.

use std::time::Duration;

/// How long a halted sink waits before retrying the event it is stuck at: slow enough not
/// to flood the log with ERRORs, quick enough to notice a fix by the operator.
pub const HALTED_RETRY: Duration = Duration::from_secs(30);

/// Where a dispatcher is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Building the sink (the connector).
    Connecting,
    /// Filling the window of events in flight and collecting acks.
    Publishing,
    /// Waiting after a failure.
    BackingOff {
        /// How long.
        delay: Delay,
        /// Where to go when the wait is over.
        then: Resume,
    },
    /// Cancelled or out of input: awaiting the acks in flight, up to the drain timeout.
    Draining {
        /// Where to go once drained.
        then: AfterDrain,
    },
    /// Capture is gone and everything is drained: idle until cancelled.
    Parked,
    /// Finished.
    Done,
}

/// How long a back-off lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delay {
    /// The next exponential backoff delay.
    Backoff,
    /// [`HALTED_RETRY`].
    Halted,
}

/// What a back-off resumes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// The sink lost its connection: build it again.
    Connect,
    /// The sink is still connected: publish again from the cursor.
    Publish,
}

/// What follows a drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterDrain {
    /// Cancelled: stop.
    Done,
    /// Capture closed without a cancel yet: wait for it.
    Parked,
}

/// The outcome of the I/O done in a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// The connector returned a sink.
    Connected,
    /// The connector failed.
    ConnectFailed,
    /// The oldest event in flight is settled: acked by the broker, skipped (not for this
    /// sink), or refused and settled by the policy (dead letter, sent without its object).
    Settled {
        /// Its outbox sequence number.
        seq: u64,
    },
    /// Publishing failed in a way worth retrying (a retriable sink error, the store).
    Retriable {
        /// Whether the sink still reports itself connected.
        connected: bool,
    },
    /// An event was refused for good and the policy is to halt at it.
    Halt {
        /// Whether the sink still reports itself connected.
        connected: bool,
    },
    /// The capture stage closed: no new events will come.
    CaptureClosed,
    /// Shutdown was requested.
    Cancelled,
    /// The drain finished (all acked, a failure, or the deadline).
    Drained,
    /// The back-off wait is over.
    BackoffElapsed,
}

/// What the driver does on a transition, besides entering the next state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Nothing.
    None,
    /// Publishing (again): mark the dispatcher healthy.
    Healthy,
    /// Move the cursor over the settled event `seq` and reset the backoff.
    Advance {
        /// The settled event's outbox sequence number.
        seq: u64,
    },
    /// A failure: mark unhealthy, count an error under `label`, drop the sink when
    /// `disconnect`, and discard the window (it is rebuilt from the cursor).
    Failed {
        /// Metric label of the error.
        label: &'static str,
        /// Drop the sink so the next attempt reconnects.
        disconnect: bool,
    },
}

impl State {
    /// The state after `input` arrived in `self`, and the effect of the transition. Inputs
    /// that cannot happen in a state leave it unchanged.
    pub fn next(self, input: Input) -> (State, Effect) {
        use Input as I;
        use State as S;
        match (self, input) {
            (S::Done, _) => (S::Done, Effect::None),
            (S::Connecting, I::Connected) => (S::Publishing, Effect::Healthy),
            (S::Connecting, I::ConnectFailed) => (
                S::BackingOff {
                    delay: Delay::Backoff,
                    then: Resume::Connect,
                },
                Effect::Failed {
                    label: "connect",
                    disconnect: true,
                },
            ),
            (S::Publishing, I::Settled { seq }) => (S::Publishing, Effect::Advance { seq }),
            (S::Publishing, I::Retriable { connected }) => failed(Delay::Backoff, connected),
            (S::Publishing, I::Halt { connected }) => failed(Delay::Halted, connected),
            (S::Publishing, I::Cancelled) => (
                S::Draining {
                    then: AfterDrain::Done,
                },
                Effect::None,
            ),
            (S::Publishing, I::CaptureClosed) => (
                S::Draining {
                    then: AfterDrain::Parked,
                },
                Effect::None,
            ),
            (S::Draining { then }, I::Settled { seq }) => {
                (S::Draining { then }, Effect::Advance { seq })
            }
            (S::Draining { then }, I::Drained) => match then {
                AfterDrain::Done => (S::Done, Effect::None),
                AfterDrain::Parked => (S::Parked, Effect::None),
            },
            (S::BackingOff { then, .. }, I::BackoffElapsed) => match then {
                Resume::Connect => (S::Connecting, Effect::None),
                Resume::Publish => (S::Publishing, Effect::Healthy),
            },
            // Nothing is in flight while connecting, backing off or parked: stop at once.
            (S::Connecting | S::BackingOff { .. } | S::Parked, I::Cancelled) => {
                (S::Done, Effect::None)
            }
            (s, _) => (s, Effect::None),
        }
    }
}

fn failed(delay: Delay, connected: bool) -> (State, Effect) {
    let then = if connected {
        Resume::Publish
    } else {
        Resume::Connect
    };
    (
        State::BackingOff { delay, then },
        Effect::Failed {
            label: "publish",
            disconnect: !connected,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backing_off(delay: Delay, then: Resume) -> State {
        State::BackingOff { delay, then }
    }

    #[test]
    fn connecting() {
        assert_eq!(
            State::Connecting.next(Input::Connected),
            (State::Publishing, Effect::Healthy)
        );
        assert_eq!(
            State::Connecting.next(Input::ConnectFailed),
            (
                backing_off(Delay::Backoff, Resume::Connect),
                Effect::Failed {
                    label: "connect",
                    disconnect: true
                }
            )
        );
        assert_eq!(
            State::Connecting.next(Input::Cancelled),
            (State::Done, Effect::None)
        );
    }

    #[test]
    fn publishing_advances_over_settled_events() {
        assert_eq!(
            State::Publishing.next(Input::Settled { seq: 3 }),
            (State::Publishing, Effect::Advance { seq: 3 })
        );
    }

    #[test]
    fn retriable_failure_backs_off_and_reconnects_only_when_disconnected() {
        assert_eq!(
            State::Publishing.next(Input::Retriable { connected: true }),
            (
                backing_off(Delay::Backoff, Resume::Publish),
                Effect::Failed {
                    label: "publish",
                    disconnect: false
                }
            )
        );
        assert_eq!(
            State::Publishing.next(Input::Retriable { connected: false }),
            (
                backing_off(Delay::Backoff, Resume::Connect),
                Effect::Failed {
                    label: "publish",
                    disconnect: true
                }
            )
        );
    }

    #[test]
    fn halt_waits_the_fixed_delay() {
        assert_eq!(
            State::Publishing.next(Input::Halt { connected: true }),
            (
                backing_off(Delay::Halted, Resume::Publish),
                Effect::Failed {
                    label: "publish",
                    disconnect: false
                }
            )
        );
        assert_eq!(
            State::Publishing.next(Input::Halt { connected: false }).0,
            backing_off(Delay::Halted, Resume::Connect)
        );
    }

    #[test]
    fn backoff_elapsed_resumes() {
        assert_eq!(
            backing_off(Delay::Backoff, Resume::Connect).next(Input::BackoffElapsed),
            (State::Connecting, Effect::None)
        );
        assert_eq!(
            backing_off(Delay::Halted, Resume::Publish).next(Input::BackoffElapsed),
            (State::Publishing, Effect::Healthy)
        );
    }

    #[test]
    fn cancel_drains_only_while_publishing() {
        assert_eq!(
            State::Publishing.next(Input::Cancelled),
            (
                State::Draining {
                    then: AfterDrain::Done
                },
                Effect::None
            )
        );
        for s in [
            State::Connecting,
            backing_off(Delay::Backoff, Resume::Publish),
            State::Parked,
            State::Done,
        ] {
            assert_eq!(
                s.next(Input::Cancelled),
                (State::Done, Effect::None),
                "{s:?}"
            );
        }
    }

    #[test]
    fn capture_closed_drains_then_parks_until_cancel() {
        let draining = State::Draining {
            then: AfterDrain::Parked,
        };
        assert_eq!(
            State::Publishing.next(Input::CaptureClosed),
            (draining, Effect::None)
        );
        assert_eq!(
            draining.next(Input::Settled { seq: 3 }),
            (draining, Effect::Advance { seq: 3 })
        );
        assert_eq!(draining.next(Input::Drained), (State::Parked, Effect::None));
        assert_eq!(
            State::Parked.next(Input::Cancelled),
            (State::Done, Effect::None)
        );
    }

    #[test]
    fn drain_advances_then_finishes() {
        let draining = State::Draining {
            then: AfterDrain::Done,
        };
        assert_eq!(
            draining.next(Input::Settled { seq: 3 }),
            (draining, Effect::Advance { seq: 3 })
        );
        assert_eq!(draining.next(Input::Drained), (State::Done, Effect::None));
    }

    #[test]
    fn inputs_foreign_to_a_state_change_nothing() {
        let cases = [
            (State::Connecting, Input::Settled { seq: 3 }),
            (State::Publishing, Input::Connected),
            (State::Publishing, Input::Drained),
            (
                backing_off(Delay::Backoff, Resume::Connect),
                Input::Settled { seq: 3 },
            ),
            (State::Parked, Input::Settled { seq: 3 }),
        ];
        for (s, i) in cases {
            assert_eq!(s.next(i), (s, Effect::None), "{s:?} {i:?}");
        }
        assert_eq!(
            State::Done.next(Input::Connected),
            (State::Done, Effect::None)
        );
    }
}
