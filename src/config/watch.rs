//! `watches`: one entry per watched resource, the change types, initial and payload modes,
//! and the rules of one entry (the rules across entries are in `resolve`).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::error::suggestion;
use super::resolve::{is_dns_label, is_dns_subdomain};
use super::SinkSection;
use crate::diff::StatusRule;
use crate::filter::Filter;

/// One entry of `watches`: a resource kind and what to publish about it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WatchConfig {
    /// Unique watch name (used by `--watch` and as the key of its state); default
    /// `{plural}.{group}` (no `.{group}` for core), with the plural written or the one the
    /// API server derives from the kind (see [`default_plural`]).
    #[serde(default, deserialize_with = "deserialize_watch_name")]
    pub name: String,
    /// API group; `""` or absent for the core group.
    #[serde(default, deserialize_with = "deserialize_group")]
    pub group: String,
    /// API version, e.g. `v1`.
    pub version: String,
    /// Kind, e.g. `Widget`; `"*"`: every kind the group serves at `version`, also kinds
    /// installed later (a whole-group watch, [`WatchConfig::is_group`]).
    pub kind: String,
    /// Plural resource name; `None`: from discovery.
    #[serde(default)]
    pub plural: Option<String>,
    /// The clusters (names from `clusters`) to watch it in; empty: all. Once parsed,
    /// never empty.
    #[serde(default)]
    pub clusters: Vec<String>,
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
    /// Extra JSON Pointers (RFC 6901) dropped before diffing, e.g. `/spec/replicasHint`;
    /// a `*` segment matches any key or array index.
    #[serde(default)]
    pub ignore: Vec<String>,
    /// JSON Pointers (`*` segments allowed) that alone count as changes and appear in
    /// patches, outside `status`; empty: the whole object counts.
    #[serde(default)]
    pub include: Vec<String>,
    /// Whether, or which parts of, `status` count as changes (key `includeStatus`: `true`,
    /// `false`, or a list of pointers under `/status`).
    // false: status churn (conditions, timestamps) is mostly noise for consumers.
    #[serde(default, deserialize_with = "deserialize_include_status")]
    pub include_status: StatusRule,
    /// What the very first start emits.
    #[serde(default)]
    pub initial: InitialMode,
    /// What the event `data` carries.
    #[serde(default)]
    pub payload: PayloadMode,
    /// Names of the sinks this watch publishes to; default: every defined sink.
    #[serde(default, deserialize_with = "deserialize_watch_sinks")]
    pub sinks: Vec<String>,
    /// CEL expression over `type`, `object`, `oldObject` and `patch`: a change is published
    /// only when it is true (README, "Choosing what to publish"); absent: every change.
    #[serde(default)]
    pub filter: Option<String>,
    /// What a change whose filter fails to evaluate does (key `filterErrors`).
    #[serde(default)]
    pub filter_errors: FilterErrors,
    /// JSON Pointers (a `*` segment: any key or index) whose values are replaced by keyed
    /// hashes before anything is diffed, stored or published (needs `redactKey`).
    #[serde(default)]
    pub redact: Vec<String>,
    /// JSON Pointers (a `*` segment: any key or index) that alone are published in
    /// `data.object` and alone can count as changes (projection; README, "Choosing what
    /// to publish"); the identity and version fields are always kept. Absent: the whole
    /// object.
    #[serde(default, deserialize_with = "deserialize_fields")]
    pub fields: Vec<String>,
    /// How often a whole-group watch (`kind: "*"`) asks discovery for the group's kinds
    /// (key `discoveryInterval`); only with `kind: "*"`.
    // 30s: a new CRD is picked up within half a minute for one small GET per group.
    #[serde(default, deserialize_with = "deserialize_discovery_interval")]
    pub discovery_interval: Option<Duration>,
    /// `filter`, compiled by validation.
    #[serde(skip)]
    pub compiled_filter: Option<Filter>,
}

/// The `kind` of a whole-group watch.
pub const ALL_KINDS: &str = "*";

/// `discoveryInterval` when a whole-group watch does not set it.
pub const DEFAULT_DISCOVERY_INTERVAL: Duration = Duration::from_secs(30);

impl WatchConfig {
    /// True for a whole-group watch (`kind: "*"`): one scope per kind the group serves.
    pub fn is_group(&self) -> bool {
        self.kind == ALL_KINDS
    }

    /// How often a whole-group watch looks for kinds added to or removed from its group.
    pub fn discovery_interval(&self) -> Duration {
        self.discovery_interval
            .unwrap_or(DEFAULT_DISCOVERY_INTERVAL)
    }
}

fn deserialize_discovery_interval<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    let d = crbridge_sink_api::units::deserialize_duration(deserializer)?;
    if d.is_zero() {
        return Err(de::Error::custom(
            "zero (expected a positive duration, e.g. 30s)",
        ));
    }
    Ok(Some(d))
}

/// `filterErrors`: what a change does when its watch's `filter` fails on it (a missing
/// field, a type mismatch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilterErrors {
    /// Published, as without a filter.
    // Default: nothing is silently lost because an expression missed a case.
    #[default]
    Publish,
    /// Not published.
    Drop,
}

impl FilterErrors {
    /// The config spelling: `publish` or `drop`.
    pub fn as_str(self) -> &'static str {
        match self {
            FilterErrors::Publish => "publish",
            FilterErrors::Drop => "drop",
        }
    }
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
    // Default: consumers can use either without a second read (README, "The event").
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

/// `watches[].fields`: present means non-empty (absent means the whole object).
fn deserialize_fields<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let fields = Vec::<String>::deserialize(deserializer)?;
    if fields.is_empty() {
        return Err(de::Error::custom(
            "empty list (expected the pointers to publish, e.g. [/metadata/labels, /spec]; no fields key means the whole object)",
        ));
    }
    Ok(fields)
}

/// `watches[].includeStatus`: a boolean, or a list of pointers.
fn deserialize_include_status<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<StatusRule, D::Error> {
    struct Visitor;
    impl<'de> de::Visitor<'de> for Visitor {
        type Value = StatusRule;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("true, false or a list of JSON Pointers under /status")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<StatusRule, E> {
            Ok(if v {
                StatusRule::Included
            } else {
                StatusRule::Excluded
            })
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<StatusRule, A::Error> {
            let mut paths = Vec::new();
            while let Some(p) = seq.next_element::<String>()? {
                paths.push(p);
            }
            if paths.is_empty() {
                return Err(de::Error::custom(
                    "empty list (expected pointers under /status, e.g. [/status/phase]; or true / false)",
                ));
            }
            Ok(StatusRule::Only(paths))
        }
    }
    deserializer.deserialize_any(Visitor)
}

/// Syntax of one pointer (RFC 6901, `*` segments allowed): its error message if bad.
fn pointer_syntax(pointer: &str) -> Result<(), String> {
    if !pointer.starts_with('/') {
        return Err(format!(
            "invalid JSON Pointer {pointer:?} (expected RFC 6901, starting with \"/\", e.g. /spec/replicasHint)"
        ));
    }
    let bad_escape = pointer
        .split('~')
        .skip(1)
        .any(|after| !after.starts_with('0') && !after.starts_with('1'));
    if bad_escape {
        return Err(format!(
            "invalid JSON Pointer {pointer:?} (\"~\" must be followed by 0 or 1, RFC 6901)"
        ));
    }
    Ok(())
}

/// True when `pattern` (`*`: any one segment) matches `path` or a parent of it.
fn covers(pattern: &str, path: &str) -> bool {
    let (p, q): (Vec<&str>, Vec<&str>) = (pattern.split('/').collect(), path.split('/').collect());
    p.len() <= q.len() && p.iter().zip(&q).all(|(a, b)| a == b || *a == "*")
}

/// Checks a list of pointers under `key`: syntax, duplicates and `extra`'s rule.
fn check_pointers(
    key: &str,
    pointers: &[String],
    extra: impl Fn(&str) -> Option<String>,
) -> Result<(), (String, String)> {
    let mut seen = HashSet::new();
    for (i, pointer) in pointers.iter().enumerate() {
        let at = format!(".{key}[{i}]");
        pointer_syntax(pointer).map_err(|m| (at.clone(), m))?;
        if let Some(message) = extra(pointer) {
            return Err((at, message));
        }
        if !seen.insert(pointer.as_str()) {
            return Err((at, format!("duplicate pointer {pointer:?}")));
        }
    }
    Ok(())
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
pub(super) fn validate_watch(
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
    if watch.is_group() {
        validate_group_watch(watch)?;
    } else if watch.discovery_interval.is_some() {
        return Err((
            ".discoveryInterval".into(),
            format!(
                "only for a whole-group watch (kind: \"*\"); kind {:?} is resolved once",
                watch.kind
            ),
        ));
    }
    let kind_ok = watch.is_group()
        || (watch.kind.starts_with(|c: char| c.is_ascii_alphabetic())
            && watch.kind.chars().all(|c| c.is_ascii_alphanumeric()));
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
    check_pointers("ignore", &watch.ignore, |pointer| {
        PROTECTED_POINTERS
            .iter()
            .find(|p| covers(pointer, p))
            .map(|protected| {
                format!("{pointer:?} cannot be ignored ({protected} identifies the object)")
            })
    })?;
    check_pointers("include", &watch.include, |pointer| {
        covers("/status", pointer).then(|| {
            format!(
                "{pointer:?} is under /status, which includeStatus selects (e.g. includeStatus: [{pointer}])"
            )
        })
    })?;
    if let StatusRule::Only(paths) = &watch.include_status {
        check_pointers("includeStatus", paths, |pointer| {
            (!covers("/status", pointer))
                .then(|| format!("{pointer:?} is not under /status (expected e.g. /status/phase)"))
        })?;
    }
    // resourceVersion orders an object's states: a hash of it would order nothing.
    check_pointers("redact", &watch.redact, |pointer| {
        PROTECTED_POINTERS
            .iter()
            .chain(&["/metadata/resourceVersion"])
            .find(|p| covers(pointer, p))
            .map(|protected| {
                format!("{pointer:?} cannot be redacted ({protected} identifies the object)")
            })
    })?;
    check_pointers("fields", &watch.fields, |_| None)?;
    if let Some(source) = &watch.filter {
        let name = if watch.name.is_empty() {
            default_watch_name(watch)
        } else {
            watch.name.clone()
        };
        let filter = Filter::new(source).map_err(|e| {
            (
                ".filter".to_owned(),
                format!(
                    "watch {name:?}: invalid CEL expression {source:?}: {e} (expected an expression over type, object, oldObject and patch, e.g. object.spec.tier == 'prod')"
                ),
            )
        })?;
        watch.compiled_filter = Some(filter);
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

/// What only a whole-group watch must satisfy.
fn validate_group_watch(watch: &WatchConfig) -> Result<(), (String, String)> {
    if watch.group.is_empty() {
        return Err((
            ".kind".into(),
            "\"*\" needs a group (expected group: example.com; the core group's kinds are listed one by one)"
                .into(),
        ));
    }
    if watch.plural.is_some() {
        return Err((
            ".plural".into(),
            "not with kind: \"*\" (each kind's plural comes from discovery)".into(),
        ));
    }
    Ok(())
}

/// `{plural}.{group}`; no `.{group}` for the core group. A whole-group watch: `{group}`.
pub fn default_watch_name(watch: &WatchConfig) -> String {
    if watch.is_group() {
        return watch.group.clone();
    }
    let resource = watch
        .plural
        .clone()
        .unwrap_or_else(|| default_plural(&watch.kind));
    with_group(resource, &watch.group)
}

/// The name releases before 0.2 gave a watch without `name` and `plural`:
/// `{kind-lowercase}.{group}`. `None` when that is the name it has now.
pub fn legacy_default_name(watch: &WatchConfig) -> Option<String> {
    if watch.is_group() || watch.plural.is_some() || watch.name != default_watch_name(watch) {
        return None;
    }
    let legacy = with_group(watch.kind.to_lowercase(), &watch.group);
    (legacy != watch.name).then_some(legacy)
}

/// The plural the API server uses for a kind when a CRD does not say otherwise: the
/// lowercase kind with the English plural rules (`Widget` → `widgets`, `Policy` →
/// `policies`, `Ingress` → `ingresses`), as kube and client-go derive it.
pub fn default_plural(kind: &str) -> String {
    kube::core::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk("", "v1", kind)).plural
}

fn with_group(resource: String, group: &str) -> String {
    if group.is_empty() {
        resource
    } else {
        format!("{resource}.{group}")
    }
}
