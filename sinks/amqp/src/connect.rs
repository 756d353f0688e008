//! The one way this crate opens an AMQP connection: the sink and the `tail` consumer both
//! come here, so they reach the broker with the same TLS and credentials.
//!
//! * `amqps://` is TLS (rustls) or nothing: the TLS transport is compiled in, and the
//!   unit test `amqps_starts_with_a_tls_client_hello` proves the first bytes on the wire are
//!   a TLS handshake, not the AMQP protocol header.
//! * A `tls` section with an `amqp://` URL is refused, at config check when the URL is in
//!   the file, here with the same words when it comes from `env:` / `file:`: TLS settings
//!   must never end up on a plaintext connection.
//! * `tls.caFile` is trusted in addition to the system's roots; `certFile` + `keyFile` are
//!   presented as the client certificate (mutual TLS).
//! * A failure names its cause in operator terms (untrusted broker certificate, client
//!   certificate refused, login refused, TLS port spoken to in plaintext and the other way
//!   round). URLs are shown redacted; the password never appears.

use std::fmt;
use std::io;

use crbridge_sink_api::secret::redact;
use crbridge_sink_api::{ConsumeError, SinkError};
use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Connection, ConnectionProperties, ErrorKind};
use rustls::{AlertDescription, CertificateError};

use crate::config::is_secret_reference;
use crate::AmqpSinkConfig;

use crate::encode::SHORT_STRING_MAX;

/// Why a connection could not be opened.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// The settings cannot work (URL scheme, TLS files): trying again changes nothing until
    /// the operator acts.
    Config(String),
    /// The broker could not be reached or refused us.
    Broker {
        /// The URL, redacted.
        url: String,
        /// What went wrong, for the operator.
        cause: String,
    },
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Config(m) => f.write_str(m),
            ConnectError::Broker { url, cause } => write!(f, "AMQP at {url}: {cause}"),
        }
    }
}

impl std::error::Error for ConnectError {}

impl From<ConnectError> for SinkError {
    fn from(e: ConnectError) -> SinkError {
        match e {
            ConnectError::Config(m) => SinkError::permanent("config", m),
            e @ ConnectError::Broker { .. } => SinkError::retriable("connect", e.to_string()),
        }
    }
}

impl From<ConnectError> for ConsumeError {
    fn from(e: ConnectError) -> ConsumeError {
        ConsumeError::Failed(e.to_string())
    }
}

/// A URL for messages: redacted, or hidden entirely when its shape defeats redaction.
pub(crate) fn shown(url: &str) -> String {
    let r = redact(url);
    if r == url && url.contains('@') {
        "(hidden: it may hold a password)".into()
    } else {
        r
    }
}

/// Parses `url` and checks it against the `tls` section; on error the key (inside the sink's
/// section) and what is wrong, never the password.
pub(crate) fn check_url(url: &str, tls: bool) -> Result<(), (String, String)> {
    parse(url, tls).map(drop)
}

fn parse(url: &str, tls: bool) -> Result<AMQPUri, (String, String)> {
    let uri: AMQPUri = url.parse().map_err(|e: String| {
        let scheme = url.split_once(':').map_or("", |(s, _)| s);
        let why = if e.starts_with("Invalid URL") || e.contains(url) {
            "not a URL".to_string()
        } else {
            e
        };
        (
            "url".to_string(),
            format!(
                "{} ({scheme}:) is not a usable AMQP URL: {why} (expected amqps://user:password@host:5671/vhost, or amqp://… for plaintext)",
                shown(url)
            ),
        )
    })?;
    if uri.vhost.len() > SHORT_STRING_MAX {
        return Err((
            "url".to_string(),
            format!(
                "the vhost of {} is {} bytes long (expected at most {SHORT_STRING_MAX})",
                shown(url),
                uri.vhost.len()
            ),
        ));
    }
    if tls && uri.scheme == AMQPScheme::AMQP {
        return Err((
            "tls".to_string(),
            format!(
                "is set, but url {} is amqp:// (plaintext), which would never use it: TLS needs an amqps:// URL (expected url amqps://…, or no tls section for a plaintext broker)",
                shown(url)
            ),
        ));
    }
    Ok(uri)
}

/// Opens a connection for `config`: resolves the URL, checks it, reads the TLS files, and
/// connects (TLS for `amqps://`). Returns the connection and the redacted URL.
pub(crate) async fn connect(config: &AmqpSinkConfig) -> Result<(Connection, String), ConnectError> {
    let key = |k: &str| format!("sinks.{}.{k}", config.name);
    let secret_url = crbridge_sink_api::secret::resolve(&key("url"), &config.url)
        .map_err(ConnectError::Config)?;
    let uri = parse(&secret_url, config.tls.is_some()).map_err(|(k, m)| {
        let from = if is_secret_reference(&config.url) {
            // Which variable or file: the reference holds no secret itself.
            format!(" (url from {})", config.url)
        } else {
            String::new()
        };
        ConnectError::Config(format!("{}: {m}{from}", key(&k)))
    })?;
    let url = shown(&secret_url);
    let tls = match &config.tls {
        Some(t) => {
            tls_config(t).map_err(|m| ConnectError::Config(format!("sinks.{}.{m}", config.name)))?
        }
        None => OwnedTLSConfig::default(),
    };
    let runtime = lapin::runtime::default_runtime().map_err(|e| ConnectError::Broker {
        url: url.clone(),
        cause: e.to_string(),
    })?;
    let encrypted = uri.scheme == AMQPScheme::AMQPS;
    let endpoint = format!("{}:{}", uri.authority.host, uri.authority.port);
    match Connection::connect_uri_with_config(uri, ConnectionProperties::default(), tls, runtime)
        .await
    {
        Ok(c) => Ok((c, url)),
        Err(e) => Err(ConnectError::Broker {
            url,
            cause: explain(&e, encrypted, &endpoint),
        }),
    }
}

/// The lapin TLS settings of a `tls` section; on error the key (`tls.…`) and what is wrong.
fn tls_config(t: &crbridge_sink_api::tls::TlsConfig) -> Result<OwnedTLSConfig, String> {
    let material = t.load().map_err(|e| e.to_string())?;
    let ca = match material.ca {
        Some(pem) => {
            require_pem(&pem, "tls.caFile", "CERTIFICATE")?;
            // Read as text by the TLS layer; PEM is ASCII.
            Some(
                String::from_utf8(pem)
                    .map_err(|_| "tls.caFile: not a PEM text file".to_string())?,
            )
        }
        None => None,
    };
    let identity = match material.identity {
        Some((cert, key)) => {
            require_pem(&cert, "tls.certFile", "CERTIFICATE")?;
            if pem_labels(&key).any(|l| l == "ENCRYPTED PRIVATE KEY") {
                return Err("tls.keyFile: the key is encrypted (expected an unencrypted PEM key, e.g. `openssl pkcs8 -topk8 -nocrypt`)".into());
            }
            if !pem_labels(&key).any(|l| l.ends_with("PRIVATE KEY")) {
                return Err("tls.keyFile: no PEM private key in it (expected -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)".into());
            }
            Some(OwnedIdentity::PKCS8 { pem: cert, key })
        }
        None => None,
    };
    Ok(OwnedTLSConfig {
        identity,
        cert_chain: ca,
    })
}

/// The labels of the PEM blocks in `bytes` (`CERTIFICATE`, `PRIVATE KEY`, …).
fn pem_labels(bytes: &[u8]) -> impl Iterator<Item = &str> {
    std::str::from_utf8(bytes)
        .unwrap_or("")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
}

/// `bytes` hold at least one PEM block `label`; else what `key` should hold.
fn require_pem(bytes: &[u8], key: &str, label: &str) -> Result<(), String> {
    if pem_labels(bytes).any(|l| l == label) {
        Ok(())
    } else {
        Err(format!(
            "{key}: no PEM {} in it (expected -----BEGIN {label}-----)",
            label.to_lowercase()
        ))
    }
}

/// A connect failure in operator terms; `encrypted` is whether the URL asked for TLS.
fn explain(e: &lapin::Error, encrypted: bool, endpoint: &str) -> String {
    match e.kind() {
        ErrorKind::IOError(io) => explain_io(io, encrypted, endpoint),
        ErrorKind::ProtocolError(amqp) => match amqp.kind() {
            AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)
            | AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED) => format!(
                "the broker refused the login: wrong user name or password, or the user may not use this vhost ({})",
                amqp.get_message().as_str()
            ),
            _ => format!("the broker closed the connection: {amqp}"),
        },
        ErrorKind::ParsingError(_) | ErrorKind::InvalidProtocolVersion(_) if !encrypted => format!(
            "{endpoint} does not answer in AMQP: if it is a TLS port, use an amqps:// URL ({e})"
        ),
        _ => e.to_string(),
    }
}

fn explain_io(io: &io::Error, encrypted: bool, endpoint: &str) -> String {
    if let Some(tls) = io
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return explain_tls(tls, endpoint);
    }
    match io.kind() {
        io::ErrorKind::ConnectionRefused => {
            format!("connection refused: nothing listens at {endpoint}")
        }
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe
            if encrypted =>
        {
            format!("the broker closed the connection during the TLS handshake ({io}): it may require a client certificate (tls.certFile and tls.keyFile) or refuse the one given")
        }
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => format!(
            "the broker closed the connection before the AMQP handshake ({io}): if {endpoint} is a TLS port, use an amqps:// URL"
        ),
        _ => format!("network error: {io}"),
    }
}

fn explain_tls(e: &rustls::Error, endpoint: &str) -> String {
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "TLS: the broker's certificate is not signed by a trusted CA (set tls.caFile to the CA that signed it) ({e})"
        ),
        E::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!("TLS: the broker's certificate is not valid for the host in the URL ({e})"),
        E::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => format!("TLS: the broker's certificate has expired ({e})"),
        E::InvalidCertificate(_) => format!("TLS: the broker's certificate was refused ({e})"),
        E::AlertReceived(AlertDescription::CertificateRequired) => {
            "TLS: the broker requires a client certificate (set tls.certFile and tls.keyFile)".into()
        }
        E::AlertReceived(
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateRevoked
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::AccessDenied,
        ) => format!("TLS: the broker refused the client certificate (tls.certFile) ({e})"),
        E::AlertReceived(AlertDescription::HandshakeFailure) => format!(
            "TLS: the broker refused the handshake: it may require a client certificate (tls.certFile and tls.keyFile) ({e})"
        ),
        E::InvalidMessage(_) | E::InappropriateMessage { .. } => format!(
            "TLS: {endpoint} does not answer in TLS: is it a plaintext AMQP port? An amqps:// URL needs the broker's TLS listener ({e})"
        ),
        _ => format!("TLS handshake failed ({e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> AmqpSinkConfig {
        let mut c: AmqpSinkConfig =
            serde_saphyr::from_str(&format!("exchange: x\nroutingKey: k\n{yaml}")).unwrap();
        c.name = "rabbit".into();
        c
    }

    /// Whatever the build, `amqps://` must start a TLS handshake: a server that reads the
    /// first bytes sees a TLS record (0x16 handshake, version 3.x), never `AMQP`.
    #[tokio::test]
    async fn amqps_starts_with_a_tls_client_hello() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut first = [0u8; 3];
            s.read_exact(&mut first).await.unwrap();
            first
        });
        let c = config(&format!("url: amqps://u:hunter2@127.0.0.1:{port}/%2f\n"));
        let client = tokio::spawn(async move { connect(&c).await.map(drop) });
        let first = server.await.unwrap();
        assert_eq!(first[0], 0x16, "a TLS handshake record, got {first:?}");
        assert_eq!(first[1], 3, "TLS version 3.x, got {first:?}");
        assert_ne!(&first, b"AMQ");
        // The server hangs up: the client fails, without the password.
        let err = client.await.unwrap().unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[tokio::test]
    async fn tls_with_a_plaintext_url_from_the_environment_is_refused_when_connecting() {
        std::env::set_var(
            "CRB_AMQP_TEST_PLAIN_URL",
            "amqp://u:hunter2@127.0.0.1:1/%2f",
        );
        let c = config("url: env:CRB_AMQP_TEST_PLAIN_URL\ntls: {}\n");
        let err = connect(&c).await.map(drop).unwrap_err();
        let shown = err.to_string();
        assert!(matches!(err, ConnectError::Config(_)), "{shown}");
        assert!(shown.starts_with("sinks.rabbit.tls: "), "{shown}");
        assert!(shown.contains("amqp://"), "{shown}");
        assert!(shown.contains("CRB_AMQP_TEST_PLAIN_URL"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[tokio::test]
    async fn unreadable_or_wrong_tls_files_name_their_key() {
        let dir = std::env::temp_dir().join(format!("crb-amqp-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("ca.crt");
        std::fs::write(&not_pem, "hello").unwrap();
        let c = config(&format!(
            "url: amqps://127.0.0.1:1/%2f\ntls: {{caFile: {}}}\n",
            not_pem.display()
        ));
        let err = connect(&c).await.map(drop).unwrap_err().to_string();
        assert!(
            err.starts_with("sinks.rabbit.tls.caFile: no PEM certificate"),
            "{err}"
        );
        let cert = dir.join("c.crt");
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let key = dir.join("c.key");
        std::fs::write(&key, "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAA==\n").unwrap();
        let c = config(&format!(
            "url: amqps://127.0.0.1:1/%2f\ntls: {{certFile: {}, keyFile: {}}}\n",
            cert.display(),
            key.display()
        ));
        let err = connect(&c).await.map(drop).unwrap_err().to_string();
        assert!(
            err.starts_with("sinks.rabbit.tls.keyFile: the key is encrypted"),
            "{err}"
        );
        let c = config("url: amqps://127.0.0.1:1/%2f\ntls: {caFile: /nonexistent/ca.crt}\n");
        let err = connect(&c).await.map(drop).unwrap_err().to_string();
        assert!(
            err.starts_with("sinks.rabbit.tls.caFile: cannot read"),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn urls_that_defeat_redaction_are_hidden() {
        assert_eq!(shown("amqps://u:p@h:5671/%2f"), "amqps://***@h:5671/%2f");
        assert!(!shown("amqp:u:hunter2@h").contains("hunter2"));
    }
}
