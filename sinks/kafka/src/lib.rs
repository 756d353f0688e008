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
//! * `crbridge tail` reads with a consumer group of its own over every topic the template
//!   can render ([`consume::topic_regex`]).
#![forbid(unsafe_code)]

use std::sync::Arc;

use crbridge_sink_api::{
    BoxFuture, ConsumeError, Consumer, Section, SectionError, Sink, SinkConfig, SinkError,
    SinkFactory,
};

mod config;
pub mod consume;
pub mod encode;
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
        Ok(Arc::new(section.parse::<KafkaSinkConfig>()?))
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
