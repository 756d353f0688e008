//! crbridge's AMQP 0-9-1 (RabbitMQ) sink.
//!
//! * Publisher confirms: an event counts as delivered only when the broker confirms it.
//! * `mandatory`: a message no queue is bound for comes back (basic.return) and is a
//!   failure, not a success.
//! * Persistent delivery mode, `message_id` = event id, `content_type`.
//! * CloudEvents attributes as headers named `cloudEvents:{attr}` (the AMQP binding's
//!   prefix) or `ce-{attr}` (`headerPrefix`), binary mode by default, structured mode
//!   (`application/cloudevents+json` body) as an option.
//! * Exchange declared (durable) at start, or only checked (`declareExchange: false`).
//! * Routing key from a template, values escaped with `escape_token` so a value cannot add a
//!   word or a wildcard.
#![forbid(unsafe_code)]

mod config;
pub mod encode;
mod sink;

pub use config::{AmqpSinkConfig, ContentMode, ExchangeKindConfig};
pub use sink::AmqpSink;
