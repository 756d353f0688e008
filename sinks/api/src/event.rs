use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// What happened to the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// The object appeared.
    Created,
    /// The object's meaningful content changed.
    Updated,
    /// The object is gone.
    Deleted,
    /// The object's current state, emitted on request or on first start.
    Snapshot,
}

impl ChangeKind {
    /// The lower-case name used in event types and templates.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Created => "created",
            ChangeKind::Updated => "updated",
            ChangeKind::Deleted => "deleted",
            ChangeKind::Snapshot => "snapshot",
        }
    }
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A CloudEvents extension attribute value (the spec's `String`, `Boolean`, `Integer`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Extension {
    /// A string value.
    String(String),
    /// A boolean value (`true` / `false` in headers).
    Bool(bool),
    /// An integer value.
    Integer(i64),
}

impl Extension {
    /// The value as a binary-mode header carries it.
    pub fn to_header_value(&self) -> Cow<'_, str> {
        match self {
            Extension::String(s) => Cow::Borrowed(s),
            Extension::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            Extension::Integer(i) => Cow::Owned(i.to_string()),
        }
    }
}

/// The values a sink's routing template (`{cluster}`, `{group}`, ...) is filled from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Cluster name from the config.
    pub cluster: String,
    /// API group, empty for the core group.
    pub group: String,
    /// API version.
    pub version: String,
    /// Kind, e.g. `Widget`.
    pub kind: String,
    /// Resource plural, e.g. `widgets`.
    pub plural: String,
    /// Namespace, empty for cluster-scoped objects.
    pub namespace: String,
    /// Object name.
    pub name: String,
    /// The change.
    pub change: ChangeKind,
    /// Object uid: the per-object ordering key (Kafka record key, CloudEvents partitionkey).
    pub uid: String,
}

impl Route {
    /// The unescaped value of a template variable.
    pub fn value(&self, var: crate::template::Var) -> &str {
        use crate::template::Var;
        match var {
            Var::Cluster => &self.cluster,
            Var::Group => &self.group,
            Var::Version => &self.version,
            Var::Kind => &self.kind,
            Var::Plural => &self.plural,
            Var::Namespace => &self.namespace,
            Var::Name => &self.name,
            Var::Type => self.change.as_str(),
        }
    }
}

/// One CloudEvent (spec 1.0) as crbridge stores it in the outbox and hands it to sinks.
///
/// All attribute values are fixed when the event is built, so a re-send after a crash or
/// a replay carries exactly the same attributes, `id` included.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// Deterministic id (cluster, uid, resourceVersion, change).
    pub id: String,
    /// `/clusters/{cluster}/apis/{group}/{version}/{plural}`.
    pub source: String,
    /// `{prefix}.{change}`.
    #[serde(rename = "type")]
    pub ty: String,
    /// `{namespace}/{name}`, or `{name}` for cluster-scoped objects.
    pub subject: String,
    /// When the bridge observed the change (RFC 3339).
    pub time: String,
    /// Extension attributes in a stable order, and the optional attribute `dataschema`
    /// when set (every binding maps it like an extension: a header, a JSON member).
    pub extensions: Vec<(String, Extension)>,
    /// The JSON payload, kept verbatim.
    pub data: Box<RawValue>,
    /// Routing fields for sink templates.
    pub route: Route,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.source == other.source
            && self.ty == other.ty
            && self.subject == other.subject
            && self.time == other.time
            && self.extensions == other.extensions
            && self.data.get() == other.data.get()
            && self.route == other.route
    }
}

impl Event {
    /// The CloudEvents spec version crbridge emits.
    pub const SPEC_VERSION: &'static str = "1.0";
    /// The content type of `data`.
    pub const DATA_CONTENT_TYPE: &'static str = "application/json";
    /// The content type of a structured-mode message.
    pub const STRUCTURED_CONTENT_TYPE: &'static str = "application/cloudevents+json";

    /// Every context attribute except `datacontenttype` (which bindings map to their own
    /// content-type field) as name / value pairs, in a stable order: what a binary-mode
    /// binding writes as `ce_*` / `ce-*` / `cloudEvents:*` headers.
    pub fn attributes(&self) -> impl Iterator<Item = (&str, Cow<'_, str>)> {
        [
            ("specversion", Cow::Borrowed(Self::SPEC_VERSION)),
            ("id", Cow::Borrowed(self.id.as_str())),
            ("source", Cow::Borrowed(self.source.as_str())),
            ("type", Cow::Borrowed(self.ty.as_str())),
            ("subject", Cow::Borrowed(self.subject.as_str())),
            ("time", Cow::Borrowed(self.time.as_str())),
        ]
        .into_iter()
        .chain(
            self.extensions
                .iter()
                .map(|(k, v)| (k.as_str(), v.to_header_value())),
        )
    }

    /// The value of an extension attribute.
    pub fn extension(&self, name: &str) -> Option<&Extension> {
        self.extensions
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// The event in the CloudEvents JSON format (structured mode), one JSON object.
    pub fn to_structured_json(&self) -> Vec<u8> {
        let mut map = serde_json::Map::new();
        map.insert("specversion".into(), Self::SPEC_VERSION.into());
        map.insert("id".into(), self.id.clone().into());
        map.insert("source".into(), self.source.clone().into());
        map.insert("type".into(), self.ty.clone().into());
        map.insert("subject".into(), self.subject.clone().into());
        map.insert("time".into(), self.time.clone().into());
        map.insert("datacontenttype".into(), Self::DATA_CONTENT_TYPE.into());
        for (k, v) in &self.extensions {
            let value = match v {
                Extension::String(s) => s.clone().into(),
                Extension::Bool(b) => (*b).into(),
                Extension::Integer(i) => (*i).into(),
            };
            map.insert(k.clone(), value);
        }
        // `data` is valid JSON by construction; re-reading it keeps this function infallible
        // for callers while the outbox keeps the raw text.
        let data: serde_json::Value =
            serde_json::from_str(self.data.get()).unwrap_or(serde_json::Value::Null);
        map.insert("data".into(), data);
        serde_json::to_vec(&serde_json::Value::Object(map)).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        Event {
            id: "abc".into(),
            source: "/clusters/c/apis/example.com/v1/widgets".into(),
            ty: "io.crbridge.resource.created".into(),
            subject: "ns/w".into(),
            time: "2026-01-01T00:00:00Z".into(),
            extensions: vec![
                ("partitionkey".into(), Extension::String("uid-1".into())),
                ("crbinferred".into(), Extension::Bool(false)),
            ],
            data: RawValue::from_string(r#"{"object":{"a":1}}"#.into()).unwrap(),
            route: Route {
                cluster: "c".into(),
                group: "example.com".into(),
                version: "v1".into(),
                kind: "Widget".into(),
                plural: "widgets".into(),
                namespace: "ns".into(),
                name: "w".into(),
                change: ChangeKind::Created,
                uid: "uid-1".into(),
            },
        }
    }

    #[test]
    fn attributes_list_required_then_extensions_as_strings() {
        let e = event();
        let attrs: Vec<(String, String)> = e
            .attributes()
            .map(|(k, v)| (k.to_string(), v.into_owned()))
            .collect();
        assert_eq!(attrs[0], ("specversion".into(), "1.0".into()));
        assert_eq!(attrs[1], ("id".into(), "abc".into()));
        assert!(attrs.contains(&("crbinferred".into(), "false".into())));
    }

    #[test]
    fn structured_json_keeps_typed_extensions_and_data() {
        let v: serde_json::Value = serde_json::from_slice(&event().to_structured_json()).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["datacontenttype"], "application/json");
        assert_eq!(v["crbinferred"], false);
        assert_eq!(v["data"]["object"]["a"], 1);
    }

    #[test]
    fn dataschema_maps_like_an_attribute_in_both_modes() {
        let mut e = event();
        e.extensions.insert(
            0,
            (
                "dataschema".into(),
                Extension::String("urn:crbridge:schema:example.com:v1:Widget".into()),
            ),
        );
        assert!(e
            .attributes()
            .any(|(k, v)| k == "dataschema" && v == "urn:crbridge:schema:example.com:v1:Widget"));
        let v: serde_json::Value = serde_json::from_slice(&e.to_structured_json()).unwrap();
        assert_eq!(v["dataschema"], "urn:crbridge:schema:example.com:v1:Widget");
    }

    #[test]
    fn outbox_round_trip_is_lossless() {
        let e = event();
        let bytes = serde_json::to_vec(&e).unwrap();
        let back: Event = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, e);
    }
}
