//! `crbridge.yaml`: parsing and validation (DESIGN.md §5).
//!
//! [`load`] reads a file, [`parse`] parses text; both validate everything that can be
//! checked without the cluster or the brokers and fail on the first problem with a
//! one-line [`ConfigError`] of the form `{file}: {key path}: {what is wrong (expected ...)}`.
//! Unknown keys are rejected everywhere.
//!
//! Sink sections are kept untyped ([`SinkSection::raw`]): each sink crate owns its config
//! type and deserializes it with [`sink_config`], which reports errors with the same
//! `sinks.{name}.{path}` key paths.
//!
//! ```yaml
//! cluster: prod-eu-1
//! state: { path: /var/lib/crbridge, outbox: { retention: 24h, max_bytes: 2GiB } }
//! watches:
//!   - { group: example.com, version: v1, kind: Widget, sinks: [kafka] }
//! sinks:
//!   kafka: { type: kafka, brokers: "127.0.0.1:9092", topic: "crbridge.{group}.{plural}" }
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;
use serde_path_to_error::Segment;

pub use crbridge_sink_api::template::{Template, TemplateError, Var};
use crbridge_sink_api::units;
pub use crbridge_sink_api::units::{format_duration, parse_bytes, parse_duration, UnitError};

/// Why a configuration could not be loaded. Every variant displays as one line starting
/// with the file name.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file as given.
        file: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not well-formed YAML (or holds more than one document).
    #[error("{}", syntax_line(file, *line, *column, message))]
    Syntax {
        /// The file as given.
        file: String,
        /// 1-based line of the problem, when the parser knows it.
        line: Option<usize>,
        /// 1-based column of the problem, when the parser knows it.
        column: Option<usize>,
        /// The parser's description.
        message: String,
    },
    /// The YAML does not have the expected shape: missing or unknown key, wrong type,
    /// unparsable value.
    #[error("{file}: {path}: {message}")]
    Schema {
        /// The file as given.
        file: String,
        /// Key path, e.g. `watches[0].kind`.
        path: String,
        /// What is wrong and what was expected.
        message: String,
    },
    /// The values are well-typed but break a rule (charset, uniqueness, reference to an
    /// undefined sink, ...).
    #[error("{file}: {path}: {message}")]
    Invalid {
        /// The file as given.
        file: String,
        /// Key path, e.g. `watches[1].sinks[0]`.
        path: String,
        /// What is wrong and what was expected.
        message: String,
    },
}

impl ConfigError {
    /// A validation error in the common format, for sink crates that check their own
    /// section after [`sink_config`] (e.g. `invalid(file, "sinks.kafka.topic", "...")`).
    pub fn invalid(file: &str, path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            file: file.to_owned(),
            path: path.into(),
            message: message.into(),
        }
    }

    /// The file the error is about.
    pub fn file(&self) -> &str {
        match self {
            ConfigError::Read { file, .. }
            | ConfigError::Syntax { file, .. }
            | ConfigError::Schema { file, .. }
            | ConfigError::Invalid { file, .. } => file,
        }
    }

    /// The key path the error is about, when there is one.
    pub fn path(&self) -> Option<&str> {
        match self {
            ConfigError::Schema { path, .. } | ConfigError::Invalid { path, .. } => Some(path),
            ConfigError::Read { .. } | ConfigError::Syntax { .. } => None,
        }
    }
}

/// Formats [`ConfigError::Syntax`]: `{file}: line L, column C: invalid YAML: {message}`.
fn syntax_line(file: &str, line: Option<usize>, column: Option<usize>, message: &str) -> String {
    match (line, column) {
        (Some(line), Some(column)) => {
            format!("{file}: line {line}, column {column}: invalid YAML: {message}")
        }
        _ => format!("{file}: invalid YAML: {message}"),
    }
}

// ---------------------------------------------------------------------------------------
// The configuration types.
// ---------------------------------------------------------------------------------------

/// The whole `crbridge.yaml`.
///
/// It derives `Deserialize` to document the schema, but only [`parse`] and [`load`] fill
/// the derived defaults (watch names and sinks, sink names) and validate: use those.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// Cluster name used in event `source` and `id`; `[a-z0-9.-]+`.
    pub cluster: String,
    /// Kubeconfig file (`~/` expanded); absent: in-cluster, then `KUBECONFIG`, then
    /// `~/.kube/config`.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// Local durable state (sled).
    pub state: StateConfig,
    /// HTTP endpoint for metrics, health and the admin API.
    #[serde(default)]
    pub http: HttpConfig,
    /// Lease-based leader election (key `leaderElection`).
    #[serde(default)]
    pub leader_election: LeaderElectionConfig,
    /// Prefix of the CloudEvent `type` (key `eventTypePrefix`); the change type is appended.
    #[serde(default = "default_event_type_prefix")]
    pub event_type_prefix: String,
    /// The resources to watch; at least one.
    pub watches: Vec<WatchConfig>,
    /// The sinks by name; at least one. Each watch publishes to some or all of them.
    #[serde(deserialize_with = "deserialize_sinks")]
    pub sinks: BTreeMap<String, SinkSection>,
}

/// `state`: where and how crbridge keeps its durable state.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StateConfig {
    /// State directory (`~/` expanded); one crbridge process per directory.
    pub path: PathBuf,
    /// Outbox retention for `crbridge replay`.
    #[serde(default)]
    pub outbox: OutboxConfig,
    /// sled page cache size (key `cacheBytes`).
    // 64 MiB: object state lives in sled, not RAM (DESIGN §8), and sled's own 1 GiB
    // default is too much for a 2-core pod; 64 MiB keeps the hot index of 100k objects.
    #[serde(
        default = "default_cache_bytes",
        deserialize_with = "units::deserialize_bytes"
    )]
    pub cache_bytes: u64,
    /// How often sled flushes to disk (key `flushEvery`).
    // 200 ms: state, outbox and checkpoint are one transaction, so the cadence only bounds
    // how much work repeats after a crash, never correctness; sled's own default is 500 ms.
    #[serde(
        default = "default_flush_every",
        deserialize_with = "units::deserialize_duration"
    )]
    pub flush_every: Duration,
}

/// `state.outbox`: how long and how much acknowledged history is kept for replay.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OutboxConfig {
    /// Keep acknowledged events at least this long.
    // 24h: DESIGN §5's value; a consumer that lost a day can still be replayed.
    #[serde(
        default = "default_retention",
        deserialize_with = "units::deserialize_duration"
    )]
    pub retention: Duration,
    /// Outbox size cap (key `max_bytes` as in DESIGN §5, `maxBytes` also accepted); when
    /// full, watches pause and later recover by relist.
    // 2 GiB: DESIGN §5's value; fits a small PVC next to the object state.
    #[serde(
        rename = "max_bytes",
        alias = "maxBytes",
        default = "default_max_bytes",
        deserialize_with = "units::deserialize_bytes"
    )]
    pub max_bytes: u64,
}

/// `http`: the one listening socket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpConfig {
    /// `ip:port` serving `/metrics`, `/healthz`, `/readyz` and the admin API.
    // 0.0.0.0:9090: DESIGN §5; all interfaces so the kubelet probes and Prometheus reach it.
    #[serde(
        default = "default_listen",
        deserialize_with = "deserialize_socket_addr"
    )]
    pub listen: SocketAddr,
}

/// `leaderElection`: a `coordination.k8s.io` Lease so two replicas never publish at once.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LeaderElectionConfig {
    /// Whether to take the Lease before watching.
    // false: a single replica (the StatefulSet default) needs no election.
    #[serde(default)]
    pub enabled: bool,
    /// Namespace of the Lease.
    // "crbridge": DESIGN §5, the namespace of the manifests in deploy/.
    #[serde(default = "default_crbridge")]
    pub namespace: String,
    /// Name of the Lease (key `leaseName`).
    // "crbridge": DESIGN §5.
    #[serde(default = "default_crbridge")]
    pub lease_name: String,
    /// How long a Lease holds without renewal (key `leaseDuration`).
    // 15s: client-go's and kube-controller-manager's default.
    #[serde(
        default = "default_lease_duration",
        deserialize_with = "units::deserialize_duration"
    )]
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it steps down (key `renewDeadline`).
    // 10s: client-go's default; must stay below leaseDuration.
    #[serde(
        default = "default_renew_deadline",
        deserialize_with = "units::deserialize_duration"
    )]
    pub renew_deadline: Duration,
    /// Interval between acquire/renew attempts (key `retryPeriod`).
    // 2s: client-go's default.
    #[serde(
        default = "default_retry_period",
        deserialize_with = "units::deserialize_duration"
    )]
    pub retry_period: Duration,
}

/// One entry of `watches`: a resource kind and what to publish about it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WatchConfig {
    /// Unique watch name (used by `--watch`); default `{plural}.{group}`, or
    /// `{kind-lowercase}.{group}` without a plural, without the `.{group}` for core.
    #[serde(default, deserialize_with = "deserialize_watch_name")]
    pub name: String,
    /// API group; `""` or absent for the core group.
    #[serde(default, deserialize_with = "deserialize_group")]
    pub group: String,
    /// API version, e.g. `v1`.
    pub version: String,
    /// Kind, e.g. `Widget`.
    pub kind: String,
    /// Plural resource name; `None`: from discovery.
    #[serde(default)]
    pub plural: Option<String>,
    /// Namespaces to watch (DNS-1123 labels); empty: all namespaces.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Server-side label selector (key `labelSelector`).
    #[serde(default)]
    pub label_selector: Option<String>,
    /// Server-side field selector (key `fieldSelector`).
    #[serde(default)]
    pub field_selector: Option<String>,
    /// Change types to publish; non-empty, no duplicates.
    // All three: a CDC stream is complete unless the user narrows it.
    #[serde(default = "ChangeType::all", deserialize_with = "deserialize_events")]
    pub events: Vec<ChangeType>,
    /// Extra JSON Pointers (RFC 6901) dropped before diffing, e.g. `/spec/replicasHint`.
    #[serde(default)]
    pub ignore: Vec<String>,
    /// Whether `status` changes count as changes (key `includeStatus`).
    // false: status churn (conditions, timestamps) is mostly noise for consumers.
    #[serde(default)]
    pub include_status: bool,
    /// What the very first start emits.
    #[serde(default)]
    pub initial: InitialMode,
    /// What the event `data` carries.
    #[serde(default)]
    pub payload: PayloadMode,
    /// Names of the sinks this watch publishes to; default: every defined sink.
    #[serde(default, deserialize_with = "deserialize_watch_sinks")]
    pub sinks: Vec<String>,
}

/// A kind of change to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeType {
    /// The object appeared.
    Created,
    /// The object changed (after noise is dropped).
    Updated,
    /// The object went away.
    Deleted,
}

impl ChangeType {
    /// All change types, in lifecycle order.
    pub const ALL: [ChangeType; 3] = [
        ChangeType::Created,
        ChangeType::Updated,
        ChangeType::Deleted,
    ];

    /// All change types as a `Vec` (the `events` default).
    pub fn all() -> Vec<ChangeType> {
        Self::ALL.to_vec()
    }

    /// The config and CloudEvent `type` spelling: `created`, `updated`, `deleted`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Created => "created",
            ChangeType::Updated => "updated",
            ChangeType::Deleted => "deleted",
        }
    }
}

impl fmt::Display for ChangeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `initial`: what the very first start (no checkpoint yet) emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitialMode {
    /// A `snapshot` event for every existing object.
    // Default: consumers that start with the bridge get the full state.
    #[default]
    Snapshot,
    /// Nothing for existing objects; only later changes.
    Skip,
}

impl InitialMode {
    /// The config spelling: `snapshot` or `skip`.
    pub fn as_str(self) -> &'static str {
        match self {
            InitialMode::Snapshot => "snapshot",
            InitialMode::Skip => "skip",
        }
    }
}

/// `payload`: what the event `data` carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
pub enum PayloadMode {
    /// The object only.
    #[serde(rename = "full")]
    Full,
    /// The JSON Patch only.
    #[serde(rename = "patch")]
    Patch,
    /// Both the object and the JSON Patch.
    // Default (DESIGN §4): consumers can use either without a second read.
    #[default]
    #[serde(rename = "full+patch")]
    FullPatch,
}

impl PayloadMode {
    /// The config spelling: `full`, `patch` or `full+patch`.
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadMode::Full => "full",
            PayloadMode::Patch => "patch",
            PayloadMode::FullPatch => "full+patch",
        }
    }

    /// Whether `data.object` is included.
    pub fn includes_object(self) -> bool {
        matches!(self, PayloadMode::Full | PayloadMode::FullPatch)
    }

    /// Whether `data.patch` is included.
    pub fn includes_patch(self) -> bool {
        matches!(self, PayloadMode::Patch | PayloadMode::FullPatch)
    }
}

/// One entry of `sinks`, untyped: the sink crate deserializes it with [`sink_config`].
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

fn default_event_type_prefix() -> String {
    // DESIGN §4.
    "io.crbridge.resource".to_owned()
}

fn default_crbridge() -> String {
    "crbridge".to_owned()
}

fn default_cache_bytes() -> u64 {
    64 << 20
}

fn default_flush_every() -> Duration {
    Duration::from_millis(200)
}

fn default_retention() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_max_bytes() -> u64 {
    2 << 30
}

fn default_listen() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 9090))
}

fn default_lease_duration() -> Duration {
    Duration::from_secs(15)
}

fn default_renew_deadline() -> Duration {
    Duration::from_secs(10)
}

fn default_retry_period() -> Duration {
    Duration::from_secs(2)
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            retention: default_retention(),
            max_bytes: default_max_bytes(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_listen(),
        }
    }
}

impl Default for LeaderElectionConfig {
    fn default() -> Self {
        LeaderElectionConfig {
            enabled: false,
            namespace: default_crbridge(),
            lease_name: default_crbridge(),
            lease_duration: default_lease_duration(),
            renew_deadline: default_renew_deadline(),
            retry_period: default_retry_period(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Entry points.
// ---------------------------------------------------------------------------------------

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
    de::IgnoredAny::deserialize(serde_yaml_ng::Deserializer::from_str(text))
        .map_err(|err| syntax_error(file, &err))?;
    let config: Config = serde_path_to_error::deserialize(serde_yaml_ng::Deserializer::from_str(
        text,
    ))
    .map_err(|err| {
        let segments: Vec<&Segment> = err.path().iter().collect();
        let message = strip_yaml_decorations(err.inner(), &segments);
        schema_error(file, "", err.path(), &message, &config_field_hint)
    })?;
    resolve(file, config, std::env::var_os("HOME").as_deref())
}

/// Deserializes a sink's section (without its `type` key) into the sink's own config type.
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
/// Errors name the key path as `sinks.{name}.{path}`.
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

// ---------------------------------------------------------------------------------------
// Serde helpers.
// ---------------------------------------------------------------------------------------

/// `http.listen`: `ip:port` through `SocketAddr::from_str`, with a message that shows the
/// expected form.
fn deserialize_socket_addr<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<SocketAddr, D::Error> {
    struct AddrVisitor;

    impl Visitor<'_> for AddrVisitor {
        type Value = SocketAddr;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("ip:port, e.g. 0.0.0.0:9090")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<SocketAddr, E> {
            v.parse().map_err(|_| {
                E::custom(format!(
                    "invalid address {v:?} (expected ip:port, e.g. 0.0.0.0:9090 or [::]:9090)"
                ))
            })
        }
    }

    deserializer.deserialize_str(AddrVisitor)
}

/// `watches[].name`: present means non-empty (absent means derived).
fn deserialize_watch_name<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let name = String::deserialize(deserializer)?;
    if name.is_empty() {
        return Err(de::Error::custom(
            "empty (expected a watch name, or no name key for the default {plural}.{group})",
        ));
    }
    Ok(name)
}

/// `watches[].group`: null (`group:` with no value) means the core group, like `""`.
fn deserialize_group<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.unwrap_or_default())
}

/// `watches[].events`: present means non-empty (absent means all three).
fn deserialize_events<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<ChangeType>, D::Error> {
    let events = Vec::<ChangeType>::deserialize(deserializer)?;
    if events.is_empty() {
        return Err(de::Error::custom(
            "empty list (expected some of: created, updated, deleted; no events key means all three)",
        ));
    }
    Ok(events)
}

/// `watches[].sinks`: present means non-empty (absent means every sink).
fn deserialize_watch_sinks<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    let sinks = Vec::<String>::deserialize(deserializer)?;
    if sinks.is_empty() {
        return Err(de::Error::custom(
            "empty list (expected sink names; no sinks key means every defined sink)",
        ));
    }
    Ok(sinks)
}

/// `sinks`: a mapping of name to untyped section. Duplicate names are an error (plain
/// maps would silently keep the last one).
fn deserialize_sinks<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, SinkSection>, D::Error> {
    struct SinksVisitor;

    impl<'de> Visitor<'de> for SinksVisitor {
        type Value = BTreeMap<String, SinkSection>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a mapping of sink names to sink settings")
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut sinks = BTreeMap::new();
            while let Some(name) = map.next_key::<String>()? {
                if sinks.contains_key(&name) {
                    return Err(de::Error::custom(format!(
                        "duplicate sink {name:?} (each sink name may appear only once)"
                    )));
                }
                let StrictValue(raw) = map.next_value()?;
                let kind = raw
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                sinks.insert(name.clone(), SinkSection { name, kind, raw });
            }
            Ok(sinks)
        }
    }

    deserializer.deserialize_map(SinksVisitor)
}

/// Any YAML value as JSON, rejecting duplicate keys and non-finite numbers instead of
/// silently dropping data.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrictVisitor;

        impl<'de> Visitor<'de> for StrictVisitor {
            type Value = Value;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a plain YAML value (tags are not supported)")
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
                Ok(Value::Bool(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
                Ok(Value::from(v))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
                Ok(Value::from(v))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
                serde_json::Number::from_f64(v)
                    .map(Value::Number)
                    .ok_or_else(|| {
                        E::custom(format!(
                            "number {v} is not finite (expected a finite number)"
                        ))
                    })
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
                Ok(Value::String(v.to_owned()))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
                Ok(Value::String(v))
            }

            fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }

            fn visit_none<E: de::Error>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }

            fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
                StrictValue::deserialize(deserializer).map(|v| v.0)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
                let mut items = Vec::new();
                while let Some(StrictValue(item)) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Value::Array(items))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
                let mut object = serde_json::Map::new();
                while let Some(key) = map.next_key::<String>()? {
                    if object.contains_key(&key) {
                        return Err(de::Error::custom(format!(
                            "duplicate key {key:?} (each key may appear only once)"
                        )));
                    }
                    let StrictValue(value) = map.next_value()?;
                    object.insert(key, value);
                }
                Ok(Value::Object(object))
            }
        }

        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

// ---------------------------------------------------------------------------------------
// Turning serde errors into one line with a key path.
// ---------------------------------------------------------------------------------------

/// Shown as the key path of errors about the document as a whole.
const TOP_LEVEL: &str = "(top level)";

/// What a missing required key of `crbridge.yaml` should hold.
fn config_field_hint(field: &str) -> String {
    match field {
        "cluster" => "the cluster name used in event source and id, e.g. prod-eu-1",
        "state" => "a mapping with the state directory, e.g. { path: /var/lib/crbridge }",
        "path" => "the state directory, e.g. /var/lib/crbridge",
        "watches" => {
            "a list of resources to watch, e.g. [{ group: example.com, version: v1, kind: Widget }]"
        }
        "sinks" => "a mapping of sink names to settings, e.g. { kafka: { type: kafka, ... } }",
        "version" => "the API version, e.g. v1",
        "kind" => "the resource kind, e.g. Widget",
        _ => "a value: this key is required",
    }
    .to_owned()
}

/// A [`ConfigError::Syntax`] from a YAML parser error.
fn syntax_error(file: &str, err: &serde_yaml_ng::Error) -> ConfigError {
    let location = err.location();
    ConfigError::Syntax {
        file: file.to_owned(),
        line: location.as_ref().map(|l| l.line()),
        column: location.as_ref().map(|l| l.column()),
        message: strip_yaml_decorations(err, &[]),
    }
}

/// The message of a serde_yaml_ng error without the ` at line L column C` it appends and
/// the `path: ` it prepends (we print our own path).
fn strip_yaml_decorations(err: &serde_yaml_ng::Error, segments: &[&Segment]) -> String {
    let mut message = err.to_string();
    if let Some(location) = err.location() {
        for mark in [
            format!(" at line {} column {}", location.line(), location.column()),
            format!(" at position {}", location.index()),
        ] {
            if let Some(at) = message.find(&mark) {
                message.replace_range(at..at + mark.len(), "");
                break;
            }
        }
    }
    for len in (1..=segments.len()).rev() {
        let prefix = format!("{}: ", yaml_path(&segments[..len]));
        if let Some(rest) = message.strip_prefix(&prefix) {
            return rest.to_owned();
        }
    }
    message
}

/// A path as serde_yaml_ng prints it (`watches[0].kind`), to strip it from its messages.
fn yaml_path(segments: &[&Segment]) -> String {
    let mut out = String::new();
    for segment in segments {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push('?');
            }
        }
    }
    out
}

/// A map key as it appears in our key paths: bare when simple, else quoted.
fn path_key(key: &str) -> String {
    let simple = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if simple {
        key.to_owned()
    } else {
        format!("[{key:?}]")
    }
}

/// Appends a map key to a key path.
fn join_key(path: &str, key: &str) -> String {
    let key = path_key(key);
    if path.is_empty() || key.starts_with('[') {
        format!("{path}{key}")
    } else {
        format!("{path}.{key}")
    }
}

/// Renders `prefix` + serde_path_to_error segments as our key path (empty for the root).
fn key_path(prefix: &str, path: &serde_path_to_error::Path) -> String {
    let mut out = prefix.to_owned();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => out = join_key(&out, key),
            Segment::Unknown => {}
        }
    }
    out
}

/// The strings between backticks in a serde message, in order.
fn backticked(message: &str) -> Vec<&str> {
    message.split('`').skip(1).step_by(2).collect()
}

/// Serde's name for an unexpected value, in YAML words.
fn friendly_found(found: &str) -> String {
    match found {
        "unit value" => "null (empty value)".to_owned(),
        "map" => "a mapping".to_owned(),
        "sequence" => "a list".to_owned(),
        other => other.to_owned(),
    }
}

/// Serde's description of an expected type, in YAML words.
fn friendly_expected(expected: &str) -> String {
    match expected {
        "a sequence" => "a list".to_owned(),
        "a map" => "a mapping".to_owned(),
        "u8" | "u16" | "u32" | "u64" | "usize" => "a non-negative integer".to_owned(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "an integer".to_owned(),
        "a borrowed string" => "a string".to_owned(),
        other if other.starts_with("struct ") => "a mapping".to_owned(),
        other if other.starts_with("a sequence") => other.replacen("a sequence", "a list", 1),
        other => other.to_owned(),
    }
}

/// Edit distance counting an adjacent transposition as one edit (optimal string
/// alignment), for "did you mean" hints: `kafak` is one edit from `kafka`.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// `"; did you mean X?"` when a candidate is a likely typo of `word` (a few edits away,
/// or a prefix of at least three characters either way).
fn suggestion<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    let word_lower = word.to_lowercase();
    let allowed = (word_lower.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter_map(|candidate| {
            let lower = candidate.to_lowercase();
            let distance = edit_distance(&word_lower, &lower);
            let (short, long) = if word_lower.len() <= lower.len() {
                (&word_lower, &lower)
            } else {
                (&lower, &word_lower)
            };
            let prefix = short.len() >= 3 && long.starts_with(short.as_str());
            (distance <= allowed || prefix).then_some((distance, candidate))
        })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| format!("; did you mean {candidate}?"))
        .unwrap_or_default()
}

/// Builds a [`ConfigError::Schema`] from a serde message and its path, rewriting serde's
/// standard messages into `{what is wrong} (expected ...)`.
fn schema_error(
    file: &str,
    prefix: &str,
    path: &serde_path_to_error::Path,
    message: &str,
    hint: &dyn Fn(&str) -> String,
) -> ConfigError {
    let mut key = key_path(prefix, path);
    let last_key = match path.iter().next_back() {
        Some(Segment::Map { key }) => Some(key.as_str()),
        _ => None,
    };
    let text = if message.starts_with("missing field `") {
        let field = backticked(message).first().copied().unwrap_or_default();
        key = join_key(&key, field);
        format!("missing field (expected {})", hint(field))
    } else if message.starts_with("unknown field `") {
        let names = backticked(message);
        let field = names.first().copied().unwrap_or_default();
        if last_key != Some(field) {
            key = join_key(&key, field);
        }
        let expected = names.get(1..).unwrap_or_default();
        if expected.is_empty() {
            "unknown key (no keys are allowed here)".to_owned()
        } else {
            format!(
                "unknown key (expected one of: {}){}",
                expected.join(", "),
                suggestion(field, expected.iter().copied())
            )
        }
    } else if message.starts_with("duplicate field `") {
        let field = backticked(message).first().copied().unwrap_or_default();
        key = join_key(&key, field);
        "duplicate key (each key may appear only once)".to_owned()
    } else if message.starts_with("unknown variant `") {
        let names = backticked(message);
        let value = names.first().copied().unwrap_or_default();
        let expected = names.get(1..).unwrap_or_default();
        format!(
            "unknown value {value:?} (expected one of: {}){}",
            expected.join(", "),
            suggestion(value, expected.iter().copied())
        )
    } else if let Some(rest) = message.strip_prefix("invalid type: ") {
        match rest.rsplit_once(", expected ") {
            Some((found, expected)) => format!(
                "wrong type: {} (expected {})",
                friendly_found(found),
                friendly_expected(expected)
            ),
            None => message.to_owned(),
        }
    } else if let Some(rest) = message.strip_prefix("invalid value: ") {
        match rest.rsplit_once(", expected ") {
            Some((found, expected)) => format!(
                "invalid value: {} (expected {})",
                friendly_found(found),
                friendly_expected(expected)
            ),
            None => message.to_owned(),
        }
    } else {
        message.to_owned()
    };
    ConfigError::Schema {
        file: file.to_owned(),
        path: if key.is_empty() {
            TOP_LEVEL.to_owned()
        } else {
            key
        },
        message: text,
    }
}

// ---------------------------------------------------------------------------------------
// Defaults that depend on other values, and validation.
// ---------------------------------------------------------------------------------------

/// Kubernetes DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Kubernetes DNS-1123 subdomain: dot-separated labels, at most 253 characters.
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Replaces a leading `~` component with `home`.
fn expand_home(path: &Path, home: Option<&OsStr>) -> Result<PathBuf, String> {
    match path.strip_prefix("~") {
        Ok(rest) => match home {
            Some(home) if !home.is_empty() => Ok(Path::new(home).join(rest)),
            _ => Err(format!(
                "cannot expand {:?}: $HOME is not set (expected an absolute path)",
                path.display().to_string()
            )),
        },
        Err(_) => Ok(path.to_owned()),
    }
}

/// Fills the defaults that depend on other values and checks every rule serde cannot.
fn resolve(file: &str, mut config: Config, home: Option<&OsStr>) -> Result<Config, ConfigError> {
    let invalid = |path: &str, message: String| ConfigError::invalid(file, path, message);

    // cluster
    if config.cluster.is_empty() {
        return Err(invalid(
            "cluster",
            "empty (expected the cluster name used in event source and id, e.g. prod-eu-1)".into(),
        ));
    }
    if !config
        .cluster
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return Err(invalid(
            "cluster",
            format!(
                "invalid cluster name {:?} (expected lowercase letters, digits, '.' and '-', e.g. prod-eu-1)",
                config.cluster
            ),
        ));
    }

    // kubeconfig
    if let Some(kubeconfig) = &config.kubeconfig {
        if kubeconfig.as_os_str().is_empty() {
            return Err(invalid(
                "kubeconfig",
                "empty (expected a kubeconfig path, or no kubeconfig key for in-cluster / $KUBECONFIG)".into(),
            ));
        }
        config.kubeconfig =
            Some(expand_home(kubeconfig, home).map_err(|m| invalid("kubeconfig", m))?);
    }

    // eventTypePrefix
    if config.event_type_prefix.is_empty() {
        return Err(invalid(
            "eventTypePrefix",
            "empty (expected a CloudEvents type prefix, e.g. io.crbridge.resource)".into(),
        ));
    }
    if config.event_type_prefix.chars().any(char::is_whitespace) {
        return Err(invalid(
            "eventTypePrefix",
            format!(
                "invalid event type prefix {:?} (expected no spaces, e.g. io.crbridge.resource)",
                config.event_type_prefix
            ),
        ));
    }

    // state
    let state = &mut config.state;
    if state.path.as_os_str().is_empty() {
        return Err(invalid(
            "state.path",
            "empty (expected the state directory, e.g. /var/lib/crbridge)".into(),
        ));
    }
    state.path = expand_home(&state.path, home).map_err(|m| invalid("state.path", m))?;
    if state.cache_bytes == 0 {
        return Err(invalid(
            "state.cacheBytes",
            "must be greater than 0 (expected e.g. 64MiB)".into(),
        ));
    }
    if state.flush_every.is_zero() {
        return Err(invalid(
            "state.flushEvery",
            "must be greater than 0 (expected e.g. 200ms)".into(),
        ));
    }
    if state.outbox.max_bytes == 0 {
        return Err(invalid(
            "state.outbox.max_bytes",
            "must be greater than 0 (expected e.g. 2GiB)".into(),
        ));
    }

    // leaderElection
    validate_leader_election(&config.leader_election).map_err(|(path, m)| invalid(path, m))?;

    // sinks
    if config.sinks.is_empty() {
        return Err(invalid(
            "sinks",
            "empty (expected at least one sink, e.g. kafka: { type: kafka, ... })".into(),
        ));
    }
    for (name, section) in &config.sinks {
        let path = join_key("sinks", name);
        validate_sink(name, section)
            .map_err(|(suffix, m)| invalid(&format!("{path}{suffix}"), m))?;
    }

    // watches
    if config.watches.is_empty() {
        return Err(invalid(
            "watches",
            "empty (expected at least one watch, e.g. - { group: example.com, version: v1, kind: Widget })".into(),
        ));
    }
    let mut names: HashMap<String, usize> = HashMap::new();
    for (index, watch) in config.watches.iter_mut().enumerate() {
        let at = format!("watches[{index}]");
        validate_watch(watch, &config.sinks)
            .map_err(|(suffix, m)| invalid(&format!("{at}{suffix}"), m))?;
        let derived = watch.name.is_empty();
        if derived {
            watch.name = default_watch_name(watch);
        } else if !watch
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(invalid(
                &format!("{at}.name"),
                format!(
                    "invalid watch name {:?} (expected letters, digits, '.', '_' and '-')",
                    watch.name
                ),
            ));
        }
        if let Some(first) = names.get(&watch.name) {
            let origin = if derived {
                " (the default from plural/kind and group)"
            } else {
                ""
            };
            return Err(invalid(
                &format!("{at}.name"),
                format!(
                    "duplicate watch name {:?}{origin}, also used by watches[{first}] (expected unique names: set name: on one of them)",
                    watch.name
                ),
            ));
        }
        names.insert(watch.name.clone(), index);
        if watch.sinks.is_empty() {
            watch.sinks = config.sinks.keys().cloned().collect();
        }
    }
    Ok(config)
}

/// client-go's rules for leader election timings. Errors carry (path, message).
fn validate_leader_election(le: &LeaderElectionConfig) -> Result<(), (&'static str, String)> {
    if !is_dns_label(&le.namespace) {
        return Err((
            "leaderElection.namespace",
            format!(
                "invalid namespace {:?} (expected a DNS-1123 label, e.g. crbridge)",
                le.namespace
            ),
        ));
    }
    if !is_dns_subdomain(&le.lease_name) {
        return Err((
            "leaderElection.leaseName",
            format!(
                "invalid Lease name {:?} (expected a DNS-1123 subdomain, e.g. crbridge)",
                le.lease_name
            ),
        ));
    }
    if le.retry_period.is_zero() {
        return Err((
            "leaderElection.retryPeriod",
            "must be greater than 0 (expected e.g. 2s)".into(),
        ));
    }
    if le.renew_deadline >= le.lease_duration {
        return Err((
            "leaderElection.renewDeadline",
            format!(
                "{} must be shorter than leaseDuration ({}) (expected e.g. 10s with 15s)",
                format_duration(le.renew_deadline),
                format_duration(le.lease_duration)
            ),
        ));
    }
    // client-go: RenewDeadline must exceed JitterFactor (1.2) * RetryPeriod.
    if le.renew_deadline.as_millis() * 10 <= le.retry_period.as_millis() * 12 {
        return Err((
            "leaderElection.retryPeriod",
            format!(
                "{} is too long for renewDeadline {} (expected renewDeadline > 1.2 x retryPeriod, e.g. 2s with 10s)",
                format_duration(le.retry_period),
                format_duration(le.renew_deadline)
            ),
        ));
    }
    Ok(())
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

/// How a JSON value's type reads in an error message.
fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null (empty value)",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Identity of an object: ignoring any of these (or a parent) would break keys and ids.
const PROTECTED_POINTERS: [&str; 5] = [
    "/metadata/uid",
    "/metadata/name",
    "/metadata/namespace",
    "/apiVersion",
    "/kind",
];

/// Checks one watch. Errors carry (path suffix after `watches[i]`, message).
fn validate_watch(
    watch: &mut WatchConfig,
    sinks: &BTreeMap<String, SinkSection>,
) -> Result<(), (String, String)> {
    if !watch.group.is_empty() && !is_dns_subdomain(&watch.group) {
        return Err((
            ".group".into(),
            format!(
                "invalid API group {:?} (expected a lowercase DNS name such as example.com, or \"\" for the core group)",
                watch.group
            ),
        ));
    }
    if watch.version.contains('/') {
        return Err((
            ".version".into(),
            format!(
                "{:?} contains \"/\" (expected only the version, e.g. v1; the group goes in group:)",
                watch.version
            ),
        ));
    }
    let version_ok =
        watch.version.starts_with(|c: char| c.is_ascii_lowercase()) && is_dns_label(&watch.version);
    if !version_ok {
        return Err((
            ".version".into(),
            format!(
                "invalid API version {:?} (expected e.g. v1, v1beta1)",
                watch.version
            ),
        ));
    }
    let kind_ok = watch.kind.starts_with(|c: char| c.is_ascii_alphabetic())
        && watch.kind.chars().all(|c| c.is_ascii_alphanumeric());
    if !kind_ok {
        let message = if watch.kind.is_empty() {
            "empty (expected the resource kind, e.g. Widget)".to_owned()
        } else {
            format!(
                "invalid kind {:?} (expected letters and digits, e.g. Widget)",
                watch.kind
            )
        };
        return Err((".kind".into(), message));
    }
    if let Some(plural) = &watch.plural {
        if !is_dns_label(plural) {
            return Err((
                ".plural".into(),
                format!(
                    "invalid plural {plural:?} (expected a lowercase resource name, e.g. widgets)"
                ),
            ));
        }
    }
    let mut seen = HashSet::new();
    for (i, namespace) in watch.namespaces.iter().enumerate() {
        if !is_dns_label(namespace) {
            return Err((
                format!(".namespaces[{i}]"),
                format!(
                    "invalid namespace {namespace:?} (expected a DNS-1123 label: lowercase letters, digits and '-', at most 63 characters)"
                ),
            ));
        }
        if !seen.insert(namespace.as_str()) {
            return Err((
                format!(".namespaces[{i}]"),
                format!("duplicate namespace {namespace:?}"),
            ));
        }
    }
    // A blank selector selects everything: same as no selector.
    for selector in [&mut watch.label_selector, &mut watch.field_selector] {
        if selector.as_deref().is_some_and(|s| s.trim().is_empty()) {
            *selector = None;
        }
    }
    let mut seen = HashSet::new();
    for (i, event) in watch.events.iter().enumerate() {
        if !seen.insert(*event) {
            return Err((
                format!(".events[{i}]"),
                format!(
                    "duplicate {:?} (expected each of created, updated, deleted at most once)",
                    event.as_str()
                ),
            ));
        }
    }
    let mut seen = HashSet::new();
    for (i, pointer) in watch.ignore.iter().enumerate() {
        let at = format!(".ignore[{i}]");
        if !pointer.starts_with('/') {
            return Err((
                at,
                format!(
                    "invalid JSON Pointer {pointer:?} (expected RFC 6901, starting with \"/\", e.g. /spec/replicasHint)"
                ),
            ));
        }
        let bad_escape = pointer
            .split('~')
            .skip(1)
            .any(|after| !after.starts_with('0') && !after.starts_with('1'));
        if bad_escape {
            return Err((
                at,
                format!(
                    "invalid JSON Pointer {pointer:?} (\"~\" must be followed by 0 or 1, RFC 6901)"
                ),
            ));
        }
        if let Some(protected) = PROTECTED_POINTERS.iter().find(|p| {
            **p == pointer
                || p.strip_prefix(pointer.as_str())
                    .is_some_and(|r| r.starts_with('/'))
        }) {
            return Err((
                at,
                format!("{pointer:?} cannot be ignored ({protected} identifies the object)"),
            ));
        }
        if !seen.insert(pointer.as_str()) {
            return Err((at, format!("duplicate pointer {pointer:?}")));
        }
    }
    let mut seen = HashSet::new();
    for (i, sink) in watch.sinks.iter().enumerate() {
        if !sinks.contains_key(sink) {
            let defined: Vec<&str> = sinks.keys().map(String::as_str).collect();
            return Err((
                format!(".sinks[{i}]"),
                format!(
                    "unknown sink {sink:?} (defined sinks: {}){}",
                    defined.join(", "),
                    suggestion(sink, defined.iter().copied())
                ),
            ));
        }
        if !seen.insert(sink.as_str()) {
            return Err((format!(".sinks[{i}]"), format!("duplicate sink {sink:?}")));
        }
    }
    Ok(())
}

/// `{plural}.{group}`, or `{kind-lowercase}.{group}` without a plural; no `.{group}` for
/// the core group.
fn default_watch_name(watch: &WatchConfig) -> String {
    let resource = watch
        .plural
        .clone()
        .unwrap_or_else(|| watch.kind.to_lowercase());
    if watch.group.is_empty() {
        resource
    } else {
        format!("{resource}.{}", watch.group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "crbridge.yaml";

    /// DESIGN.md §5, verbatim.
    const DESIGN_EXAMPLE: &str = r#"
cluster: prod-eu-1                 # name used in source/id
kubeconfig: ~/.kube/config         # default: in-cluster, then KUBECONFIG, then ~/.kube/config
state: { path: /var/lib/crbridge, outbox: { retention: 24h, max_bytes: 2GiB } }
http: { listen: 0.0.0.0:9090 }     # /metrics /healthz /readyz
leaderElection: { enabled: false, namespace: crbridge, leaseName: crbridge }   # Lease-based, optional
watches:
  - name: widgets                  # optional; default {plural}.{group}; used by --watch
    group: example.com
    version: v1
    kind: Widget                   # plural from discovery unless given
    namespaces: [team-a, team-b]   # default: all
    labelSelector: "tier=prod"
    events: [created, updated, deleted]
    ignore: ["/spec/replicasHint"]
    includeStatus: false
    initial: snapshot              # snapshot | skip — what the very first start emits
    sinks: [kafka, nats]
sinks:
  kafka: { type: kafka, brokers: "127.0.0.1:9092", topic: "crbridge.{group}.{plural}", options: {} }
  nats:  { type: nats, url: "nats://127.0.0.1:4222", stream: CRBRIDGE, subject: "crbridge.{cluster}.{group}.{kind}.{namespace}.{name}" }
  rabbit: { type: amqp, url: "amqp://guest:guest@127.0.0.1:5672/%2f", exchange: crbridge, routingKey: "{group}.{kind}.{namespace}.{type}" }
"#;

    /// A minimal valid config whose `watches:` block is `watches`.
    fn with_watches(watches: &str) -> String {
        format!(
            "cluster: c1\nstate: {{ path: /tmp/s }}\nwatches:\n{watches}\nsinks:\n  \
             kafka: {{ type: kafka, brokers: \"b:9092\", topic: t }}\n  \
             nats: {{ type: nats, url: \"nats://x\" }}\n"
        )
    }

    /// A minimal valid config with `extra` top-level lines appended before `watches`.
    fn with_top(extra: &str) -> String {
        format!(
            "cluster: c1\nstate: {{ path: /tmp/s }}\n{extra}\nwatches:\n  - {{ version: v1, kind: Pod }}\n\
             sinks:\n  out: {{ type: stdout }}\n"
        )
    }

    fn ok(text: &str) -> Config {
        match parse(FILE, text) {
            Ok(config) => config,
            Err(err) => panic!("expected a valid config, got: {err}"),
        }
    }

    fn err(text: &str) -> String {
        match parse(FILE, text) {
            Ok(config) => panic!("expected an error, got {config:#?}"),
            Err(err) => {
                let line = err.to_string();
                assert!(!line.contains('\n'), "not one line: {line}");
                assert!(line.starts_with("crbridge.yaml: "), "{line}");
                line
            }
        }
    }

    #[track_caller]
    fn assert_contains(haystack: &str, needle: &str) {
        assert!(
            haystack.contains(needle),
            "\n  {haystack}\ndoes not contain\n  {needle}"
        );
    }

    #[test]
    fn design_example_parses_with_expected_values() {
        let c = ok(DESIGN_EXAMPLE);
        assert_eq!(c.cluster, "prod-eu-1");
        let expected_kubeconfig = match std::env::var_os("HOME") {
            Some(home) => Path::new(&home).join(".kube/config"),
            None => PathBuf::from("~/.kube/config"),
        };
        assert_eq!(c.kubeconfig, Some(expected_kubeconfig));
        assert_eq!(c.state.path, PathBuf::from("/var/lib/crbridge"));
        assert_eq!(c.state.outbox.retention, Duration::from_secs(24 * 3600));
        assert_eq!(c.state.outbox.max_bytes, 2 * 1024 * 1024 * 1024);
        assert_eq!(c.state.cache_bytes, 64 * 1024 * 1024);
        assert_eq!(c.state.flush_every, Duration::from_millis(200));
        assert_eq!(c.http.listen, "0.0.0.0:9090".parse::<SocketAddr>().unwrap());
        let le = &c.leader_election;
        assert!(!le.enabled);
        assert_eq!(
            (le.namespace.as_str(), le.lease_name.as_str()),
            ("crbridge", "crbridge")
        );
        assert_eq!(
            (le.lease_duration, le.renew_deadline, le.retry_period),
            (
                Duration::from_secs(15),
                Duration::from_secs(10),
                Duration::from_secs(2)
            )
        );
        assert_eq!(c.event_type_prefix, "io.crbridge.resource");

        assert_eq!(c.watches.len(), 1);
        let w = &c.watches[0];
        assert_eq!(w.name, "widgets");
        assert_eq!(
            (w.group.as_str(), w.version.as_str(), w.kind.as_str()),
            ("example.com", "v1", "Widget")
        );
        assert_eq!(w.plural, None);
        assert_eq!(w.namespaces, ["team-a", "team-b"]);
        assert_eq!(w.label_selector.as_deref(), Some("tier=prod"));
        assert_eq!(w.field_selector, None);
        assert_eq!(w.events, ChangeType::ALL);
        assert_eq!(w.ignore, ["/spec/replicasHint"]);
        assert!(!w.include_status);
        assert_eq!(w.initial, InitialMode::Snapshot);
        assert_eq!(w.payload, PayloadMode::FullPatch);
        assert_eq!(w.sinks, ["kafka", "nats"]);

        assert_eq!(
            c.sinks.keys().collect::<Vec<_>>(),
            ["kafka", "nats", "rabbit"]
        );
        let kafka = &c.sinks["kafka"];
        assert_eq!(
            (kafka.name.as_str(), kafka.kind.as_str()),
            ("kafka", "kafka")
        );
        assert_eq!(
            kafka.raw,
            serde_json::json!({"type": "kafka", "brokers": "127.0.0.1:9092",
                               "topic": "crbridge.{group}.{plural}", "options": {}})
        );
        assert_eq!(c.sinks["nats"].raw["stream"], "CRBRIDGE");
        assert_eq!(c.sinks["rabbit"].kind, "amqp");
        assert_eq!(
            c.sinks["rabbit"].raw["routingKey"],
            "{group}.{kind}.{namespace}.{type}"
        );
    }

    #[test]
    fn sink_section_debug_hides_values() {
        let c = ok(DESIGN_EXAMPLE);
        let debug = format!("{:?}", c.sinks["rabbit"]);
        assert_contains(&debug, "\"url\"");
        assert!(!debug.contains("guest"), "{debug}");
    }

    #[test]
    fn defaults_for_a_minimal_config() {
        let c = ok(&with_watches(
            "  - { group: example.com, version: v1, kind: Widget }",
        ));
        assert_eq!(c.kubeconfig, None);
        assert_eq!(c.http.listen, default_listen());
        assert_eq!(c.state.outbox.retention, Duration::from_secs(86_400));
        assert_eq!(c.state.outbox.max_bytes, 2 << 30);
        let w = &c.watches[0];
        assert_eq!(w.name, "widget.example.com");
        assert_eq!(w.sinks, ["kafka", "nats"], "default: every sink");
        assert_eq!(w.events, ChangeType::ALL);
        assert!(w.namespaces.is_empty());
        assert_eq!(
            (w.initial, w.payload),
            (InitialMode::Snapshot, PayloadMode::FullPatch)
        );
    }

    #[test]
    fn default_watch_names() {
        let c = ok(&with_watches(
            "  - { group: example.com, version: v1, kind: Widget, plural: widgets }\n  \
             - { version: v1, kind: ConfigMap }\n  \
             - { group: \"\", version: v1, kind: Pod, plural: pods }\n  \
             - { group: , version: v1, kind: Secret }",
        ));
        let names: Vec<&str> = c.watches.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(
            names,
            ["widgets.example.com", "configmap", "pods", "secret"]
        );
        assert_eq!(c.watches[3].group, "", "null group means core");
    }

    #[test]
    fn every_key_set_explicitly() {
        let c = ok(
            "cluster: a.b-1\nkubeconfig: /etc/kube.conf\neventTypePrefix: com.example.k8s\n\
             state: { path: /s, cacheBytes: 128MiB, flushEvery: 1s, outbox: { retention: 7d, maxBytes: 10GB } }\n\
             http: { listen: \"[::1]:8080\" }\n\
             leaderElection: { enabled: true, namespace: ops, leaseName: cr.lease, leaseDuration: 30s, renewDeadline: 20s, retryPeriod: 4s }\n\
             watches:\n  - { name: w_1, group: apps.example.com, version: v1beta1, kind: Thing, plural: things,\n      \
             namespaces: [a], labelSelector: 'x=y', fieldSelector: 'metadata.name=n', events: [deleted, created],\n      \
             ignore: ['/spec/a~1b', '/status/x'], includeStatus: true, initial: skip, payload: patch, sinks: [out] }\n\
             sinks:\n  out: { type: stdout }\n",
        );
        assert_eq!(c.kubeconfig, Some(PathBuf::from("/etc/kube.conf")));
        assert_eq!(c.event_type_prefix, "com.example.k8s");
        assert_eq!(c.state.cache_bytes, 128 << 20);
        assert_eq!(c.state.flush_every, Duration::from_secs(1));
        assert_eq!(c.state.outbox.retention, Duration::from_secs(7 * 86_400));
        assert_eq!(c.state.outbox.max_bytes, 10_000_000_000, "maxBytes alias");
        assert_eq!(c.http.listen.port(), 8080);
        let le = &c.leader_election;
        assert!(le.enabled);
        assert_eq!(
            (le.namespace.as_str(), le.lease_name.as_str()),
            ("ops", "cr.lease")
        );
        assert_eq!(le.retry_period, Duration::from_secs(4));
        let w = &c.watches[0];
        assert_eq!(w.name, "w_1");
        assert_eq!(w.plural.as_deref(), Some("things"));
        assert_eq!(w.field_selector.as_deref(), Some("metadata.name=n"));
        assert_eq!(w.events, [ChangeType::Deleted, ChangeType::Created]);
        assert!(w.include_status);
        assert_eq!(
            (w.initial, w.payload),
            (InitialMode::Skip, PayloadMode::Patch)
        );
        assert!(!w.payload.includes_object() && w.payload.includes_patch());
    }

    #[test]
    fn payload_and_change_type_spellings() {
        for (text, mode) in [
            ("full", PayloadMode::Full),
            ("patch", PayloadMode::Patch),
            ("full+patch", PayloadMode::FullPatch),
        ] {
            let c = ok(&with_watches(&format!(
                "  - {{ version: v1, kind: Pod, payload: \"{text}\" }}"
            )));
            assert_eq!(c.watches[0].payload, mode);
            assert_eq!(mode.as_str(), text);
        }
        let names: Vec<&str> = ChangeType::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(names, ["created", "updated", "deleted"]);
        assert_eq!(ChangeType::Updated.to_string(), "updated");
        assert_eq!(InitialMode::Skip.as_str(), "skip");
    }

    #[test]
    fn missing_required_keys() {
        assert_eq!(
            err(&with_watches("  - { group: example.com, version: v1 }")),
            "crbridge.yaml: watches[0].kind: missing field (expected the resource kind, e.g. Widget)"
        );
        assert_contains(
            &err("state: { path: /s }\nwatches: []\nsinks: {}"),
            "crbridge.yaml: cluster: missing field (expected the cluster name used in event source and id",
        );
        assert_contains(
            &err(&with_watches("  - { kind: Pod }")),
            "crbridge.yaml: watches[0].version: missing field (expected the API version, e.g. v1)",
        );
        assert_contains(
            &err("cluster: c\nstate: { outbox: {} }\nwatches: []\nsinks: {}"),
            "crbridge.yaml: state.path: missing field (expected the state directory",
        );
        assert_contains(
            &err("cluster: c\nstate: { path: /s }\nsinks: { out: { type: stdout } }"),
            "crbridge.yaml: watches: missing field (expected a list of resources to watch",
        );
    }

    #[test]
    fn unknown_keys_are_rejected_everywhere() {
        let line = err(&with_watches(
            "  - { version: v1, kind: Pod, includeStatuss: true }",
        ));
        assert_contains(
            &line,
            "crbridge.yaml: watches[0].includeStatuss: unknown key (expected one of: name, group, version, kind, plural,",
        );
        assert_contains(&line, "did you mean includeStatus?");
        assert_contains(
            &err(&with_top("clusterName: x")),
            "crbridge.yaml: clusterName: unknown key (expected one of: cluster, kubeconfig, state, http, leaderElection, eventTypePrefix, watches, sinks)",
        );
        let line =
            err(&with_top("").replace("path: /tmp/s", "path: /tmp/s, outbox: { retentoin: 1h }"));
        assert_contains(&line, "crbridge.yaml: state.outbox.retentoin: unknown key (expected one of: retention, maxBytes, max_bytes)");
        assert_contains(&line, "did you mean retention?");
        assert_contains(
            &err(&with_top("leaderElection: { lease: x }")),
            "crbridge.yaml: leaderElection.lease: unknown key (expected one of: enabled, namespace, leaseName,",
        );
        assert_contains(
            &err(&with_top("http: { port: 1 }")),
            "crbridge.yaml: http.port: unknown key (expected one of: listen)",
        );
    }

    #[test]
    fn unknown_sink_in_a_watch() {
        let line = err(&with_watches(
            "  - { version: v1, kind: Pod }\n  - { version: v1, kind: Secret, sinks: [kafak] }",
        ));
        assert_contains(
            &line,
            r#"crbridge.yaml: watches[1].sinks[0]: unknown sink "kafak" (defined sinks: kafka, nats)"#,
        );
        assert_contains(&line, "did you mean kafka?");
        assert_contains(
            &err(&with_watches(
                "  - { version: v1, kind: Pod, sinks: [kafka, kafka] }",
            )),
            r#"crbridge.yaml: watches[0].sinks[1]: duplicate sink "kafka""#,
        );
        assert_contains(
            &err(&with_watches("  - { version: v1, kind: Pod, sinks: [] }")),
            "crbridge.yaml: watches[0].sinks: empty list (expected sink names",
        );
    }

    #[test]
    fn bad_units() {
        assert_eq!(
            err(&with_top("").replace("path: /tmp/s", "path: /tmp/s, outbox: { retention: 24x }")),
            r#"crbridge.yaml: state.outbox.retention: invalid duration "24x" (expected e.g. 30s, 15m, 24h, 7d)"#
        );
        assert_contains(
            &err(&with_top("").replace("path: /tmp/s", "path: /tmp/s, outbox: { max_bytes: 2gb }")),
            r#"crbridge.yaml: state.outbox.max_bytes: invalid byte size "2gb" (expected e.g. 512, 64KiB, 64MiB, 2GiB)"#,
        );
        assert_contains(
            &err(&with_top("").replace("path: /tmp/s", "path: /tmp/s, flushEvery: [1]")),
            "crbridge.yaml: state.flushEvery: wrong type: a list (expected a duration such as 500ms, 30s, 15m, 24h or 7d)",
        );
        assert_contains(
            &err(&with_top("").replace(
                "path: /tmp/s",
                "path: /tmp/s, outbox: { max_bytes: 1GiB, maxBytes: 2GiB }",
            )),
            "crbridge.yaml: state.outbox.max_bytes: duplicate key",
        );
        assert_contains(
            &err(&with_top("").replace("path: /tmp/s", "path: /tmp/s, cacheBytes: 0")),
            "crbridge.yaml: state.cacheBytes: must be greater than 0",
        );
        assert_contains(
            &err(&with_top("").replace("path: /tmp/s", "path: /tmp/s, flushEvery: 0ms")),
            "crbridge.yaml: state.flushEvery: must be greater than 0",
        );
    }

    #[test]
    fn wrong_types_and_values() {
        assert_eq!(
            err(&with_watches(
                "  - { version: v1, kind: Pod, includeStatus: 3 }"
            )),
            "crbridge.yaml: watches[0].includeStatus: wrong type: integer `3` (expected a boolean)"
        );
        assert_eq!(
            err(&with_watches(
                "  - { version: v1, kind: Pod, initial: snap }"
            )),
            r#"crbridge.yaml: watches[0].initial: unknown value "snap" (expected one of: snapshot, skip); did you mean snapshot?"#
        );
        assert_contains(
            &err(&with_watches(
                "  - { version: v1, kind: Pod, payload: both }",
            )),
            r#"crbridge.yaml: watches[0].payload: unknown value "both" (expected one of: full, patch, full+patch)"#,
        );
        assert_contains(
            &err(&with_watches(
                "  - { version: v1, kind: Pod, events: [created, changed] }",
            )),
            r#"crbridge.yaml: watches[0].events[1]: unknown value "changed" (expected one of: created, updated, deleted)"#,
        );
        assert_contains(
            &err(&with_watches(
                "  - { version: v1, kind: Pod, namespaces: team-a }",
            )),
            "crbridge.yaml: watches[0].namespaces: wrong type: string \"team-a\" (expected a list)",
        );
        assert_contains(
            &err(&with_watches("  - { version: v1, kind: }")),
            "crbridge.yaml: watches[0].kind: empty (expected the resource kind, e.g. Widget)",
        );
        assert_contains(
            &err("- cluster: x"),
            "crbridge.yaml: (top level): wrong type: a list (expected a mapping)",
        );
        assert_contains(
            &err(&with_top("http: { listen: \"localhost:9090\" }")),
            r#"crbridge.yaml: http.listen: invalid address "localhost:9090" (expected ip:port, e.g. 0.0.0.0:9090"#,
        );
        assert_contains(
            &err(&with_top("http: { listen: 9090 }")),
            r#"crbridge.yaml: http.listen: invalid address "9090" (expected ip:port"#,
        );
    }

    #[test]
    fn yaml_syntax_errors_have_line_and_column() {
        let line = err("cluster: c\nwatches: [\n  { kind: A,\n");
        assert_contains(&line, "crbridge.yaml: line ");
        assert_contains(&line, ", column ");
        assert_contains(&line, ": invalid YAML: ");
        assert!(!line.contains(" at line "), "{line}");
        let line = err("cluster: c\n  bad: indent\n");
        assert_contains(&line, "crbridge.yaml: line 2, column");
        assert_contains(
            &err("cluster: a\n---\ncluster: b\n"),
            "crbridge.yaml: invalid YAML: ",
        );
        assert_eq!(
            err("  \n"),
            "crbridge.yaml: (top level): empty file (expected a mapping with cluster, state, watches and sinks)"
        );
    }

    #[test]
    fn unreadable_file() {
        let path = Path::new("/nonexistent/crbridge-config-test/crbridge.yaml");
        let line = load(path).unwrap_err().to_string();
        assert_contains(
            &line,
            "/nonexistent/crbridge-config-test/crbridge.yaml: cannot read: ",
        );
    }

    #[test]
    fn load_reads_a_file() {
        let path =
            std::env::temp_dir().join(format!("crbridge-config-test-{}.yaml", std::process::id()));
        std::fs::write(&path, DESIGN_EXAMPLE).unwrap();
        let result = load(&path);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(result.unwrap().cluster, "prod-eu-1");
        let missing = load(&path).unwrap_err();
        assert!(matches!(missing, ConfigError::Read { .. }));
        assert_eq!(missing.file(), path.display().to_string());
        assert_eq!(missing.path(), None);
    }

    #[test]
    fn top_level_rules() {
        assert_contains(
            &err(&with_top("").replace("cluster: c1", "cluster: Prod EU")),
            r#"crbridge.yaml: cluster: invalid cluster name "Prod EU" (expected lowercase letters, digits, '.' and '-'"#,
        );
        assert_contains(
            &err(&with_top("").replace("cluster: c1", "cluster: ''")),
            "crbridge.yaml: cluster: empty (expected",
        );
        assert_contains(
            &err(&with_top("eventTypePrefix: io crbridge")),
            r#"crbridge.yaml: eventTypePrefix: invalid event type prefix "io crbridge" (expected no spaces"#,
        );
        assert_contains(
            &err(&with_top("eventTypePrefix: ''")),
            "crbridge.yaml: eventTypePrefix: empty (expected",
        );
        assert_contains(
            &err(&with_top("").replace("path: /tmp/s", "path: ''")),
            "crbridge.yaml: state.path: empty (expected the state directory",
        );
        assert_contains(
            &err("cluster: c\nstate: { path: /s }\nwatches: []\nsinks: { out: { type: stdout } }"),
            "crbridge.yaml: watches: empty (expected at least one watch",
        );
        assert_contains(
            &err(
                "cluster: c\nstate: { path: /s }\nwatches: [{ version: v1, kind: Pod }]\nsinks: {}",
            ),
            "crbridge.yaml: sinks: empty (expected at least one sink",
        );
    }

    #[test]
    fn leader_election_rules() {
        assert_contains(
            &err(&with_top("leaderElection: { leaseDuration: 10s, renewDeadline: 10s }")),
            "crbridge.yaml: leaderElection.renewDeadline: 10s must be shorter than leaseDuration (10s)",
        );
        assert_contains(
            &err(&with_top(
                "leaderElection: { renewDeadline: 2s, retryPeriod: 2s }",
            )),
            "crbridge.yaml: leaderElection.retryPeriod: 2s is too long for renewDeadline 2s",
        );
        assert_contains(
            &err(&with_top("leaderElection: { namespace: Ops }")),
            r#"crbridge.yaml: leaderElection.namespace: invalid namespace "Ops""#,
        );
        assert_contains(
            &err(&with_top("leaderElection: { leaseName: a_b }")),
            r#"crbridge.yaml: leaderElection.leaseName: invalid Lease name "a_b""#,
        );
    }

    #[test]
    fn sink_section_rules() {
        let text = |sinks: &str| {
            format!("cluster: c\nstate: {{ path: /s }}\nwatches: [{{ version: v1, kind: Pod }}]\nsinks:\n{sinks}")
        };
        assert_eq!(
            err(&text("  kafka: { brokers: x }")),
            "crbridge.yaml: sinks.kafka.type: missing field (expected one of: kafka, nats, amqp, stdout)"
        );
        assert_eq!(
            err(&text("  k: { type: kafak }")),
            r#"crbridge.yaml: sinks.k.type: unknown sink type "kafak" (expected one of: kafka, nats, amqp, stdout); did you mean kafka?"#
        );
        assert_contains(
            &err(&text("  k: { type: 3 }")),
            "crbridge.yaml: sinks.k.type: wrong type: a number (expected one of: kafka,",
        );
        assert_contains(
            &err(&text("  Kafka: { type: kafka }")),
            r#"crbridge.yaml: sinks.Kafka: invalid sink name "Kafka" (expected lowercase letters, digits, '_' and '-')"#,
        );
        assert_contains(
            &err(&text("  \"my sink\": { type: kafka }")),
            r#"crbridge.yaml: sinks["my sink"]: invalid sink name "my sink""#,
        );
        assert_contains(
            &err(&text("  k: kafka")),
            "crbridge.yaml: sinks.k: wrong type: a string (expected a mapping with a type key",
        );
        assert_contains(
            &err(&text("  k: { type: stdout }\n  k: { type: kafka }")),
            r#"crbridge.yaml: sinks: duplicate sink "k""#,
        );
        assert_contains(
            &err(&text("  k: { type: kafka, topic: a, topic: b }")),
            r#"crbridge.yaml: sinks.k: duplicate key "topic""#,
        );
        assert_contains(
            &err(&text("  k: { type: kafka, options: { x: .inf } }")),
            "crbridge.yaml: sinks.k.options.x: number inf is not finite",
        );
        assert_contains(
            &err(&text("  k: { type: kafka, x: !tag 1 }")),
            "crbridge.yaml: sinks.k.x: wrong type: enum (expected a plain YAML value (tags are not supported))",
        );
    }

    #[test]
    fn watch_rules() {
        let w = |watch: &str| err(&with_watches(&format!("  - {{ {watch} }}")));
        assert_contains(
            &w("group: Example.com, version: v1, kind: W"),
            r#"crbridge.yaml: watches[0].group: invalid API group "Example.com""#,
        );
        assert_contains(
            &w("group: example.com, version: example.com/v1, kind: W"),
            r#"crbridge.yaml: watches[0].version: "example.com/v1" contains "/" (expected only the version, e.g. v1"#,
        );
        assert_contains(
            &w("version: V1, kind: W"),
            r#"crbridge.yaml: watches[0].version: invalid API version "V1""#,
        );
        assert_contains(
            &w("version: v1, kind: ''"),
            "crbridge.yaml: watches[0].kind: empty (expected the resource kind",
        );
        assert_contains(
            &w("version: v1, kind: my-kind"),
            r#"crbridge.yaml: watches[0].kind: invalid kind "my-kind""#,
        );
        assert_contains(
            &w("version: v1, kind: W, plural: Ws"),
            r#"crbridge.yaml: watches[0].plural: invalid plural "Ws""#,
        );
        assert_contains(
            &w("name: '', version: v1, kind: W"),
            "crbridge.yaml: watches[0].name: empty (expected a watch name",
        );
        assert_contains(
            &w("name: 'a b', version: v1, kind: W"),
            r#"crbridge.yaml: watches[0].name: invalid watch name "a b""#,
        );
        assert_contains(
            &w("version: v1, kind: W, namespaces: [ok, Team_A]"),
            r#"crbridge.yaml: watches[0].namespaces[1]: invalid namespace "Team_A" (expected a DNS-1123 label"#,
        );
        assert_contains(
            &w("version: v1, kind: W, namespaces: [a, a]"),
            r#"crbridge.yaml: watches[0].namespaces[1]: duplicate namespace "a""#,
        );
        assert_contains(
            &w("version: v1, kind: W, events: [created, created]"),
            r#"crbridge.yaml: watches[0].events[1]: duplicate "created""#,
        );
        assert_contains(
            &w("version: v1, kind: W, events: []"),
            "crbridge.yaml: watches[0].events: empty list (expected some of: created, updated, deleted",
        );
    }

    #[test]
    fn ignore_pointer_rules() {
        let w = |ignore: &str| {
            err(&with_watches(&format!(
                "  - {{ version: v1, kind: W, ignore: [{ignore}] }}"
            )))
        };
        assert_contains(
            &w("''"),
            r#"crbridge.yaml: watches[0].ignore[0]: invalid JSON Pointer "" (expected RFC 6901, starting with "/""#,
        );
        assert_contains(
            &w("spec/x"),
            r#"crbridge.yaml: watches[0].ignore[0]: invalid JSON Pointer "spec/x""#,
        );
        assert_contains(
            &w("/a~2b"),
            r#"invalid JSON Pointer "/a~2b" ("~" must be followed by 0 or 1"#,
        );
        assert_contains(&w("/a~"), r#"invalid JSON Pointer "/a~""#);
        for protected in [
            "/metadata/uid",
            "/metadata/name",
            "/metadata/namespace",
            "/metadata",
            "/kind",
        ] {
            assert_contains(
                &w(protected),
                &format!("crbridge.yaml: watches[0].ignore[0]: {protected:?} cannot be ignored"),
            );
        }
        assert_contains(
            &w("/spec/x, /spec/x"),
            r#"watches[0].ignore[1]: duplicate pointer "/spec/x""#,
        );
        let c = ok(&with_watches(
            "  - { version: v1, kind: W, ignore: ['/metadata/labels/x', '/metadata/names', '/'] }",
        ));
        assert_eq!(c.watches[0].ignore.len(), 3);
    }

    #[test]
    fn watch_names_must_be_unique() {
        let line = err(&with_watches(
            "  - { group: example.com, version: v1, kind: Widget }\n  - { group: example.com, version: v2, kind: Widget }",
        ));
        assert_contains(
            &line,
            r#"crbridge.yaml: watches[1].name: duplicate watch name "widget.example.com" (the default from plural/kind and group), also used by watches[0]"#,
        );
        assert_contains(
            &err(&with_watches("  - { name: a, version: v1, kind: Pod }\n  - { name: a, version: v1, kind: Secret }")),
            r#"crbridge.yaml: watches[1].name: duplicate watch name "a", also used by watches[0]"#,
        );
    }

    #[test]
    fn blank_selectors_mean_none() {
        let c = ok(&with_watches(
            "  - { version: v1, kind: W, labelSelector: '', fieldSelector: ' ' }",
        ));
        assert_eq!(
            (
                c.watches[0].label_selector.as_deref(),
                c.watches[0].field_selector.as_deref()
            ),
            (None, None)
        );
    }

    #[test]
    fn home_expansion() {
        let home = Some(OsStr::new("/home/me"));
        assert_eq!(
            expand_home(Path::new("~/.kube/config"), home),
            Ok(PathBuf::from("/home/me/.kube/config"))
        );
        assert_eq!(
            expand_home(Path::new("~"), home),
            Ok(PathBuf::from("/home/me"))
        );
        assert_eq!(
            expand_home(Path::new("/abs/~/x"), home),
            Ok(PathBuf::from("/abs/~/x"))
        );
        assert_eq!(
            expand_home(Path::new("~other/x"), home),
            Ok(PathBuf::from("~other/x"))
        );
        assert!(expand_home(Path::new("~/x"), None)
            .unwrap_err()
            .contains("$HOME is not set"));
        let c = resolve(FILE, ok_raw(&with_top("kubeconfig: ~/k")), home).unwrap();
        assert_eq!(c.kubeconfig, Some(PathBuf::from("/home/me/k")));
        let line = resolve(FILE, ok_raw(&with_top("kubeconfig: ~/k")), None)
            .unwrap_err()
            .to_string();
        assert_contains(
            &line,
            r#"crbridge.yaml: kubeconfig: cannot expand "~/k": $HOME is not set"#,
        );
    }

    /// Deserialized but not resolved, to drive `resolve` with a chosen $HOME.
    fn ok_raw(text: &str) -> Config {
        serde_yaml_ng::from_str(text).unwrap()
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct KafkaTestConfig {
        brokers: String,
        topic: Template,
        #[serde(default)]
        options: BTreeMap<String, String>,
    }

    #[test]
    fn sink_config_deserializes_without_type() {
        let c = ok(DESIGN_EXAMPLE);
        let kafka: KafkaTestConfig = sink_config(FILE, &c.sinks["kafka"]).unwrap();
        assert_eq!(kafka.brokers, "127.0.0.1:9092");
        assert_eq!(
            kafka.topic.vars().collect::<Vec<_>>(),
            [Var::Group, Var::Plural]
        );
        assert!(kafka.options.is_empty());
        // The original section still has its type.
        assert_eq!(c.sinks["kafka"].raw["type"], "kafka");
    }

    #[test]
    fn sink_config_errors_have_sink_paths() {
        let c = ok(DESIGN_EXAMPLE);
        let line = sink_config::<KafkaTestConfig>(FILE, &c.sinks["nats"])
            .unwrap_err()
            .to_string();
        assert_eq!(
            line,
            "crbridge.yaml: sinks.nats.stream: unknown key (expected one of: brokers, topic, options)"
        );
        let mut section = c.sinks["kafka"].clone();
        section.raw["topic"] = "t.{grp}".into();
        let line = sink_config::<KafkaTestConfig>(FILE, &section)
            .unwrap_err()
            .to_string();
        assert_contains(&line, "crbridge.yaml: sinks.kafka.topic: unknown variable {grp} at character 3 (allowed variables: cluster,");
        section.raw["options"] = serde_json::json!({"acks": 1});
        section.raw["topic"] = "t".into();
        let line = sink_config::<KafkaTestConfig>(FILE, &section)
            .unwrap_err()
            .to_string();
        assert_eq!(
            line,
            "crbridge.yaml: sinks.kafka.options.acks: wrong type: integer `1` (expected a string)"
        );
        section.raw["options"] = serde_json::json!({});
        section.raw.as_object_mut().unwrap().remove("brokers");
        let line = sink_config::<KafkaTestConfig>(FILE, &section)
            .unwrap_err()
            .to_string();
        assert_eq!(line, "crbridge.yaml: sinks.kafka.brokers: missing field (expected a value: required by the kafka sink)");
    }

    #[test]
    fn config_error_accessors() {
        let e = parse(FILE, &with_watches("  - { version: v1 }")).unwrap_err();
        assert_eq!(e.file(), FILE);
        assert_eq!(e.path(), Some("watches[0].kind"));
        let e = ConfigError::invalid(FILE, "sinks.kafka.topic", "bad");
        assert_eq!(e.to_string(), "crbridge.yaml: sinks.kafka.topic: bad");
    }

    #[test]
    fn edit_distance_and_suggestions() {
        assert_eq!(edit_distance("kafak", "kafka"), 1);
        assert_eq!(edit_distance("includeStatuss", "includeStatus"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(
            suggestion("nats2", ["nats", "kafka"]),
            "; did you mean nats?"
        );
        assert_eq!(suggestion("zzzzz", ["nats", "kafka"]), "");
        assert_eq!(
            suggestion("snap", ["snapshot", "skip"]),
            "; did you mean snapshot?"
        );
        assert_eq!(
            suggestion("kafak", ["kafka", "nats"]),
            "; did you mean kafka?"
        );
    }
}
