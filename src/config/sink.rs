//! `sinks`: the untyped sections, the keys every sink has (`type`, `onError`, `oversize`)
//! and the entry point a sink crate deserializes its own config type with.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::de::join_key;
use super::error::{json_kind, schema_error, suggestion};
use super::ConfigError;

/// One entry of `sinks`, untyped until `crate::sinks::configure` hands it to the sink
/// crate's factory, which deserializes its own config type from [`sink_keys`].
///
/// `Debug` prints only the name, type and keys: the values may hold broker credentials.
#[derive(Clone)]
pub struct SinkSection {
    /// The key under `sinks` (`[a-z0-9_-]+`).
    pub name: String,
    /// The `type` key: one of [`crate::sinks::known_types`].
    pub kind: String,
    /// The whole section including `type`, converted from YAML.
    pub raw: Value,
}

impl fmt::Debug for SinkSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<&str> = match &self.raw {
            Value::Object(map) => map.keys().map(String::as_str).collect(),
            _ => Vec::new(),
        };
        f.debug_struct("SinkSection")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("keys", &keys)
            .finish_non_exhaustive()
    }
}

/// Keys every sink section has, handled by crbridge rather than by the sink's own config.
const COMMON_SINK_KEYS: &[&str] = &["type", "onError", "oversize"];

/// What a dispatcher does with an event its sink refuses for good (too large, rejected,
/// unroutable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorPolicy {
    /// Keep it in the dead-letter tree of the state store, count it, log it once, go on.
    #[default]
    Deadletter,
    /// Stop the sink at that event (retrying slowly) until an operator acts.
    Halt,
}

/// What a dispatcher does with an event larger than the sink accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OversizePolicy {
    /// Send it once more without `data.object` (the patch still describes the change);
    /// if that is still too large, `onError` applies.
    #[default]
    PatchOnly,
    /// Apply `onError` at once.
    Deadletter,
}

/// The sink-independent part of a sink section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SinkPolicy {
    /// `onError`: deadletter (default) | halt.
    #[serde(default)]
    pub on_error: ErrorPolicy,
    /// `oversize`: patch-only (default) | deadletter.
    #[serde(default)]
    pub oversize: OversizePolicy,
}

/// Reads the sink-independent keys (`onError`, `oversize`) of a sink section.
pub fn sink_policy(file: &str, section: &SinkSection) -> Result<SinkPolicy, ConfigError> {
    let mut map = serde_json::Map::new();
    if let Value::Object(raw) = &section.raw {
        for k in ["onError", "oversize"] {
            if let Some(v) = raw.get(k) {
                map.insert(k.to_string(), v.clone());
            }
        }
    }
    let prefix = join_key("sinks", &section.name);
    serde_path_to_error::deserialize(Value::Object(map)).map_err(|err| {
        let hint = |_: &str| {
            "deadletter or halt (onError), patch-only or deadletter (oversize)".to_string()
        };
        schema_error(file, &prefix, err.path(), &err.inner().to_string(), &hint)
    })
}
/// Deserializes a sink's own keys (all but [`COMMON_SINK_KEYS`]) into `T`. Errors name the
/// key path as `sinks.{name}.{path}`.
pub fn sink_config<T: DeserializeOwned>(
    file: &str,
    section: &SinkSection,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(sink_keys(section))
        .map_err(|err| sink_schema_error(file, section, err.path(), &err.inner().to_string()))
}

/// The sink's own keys of a section: all but [`COMMON_SINK_KEYS`], which crbridge reads.
pub fn sink_keys(section: &SinkSection) -> Value {
    let mut raw = section.raw.clone();
    if let Value::Object(map) = &mut raw {
        for k in COMMON_SINK_KEYS {
            map.remove(*k);
        }
    }
    raw
}

/// Words serde's `message` about `path` inside a sink's own keys as a schema error at
/// `sinks.{name}.{path}` (what [`sink_config`] reports; sink factories get it through
/// `crate::sinks`).
pub fn sink_schema_error(
    file: &str,
    section: &SinkSection,
    path: &serde_path_to_error::Path,
    message: &str,
) -> ConfigError {
    let prefix = join_key("sinks", &section.name);
    let hint = |_: &str| format!("a value: required by the {} sink", section.kind);
    schema_error(file, &prefix, path, message, &hint)
}

/// Checks a sink's name and `type`. Errors carry (path suffix after `sinks.{name}`, message).
fn validate_sink(name: &str, section: &SinkSection) -> Result<(), (&'static str, String)> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err((
            "",
            format!("invalid sink name {name:?} (expected lowercase letters, digits, '_' and '-')"),
        ));
    }
    let known = crate::sinks::known_types();
    let types = known.join(", ");
    let Value::Object(map) = &section.raw else {
        return Err((
            "",
            format!(
                "wrong type: {} (expected a mapping with a type key, e.g. {{ type: kafka, ... }})",
                json_kind(&section.raw)
            ),
        ));
    };
    match map.get("type") {
        None => Err((".type", format!("missing field (expected one of: {types})"))),
        Some(Value::String(kind)) if known.contains(&kind.as_str()) => Ok(()),
        Some(Value::String(kind)) => Err((
            ".type",
            format!(
                "unknown sink type {kind:?} (expected one of: {types}){}",
                suggestion(kind, known.iter().copied())
            ),
        )),
        Some(other) => Err((
            ".type",
            format!(
                "wrong type: {} (expected one of: {types})",
                json_kind(other)
            ),
        )),
    }
}

/// Checks that there is at least one sink, and each sink's name and `type`. Errors carry
/// (key path, message).
pub(super) fn validate_sinks(
    sinks: &BTreeMap<String, SinkSection>,
) -> Result<(), (String, String)> {
    if sinks.is_empty() {
        return Err((
            "sinks".into(),
            "empty (expected at least one sink, e.g. kafka: { type: kafka, ... })".into(),
        ));
    }
    for (name, section) in sinks {
        let path = join_key("sinks", name);
        validate_sink(name, section).map_err(|(suffix, m)| (format!("{path}{suffix}"), m))?;
    }
    Ok(())
}
