use crbridge_sink_api::template::Template;
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

/// `sinks.<name>` with `type: amqp`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AmqpSinkConfig {
    /// Broker URL, e.g. `amqp://user:password@host:5672/%2f`, or `env:NAME` / `file:/path`
    /// to read it from the environment or a file (secrets).
    pub url: String,
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
        let c: AmqpSinkConfig = serde_yaml_ng::from_str(
            "url: amqp://h\nexchange: x\nroutingKey: \"{group}.{kind}.{namespace}.{type}\"\n",
        )
        .unwrap();
        assert_eq!(c.header_prefix, "cloudEvents:");
        assert!(c.declare_exchange);
        assert_eq!(c.exchange_type, ExchangeKindConfig::Topic);
        let err = serde_yaml_ng::from_str::<AmqpSinkConfig>(
            "url: u\nexchange: x\nroutingKey: k\nqueue: q\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `queue`"), "{err}");
    }
}
