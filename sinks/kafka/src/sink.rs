use std::time::Duration;

use crbridge_sink_api::{BoxFuture, Event, PendingAck, Sink, SinkError};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::encode;
use crate::KafkaSinkConfig;

/// A Kafka sink: one idempotent producer.
pub struct KafkaSink {
    producer: FutureProducer,
    config: KafkaSinkConfig,
}

/// Reads `env:NAME` / `file:/path` option values; anything else is literal.
fn resolve(key: &str, value: &str) -> Result<String, SinkError> {
    crbridge_sink_api::secret::resolve(&format!("options.{key}"), value)
        .map_err(|m| SinkError::permanent("config", m))
}

/// Size, authorization and invalid-topic errors cannot succeed on retry.
fn classify(step: &'static str, e: KafkaError) -> SinkError {
    let permanent = matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::InvalidTopic
        )
    );
    let too_large = matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize)
    );
    let err = if too_large {
        SinkError::too_large(step, e.to_string())
    } else if permanent {
        SinkError::permanent(step, e.to_string())
    } else {
        SinkError::retriable(step, e.to_string())
    };
    err.with_source(e)
}

impl KafkaSink {
    /// Creates the producer and checks the brokers answer a metadata request.
    pub async fn connect(config: KafkaSinkConfig) -> Result<Self, SinkError> {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &config.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "message.timeout.ms",
                config.message_timeout.as_millis().to_string(),
            )
            .set(
                "queue.buffering.max.messages",
                (config.max_in_flight.max(1) * 2).to_string(),
            );
        for (k, v) in &config.options {
            cc.set(k, resolve(k, v)?);
        }
        let producer: FutureProducer = cc
            .create()
            .map_err(|e| SinkError::permanent("create producer", e.to_string()))?;
        let sink = KafkaSink { producer, config };
        sink.probe().await?;
        Ok(sink)
    }

    async fn probe(&self) -> Result<(), SinkError> {
        let producer = self.producer.clone();
        let brokers = self.config.brokers.clone();
        blocking(move || {
            producer
                .client()
                .fetch_metadata(None, Duration::from_secs(5))
                .map(|_| ())
                .map_err(|e| {
                    SinkError::retriable("connect", format!("Kafka brokers {brokers}"))
                        .with_source(e)
                })
        })
        .await
    }
}

/// librdkafka's metadata calls block: run them off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SinkError> + Send + 'static,
) -> Result<T, SinkError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(SinkError::retriable("blocking call", e.to_string())))
}

impl Sink for KafkaSink {
    fn publish<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<PendingAck, SinkError>> {
        Box::pin(async move {
            let topic = encode::topic(&self.config.topic, &event.route);
            let (headers, value) = encode::record(event, self.config.mode);
            let mut owned = OwnedHeaders::new_with_capacity(headers.len());
            for (k, v) in &headers {
                owned = owned.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
            let mut record = FutureRecord::to(&topic)
                .key(event.route.uid.as_bytes())
                .payload(&value)
                .headers(owned);
            // The local queue is full only when far more than the window is in flight
            // (another dispatcher shares nothing with us): wait for room, never drop.
            let delivery = loop {
                match self.producer.send_result(record) {
                    Ok(d) => break d,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => return Err(classify("publish", e)),
                }
            };
            let pending: PendingAck = Box::pin(async move {
                match delivery.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((e, _))) => Err(classify("delivery", e)),
                    Err(_) => Err(SinkError::retriable(
                        "delivery",
                        "producer dropped the record",
                    )),
                }
            });
            Ok(pending)
        })
    }

    fn healthcheck(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(self.probe())
    }

    fn window(&self) -> usize {
        self.config.max_in_flight.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_values_resolve_from_env_and_files() {
        assert_eq!(resolve("a", "plain").unwrap(), "plain");
        std::env::set_var("CRB_KAFKA_TEST_SECRET", "s3cret");
        assert_eq!(resolve("a", "env:CRB_KAFKA_TEST_SECRET").unwrap(), "s3cret");
        let err = resolve("sasl.password", "env:CRB_KAFKA_TEST_MISSING").unwrap_err();
        assert!(err.to_string().contains("options.sasl.password"), "{err}");
        assert!(!err.to_string().contains("s3cret"));
    }
}
