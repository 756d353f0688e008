//! The `tls` and `sasl` keys of a Kafka sink and the librdkafka properties they stand for.
//!
//! | key | librdkafka property |
//! |---|---|
//! | `tls` and `sasl` / only `tls` / only `sasl` | `security.protocol` = `SASL_SSL` / `SSL` / `SASL_PLAINTEXT` |
//! | `tls.caFile`, `tls.certFile`, `tls.keyFile` | `ssl.ca.location`, `ssl.certificate.location`, `ssl.key.location` |
//! | `sasl.mechanism` | `sasl.mechanism` |
//! | `sasl.username`, `sasl.password` | `sasl.username`, `sasl.password` (PLAIN, SCRAM) |
//! | `sasl.kerberosServiceName`, `sasl.kerberosPrincipal`, `sasl.kerberosKeytab` | `sasl.kerberos.service.name`, `.principal`, `.keytab` (GSSAPI) |
//!
//! Checking is pure ([`check`]); secrets (`env:NAME`, `file:/path`) are read only when the
//! sink or `tail` connects ([`properties`]), so a rotated password is picked up by the next
//! connect and a config check never needs them. An `options` key that sets a property a
//! first-class key owns is refused: two places for one setting would make one of them lie.

use std::fmt;
use std::path::PathBuf;

use crbridge_sink_api::tls::TlsConfig;
use serde::Deserialize;

/// SASL mechanisms librdkafka is built with here (OAUTHBEARER needs a token callback we do
/// not have, so it is not offered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SaslMechanism {
    /// Username and password sent as they are: only over TLS.
    #[serde(rename = "PLAIN")]
    Plain,
    /// Salted challenge-response (RFC 5802, RFC 7677); the password never crosses the wire.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// As SCRAM-SHA-256 with SHA-512.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
    /// Kerberos (Cyrus SASL): a keytab and principal instead of a password.
    #[serde(rename = "GSSAPI")]
    Gssapi,
}

impl SaslMechanism {
    /// The name librdkafka and Kafka use.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::Gssapi => "GSSAPI",
        }
    }
}

/// `sinks.<name>.sasl`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SaslConfig {
    /// `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` or `GSSAPI`.
    pub mechanism: SaslMechanism,
    /// User name (PLAIN, SCRAM); `env:NAME` / `file:/path` read at connect.
    #[serde(default)]
    pub username: Option<String>,
    /// Password (PLAIN, SCRAM); `env:NAME` / `file:/path` read at connect. Never logged.
    #[serde(default)]
    pub password: Option<String>,
    /// GSSAPI: the brokers' Kerberos service name (librdkafka's default: `kafka`).
    #[serde(default)]
    pub kerberos_service_name: Option<String>,
    /// GSSAPI: this client's Kerberos principal (librdkafka's default: `kafkaclient`).
    #[serde(default)]
    pub kerberos_principal: Option<String>,
    /// GSSAPI: the keytab file librdkafka's `kinit` uses.
    #[serde(default)]
    pub kerberos_keytab: Option<PathBuf>,
}

/// Shows where a secret comes from (`env:`/`file:` references are not secret), never a
/// literal value.
fn shown_secret(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(|v| {
        if v.starts_with("env:") || v.starts_with("file:") {
            v
        } else {
            "<redacted>"
        }
    })
}

impl fmt::Debug for SaslConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaslConfig")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &shown_secret(&self.password))
            .field("kerberos_service_name", &self.kerberos_service_name)
            .field("kerberos_principal", &self.kerberos_principal)
            .field("kerberos_keytab", &self.kerberos_keytab)
            .finish()
    }
}

/// True for librdkafka properties whose value is a secret: their `options` values are
/// redacted in Debug output.
pub fn is_sensitive(key: &str) -> bool {
    key.contains("password")
        || key.contains("secret")
        || key == "ssl.key.pem"
        || key == "sasl.oauthbearer.config"
}

/// The values of `options` as Debug shows them: sensitive literal values redacted.
pub struct ShownOptions<'a>(pub &'a std::collections::BTreeMap<String, String>);

impl fmt::Debug for ShownOptions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| {
                let shown = if is_sensitive(k) {
                    shown_secret(&Some(v.clone()))
                        .unwrap_or_default()
                        .to_owned()
                } else {
                    v.clone()
                };
                (k, shown)
            }))
            .finish()
    }
}

/// `security.protocol` for a sink with (or without) `tls` and `sasl`; `None` when neither
/// is set (then `options` may set it, or librdkafka's default `PLAINTEXT` applies).
pub fn protocol(tls: Option<&TlsConfig>, sasl: Option<&SaslConfig>) -> Option<&'static str> {
    match (tls.is_some(), sasl.is_some()) {
        (true, true) => Some("SASL_SSL"),
        (true, false) => Some("SSL"),
        (false, true) => Some("SASL_PLAINTEXT"),
        (false, false) => None,
    }
}

/// Which first-class key (path inside the section) sets librdkafka `property`, if any.
pub fn owner(
    property: &str,
    tls: Option<&TlsConfig>,
    sasl: Option<&SaslConfig>,
) -> Option<&'static str> {
    if property == "security.protocol" {
        return match (tls.is_some(), sasl.is_some()) {
            (_, true) => Some("sasl"),
            (true, false) => Some("tls"),
            (false, false) => None,
        };
    }
    if let Some(t) = tls {
        let owners = [
            (
                t.ca_file.is_some(),
                "tls.caFile",
                &["ssl.ca.location", "ssl.ca.pem"][..],
            ),
            (
                t.cert_file.is_some(),
                "tls.certFile",
                &[
                    "ssl.certificate.location",
                    "ssl.certificate.pem",
                    "ssl.keystore.location",
                ][..],
            ),
            (
                t.key_file.is_some(),
                "tls.keyFile",
                &["ssl.key.location", "ssl.key.pem", "ssl.key.password"][..],
            ),
        ];
        for (set, key, props) in owners {
            if set && props.contains(&property) {
                return Some(key);
            }
        }
    }
    if let Some(s) = sasl {
        let owners = [
            (
                true,
                "sasl.mechanism",
                &["sasl.mechanism", "sasl.mechanisms"][..],
            ),
            (
                s.username.is_some(),
                "sasl.username",
                &["sasl.username"][..],
            ),
            (
                s.password.is_some(),
                "sasl.password",
                &["sasl.password"][..],
            ),
            (
                s.kerberos_service_name.is_some(),
                "sasl.kerberosServiceName",
                &["sasl.kerberos.service.name"][..],
            ),
            (
                s.kerberos_principal.is_some(),
                "sasl.kerberosPrincipal",
                &["sasl.kerberos.principal"][..],
            ),
            (
                s.kerberos_keytab.is_some(),
                "sasl.kerberosKeytab",
                &["sasl.kerberos.keytab"][..],
            ),
        ];
        for (set, key, props) in owners {
            if set && props.contains(&property) {
                return Some(key);
            }
        }
    }
    None
}

/// Pure checks of `tls`, `sasl` and their overlap with `options`: on error, the key path
/// inside the section and what is wrong (naming another key of the section with `at`
/// before it, e.g. `sinks.kafka.`).
pub fn check<'o>(
    at: &str,
    tls: Option<&TlsConfig>,
    sasl: Option<&SaslConfig>,
    options: impl IntoIterator<Item = &'o String>,
) -> Result<(), (String, String)> {
    if let Some(t) = tls {
        t.validate()
            .map_err(|(key, message)| (format!("tls.{key}"), message))?;
    }
    if let Some(s) = sasl {
        let empty = |v: &Option<String>| v.as_deref().is_some_and(str::is_empty);
        if s.mechanism == SaslMechanism::Gssapi {
            for (key, set) in [
                ("username", s.username.is_some()),
                ("password", s.password.is_some()),
            ] {
                if set {
                    return Err((
                        format!("sasl.{key}"),
                        "not used by GSSAPI, which authenticates with Kerberos (expected kerberosPrincipal and kerberosKeytab, or a ticket cache)".into(),
                    ));
                }
            }
        } else {
            for (key, value) in [("username", &s.username), ("password", &s.password)] {
                if value.is_none() || empty(value) {
                    return Err((
                        format!("sasl.{key}"),
                        format!(
                            "missing: {} needs a {key} (expected a value, env:NAME or file:/path)",
                            s.mechanism.as_str()
                        ),
                    ));
                }
            }
            for (key, set) in [
                ("kerberosServiceName", s.kerberos_service_name.is_some()),
                ("kerberosPrincipal", s.kerberos_principal.is_some()),
                ("kerberosKeytab", s.kerberos_keytab.is_some()),
            ] {
                if set {
                    return Err((
                        format!("sasl.{key}"),
                        format!(
                            "only used by mechanism GSSAPI, not {}",
                            s.mechanism.as_str()
                        ),
                    ));
                }
            }
        }
    }
    for key in options {
        if let Some(first_class) = owner(key, tls, sasl) {
            return Err((
                format!("options.{key}"),
                format!(
                    "conflicts with {at}{first_class}, which sets the same librdkafka property (keep one of them)"
                ),
            ));
        }
    }
    Ok(())
}

/// The librdkafka properties `tls` and `sasl` stand for, secrets read now; errors name the
/// key and where the secret was looked for, never a value.
pub fn properties(
    tls: Option<&TlsConfig>,
    sasl: Option<&SaslConfig>,
) -> Result<Vec<(&'static str, String)>, String> {
    let mut out = Vec::new();
    if let Some(p) = protocol(tls, sasl) {
        out.push(("security.protocol", p.to_owned()));
    }
    if let Some(t) = tls {
        for (prop, path) in [
            ("ssl.ca.location", &t.ca_file),
            ("ssl.certificate.location", &t.cert_file),
            ("ssl.key.location", &t.key_file),
        ] {
            if let Some(p) = path {
                out.push((prop, p.display().to_string()));
            }
        }
    }
    if let Some(s) = sasl {
        out.push(("sasl.mechanism", s.mechanism.as_str().to_owned()));
        if let Some(u) = &s.username {
            out.push((
                "sasl.username",
                crbridge_sink_api::secret::resolve("sasl.username", u)?,
            ));
        }
        if let Some(p) = &s.password {
            out.push((
                "sasl.password",
                crbridge_sink_api::secret::resolve("sasl.password", p)?,
            ));
        }
        for (prop, value) in [
            (
                "sasl.kerberos.service.name",
                s.kerberos_service_name.clone(),
            ),
            ("sasl.kerberos.principal", s.kerberos_principal.clone()),
            (
                "sasl.kerberos.keytab",
                s.kerberos_keytab.as_ref().map(|p| p.display().to_string()),
            ),
        ] {
            if let Some(v) = value {
                out.push((prop, v));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sasl(yaml: &str) -> SaslConfig {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn tls_all() -> TlsConfig {
        TlsConfig {
            ca_file: Some("/ca.crt".into()),
            cert_file: Some("/tls.crt".into()),
            key_file: Some("/tls.key".into()),
        }
    }

    #[test]
    fn protocol_follows_which_sections_are_set() {
        let s = sasl("{mechanism: PLAIN, username: u, password: p}");
        let t = TlsConfig::default();
        assert_eq!(protocol(Some(&t), Some(&s)), Some("SASL_SSL"));
        assert_eq!(protocol(Some(&t), None), Some("SSL"));
        assert_eq!(protocol(None, Some(&s)), Some("SASL_PLAINTEXT"));
        assert_eq!(protocol(None, None), None);
    }

    #[test]
    fn tls_and_scram_map_onto_librdkafka_properties() {
        std::env::set_var("CRB_KAFKA_SEC_TEST_PW", "pw-from-env");
        let s = sasl(
            "{mechanism: SCRAM-SHA-512, username: crbridge, password: \"env:CRB_KAFKA_SEC_TEST_PW\"}",
        );
        let props = properties(Some(&tls_all()), Some(&s)).unwrap();
        let want: Vec<(&str, String)> = [
            ("security.protocol", "SASL_SSL"),
            ("ssl.ca.location", "/ca.crt"),
            ("ssl.certificate.location", "/tls.crt"),
            ("ssl.key.location", "/tls.key"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "crbridge"),
            ("sasl.password", "pw-from-env"),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.to_owned()))
        .collect();
        assert_eq!(props, want);
    }

    #[test]
    fn gssapi_maps_its_kerberos_keys() {
        let s = sasl(
            "{mechanism: GSSAPI, kerberosServiceName: kafka, kerberosPrincipal: crbridge@EXAMPLE.COM, kerberosKeytab: /etc/krb5.keytab}",
        );
        assert_eq!(check("", None, Some(&s), []), Ok(()));
        let props = properties(None, Some(&s)).unwrap();
        assert!(props.contains(&("sasl.mechanism", "GSSAPI".into())));
        assert!(props.contains(&("sasl.kerberos.keytab", "/etc/krb5.keytab".into())));
        assert!(props.contains(&("sasl.kerberos.principal", "crbridge@EXAMPLE.COM".into())));
        assert!(props.contains(&("security.protocol", "SASL_PLAINTEXT".into())));
    }

    #[test]
    fn a_missing_secret_names_the_key_and_variable_only() {
        let s =
            sasl("{mechanism: PLAIN, username: u, password: \"env:CRB_KAFKA_SEC_TEST_MISSING\"}");
        let err = properties(None, Some(&s)).unwrap_err();
        assert_eq!(
            err,
            "sasl.password: environment variable CRB_KAFKA_SEC_TEST_MISSING is not set"
        );
    }

    #[test]
    fn checks_name_the_key_path() {
        let no_pw = sasl("{mechanism: SCRAM-SHA-256, username: u}");
        assert_eq!(
            check("", None, Some(&no_pw), []).unwrap_err().0,
            "sasl.password"
        );
        let empty_user = sasl("{mechanism: PLAIN, username: \"\", password: p}");
        assert_eq!(
            check("", None, Some(&empty_user), []).unwrap_err().0,
            "sasl.username"
        );
        let gssapi_pw = sasl("{mechanism: GSSAPI, password: p}");
        assert_eq!(
            check("", None, Some(&gssapi_pw), []).unwrap_err().0,
            "sasl.password"
        );
        let keytab_scram =
            sasl("{mechanism: SCRAM-SHA-512, username: u, password: p, kerberosKeytab: /k}");
        assert_eq!(
            check("", None, Some(&keytab_scram), []).unwrap_err().0,
            "sasl.kerberosKeytab"
        );
        let cert_only = TlsConfig {
            cert_file: Some("/c".into()),
            ..Default::default()
        };
        assert_eq!(
            check("", Some(&cert_only), None, []).unwrap_err().0,
            "tls.keyFile"
        );
        assert!(serde_saphyr::from_str::<SaslConfig>("{mechanism: OAUTHBEARER}").is_err());
    }

    #[test]
    fn an_option_setting_a_first_class_property_is_refused_naming_both() {
        let s = sasl("{mechanism: PLAIN, username: u, password: p}");
        let t = tls_all();
        let cases = [
            ("security.protocol", "sasl"),
            ("ssl.ca.location", "tls.caFile"),
            ("ssl.key.pem", "tls.keyFile"),
            ("sasl.mechanisms", "sasl.mechanism"),
            ("sasl.password", "sasl.password"),
        ];
        for (opt, first_class) in cases {
            let key = opt.to_owned();
            let (path, msg) = check("", Some(&t), Some(&s), [&key]).unwrap_err();
            assert_eq!(path, format!("options.{opt}"));
            assert!(
                msg.contains(&format!("conflicts with {first_class}")),
                "{msg}"
            );
        }
        // What the first-class keys do not set still passes through.
        let free = [
            "ssl.endpoint.identification.algorithm".to_owned(),
            "compression.type".to_owned(),
        ];
        assert_eq!(check("", Some(&t), Some(&s), &free), Ok(()));
        // With tls only, security.protocol is owned by tls; an empty tls owns no file.
        let proto = "security.protocol".to_owned();
        let empty = TlsConfig::default();
        assert_eq!(
            check("", Some(&empty), None, [&proto]).unwrap_err().1,
            "conflicts with tls, which sets the same librdkafka property (keep one of them)"
        );
        let ca = "ssl.ca.location".to_owned();
        assert_eq!(check("", Some(&empty), None, [&ca]), Ok(()));
        // Without first-class keys, options keep working as before.
        assert_eq!(check("", None, None, [&proto, &ca]), Ok(()));
    }

    #[test]
    fn debug_never_shows_a_literal_password() {
        let s = sasl("{mechanism: PLAIN, username: u, password: hunter2}");
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let s = sasl("{mechanism: PLAIN, username: u, password: \"env:KAFKA_PW\"}");
        assert!(format!("{s:?}").contains("env:KAFKA_PW"));
        let opts = [
            ("sasl.password".to_owned(), "hunter2".to_owned()),
            ("ssl.key.password".to_owned(), "hunter3".to_owned()),
            ("linger.ms".to_owned(), "5".to_owned()),
        ]
        .into_iter()
        .collect();
        let shown = format!("{:?}", ShownOptions(&opts));
        assert!(!shown.contains("hunter"), "{shown}");
        assert!(shown.contains("\"linger.ms\": \"5\""), "{shown}");
    }
}
