//! crbridge's AMQP 0-9-1 (RabbitMQ) sink.
//!
//! * Publisher confirms: an event counts as delivered only when the broker confirms it.
//! * `mandatory`: a message no queue is bound for comes back (basic.return) and is never
//!   counted as delivered silently: `unroutable` says whether the sink retries it (default),
//!   refuses it (`onError`) or drops it on purpose.
//! * Broker refusals are classified in `classify`: access refused is retriable (the sink
//!   waits for the permission), RabbitMQ's `max_message_size` refusal is too large (the
//!   `oversize` policy). A refusal closes the channel; the next publish opens a new one.
//! * Persistent delivery mode, `message_id` = event id, `content_type`.
//! * CloudEvents attributes as headers named `cloudEvents:{attr}` (the AMQP binding's
//!   prefix) or `ce-{attr}` (`headerPrefix`), binary mode by default, structured mode
//!   (`application/cloudevents+json` body) as an option.
//! * Exchange declared (durable) at start, or only checked (`declareExchange: false`).
//! * Routing key from a template, values escaped with `escape_token` so a value cannot add a
//!   word or a wildcard.
//! * No value reaches lapin as a short string over 255 bytes (lapin panics on one), see
//!   [`encode`]: a routing key too long has its longest values shortened to a prefix plus
//!   `-` and a 16-hex-digit hash of the whole value (the same for every event of an object);
//!   `exchange`, `headerPrefix` (at most 235 bytes) and a routing-key template that could
//!   never fit are config errors with their key path; a header name or message id over the
//!   limit is a permanent error for that event.
//! * `crbridge tail` reads through an exclusive queue of its own bound to the exchange.
//! * `amqps://` is real TLS with an optional CA and client certificate (`tls`); a `tls`
//!   section with a plaintext `amqp://` URL is refused, never downgraded (see `connect`).
#![forbid(unsafe_code)]

use std::sync::Arc;

use crbridge_sink_api::{
    BoxFuture, ConsumeError, Consumer, Section, SectionError, Sink, SinkConfig, SinkError,
    SinkFactory,
};

mod classify;
mod config;
mod connect;
mod consume;
pub mod encode;
mod sink;

pub use config::{AmqpSinkConfig, ExchangeKindConfig, UnroutablePolicy};
pub use sink::AmqpSink;

/// `type: amqp` in crbridge's sink registry.
pub struct AmqpFactory;

impl SinkFactory for AmqpFactory {
    fn kind(&self) -> &'static str {
        "amqp"
    }

    fn configure(&self, section: &Section<'_>) -> Result<Arc<dyn SinkConfig>, SectionError> {
        let mut config = section.parse::<AmqpSinkConfig>()?;
        config.name = section.name().to_string();
        config
            .validate()
            .map_err(|(path, message)| section.invalid(&path, message))?;
        Ok(Arc::new(config))
    }
}

impl SinkConfig for AmqpSinkConfig {
    fn connect(&self) -> BoxFuture<'static, Result<Arc<dyn Sink>, SinkError>> {
        let config = self.clone();
        Box::pin(async move { Ok(Arc::new(AmqpSink::connect(config).await?) as Arc<dyn Sink>) })
    }

    /// AMQP keeps no history: `from_start` cannot apply.
    fn consume(
        &self,
        _from_start: bool,
    ) -> BoxFuture<'static, Result<Box<dyn Consumer>, ConsumeError>> {
        let config = self.clone();
        Box::pin(async move {
            let consumer = consume::AmqpConsumer::subscribe(&config).await?;
            Ok(Box::new(consumer) as Box<dyn Consumer>)
        })
    }
}
