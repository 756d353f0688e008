use std::collections::BTreeMap;
use std::time::Duration;

use crbridge_sink_api::template::Template;
use crbridge_sink_api::units;
use crbridge_sink_api::ContentMode;
use serde::Deserialize;

/// `sinks.<name>` with `type: kafka`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KafkaSinkConfig {
    /// Bootstrap servers, comma separated.
    pub brokers: String,
    /// Topic template; variables: cluster group version kind plural namespace name type.
    pub topic: Template,
    /// Binary (default) or structured CloudEvents mode.
    #[serde(default)]
    pub mode: ContentMode,
    /// Records awaiting their delivery report at once. 1024: librdkafka batches them into
    /// few requests; a failure re-sends at most this many (deduplicated by the idempotent
    /// producer within a session, by id downstream across sessions).
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// How long librdkafka keeps retrying a record before reporting it failed
    /// (`message.timeout.ms`); the dispatcher then retries from its cursor.
    #[serde(
        default = "default_timeout",
        deserialize_with = "units::deserialize_duration"
    )]
    pub message_timeout: Duration,
    /// Extra librdkafka settings (e.g. `security.protocol`, `compression.type`). Values in
    /// the form `env:NAME` or `file:/path` are read from the environment / a file.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

fn default_in_flight() -> usize {
    1024
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_options_and_unknown_keys() {
        let c: KafkaSinkConfig = serde_yaml_ng::from_str(
            "brokers: h:9092\ntopic: \"crbridge.{group}.{plural}\"\noptions: {compression.type: zstd}\n",
        )
        .unwrap();
        assert_eq!(c.mode, ContentMode::Binary);
        assert_eq!(c.max_in_flight, 1024);
        assert_eq!(c.options["compression.type"], "zstd");
        let err = serde_yaml_ng::from_str::<KafkaSinkConfig>("brokers: h\ntopic: t\ntopics: x\n")
            .unwrap_err();
        assert!(err.to_string().contains("unknown field `topics`"), "{err}");
    }
}
