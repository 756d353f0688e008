//! crbridge's Kafka sink.
//!
//! * Idempotent producer (`enable.idempotence=true`, `acks=all`): librdkafka retries without
//!   duplicating or reordering within a partition.
//! * Record key = object uid, so every event of one object lands in one partition, in order.
//! * Topic from a template; characters Kafka does not allow in topic names become `_`. A
//!   topic over 249 characters has its longest values shortened to a prefix plus `-` and a
//!   16-hex-digit hash of the whole value (the same object always gets the same topic);
//!   `.` / `..` become `_` / `__`; literal text outside `[a-zA-Z0-9._-]` or too long to
//!   ever fit is a config error (`topic`). See [`encode`].
//! * CloudEvents Kafka protocol binding: binary mode (`ce_*` headers, `content-type`) by
//!   default, structured mode (`application/cloudevents+json` value) as an option.
//! * `publish` hands the record to librdkafka and returns its delivery future: many records
//!   are in flight at once; message-size errors are permanent, the rest retriable.
//! * `tls` and `sasl` are first-class keys mapped onto librdkafka's `security.protocol`,
//!   `ssl.*` and `sasl.*` ([`security`]); `options` pass straight through for the rest
//!   (linger, compression...), except a key `tls` / `sasl` already sets.
//! * librdkafka reports broken TLS or a refused login only asynchronously: the client's
//!   context keeps the last such cause, and connect, healthcheck and publish errors carry it
//!   instead of a bare timeout. Authentication and authorization failures are retriable:
//!   the sink waits until they are fixed rather than dead-lettering events.
//! * `crbridge tail` reads with a consumer group of its own over every topic the template
//!   can render ([`consume::topic_regex`]).
#![forbid(unsafe_code)]

use std::sync::Arc;

use crbridge_sink_api::{
    BoxFuture, ConsumeError, Consumer, Section, SectionError, Sink, SinkConfig, SinkError,
    SinkFactory,
};

mod client;
mod config;
pub mod consume;
pub mod encode;
pub mod security;
mod sink;

pub use config::KafkaSinkConfig;
pub use sink::KafkaSink;

/// `type: kafka` in crbridge's sink registry.
pub struct KafkaFactory;

impl SinkFactory for KafkaFactory {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn configure(&self, section: &Section<'_>) -> Result<Arc<dyn SinkConfig>, SectionError> {
        let mut config = section.parse::<KafkaSinkConfig>()?;
        config.name = section.name().to_owned();
        config
            .validate()
            .map_err(|(path, message)| section.invalid(&path, message))?;
        Ok(Arc::new(config))
    }
}

impl SinkConfig for KafkaSinkConfig {
    fn connect(&self) -> BoxFuture<'static, Result<Arc<dyn Sink>, SinkError>> {
        let config = self.clone();
        Box::pin(async move { Ok(Arc::new(KafkaSink::connect(config).await?) as Arc<dyn Sink>) })
    }

    fn consume(
        &self,
        from_start: bool,
    ) -> BoxFuture<'static, Result<Box<dyn Consumer>, ConsumeError>> {
        let consumer = consume::KafkaConsumer::subscribe(self, from_start);
        Box::pin(async move { Ok(Box::new(consumer?) as Box<dyn Consumer>) })
    }
}
