//! The schema of `data`: the object's schema wrapped with the patch and the previous
//! resourceVersion, as the watch's payload mode shapes them (`crate::event`).

use serde_json::{json, Value};

use crate::config::PayloadMode;

/// What names and shapes one kind's `data` schema.
#[derive(Debug, Clone)]
pub struct DataSchemaInfo<'a> {
    /// The `$id`: the URI events carry in `dataschema`.
    pub id: &'a str,
    /// API group (empty: core).
    pub group: &'a str,
    /// API version.
    pub version: &'a str,
    /// Kind.
    pub kind: &'a str,
    /// The watch's payload mode.
    pub payload: PayloadMode,
}

/// The schema of an object of a kind without a CRD (core kinds): `apiVersion`, `kind` and
/// `metadata` described, everything else open.
pub fn permissive_object_schema() -> Value {
    super::object_schema(&json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}))
}

/// The JSON Schema 2020-12 document of `data` for a kind whose objects follow `object`
/// (from [`super::object_schema`] or [`permissive_object_schema`]).
///
/// * `object`: present in `full` and `full+patch` modes, except in an event the sink's
///   `oversize: patch-only` policy re-sent without it; so never required.
/// * `patch`: present (required) in `patch` and `full+patch` modes; an RFC 6902 array, or
///   `null` on a deleted event (and on an update whose patch was not computed).
/// * `previousResourceVersion`: always present, a string or `null`.
pub fn data_schema(info: &DataSchemaInfo<'_>, object: Value) -> Value {
    let api_version = if info.group.is_empty() {
        info.version.to_owned()
    } else {
        format!("{}/{}", info.group, info.version)
    };
    let mut required = Vec::new();
    let mut properties = serde_json::Map::new();
    if info.payload != PayloadMode::Patch {
        properties.insert(
            "object".into(),
            json!({"$ref": "#/$defs/object", "description": "The object after the change (the last known state on a delete), after redaction and projection."}),
        );
    }
    if info.payload != PayloadMode::Full {
        required.push("patch");
        properties.insert(
            "patch".into(),
            json!({
                "description": "RFC 6902 JSON Patch from the previously published object (between normalized forms); on created and snapshot events one add of the whole object at path \"\"; null on deleted events.",
                "oneOf": [
                    {"type": "null"},
                    {"type": "array", "items": {"$ref": "#/$defs/operation"}}
                ]
            }),
        );
    }
    required.push("previousResourceVersion");
    properties.insert(
        "previousResourceVersion".into(),
        json!({"type": ["string", "null"], "description": "resourceVersion of the previously published object of this uid."}),
    );
    json!({
        "$schema": super::DIALECT,
        "$id": info.id,
        "title": format!("data of crbridge events for {} {}", api_version, info.kind),
        "type": "object",
        "required": required,
        "properties": properties,
        "additionalProperties": false,
        "$defs": {
            "object": object,
            "operation": operation()
        }
    })
}

/// One RFC 6902 operation (section 4): `op`, `path` and, per op, `value` or `from`.
fn operation() -> Value {
    // RFC 6901 JSON Pointer: empty, or `/`-separated tokens where `~` escapes as ~0 / ~1.
    let pointer = json!({"type": "string", "pattern": "^(/([^~]|~[01])*)*$"});
    let with_value = |ops: &[&str]| {
        json!({
            "type": "object",
            "required": ["op", "path", "value"],
            "properties": {"op": {"enum": ops}, "path": pointer, "value": true}
        })
    };
    json!({
        "oneOf": [
            with_value(&["add", "replace", "test"]),
            {
                "type": "object",
                "required": ["op", "path"],
                "properties": {"op": {"const": "remove"}, "path": pointer}
            },
            {
                "type": "object",
                "required": ["op", "from", "path"],
                "properties": {"op": {"enum": ["move", "copy"]}, "from": pointer, "path": pointer}
            }
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(payload: PayloadMode) -> DataSchemaInfo<'static> {
        DataSchemaInfo {
            id: "urn:crbridge:schema:example.com:v1:Widget",
            group: "example.com",
            version: "v1",
            kind: "Widget",
            payload,
        }
    }

    #[test]
    fn payload_modes_shape_the_members() {
        let s = data_schema(&info(PayloadMode::FullPatch), permissive_object_schema());
        assert_eq!(s["$schema"], super::super::DIALECT);
        assert_eq!(s["$id"], "urn:crbridge:schema:example.com:v1:Widget");
        assert_eq!(s["required"], json!(["patch", "previousResourceVersion"]));
        assert!(s["properties"]["object"].is_object());
        let s = data_schema(&info(PayloadMode::Full), permissive_object_schema());
        assert!(s["properties"].get("patch").is_none());
        let s = data_schema(&info(PayloadMode::Patch), permissive_object_schema());
        assert!(s["properties"].get("object").is_none());
    }
}
