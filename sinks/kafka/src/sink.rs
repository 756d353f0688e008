use std::time::{Duration, Instant};

use crbridge_sink_api::{BoxFuture, Event, PendingAck, Sink, SinkError};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use tracing::warn;

use crate::client::{self, KafkaContext, LastCause};
use crate::encode;
use crate::security::SaslMechanism;
use crate::KafkaSinkConfig;

/// How long connect and healthcheck wait for the brokers' metadata. 5 s: a TLS handshake
/// and a SCRAM exchange take well under a second on a healthy network, and `crbridge
/// check` gives a sink 15 s in all.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A Kafka sink: one idempotent producer.
pub struct KafkaSink {
    producer: FutureProducer<KafkaContext>,
    cause: LastCause,
    config: KafkaSinkConfig,
}

/// Size and invalid-topic errors cannot succeed on retry. Authentication and authorization
/// failures are retriable: they clear when an operator fixes the credentials or the ACLs,
/// and until then the sink waits at the event instead of dead-lettering every one.
/// A retriable error carries librdkafka's last asynchronous cause (`cause`), which says
/// more than "Message timed out".
fn classify(step: &'static str, e: KafkaError, cause: Option<String>) -> SinkError {
    let code = e.rdkafka_error_code();
    let too_large = matches!(
        code,
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize)
    );
    let err = if too_large {
        SinkError::too_large(step, e.to_string())
    } else if code == Some(RDKafkaErrorCode::InvalidTopic) {
        SinkError::permanent(step, e.to_string())
    } else {
        match cause {
            Some(c) => SinkError::retriable(step, format!("{e} (last broker error: {c})")),
            None => SinkError::retriable(step, e.to_string()),
        }
    };
    err.with_source(e)
}

impl KafkaSink {
    /// Creates the producer and checks the brokers answer a metadata request.
    pub async fn connect(config: KafkaSinkConfig) -> Result<Self, SinkError> {
        let mut cc =
            client::settings(&config, |_| true).map_err(|m| SinkError::permanent("config", m))?;
        cc.set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "message.timeout.ms",
                config.message_timeout.as_millis().to_string(),
            )
            .set(
                "queue.buffering.max.messages",
                (config.max_in_flight.max(1) * 2).to_string(),
            );
        if let (Some(sasl), None) = (&config.sasl, &config.tls) {
            // Allowed (a private network, a mesh that encrypts) but worth a line each connect.
            let why = if sasl.mechanism == SaslMechanism::Plain {
                "PLAIN sends the password itself unencrypted"
            } else {
                "the credentials exchange and every event travel unencrypted"
            };
            warn!(sink = %config.name, mechanism = sasl.mechanism.as_str(), "sasl without tls (SASL_PLAINTEXT): {why}; add tls to encrypt");
        }
        let cause = LastCause::default();
        let producer: FutureProducer<KafkaContext> = cc
            .create_with_context(KafkaContext::new(&config.name, cause.clone()))
            .map_err(|e| SinkError::permanent("create producer", e.to_string()))?;
        let sink = KafkaSink {
            producer,
            cause,
            config,
        };
        sink.probe().await?;
        Ok(sink)
    }

    /// Asks for metadata until the brokers answer, `PROBE_TIMEOUT` passes, or librdkafka
    /// reported why they cannot (then at once, with that cause).
    async fn probe(&self) -> Result<(), SinkError> {
        let producer = self.producer.clone();
        let cause = self.cause.clone();
        let config = self.config.clone();
        blocking(move || {
            let brokers = &config.brokers;
            let deadline = Instant::now() + PROBE_TIMEOUT;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let attempt = left.min(Duration::from_secs(1));
                match producer.client().fetch_metadata(None, attempt) {
                    Ok(_) => {
                        cause.clear();
                        return Ok(());
                    }
                    Err(e) => {
                        if let Some(c) = cause.get() {
                            return Err(SinkError::retriable(
                                "connect",
                                format!(
                                    "Kafka brokers {brokers}: {}",
                                    client::explain(&c, &config)
                                ),
                            ));
                        }
                        if Instant::now() >= deadline {
                            return Err(SinkError::retriable(
                                "connect",
                                format!(
                                    "Kafka brokers {brokers}: no metadata within {PROBE_TIMEOUT:?}"
                                ),
                            )
                            .with_source(e));
                        }
                    }
                }
            }
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

impl KafkaSink {
    /// Hands `record` to librdkafka. The local queue is full only when far more than the
    /// window is in flight (another dispatcher shares nothing with us): wait for room,
    /// never drop.
    async fn send(
        &self,
        mut record: FutureRecord<'_, [u8], [u8]>,
    ) -> Result<DeliveryFuture, SinkError> {
        loop {
            match self.producer.send_result(record) {
                Ok(d) => return Ok(d),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(classify("publish", e, self.cause.get())),
            }
        }
    }
}

/// Waits for one record's delivery report.
async fn delivered(delivery: DeliveryFuture, cause: &LastCause) -> Result<(), SinkError> {
    match delivery.await {
        Ok(Ok(_)) => {
            cause.clear();
            Ok(())
        }
        Ok(Err((e, _))) => Err(classify("delivery", e, cause.get())),
        Err(_) => Err(SinkError::retriable(
            "delivery",
            "producer dropped the record",
        )),
    }
}

impl Sink for KafkaSink {
    fn publish<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<PendingAck, SinkError>> {
        Box::pin(async move {
            let topic = encode::topic(&self.config.topic, &event.route)?;
            let (headers, value) = encode::record(event, self.config.mode);
            let mut owned = OwnedHeaders::new_with_capacity(headers.len());
            for (k, v) in &headers {
                owned = owned.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
            let key = event.route.uid.as_bytes();
            let record = FutureRecord::to(&topic)
                .key(key)
                .payload(value.as_slice())
                .headers(owned);
            let delivery = self.send(record).await?;
            // The tombstone goes right after its deleted event, with the same key, so into
            // the same partition and in order (idempotent producer). It belongs to the same
            // pending ack: the cursor passes the deleted event only once both are written,
            // so a crash between them re-sends both and never loses the tombstone.
            let tombstone = if encode::wants_tombstone(event, self.config.tombstones) {
                Some(self.send(FutureRecord::to(&topic).key(key)).await?)
            } else {
                None
            };
            let cause = self.cause.clone();
            let pending: PendingAck = Box::pin(async move {
                delivered(delivery, &cause).await?;
                if let Some(t) = tombstone {
                    delivered(t, &cause).await?;
                }
                Ok(())
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
    use crbridge_sink_api::ErrorClass;

    #[test]
    fn auth_failures_are_retriable_and_carry_the_cause() {
        let e = classify(
            "delivery",
            KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed),
            None,
        );
        assert_eq!(e.class, ErrorClass::Retriable);
        let e = classify(
            "delivery",
            KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
            Some("SASL authentication error: invalid credentials".into()),
        );
        assert_eq!(e.class, ErrorClass::Retriable);
        assert!(
            e.message
                .ends_with("(last broker error: SASL authentication error: invalid credentials)"),
            "{e}"
        );
        let e = classify(
            "delivery",
            KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
            Some("x".into()),
        );
        assert_eq!(e.class, ErrorClass::TooLarge);
        let e = classify(
            "delivery",
            KafkaError::MessageProduction(RDKafkaErrorCode::InvalidTopic),
            None,
        );
        assert_eq!(e.class, ErrorClass::Permanent);
    }

    #[test]
    fn option_values_resolve_from_env_and_names_the_key() {
        let mut c: KafkaSinkConfig = serde_saphyr::from_str(
            "brokers: h\ntopic: t\noptions: {sasl.password: \"env:CRB_KAFKA_TEST_MISSING\"}\n",
        )
        .unwrap();
        c.name = "k".into();
        let err = client::settings(&c, |_| true).unwrap_err();
        assert_eq!(
            err,
            "options.sasl.password: environment variable CRB_KAFKA_TEST_MISSING is not set"
        );
    }
}
