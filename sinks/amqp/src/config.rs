use std::fmt;

use crbridge_sink_api::secret::redact;
use crbridge_sink_api::template::Template;
use crbridge_sink_api::tls::TlsConfig;
use crbridge_sink_api::ContentMode;
use serde::Deserialize;

/// The exchange type crbridge declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ExchangeKindConfig {
    /// Routing by pattern (`widgets.#`): the usual choice for events.
    #[default]
    Topic,
    /// Routing by exact key.
    Direct,
    /// Every bound queue gets every event.
    Fanout,
}

/// What happens to a message that no queue is bound for (`unroutable`). crbridge publishes
/// with `mandatory` set, so RabbitMQ returns such a message (312 NO_ROUTE) instead of
/// dropping it silently; this says what the sink makes of the return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UnroutablePolicy {
    /// The default: a retriable failure. The sink waits at the event (with backoff, the sink
    /// unhealthy in `/readyz`) until a queue is bound, then delivers it and everything after
    /// it. Chosen because a missing binding is usually a deploy-order or consumer outage the
    /// operator fixes, after which nothing needs redriving, and nothing is ever lost.
    #[default]
    Retry,
    /// Refused for good: the sink's `onError` applies (a dead letter by default, or halt).
    /// For exchanges where some routing keys are bound by nobody on purpose but should
    /// still be kept.
    Refuse,
    /// Counted as delivered and logged at DEBUG: RabbitMQ's own behaviour without
    /// `mandatory`. Only for exchanges whose bindings select events on purpose.
    Drop,
}

impl fmt::Display for UnroutablePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UnroutablePolicy::Retry => "retry",
            UnroutablePolicy::Refuse => "refuse",
            UnroutablePolicy::Drop => "drop",
        })
    }
}

/// `sinks.<name>` with `type: amqp`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AmqpSinkConfig {
    /// Broker URL, e.g. `amqps://user:password@host:5671/%2f` (TLS) or
    /// `amqp://user:password@host:5672/%2f` (plaintext), or `env:NAME` / `file:/path` to read
    /// it from the environment or a file (secrets).
    pub url: String,
    /// CA and client certificate for `amqps://` URLs; refused with an `amqp://` URL, which
    /// would send everything in clear.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Exchange to publish to.
    pub exchange: String,
    /// Routing key template; variables: cluster group version kind plural namespace name type.
    pub routing_key: Template,
    /// Type of the exchange when crbridge declares it.
    #[serde(default)]
    pub exchange_type: ExchangeKindConfig,
    /// Declare the exchange (durable) at start; `false` only checks it exists.
    #[serde(default = "default_true")]
    pub declare_exchange: bool,
    /// Prefix of the CloudEvents attribute headers: `cloudEvents:` (AMQP binding) or `ce-`.
    #[serde(default = "default_prefix")]
    pub header_prefix: String,
    /// Binary (default) or structured CloudEvents mode.
    #[serde(default)]
    pub mode: ContentMode,
    /// Publishes awaiting their confirm at once. 256: one confirm round trip covers many
    /// events, and a failure re-sends at most this many.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// A message no queue is bound for: `retry` (default), `refuse` or `drop`
    /// ([`UnroutablePolicy`]).
    #[serde(default)]
    pub unroutable: UnroutablePolicy,
    /// The key under `sinks`, for messages (set by the factory, not read from the file).
    #[serde(skip)]
    pub name: String,
}

/// The URL's password stays out of logs and messages.
impl fmt::Debug for AmqpSinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpSinkConfig")
            .field("name", &self.name)
            .field("url", &redact(&self.url))
            .field("tls", &self.tls)
            .field("exchange", &self.exchange)
            .field("exchange_type", &self.exchange_type)
            .field("declare_exchange", &self.declare_exchange)
            .field("header_prefix", &self.header_prefix)
            .field("mode", &self.mode)
            .field("max_in_flight", &self.max_in_flight)
            .field("unroutable", &self.unroutable)
            .finish_non_exhaustive()
    }
}

impl AmqpSinkConfig {
    /// Checks what can be checked without I/O or secrets: the `tls` keys, and, when the URL
    /// is written in the file (not `env:` / `file:`), that it parses and that a `tls` section
    /// comes with `amqps://`. On error: the key path inside the section and what is wrong.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.exchange.len() > crate::encode::SHORT_STRING_MAX {
            // An AMQP short string: longer ones cannot be sent (lapin panics on them).
            return Err((
                "exchange".into(),
                format!(
                    "{} bytes long (expected at most {})",
                    self.exchange.len(),
                    crate::encode::SHORT_STRING_MAX
                ),
            ));
        }
        crate::encode::check_header_prefix(&self.header_prefix)
            .map_err(|message| ("headerPrefix".to_owned(), message))?;
        crate::encode::check_routing_key_template(&self.routing_key)
            .map_err(|message| ("routingKey".to_owned(), message))?;
        if let Some(tls) = &self.tls {
            tls.validate()
                .map_err(|(key, message)| (format!("tls.{key}"), message))?;
        }
        if is_secret_reference(&self.url) {
            // Checked with the same words when the sink connects (`connect::target`).
            return Ok(());
        }
        crate::connect::check_url(&self.url, self.tls.is_some())
    }
}

/// `env:NAME` or `file:/path`: the URL is only known when the sink connects.
pub(crate) fn is_secret_reference(url: &str) -> bool {
    url.starts_with("env:") || url.starts_with("file:")
}

fn default_true() -> bool {
    true
}
fn default_prefix() -> String {
    "cloudEvents:".into()
}
fn default_in_flight() -> usize {
    256
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_keys() {
        let c: AmqpSinkConfig = serde_saphyr::from_str(
            "url: amqp://h\nexchange: x\nroutingKey: \"{group}.{kind}.{namespace}.{type}\"\n",
        )
        .unwrap();
        assert_eq!(c.header_prefix, "cloudEvents:");
        assert!(c.declare_exchange);
        assert_eq!(c.exchange_type, ExchangeKindConfig::Topic);
        assert_eq!(c.unroutable, UnroutablePolicy::Retry);
        let err = serde_saphyr::from_str::<AmqpSinkConfig>(
            "url: u\nexchange: x\nroutingKey: k\nqueue: q\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `queue`"), "{err}");
    }

    fn parse(yaml: &str) -> AmqpSinkConfig {
        serde_saphyr::from_str(&format!("exchange: x\nroutingKey: k\n{yaml}")).unwrap()
    }

    #[test]
    fn tls_with_a_plaintext_url_is_refused_without_the_password() {
        let c = parse("url: amqp://u:hunter2@h:5672/%2f\ntls: {caFile: /ca.crt}\n");
        let (path, message) = c.validate().unwrap_err();
        assert_eq!(path, "tls");
        assert!(message.contains("amqp://"), "{message}");
        assert!(message.contains("amqps://"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        // An empty section asks for TLS too.
        let c = parse("url: amqp://h\ntls: {}\n");
        assert_eq!(c.validate().unwrap_err().0, "tls");
    }

    #[test]
    fn tls_with_amqps_and_amqps_alone_are_accepted() {
        let c = parse(
            "url: amqps://u:p@h:5671/%2f\ntls: {caFile: /ca.crt, certFile: /c.crt, keyFile: /c.key}\n",
        );
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(parse("url: amqps://h\n").validate(), Ok(()));
        assert_eq!(parse("url: amqp://h\n").validate(), Ok(()));
    }

    #[test]
    fn tls_keys_are_checked_with_their_path() {
        let c = parse("url: amqps://h\ntls: {certFile: /c.crt}\n");
        assert_eq!(c.validate().unwrap_err().0, "tls.keyFile");
        let err = serde_saphyr::from_str::<AmqpSinkConfig>(
            "url: amqps://h\nexchange: x\nroutingKey: k\ntls: {ca: /x}\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `ca`"), "{err}");
    }

    #[test]
    fn urls_from_secrets_are_checked_when_connecting() {
        let c = parse("url: env:AMQP_URL\ntls: {caFile: /ca.crt}\n");
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn a_bad_url_is_refused_without_its_password() {
        let (path, message) = parse("url: \"http://u:hunter2@h\"\n")
            .validate()
            .unwrap_err();
        assert_eq!(path, "url");
        assert!(message.contains("http://"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        let (path, message) = parse("url: \"amqp:u:hunter2@h\"\n").validate().unwrap_err();
        assert_eq!(path, "url");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn an_exchange_name_longer_than_a_short_string_is_refused() {
        let long = "x".repeat(256);
        let c = parse("url: amqp://h\n");
        let c = AmqpSinkConfig {
            exchange: long,
            ..c
        };
        assert_eq!(c.validate().unwrap_err().0, "exchange");
    }

    #[test]
    fn unroutable_takes_three_words() {
        for (word, policy) in [
            ("retry", UnroutablePolicy::Retry),
            ("refuse", UnroutablePolicy::Refuse),
            ("drop", UnroutablePolicy::Drop),
        ] {
            let c = parse(&format!("url: amqp://h\nunroutable: {word}\n"));
            assert_eq!(c.unroutable, policy);
            assert_eq!(policy.to_string(), word);
        }
        let err = serde_saphyr::from_str::<AmqpSinkConfig>(
            "url: amqp://h\nexchange: x\nroutingKey: k\nunroutable: deadletter\n",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("unknown variant `deadletter`"),
            "{err}"
        );
        assert!(err.to_string().contains("retry"), "{err}");
    }

    #[test]
    fn a_long_header_prefix_or_routing_key_template_is_refused() {
        let c = parse("url: amqp://h\n");
        let c = AmqpSinkConfig {
            header_prefix: "p".repeat(236),
            ..c
        };
        let (path, message) = c.validate().unwrap_err();
        assert_eq!(path, "headerPrefix");
        assert!(message.contains("at most 235"), "{message}");
        let c = AmqpSinkConfig {
            header_prefix: "p".repeat(235),
            ..c
        };
        assert_eq!(c.validate(), Ok(()));
        let c = AmqpSinkConfig {
            routing_key: format!("{}.{{name}}", "r".repeat(240)).parse().unwrap(),
            ..c
        };
        assert_eq!(c.validate().unwrap_err().0, "routingKey");
    }

    #[test]
    fn debug_hides_the_password() {
        let c = parse("url: amqps://u:hunter2@h:5671/%2f\n");
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("amqps://***@h:5671"), "{shown}");
    }
}
