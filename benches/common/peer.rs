//! The client-go peer (`benches/peer`, BENCHMARKS.md "The client-go peer") as a child
//! process of a benchmark: built by `benches/peer/build`, started on one resource and
//! sink, read through its `/readyz` and `/metrics` (counters by event type), measured
//! through `/proc`, stopped with SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where the peer publishes.
pub enum PeerSink<'a> {
    /// A Kafka topic (it must exist).
    Kafka { brokers: &'a str, topic: &'a str },
    /// A JetStream stream the peer creates over `subject.>`.
    Nats {
        url: &'a str,
        stream: &'a str,
        subject: &'a str,
    },
    /// One line per event on its stdout, which goes to /dev/null: for memory readings,
    /// where crbridge runs with its stdout sink.
    Stdout,
}

/// The peer binary: `explicit`, else `CRBRIDGE_PEER_BIN`, else what `benches/peer/build`
/// prints (it builds once and caches).
pub fn binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("CRBRIDGE_PEER_BIN").map(PathBuf::from))
    {
        ensure!(p.exists(), "client-go peer {}: no such file", p.display());
        return Ok(p);
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/peer/build");
    let out = Command::new(script)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {script}"))?;
    ensure!(out.status.success(), "{script} failed ({})", out.status);
    let path = PathBuf::from(String::from_utf8(out.stdout)?.trim());
    ensure!(
        path.exists(),
        "{script} printed {}, which does not exist",
        path.display()
    );
    Ok(path)
}

/// A running peer; killed if dropped while still running.
pub struct Peer {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Peer {
    /// Starts the peer on `group/version/resource` in `namespace`, its log (stderr) in
    /// `dir/peer.log`, and waits (up to 30 s) until it serves `/metrics`.
    pub async fn start(
        bin: &Path,
        gvr: &str,
        namespace: &str,
        sink: &PeerSink<'_>,
        dir: &Path,
    ) -> anyhow::Result<Peer> {
        std::fs::create_dir_all(dir)?;
        let log = dir.join("peer.log");
        let mut cmd = Command::new(bin);
        cmd.args(["--gvr", gvr, "--namespace", namespace]);
        match sink {
            PeerSink::Kafka { brokers, topic } => {
                cmd.args(["--sink", "kafka", "--brokers", brokers, "--topic", topic])
            }
            PeerSink::Nats {
                url,
                stream,
                subject,
            } => cmd.args([
                "--sink",
                "nats",
                "--url",
                url,
                "--stream",
                stream,
                "--subject",
                subject,
            ]),
            PeerSink::Stdout => cmd.args(["--sink", "stdout"]),
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut peer = Peer {
            child,
            addr: String::new(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            peer.check_alive()?;
            let text = std::fs::read_to_string(&peer.log).unwrap_or_default();
            if let Some(addr) = text.lines().find_map(|l| l.strip_prefix("listening ")) {
                peer.addr = addr.trim().to_string();
                return Ok(peer);
            }
            if Instant::now() > deadline {
                bail!(
                    "the peer did not log its address within 30 s:\n{}",
                    peer.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "the peer exited ({status}); end of its log:\n{}",
                self.log_tail()
            );
        }
        Ok(())
    }

    /// Events of `kind` (`added`, `updated`, `deleted`; all if `None`) the broker
    /// acknowledged, and those it refused.
    pub async fn counts(&mut self, kind: Option<&str>) -> anyhow::Result<(u64, u64)> {
        self.check_alive()?;
        let (status, text) = http_get(&self.addr, "/metrics").await?;
        ensure!(status == 200, "the peer's /metrics answered {status}");
        let labels: Vec<(&str, &str)> = kind.map(|k| ("type", k)).into_iter().collect();
        Ok((
            metric_sum(&text, "peer_events_published_total", &labels) as u64,
            metric_sum(&text, "peer_events_failed_total", &labels) as u64,
        ))
    }

    /// Waits until the informer has synced (`/readyz` answers 200) and the `objects` Add
    /// events of its initial list are settled, so a measurement that follows sees only its
    /// own events.
    pub async fn wait_initial(&mut self, objects: u64, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            self.check_alive()?;
            if let Ok((200, _)) = http_get(&self.addr, "/readyz").await {
                let (published, failed) = self.counts(Some("added")).await?;
                if published + failed >= objects {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "the peer did not sync and publish its {objects} initial events within {limit:?}:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls `/metrics` at `pace` until `n` events of `kind` are acknowledged; when they
    /// were.
    pub async fn wait_published(
        &mut self,
        kind: &str,
        n: u64,
        mut pace: super::PollPace,
    ) -> anyhow::Result<Instant> {
        loop {
            let (published, failed) = self.counts(Some(kind)).await?;
            ensure!(
                failed == 0,
                "the peer's broker refused {failed} {kind} events"
            );
            if published >= n {
                return Ok(Instant::now());
            }
            tokio::time::sleep(pace.next(published as f64, n as f64)).await;
        }
    }

    /// SIGTERM, and its exit once the events in flight are settled: the exit status and
    /// its closing `totals …` line.
    pub async fn stop(mut self) -> anyhow::Result<(String, String)> {
        Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.child.try_wait()? {
                break s;
            }
            if Instant::now() > deadline {
                bail!("the peer did not exit within 30 s of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let totals = text
            .lines()
            .rev()
            .find(|l| l.starts_with("totals "))
            .unwrap_or("no totals line")
            .to_string();
        let exit = status
            .code()
            .map(|c| c.to_string())
            .unwrap_or_else(|| status.to_string());
        Ok((exit, totals))
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `GET path` on `addr` (HTTP/1.0, so the body ends with the connection), within 5 s:
/// (status, body).
pub async fn http_get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| anyhow!("GET http://{addr}{path}: no answer within 5 s"))?
        .with_context(|| format!("GET http://{addr}{path}"))?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("GET http://{addr}{path}: malformed answer"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("GET http://{addr}{path}: no status"))?;
    Ok((status, body.to_string()))
}

/// Sum of the samples of counter `name` in a Prometheus text exposition whose labels
/// include every pair in `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            let have: Vec<&str> = rest.trim_end_matches('}').split(',').collect();
            let all = labels
                .iter()
                .all(|(k, v)| have.contains(&format!("{k}=\"{v}\"").as_str()));
            (metric == name && all).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

#[cfg(test)]
mod tests {
    // The path in the function: the benchmarks built without the test harness compile this
    // module with cfg(test) but drop the test, which would leave a module-level `use` unused.
    #[test]
    fn metric_sum_matches_name_and_every_label() {
        use super::metric_sum;
        let text = "# HELP peer_events_published_total x\n\
                    # TYPE peer_events_published_total counter\n\
                    peer_events_published_total{type=\"added\"} 50\n\
                    peer_events_published_total{type=\"updated\"} 300\n\
                    peer_events_published_total_other{type=\"updated\"} 7\n\
                    peer_events_failed_total{type=\"updated\"} 1\n";
        let name = "peer_events_published_total";
        assert_eq!(metric_sum(text, name, &[]), 350.0);
        assert_eq!(metric_sum(text, name, &[("type", "updated")]), 300.0);
        assert_eq!(metric_sum(text, name, &[("type", "deleted")]), 0.0);
        assert_eq!(metric_sum(text, "absent", &[]), 0.0);
    }
}
