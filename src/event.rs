//! Building CloudEvents from changes: pure, no I/O.
//!
//! Every attribute is computed from the change itself and from the moment it was observed,
//! and stored with the event in the outbox, so a re-send carries identical attributes. The
//! `id` is a hash of cluster, uid, resourceVersion and change kind: the same change observed
//! twice (after a crash, a relist, a replay) gets the same id, so consumers and brokers can
//! drop the duplicate.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use crbridge_sink_api::{ChangeKind, Event, Extension, Route};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tracing::warn;

use crate::config::PayloadMode;

/// A change that cannot be turned into an event.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The object lacks a field every Kubernetes object has.
    #[error("object has no metadata.{0}")]
    MissingField(&'static str),
    /// Serializing the payload failed (cannot happen for values parsed from JSON).
    #[error("serializing event data")]
    Serialize(#[source] serde_json::Error),
}

/// What is fixed per watched kind: where its events come from and how they are shaped.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Cluster name from the config.
    pub cluster: String,
    /// Event type prefix, e.g. `io.crbridge.resource`.
    pub type_prefix: String,
    /// API group, empty for the core group.
    pub group: String,
    /// API version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Resource plural.
    pub plural: String,
    /// Which parts of the change go into `data`.
    pub payload: PayloadMode,
    /// The `dataschema` attribute: the URI of the JSON Schema of `data` for this kind
    /// (`dataSchema` rendered, [`crate::config::data_schema_uri`]); empty: none sent.
    pub dataschema: String,
}

impl Identity {
    /// `/clusters/{cluster}/apis/{group}/{version}/{plural}`, or `/api/{version}/...` for core.
    pub fn source(&self) -> String {
        if self.group.is_empty() {
            format!(
                "/clusters/{}/api/{}/{}",
                self.cluster, self.version, self.plural
            )
        } else {
            format!(
                "/clusters/{}/apis/{}/{}/{}",
                self.cluster, self.group, self.version, self.plural
            )
        }
    }
}

/// One observed change of one object.
#[derive(Debug, Clone)]
pub struct Change<'a> {
    /// Created, updated, deleted or snapshot.
    pub kind: ChangeKind,
    /// The clean object: the new one, or the last known one for a delete.
    pub object: &'a Value,
    /// `object` serialized, when the caller has it already (it is then not serialized again).
    pub object_json: Option<&'a RawValue>,
    /// The resourceVersion this change is identified by (of the deletion when the server
    /// reported one, else the last known).
    pub resource_version: &'a str,
    /// The patch from the previously published object (updates only), between the
    /// normalized forms (`diff::Rules::diff`).
    pub patch: Option<&'a json_patch::Patch>,
    /// The resourceVersion of the previously published object.
    pub previous_resource_version: Option<&'a str>,
    /// True when reconstructed by a relist rather than seen on the watch.
    pub inferred: bool,
    /// Field manager of the change.
    pub changed_by: Option<&'a str>,
    /// When the bridge observed it.
    pub observed: SystemTime,
    /// For an on-demand snapshot: the request's id, part of the event id, so a second
    /// snapshot of an unchanged object is not dropped as a duplicate of the first.
    pub snapshot_id: Option<&'a str>,
}

impl<'a> Change<'a> {
    /// A change of `kind` to `object` at `resource_version`, observed at `observed`; every
    /// other field starts empty (no patch, no previous version, not inferred) and is set
    /// with the `with_*` methods.
    pub fn new(
        kind: ChangeKind,
        object: &'a Value,
        resource_version: &'a str,
        observed: SystemTime,
    ) -> Self {
        Change {
            kind,
            object,
            object_json: None,
            resource_version,
            patch: None,
            previous_resource_version: None,
            inferred: false,
            changed_by: None,
            observed,
            snapshot_id: None,
        }
    }

    /// `object` already serialized.
    #[must_use]
    pub fn with_object_json(mut self, json: &'a RawValue) -> Self {
        self.object_json = Some(json);
        self
    }

    /// The patch from the previously published object (between normalized forms).
    #[must_use]
    pub fn with_patch(mut self, patch: Option<&'a json_patch::Patch>) -> Self {
        self.patch = patch;
        self
    }

    /// The resourceVersion of the previously published object.
    #[must_use]
    pub fn with_previous(mut self, resource_version: Option<&'a str>) -> Self {
        self.previous_resource_version = resource_version;
        self
    }

    /// Whether a relist reconstructed the change.
    #[must_use]
    pub fn with_inferred(mut self, inferred: bool) -> Self {
        self.inferred = inferred;
        self
    }

    /// The field manager of the change.
    #[must_use]
    pub fn with_changed_by(mut self, manager: Option<&'a str>) -> Self {
        self.changed_by = manager;
        self
    }

    /// The on-demand snapshot request the change belongs to.
    #[must_use]
    pub fn with_snapshot_id(mut self, id: &'a str) -> Self {
        self.snapshot_id = Some(id);
        self
    }
}

/// The deterministic event id: hex of SHA-256 over cluster, uid, resourceVersion and kind
/// (first 128 bits, 32 hex characters).
pub fn event_id(cluster: &str, uid: &str, resource_version: &str, kind: ChangeKind) -> String {
    salted_event_id(cluster, uid, resource_version, kind, None)
}

/// [`event_id`] with an extra input (an on-demand snapshot's request id).
pub fn salted_event_id(
    cluster: &str,
    uid: &str,
    resource_version: &str,
    kind: ChangeKind,
    salt: Option<&str>,
) -> String {
    let mut h = Sha256::new();
    for part in [cluster, uid, resource_version, kind.as_str()]
        .into_iter()
        .chain(salt)
    {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(32);
    for b in &h.finalize()[..16] {
        id.push(HEX[(b >> 4) as usize] as char);
        id.push(HEX[(b & 15) as usize] as char);
    }
    id
}

/// Digits in a `sequence`: a resourceVersion of up to 20 digits covers every u64 (etcd's
/// revisions are int64).
pub const SEQUENCE_DIGITS: usize = 20;

/// Set once a resourceVersion that cannot be padded has been logged.
static UNPADDED_WARNED: AtomicBool = AtomicBool::new(false);

/// The `sequence` extension for `resource_version`: the resourceVersion zero-padded to
/// [`SEQUENCE_DIGITS`] digits, so that string order is numeric order (the CloudEvents
/// sequence extension compares values as strings) while the value stays numerically equal.
///
/// resourceVersions are opaque strings to Kubernetes clients; every API server backed by
/// etcd sends decimal revisions, but another storage may not. One that is not all ASCII
/// digits, or longer than 20 digits, is sent as it is (its order is then the server's
/// business) and logged once per process at WARN.
pub fn sequence(resource_version: &str) -> String {
    let digits = !resource_version.is_empty()
        && resource_version.len() <= SEQUENCE_DIGITS
        && resource_version.bytes().all(|b| b.is_ascii_digit());
    if digits {
        return format!("{resource_version:0>SEQUENCE_DIGITS$}");
    }
    if !UNPADDED_WARNED.swap(true, Ordering::Relaxed) {
        warn!(
            resource_version,
            "resourceVersion is not a decimal of at most 20 digits: sent unpadded as the \
             event's sequence, which then may not sort in order (logged once)"
        );
    }
    resource_version.to_string()
}

/// Builds the CloudEvent for `change` of an object of kind `who`.
pub fn build(who: &Identity, change: &Change<'_>) -> Result<Event, EventError> {
    let meta = change.object.get("metadata");
    let field = |name: &'static str| {
        meta.and_then(|m| m.get(name))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let uid = field("uid").ok_or(EventError::MissingField("uid"))?;
    let name = field("name").ok_or(EventError::MissingField("name"))?;
    let namespace = field("namespace").unwrap_or_default();
    let generation = meta
        .and_then(|m| m.get("generation"))
        .and_then(Value::as_i64);

    let subject = if namespace.is_empty() {
        name.clone()
    } else {
        format!("{namespace}/{name}")
    };
    let mut extensions = Vec::with_capacity(13);
    if !who.dataschema.is_empty() {
        // An optional CloudEvents attribute, not an extension; it travels in the same list
        // because every binding maps both the same way (a `ce_` header, a JSON member)
        // and the outbox keeps the list as it is.
        extensions.push((
            "dataschema".to_string(),
            Extension::String(who.dataschema.clone()),
        ));
    }
    extensions.extend([
        ("partitionkey".to_string(), Extension::String(uid.clone())),
        (
            "sequence".to_string(),
            Extension::String(sequence(change.resource_version)),
        ),
        ("crbgroup".to_string(), Extension::String(who.group.clone())),
        (
            "crbversion".to_string(),
            Extension::String(who.version.clone()),
        ),
        ("crbkind".to_string(), Extension::String(who.kind.clone())),
        (
            "crbnamespace".to_string(),
            Extension::String(namespace.clone()),
        ),
        ("crbname".to_string(), Extension::String(name.clone())),
        ("crbuid".to_string(), Extension::String(uid.clone())),
    ]);
    if let Some(g) = generation {
        // `metadata.generation` is an int64 and a CloudEvents Integer is 32-bit
        // (CloudEvents 1.0, "Type System"): sent as its decimal text.
        extensions.push((
            "crbgeneration".to_string(),
            Extension::String(g.to_string()),
        ));
    }
    extensions.push(("crbinferred".to_string(), Extension::Bool(change.inferred)));
    if let Some(m) = change.changed_by {
        extensions.push(("crbchangedby".to_string(), Extension::String(m.to_string())));
    }

    let data = payload(who.payload, change).map_err(EventError::Serialize)?;

    Ok(Event {
        id: salted_event_id(
            &who.cluster,
            &uid,
            change.resource_version,
            change.kind,
            change.snapshot_id,
        ),
        source: who.source(),
        ty: format!("{}.{}", who.type_prefix, change.kind.as_str()),
        subject,
        time: humantime::format_rfc3339_millis(change.observed).to_string(),
        extensions,
        data,
        route: Route {
            cluster: who.cluster.clone(),
            group: who.group.clone(),
            version: who.version.clone(),
            kind: who.kind.clone(),
            plural: who.plural.clone(),
            namespace,
            name,
            change: change.kind,
            uid,
        },
    })
}

/// `data`: `{"object", "patch", "previousResourceVersion"}` as the payload mode selects.
/// A created or snapshot event's patch adds the whole object at the root (RFC 6902 `add` on
/// path ""); a deleted event has no patch. Serialized straight from borrowed parts: the
/// object is not copied, and its JSON is reused when the caller already has it.
fn payload(mode: PayloadMode, change: &Change<'_>) -> Result<Box<RawValue>, serde_json::Error> {
    let object = match change.object_json {
        Some(raw) => ObjectRef::Raw(raw),
        None => ObjectRef::Value(change.object),
    };
    let patch = match change.kind {
        ChangeKind::Deleted => PatchRef::Null,
        ChangeKind::Created | ChangeKind::Snapshot => PatchRef::AddRoot([AddRoot {
            op: "add",
            path: "",
            value: object,
        }]),
        ChangeKind::Updated => change.patch.map_or(PatchRef::Null, PatchRef::Patch),
    };
    serde_json::value::to_raw_value(&Data {
        object: (mode != PayloadMode::Patch).then_some(object),
        patch: (mode != PayloadMode::Full).then_some(patch),
        previous_resource_version: change.previous_resource_version,
    })
}

/// The `data` member, keys in the order they always had (sorted).
#[derive(Serialize)]
struct Data<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    object: Option<ObjectRef<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<PatchRef<'a>>,
    #[serde(rename = "previousResourceVersion")]
    previous_resource_version: Option<&'a str>,
}

/// The object, as a tree or as JSON text already serialized.
#[derive(Clone, Copy, Serialize)]
#[serde(untagged)]
enum ObjectRef<'a> {
    Value(&'a Value),
    Raw(&'a RawValue),
}

/// The `patch` member.
#[derive(Serialize)]
#[serde(untagged)]
enum PatchRef<'a> {
    Null,
    AddRoot([AddRoot<'a>; 1]),
    Patch(&'a json_patch::Patch),
}

/// `{"op": "add", "path": "", "value": object}`.
#[derive(Serialize)]
struct AddRoot<'a> {
    op: &'static str,
    path: &'static str,
    value: ObjectRef<'a>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::{Duration, UNIX_EPOCH};

    fn who(payload: PayloadMode) -> Identity {
        Identity {
            cluster: "prod-eu-1".into(),
            type_prefix: "io.crbridge.resource".into(),
            group: "example.com".into(),
            version: "v1".into(),
            kind: "Widget".into(),
            plural: "widgets".into(),
            payload,
            dataschema: "urn:crbridge:schema:example.com:v1:Widget".into(),
        }
    }

    fn obj() -> Value {
        json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w1", "namespace": "team-a", "uid": "u-1", "resourceVersion": "42", "generation": 3},
            "spec": {"size": 2}})
    }

    fn change<'a>(o: &'a Value, patch: Option<&'a json_patch::Patch>) -> Change<'a> {
        Change::new(
            ChangeKind::Updated,
            o,
            "42",
            UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        )
        .with_patch(patch)
        .with_previous(Some("41"))
        .with_changed_by(Some("kubectl-edit"))
    }

    #[test]
    fn attributes_follow_the_design() {
        let o = obj();
        let p = json_patch::diff(&json!({}), &json!({"a": 1}));
        let e = build(&who(PayloadMode::FullPatch), &change(&o, Some(&p))).unwrap();
        assert_eq!(e.source, "/clusters/prod-eu-1/apis/example.com/v1/widgets");
        assert_eq!(e.ty, "io.crbridge.resource.updated");
        assert_eq!(e.subject, "team-a/w1");
        assert_eq!(
            e.extension("dataschema"),
            Some(&Extension::String(
                "urn:crbridge:schema:example.com:v1:Widget".into()
            ))
        );
        let structured: Value = serde_json::from_slice(&e.to_structured_json()).unwrap();
        assert_eq!(
            structured["dataschema"],
            "urn:crbridge:schema:example.com:v1:Widget"
        );
        assert_eq!(e.time, "2023-11-14T22:13:20.123Z");
        assert_eq!(
            e.extension("partitionkey"),
            Some(&Extension::String("u-1".into()))
        );
        assert_eq!(
            e.extension("sequence"),
            Some(&Extension::String("00000000000000000042".into()))
        );
        assert_eq!(
            e.extension("crbgeneration"),
            Some(&Extension::String("3".into()))
        );
        assert_eq!(e.extension("crbinferred"), Some(&Extension::Bool(false)));
        assert_eq!(
            e.extension("crbchangedby"),
            Some(&Extension::String("kubectl-edit".into()))
        );
        let data: Value = serde_json::from_str(e.data.get()).unwrap();
        assert_eq!(data["object"], o);
        assert_eq!(
            data["patch"],
            json!([{"op": "add", "path": "/a", "value": 1}])
        );
        assert_eq!(data["previousResourceVersion"], "41");
    }

    #[test]
    fn sequence_is_padded_to_sort_like_the_number() {
        assert_eq!(sequence("42"), "00000000000000000042");
        assert_eq!(sequence("18446744073709551615"), "18446744073709551615");
        assert!(sequence("99999990") < sequence("100000005"));
        // Not a decimal of at most 20 digits: sent as it is, never a panic.
        for odd in ["", "abc", "12a", "-5", "123456789012345678901", "١٢"] {
            assert_eq!(sequence(odd), odd);
        }
    }

    #[test]
    fn generation_beyond_32_bits_is_a_decimal_string() {
        let mut o = obj();
        o["metadata"]["generation"] = json!(i64::MAX);
        let e = build(&who(PayloadMode::Full), &change(&o, None)).unwrap();
        assert_eq!(
            e.extension("crbgeneration"),
            Some(&Extension::String(i64::MAX.to_string()))
        );
        let structured: Value = serde_json::from_slice(&e.to_structured_json()).unwrap();
        assert_eq!(structured["crbgeneration"], json!("9223372036854775807"));
        assert_eq!(structured["sequence"], json!("00000000000000000042"));
    }

    proptest::proptest! {
        /// For numeric resourceVersions, string order of `sequence` is numeric order, and
        /// the value parses back to the number.
        #[test]
        fn sequence_orders_as_numbers(a in proptest::num::u64::ANY, b in proptest::num::u64::ANY) {
            let (sa, sb) = (sequence(&a.to_string()), sequence(&b.to_string()));
            proptest::prop_assert_eq!(sa.cmp(&sb), a.cmp(&b));
            proptest::prop_assert_eq!(sa.parse::<u64>().unwrap(), a);
        }
    }

    #[test]
    fn id_is_deterministic_and_distinguishes_each_input() {
        let a = event_id("c", "u", "1", ChangeKind::Updated);
        assert_eq!(a, event_id("c", "u", "1", ChangeKind::Updated));
        assert_eq!(a.len(), 32);
        for other in [
            event_id("d", "u", "1", ChangeKind::Updated),
            event_id("c", "v", "1", ChangeKind::Updated),
            event_id("c", "u", "2", ChangeKind::Updated),
            event_id("c", "u", "1", ChangeKind::Deleted),
        ] {
            assert_ne!(a, other);
        }
    }

    #[test]
    fn payload_modes_and_core_source() {
        let o = obj();
        let mut w = who(PayloadMode::Full);
        let e = build(&w, &change(&o, None)).unwrap();
        let data: Value = serde_json::from_str(e.data.get()).unwrap();
        assert!(data.get("patch").is_none() && data.get("object").is_some());
        w.payload = PayloadMode::Patch;
        let e = build(&w, &change(&o, None)).unwrap();
        let data: Value = serde_json::from_str(e.data.get()).unwrap();
        assert!(data.get("patch").is_some() && data.get("object").is_none());
        w.group = String::new();
        assert_eq!(w.source(), "/clusters/prod-eu-1/api/v1/widgets");
    }

    #[test]
    fn created_patch_rebuilds_the_object_and_missing_uid_is_an_error() {
        let o = obj();
        let mut c = change(&o, None);
        c.kind = ChangeKind::Created;
        let e = build(&who(PayloadMode::FullPatch), &c).unwrap();
        let data: Value = serde_json::from_str(e.data.get()).unwrap();
        let p: json_patch::Patch = serde_json::from_value(data["patch"].clone()).unwrap();
        let mut doc = Value::Null;
        json_patch::patch(&mut doc, &p).unwrap();
        assert_eq!(doc, o);
        let bad = json!({"metadata": {"name": "x"}});
        c.object = &bad;
        assert!(matches!(
            build(&who(PayloadMode::Full), &c),
            Err(EventError::MissingField("uid"))
        ));
    }
}
