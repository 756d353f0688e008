//! Connecting to the NATS server of a sink config: the URL (`env:`/`file:` resolved,
//! credentials taken out of it), TLS and authentication mapped onto
//! [`async_nats::ConnectOptions`], and a failed connect worded by its cause.
//!
//! One function for the sink and for `crbridge tail`, so both connect the same way.
//!
//! Secrets (seed, token, password) are read here, at connect time, and handed to the client
//! only: they are never part of a message. The client itself redacts them from its CONNECT
//! trace and never logs a seed (it sends only the public key and a signature).

use std::path::Path;
use std::time::Duration;

use async_nats::{ConnectErrorKind, ConnectOptions, Event};
use crbridge_sink_api::secret::{redact, resolve};
use crbridge_sink_api::SinkError;
use tracing::{debug, warn};

use crate::config::{AuthMethod, NatsAuth};
use crate::NatsSinkConfig;

/// How long one connect (TCP, TLS handshake, CONNECT/PONG) may take. A LAN server answers
/// in milliseconds; 5 s leaves room for a slow TLS peer yet reports a dead one before
/// `crbridge check`'s 15 s per sink.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects a NATS client as `config` says. Config problems found only now (unreadable
/// files, an unset `env:` variable) are permanent; a refused or failed connect is retriable
/// (a certificate or a credential gets fixed while crbridge retries) and names its cause.
pub async fn connect_client(config: &NatsSinkConfig) -> Result<async_nats::Client, SinkError> {
    let url = resolve("url", &config.url).map_err(|m| SinkError::permanent("config", m))?;
    let (bare, user, password) = split_credentials(&url);
    let shown = redact(&url);
    let mut setup = Setup {
        tls: config.tls_required(&bare) || config.tls.is_some(),
        ca_file: false,
        client_cert: false,
        auth: None,
        auth_in_url: false,
    };
    let mut options = ConnectOptions::new()
        .name("crbridge")
        .connection_timeout(CONNECT_TIMEOUT)
        .require_tls(config.tls_required(&bare))
        .event_callback({
            let (sink, server) = (config.name.clone(), shown.clone());
            move |event| log_event(sink.clone(), server.clone(), event)
        });
    if let Some(tls) = &config.tls {
        let files = tls.files();
        // Read once here so an unreadable file is named by its key; the client reads them
        // again by path.
        files
            .load()
            .map_err(|e| SinkError::permanent("config", e.to_string()))?;
        if let Some(ca) = files.ca_file {
            setup.ca_file = true;
            options = options.add_root_certificates(ca);
        }
        if let (Some(cert), Some(key)) = (files.cert_file, files.key_file) {
            setup.client_cert = true;
            options = options.add_client_certificate(cert, key);
        }
    }
    options = match (&config.auth, user, password) {
        (Some(_), Some(_), _) => {
            return Err(SinkError::permanent(
                "config",
                "url holds credentials and auth is set too (expected one of them; prefer auth)",
            ))
        }
        (Some(auth), None, _) => {
            let method = auth
                .method()
                .map_err(|(key, m)| SinkError::permanent("config", format!("{key}: {m}")))?;
            setup.auth = Some(method);
            with_auth(options, auth, method).await?
        }
        (None, Some(user), Some(password)) => {
            setup.auth = Some(AuthMethod::UserPassword);
            setup.auth_in_url = true;
            options.user_and_password(user, password)
        }
        (None, Some(token), None) => {
            setup.auth = Some(AuthMethod::Token);
            setup.auth_in_url = true;
            options.token(token)
        }
        (None, None, _) => options,
    };
    options.connect(bare.as_str()).await.map_err(|e| {
        SinkError::retriable(
            "connect",
            format!(
                "NATS at {shown}: {}",
                cause(e.kind(), &e.to_string(), &setup)
            ),
        )
    })
}

/// Adds the credentials of `auth` (one `method`, already validated) to `options`.
async fn with_auth(
    options: ConnectOptions,
    auth: &NatsAuth,
    method: AuthMethod,
) -> Result<ConnectOptions, SinkError> {
    let config_err = |m: String| SinkError::permanent("config", m);
    let secret = |key: &str, v: &Option<String>| {
        resolve(key, v.as_deref().unwrap_or_default()).map_err(config_err)
    };
    Ok(match method {
        AuthMethod::Nkey => {
            let path = auth.nkey_seed_file.as_deref().unwrap_or(Path::new(""));
            let seed = std::fs::read_to_string(path).map_err(|e| {
                config_err(format!(
                    "auth.nkeySeedFile: cannot read {}: {e}",
                    path.display()
                ))
            })?;
            options.nkey(seed.trim().to_string())
        }
        AuthMethod::Creds => {
            let path = auth.creds_file.as_deref().unwrap_or(Path::new(""));
            options
                .credentials_file(path)
                .await
                .map_err(|e| config_err(format!("auth.credsFile: {e}")))?
        }
        AuthMethod::Token => options.token(secret("auth.token", &auth.token)?),
        AuthMethod::UserPassword => options.user_and_password(
            secret("auth.username", &auth.username)?,
            secret("auth.password", &auth.password)?,
        ),
    })
}

/// Logs what the client reports after the first connect (a reconnect refused, a server
/// error), naming the sink; the connect itself reports through its error.
async fn log_event(sink: String, server: String, event: Event) {
    match event {
        Event::ServerError(e) => {
            warn!(sink = %sink, server = %server, error = %e, "NATS server reported an error")
        }
        Event::ClientError(e) => {
            warn!(sink = %sink, server = %server, error = %e, "NATS client error")
        }
        Event::Disconnected => {
            warn!(sink = %sink, server = %server, "NATS connection lost; reconnecting")
        }
        other => debug!(sink = %sink, server = %server, event = %other, "NATS event"),
    }
}

/// What the sink asked for, to word a failed connect.
#[derive(Debug, Clone, Copy, Default)]
struct Setup {
    /// TLS was asked for: a `tls://` URL, `tls.required`, or a `tls` section.
    tls: bool,
    /// `tls.caFile` is set (else the system's roots are trusted).
    ca_file: bool,
    /// A client certificate is presented.
    client_cert: bool,
    /// The authentication method, if any.
    auth: Option<AuthMethod>,
    /// The credentials come from the URL, not from `auth`.
    auth_in_url: bool,
}

/// The cause of a failed connect for an operator: what went wrong and which key to look at,
/// followed by the client's own words in parentheses.
fn cause(kind: ConnectErrorKind, detail: &str, setup: &Setup) -> String {
    let alert = |name: &str| detail.contains(&format!("alert: {name}"));
    let tls_failed = kind == ConnectErrorKind::Tls
        || detail.contains("peer certificate")
        || detail.contains("alert: ");
    let what = if tls_failed && !setup.tls {
        // Without TLS settings, async-nats tries TLS only when the server demands it.
        "the server requires TLS but this sink connects in plaintext (a nats:// URL without a tls section); use a tls:// URL and set tls.caFile".to_string()
    } else if alert("CertificateRequired")
        || (!setup.client_cert && (alert("HandshakeFailure") || alert("BadCertificate")))
    {
        // A Go server (nats-server) answers a missing certificate with BadCertificate.
        "the server requires a client certificate; set tls.certFile and tls.keyFile".into()
    } else if alert("BadCertificate")
        || alert("UnknownCA")
        || alert("CertificateUnknown")
        || alert("DecryptError")
        || alert("CertificateExpired")
    {
        "the server refused the client certificate of tls.certFile (not signed by a CA the server trusts, expired, or not matching tls.keyFile)".into()
    } else if detail.contains("could not add certificate or key")
        || detail.contains("found certificate, but no key")
    {
        "tls.certFile and tls.keyFile are not a certificate and its private key".into()
    } else if detail.contains("InvalidContentType") {
        "the server did not answer in TLS (a plaintext port? a tls:// URL or tls.required needs a TLS listener)".into()
    } else if detail.contains("UnknownIssuer") || detail.contains("BadSignature") {
        if setup.ca_file {
            "the server's certificate is not signed by a CA in tls.caFile".into()
        } else {
            "the server's certificate is not signed by a CA of the system; set tls.caFile".into()
        }
    } else if detail.contains("NotValidForName") {
        "the server's certificate is not valid for the host of the URL".into()
    } else if detail.contains("Expired") {
        "the server's certificate has expired or is not valid yet".into()
    } else if kind == ConnectErrorKind::Tls {
        "TLS setup or handshake failed".into()
    } else if kind == ConnectErrorKind::AuthorizationViolation {
        match setup.auth {
            Some(_) if setup.auth_in_url => {
                "the server refused the credentials in url (authorization violation)".into()
            }
            Some(method) => format!(
                "the server refused the credentials of {} (authorization violation)",
                method.keys()
            ),
            None => "the server requires authentication (authorization violation); set auth".into(),
        }
    } else if kind == ConnectErrorKind::Authentication {
        match setup.auth {
            Some(AuthMethod::Nkey) => {
                "auth.nkeySeedFile does not hold a valid nkey seed (cannot sign the server's challenge)".into()
            }
            Some(AuthMethod::Creds) => {
                "auth.credsFile does not hold a valid user key (cannot sign the server's challenge)".into()
            }
            _ => "authentication failed".into(),
        }
    } else if kind == ConnectErrorKind::TimedOut {
        let hint = if setup.tls {
            ""
        } else {
            "; a TLS-only server does not answer a plaintext client"
        };
        format!("no answer within {CONNECT_TIMEOUT:?}{hint}")
    } else {
        kind.to_string()
    };
    format!("{what} ({detail})")
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

    #[test]
    fn causes_name_the_key_to_look_at() {
        let tls = Setup {
            tls: true,
            ca_file: true,
            client_cert: true,
            auth: Some(AuthMethod::Nkey),
            auth_in_url: false,
        };
        let plain = Setup::default();
        let c = cause(
            ConnectErrorKind::Tls,
            "TLS error: invalid peer certificate: UnknownIssuer",
            &tls,
        );
        assert!(c.starts_with("the server's certificate is not signed by a CA in tls.caFile ("));
        assert!(c.ends_with("UnknownIssuer)"), "{c}");
        let c = cause(
            ConnectErrorKind::Io,
            "IO error: invalid peer certificate: UnknownIssuer",
            &plain,
        );
        assert!(
            c.contains("requires TLS but this sink connects in plaintext"),
            "{c}"
        );
        let c = cause(
            ConnectErrorKind::Io,
            "IO error: received fatal alert: CertificateRequired",
            &tls,
        );
        assert!(c.contains("requires a client certificate"), "{c}");
        let no_cert = Setup {
            client_cert: false,
            ..tls
        };
        let c = cause(
            ConnectErrorKind::Io,
            "IO error: received fatal alert: BadCertificate",
            &no_cert,
        );
        assert!(c.contains("requires a client certificate"), "{c}");
        let c = cause(
            ConnectErrorKind::Io,
            "IO error: received fatal alert: BadCertificate",
            &tls,
        );
        assert!(
            c.contains("refused the client certificate of tls.certFile"),
            "{c}"
        );
        let c = cause(
            ConnectErrorKind::AuthorizationViolation,
            "authorization violation: nats: authorization violation",
            &tls,
        );
        assert!(
            c.contains("refused the credentials of auth.nkeySeedFile"),
            "{c}"
        );
        let in_url = Setup {
            auth: Some(AuthMethod::UserPassword),
            auth_in_url: true,
            ..tls
        };
        let c = cause(
            ConnectErrorKind::AuthorizationViolation,
            "authorization violation",
            &in_url,
        );
        assert!(c.contains("refused the credentials in url"), "{c}");
        let c = cause(
            ConnectErrorKind::Authentication,
            "failed signing nonce",
            &tls,
        );
        assert!(
            c.contains("auth.nkeySeedFile does not hold a valid nkey seed"),
            "{c}"
        );
        let c = cause(ConnectErrorKind::TimedOut, "timed out", &plain);
        assert!(c.contains("no answer within 5s; a TLS-only server"), "{c}");
    }
}
