//! The sinks compiled into this build, by config `type`.

use std::sync::Arc;

use crbridge_sink_api::Sink;

use crate::config::{ConfigError, SinkSection};
use crate::dispatch::Connector;

/// The sink types compiled into this build.
pub const AVAILABLE: &[&str] = &[
    #[cfg(feature = "nats")]
    "nats",
];

/// Parses a sink section and returns how to connect it. A type known to crbridge but not
/// compiled into this build is a config error naming the cargo feature.
pub fn connector(file: &str, section: &SinkSection) -> Result<Connector, ConfigError> {
    match section.kind.as_str() {
        #[cfg(feature = "nats")]
        "nats" => {
            let cfg: crbridge_sink_nats::NatsSinkConfig =
                crate::config::sink_config(file, section)?;
            Ok(Arc::new(move || {
                let cfg = cfg.clone();
                Box::pin(async move {
                    let sink = crbridge_sink_nats::NatsSink::connect(cfg).await?;
                    Ok(Arc::new(sink) as Arc<dyn Sink>)
                })
            }))
        }
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
