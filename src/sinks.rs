//! The sinks compiled into this build, by config `type`.

use std::sync::Arc;

use crbridge_sink_api::{BoxFuture, Sink, SinkError};
use serde::de::DeserializeOwned;

use crate::config::{ConfigError, SinkSection};
use crate::dispatch::Connector;

/// The sink types compiled into this build.
pub const AVAILABLE: &[&str] = &[
    #[cfg(feature = "kafka")]
    "kafka",
    #[cfg(feature = "nats")]
    "nats",
    #[cfg(feature = "amqp")]
    "amqp",
    #[cfg(feature = "stdout")]
    "stdout",
];

/// A connector from a parsed sink config and its async constructor.
fn connector_for<C, S, F>(
    file: &str,
    section: &SinkSection,
    build: F,
) -> Result<Connector, ConfigError>
where
    C: DeserializeOwned + Clone + Send + Sync + 'static,
    S: Sink + 'static,
    F: Fn(C) -> BoxFuture<'static, Result<S, SinkError>> + Send + Sync + 'static,
{
    let cfg: C = crate::config::sink_config(file, section)?;
    let build = Arc::new(build);
    Ok(Arc::new(move || {
        let fut = build(cfg.clone());
        Box::pin(async move { Ok(Arc::new(fut.await?) as Arc<dyn Sink>) })
    }))
}

/// Parses a sink section and returns how to connect it. A type this build lacks is a config
/// error naming the types it has.
pub fn connector(file: &str, section: &SinkSection) -> Result<Connector, ConfigError> {
    // The sink-independent keys are validated here too, so a typo fails at load.
    crate::config::sink_policy(file, section)?;
    match section.kind.as_str() {
        #[cfg(feature = "nats")]
        "nats" => connector_for(file, section, |c: crbridge_sink_nats::NatsSinkConfig| {
            Box::pin(crbridge_sink_nats::NatsSink::connect(c))
        }),
        #[cfg(feature = "kafka")]
        "kafka" => connector_for(file, section, |c: crbridge_sink_kafka::KafkaSinkConfig| {
            Box::pin(crbridge_sink_kafka::KafkaSink::connect(c))
        }),
        #[cfg(feature = "amqp")]
        "amqp" => connector_for(file, section, |c: crbridge_sink_amqp::AmqpSinkConfig| {
            Box::pin(crbridge_sink_amqp::AmqpSink::connect(c))
        }),
        #[cfg(feature = "stdout")]
        "stdout" => connector_for(
            file,
            section,
            |c: crbridge_sink_stdout::StdoutSinkConfig| {
                Box::pin(async move { Ok(crbridge_sink_stdout::StdoutSink::new(c)) })
            },
        ),
        other => Err(ConfigError::invalid(
            file,
            format!("sinks.{}.type", section.name),
            format!(
                "sink type {other} is not available in this build of crbridge (available: {})",
                AVAILABLE.join(", ")
            ),
        )),
    }
}
