//! `redact`: values that never leave the cluster.
//!
//! Each value a watch's `redact` pointers select is replaced by
//! `"redacted:sha256:<hex>"`, the HMAC-SHA256 of its JSON text keyed by the top-level
//! `redactKey`. Capture applies it to the clean object before anything is diffed, filtered,
//! stored or published, so the raw value is on no disk and in no broker message; a change
//! of a redacted value is still a change (its hash changes), and equal values give equal
//! hashes, so consumers can still compare them. The key keeps the hashes from being
//! reversed by trying likely values.
//!
//! Pointers are RFC 6901 JSON Pointers in which a `*` segment matches every key of an
//! object or every index of an array (`/spec/credentials/*`). A pointer that selects
//! nothing in an object is not an error: the field is optional.
//!
//! Pure: no I/O.

use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// The prefix of every redacted value.
pub const PREFIX: &str = "redacted:sha256:";

/// The HMAC key (`redactKey`, resolved). Never displayed.
#[derive(Clone, PartialEq, Eq)]
pub struct RedactKey(Arc<[u8]>);

impl RedactKey {
    /// A key of `bytes`.
    pub fn new(bytes: &[u8]) -> Self {
        RedactKey(bytes.into())
    }
}

impl fmt::Debug for RedactKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RedactKey(***)")
    }
}

/// The pointers of one watch and the key.
#[derive(Debug, Clone)]
pub struct Redactor {
    key: RedactKey,
    /// Each pointer as unescaped segments (`None`: `*`).
    pointers: Vec<Vec<Option<String>>>,
}

impl Redactor {
    /// A redactor of `pointers` (validated by the config: each starts with `/`).
    pub fn new(key: RedactKey, pointers: &[String]) -> Self {
        let pointers = pointers
            .iter()
            .map(|p| {
                p.split('/')
                    .skip(1)
                    .map(|s| (s != "*").then(|| s.replace("~1", "/").replace("~0", "~")))
                    .collect()
            })
            .collect();
        Redactor { key, pointers }
    }

    /// Replaces every selected value of `object` by its keyed hash. A value that is
    /// already a redacted hash is left alone, so applying twice changes nothing.
    pub fn apply(&self, object: &mut Value) {
        for pointer in &self.pointers {
            self.walk(object, pointer);
        }
    }

    /// The redacted form of `value`.
    pub fn hash(&self, value: &Value) -> String {
        // Keys of any length are accepted by HMAC: this cannot fail.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key.0) else {
            return format!("{PREFIX}invalid-key");
        };
        mac.update(value.to_string().as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut out = String::with_capacity(PREFIX.len() + 64);
        out.push_str(PREFIX);
        for b in digest {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    fn walk(&self, value: &mut Value, rest: &[Option<String>]) {
        let Some((first, rest)) = rest.split_first() else {
            let done = value.as_str().is_some_and(|s| s.starts_with(PREFIX));
            if !done {
                *value = Value::String(self.hash(value));
            }
            return;
        };
        match (value, first) {
            (Value::Object(map), Some(key)) => {
                if let Some(v) = map.get_mut(key) {
                    self.walk(v, rest);
                }
            }
            (Value::Object(map), None) => {
                for v in map.values_mut() {
                    self.walk(v, rest);
                }
            }
            (Value::Array(items), Some(index)) => {
                if let Some(v) = index.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                    self.walk(v, rest);
                }
            }
            (Value::Array(items), None) => {
                for v in items {
                    self.walk(v, rest);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
