//! The sinks crbridge knows, by config `type`, and which of them this build holds.
//!
//! Each sink is a crate under `sinks/` whose [`SinkFactory`] reads its section into a typed,
//! validated [`SinkConfig`] that connects sinks and opens consumers. The root knows sinks
//! only through [`REGISTRY`]; adding one is a crate, a line there and a feature in
//! `Cargo.toml` (see `CONTRIBUTING.md`).
//!
//! [`configure`] turns the config's sink sections into [`ConfiguredSink`]s once, right
//! after the config is loaded: the typed config and the sink-independent policy
//! (`onError`, `oversize`), so a typo fails before anything starts.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crbridge_sink_api::{
    ConsumeError, Consumer, Section, SectionError, Sink, SinkConfig, SinkError, SinkFactory,
};

use crate::config::{Config, ConfigError, SinkPolicy, SinkSection};
use crate::dispatch::Connector;

/// A sink type crbridge knows, with its factory when this build compiled it in.
#[derive(Clone, Copy)]
pub struct Registered {
    /// The config `type`, also the name of the Cargo feature that compiles the sink in.
    pub kind: &'static str,
    /// The sink crate's factory; `None` when the feature is off.
    pub factory: Option<&'static dyn SinkFactory>,
}

/// One [`Registered`] entry: `sink!("kind", crate::Factory)` holds the factory only when
/// the Cargo feature `kind` is on.
macro_rules! sink {
    ($kind:literal, $factory:path) => {{
        #[cfg(feature = $kind)]
        const FACTORY: Option<&'static dyn SinkFactory> = Some(&$factory);
        #[cfg(not(feature = $kind))]
        const FACTORY: Option<&'static dyn SinkFactory> = None;
        Registered {
            kind: $kind,
            factory: FACTORY,
        }
    }};
}

/// Every sink type, in the order error messages list them.
pub const REGISTRY: &[Registered] = &[
    sink!("kafka", crbridge_sink_kafka::KafkaFactory),
    sink!("nats", crbridge_sink_nats::NatsFactory),
    sink!("amqp", crbridge_sink_amqp::AmqpFactory),
    sink!("stdout", crbridge_sink_stdout::StdoutFactory),
];

/// Every sink `type` crbridge knows, whether or not this build holds it.
pub fn known_types() -> Vec<&'static str> {
    REGISTRY.iter().map(|r| r.kind).collect()
}

/// The sink types compiled into this build.
pub fn available_types() -> Vec<&'static str> {
    REGISTRY
        .iter()
        .filter(|r| r.factory.is_some())
        .map(|r| r.kind)
        .collect()
}

/// The factory of `kind`, when this build holds it.
fn factory(kind: &str) -> Option<&'static dyn SinkFactory> {
    REGISTRY
        .iter()
        .find(|r| r.kind == kind)
        .and_then(|r| r.factory)
}

/// A sink section read once: its typed config and what the dispatcher does with events the
/// sink refuses.
#[derive(Clone)]
pub struct ConfiguredSink {
    /// The key under `sinks`.
    pub name: String,
    /// The `type`.
    pub kind: &'static str,
    /// The sink crate's validated config.
    pub config: Arc<dyn SinkConfig>,
    /// `onError` and `oversize`.
    pub policy: SinkPolicy,
}

impl fmt::Debug for ConfiguredSink {
    /// Name, type and policy only: the config may hold broker credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfiguredSink")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl ConfiguredSink {
    /// How a dispatcher (re)connects this sink.
    pub fn connector(&self) -> Connector {
        let config = self.config.clone();
        Arc::new(move || config.connect())
    }

    /// Connects the sink once.
    pub async fn connect(&self) -> Result<Arc<dyn Sink>, SinkError> {
        self.config.connect().await
    }

    /// Subscribes to the sink's broker (for `tail`).
    pub async fn consume(&self, from_start: bool) -> Result<Box<dyn Consumer>, ConsumeError> {
        self.config.consume(from_start).await
    }
}

/// Reads every sink section of `config` (in name order); the first bad one fails.
pub fn configure(
    file: &str,
    config: &Config,
) -> Result<BTreeMap<String, ConfiguredSink>, ConfigError> {
    config
        .sinks
        .iter()
        .map(|(name, section)| Ok((name.clone(), configure_sink(file, section)?)))
        .collect()
}

/// Reads one sink section: the policy keys, then the type (a type this build lacks is an
/// error naming the types it has), then the sink's own keys.
pub fn configure_sink(file: &str, section: &SinkSection) -> Result<ConfiguredSink, ConfigError> {
    let policy = crate::config::sink_policy(file, section)?;
    let Some(factory) = factory(&section.kind) else {
        return Err(ConfigError::invalid(
            file,
            format!("sinks.{}.type", section.name),
            format!(
                "sink type {} is not available in this build of crbridge (available: {})",
                section.kind,
                available_types().join(", ")
            ),
        ));
    };
    let word = |path: &serde_path_to_error::Path, message: &str| {
        to_section_error(crate::config::sink_schema_error(
            file, section, path, message,
        ))
    };
    let keys = Section::new(&section.name, crate::config::sink_keys(section), &word);
    let config = factory
        .configure(&keys)
        .map_err(|e| to_config_error(file, e))?;
    Ok(ConfiguredSink {
        name: section.name.clone(),
        kind: factory.kind(),
        config,
        policy,
    })
}

/// The config module's wording, handed to a sink crate.
fn to_section_error(e: ConfigError) -> SectionError {
    match e {
        ConfigError::Schema { path, message, .. } => SectionError::Schema { path, message },
        ConfigError::Invalid { path, message, .. } => SectionError::Invalid { path, message },
        other => SectionError::Schema {
            path: String::new(),
            message: other.to_string(),
        },
    }
}

/// A sink crate's error, back in the config's terms (with the file).
fn to_config_error(file: &str, e: SectionError) -> ConfigError {
    match e {
        SectionError::Schema { path, message } => ConfigError::Schema {
            file: file.to_owned(),
            path,
            message,
        },
        SectionError::Invalid { path, message } => ConfigError::invalid(file, path, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names_match_their_factories() {
        for r in REGISTRY {
            if let Some(f) = r.factory {
                assert_eq!(f.kind(), r.kind);
            }
        }
        assert_eq!(known_types(), ["kafka", "nats", "amqp", "stdout"]);
        let available = available_types();
        assert_eq!(available.contains(&"kafka"), cfg!(feature = "kafka"));
        assert_eq!(available.contains(&"stdout"), cfg!(feature = "stdout"));
    }

    #[cfg(feature = "stdout")]
    #[test]
    fn sections_are_read_once_with_policy_and_key_paths() {
        let yaml = "cluster: c\nstate: { path: /tmp/x }\nwatches:\n  - { group: example.com, version: v1, kind: Widget }\nsinks:\n  out: { type: stdout, onError: halt }\n";
        let config = crate::config::parse("f.yaml", yaml).unwrap();
        let sinks = configure("f.yaml", &config).unwrap();
        let out = &sinks["out"];
        assert_eq!(out.kind, "stdout");
        assert_eq!(out.policy.on_error, crate::config::ErrorPolicy::Halt);
        assert!(format!("{out:?}").contains("out"));

        let bad = config.sinks["out"].clone();
        let mut bad = bad;
        bad.raw["extra"] = serde_json::json!(1);
        let err = configure_sink("f.yaml", &bad).unwrap_err().to_string();
        assert!(
            err.starts_with("f.yaml: sinks.out.extra: unknown key"),
            "{err}"
        );
    }
}
