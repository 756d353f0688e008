//! `crbridge.yaml`: parsing and validation (every key is in the README's "Configuration
//! reference").
//!
//! [`load`] reads a file, [`parse`] parses text; both validate everything that can be
//! checked without the cluster or the brokers and fail on the first problem with a
//! one-line [`ConfigError`] of the form `{file}: {key path}: {what is wrong (expected ...)}`.
//! Unknown keys are rejected everywhere.
//!
//! Sink sections are kept untyped here ([`SinkSection::raw`]): right after loading,
//! `crate::sinks::configure` hands each to its sink crate's factory, which deserializes its
//! own typed config and reports errors with the same `sinks.{name}.{path}` key paths.
//!
//! Each section has its own file holding its type, its defaults (with the reason for each
//! number) and its rules: `state`, `http`, `admin`, `leader`, `watch`, `sink`. `resolve` runs those
//! rules in order and checks what spans sections; `de` holds the serde helpers and key
//! paths, `error` the wording of [`ConfigError`].
//!
//! ```yaml
//! cluster: prod-eu-1
//! state: { path: /var/lib/crbridge, outbox: { retention: 24h, max_bytes: 2GiB } }
//! watches:
//!   - { group: example.com, version: v1, kind: Widget, sinks: [kafka] }
//! sinks:
//!   kafka: { type: kafka, brokers: "127.0.0.1:9092", topic: "crbridge.{group}.{plural}" }
//! ```

mod admin;
mod cluster;
mod de;
mod error;
mod http;
mod key;
mod leader;
mod resolve;
mod sink;
mod state;
#[cfg(test)]
mod tests;
mod watch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_path_to_error::Segment;

pub use admin::AdminConfig;
pub use cluster::{ClusterConfig, Reach};
pub use crbridge_sink_api::template::{Template, TemplateError, Var};
pub use crbridge_sink_api::units::{format_duration, parse_bytes, parse_duration, UnitError};
pub use error::ConfigError;
pub use http::HttpConfig;
pub use key::{kind_key, StateKey, WatchSet};
pub use leader::LeaderElectionConfig;
pub use sink::{
    sink_config, sink_keys, sink_policy, sink_schema_error, ErrorPolicy, OversizePolicy,
    SinkPolicy, SinkSection,
};
pub use state::{OutboxConfig, StateConfig};
pub use watch::{
    default_plural, default_watch_name, legacy_default_name, ChangeType, FilterErrors, InitialMode,
    PayloadMode, WatchConfig, ALL_KINDS, DEFAULT_DISCOVERY_INTERVAL,
};

use de::deserialize_sinks;
use error::{
    config_field_hint, schema_error, strip_yaml_decorations, syntax_error, yaml_message, TOP_LEVEL,
};
use resolve::resolve;

/// The whole `crbridge.yaml`.
///
/// It derives `Deserialize` to document the schema, but only [`parse`] and [`load`] fill
/// the derived defaults (watch names and sinks, sink names) and validate: use those.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// Cluster name used in event `source` and `id`; `[a-z0-9.-]+`. The single-cluster
    /// form; with `clusters` it is absent and, once parsed, the leader election's home
    /// cluster.
    #[serde(default)]
    pub cluster: String,
    /// Kubeconfig file (`~/` expanded); absent: in-cluster, then `KUBECONFIG`, then
    /// `~/.kube/config`. The single-cluster form.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// The clusters to watch (a fleet). Once parsed, never empty: the single-cluster form
    /// becomes one entry.
    #[serde(default)]
    pub clusters: Vec<ClusterConfig>,
    /// True when the file lists `clusters` (state keys then carry the cluster); false for
    /// the single-cluster form, whose state keys stay as they always were.
    #[serde(skip)]
    pub fleet: bool,
    /// Local durable state (sled).
    pub state: StateConfig,
    /// HTTP endpoint for metrics, health and the admin API.
    #[serde(default)]
    pub http: HttpConfig,
    /// The admin API: its own listener and its bearer token.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Lease-based leader election (key `leaderElection`).
    #[serde(default)]
    pub leader_election: LeaderElectionConfig,
    /// Prefix of the CloudEvent `type` (key `eventTypePrefix`); the change type is appended.
    #[serde(default = "default_event_type_prefix")]
    pub event_type_prefix: String,
    /// The `dataschema` attribute of every event (key `dataSchema`): a URI template over
    /// `{cluster} {group} {version} {kind} {plural}`, naming the JSON Schema that
    /// `crbridge schema` prints for the kind.
    #[serde(default = "default_data_schema")]
    pub data_schema: Template,
    /// HMAC key of redacted values (key `redactKey`): `env:NAME` or `file:/path`, never
    /// the key itself; required when a watch has `redact`.
    #[serde(default)]
    pub redact_key: Option<String>,
    /// `redactKey`, resolved by validation.
    #[serde(skip)]
    pub resolved_redact_key: Option<crate::redact::RedactKey>,
    /// The resources to watch; at least one.
    pub watches: Vec<WatchConfig>,
    /// The sinks by name; at least one. Each watch publishes to some or all of them.
    #[serde(deserialize_with = "deserialize_sinks")]
    pub sinks: BTreeMap<String, SinkSection>,
}

fn default_event_type_prefix() -> String {
    // The `type` prefix the README's "The event" section documents.
    "io.crbridge.resource".to_owned()
}

/// The default `dataSchema`: a URN that names group, version and kind, resolvable by no
/// network but by `crbridge schema` (a registry can be put in front with a `https://` one).
pub const DEFAULT_DATA_SCHEMA: &str = "urn:crbridge:schema:{group}:{version}:{kind}";

fn default_data_schema() -> Template {
    Template::parse(DEFAULT_DATA_SCHEMA).expect("the default dataSchema template parses")
}

/// The `dataschema` URI of a kind: `dataSchema` rendered. Only the per-kind variables are
/// allowed there (validation), so the others never occur.
pub fn data_schema_uri(
    template: &Template,
    cluster: &str,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
) -> String {
    template.render(&|var| match var {
        Var::Cluster => cluster.to_owned(),
        Var::Group => group.to_owned(),
        Var::Version => version.to_owned(),
        Var::Kind => kind.to_owned(),
        Var::Plural => plural.to_owned(),
        _ => String::new(),
    })
}

/// Reads, parses and validates the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    parse(&file, &text)
}

/// Parses and validates configuration text; `file` is only used in error messages.
pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
    if text.trim().is_empty() {
        return Err(ConfigError::invalid(
            file,
            TOP_LEVEL,
            "empty file (expected a mapping with cluster, state, watches and sinks)",
        ));
    }
    // First pass: well-formed YAML at all? Keeps syntax errors (with line and column)
    // apart from shape errors (with a key path).
    de::with_yaml(text, false, |d| IgnoredAny::deserialize(d))
        .map_err(|err| syntax_error(file, text, &err))?;
    let mut path = None;
    let config: Config = de::with_yaml(text, true, |d| {
        serde_path_to_error::deserialize(d).map_err(|err| {
            path = Some(err.path().clone());
            err.into_inner()
        })
    })
    .map_err(|err| match path.take() {
        Some(path) => {
            let segments: Vec<&Segment> = path.iter().collect();
            let message = strip_yaml_decorations(yaml_message(&err, text), &segments);
            schema_error(file, "", &path, &message, &config_field_hint)
        }
        // Failed after the document was read (a second document, say).
        None => syntax_error(file, text, &err),
    })?;
    resolve(file, config, std::env::var_os("HOME").as_deref())
}
