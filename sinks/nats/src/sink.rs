use async_nats::jetstream::context::{GetStreamErrorKind, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, stream};
use crbridge_sink_api::{BoxFuture, Event, PendingAck, Sink, SinkError};
use tracing::info;

use crate::connect_client;
use crate::encode;
use crate::NatsSinkConfig;

/// A connected JetStream sink.
pub struct NatsSink {
    js: jetstream::Context,
    config: NatsSinkConfig,
    filter: String,
}

impl NatsSink {
    /// Connects and creates or verifies the stream. Connection failures are retriable;
    /// a stream that exists but does not capture the subjects is permanent (operator action).
    pub async fn connect(config: NatsSinkConfig) -> Result<Self, SinkError> {
        let client = connect_client(&config).await?;
        let js = jetstream::ContextBuilder::new()
            .timeout(config.ack_timeout)
            .max_ack_inflight(config.max_in_flight.max(1))
            .backpressure_on_inflight(true)
            .build(client);
        let filter = encode::stream_filter(&config.subject);
        let sink = NatsSink { js, config, filter };
        sink.ensure_stream().await?;
        Ok(sink)
    }

    async fn ensure_stream(&self) -> Result<(), SinkError> {
        let name = &self.config.stream;
        match self.js.get_stream(name).await {
            Ok(mut s) => {
                let info = s.info().await.map_err(|e| {
                    SinkError::retriable("stream info", format!("stream {name}")).with_source(e)
                })?;
                if info
                    .config
                    .subjects
                    .iter()
                    .any(|f| encode::covers(f, &self.filter))
                {
                    Ok(())
                } else {
                    Err(SinkError::permanent(
                        "verify stream",
                        format!(
                            "stream {name} exists but its subjects {:?} do not capture {}; add it to the stream or change the subject template",
                            info.config.subjects, self.filter
                        ),
                    ))
                }
            }
            Err(e) => {
                let not_found = matches!(e.kind(), GetStreamErrorKind::JetStream(ref j)
                    if j.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND);
                if !not_found {
                    return Err(
                        SinkError::retriable("stream info", format!("stream {name}"))
                            .with_source(e),
                    );
                }
                if !self.config.create_stream {
                    return Err(SinkError::permanent(
                        "verify stream",
                        format!("stream {name} does not exist and createStream is false"),
                    ));
                }
                self.js
                    .create_stream(stream::Config {
                        name: name.clone(),
                        subjects: vec![self.filter.clone()],
                        duplicate_window: self.config.duplicate_window,
                        storage: stream::StorageType::File,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| {
                        SinkError::retriable("create stream", format!("stream {name}"))
                            .with_source(e)
                    })?;
                info!(stream = %name, subjects = %self.filter, "created JetStream stream");
                Ok(())
            }
        }
    }
}

fn classify(step: &'static str, kind: PublishErrorKind, msg: String) -> SinkError {
    match kind {
        PublishErrorKind::MaxPayloadExceeded => SinkError::too_large(step, msg),
        _ => SinkError::retriable(step, msg),
    }
}

impl Sink for NatsSink {
    fn publish<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<PendingAck, SinkError>> {
        Box::pin(async move {
            let subject = encode::subject(&self.config.subject, &event.route)?;
            let (headers, body) = encode::message(event, self.config.mode)?;
            let ack = self
                .js
                .send_publish(
                    subject,
                    PublishMessage::build().headers(headers).payload(body),
                )
                .await
                .map_err(|e| classify("publish", e.kind(), e.to_string()))?;
            let pending: PendingAck = Box::pin(async move {
                ack.await
                    .map(|_| ())
                    .map_err(|e| classify("ack", e.kind(), e.to_string()))
            });
            Ok(pending)
        })
    }

    fn healthcheck(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            let mut s = self.js.get_stream(&self.config.stream).await.map_err(|e| {
                SinkError::retriable("healthcheck", format!("stream {}", self.config.stream))
                    .with_source(e)
            })?;
            s.info().await.map_err(|e| {
                SinkError::retriable("healthcheck", format!("stream {}", self.config.stream))
                    .with_source(e)
            })?;
            Ok(())
        })
    }

    fn window(&self) -> usize {
        self.config.max_in_flight.max(1)
    }
}
