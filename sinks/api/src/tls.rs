//! The `tls` key every network sink has: which CA to trust and which client certificate to
//! present, as PEM files (what Kubernetes Secrets of type `kubernetes.io/tls` mount).
//!
//! ```yaml
//! tls: { caFile: /etc/crbridge/ca.crt, certFile: /etc/crbridge/tls.crt, keyFile: /etc/crbridge/tls.key }
//! ```
//!
//! Validation is pure ([`TlsConfig::validate`]: a certificate needs its key and the other way
//! round); the files are read when the sink connects ([`TlsConfig::load`]), so a rotated
//! certificate is picked up by the next connect. Errors name the key and the file, never
//! what the file holds.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// `sinks.<name>.tls`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsConfig {
    /// PEM file with the CA certificate(s) to trust for the broker's certificate; absent: the
    /// system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM file with the client certificate (chain) for mutual TLS; needs `keyFile`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM file with the client certificate's private key (PKCS#8, PKCS#1 or SEC1); needs
    /// `certFile`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// PEM material read from the files of a [`TlsConfig`].
#[derive(Clone, Default)]
pub struct TlsMaterial {
    /// The CA certificates, PEM.
    pub ca: Option<Vec<u8>>,
    /// The client certificate chain and its key, PEM.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca", &self.ca.as_ref().map(Vec::len))
            .field("identity", &self.identity.is_some())
            .finish()
    }
}

/// A TLS file that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{key}: cannot read {}: {source}", path.display())]
pub struct TlsFileError {
    /// The config key, e.g. `tls.caFile`.
    pub key: &'static str,
    /// The file.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

impl TlsConfig {
    /// Checks what can be checked without reading files; on error, the key (inside `tls`)
    /// and what is wrong.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => Err((
                "keyFile",
                "missing: certFile is set, so the client certificate's key is needed (expected a PEM file path)".into(),
            )),
            (None, Some(_)) => Err((
                "certFile",
                "missing: keyFile is set, so the client certificate is needed (expected a PEM file path)".into(),
            )),
            _ => {
                for (key, path) in [
                    ("caFile", &self.ca_file),
                    ("certFile", &self.cert_file),
                    ("keyFile", &self.key_file),
                ] {
                    if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                        return Err((key, "empty (expected a PEM file path)".into()));
                    }
                }
                Ok(())
            }
        }
    }

    /// Whether anything is set (a `tls` section asks for TLS even when empty).
    pub fn is_empty(&self) -> bool {
        self.ca_file.is_none() && self.cert_file.is_none()
    }

    /// Reads the files.
    pub fn load(&self) -> Result<TlsMaterial, TlsFileError> {
        let read = |key: &'static str, path: &Path| {
            std::fs::read(path).map_err(|source| TlsFileError {
                key,
                path: path.to_owned(),
                source,
            })
        };
        let ca = match &self.ca_file {
            Some(p) => Some(read("tls.caFile", p)?),
            None => None,
        };
        let identity = match (&self.cert_file, &self.key_file) {
            (Some(c), Some(k)) => Some((read("tls.certFile", c)?, read("tls.keyFile", k)?)),
            _ => None,
        };
        Ok(TlsMaterial { ca, identity })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_needs_its_key_and_back() {
        let both = TlsConfig {
            cert_file: Some("c".into()),
            key_file: Some("k".into()),
            ..Default::default()
        };
        assert!(both.validate().is_ok());
        let cert_only = TlsConfig {
            cert_file: Some("c".into()),
            ..Default::default()
        };
        assert_eq!(cert_only.validate().unwrap_err().0, "keyFile");
        let key_only = TlsConfig {
            key_file: Some("k".into()),
            ..Default::default()
        };
        assert_eq!(key_only.validate().unwrap_err().0, "certFile");
        let empty_ca = TlsConfig {
            ca_file: Some("".into()),
            ..Default::default()
        };
        assert_eq!(empty_ca.validate().unwrap_err().0, "caFile");
    }

    #[test]
    fn load_names_the_key_and_file_and_debug_hides_the_material() {
        let t = TlsConfig {
            ca_file: Some("/nonexistent/ca.crt".into()),
            ..Default::default()
        };
        let err = t.load().unwrap_err().to_string();
        assert!(
            err.starts_with("tls.caFile: cannot read /nonexistent/ca.crt"),
            "{err}"
        );
        let m = TlsMaterial {
            ca: Some(b"-----BEGIN CERTIFICATE-----".to_vec()),
            identity: Some((b"cert".to_vec(), b"secret key".to_vec())),
        };
        let shown = format!("{m:?}");
        assert!(
            !shown.contains("secret") && !shown.contains("BEGIN"),
            "{shown}"
        );
    }

    #[test]
    fn keys_are_camel_case_and_unknown_keys_refused() {
        let t: TlsConfig =
            serde_json::from_str(r#"{"caFile":"a","certFile":"b","keyFile":"c"}"#).unwrap();
        assert_eq!(t.ca_file.as_deref(), Some(Path::new("a")));
        assert!(serde_json::from_str::<TlsConfig>(r#"{"ca":"a"}"#).is_err());
    }
}
