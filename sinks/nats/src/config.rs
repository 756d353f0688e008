use std::path::PathBuf;
use std::time::Duration;

use crbridge_sink_api::template::Template;
use crbridge_sink_api::tls::TlsConfig;
use crbridge_sink_api::units;
use crbridge_sink_api::ContentMode;
use serde::Deserialize;

/// `sinks.<name>` with `type: nats`. Its Debug output hides the URL's password and the
/// secrets of `auth`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NatsSinkConfig {
    /// Server URL, e.g. `nats://127.0.0.1:4222` (user and password may be in the URL), or
    /// `env:NAME` / `file:/path` to read it from the environment or a file (secrets).
    pub url: String,
    /// JetStream stream name.
    pub stream: String,
    /// Subject template; variables: cluster group version kind plural namespace name type.
    pub subject: Template,
    /// Create the stream when it does not exist (else fail the healthcheck).
    #[serde(default = "default_true")]
    pub create_stream: bool,
    /// Duplicate window of a created stream. Re-sends after a crash carry the same
    /// `Nats-Msg-Id`; JetStream drops them within this window. Ten minutes covers a crash
    /// and restart; the default of NATS (2 min) is short for that.
    #[serde(
        default = "default_duplicate_window",
        deserialize_with = "units::deserialize_duration"
    )]
    pub duplicate_window: Duration,
    /// Publishes awaiting their PubAck at once. 256 keeps a round trip per window, not per
    /// event, on a LAN, while bounding what a failure re-sends.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// How long to wait for a PubAck before the publish counts as failed (and is retried).
    #[serde(
        default = "default_ack_timeout",
        deserialize_with = "units::deserialize_duration"
    )]
    pub ack_timeout: Duration,
    /// Binary (default) or structured CloudEvents mode.
    #[serde(default)]
    pub mode: ContentMode,
    /// CA to trust, client certificate for mutual TLS, and whether TLS is required.
    #[serde(default)]
    pub tls: Option<NatsTls>,
    /// How crbridge authenticates: exactly one of `nkeySeedFile`, `credsFile`, `token`,
    /// `username` + `password`.
    #[serde(default)]
    pub auth: Option<NatsAuth>,
    /// The sink's name (its key under `sinks`), for logs; set by the factory.
    #[serde(skip)]
    pub name: String,
}

/// `sinks.<name>.tls` of a NATS sink: the files every sink has, plus `required`.
///
/// Its own struct rather than `#[serde(flatten)]` of [`TlsConfig`]: serde cannot refuse
/// unknown keys through a flattened struct, and a misspelt `cafile` must be an error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NatsTls {
    /// PEM file with the CA certificate(s) that signed the server's certificate; absent: the
    /// system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM file with the client certificate (chain) for mutual TLS; needs `keyFile`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM file with the client certificate's private key; needs `certFile`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Refuse to talk without TLS even when the URL is `nats://` (a `tls://` URL always
    /// requires it). False: TLS when the URL or the server asks for it.
    #[serde(default)]
    pub required: bool,
}

impl NatsTls {
    /// The files, as the type every sink validates and loads them with.
    pub fn files(&self) -> TlsConfig {
        TlsConfig {
            ca_file: self.ca_file.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
        }
    }
}

/// `sinks.<name>.auth`: one way of authenticating to the server.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NatsAuth {
    /// File holding a user nkey seed (`SU...`, as `nk -gen user` writes it).
    #[serde(default)]
    pub nkey_seed_file: Option<PathBuf>,
    /// A `.creds` file (user JWT and nkey seed, as `nsc` writes it) for decentralized auth.
    #[serde(default)]
    pub creds_file: Option<PathBuf>,
    /// Token; `env:NAME` / `file:/path` to read it from the environment or a file.
    #[serde(default)]
    pub token: Option<String>,
    /// User name; `env:NAME` / `file:/path` accepted. Needs `password`.
    #[serde(default)]
    pub username: Option<String>,
    /// Password; `env:NAME` / `file:/path` accepted. Needs `username`.
    #[serde(default)]
    pub password: Option<String>,
}

/// Shows where secrets come from (`env:NAME`, `file:/path`), never a literal value.
impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn shown(v: &Option<String>) -> Option<&str> {
            v.as_deref().map(|v| {
                if v.starts_with("env:") || v.starts_with("file:") {
                    v
                } else {
                    "***"
                }
            })
        }
        f.debug_struct("NatsAuth")
            .field("nkey_seed_file", &self.nkey_seed_file)
            .field("creds_file", &self.creds_file)
            .field("token", &shown(&self.token))
            .field("username", &shown(&self.username))
            .field("password", &shown(&self.password))
            .finish()
    }
}

/// The authentication method an [`NatsAuth`] selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// `nkeySeedFile`.
    Nkey,
    /// `credsFile`.
    Creds,
    /// `token`.
    Token,
    /// `username` + `password`.
    UserPassword,
}

impl AuthMethod {
    /// The config key(s) of the method, for messages.
    pub fn keys(self) -> &'static str {
        match self {
            AuthMethod::Nkey => "auth.nkeySeedFile",
            AuthMethod::Creds => "auth.credsFile",
            AuthMethod::Token => "auth.token",
            AuthMethod::UserPassword => "auth.username/auth.password",
        }
    }
}

const AUTH_CHOICES: &str = "nkeySeedFile, credsFile, token, or username + password";

impl NatsAuth {
    /// The one method set, or the key (inside the sink section) and what is wrong.
    pub fn method(&self) -> Result<AuthMethod, (String, String)> {
        let mut set = Vec::new();
        if self.nkey_seed_file.is_some() {
            set.push(("nkeySeedFile", AuthMethod::Nkey));
        }
        if self.creds_file.is_some() {
            set.push(("credsFile", AuthMethod::Creds));
        }
        if self.token.is_some() {
            set.push(("token", AuthMethod::Token));
        }
        match (&self.username, &self.password) {
            (Some(_), Some(_)) => set.push(("username", AuthMethod::UserPassword)),
            (Some(_), None) => {
                return Err((
                    "auth.password".into(),
                    "missing: username is set, so its password is needed (a value, env:NAME or file:/path)".into(),
                ))
            }
            (None, Some(_)) => {
                return Err((
                    "auth.username".into(),
                    "missing: password is set, so the user name is needed".into(),
                ))
            }
            (None, None) => {}
        }
        match set.as_slice() {
            [] => Err((
                "auth".into(),
                format!("no method set (expected exactly one of {AUTH_CHOICES})"),
            )),
            [(_, method)] => {
                for (key, path) in [
                    ("auth.nkeySeedFile", &self.nkey_seed_file),
                    ("auth.credsFile", &self.creds_file),
                ] {
                    if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                        return Err((key.into(), "empty (expected a file path)".into()));
                    }
                }
                Ok(*method)
            }
            [(first, _), (second, _), ..] => Err((
                format!("auth.{second}"),
                format!("{first} is set too (expected exactly one of {AUTH_CHOICES})"),
            )),
        }
    }
}

impl NatsSinkConfig {
    /// Pure checks of the keys serde cannot express; on error, the key path inside the sink
    /// section (e.g. `auth.nkeySeedFile`) and what is wrong.
    pub fn validate(&self) -> Result<(), (String, String)> {
        crate::encode::check_subject_template(&self.subject)
            .map_err(|message| ("subject".to_owned(), message))?;
        if let Some(tls) = &self.tls {
            tls.files()
                .validate()
                .map_err(|(key, message)| (format!("tls.{key}"), message))?;
        }
        if let Some(auth) = &self.auth {
            auth.method()?;
            // Only a literal URL can be checked here; `env:`/`file:` ones at connect time.
            if !is_secret_ref(&self.url) && url_has_credentials(&self.url) {
                return Err((
                    "url".into(),
                    "holds credentials and auth is set too (expected one of them; prefer auth)"
                        .into(),
                ));
            }
        }
        if !is_secret_ref(&self.url) {
            if let Some((scheme, _)) = self.url.split_once("://") {
                if !["nats", "tls", "ws", "wss"].contains(&scheme) {
                    return Err((
                        "url".into(),
                        format!("unknown scheme {scheme}:// (expected nats://, tls://, ws:// or wss://)"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether the connection must be TLS: a `tls://`/`wss://` URL or `tls.required`.
    pub fn tls_required(&self, url: &str) -> bool {
        url.starts_with("tls://")
            || url.starts_with("wss://")
            || self.tls.as_ref().is_some_and(|t| t.required)
    }
}

fn is_secret_ref(v: &str) -> bool {
    v.starts_with("env:") || v.starts_with("file:")
}

/// Whether `scheme://user[:password]@host` holds user information.
pub(crate) fn url_has_credentials(url: &str) -> bool {
    let Some(s) = url.find("://") else {
        return false;
    };
    let rest = &url[s + 3..];
    let host_end = rest.find('/').unwrap_or(rest.len());
    rest[..host_end].contains('@')
}

impl std::fmt::Debug for NatsSinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSinkConfig")
            .field("name", &self.name)
            .field("url", &crbridge_sink_api::secret::redact(&self.url))
            .field("stream", &self.stream)
            .field("subject", &self.subject.as_str())
            .field("create_stream", &self.create_stream)
            .field("duplicate_window", &self.duplicate_window)
            .field("max_in_flight", &self.max_in_flight)
            .field("ack_timeout", &self.ack_timeout)
            .field("mode", &self.mode)
            .field("tls", &self.tls)
            .field("auth", &self.auth)
            .finish()
    }
}

fn default_true() -> bool {
    true
}
fn default_duplicate_window() -> Duration {
    Duration::from_secs(600)
}
fn default_in_flight() -> usize {
    256
}
fn default_ack_timeout() -> Duration {
    Duration::from_secs(10)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn defaults_and_unknown_keys() {
        let c: NatsSinkConfig = serde_saphyr::from_str(
            "url: nats://h:1\nstream: S\nsubject: \"crbridge.{cluster}.{kind}\"\n",
        )
        .unwrap();
        assert!(c.create_stream);
        assert_eq!(c.max_in_flight, 256);
        assert_eq!(c.mode, ContentMode::Binary);
        assert_eq!(c.duplicate_window, Duration::from_secs(600));
        let err = serde_saphyr::from_str::<NatsSinkConfig>(
            "url: x\nstream: S\nsubject: a\nsubjects: b\n",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("unknown field `subjects`"),
            "{err}"
        );
        let err =
            serde_saphyr::from_str::<NatsSinkConfig>("url: x\nstream: S\nsubject: a.{nope}\n")
                .unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    fn parse(yaml: &str) -> NatsSinkConfig {
        serde_saphyr::from_str(&format!("url: tls://h:1\nstream: S\nsubject: a\n{yaml}")).unwrap()
    }

    fn invalid(yaml: &str) -> (String, String) {
        parse(yaml).validate().unwrap_err()
    }

    #[test]
    fn tls_and_auth_keys_parse_and_validate() {
        let c = parse(
            "tls: { caFile: /ca.crt, certFile: /c.crt, keyFile: /c.key, required: true }\n\
             auth: { nkeySeedFile: /user.nk }\n",
        );
        c.validate().unwrap();
        let tls = c.tls.as_ref().unwrap();
        assert!(tls.required);
        assert_eq!(tls.files().ca_file.as_deref(), Some(Path::new("/ca.crt")));
        assert_eq!(c.auth.as_ref().unwrap().method(), Ok(AuthMethod::Nkey));
        for (yaml, method) in [
            ("auth: { credsFile: /u.creds }", AuthMethod::Creds),
            ("auth: { token: env:NATS_TOKEN }", AuthMethod::Token),
            (
                "auth: { username: u, password: file:/pw }",
                AuthMethod::UserPassword,
            ),
        ] {
            let c = parse(yaml);
            c.validate().unwrap();
            assert_eq!(c.auth.unwrap().method(), Ok(method), "{yaml}");
        }
        let err = serde_saphyr::from_str::<NatsSinkConfig>(
            "url: x\nstream: S\nsubject: a\ntls: { cafile: /ca }\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `cafile`"), "{err}");
        let err = serde_saphyr::from_str::<NatsSinkConfig>(
            "url: x\nstream: S\nsubject: a\nauth: { nkey: /s }\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `nkey`"), "{err}");
    }

    #[test]
    fn exactly_one_auth_method_and_errors_name_the_key() {
        let (key, msg) = invalid("auth: { nkeySeedFile: /a, token: t }");
        assert_eq!(key, "auth.token");
        assert!(msg.contains("nkeySeedFile is set too"), "{msg}");
        assert!(msg.contains("exactly one of"), "{msg}");
        let (key, _) = invalid("auth: { credsFile: /c, username: u, password: p }");
        assert_eq!(key, "auth.username");
        let (key, msg) = invalid("auth: {}");
        assert_eq!(key, "auth");
        assert!(msg.contains("nkeySeedFile, credsFile, token"), "{msg}");
        assert_eq!(invalid("auth: { username: u }").0, "auth.password");
        assert_eq!(invalid("auth: { password: p }").0, "auth.username");
        assert_eq!(invalid("auth: { nkeySeedFile: '' }").0, "auth.nkeySeedFile");
        assert_eq!(invalid("tls: { certFile: /c }").0, "tls.keyFile");
        assert_eq!(invalid("tls: { keyFile: /k }").0, "tls.certFile");
        let c: NatsSinkConfig = serde_saphyr::from_str(
            "url: nats://u:p@h:1\nstream: S\nsubject: a\nauth: { token: t }\n",
        )
        .unwrap();
        assert_eq!(c.validate().unwrap_err().0, "url");
        let c: NatsSinkConfig =
            serde_saphyr::from_str("url: http://h:1\nstream: S\nsubject: a\n").unwrap();
        assert!(c.validate().unwrap_err().1.contains("http://"));
    }

    #[test]
    fn tls_is_required_by_the_url_or_the_key() {
        let c = parse("");
        assert!(c.tls_required("tls://h:1"));
        assert!(!c.tls_required("nats://h:1"));
        let c = parse("tls: { required: true }");
        assert!(c.tls_required("nats://h:1"));
        let c = parse("tls: { caFile: /ca }");
        assert!(!c.tls_required("nats://h:1"));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let c: NatsSinkConfig = serde_saphyr::from_str(
            "url: nats://u:urlsecret@h:1\nstream: S\nsubject: a\n\
             auth: { username: admin-user, password: pwsecret }\n",
        )
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("urlsecret"), "{shown}");
        assert!(!shown.contains("pwsecret"), "{shown}");
        assert!(!shown.contains("admin-user"), "{shown}");
        let c = parse("auth: { token: toksecret }");
        assert!(!format!("{c:?}").contains("toksecret"));
        let c = parse("auth: { token: env:NATS_TOKEN }");
        assert!(format!("{c:?}").contains("env:NATS_TOKEN"));
    }
}
