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
//! * `crbridge tail` reads the stream with an ordered consumer of its own; it connects as
//!   the sink does ([`connect_client`]).
#![forbid(unsafe_code)]

use std::sync::Arc;

use crbridge_sink_api::{
    BoxFuture, ConsumeError, Consumer, Section, SectionError, Sink, SinkConfig, SinkError,
    SinkFactory,
};

mod config;
mod consume;
pub mod encode;
mod sink;

pub use config::NatsSinkConfig;
pub use sink::{connect_client, NatsSink};

/// `type: nats` in crbridge's sink registry.
pub struct NatsFactory;

impl SinkFactory for NatsFactory {
    fn kind(&self) -> &'static str {
        "nats"
    }

    fn configure(&self, section: &Section<'_>) -> Result<Arc<dyn SinkConfig>, SectionError> {
        Ok(Arc::new(section.parse::<NatsSinkConfig>()?))
    }
}

impl SinkConfig for NatsSinkConfig {
    fn connect(&self) -> BoxFuture<'static, Result<Arc<dyn Sink>, SinkError>> {
        let config = self.clone();
        Box::pin(async move { Ok(Arc::new(NatsSink::connect(config).await?) as Arc<dyn Sink>) })
    }

    fn consume(
        &self,
        from_start: bool,
    ) -> BoxFuture<'static, Result<Box<dyn Consumer>, ConsumeError>> {
        let config = self.clone();
        Box::pin(async move {
            let consumer = consume::NatsConsumer::subscribe(&config, from_start).await?;
            Ok(Box::new(consumer) as Box<dyn Consumer>)
        })
    }
}
