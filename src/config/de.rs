//! Serde helpers shared by the sections: the untyped `sinks` mapping, a strict YAML to
//! JSON conversion, and the key paths (`watches[0].kind`, `sinks["my sink"]`) that every
//! error message starts with.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;
use serde_path_to_error::Segment;

use super::SinkSection;

/// `sinks`: a mapping of name to untyped section. Duplicate names are an error (plain
/// maps would silently keep the last one).
pub(super) fn deserialize_sinks<'de, D: Deserializer<'de>>(
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

/// Runs `f` on a deserializer of the one YAML document in `text` (serde-saphyr, pure Rust;
/// a second document is an error). Source snippets stay off: every error is one line.
/// `strict` refuses tags: the syntax pass lets them through so that the shape pass can
/// name the key that carries one.
pub(super) fn with_yaml<'de, R>(
    text: &'de str,
    strict: bool,
    f: impl for<'e> FnOnce(serde_saphyr::Deserializer<'de, 'e>) -> Result<R, serde_saphyr::Error>,
) -> Result<R, serde_saphyr::Error> {
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    // YAML 1.2 booleans only: `yes` / `on` stay strings, as the README's examples assume.
    options.strict_booleans = true;
    // Duplicate keys reach our visitors, which name them with their key path.
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::PassThrough;
    // Non-finite numbers too: `StrictValue` refuses them with a key path.
    options.non_finite_float_policy = serde_saphyr::NonFiniteFloatPolicy::PassThrough;
    options.reject_unsupported_tags = strict;
    serde_saphyr::with_deserializer_from_str_with_options(text, options, f)
}

/// A path as a YAML parser may print it (`watches[0].kind`), to strip it from its messages.
pub(super) fn yaml_path(segments: &[&Segment]) -> String {
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
pub(super) fn join_key(path: &str, key: &str) -> String {
    let key = path_key(key);
    if path.is_empty() || key.starts_with('[') {
        format!("{path}{key}")
    } else {
        format!("{path}.{key}")
    }
}

/// Renders `prefix` + serde_path_to_error segments as our key path (empty for the root).
pub(super) fn key_path(prefix: &str, path: &serde_path_to_error::Path) -> String {
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
