//! The consumer `crbridge tail` reads a NATS sink with: an ordered push consumer on the
//! sink's stream, created for this reader only.

use async_nats::jetstream::consumer::{self, push};
use async_nats::jetstream::{self, Message};
use crbridge_sink_api::{BoxFuture, ConsumeError, Consumer, Received};
use futures::StreamExt;

use crate::{connect_client, NatsSinkConfig};

/// An ordered consumer on the sink's stream.
pub(crate) struct NatsConsumer {
    stream: String,
    messages: push::Ordered,
}

impl NatsConsumer {
    /// Subscribes from the stream's first retained message (`from_start`) or from now on.
    pub(crate) async fn subscribe(
        config: &NatsSinkConfig,
        from_start: bool,
    ) -> Result<Self, ConsumeError> {
        let client = connect_client(config).await.map_err(ConsumeError::client)?;
        let js = jetstream::new(client);
        let name = &config.stream;
        let stream = js.get_stream(name).await.map_err(|e| {
            ConsumeError::Failed(format!(
                "stream {name}: {e} (hint: has crbridge run with this sink yet?)"
            ))
        })?;
        let consumer = stream
            .create_consumer(push::OrderedConfig {
                deliver_subject: format!("_INBOX.crbridge-tail.{:08x}", rand::random::<u32>()),
                deliver_policy: if from_start {
                    consumer::DeliverPolicy::All
                } else {
                    consumer::DeliverPolicy::New
                },
                ..Default::default()
            })
            .await
            .map_err(|e| ConsumeError::Failed(format!("creating a consumer on {name}: {e}")))?;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| ConsumeError::Failed(e.to_string()))?;
        Ok(NatsConsumer {
            stream: name.clone(),
            messages,
        })
    }
}

/// The event of a message: `ce-*` headers (binary mode) or a structured body.
fn received(m: &Message) -> Received {
    let headers = m.headers.clone().unwrap_or_default();
    let content_type = headers
        .get("content-type")
        .map(|v| v.to_string())
        .unwrap_or_default();
    if Received::is_structured(&content_type) {
        return Received::structured(&m.payload);
    }
    let attrs: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| {
            let k = k.to_string();
            let a = k.strip_prefix("ce-")?.to_string();
            let v = v.first().map(|v| v.to_string()).unwrap_or_default();
            Some((a, crate::encode::decode_header_value(&v).into_owned()))
        })
        .collect();
    Received::binary(attrs, &m.payload)
}

impl Consumer for NatsConsumer {
    fn next(&mut self) -> BoxFuture<'_, Result<Option<Received>, ConsumeError>> {
        Box::pin(async move {
            match self.messages.next().await {
                None => Ok(None),
                Some(Ok(m)) => Ok(Some(received(&m))),
                Some(Err(e)) => Err(ConsumeError::Failed(format!(
                    "reading {}: {e}",
                    self.stream
                ))),
            }
        })
    }
}
