//! The consumer `crbridge tail` reads a Kafka sink with: a fresh consumer group subscribed
//! to every topic the sink's template can render.

use crbridge_sink_api::{BoxFuture, ConsumeError, Consumer, Received};
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::Message;

use crate::client::{self, KafkaContext, LastCause};
use crate::KafkaSinkConfig;

/// A librdkafka subscription regex for every topic `template` can render.
pub fn topic_regex(template: &str) -> String {
    fn literal(out: &mut String, text: &str) {
        for c in text.chars() {
            if !(c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                out.push('\\');
            }
            out.push(c);
        }
    }
    let mut out = String::from("^");
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        literal(&mut out, &rest[..open]);
        out.push_str("[a-zA-Z0-9._-]*");
        rest = rest[open..]
            .find('}')
            .map_or("", |close| &rest[open + close + 1..]);
    }
    literal(&mut out, rest);
    out.push('$');
    out
}

/// True for the `options` a consumer needs too (how to reach and authenticate to the
/// brokers, beyond what `tls` and `sasl` set); producer-only settings would make the
/// consumer refuse to start.
fn applies_to_consumer(key: &str) -> bool {
    key.starts_with("security.") || key.starts_with("sasl.") || key.starts_with("ssl.")
}

/// A consumer in a group of its own, committing nothing.
pub(crate) struct KafkaConsumer {
    consumer: StreamConsumer<KafkaContext>,
    cause: LastCause,
}

impl KafkaConsumer {
    /// Subscribes from the oldest retained record (`from_start`) or from now on.
    pub(crate) fn subscribe(
        config: &KafkaSinkConfig,
        from_start: bool,
    ) -> Result<Self, ConsumeError> {
        // The same `tls` and `sasl` as the sink, so `tail` reaches what the sink reaches.
        let mut cc = client::settings(config, applies_to_consumer).map_err(ConsumeError::Failed)?;
        cc.set(
            "group.id",
            format!("crbridge-tail-{:08x}", rand::random::<u32>()),
        )
        .set("enable.auto.commit", "false")
        .set(
            "auto.offset.reset",
            if from_start { "earliest" } else { "latest" },
        )
        .set("topic.metadata.refresh.interval.ms", "2000");
        let cause = LastCause::default();
        let consumer: StreamConsumer<KafkaContext> = cc
            .create_with_context(KafkaContext::new(&config.name, cause.clone()))
            .map_err(ConsumeError::client)?;
        consumer
            .subscribe(&[&topic_regex(config.topic.as_str())])
            .map_err(ConsumeError::client)?;
        Ok(KafkaConsumer { consumer, cause })
    }
}

/// The event of a record: `ce_*` headers (binary mode) or a structured value.
fn received(m: &BorrowedMessage<'_>) -> Received {
    let mut attrs = Vec::new();
    let mut structured = false;
    if let Some(h) = m.headers() {
        for hd in h.iter() {
            let v = String::from_utf8_lossy(hd.value.unwrap_or_default()).into_owned();
            if let Some(a) = hd.key.strip_prefix("ce_") {
                attrs.push((a.to_string(), v));
            } else if hd.key == "content-type" && Received::is_structured(&v) {
                structured = true;
            }
        }
    }
    let body = m.payload().unwrap_or_default();
    if structured {
        Received::structured(body)
    } else {
        Received::binary(attrs, body)
    }
}

impl Consumer for KafkaConsumer {
    fn next(&mut self) -> BoxFuture<'_, Result<Option<Received>, ConsumeError>> {
        Box::pin(async move {
            match self.consumer.recv().await {
                Ok(m) => {
                    self.cause.clear();
                    Ok(Some(received(&m)))
                }
                Err(e) => Err(match self.cause.get() {
                    Some(c) => ConsumeError::Failed(format!("{e} (last broker error: {c})")),
                    None => ConsumeError::client(e),
                }),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_regex_matches_rendered_topics() {
        assert_eq!(
            topic_regex("crbridge.{group}.{plural}"),
            r"^crbridge\.[a-zA-Z0-9._-]*\.[a-zA-Z0-9._-]*$"
        );
        assert_eq!(topic_regex("a-b_c"), "^a-b_c$");
    }

    #[test]
    fn only_connection_options_reach_the_consumer() {
        assert!(applies_to_consumer("sasl.password"));
        assert!(applies_to_consumer("security.protocol"));
        assert!(applies_to_consumer("ssl.ca.location"));
        assert!(!applies_to_consumer("compression.type"));
    }
}
