//! Reading a sink's broker as a downstream service would: what `crbridge tail` prints.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::BoxFuture;

/// One event as a consumer received it, whatever the binding and content mode.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Received {
    /// Context attributes, as strings (binary mode) or JSON values (structured mode).
    pub attrs: BTreeMap<String, Value>,
    /// `data` (`null` when the body is not JSON).
    pub data: Value,
}

impl Received {
    /// From binary-mode headers (binding prefix already removed) and body.
    pub fn binary(attrs: impl IntoIterator<Item = (String, String)>, body: &[u8]) -> Received {
        Received {
            attrs: attrs
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
            data: serde_json::from_slice(body).unwrap_or(Value::Null),
        }
    }

    /// From a structured-mode body (`application/cloudevents+json`).
    pub fn structured(body: &[u8]) -> Received {
        let mut v: serde_json::Map<String, Value> =
            serde_json::from_slice(body).unwrap_or_default();
        let data = v.remove("data").unwrap_or(Value::Null);
        Received {
            attrs: v.into_iter().collect(),
            data,
        }
    }

    /// True when a `content-type` announces structured mode.
    pub fn is_structured(content_type: &str) -> bool {
        content_type.starts_with(crate::Event::STRUCTURED_CONTENT_TYPE)
    }

    /// Attribute `name` as text (empty when absent).
    pub fn attr(&self, name: &str) -> String {
        match self.attrs.get(name) {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => String::new(),
        }
    }

    /// The event as one line of structured JSON.
    pub fn to_json(&self) -> String {
        let mut m: serde_json::Map<String, Value> = self.attrs.clone().into_iter().collect();
        m.insert("data".into(), self.data.clone());
        Value::Object(m).to_string()
    }
}

/// Why a sink's broker cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// The sink has nothing to read from. The text completes "sink {name} ...": why, and
    /// what to do instead.
    #[error("{0}")]
    Unsupported(String),
    /// A step failed; the text names it and holds the client's words.
    #[error("{0}")]
    Failed(String),
    /// The client's own error, as it reported it.
    #[error(transparent)]
    Client(Box<dyn std::error::Error + Send + Sync>),
}

impl ConsumeError {
    /// Wraps the client's error.
    pub fn client(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        ConsumeError::Client(Box::new(e))
    }
}

/// A subscription to a sink's broker (for `crbridge tail`).
pub trait Consumer: Send {
    /// The next event; `None` once the broker ended the subscription.
    fn next(&mut self) -> BoxFuture<'_, Result<Option<Received>, ConsumeError>>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn binary_and_structured_read_the_same_event() {
        let b = Received::binary([("id".to_string(), "1".to_string())], br#"{"patch":[]}"#);
        let s = Received::structured(br#"{"id":"1","data":{"patch":[]}}"#);
        assert_eq!(b, s);
        assert_eq!(b.attr("id"), "1");
        assert_eq!(b.attr("missing"), "");
        let line: Value = serde_json::from_str(&b.to_json()).unwrap();
        assert_eq!(line, json!({"id": "1", "data": {"patch": []}}));
        assert!(Received::is_structured(
            "application/cloudevents+json; charset=utf-8"
        ));
        assert!(!Received::is_structured("application/json"));
    }

    #[test]
    fn bodies_that_are_not_json_become_null() {
        assert_eq!(Received::binary([], b"\xff").data, Value::Null);
        assert_eq!(Received::structured(b"nope"), Received::default());
    }
}
