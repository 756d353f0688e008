//! A structural `openAPIV3Schema` node → a JSON Schema 2020-12 node (see the table in the
//! module doc).

use serde_json::{json, Map, Value};

/// Members copied as they are: their meaning is the same in OpenAPI 3.0 and JSON Schema
/// 2020-12 (for the subset structural schemas allow).
const SAME: &[&str] = &[
    "title",
    "description",
    "format",
    "required",
    "enum",
    "multipleOf",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "maxProperties",
    "minProperties",
];

/// Members holding one schema.
const ONE: &[&str] = &["items", "not"];
/// Members holding a list of schemas.
const MANY: &[&str] = &["allOf", "anyOf", "oneOf"];

/// The JSON Schema 2020-12 of objects valid under the structural schema `openapi` (the
/// root of a CRD version's `openAPIV3Schema`). The root's `apiVersion`, `kind` and
/// `metadata` are always described, since every object has them.
pub fn object_schema(openapi: &Value) -> Value {
    let mut root = node(openapi);
    if let Value::Object(m) = &mut root {
        m.insert("type".into(), json!("object"));
        add_resource_properties(m, true);
    }
    root
}

/// `apiVersion`, `kind` and `metadata` of a Kubernetes object (`root`: the watched object
/// itself, whose metadata always has a name and a uid).
fn add_resource_properties(m: &mut Map<String, Value>, root: bool) {
    let props = m
        .entry("properties")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(props) = props else { return };
    props.insert("apiVersion".into(), json!({"type": "string"}));
    props.insert("kind".into(), json!({"type": "string"}));
    let metadata = if root {
        object_meta()
    } else {
        json!({"type": "object"})
    };
    props.insert("metadata".into(), metadata);
    if root {
        m.insert("required".into(), json!(["apiVersion", "kind", "metadata"]));
    }
}

/// What crbridge relies on in `metadata` (ObjectMeta): the rest is left open.
fn object_meta() -> Value {
    let string_map = json!({"type": "object", "additionalProperties": {"type": "string"}});
    json!({
        "type": "object",
        "required": ["name", "uid"],
        "properties": {
            "name": {"type": "string"},
            "namespace": {"type": "string"},
            "uid": {"type": "string"},
            "resourceVersion": {"type": "string"},
            "generation": {"type": "integer"},
            "creationTimestamp": {"type": "string", "format": "date-time"},
            "deletionTimestamp": {"type": "string", "format": "date-time"},
            "labels": string_map,
            "annotations": string_map,
            "finalizers": {"type": "array", "items": {"type": "string"}},
            "ownerReferences": {"type": "array", "items": {"type": "object"}}
        }
    })
}

/// One node, recursively. A node that is not an object (malformed) becomes `true` (any
/// value): the output is a schema for every input, never a failure.
fn node(openapi: &Value) -> Value {
    let Value::Object(src) = openapi else {
        return Value::Bool(true);
    };
    let flag = |name: &str| src.get(name).and_then(Value::as_bool) == Some(true);
    let mut out = Map::new();
    for key in SAME {
        if let Some(v) = src.get(*key) {
            out.insert((*key).into(), v.clone());
        }
    }
    for key in ONE {
        if let Some(v) = src.get(*key) {
            out.insert((*key).into(), node(v));
        }
    }
    for key in MANY {
        if let Some(Value::Array(list)) = src.get(*key) {
            out.insert((*key).into(), Value::Array(list.iter().map(node).collect()));
        }
    }
    if let Some(Value::Object(props)) = src.get("properties") {
        let props = props.iter().map(|(k, v)| (k.clone(), node(v))).collect();
        out.insert("properties".into(), Value::Object(props));
    }
    // A schema (a map's values) is kept; `true`/`false` are OpenAPI spellings of the
    // default, which unknown members never need here (module doc).
    if let Some(v @ Value::Object(_)) = src.get("additionalProperties") {
        out.insert("additionalProperties".into(), node(v));
    }
    // OpenAPI 3.0's boolean exclusive bounds become 2020-12's numeric ones.
    for (bound, exclusive) in [
        ("minimum", "exclusiveMinimum"),
        ("maximum", "exclusiveMaximum"),
    ] {
        if let Some(n) = src.get(bound) {
            if flag(exclusive) {
                out.insert(exclusive.into(), n.clone());
            } else {
                out.insert(bound.into(), n.clone());
            }
        }
    }
    let mut types: Vec<Value> = if flag("x-kubernetes-int-or-string") {
        vec![json!("integer"), json!("string")]
    } else {
        src.get("type").cloned().into_iter().collect()
    };
    if flag("x-kubernetes-embedded-resource") {
        types = vec![json!("object")];
        add_resource_properties(&mut out, false);
    }
    if flag("nullable") {
        if !types.is_empty() {
            types.push(json!("null"));
        }
        if let Some(Value::Array(values)) = out.get_mut("enum") {
            if !values.contains(&Value::Null) {
                values.push(Value::Null);
            }
        }
    }
    match types.len() {
        0 => {}
        1 => {
            out.insert("type".into(), types.remove(0));
        }
        _ => {
            out.insert("type".into(), Value::Array(types));
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_structural_extension_is_translated() {
        let crd = json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["size"],
                    "properties": {
                        "size": {"type": "integer", "minimum": 0, "exclusiveMaximum": true, "maximum": 10, "default": 1},
                        "port": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]},
                        "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "template": {"type": "object", "x-kubernetes-embedded-resource": true, "x-kubernetes-preserve-unknown-fields": true},
                        "note": {"type": "string", "nullable": true, "enum": ["a", "b"]},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "anything": {"x-kubernetes-preserve-unknown-fields": true}
                    }
                }
            }
        });
        let s = object_schema(&crd);
        let spec = &s["properties"]["spec"]["properties"];
        assert_eq!(s["required"], json!(["apiVersion", "kind", "metadata"]));
        assert_eq!(
            spec["size"],
            json!({"type": "integer", "minimum": 0, "exclusiveMaximum": 10})
        );
        assert_eq!(spec["port"]["type"], json!(["integer", "string"]));
        assert_eq!(spec["extra"], json!({"type": "object"}));
        assert_eq!(
            spec["template"]["properties"]["kind"],
            json!({"type": "string"})
        );
        assert_eq!(spec["note"]["type"], json!(["string", "null"]));
        assert_eq!(spec["note"]["enum"], json!(["a", "b", null]));
        assert_eq!(
            spec["labels"]["additionalProperties"],
            json!({"type": "string"})
        );
        assert_eq!(spec["anything"], json!({}));
        assert!(!s.to_string().contains("default"));
        assert!(!s.to_string().contains("x-kubernetes"));
    }

    #[test]
    fn malformed_input_gives_a_schema_not_a_panic() {
        assert_eq!(node(&json!("x")), json!(true));
        let s = object_schema(&json!({"properties": {"a": 5, "b": {"items": [1]}}}));
        assert_eq!(s["properties"]["a"], json!(true));
        assert_eq!(object_schema(&json!(null)), json!(true));
    }
}
