use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crbridge_sink_api::template::Template;
use crbridge_sink_api::tls::TlsConfig;
use crbridge_sink_api::units;
use crbridge_sink_api::ContentMode;
use serde::Deserialize;

use crate::security::{self, SaslConfig, ShownOptions};

/// `sinks.<name>` with `type: kafka`.
#[derive(Clone, Deserialize)]
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
    /// TLS to the brokers: CA to trust, client certificate and key (PEM files). Present:
    /// `security.protocol` is `SSL`, or `SASL_SSL` with `sasl`.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// SASL authentication: mechanism, username and password (`env:` / `file:` allowed).
    #[serde(default)]
    pub sasl: Option<SaslConfig>,
    /// Extra librdkafka settings (e.g. `compression.type`, `linger.ms`). Values in the form
    /// `env:NAME` or `file:/path` are read from the environment / a file. A key that `tls`
    /// or `sasl` already sets is refused.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// After each `deleted` event, also send a record with the same key (the object uid)
    /// and a null value: a tombstone, so a topic with `cleanup.policy=compact` converges on
    /// exactly the live objects. The deleted event counts as delivered only once its
    /// tombstone is acknowledged too.
    #[serde(default)]
    pub tombstones: bool,
    /// The sink's name (its key under `sinks`), for logs; set by the factory.
    #[serde(skip)]
    pub name: String,
}

impl KafkaSinkConfig {
    /// Pure checks beyond the shape serde enforces; on error, the key path inside the
    /// section (`tls.keyFile`, `options.ssl.ca.location`) and what is wrong.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let at = if self.name.is_empty() {
            String::new()
        } else {
            format!("sinks.{}.", self.name)
        };
        crate::encode::check_topic_template(&self.topic)
            .map_err(|message| ("topic".to_owned(), message))?;
        security::check(
            &at,
            self.tls.as_ref(),
            self.sasl.as_ref(),
            self.options.keys(),
        )
    }

    /// The librdkafka properties for reaching and authenticating to the brokers (from `tls`
    /// and `sasl`, secrets read now), without `options`.
    pub(crate) fn security_properties(&self) -> Result<Vec<(&'static str, String)>, String> {
        security::properties(self.tls.as_ref(), self.sasl.as_ref())
    }
}

impl fmt::Debug for KafkaSinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSinkConfig")
            .field("name", &self.name)
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("mode", &self.mode)
            .field("max_in_flight", &self.max_in_flight)
            .field("message_timeout", &self.message_timeout)
            .field("tls", &self.tls)
            .field("sasl", &self.sasl)
            .field("options", &ShownOptions(&self.options))
            .field("tombstones", &self.tombstones)
            .finish()
    }
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
        let c: KafkaSinkConfig = serde_saphyr::from_str(
            "brokers: h:9092\ntopic: \"crbridge.{group}.{plural}\"\noptions: {compression.type: zstd}\n",
        )
        .unwrap();
        assert_eq!(c.mode, ContentMode::Binary);
        assert_eq!(c.max_in_flight, 1024);
        assert!(!c.tombstones);
        assert_eq!(c.options["compression.type"], "zstd");
        let err = serde_saphyr::from_str::<KafkaSinkConfig>("brokers: h\ntopic: t\ntopics: x\n")
            .unwrap_err();
        assert!(err.to_string().contains("unknown field `topics`"), "{err}");
    }

    #[test]
    fn tls_and_sasl_keys_parse_and_debug_hides_secrets() {
        let c: KafkaSinkConfig = serde_saphyr::from_str(
            "brokers: h:9093\ntopic: t\ntls: {caFile: /ca.crt, certFile: /tls.crt, keyFile: /tls.key}\nsasl: {mechanism: SCRAM-SHA-512, username: crbridge, password: lit3ral-pw}\noptions: {sasl.oauthbearer.client.secret: s3cr3t, compression.type: zstd}\n",
        )
        .unwrap();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(
            c.tls.as_ref().unwrap().key_file.as_deref(),
            Some(std::path::Path::new("/tls.key"))
        );
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("lit3ral-pw") && !shown.contains("s3cr3t"),
            "{shown}"
        );
        assert!(shown.contains("zstd"), "{shown}");
        let err = serde_saphyr::from_str::<KafkaSinkConfig>(
            "brokers: h\ntopic: t\nsasl: {mechanism: PLAIN, user: u}\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `user`"), "{err}");
    }

    #[test]
    fn a_conflicting_option_fails_validation() {
        let mut c: KafkaSinkConfig = serde_saphyr::from_str(
            "brokers: h\ntopic: t\ntls: {caFile: /ca.crt}\noptions: {ssl.ca.location: /other.crt}\n",
        )
        .unwrap();
        c.name = "kafka".into();
        let (path, msg) = c.validate().unwrap_err();
        assert_eq!(path, "options.ssl.ca.location");
        assert!(
            msg.contains("conflicts with sinks.kafka.tls.caFile"),
            "{msg}"
        );
    }
}
