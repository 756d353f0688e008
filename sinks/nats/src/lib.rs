//! crbridge's NATS JetStream sink.
//!
//! * Subject from a template (`crbridge.{cluster}.{group}.{kind}.{namespace}.{name}`), each
//!   value escaped so it stays one subject token (`crbridge_sink_api::template::escape_token`).
//! * The stream is created if missing (capturing the template's subjects) or verified to
//!   capture them.
//! * CloudEvents binary mode by default: `ce-*` headers and `content-type`; structured mode
//!   (`application/cloudevents+json` body) as an option.
//! * `Nats-Msg-Id` = event id, so JetStream drops a re-sent event within the stream's
//!   duplicate window.
//! * Every publish returns the future of its PubAck, so the dispatcher keeps a window of
//!   publishes in flight.
#![forbid(unsafe_code)]

mod config;
pub mod encode;
mod sink;

pub use config::{ContentMode, NatsSinkConfig};
pub use sink::{connect_client, NatsSink};
