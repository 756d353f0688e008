use std::sync::Mutex;

use crbridge_sink_api::{BoxFuture, Event, PendingAck, Sink, SinkError};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Confirmation, Connection, ExchangeKind};
use tracing::{debug, info};

use crate::{classify, encode, AmqpSinkConfig, ExchangeKindConfig, UnroutablePolicy};

/// A connected AMQP sink: one connection, one confirm-mode channel.
pub struct AmqpSink {
    connection: Connection,
    /// The confirm-mode channel, opened again when the broker closed it (a refused
    /// publish closes the channel, not the connection): the oversize policy's patch-only
    /// resend and the retries after an access refusal go out on the same connection.
    channel: Mutex<Channel>,
    config: AmqpSinkConfig,
}

/// A channel in confirm mode on `connection`.
async fn confirm_channel(connection: &Connection) -> Result<Channel, SinkError> {
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| SinkError::retriable("open channel", e.to_string()).with_source(e))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| SinkError::retriable("confirm.select", e.to_string()).with_source(e))?;
    Ok(channel)
}

impl AmqpSink {
    /// Connects, enables publisher confirms and declares (or checks) the exchange.
    pub async fn connect(config: AmqpSinkConfig) -> Result<Self, SinkError> {
        let (connection, url) = crate::connect::connect(&config).await?;
        let channel = confirm_channel(&connection).await.map_err(|mut e| {
            e.message = format!("{url}: {}", e.message);
            e
        })?;
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
                classify::declare(what, &config.exchange, e)
            })?;
        info!(exchange = %config.exchange, "AMQP exchange ready");
        Ok(AmqpSink {
            connection,
            channel: Mutex::new(channel),
            config,
        })
    }

    /// The confirm channel, opened anew if the broker closed the last one. Publishes come
    /// one at a time from the dispatcher, so two reopens do not race in practice; if they
    /// did, the later channel wins and the other is dropped (closed) unused.
    async fn channel(&self) -> Result<Channel, SinkError> {
        let current = self
            .channel
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        if current.status().connected() {
            return Ok(current);
        }
        let fresh = confirm_channel(&self.connection).await?;
        info!(sink = %self.config.name, exchange = %self.config.exchange, "AMQP channel reopened after the broker closed it");
        *self
            .channel
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = fresh.clone();
        Ok(fresh)
    }
}

impl Sink for AmqpSink {
    fn publish<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<PendingAck, SinkError>> {
        Box::pin(async move {
            let key = encode::routing_key(&self.config.routing_key, &event.route)?;
            let (props, body) =
                encode::message(event, self.config.mode, &self.config.header_prefix)?;
            let channel = self.channel().await?;
            let len = body.len();
            let confirm = channel
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
                .map_err(|e| classify::publish("publish", e, len))?;
            let exchange = self.config.exchange.clone();
            let unroutable = self.config.unroutable;
            let pending: PendingAck = Box::pin(async move {
                match confirm.await {
                    Ok(Confirmation::Ack(None)) => Ok(()),
                    Ok(Confirmation::Ack(Some(ret))) => {
                        let what = format!(
                            "unroutable: no queue is bound to exchange {exchange} for routing key {key} ({} {}; unroutable: {unroutable})",
                            ret.reply_code, ret.reply_text
                        );
                        match unroutable {
                            UnroutablePolicy::Retry => Err(SinkError::retriable("route", what)),
                            UnroutablePolicy::Refuse => Err(SinkError::permanent("route", what)),
                            UnroutablePolicy::Drop => {
                                debug!(%exchange, routing_key = %key, "unroutable message dropped (unroutable: drop)");
                                Ok(())
                            }
                        }
                    }
                    Ok(Confirmation::Nack(_)) => {
                        Err(SinkError::retriable("confirm", "broker nacked the message"))
                    }
                    Ok(Confirmation::NotRequested) => Err(SinkError::permanent(
                        "confirm",
                        "publisher confirms are off on this channel",
                    )),
                    Err(e) => Err(classify::publish("confirm", e, len)),
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

    /// The connection, not the channel: a channel the broker closed is opened again by the
    /// next publish.
    fn is_connected(&self) -> bool {
        self.connection.status().connected()
    }
}
