//! crbridge's Kafka sink.
//!
//! * Idempotent producer (`enable.idempotence=true`, `acks=all`): librdkafka retries without
//!   duplicating or reordering within a partition.
//! * Record key = object uid, so every event of one object lands in one partition, in order.
//! * Topic from a template; characters Kafka does not allow in topic names become `_`.
//! * CloudEvents Kafka protocol binding: binary mode (`ce_*` headers, `content-type`) by
//!   default, structured mode (`application/cloudevents+json` value) as an option.
//! * `publish` hands the record to librdkafka and returns its delivery future: many records
//!   are in flight at once; message-size errors are permanent, the rest retriable.
//! * `options` pass straight through to librdkafka (TLS, SASL, linger, compression...).
#![forbid(unsafe_code)]

mod config;
pub mod encode;
mod sink;

pub use config::{ContentMode, KafkaSinkConfig};
pub use sink::KafkaSink;
