use async_nats::jetstream::context::{GetStreamErrorKind, PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, stream, ErrorCode};
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

/// The class of a failed publish or PubAck.
///
/// * Too large: the client's own check against the server's `max_payload`
///   (`MaxPayloadExceeded`), or JetStream refusing a message over the stream's
///   `max_msg_size` (error code 10054, "message size exceeds maximum allowed").
/// * Everything else is retriable. A publish the account may not make (a permissions
///   violation) is dropped by the server with an `-ERR` on the connection and never acked:
///   it times out here, so the sink waits at the event until the permission is granted.
fn classify(step: &'static str, e: PublishError) -> SinkError {
    let msg = e.to_string();
    let too_large = match e.kind() {
        PublishErrorKind::MaxPayloadExceeded => true,
        PublishErrorKind::Other => std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<jetstream::Error>())
            .is_some_and(|j| {
                j.error_code() == ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM
                    || j.to_string().contains("exceeds maximum allowed")
            }),
        _ => false,
    };
    let err = if too_large {
        SinkError::too_large(step, msg)
    } else {
        SinkError::retriable(step, msg)
    };
    err.with_source(e)
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
                .map_err(|e| classify("publish", e))?;
            let pending: PendingAck =
                Box::pin(async move { ack.await.map(|_| ()).map_err(|e| classify("ack", e)) });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crbridge_sink_api::ErrorClass;

    /// A JetStream API error as the server sends it in a PubAck.
    fn api_error(code: u64, description: &str) -> jetstream::Error {
        serde_json::from_value(serde_json::json!({
            "code": 400, "err_code": code, "description": description
        }))
        .unwrap()
    }

    #[test]
    fn size_refusals_are_too_large() {
        let e = PublishError::new(PublishErrorKind::MaxPayloadExceeded);
        assert_eq!(classify("publish", e).class, ErrorClass::TooLarge);
        let e = PublishError::with_source(
            PublishErrorKind::Other,
            api_error(10054, "message size exceeds maximum allowed"),
        );
        let e = classify("ack", e);
        assert_eq!(e.class, ErrorClass::TooLarge);
        assert!(e.message.contains("exceeds maximum allowed"), "{e}");
    }

    #[test]
    fn unacked_and_other_failures_are_retriable() {
        // A permissions violation is never acked: the PubAck times out.
        for kind in [
            PublishErrorKind::TimedOut,
            PublishErrorKind::BrokenPipe,
            PublishErrorKind::StreamNotFound,
        ] {
            let e = classify("ack", PublishError::new(kind));
            assert_eq!(e.class, ErrorClass::Retriable, "{kind}");
        }
        let e = PublishError::with_source(
            PublishErrorKind::Other,
            api_error(10077, "maximum messages exceeded"),
        );
        assert_eq!(classify("ack", e).class, ErrorClass::Retriable);
    }
}
