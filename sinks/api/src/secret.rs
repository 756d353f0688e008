//! Secret values in sink configs: `env:NAME` reads an environment variable, `file:/path`
//! reads a file (trailing newline trimmed, as mounted Kubernetes Secrets have), anything
//! else is the literal value. Errors name the variable or file, never a value.

/// Resolves `value` as described above. `key` names the config key in errors.
pub fn resolve(key: &str, value: &str) -> Result<String, String> {
    if let Some(var) = value.strip_prefix("env:") {
        std::env::var(var).map_err(|_| format!("{key}: environment variable {var} is not set"))
    } else if let Some(path) = value.strip_prefix("file:") {
        std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
            .map_err(|e| format!("{key}: reading {path}: {e}"))
    } else {
        Ok(value.to_string())
    }
}

/// The URL without its password (`scheme://***@host`), for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::{redact, resolve};

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("nats://u:secret@h:4222"), "nats://***@h:4222");
        assert_eq!(redact("amqp://h:5672/%2f"), "amqp://h:5672/%2f");
    }

    #[test]
    fn env_file_and_literal() {
        assert_eq!(resolve("k", "plain").unwrap(), "plain");
        std::env::set_var("CRB_SECRET_TEST", "s3cret");
        assert_eq!(resolve("k", "env:CRB_SECRET_TEST").unwrap(), "s3cret");
        let err = resolve("sinks.nats.url", "env:CRB_SECRET_MISSING").unwrap_err();
        assert!(err.contains("sinks.nats.url") && err.contains("CRB_SECRET_MISSING"));
        let dir = std::env::temp_dir().join(format!("crb-secret-{}", std::process::id()));
        std::fs::write(&dir, "pw\n").unwrap();
        assert_eq!(
            resolve("k", &format!("file:{}", dir.display())).unwrap(),
            "pw"
        );
        std::fs::remove_file(dir).unwrap();
    }
}
