//! Reads what crbridge published to a JetStream stream, as an independent consumer would:
//! an ordered consumer from the start of the stream, CloudEvents attributes from headers.

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use serde_json::Value;

/// One received event.
#[derive(Debug, Clone)]
pub struct Received {
    /// NATS subject.
    pub subject: String,
    /// `ce-*` headers (without the prefix) and `content-type`.
    pub headers: std::collections::BTreeMap<String, String>,
    /// Body parsed as JSON.
    pub data: Value,
}

impl Received {
    /// A CloudEvents attribute.
    pub fn attr(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
    /// The change: the last segment of `type`.
    pub fn change(&self) -> &str {
        self.attr("type").rsplit('.').next().unwrap_or("")
    }
    /// `crbinferred == "true"`.
    pub fn inferred(&self) -> bool {
        self.attr("crbinferred") == "true"
    }
}

/// A reader over one stream.
pub struct Reader {
    messages: consumer::push::Ordered,
}

impl Reader {
    /// Waits (up to 30 s) for the stream to exist, then reads it from the start.
    pub async fn open(stream: &str) -> Reader {
        let client = async_nats::connect(super::env("CRBRIDGE_NATS_URL"))
            .await
            .expect("connecting to NATS");
        let js = jetstream::new(client);
        let s = super::eventually(
            &format!("JetStream stream {stream}"),
            Duration::from_secs(30),
            || {
                let js = js.clone();
                async move { js.get_stream(stream).await.ok() }
            },
        )
        .await;
        let consumer = s
            .create_consumer(consumer::push::OrderedConfig {
                deliver_subject: format!("_INBOX.{}", super::unique("rd")),
                ..Default::default()
            })
            .await
            .expect("creating an ordered consumer");
        Reader {
            messages: consumer.messages().await.expect("consumer messages"),
        }
    }

    /// The next `n` events, or panics naming how many arrived within `limit`.
    pub async fn take(&mut self, n: usize, limit: Duration) -> Vec<Received> {
        let mut out = Vec::with_capacity(n);
        let deadline = tokio::time::Instant::now() + limit;
        while out.len() < n {
            match tokio::time::timeout_at(deadline, self.messages.next()).await {
                Ok(Some(Ok(m))) => out.push(parse(&m)),
                Ok(Some(Err(e))) => panic!("reading the stream: {e}"),
                Ok(None) => panic!("stream consumer ended"),
                Err(_) => panic!(
                    "only {} of {n} events within {limit:?}: {:#?}",
                    out.len(),
                    out.iter()
                        .map(|r| (r.change().to_string(), r.attr("subject").to_string()))
                        .collect::<Vec<_>>()
                ),
            }
        }
        out
    }

    /// Asserts that no further event arrives within `quiet`.
    pub async fn expect_none(&mut self, quiet: Duration) {
        if let Ok(Some(Ok(m))) = tokio::time::timeout(quiet, self.messages.next()).await {
            let r = parse(&m);
            panic!(
                "unexpected event {} {} (sequence {})",
                r.change(),
                r.attr("subject"),
                r.attr("sequence")
            );
        }
    }

    /// Reads until `stop` returns true for the events so far, or panics after `limit`.
    pub async fn until(
        &mut self,
        limit: Duration,
        mut stop: impl FnMut(&[Received]) -> bool,
    ) -> Vec<Received> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + limit;
        while !stop(&out) {
            match tokio::time::timeout_at(deadline, self.messages.next()).await {
                Ok(Some(Ok(m))) => out.push(parse(&m)),
                Ok(Some(Err(e))) => panic!("reading the stream: {e}"),
                Ok(None) => panic!("stream consumer ended"),
                Err(_) => panic!(
                    "condition not met within {limit:?} after {} events",
                    out.len()
                ),
            }
        }
        out
    }
}

fn parse(m: &async_nats::jetstream::Message) -> Received {
    let mut headers = std::collections::BTreeMap::new();
    if let Some(h) = &m.headers {
        for (k, v) in h.iter() {
            let k = k.to_string();
            let v = v.first().map(|v| v.to_string()).unwrap_or_default();
            if let Some(attr) = k.strip_prefix("ce-") {
                headers.insert(attr.to_string(), v);
            } else {
                headers.insert(k, v);
            }
        }
    }
    Received {
        subject: m.subject.to_string(),
        headers,
        data: serde_json::from_slice(&m.payload).unwrap_or(Value::Null),
    }
}
