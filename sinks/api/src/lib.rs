//! The contract between crbridge and its sinks.
//!
//! * [`Event`]: one CloudEvent as crbridge stores it in its outbox and hands it to a sink,
//!   with the routing fields a sink needs for its topic / subject / routing-key template.
//! * [`Sink`]: the two-phase publish interface. A sink takes an event *now* (hands it to its
//!   client) and returns a [`PendingAck`] that resolves *later* with the broker's answer, so
//!   the dispatcher can keep a window of events in flight, as rdkafka's `DeliveryFuture`,
//!   async-nats' `PublishAckFuture` and lapin's `PublisherConfirm` all allow.
//! * [`SinkError`]: every failure is classified once, by the sink, as retriable or permanent.
//!
//! * [`SinkFactory`] / [`SinkConfig`]: how a sink crate plugs into crbridge's registry:
//!   its `type` name, its typed config read from a [`Section`] (errors with key paths),
//!   connect, and a [`Consumer`] of its broker for `crbridge tail` (yielding [`Received`]).
//! * [`ContentMode`]: binary or structured CloudEvents, shared by the broker sinks.
//!
//! * [`template`]: routing templates (`crbridge.{cluster}.{group}.{kind}`), [`units`]:
//!   durations and byte sizes, shared by every config section.
//!
//! This crate is deliberately small: serde, serde_json, serde_path_to_error and thiserror only
//! (and proptest, for the sinks' tests only, behind the `test-support` feature: [`test_support`]).
#![forbid(unsafe_code)]

mod consume;
mod error;
mod event;
mod factory;
mod mode;
pub mod secret;
mod section;
mod sink;
pub mod template;
#[cfg(feature = "test-support")]
pub mod test_support;
pub mod tls;
pub mod units;

pub use consume::{ConsumeError, Consumer, Received};
pub use error::{ErrorClass, SinkError};
pub use event::{ChangeKind, Event, Extension, Route};
pub use factory::{SinkConfig, SinkFactory};
pub use mode::ContentMode;
pub use section::{Section, SectionError, WordSchemaError};
pub use sink::{BoxFuture, PendingAck, Sink};
