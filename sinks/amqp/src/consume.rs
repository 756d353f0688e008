//! The consumer `crbridge tail` reads an AMQP sink with: an exclusive, auto-deleted queue
//! bound to the sink's exchange for every routing key. AMQP keeps no history, so it starts
//! with what is published next.

use crbridge_sink_api::{BoxFuture, ConsumeError, Consumer, Received};
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection};

use crate::{AmqpSinkConfig, ExchangeKindConfig};

/// A queue of its own on the sink's exchange.
pub(crate) struct AmqpConsumer {
    /// Held open for as long as the consumer reads.
    _connection: Connection,
    /// Held open for as long as the consumer reads.
    _channel: Channel,
    consumer: lapin::Consumer,
    header_prefix: String,
}

impl AmqpConsumer {
    /// Declares the queue, binds it and starts consuming (without acks: the queue is ours).
    pub(crate) async fn subscribe(config: &AmqpSinkConfig) -> Result<Self, ConsumeError> {
        let (connection, _) = crate::connect::connect(config).await?;
        let ch = connection
            .create_channel()
            .await
            .map_err(ConsumeError::client)?;
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
            .await
            .map_err(ConsumeError::client)?;
        let key = match config.exchange_type {
            ExchangeKindConfig::Topic => "#",
            _ => "",
        };
        ch.queue_bind(
            q.name().clone(),
            config.exchange.as_str().into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| {
            ConsumeError::Failed(format!("binding to exchange {}: {e}", config.exchange))
        })?;
        let consumer = ch
            .basic_consume(
                q.name().clone(),
                "crbridge-tail".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(ConsumeError::client)?;
        Ok(AmqpConsumer {
            _connection: connection,
            _channel: ch,
            consumer,
            header_prefix: config.header_prefix.clone(),
        })
    }
}

/// The event of a delivery: prefixed headers (binary mode) or a structured body.
fn received(d: &Delivery, header_prefix: &str) -> Received {
    let props = &d.properties;
    let structured = props
        .content_type()
        .as_ref()
        .is_some_and(|c| Received::is_structured(c.as_str()));
    if structured {
        return Received::structured(&d.data);
    }
    let attrs: Vec<(String, String)> = props
        .headers()
        .clone()
        .unwrap_or_default()
        .inner()
        .iter()
        .filter_map(|(k, v)| {
            let a = k.as_str().strip_prefix(header_prefix)?.to_string();
            let v = match v {
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                other => format!("{other:?}"),
            };
            Some((a, v))
        })
        .collect();
    Received::binary(attrs, &d.data)
}

impl Consumer for AmqpConsumer {
    fn next(&mut self) -> BoxFuture<'_, Result<Option<Received>, ConsumeError>> {
        Box::pin(async move {
            match self.consumer.next().await {
                None => Ok(None),
                Some(d) => {
                    let d = d.map_err(ConsumeError::client)?;
                    Ok(Some(received(&d, &self.header_prefix)))
                }
            }
        })
    }
}
