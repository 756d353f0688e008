//! The step after deserialization: defaults that depend on other values (watch names, a
//! watch's sinks, `~` in paths) and the rules serde cannot check, section by section, then
//! across watches (unique names).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use super::admin::validate_admin;
use super::cluster::{is_cluster_name, resolve_clusters};
use super::leader::validate_leader_election;
use super::sink::validate_sinks;
use super::state::validate_state;
use super::watch::{default_watch_name, validate_watch};
use super::{Config, ConfigError};

/// Kubernetes DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub(super) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Kubernetes DNS-1123 subdomain: dot-separated labels, at most 253 characters.
pub(super) fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Replaces a leading `~` component with `home`.
pub(super) fn expand_home(path: &Path, home: Option<&OsStr>) -> Result<PathBuf, String> {
    match path.strip_prefix("~") {
        Ok(rest) => match home {
            Some(home) if !home.is_empty() => Ok(Path::new(home).join(rest)),
            _ => Err(format!(
                "cannot expand {:?}: $HOME is not set (expected an absolute path)",
                path.display().to_string()
            )),
        },
        Err(_) => Ok(path.to_owned()),
    }
}

fn cluster_names(config: &Config) -> String {
    config
        .clusters
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Fills the defaults that depend on other values and checks every rule serde cannot.
pub(super) fn resolve(
    file: &str,
    mut config: Config,
    home: Option<&OsStr>,
) -> Result<Config, ConfigError> {
    let invalid = |path: &str, message: String| ConfigError::invalid(file, path, message);

    // cluster + kubeconfig, or clusters
    config.fleet = !config.clusters.is_empty();
    if !config.fleet {
        if config.cluster.is_empty() {
            return Err(invalid(
                "cluster",
                "missing or empty (expected the cluster name used in event source and id, e.g. prod-eu-1, or a clusters list)".into(),
            ));
        }
        if !is_cluster_name(&config.cluster) {
            return Err(invalid(
                "cluster",
                format!(
                    "invalid cluster name {:?} (expected lowercase letters, digits, '.' and '-', e.g. prod-eu-1)",
                    config.cluster
                ),
            ));
        }
        if let Some(kubeconfig) = &config.kubeconfig {
            if kubeconfig.as_os_str().is_empty() {
                return Err(invalid(
                    "kubeconfig",
                    "empty (expected a kubeconfig path, or no kubeconfig key for in-cluster / $KUBECONFIG)".into(),
                ));
            }
            config.kubeconfig =
                Some(expand_home(kubeconfig, home).map_err(|m| invalid("kubeconfig", m))?);
        }
    }
    resolve_clusters(
        &config.cluster,
        config.kubeconfig.as_ref(),
        &mut config.clusters,
        home,
    )
    .map_err(|(path, m)| invalid(&path, m))?;

    // eventTypePrefix
    if config.event_type_prefix.is_empty() {
        return Err(invalid(
            "eventTypePrefix",
            "empty (expected a CloudEvents type prefix, e.g. io.crbridge.resource)".into(),
        ));
    }
    if config.event_type_prefix.chars().any(char::is_whitespace) {
        return Err(invalid(
            "eventTypePrefix",
            format!(
                "invalid event type prefix {:?} (expected no spaces, e.g. io.crbridge.resource)",
                config.event_type_prefix
            ),
        ));
    }

    // dataSchema: fixed per kind, so only the per-kind variables; a URI, so no spaces.
    if let Some(var) = config.data_schema.vars().find(|v| {
        !matches!(
            v,
            super::Var::Cluster
                | super::Var::Group
                | super::Var::Version
                | super::Var::Kind
                | super::Var::Plural
        )
    }) {
        return Err(invalid(
            "dataSchema",
            format!(
                "{{{}}} varies per object (expected only {{cluster}} {{group}} {{version}} {{kind}} {{plural}})",
                var.as_str()
            ),
        ));
    }
    if config.data_schema.as_str().is_empty()
        || config.data_schema.as_str().chars().any(char::is_whitespace)
        || !config.data_schema.as_str().contains(':')
    {
        return Err(invalid(
            "dataSchema",
            format!(
                "{:?} is not a URI (expected e.g. {})",
                config.data_schema.as_str(),
                super::DEFAULT_DATA_SCHEMA
            ),
        ));
    }

    // state
    validate_state(&mut config.state, home).map_err(|(path, m)| invalid(path, m))?;

    // admin
    validate_admin(&mut config.admin, &config.http, home).map_err(|(path, m)| invalid(path, m))?;

    // leaderElection
    validate_leader_election(&config.leader_election).map_err(|(path, m)| invalid(path, m))?;
    let home = match config.leader_election.cluster.take() {
        None => config.clusters[0].name.clone(),
        Some(name) if config.clusters.iter().any(|c| c.name == name) => name,
        Some(name) => {
            return Err(invalid(
                "leaderElection.cluster",
                format!(
                    "unknown cluster {name:?} (expected one of: {})",
                    cluster_names(&config)
                ),
            ))
        }
    };
    config.leader_election.cluster = Some(home.clone());
    if config.fleet {
        config.cluster = home;
    }

    // sinks
    validate_sinks(&config.sinks).map_err(|(path, m)| invalid(&path, m))?;

    // watches
    if config.watches.is_empty() {
        return Err(invalid(
            "watches",
            "empty (expected at least one watch, e.g. - { group: example.com, version: v1, kind: Widget })".into(),
        ));
    }
    let mut names: HashMap<String, usize> = HashMap::new();
    let all_clusters: Vec<String> = config.clusters.iter().map(|c| c.name.clone()).collect();
    for (index, watch) in config.watches.iter_mut().enumerate() {
        let at = format!("watches[{index}]");
        validate_watch(watch, &config.sinks)
            .map_err(|(suffix, m)| invalid(&format!("{at}{suffix}"), m))?;
        let derived = watch.name.is_empty();
        if derived {
            watch.name = default_watch_name(watch);
        } else if !watch
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(invalid(
                &format!("{at}.name"),
                format!(
                    "invalid watch name {:?} (expected letters, digits, '.', '_' and '-')",
                    watch.name
                ),
            ));
        }
        if let Some(first) = names.get(&watch.name) {
            let origin = if derived {
                " (the default from plural/kind and group)"
            } else {
                ""
            };
            return Err(invalid(
                &format!("{at}.name"),
                format!(
                    "duplicate watch name {:?}{origin}, also used by watches[{first}] (expected unique names: set name: on one of them)",
                    watch.name
                ),
            ));
        }
        names.insert(watch.name.clone(), index);
        if watch.sinks.is_empty() {
            watch.sinks = config.sinks.keys().cloned().collect();
        }
        let mut seen = std::collections::HashSet::new();
        for (i, name) in watch.clusters.iter().enumerate() {
            if !all_clusters.contains(name) {
                return Err(invalid(
                    &format!("{at}.clusters[{i}]"),
                    format!(
                        "unknown cluster {name:?} (expected one of: {})",
                        all_clusters.join(", ")
                    ),
                ));
            }
            if !seen.insert(name) {
                return Err(invalid(
                    &format!("{at}.clusters[{i}]"),
                    format!("duplicate cluster {name:?}"),
                ));
            }
        }
        if watch.clusters.is_empty() {
            watch.clusters = all_clusters.clone();
        }
    }

    // redactKey: a secret, so only from the environment or a file, and never in messages.
    if let Some(source) = &config.redact_key {
        if !source.starts_with("env:") && !source.starts_with("file:") {
            return Err(invalid(
                "redactKey",
                "not a reference (expected env:NAME or file:/path: the key itself does not belong in the file)".into(),
            ));
        }
        let key = crbridge_sink_api::secret::resolve("redactKey", source)
            .map_err(|m| invalid("redactKey", m.trim_start_matches("redactKey: ").to_owned()))?;
        // Shorter keys could be found by trying them.
        if key.len() < 16 {
            return Err(invalid(
                "redactKey",
                format!(
                    "{source} holds {} bytes (expected a secret of at least 16 bytes)",
                    key.len()
                ),
            ));
        }
        config.resolved_redact_key = Some(crate::redact::RedactKey::new(key.as_bytes()));
    } else if let Some(index) = config.watches.iter().position(|w| !w.redact.is_empty()) {
        return Err(invalid(
            &format!("watches[{index}].redact"),
            "needs the top-level redactKey (expected redactKey: env:NAME or file:/path, the HMAC key of redacted values)".into(),
        ));
    }
    Ok(config)
}
