use serde::Deserialize;

/// How a sink lays an event out in a broker message: the two content modes of the
/// CloudEvents protocol bindings (Kafka, NATS, AMQP), chosen by a sink's `mode` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ContentMode {
    /// Attributes in headers (with the binding's prefix: `ce_`, `ce-`, `cloudEvents:`),
    /// `data` as the body, content type `application/json`.
    #[default]
    Binary,
    /// The whole event as `application/cloudevents+json` in the body.
    Structured,
}

#[cfg(test)]
mod tests {
    use super::ContentMode;

    #[test]
    fn lowercase_names_and_binary_default() {
        assert_eq!(ContentMode::default(), ContentMode::Binary);
        let m: ContentMode = serde_json::from_str("\"structured\"").unwrap();
        assert_eq!(m, ContentMode::Structured);
        assert!(serde_json::from_str::<ContentMode>("\"Binary\"").is_err());
    }
}
