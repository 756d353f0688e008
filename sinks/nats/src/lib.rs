//! crbridge's NATS JetStream sink.
//!
//! * Subject from a template (`crbridge.{cluster}.{group}.{kind}.{namespace}.{name}`), each
//!   value escaped so it stays one subject token (`crbridge_sink_api::template::escape_token`).
//! * The stream is created if missing (capturing the template's subjects) or verified to
//!   capture them.
//! * Subjects are at most 1024 bytes: a longer one has its longest values shortened to a
//!   prefix plus `-` and a 16-hex-digit hash of the whole value, the same for every event of
//!   an object. A subject template with a wildcard, whitespace or an empty token in its
//!   literal text is a config error (`subject`).
//! * CloudEvents binary mode by default: `ce-*` headers and `content-type`; structured mode
//!   (`application/cloudevents+json` body) as an option. Header values have `%` and control
//!   characters (CR, LF, ...) percent-encoded (a field manager `a\r\nb` is sent as
//!   `a%0D%0Ab`), never handed to async-nats' constructors that panic on them; `tail`
//!   decodes them. See [`encode`].
//! * `Nats-Msg-Id` = event id, so JetStream drops a re-sent event within the stream's
//!   duplicate window.
//! * Every publish returns the future of its PubAck, so the dispatcher keeps a window of
//!   publishes in flight.
//! * TLS (`tls: {caFile, certFile, keyFile, required}`) and authentication (`auth:` one of
//!   `nkeySeedFile`, `credsFile`, `token`, `username` + `password`) map onto
//!   `async_nats::ConnectOptions`; a failed connect names its cause (untrusted server
//!   certificate, client certificate refused, credentials refused, TLS required).
//! * `crbridge tail` reads the stream with an ordered consumer of its own; it connects as
//!   the sink does ([`connect_client`]).
#![forbid(unsafe_code)]

use std::sync::Arc;

use crbridge_sink_api::{
    BoxFuture, ConsumeError, Consumer, Section, SectionError, Sink, SinkConfig, SinkError,
    SinkFactory,
};

mod config;
mod connect;
mod consume;
pub mod encode;
mod sink;

pub use config::{AuthMethod, NatsAuth, NatsSinkConfig, NatsTls};
pub use connect::connect_client;
pub use sink::NatsSink;

/// `type: nats` in crbridge's sink registry.
pub struct NatsFactory;

impl SinkFactory for NatsFactory {
    fn kind(&self) -> &'static str {
        "nats"
    }

    fn configure(&self, section: &Section<'_>) -> Result<Arc<dyn SinkConfig>, SectionError> {
        let mut config = section.parse::<NatsSinkConfig>()?;
        config
            .validate()
            .map_err(|(path, message)| section.invalid(&path, message))?;
        config.name = section.name().to_string();
        Ok(Arc::new(config))
    }
}

impl SinkConfig for NatsSinkConfig {
    fn connect(&self) -> BoxFuture<'static, Result<Arc<dyn Sink>, SinkError>> {
        let config = self.clone();
        Box::pin(async move { Ok(Arc::new(NatsSink::connect(config).await?) as Arc<dyn Sink>) })
    }

    fn consume(
        &self,
        from_start: bool,
    ) -> BoxFuture<'static, Result<Box<dyn Consumer>, ConsumeError>> {
        let config = self.clone();
        Box::pin(async move {
            let consumer = consume::NatsConsumer::subscribe(&config, from_start).await?;
            Ok(Box::new(consumer) as Box<dyn Consumer>)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configure(keys: serde_json::Value) -> Result<Arc<dyn SinkConfig>, SectionError> {
        let word = |path: &_, message: &str| SectionError::Schema {
            path: format!("sinks.secure.{path}"),
            message: message.to_owned(),
        };
        NatsFactory.configure(&Section::new("secure", keys, &word))
    }

    #[test]
    fn configure_names_the_key_path_of_a_broken_rule() {
        let base = serde_json::json!({"url": "tls://h:1", "stream": "S", "subject": "a"});
        let with = |k: &str, v: serde_json::Value| {
            let mut keys = base.clone();
            keys[k] = v;
            keys
        };
        assert!(configure(with("auth", serde_json::json!({"nkeySeedFile": "/u.nk"}))).is_ok());
        let err = configure(with(
            "auth",
            serde_json::json!({"nkeySeedFile": "/u.nk", "credsFile": "/u.creds"}),
        ))
        .err()
        .unwrap();
        assert!(
            err.to_string()
                .starts_with("sinks.secure.auth.credsFile: nkeySeedFile is set too"),
            "{err}"
        );
        let err = configure(with("tls", serde_json::json!({"certFile": "/c"})))
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .starts_with("sinks.secure.tls.keyFile: missing"),
            "{err}"
        );
    }
}
