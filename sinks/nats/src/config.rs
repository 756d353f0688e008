use std::time::Duration;

use crbridge_sink_api::template::Template;
use crbridge_sink_api::units;
use crbridge_sink_api::ContentMode;
use serde::Deserialize;

/// `sinks.<name>` with `type: nats`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NatsSinkConfig {
    /// Server URL, e.g. `nats://127.0.0.1:4222` (user and password may be in the URL), or
    /// `env:NAME` / `file:/path` to read it from the environment or a file (secrets).
    pub url: String,
    /// JetStream stream name.
    pub stream: String,
    /// Subject template; variables: cluster group version kind plural namespace name type.
    pub subject: Template,
    /// Create the stream when it does not exist (else fail the healthcheck).
    #[serde(default = "default_true")]
    pub create_stream: bool,
    /// Duplicate window of a created stream. Re-sends after a crash carry the same
    /// `Nats-Msg-Id`; JetStream drops them within this window. Ten minutes covers a crash
    /// and restart; the default of NATS (2 min) is short for that.
    #[serde(
        default = "default_duplicate_window",
        deserialize_with = "units::deserialize_duration"
    )]
    pub duplicate_window: Duration,
    /// Publishes awaiting their PubAck at once. 256 keeps a round trip per window, not per
    /// event, on a LAN, while bounding what a failure re-sends.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// How long to wait for a PubAck before the publish counts as failed (and is retried).
    #[serde(
        default = "default_ack_timeout",
        deserialize_with = "units::deserialize_duration"
    )]
    pub ack_timeout: Duration,
    /// Binary (default) or structured CloudEvents mode.
    #[serde(default)]
    pub mode: ContentMode,
}

fn default_true() -> bool {
    true
}
fn default_duplicate_window() -> Duration {
    Duration::from_secs(600)
}
fn default_in_flight() -> usize {
    256
}
fn default_ack_timeout() -> Duration {
    Duration::from_secs(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_keys() {
        let c: NatsSinkConfig = serde_yaml_ng::from_str(
            "url: nats://h:1\nstream: S\nsubject: \"crbridge.{cluster}.{kind}\"\n",
        )
        .unwrap();
        assert!(c.create_stream);
        assert_eq!(c.max_in_flight, 256);
        assert_eq!(c.mode, ContentMode::Binary);
        assert_eq!(c.duplicate_window, Duration::from_secs(600));
        let err = serde_yaml_ng::from_str::<NatsSinkConfig>(
            "url: x\nstream: S\nsubject: a\nsubjects: b\n",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("unknown field `subjects`"),
            "{err}"
        );
        let err =
            serde_yaml_ng::from_str::<NatsSinkConfig>("url: x\nstream: S\nsubject: a.{nope}\n")
                .unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
