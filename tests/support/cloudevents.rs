//! The CloudEvents SDK's reading side: turns a binary-mode message (attribute headers,
//! content type, body) into a `cloudevents::Event`, validating it the way consumers built
//! on the official SDKs do. (The SDK's own Kafka / AMQP bindings pin older client crates,
//! so the few lines that map headers to attributes live here.)

use cloudevents::event::SpecVersion;
use cloudevents::message::{BinaryDeserializer, BinarySerializer, MessageAttributeValue};

/// A message in binary content mode.
pub struct BinaryMessage {
    /// Attribute headers with the binding's prefix removed.
    pub attributes: Vec<(String, String)>,
    /// The binding's content type (the `datacontenttype` attribute).
    pub content_type: Option<String>,
    /// The body (`data`).
    pub body: Vec<u8>,
}

impl BinaryDeserializer for BinaryMessage {
    fn deserialize_binary<R: Sized, V: BinarySerializer<R>>(
        self,
        mut v: V,
    ) -> cloudevents::message::Result<R> {
        let spec = SpecVersion::V10;
        let known = spec.attribute_names();
        v = v.set_spec_version(spec)?;
        for (k, val) in self.attributes {
            if k == "specversion" {
                assert_eq!(val, "1.0", "specversion");
                continue;
            }
            if known.contains(&k.as_str()) {
                v = v.set_attribute(&k, MessageAttributeValue::String(val))?;
            } else {
                v = v.set_extension(&k, MessageAttributeValue::String(val))?;
            }
        }
        if let Some(ct) = self.content_type {
            v = v.set_attribute("datacontenttype", MessageAttributeValue::String(ct))?;
        }
        v.end_with_data(self.body)
    }
}

/// Parses a binary-mode message with the SDK, panicking with the SDK's error if invalid.
pub fn parse_binary(m: BinaryMessage) -> cloudevents::Event {
    BinaryDeserializer::into_event(m).expect("the CloudEvents SDK rejected the message")
}

/// Parses a structured-mode body with the SDK.
pub fn parse_structured(body: &[u8]) -> cloudevents::Event {
    serde_json::from_slice(body).expect("the CloudEvents SDK rejected the structured event")
}
