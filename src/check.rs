//! `crbridge check`: validate the config, then probe the cluster and every sink, and print
//! one line per item as it is decided (a sink probe can take seconds): text for people, or
//! one JSON object per line ([`Item`]) for scripts. Exit code 0 only if everything is usable.

use std::path::Path;
use std::process::ExitCode;

use serde::Serialize;

use crate::cmd::Output;
use crate::config;
use crate::dispatch::chain;

/// One line of the report; `--output json` prints it as one JSON object per line:
/// `{"item":"sink","name":"kafka","ok":true,"detail":"kafka reachable"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    /// What was checked: `config`, `cluster`, `watch` or `sink`.
    pub item: &'static str,
    /// Which one: the config file, the watch's or the sink's name; absent for `cluster`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Whether it is usable.
    pub ok: bool,
    /// What was found, or why it failed.
    pub detail: String,
}

impl Item {
    /// The line people read: `ok   sink kafka: kafka reachable`.
    pub fn text(&self) -> String {
        let mark = if self.ok { "ok  " } else { "FAIL" };
        match (self.item, &self.name) {
            // The file is already the start of the detail (`crbridge.yaml: 1 watches…`).
            ("config", _) | (_, None) => format!("{mark} {}: {}", self.item, self.detail),
            (item, Some(name)) => format!("{mark} {item} {name}: {}", self.detail),
        }
    }

    /// The line scripts read: one JSON object.
    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Prints the items in one format and remembers whether any failed.
struct Report {
    output: Output,
    failed: bool,
}

impl Report {
    fn line(&mut self, ok: bool, item: &'static str, name: Option<&str>, detail: &str) {
        let item = Item {
            item,
            name: name.map(str::to_owned),
            ok,
            detail: detail.to_owned(),
        };
        self.failed |= !ok;
        match self.output {
            Output::Text => println!("{}", item.text()),
            Output::Json => println!("{}", item.json()),
        }
    }
}

/// Runs the checks and prints the report in `output`'s format.
pub async fn run(path: &Path, output: Output) -> anyhow::Result<ExitCode> {
    let file = path.display().to_string();
    let mut report = Report {
        output,
        failed: false,
    };
    let cfg = match config::load(path) {
        Ok(c) => {
            report.line(
                true,
                "config",
                Some(&file),
                &format!(
                    "{file}: {} watches, {} sinks",
                    c.watches.len(),
                    c.sinks.len()
                ),
            );
            // Loading compiled every filter (a bad one fails the config line above).
            for w in &c.watches {
                if let Some(filter) = &w.compiled_filter {
                    report.line(true, "filter", Some(&w.name), filter.source());
                }
            }
            c
        }
        Err(e) => {
            report.line(false, "config", Some(&file), &e.to_string());
            return Ok(ExitCode::FAILURE);
        }
    };
    // Every cluster (one, or each of a fleet's), and each watch where it is watched.
    for cluster in &cfg.clusters {
        let named = cfg.fleet.then_some(cluster.name.as_str());
        let client = match crate::cluster::client_for(cluster).await {
            Ok(c) => c,
            Err(e) => {
                report.line(false, "cluster", named, &e.to_string());
                continue;
            }
        };
        let version = tokio::time::timeout(
            std::time::Duration::from_secs(15),
            client.apiserver_version(),
        );
        match version.await {
            Ok(Ok(v)) => report.line(
                true,
                "cluster",
                named,
                &format!("Kubernetes {}", v.git_version),
            ),
            Ok(Err(e)) => report.line(false, "cluster", named, &chain(&e)),
            Err(_) => report.line(false, "cluster", named, "no answer within 15s"),
        }
        for w in cfg
            .watches
            .iter()
            .filter(|w| w.clusters.contains(&cluster.name))
        {
            let key = cfg.state_key(&cluster.name, &w.name);
            if w.is_group() {
                let (ok, detail) = group_line(&client, w).await;
                report.line(ok, "watch", Some(&key), &detail);
                continue;
            }
            match crate::plan::resolve(&client, w).await {
                Ok(r) => report.line(
                    true,
                    "watch",
                    Some(&key),
                    &format!(
                        "{} → {} ({})",
                        w.kind,
                        r.resource.plural,
                        if r.namespaced {
                            "namespaced"
                        } else {
                            "cluster-scoped"
                        }
                    ),
                ),
                Err(e) => report.line(false, "watch", Some(&key), &format!("{e:#}")),
            }
        }
    }
    for (name, section) in &cfg.sinks {
        let sink = match crate::sinks::configure_sink(&file, section) {
            Ok(s) => s,
            Err(e) => {
                report.line(false, "sink", Some(name), &e.to_string());
                continue;
            }
        };
        let probe = async {
            let connected = sink.connect().await?;
            connected.healthcheck().await
        };
        match tokio::time::timeout(std::time::Duration::from_secs(15), probe).await {
            Ok(Ok(())) => report.line(
                true,
                "sink",
                Some(name),
                &format!("{} reachable", sink.kind),
            ),
            Ok(Err(e)) => report.line(false, "sink", Some(name), &chain(&e)),
            Err(_) => report.line(false, "sink", Some(name), "no answer within 15s"),
        }
    }
    Ok(if report.failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The `check` line of a whole-group watch: the kinds its group serves now. A group that
/// serves nothing (yet) is fine, since kinds installed later are picked up; one discovery
/// cannot read is not.
async fn group_line(client: &kube::Client, w: &crate::config::WatchConfig) -> (bool, String) {
    let what = format!("{}/{}", w.group, w.version);
    match crate::watch::discover_group(client, &w.group, &w.version).await {
        Ok(kinds) if kinds.is_empty() => (
            true,
            format!("* → no kind of {what} can be listed and watched yet (watched when one is)"),
        ),
        Ok(kinds) => {
            let names: Vec<String> = kinds
                .iter()
                .map(|k| format!("{} → {}", k.kind, k.found.resource.plural))
                .collect();
            (
                true,
                format!("* → {} kinds of {what}: {}", kinds.len(), names.join(", ")),
            )
        }
        Err(kube::Error::Api(s)) if s.code == 404 => (
            true,
            format!("* → {what} is not served yet (its kinds are watched once installed)"),
        ),
        Err(e) => (
            false,
            format!("discovering the kinds of {what}: {}", chain(&e)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(item: &'static str, name: Option<&str>, ok: bool, detail: &str) -> Item {
        Item {
            item,
            name: name.map(str::to_owned),
            ok,
            detail: detail.into(),
        }
    }

    #[test]
    fn text_lines_keep_their_shape() {
        let config = item("config", Some("c.yaml"), true, "c.yaml: 1 watches, 1 sinks");
        assert_eq!(config.text(), "ok   config: c.yaml: 1 watches, 1 sinks");
        let cluster = item("cluster", None, true, "Kubernetes 1.34");
        assert_eq!(cluster.text(), "ok   cluster: Kubernetes 1.34");
        let sink = item("sink", Some("nats"), false, "connect: refused");
        assert_eq!(sink.text(), "FAIL sink nats: connect: refused");
    }

    #[test]
    fn json_lines_are_one_object_each_naming_the_item() {
        let watch = item(
            "watch",
            Some("widgets"),
            true,
            "Widget \u{2192} widgets\n(namespaced)",
        );
        let line = watch.json();
        assert!(!line.contains('\n'), "one line: {line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "item": "watch",
                "name": "widgets",
                "ok": true,
                "detail": "Widget \u{2192} widgets\n(namespaced)",
            })
        );
        let cluster: serde_json::Value =
            serde_json::from_str(&item("cluster", None, false, "x").json()).unwrap();
        assert_eq!(
            cluster,
            serde_json::json!({"item": "cluster", "ok": false, "detail": "x"})
        );
    }
}
