//! `crbridge snapshot`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{target, Target};
use crate::admin::{check_names, SnapshotBody, SnapshotResult};
use crate::capture::{Capture, CaptureStats, Command, SnapshotRequest};
use crate::config::Config;
use crate::dispatch::DispatchStats;
use crate::wiring::{sink_watches, SinkSetup};

/// Emits the current state of every object of `watch` as snapshot events (to `sink` only,
/// if given). On a running instance they join its outbox and its dispatchers publish them;
/// on a stopped one they are written to the outbox and published here, with everything
/// still pending for those sinks before them.
pub async fn run(
    config: &Config,
    file: &str,
    watch_name: &str,
    sink: Option<&str>,
) -> anyhow::Result<ExitCode> {
    check_names(config, sink, Some(watch_name)).map_err(|e| anyhow!(e))?;
    let result = match target(config)? {
        Target::Running(endpoint) => {
            let body = serde_json::to_string(&SnapshotBody {
                watch: watch_name.to_string(),
                sink: sink.map(str::to_string),
            })?;
            let mut text = String::new();
            let code = endpoint
                .request("POST", "/admin/snapshot", Some(&body), &mut |l| {
                    text.push_str(l)
                })
                .await?;
            if code != 200 {
                bail!("admin endpoint answered {code}: {}", text.trim());
            }
            let r: SnapshotResult = serde_json::from_str(&text)?;
            println!(
                "snapshot of watch {watch_name}: {} events queued (up to seq {}); the running instance publishes them",
                r.events, r.last_seq
            );
            return Ok(ExitCode::SUCCESS);
        }
        Target::Stopped(store) => {
            let clients = crate::plan::cluster_clients(config).await?;
            let (scopes, rules) = crate::plan::plan(config, &clients).await?;
            // Only commands: no watch runs here, so the observation channel starts closed.
            let (tx, rx) = mpsc::channel(16);
            let (durable_tx, _) = watch::channel(store.last_seq()?);
            let task = tokio::spawn(
                Capture::new(
                    store.clone(),
                    rules,
                    durable_tx,
                    Arc::new(CaptureStats::default()),
                )
                .run(mpsc::channel(1).1, rx, CancellationToken::new()),
            );
            let id = format!("{:x}-{:08x}", crate::store::now_ms(), rand::random::<u32>());
            let mut result = SnapshotResult {
                events: 0,
                last_seq: 0,
            };
            // The watch's scopes; for a whole-group watch, those of its kinds.
            let named = |s: &&crate::watch::Scope| {
                crate::config::StateKey::parse(&s.watch, config.fleet).named_by(watch_name)
            };
            for s in scopes.iter().filter(named) {
                let (done_tx, done_rx) = tokio::sync::oneshot::channel();
                tx.send(Command::Snapshot {
                    scope: s.id,
                    request: SnapshotRequest {
                        id: id.clone(),
                        sinks: sink.map(|x| vec![x.to_string()]),
                        done: Some(done_tx),
                    },
                })
                .await
                .map_err(|_| anyhow!("capture stopped"))?;
                let d = done_rx.await?;
                result.events += d.events;
                result.last_seq = result.last_seq.max(d.last_seq);
            }
            drop(tx);
            task.await?;
            eprintln!(
                "snapshot of watch {watch_name}: {} events written; publishing",
                result.events
            );
            publish_until(config, file, &store, watch_name, sink, result.last_seq).await?;
            result
        }
    };
    println!(
        "snapshot of watch {watch_name}: {} events published (up to seq {})",
        result.events, result.last_seq
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs the dispatchers of the sinks concerned until each has acked `upto`.
async fn publish_until(
    config: &Config,
    file: &str,
    store: &crate::store::Store,
    watch_name: &str,
    only: Option<&str>,
    upto: u64,
) -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    let (_durable_tx, durable) = watch::channel(upto);
    let mut running = Vec::new();
    for (name, section) in &config.sinks {
        let carried = sink_watches(config, name);
        let carries = config
            .watch_arg_keys(watch_name)
            .unwrap_or_default()
            .iter()
            .any(|k| carried.carries(k) || carried.contains(k));
        if !carries || only.is_some_and(|o| o != name) {
            continue;
        }
        let stats = Arc::new(DispatchStats::default());
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let d = SinkSetup::new(file, section)?.dispatcher(
            config,
            store.clone(),
            durable.clone(),
            stats.clone(),
            metrics.clone(),
        );
        let published = {
            let label = crate::metrics::sink(name);
            move || metrics.published.get_or_create(&label).get()
        };
        let (task, run) = (format!("dispatch/{name}"), d.run(cancel.clone()));
        let run = async move { crate::supervise::with_test_panic(&task, published, run).await };
        running.push((name.clone(), stats, tokio::spawn(run)));
    }
    let mut last_report = std::time::Instant::now();
    loop {
        // A dispatcher that ended on its own (a panic) would leave this loop waiting forever.
        let ended = running.iter().position(|(_, s, t)| {
            t.is_finished() && s.cursor.load(std::sync::atomic::Ordering::Relaxed) < upto
        });
        if let Some(i) = ended {
            let (name, _, t) = running.swap_remove(i);
            let exit = crate::supervise::Exit::of(t.await);
            cancel.cancel();
            for (_, _, t) in running {
                let _ = t.await;
            }
            store.flush().await?;
            bail!("sink {name}: the dispatcher {exit} before the snapshot was published (its events are in the outbox: the next `crbridge run` publishes them)");
        }
        let behind: Vec<(String, u64)> = running
            .iter()
            .map(|(n, s, _)| {
                (
                    n.clone(),
                    s.cursor.load(std::sync::atomic::Ordering::Relaxed),
                )
            })
            .filter(|(_, c)| *c < upto)
            .collect();
        if behind.is_empty() {
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            for (n, c) in &behind {
                eprintln!("snapshot: sink {n} at seq {c} of {upto}");
            }
            last_report = std::time::Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cancel.cancel();
    for (_, _, t) in running {
        let _ = t.await;
    }
    store.flush().await?;
    Ok(())
}
