//! What every librdkafka client of a Kafka sink (the producer, `tail`'s consumer) shares:
//! its settings and its context.
//!
//! librdkafka reports a refused TLS handshake or login only asynchronously, through the
//! error callback, while the call that waited for the broker just times out. The context
//! keeps the last such cause ([`LastCause`]) so that connect, healthcheck and publish errors
//! can say *why* ("certificate verify failed", "invalid credentials") instead of "timed
//! out". librdkafka reports an error once until it changes ("identical error(s)
//! suppressed"), so the cause is kept until the brokers answer again, not for a time.
//!
//! librdkafka's log lines go to `tracing` (target `librdkafka`). librdkafka itself redacts
//! sensitive properties (`sasl.password`, `ssl.key.password`, ...) in what it logs, including
//! its configuration dump under `debug: conf`.

use std::sync::{Arc, Mutex, PoisonError};

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tracing::{debug, info, warn};

use crate::KafkaSinkConfig;

/// The last error librdkafka reported for one client, shared with the sink.
#[derive(Clone, Default)]
pub(crate) struct LastCause(Arc<Mutex<Option<String>>>);

impl LastCause {
    /// The cause, if the brokers have not answered since it was reported.
    pub(crate) fn get(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The brokers answered: whatever failed before is over.
    pub(crate) fn clear(&self) {
        let mut cause = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if cause.is_some() {
            *cause = None;
        }
    }

    fn set(&self, cause: String) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(cause);
    }
}

/// The context of a sink's librdkafka clients.
pub(crate) struct KafkaContext {
    sink: String,
    cause: LastCause,
}

impl KafkaContext {
    /// A context for sink `sink` recording into `cause`.
    pub(crate) fn new(sink: &str, cause: LastCause) -> Self {
        KafkaContext {
            sink: sink.to_owned(),
            cause,
        }
    }
}

/// Whether `code` only summarises other failures (and would hide their cause).
fn is_summary(code: Option<RDKafkaErrorCode>) -> bool {
    matches!(code, Some(RDKafkaErrorCode::AllBrokersDown))
}

impl ClientContext for KafkaContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        // `FAIL` lines are a broker connection's failures; some (a peer closing the
        // connection during the first request, as a TLS port does to a plaintext client)
        // reach no error callback.
        if fac == "FAIL" {
            // Without librdkafka's thread name: `[thrd:host:port/bootstrap]: host:port/...`.
            let text = match log_message.split_once("]: ") {
                Some((thread, rest)) if thread.starts_with("[thrd:") => rest,
                _ => log_message,
            };
            self.cause.set(text.to_owned());
        }
        // librdkafka's ERROR lines repeat what its error callback reports (below) and the
        // sink reports again with its own step: a warning here, as for a retried failure.
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => {
                warn!(target: "librdkafka", sink = %self.sink, facility = fac, "{log_message}")
            }
            RDKafkaLogLevel::Notice => {
                info!(target: "librdkafka", sink = %self.sink, facility = fac, "{log_message}")
            }
            RDKafkaLogLevel::Info | RDKafkaLogLevel::Debug => {
                debug!(target: "librdkafka", sink = %self.sink, facility = fac, "{log_message}")
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if is_summary(error.rdkafka_error_code()) {
            debug!(target: "librdkafka", sink = %self.sink, error = %error, "{reason}");
        } else {
            self.cause.set(reason.to_owned());
            warn!(target: "librdkafka", sink = %self.sink, error = %error, "{reason}");
        }
    }
}

impl ConsumerContext for KafkaContext {}

/// `cause` with what it usually means when librdkafka's words alone do not say it.
pub(crate) fn explain(cause: &str, config: &KafkaSinkConfig) -> String {
    let tls = config.tls.is_some()
        || config
            .options
            .get("security.protocol")
            .is_some_and(|p| p.eq_ignore_ascii_case("SSL") || p.eq_ignore_ascii_case("SASL_SSL"));
    if !tls && cause.contains("in state APIVERSION_QUERY") {
        // A TLS listener drops a plaintext request without an answer.
        format!("{cause} (the brokers closed the connection at the first request: is this a TLS listener? then set tls, or security.protocol SSL / SASL_SSL)")
    } else {
        cause.to_owned()
    }
}

/// Settings of a client of `config`'s brokers: bootstrap servers, the properties of `tls`
/// and `sasl`, and the `options` for which `pass` is true; secrets read now. Errors name
/// the key, never a value.
pub(crate) fn settings(
    config: &KafkaSinkConfig,
    pass: impl Fn(&str) -> bool,
) -> Result<ClientConfig, String> {
    let mut cc = ClientConfig::new();
    // Every level: the `FAIL` lines the context keeps as causes are INFO, and `tracing`
    // filters what it shows anyway. Debug lines come only with librdkafka's `debug` option.
    cc.set_log_level(RDKafkaLogLevel::Debug);
    cc.set("bootstrap.servers", &config.brokers);
    for (k, v) in config.security_properties()? {
        cc.set(k, v);
    }
    for (k, v) in config.options.iter().filter(|(k, _)| pass(k)) {
        cc.set(
            k,
            crbridge_sink_api::secret::resolve(&format!("options.{k}"), v)?,
        );
    }
    Ok(cc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_survives_a_summary_and_clears() {
        let cause = LastCause::default();
        let ctx = KafkaContext::new("k", cause.clone());
        ctx.error(
            KafkaError::Global(RDKafkaErrorCode::Authentication),
            "SASL authentication error: invalid credentials",
        );
        ctx.error(
            KafkaError::Global(RDKafkaErrorCode::AllBrokersDown),
            "1/1 brokers are down",
        );
        assert_eq!(
            cause.get().as_deref(),
            Some("SASL authentication error: invalid credentials")
        );
        ctx.log(
            RDKafkaLogLevel::Info,
            "FAIL",
            "[thrd:b:9093/bootstrap]: b:9093/bootstrap: Disconnected (after 2ms in state APIVERSION_QUERY)",
        );
        assert_eq!(
            cause.get().as_deref(),
            Some("b:9093/bootstrap: Disconnected (after 2ms in state APIVERSION_QUERY)")
        );
        cause.clear();
        assert_eq!(cause.get(), None);
    }

    #[test]
    fn a_dropped_first_request_without_tls_hints_at_a_tls_listener() {
        let mut c: KafkaSinkConfig = serde_saphyr::from_str("brokers: h\ntopic: t\n").unwrap();
        let cause = "h/bootstrap: Disconnected (after 1ms in state APIVERSION_QUERY)";
        assert!(explain(cause, &c).ends_with(
            "is this a TLS listener? then set tls, or security.protocol SSL / SASL_SSL)"
        ));
        c.tls = Some(Default::default());
        assert_eq!(explain(cause, &c), cause);
    }

    #[test]
    fn settings_map_first_class_keys_and_pass_options() {
        let mut c: KafkaSinkConfig = serde_saphyr::from_str(
            "brokers: h:9093\ntopic: t\ntls: {caFile: /ca.crt}\nsasl: {mechanism: PLAIN, username: u, password: \"env:CRB_KAFKA_CLIENT_TEST_PW\"}\noptions: {linger.ms: \"5\", compression.type: lz4}\n",
        )
        .unwrap();
        c.name = "k".into();
        std::env::set_var("CRB_KAFKA_CLIENT_TEST_PW", "pw");
        let cc = settings(&c, |k| k == "linger.ms").unwrap();
        assert_eq!(cc.get("bootstrap.servers"), Some("h:9093"));
        assert_eq!(cc.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(cc.get("ssl.ca.location"), Some("/ca.crt"));
        assert_eq!(cc.get("sasl.mechanism"), Some("PLAIN"));
        assert_eq!(cc.get("sasl.password"), Some("pw"));
        assert_eq!(cc.get("linger.ms"), Some("5"));
        assert_eq!(cc.get("compression.type"), None);
        // rdkafka's own Debug of the settings leaves the password out.
        assert!(!format!("{cc:?}").contains("\"pw\""));
    }
}
