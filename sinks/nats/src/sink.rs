use async_nats::jetstream::context::{GetStreamErrorKind, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, stream};
use crbridge_sink_api::secret::redact;
use crbridge_sink_api::{BoxFuture, Event, PendingAck, Sink, SinkError};
use tracing::info;

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
        let client = connect_client(&config.url).await?;
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

/// Connects a NATS client to `url` (`env:`/`file:` resolved; credentials passed as options,
/// never inside the URL: the client logs server addresses at DEBUG with whatever the URL
/// holds).
pub async fn connect_client(url: &str) -> Result<async_nats::Client, SinkError> {
    let url = crbridge_sink_api::secret::resolve("url", url)
        .map_err(|m| SinkError::permanent("config", m))?;
    let (bare, user, password) = split_credentials(&url);
    let mut options = async_nats::ConnectOptions::new();
    options = match (user, password) {
        (Some(u), Some(p)) => options.user_and_password(u, p),
        (Some(token), None) => options.token(token),
        _ => options,
    };
    options
        .connection_timeout(std::time::Duration::from_secs(5))
        .connect(bare.as_str())
        .await
        .map_err(|e| {
            SinkError::retriable("connect", format!("NATS at {}", redact(&url))).with_source(e)
        })
}

/// Splits `scheme://user:password@rest` into (`scheme://rest`, user, password).
fn split_credentials(url: &str) -> (String, Option<String>, Option<String>) {
    let Some(s) = url.find("://") else {
        return (url.to_string(), None, None);
    };
    let rest = &url[s + 3..];
    let host_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..host_end].rfind('@') else {
        return (url.to_string(), None, None);
    };
    let creds = &rest[..at];
    let bare = format!("{}{}", &url[..s + 3], &rest[at + 1..]);
    match creds.split_once(':') {
        Some((u, p)) => (bare, Some(u.to_string()), Some(p.to_string())),
        None => (bare, Some(creds.to_string()), None),
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
            let subject = encode::subject(&self.config.subject, &event.route);
            let (headers, body) = encode::message(event, self.config.mode);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_taken_out_of_the_url() {
        assert_eq!(
            split_credentials("nats://u:p@h:4222"),
            ("nats://h:4222".into(), Some("u".into()), Some("p".into()))
        );
        assert_eq!(
            split_credentials("nats://tok@h:4222"),
            ("nats://h:4222".into(), Some("tok".into()), None)
        );
        assert_eq!(
            split_credentials("nats://h:4222"),
            ("nats://h:4222".into(), None, None)
        );
    }
}
