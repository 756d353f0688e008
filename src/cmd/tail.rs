//! `crbridge tail`: consume a sink's broker as a downstream service would and print the
//! events, for people (type, subject, id, a short patch) or as JSON lines for pipes.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{anyhow, bail};
use serde_json::Value;

use super::Output;
use crate::config::Config;

/// One received event, whatever the binding.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// Context attributes, as strings (binary mode) or JSON values (structured mode).
    pub attrs: BTreeMap<String, Value>,
    /// `data`.
    pub data: Value,
}

impl Seen {
    /// From binary-mode headers (prefix already removed) and body.
    pub fn binary(attrs: impl IntoIterator<Item = (String, String)>, body: &[u8]) -> Seen {
        Seen {
            attrs: attrs
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
            data: serde_json::from_slice(body).unwrap_or(Value::Null),
        }
    }

    /// From a structured-mode body.
    pub fn structured(body: &[u8]) -> Seen {
        let mut v: serde_json::Map<String, Value> =
            serde_json::from_slice(body).unwrap_or_default();
        let data = v.remove("data").unwrap_or(Value::Null);
        Seen {
            attrs: v.into_iter().collect(),
            data,
        }
    }

    fn attr(&self, k: &str) -> String {
        match self.attrs.get(k) {
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

    /// One line for people.
    pub fn to_text(&self) -> String {
        let change = self
            .attr("type")
            .rsplit('.')
            .next()
            .unwrap_or("")
            .to_string();
        let inferred = if self.attr("crbinferred") == "true" {
            " (inferred)"
        } else {
            ""
        };
        format!(
            "{} {:<8} {:<40} rv={:<8} id={}{}  {}",
            self.attr("time"),
            change,
            self.attr("subject"),
            self.attr("sequence"),
            self.attr("id"),
            inferred,
            patch_summary(&self.data["patch"])
        )
    }
}

/// `replace /spec/size=2, add /metadata/labels/x, ...`, at most 100 characters.
pub fn patch_summary(patch: &Value) -> String {
    let Some(ops) = patch.as_array() else {
        return String::new();
    };
    let parts: Vec<String> = ops
        .iter()
        .filter(|op| {
            !op["path"]
                .as_str()
                .is_some_and(|p| p == "/metadata/resourceVersion" || p == "/metadata/generation")
        })
        .map(|op| {
            let path = op["path"].as_str().unwrap_or("");
            let path = if path.is_empty() { "/" } else { path };
            match op.get("value") {
                Some(v) if !v.is_object() && !v.is_array() => {
                    format!("{} {}={}", op["op"].as_str().unwrap_or("?"), path, v)
                }
                _ => format!("{} {}", op["op"].as_str().unwrap_or("?"), path),
            }
        })
        .collect();
    let mut s = parts.join(", ");
    if s.chars().count() > 100 {
        s = s.chars().take(97).collect::<String>() + "...";
    }
    s
}

/// Consumes `sink` until `count` events were printed (or forever).
pub async fn run(
    config: &Config,
    file: &str,
    sink: &str,
    watch: Option<&str>,
    output: Output,
    count: Option<usize>,
    from_start: bool,
) -> anyhow::Result<ExitCode> {
    crate::admin::check_names(config, Some(sink), watch).map_err(|e| anyhow!(e))?;
    let section = &config.sinks[sink];
    // Filter by the watch's group and kind, which every event carries.
    let filter = watch.and_then(|w| config.watches.iter().find(|x| x.name == w));
    let mut printed = 0usize;
    let mut print = move |seen: Seen| -> bool {
        if let Some(w) = filter {
            if seen.attr("crbkind") != w.kind || seen.attr("crbgroup") != w.group {
                return false;
            }
        }
        match output {
            Output::Text => println!("{}", seen.to_text()),
            Output::Json => println!("{}", seen.to_json()),
        }
        printed += 1;
        count.is_some_and(|c| printed >= c)
    };
    match section.kind.as_str() {
        #[cfg(feature = "nats")]
        "nats" => nats(file, section, from_start, &mut print).await?,
        #[cfg(feature = "kafka")]
        "kafka" => kafka(file, section, from_start, &mut print).await?,
        #[cfg(feature = "amqp")]
        "amqp" => amqp(file, section, &mut print).await?,
        "stdout" => bail!("sink {sink} writes to crbridge's own standard output: there is nothing to tail (hint: read crbridge's stdout)"),
        other => bail!("tail does not support sink type {other} in this build"),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "nats")]
async fn nats(
    file: &str,
    section: &crate::config::SinkSection,
    from_start: bool,
    print: &mut (dyn FnMut(Seen) -> bool + Send),
) -> anyhow::Result<()> {
    use async_nats::jetstream::{self, consumer};
    use futures::StreamExt;
    let cfg: crbridge_sink_nats::NatsSinkConfig = crate::config::sink_config(file, section)?;
    let client = crbridge_sink_nats::connect_client(&cfg.url).await?;
    let js = jetstream::new(client);
    let stream = js.get_stream(&cfg.stream).await.map_err(|e| {
        anyhow!(
            "stream {}: {e} (hint: has crbridge run with this sink yet?)",
            cfg.stream
        )
    })?;
    let consumer = stream
        .create_consumer(consumer::push::OrderedConfig {
            deliver_subject: format!("_INBOX.crbridge-tail.{:08x}", rand::random::<u32>()),
            deliver_policy: if from_start {
                consumer::DeliverPolicy::All
            } else {
                consumer::DeliverPolicy::New
            },
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow!("creating a consumer on {}: {e}", cfg.stream))?;
    let mut messages = consumer.messages().await.map_err(|e| anyhow!("{e}"))?;
    while let Some(m) = messages.next().await {
        let m = m.map_err(|e| anyhow!("reading {}: {e}", cfg.stream))?;
        let headers = m.headers.clone().unwrap_or_default();
        let ct = headers
            .get("content-type")
            .map(|v| v.to_string())
            .unwrap_or_default();
        let seen = if ct.starts_with("application/cloudevents+json") {
            Seen::structured(&m.payload)
        } else {
            let attrs: Vec<(String, String)> = headers
                .iter()
                .filter_map(|(k, v)| {
                    let k = k.to_string();
                    let a = k.strip_prefix("ce-")?.to_string();
                    Some((a, v.first().map(|v| v.to_string()).unwrap_or_default()))
                })
                .collect();
            Seen::binary(attrs, &m.payload)
        };
        if print(seen) {
            break;
        }
    }
    Ok(())
}

/// A librdkafka subscription regex for every topic `template` can render.
pub fn topic_regex(template: &str) -> String {
    let mut out = String::from("^");
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        for c in rest[..open].chars() {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                out.push(c);
            } else {
                out.push('\\');
                out.push(c);
            }
        }
        out.push_str("[a-zA-Z0-9._-]*");
        rest = rest[open..]
            .find('}')
            .map_or("", |close| &rest[open + close + 1..]);
    }
    for c in rest.chars() {
        if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
            out.push(c);
        } else {
            out.push('\\');
            out.push(c);
        }
    }
    out.push('$');
    out
}

#[cfg(feature = "kafka")]
async fn kafka(
    file: &str,
    section: &crate::config::SinkSection,
    from_start: bool,
    print: &mut (dyn FnMut(Seen) -> bool + Send),
) -> anyhow::Result<()> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::Headers;
    use rdkafka::Message;
    let cfg: crbridge_sink_kafka::KafkaSinkConfig = crate::config::sink_config(file, section)?;
    let mut cc = rdkafka::ClientConfig::new();
    cc.set("bootstrap.servers", &cfg.brokers)
        .set(
            "group.id",
            format!("crbridge-tail-{:08x}", rand::random::<u32>()),
        )
        .set("enable.auto.commit", "false")
        .set(
            "auto.offset.reset",
            if from_start { "earliest" } else { "latest" },
        )
        .set("topic.metadata.refresh.interval.ms", "2000");
    for (k, v) in &cfg.options {
        // Producer-only settings would make the consumer refuse to start.
        if k.starts_with("security.") || k.starts_with("sasl.") || k.starts_with("ssl.") {
            cc.set(
                k,
                crbridge_sink_api::secret::resolve(k, v).map_err(|e| anyhow!(e))?,
            );
        }
    }
    let consumer: StreamConsumer = cc.create()?;
    consumer.subscribe(&[&topic_regex(cfg.topic.as_str())])?;
    loop {
        let m = consumer.recv().await?;
        let mut attrs = Vec::new();
        let mut structured = false;
        if let Some(h) = m.headers() {
            for hd in h.iter() {
                let v = String::from_utf8_lossy(hd.value.unwrap_or_default()).into_owned();
                if let Some(a) = hd.key.strip_prefix("ce_") {
                    attrs.push((a.to_string(), v));
                } else if hd.key == "content-type" && v.starts_with("application/cloudevents+json")
                {
                    structured = true;
                }
            }
        }
        let body = m.payload().unwrap_or_default();
        let seen = if structured {
            Seen::structured(body)
        } else {
            Seen::binary(attrs, body)
        };
        if print(seen) {
            return Ok(());
        }
    }
}

#[cfg(feature = "amqp")]
async fn amqp(
    file: &str,
    section: &crate::config::SinkSection,
    print: &mut (dyn FnMut(Seen) -> bool + Send),
) -> anyhow::Result<()> {
    use futures::StreamExt;
    use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
    use lapin::types::{AMQPValue, FieldTable};
    let cfg: crbridge_sink_amqp::AmqpSinkConfig = crate::config::sink_config(file, section)?;
    let url = crbridge_sink_api::secret::resolve("url", &cfg.url).map_err(|e| anyhow!(e))?;
    let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
        .await
        .map_err(|e| anyhow!("connecting to AMQP: {e}"))?;
    let ch = conn.create_channel().await?;
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let key = match cfg.exchange_type {
        crbridge_sink_amqp::ExchangeKindConfig::Topic => "#",
        _ => "",
    };
    ch.queue_bind(
        q.name().clone(),
        cfg.exchange.as_str().into(),
        key.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .map_err(|e| anyhow!("binding to exchange {}: {e}", cfg.exchange))?;
    let mut consumer = ch
        .basic_consume(
            q.name().clone(),
            "crbridge-tail".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    while let Some(d) = consumer.next().await {
        let d = d?;
        let props = &d.properties;
        let structured = props
            .content_type()
            .as_ref()
            .is_some_and(|c| c.as_str().starts_with("application/cloudevents+json"));
        let seen = if structured {
            Seen::structured(&d.data)
        } else {
            let attrs: Vec<(String, String)> = props
                .headers()
                .clone()
                .unwrap_or_default()
                .inner()
                .iter()
                .filter_map(|(k, v)| {
                    let a = k
                        .as_str()
                        .strip_prefix(cfg.header_prefix.as_str())?
                        .to_string();
                    let v = match v {
                        AMQPValue::LongString(s) => {
                            String::from_utf8_lossy(s.as_bytes()).into_owned()
                        }
                        other => format!("{other:?}"),
                    };
                    Some((a, v))
                })
                .collect();
            Seen::binary(attrs, &d.data)
        };
        if print(seen) {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn patch_summaries_skip_bookkeeping_and_shorten() {
        let p = json!([
            {"op": "replace", "path": "/metadata/resourceVersion", "value": "9"},
            {"op": "replace", "path": "/spec/size", "value": 2},
            {"op": "add", "path": "/spec/tags", "value": ["a"]}
        ]);
        assert_eq!(patch_summary(&p), "replace /spec/size=2, add /spec/tags");
        assert_eq!(patch_summary(&json!(null)), "");
    }

    #[test]
    fn topic_regex_matches_rendered_topics() {
        assert_eq!(
            topic_regex("crbridge.{group}.{plural}"),
            r"^crbridge\.[a-zA-Z0-9._-]*\.[a-zA-Z0-9._-]*$"
        );
    }
}
