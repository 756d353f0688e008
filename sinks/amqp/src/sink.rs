use crbridge_sink_api::{BoxFuture, Event, PendingAck, Sink, SinkError};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Confirmation, Connection, ExchangeKind};
use tracing::info;

use crate::{encode, AmqpSinkConfig, ExchangeKindConfig};

/// A connected AMQP sink: one connection, one confirm-mode channel.
pub struct AmqpSink {
    connection: Connection,
    channel: Channel,
    config: AmqpSinkConfig,
}

impl AmqpSink {
    /// Connects, enables publisher confirms and declares (or checks) the exchange.
    pub async fn connect(config: AmqpSinkConfig) -> Result<Self, SinkError> {
        let (connection, url) = crate::connect::connect(&config).await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| SinkError::retriable("open channel", url.clone()).with_source(e))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| SinkError::retriable("confirm.select", url.clone()).with_source(e))?;
        let kind = match config.exchange_type {
            ExchangeKindConfig::Topic => ExchangeKind::Topic,
            ExchangeKindConfig::Direct => ExchangeKind::Direct,
            ExchangeKindConfig::Fanout => ExchangeKind::Fanout,
        };
        channel
            .exchange_declare(
                ShortString::from(config.exchange.as_str()),
                kind,
                ExchangeDeclareOptions {
                    durable: true,
                    passive: !config.declare_exchange,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| {
                let what = if config.declare_exchange {
                    "declare exchange"
                } else {
                    "check exchange"
                };
                SinkError::permanent(what, format!("exchange {}", config.exchange)).with_source(e)
            })?;
        info!(exchange = %config.exchange, "AMQP exchange ready");
        Ok(AmqpSink {
            connection,
            channel,
            config,
        })
    }
}

impl Sink for AmqpSink {
    fn publish<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<PendingAck, SinkError>> {
        Box::pin(async move {
            let key = encode::routing_key(&self.config.routing_key, &event.route)?;
            let (props, body) =
                encode::message(event, self.config.mode, &self.config.header_prefix)?;
            let confirm = self
                .channel
                .basic_publish(
                    ShortString::from(self.config.exchange.as_str()),
                    ShortString::from(key.as_str()),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &body,
                    props,
                )
                .await
                .map_err(|e| SinkError::retriable("publish", e.to_string()).with_source(e))?;
            let exchange = self.config.exchange.clone();
            let pending: PendingAck = Box::pin(async move {
                match confirm.await {
                    Ok(Confirmation::Ack(None)) => Ok(()),
                    Ok(Confirmation::Ack(Some(ret))) => Err(SinkError::permanent(
                        "route",
                        format!(
                            "unroutable: no queue is bound to exchange {exchange} for routing key {key} ({} {})",
                            ret.reply_code, ret.reply_text
                        ),
                    )),
                    Ok(Confirmation::Nack(_)) => {
                        Err(SinkError::retriable("confirm", "broker nacked the message"))
                    }
                    Ok(Confirmation::NotRequested) => Err(SinkError::permanent(
                        "confirm",
                        "publisher confirms are off on this channel",
                    )),
                    Err(e) => Err(SinkError::retriable("confirm", e.to_string()).with_source(e)),
                }
            });
            Ok(pending)
        })
    }

    fn healthcheck(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            // A failed passive declare closes its channel: probe on a channel of its own.
            let probe = self.connection.create_channel().await.map_err(|e| {
                SinkError::retriable("healthcheck", "opening a channel").with_source(e)
            })?;
            probe
                .exchange_declare(
                    ShortString::from(self.config.exchange.as_str()),
                    ExchangeKind::Topic,
                    ExchangeDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(|e| {
                    SinkError::retriable(
                        "healthcheck",
                        format!("exchange {}", self.config.exchange),
                    )
                    .with_source(e)
                })?;
            let _ = probe.close(200, "healthcheck done".into()).await;
            Ok(())
        })
    }

    fn window(&self) -> usize {
        self.config.max_in_flight.max(1)
    }

    fn is_connected(&self) -> bool {
        self.channel.status().connected()
    }
}
