//! `crbridge check`: validate the config, then probe the cluster and every sink, and print
//! one line per item. Exit code 0 only if everything is usable.

use std::path::Path;
use std::process::ExitCode;

use crate::config;
use crate::dispatch::chain;

fn line(ok: bool, item: &str, detail: &str) {
    println!("{} {item}: {detail}", if ok { "ok  " } else { "FAIL" });
}

/// Runs the checks and prints the report.
pub async fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let file = path.display().to_string();
    let cfg = match config::load(path) {
        Ok(c) => {
            line(
                true,
                "config",
                &format!(
                    "{file}: {} watches, {} sinks",
                    c.watches.len(),
                    c.sinks.len()
                ),
            );
            // Loading compiled every filter (a bad one fails the config line above).
            for w in &c.watches {
                if let Some(filter) = &w.compiled_filter {
                    line(true, &format!("filter {}", w.name), filter.source());
                }
            }
            c
        }
        Err(e) => {
            line(false, "config", &e.to_string());
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut failed = false;
    match crate::app::kube_client(&cfg).await {
        Ok(client) => {
            match client.apiserver_version().await {
                Ok(v) => line(
                    true,
                    "cluster",
                    &format!("Kubernetes {}.{}", v.major, v.minor),
                ),
                Err(e) => {
                    failed = true;
                    line(false, "cluster", &chain(&e));
                }
            }
            for w in &cfg.watches {
                match crate::app::resolve(&client, w).await {
                    Ok(r) => line(
                        true,
                        &format!("watch {}", w.name),
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
                    Err(e) => {
                        failed = true;
                        line(false, &format!("watch {}", w.name), &format!("{e:#}"));
                    }
                }
            }
        }
        Err(e) => {
            failed = true;
            line(false, "cluster", &format!("{e:#}"));
        }
    }
    for (name, section) in &cfg.sinks {
        let item = format!("sink {name}");
        let sink = match crate::sinks::configure_sink(&file, section) {
            Ok(s) => s,
            Err(e) => {
                failed = true;
                line(false, &item, &e.to_string());
                continue;
            }
        };
        let probe = async {
            let connected = sink.connect().await?;
            connected.healthcheck().await
        };
        match tokio::time::timeout(std::time::Duration::from_secs(15), probe).await {
            Ok(Ok(())) => line(true, &item, &format!("{} reachable", sink.kind)),
            Ok(Err(e)) => {
                failed = true;
                line(false, &item, &chain(&e));
            }
            Err(_) => {
                failed = true;
                line(false, &item, "no answer within 15s");
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
