//! `crbridge replay`.

use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};

use super::{target, Target};
use crate::admin::{check_names, ReplayLine};
use crate::config::Config;
use crate::replay::{Progress, ReplayRequest};
use crate::wiring::{sink_watches, SinkSetup};

fn show(p: &Progress) {
    eprintln!(
        "replay: {} of at most {} events sent (up to seq {})",
        p.sent, p.total, p.last_seq
    );
}

/// Re-publishes the requested range and prints a summary.
pub async fn run(config: &Config, file: &str, req: ReplayRequest) -> anyhow::Result<ExitCode> {
    check_names(config, Some(&req.sink), req.watch.as_deref()).map_err(|e| anyhow!(e))?;
    let done = match target(config)? {
        Target::Stopped(store) => {
            // A range that is gone fails before anything connects.
            crate::replay::resolve_start(&store, req.start)?;
            let setup = SinkSetup::new(file, &config.sinks[&req.sink])?;
            let sink = (setup.connector)()
                .await
                .with_context(|| format!("connecting sink {}", req.sink))?;
            let watches = sink_watches(config, &req.sink);
            let mut report = |p: Progress| show(&p);
            crate::replay::replay(&store, sink.as_ref(), &watches, &req, &mut report).await?
        }
        Target::Running(endpoint) => {
            let body = serde_json::to_string(&req)?;
            let mut done = None;
            let mut error = None;
            let mut other = String::new();
            let code =
                endpoint
                    .request("POST", "/admin/replay", Some(&body), &mut |l| {
                        match serde_json::from_str::<ReplayLine>(l) {
                            Ok(ReplayLine::Progress(p)) => show(&p),
                            Ok(ReplayLine::Done(p)) => done = Some(p),
                            Ok(ReplayLine::Error(e)) => error = Some(e),
                            Err(_) => other.push_str(l),
                        }
                    })
                    .await?;
            if let Some(e) = error {
                bail!(e);
            }
            match (code, done) {
                (200, Some(p)) => p,
                _ => bail!("admin endpoint answered {code}: {}", other.trim()),
            }
        }
    };
    println!(
        "replayed {} events to sink {} (up to seq {})",
        done.sent, req.sink, done.last_seq
    );
    Ok(ExitCode::SUCCESS)
}
