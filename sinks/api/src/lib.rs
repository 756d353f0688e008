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
//! * [`template`]: routing templates (`crbridge.{cluster}.{group}.{kind}`), [`units`]:
//!   durations and byte sizes, shared by every config section.
//!
//! This crate is deliberately small: serde, serde_json and thiserror only.
#![forbid(unsafe_code)]

mod error;
mod event;
pub mod secret;
mod sink;
pub mod template;
pub mod units;

pub use error::{ErrorClass, SinkError};
pub use event::{ChangeKind, Event, Extension, Route};
pub use sink::{BoxFuture, PendingAck, Sink};
