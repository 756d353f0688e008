//! End-to-end benchmark: crbridge's throughput per sink against the API server's own
//! ceiling and a plain producer, and the latency crbridge adds.
//!
//! ```sh
//! cargo run --release --example bench_e2e -- [--updates 5000] [--objects 200] \
//!     [--sinks nats,kafka,amqp] [--writers 16] [--smoke] [--perf] [--crbridge PATH] \
//!     [--quiet-wait 300] [--peer PATH | --no-peer]
//! ```
//!
//! Runs against the servers `deploy/local/up` started (`deploy/local/env`), in a namespace
//! and broker resources of its own (`bench-e2e*`), and removes what it created at the end.
//! The workload: a pool of `--objects` 4 KiB `BenchWidget`s (`benches/common`) is created
//! first; every phase then issues `--updates` (M) merge patches round-robin over the pool,
//! `--writers` (16) in flight, each changing 1–3 spec fields to values never used before
//! (a per-object version counter runs across phases), so every update is a real change.
//!
//! * **(a) API server ceiling**: a plain kube-rs `Api::watch` on the namespace discards the
//!   events; events/s = M / (first write → M-th watch event). Measured right before each
//!   sink's crbridge run, so that (a) and (c) see the same state of a shared machine.
//! * **(b) plain producer**, per sink: M 4 KiB messages with CloudEvents-like headers,
//!   published with the client crate crbridge's sink uses, its durability settings (NATS:
//!   JetStream file-storage stream, `Nats-Msg-Id`, PubAck awaited; Kafka: idempotent
//!   producer, `acks=all`, the same `message.timeout.ms` and local queue size, librdkafka's
//!   default linger; RabbitMQ: publisher confirms, `mandatory`, persistent messages to a
//!   durable queue) and its default in-flight window (read from the sink crate's config
//!   defaults). After one warm-up message (acknowledged before the clock starts):
//!   throughput, and per-message ack latency (publish call → ack, exact p50/p99 from every
//!   sample). Run at full speed; paced at the rate crbridge reached in (c), for a latency
//!   comparison at the same offered load; and, for the analysis only, paced again while
//!   the writer issues M updates (no crbridge), so the API server loads the 2 cores as it
//!   does during a crbridge run.
//! * **(c) crbridge**, per sink: the release binary as a child process (`crbridge run`),
//!   a fresh state directory, a config with only that sink, the watch limited to the
//!   namespace, `initial: skip`. Once `/readyz` answers 200 the writer issues M updates;
//!   `/metrics` is polled every 500 ms, every 10 ms near M (a scrape costs crbridge CPU);
//!   events/s = M / (first write → the moment
//!   `crbridge_events_published_total{sink}` reaches M). Target ≥ 0.9 × min(a, b).
//!   Light correctness check: the counter, `crbridge_events_total{type="updated"}` and the
//!   number of messages in the destination (stream / topic / queue, counted after a
//!   graceful stop) are exactly M; nothing suppressed, dead-lettered or inferred.
//!   crbridge's CPU seconds during the run and its RSS (and peak) are recorded, and its
//!   capture batches during the run from `crbridge_commit_seconds` (how many, events per
//!   batch, commit + flush time).
//! * **(d) added latency**, per sink: p50/p99 of `crbridge_publish_latency_seconds{sink}`
//!   (change observed → broker ack), interpolated within the buckets as PromQL's
//!   `histogram_quantile` does, bucket boundaries read from the exposition. Shown next to
//!   the paced plain producer's exact p50/p99 and the same samples interpolated over the
//!   same buckets (like for like). Target: p99 ≤ 1.25 × plain p99 + 2 ms, judged on the
//!   interpolated figures.
//! * **(e) the client-go peer**, for NATS and Kafka (BENCHMARKS.md "The client-go peer"):
//!   the informer that publishes every change with no persistence, `benches/peer`, built by
//!   `benches/peer/build` (or `--peer PATH`), watching the same namespace and publishing to
//!   a topic / stream of its own, right after (c) so that (a), (c) and (e) see the same
//!   machine. Once its initial list is synced and its Add events are
//!   acknowledged, the writer issues M updates; events/s = M / (first write → its
//!   `peer_events_published_total{type="updated"}` reaches M), divided by the same (a) as
//!   crbridge's run, and its CPU per event (utime + stime over that window ÷ M) and RSS,
//!   printed beside crbridge's. `--no-peer` leaves it out.
//!
//! The machine is small and shared: before each phase the program waits (up to
//! `--quiet-wait` seconds, 300; no wait with `--smoke`) for it to be less than 25% busy, and
//! the report flags a phase that started on a busy machine. Every phase records how busy the
//! machine was (`/proc/stat`) and the CPU seconds of this process, crbridge, each server
//! and everything else, which is what says where a ceiling comes from on 2 cores.
//! `--perf` records crbridge with `perf record --call-graph dwarf` during each of its runs
//! (`target/bench-e2e-work/<sink>/perf.data`; the figures of such a run include perf's
//! overhead). `--smoke` is M = 300 over 50 objects. The figures are printed and written as
//! markdown to `target/bench-e2e.md`.

#[path = "../benches/common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, ensure, Context as _};
use async_nats::jetstream::{self, message::PublishMessage, stream};
use futures::stream::{FuturesUnordered, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{
    DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::{Api, Client};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};

/// How often `/metrics` is read while waiting for the published counter.
const METRICS_POLL_FAST: Duration = Duration::from_millis(10);

/// How `/metrics` of crbridge and of the peer is polled while waiting for the M-th event:
/// every 500 ms while it is far, every 10 ms near it (`common::PollPace`). Polling every
/// 20 ms throughout cost crbridge about 0.2 ms of CPU per scrape, 50 scrapes a second:
/// roughly a tenth of the CPU per event measured at API-server pace.
fn metrics_poll() -> common::PollPace {
    common::PollPace::new(Duration::from_millis(500), METRICS_POLL_FAST)
}
/// Body size of a plain producer's message.
const BODY_BYTES: usize = 4096;
/// Field manager of the benchmark's writes.
const MANAGER: &str = "bench-e2e";
/// Name of the watch in crbridge's config.
const WATCH: &str = "bench";
/// Cluster name in crbridge's config.
const CLUSTER: &str = "bench";
/// CPU accounting label of this process.
const BENCH: &str = "bench (writer, watcher, producer)";
/// CPU accounting label of the API server (with its embedded etcd).
const KUBE: &str = "kube-apiserver+etcd";

// ---------------------------------------------------------------------------------------
// Command line

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SinkKind {
    Nats,
    Kafka,
    Amqp,
}

impl SinkKind {
    /// The sink's name in crbridge's config and metrics.
    fn name(self) -> &'static str {
        match self {
            SinkKind::Nats => "nats",
            SinkKind::Kafka => "kafka",
            SinkKind::Amqp => "amqp",
        }
    }

    fn title(self) -> &'static str {
        match self {
            SinkKind::Nats => "NATS JetStream",
            SinkKind::Kafka => "Kafka",
            SinkKind::Amqp => "RabbitMQ",
        }
    }

    fn parse(s: &str) -> anyhow::Result<Self> {
        match s.trim() {
            "nats" => Ok(SinkKind::Nats),
            "kafka" => Ok(SinkKind::Kafka),
            "amqp" | "rabbitmq" => Ok(SinkKind::Amqp),
            other => bail!("unknown sink {other:?} (expected nats, kafka, amqp)"),
        }
    }
}

struct Args {
    updates: usize,
    objects: usize,
    writers: usize,
    sinks: Vec<SinkKind>,
    smoke: bool,
    perf: bool,
    namespace: String,
    crbridge: Option<PathBuf>,
    /// The client-go peer's binary (`None`: `benches/peer/build`).
    peer: Option<PathBuf>,
    /// Leave the client-go peer out.
    no_peer: bool,
    /// How long a phase waits for the machine to be quiet before it starts anyway.
    quiet_wait: Duration,
    command_line: String,
}

impl Args {
    fn parse() -> anyhow::Result<Args> {
        const USAGE: &str = "usage: bench_e2e [--updates N] [--objects N] [--writers N] \
             [--sinks nats,kafka,amqp] [--smoke] [--perf] [--namespace NS] [--crbridge PATH] \
             [--quiet-wait SECONDS] [--peer PATH | --no-peer]";
        let raw: Vec<String> = std::env::args().skip(1).collect();
        let mut updates = None;
        let mut objects = None;
        let mut quiet_wait = None;
        let mut args = Args {
            updates: 0,
            objects: 0,
            writers: 16,
            sinks: vec![SinkKind::Nats, SinkKind::Kafka, SinkKind::Amqp],
            smoke: false,
            perf: false,
            namespace: "bench-e2e".into(),
            crbridge: None,
            peer: None,
            no_peer: false,
            quiet_wait: Duration::ZERO,
            command_line: format!(
                "cargo run --release --example bench_e2e -- {}",
                raw.join(" ")
            )
            .trim_end()
            .to_string(),
        };
        let mut it = raw.iter();
        while let Some(flag) = it.next() {
            let mut value = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| anyhow!("{flag} needs a value\n{USAGE}"))
            };
            let number = |v: String| {
                v.parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| anyhow!("{flag}: expected a positive number, got {v:?}"))
            };
            match flag.as_str() {
                "--updates" => updates = Some(number(value()?)?),
                "--objects" => objects = Some(number(value()?)?),
                "--writers" => args.writers = number(value()?)?,
                "--sinks" => {
                    args.sinks = value()?
                        .split(',')
                        .filter(|s| !s.trim().is_empty())
                        .map(SinkKind::parse)
                        .collect::<anyhow::Result<_>>()?;
                    ensure!(!args.sinks.is_empty(), "--sinks: name at least one sink");
                }
                "--smoke" => args.smoke = true,
                "--perf" => args.perf = true,
                "--namespace" => args.namespace = value()?,
                "--crbridge" => args.crbridge = Some(value()?.into()),
                "--peer" => args.peer = Some(value()?.into()),
                "--no-peer" => args.no_peer = true,
                "--quiet-wait" => {
                    let v = value()?;
                    quiet_wait =
                        Some(Duration::from_secs(v.parse().map_err(|_| {
                            anyhow!("--quiet-wait: expected seconds, got {v:?}")
                        })?));
                }
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other:?}\n{USAGE}"),
            }
        }
        let (m, n, q) = if args.smoke {
            (300, 50, 0)
        } else {
            (5000, 200, 300)
        };
        args.quiet_wait = quiet_wait.unwrap_or(Duration::from_secs(q));
        args.updates = updates.unwrap_or(m);
        args.objects = objects.unwrap_or(n);
        ensure!(
            args.namespace.starts_with("bench-e2e"),
            "--namespace must start with bench-e2e (got {})",
            args.namespace
        );
        Ok(args)
    }
}

// ---------------------------------------------------------------------------------------
// Small helpers: timeouts, polling, percentiles, formatting

/// Runs `fut` with a time limit; the error names what was awaited.
async fn within<T>(
    limit: Duration,
    what: impl std::fmt::Display,
    fut: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => bail!("timed out after {limit:?} waiting for {what}"),
    }
}

/// Calls `check` every `every` until it returns `Some`, failing after `limit`.
async fn poll_until<T, F, Fut>(
    limit: Duration,
    every: Duration,
    what: &str,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(every).await;
    }
}

/// Time limit of one phase of M events: generous, but finite.
fn phase_limit(m: usize) -> Duration {
    Duration::from_secs(60) + Duration::from_millis(20) * m as u32
}

fn ms(seconds: f64) -> String {
    format!("{:.2} ms", seconds * 1000.0)
}

fn opt_ms(seconds: Option<f64>) -> String {
    seconds.map(ms).unwrap_or_else(|| "n/a".into())
}

fn rate(n: usize, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64().max(1e-9)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "MISS"
    }
}

/// Exact p50 / p99 / mean (seconds) of latency samples.
fn exact_stats(samples: &[Duration]) -> (f64, f64, f64) {
    let mut s = samples.to_vec();
    let p50 = common::quantile(&mut s, 0.50).as_secs_f64();
    let p99 = common::quantile(&mut s, 0.99).as_secs_f64();
    let mean = s.iter().map(Duration::as_secs_f64).sum::<f64>() / s.len().max(1) as f64;
    (p50, p99, mean)
}

/// Cumulative histogram buckets (upper bound, count ≤ bound), `+Inf` last.
type Buckets = Vec<(f64, f64)>;

/// The `q`-quantile of a cumulative histogram, as PromQL's `histogram_quantile`: linear
/// interpolation inside the bucket holding the rank (from 0 for the first bucket); a rank
/// in the `+Inf` bucket gives the highest finite bound.
fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 || buckets.len() < 2 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let in_bucket = count - lower.1;
            if in_bucket <= 0.0 {
                return Some(le);
            }
            return Some(lower.0 + (le - lower.0) * (rank - lower.1) / in_bucket);
        }
        lower = (le, count);
    }
    Some(lower.0)
}

/// `after` − `before`, bucket by bucket (same bounds): the observations in between.
fn minus(after: &[(f64, f64)], before: &[(f64, f64)]) -> Buckets {
    after
        .iter()
        .map(|&(le, n)| {
            let earlier = before.iter().find(|b| b.0 == le).map_or(0.0, |b| b.1);
            (le, n - earlier)
        })
        .collect()
}

/// `samples` counted into cumulative buckets with the upper bounds `bounds` (+Inf added).
fn bucketize(samples: &[Duration], bounds: &[f64]) -> Buckets {
    let mut finite: Vec<f64> = bounds.iter().copied().filter(|b| b.is_finite()).collect();
    finite.sort_by(f64::total_cmp);
    let mut out: Buckets = finite
        .iter()
        .map(|&le| {
            let n = samples.iter().filter(|s| s.as_secs_f64() <= le).count();
            (le, n as f64)
        })
        .collect();
    out.push((f64::INFINITY, samples.len() as f64));
    out
}

// ---------------------------------------------------------------------------------------
// Prometheus text exposition

struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// The samples of a Prometheus / OpenMetrics text exposition (comments skipped).
fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, labels, rest) = match line.find('{') {
            Some(open) => {
                let Some(close) = line[open..].find('}').map(|c| open + c) else {
                    continue;
                };
                (&line[..open], &line[open + 1..close], &line[close + 1..])
            }
            None => match line.split_once(' ') {
                Some((n, r)) => (n, "", r),
                None => continue,
            },
        };
        let labels = labels
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
            .collect();
        let Some(value) = rest.split_whitespace().next().and_then(parse_float) else {
            continue;
        };
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

fn parse_float(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

struct Metrics(Vec<Sample>);

impl Metrics {
    fn parse(text: &str) -> Metrics {
        Metrics(parse_metrics(text))
    }

    /// Sum of the samples named `name` whose labels include `want`.
    fn sum(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                want.iter()
                    .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|s| s.value)
            .fold(0.0, |a, b| a + b)
    }

    /// The cumulative buckets of histogram `name` whose labels include `want`, sorted by
    /// bound.
    fn histogram(&self, name: &str, want: &[(&str, &str)]) -> Buckets {
        let bucket = format!("{name}_bucket");
        let mut out: Buckets = self
            .0
            .iter()
            .filter(|s| s.name == bucket)
            .filter(|s| {
                want.iter()
                    .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .filter_map(|s| {
                let le = s.labels.iter().find(|(k, _)| k == "le")?;
                Some((parse_float(&le.1)?, s.value))
            })
            .collect();
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out
    }
}

/// `GET path` on 127.0.0.1:`port`: (status, body).
async fn http_get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    common::peer::http_get(&format!("127.0.0.1:{port}"), path).await
}

// ---------------------------------------------------------------------------------------
// CPU accounting: the machine and the processes involved

/// Busy and total jiffies of the whole machine (`/proc/stat`).
fn machine_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().next() else {
        return (0, 0);
    };
    let v: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// `pid` and all its descendants.
fn process_tree(pid: u32) -> Vec<u32> {
    let mut parent: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().nth(1))
                .and_then(|x| x.parse::<u32>().ok());
            if let Some(pp) = ppid {
                parent.push((p, pp));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(parent.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    tree
}

/// The local servers' process ids from `deploy/local/.state/*.pid`, by name.
fn server_pids() -> Vec<(&'static str, u32)> {
    let dir = std::env::var("CRBRIDGE_LOCAL_STATE").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/local/.state").to_string()
    });
    [
        (KUBE, "kube"),
        ("kafka", "kafka"),
        ("nats", "nats"),
        ("rabbitmq", "rabbitmq"),
    ]
    .into_iter()
    .filter_map(|(label, file)| {
        let pid = std::fs::read_to_string(format!("{dir}/{file}.pid")).ok()?;
        Some((label, pid.trim().parse().ok()?))
    })
    .collect()
}

/// CPU seconds of a process and its descendants.
fn tree_cpu(pid: u32) -> f64 {
    process_tree(pid)
        .iter()
        .map(|p| common::cpu_seconds(&p.to_string()))
        .sum()
}

/// A snapshot of CPU counters, to take the difference over a phase.
struct CpuMark {
    machine: (u64, u64),
    procs: Vec<(String, f64)>,
}

impl CpuMark {
    /// The counters now; `bridge`: the bridge under test (label, pid), crbridge or the peer.
    fn take(bridge: Option<(&str, u32)>) -> CpuMark {
        let mut procs = vec![(BENCH.to_string(), common::cpu_seconds("self"))];
        if let Some((label, pid)) = bridge {
            procs.push((label.into(), common::cpu_seconds(&pid.to_string())));
        }
        for (name, pid) in server_pids() {
            procs.push((name.into(), tree_cpu(pid)));
        }
        CpuMark {
            machine: machine_jiffies(),
            procs,
        }
    }

    /// "machine 97% busy; crbridge 0.9 s, kube 1.2 s, ..." between `self` and `later`.
    fn usage(&self, later: &CpuMark, wall: Duration) -> CpuUsage {
        let busy = later.machine.0.saturating_sub(self.machine.0) as f64;
        let total = later.machine.1.saturating_sub(self.machine.1) as f64;
        let procs: Vec<(String, f64)> = later
            .procs
            .iter()
            .filter_map(|(name, after)| {
                let before = self.procs.iter().find(|(n, _)| n == name)?.1;
                Some((name.clone(), after - before))
            })
            .collect();
        let accounted: f64 = procs.iter().map(|(_, s)| s).sum();
        // 100 jiffies per second (USER_HZ), as common::cpu_seconds assumes.
        let other = (busy / 100.0 - accounted).max(0.0);
        CpuUsage {
            busy: if total > 0.0 { busy / total } else { 0.0 },
            wall,
            procs,
            other,
        }
    }
}

struct CpuUsage {
    /// Fraction of the machine's CPU time that was busy.
    busy: f64,
    wall: Duration,
    /// CPU seconds per process (tree) of interest.
    procs: Vec<(String, f64)>,
    /// Busy CPU seconds not accounted to them: anyone else on the machine.
    other: f64,
}

impl CpuUsage {
    fn describe(&self) -> String {
        let mut s = format!(
            "machine {:.0}% busy over {:.2} s",
            self.busy * 100.0,
            self.wall.as_secs_f64()
        );
        for (name, secs) in &self.procs {
            if *secs >= 0.005 {
                let _ = write!(s, "; {name} {secs:.2} CPU-s");
            }
        }
        let _ = write!(s, "; other processes {:.2} CPU-s", self.other);
        s
    }

    fn of(&self, name: &str) -> f64 {
        self.procs
            .iter()
            .find(|(n, _)| n == name)
            .map(|p| p.1)
            .unwrap_or(0.0)
    }
}

// ---------------------------------------------------------------------------------------
// The plain producers

type Ack = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// CloudEvents-like attributes of plain message `k` (about the size of crbridge's).
fn plain_attributes(namespace: &str, seed: u64, k: usize, objects: usize) -> Vec<(String, String)> {
    let obj = k % objects;
    let uid = format!("00000000-0000-4000-8000-{obj:012}");
    [
        ("specversion", "1.0".to_string()),
        ("id", format!("{seed:016x}{k:016x}")),
        (
            "source",
            format!(
                "/clusters/{CLUSTER}/apis/{}/v1/{}",
                common::GROUP,
                common::PLURAL
            ),
        ),
        ("type", "io.crbridge.resource.updated".into()),
        ("subject", format!("{namespace}/w{obj:06}")),
        ("time", "2026-11-24T05:23:46.412Z".into()),
        ("partitionkey", uid.clone()),
        ("sequence", format!("{:020}", 100_000 + k)),
        ("crbgroup", common::GROUP.into()),
        ("crbversion", "v1".into()),
        ("crbkind", common::KIND.into()),
        ("crbnamespace", namespace.into()),
        ("crbname", format!("w{obj:06}")),
        ("crbuid", uid),
        ("crbgeneration", (k / objects + 2).to_string()),
        ("crbinferred", "false".into()),
        ("crbchangedby", MANAGER.into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// A connected plain producer and its destination (created for this run, removed after).
enum Plain {
    Nats {
        js: jetstream::Context,
        stream: String,
        subject: String,
    },
    Kafka {
        producer: FutureProducer,
        topic: String,
    },
    Amqp {
        connection: Connection,
        channel: Channel,
        exchange: String,
        queue: String,
        routing_key: String,
    },
}

/// The in-flight windows and settings crbridge's sinks use by default (their config crates'
/// defaults, so this follows the product).
struct SinkDefaults {
    nats: crbridge_sink_nats::NatsSinkConfig,
    kafka: crbridge_sink_kafka::KafkaSinkConfig,
    amqp: crbridge_sink_amqp::AmqpSinkConfig,
}

impl SinkDefaults {
    fn load() -> anyhow::Result<SinkDefaults> {
        Ok(SinkDefaults {
            nats: serde_saphyr::from_str("url: x\nstream: S\nsubject: s\n")?,
            kafka: serde_saphyr::from_str("brokers: x\ntopic: t\n")?,
            amqp: serde_saphyr::from_str("url: x\nexchange: x\nroutingKey: k\n")?,
        })
    }

    fn window(&self, sink: SinkKind) -> usize {
        match sink {
            SinkKind::Nats => self.nats.max_in_flight,
            SinkKind::Kafka => self.kafka.max_in_flight,
            SinkKind::Amqp => self.amqp.max_in_flight,
        }
        .max(1)
    }
}

async fn nats_context(url: &str, d: &SinkDefaults) -> anyhow::Result<jetstream::Context> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .with_context(|| format!("connecting to NATS at {url}"))?;
    // As crbridge's NatsSink: PubAck timeout, window of PubAcks, back-pressure at the window.
    Ok(jetstream::ContextBuilder::new()
        .timeout(d.nats.ack_timeout)
        .max_ack_inflight(d.nats.max_in_flight.max(1))
        .backpressure_on_inflight(true)
        .build(client))
}

fn kafka_producer(brokers: &str, d: &SinkDefaults) -> anyhow::Result<FutureProducer> {
    // As crbridge's KafkaSink: idempotent, acks=all, its message timeout and local queue.
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set(
            "message.timeout.ms",
            d.kafka.message_timeout.as_millis().to_string(),
        )
        .set(
            "queue.buffering.max.messages",
            (d.kafka.max_in_flight.max(1) * 2).to_string(),
        )
        .create()
        .context("creating the Kafka producer")
}

fn kafka_admin(brokers: &str) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .context("creating the Kafka admin client")
}

fn admin_options() -> AdminOptions {
    AdminOptions::new()
        .request_timeout(Some(Duration::from_secs(15)))
        .operation_timeout(Some(Duration::from_secs(15)))
}

/// Creates `topic` with one partition (the broker's `num.partitions` for the topics
/// crbridge would otherwise get auto-created).
async fn kafka_create_topic(brokers: &str, topic: &str) -> anyhow::Result<()> {
    let admin = kafka_admin(brokers)?;
    let results = within(
        Duration::from_secs(30),
        format!("creating Kafka topic {topic}"),
        async {
            Ok(admin
                .create_topics(
                    &[NewTopic::new(topic, 1, TopicReplication::Fixed(1))],
                    &admin_options(),
                )
                .await?)
        },
    )
    .await?;
    for r in results {
        r.map_err(|(t, e)| anyhow!("creating Kafka topic {t}: {e}"))?;
    }
    Ok(())
}

async fn kafka_delete_topic(brokers: &str, topic: &str) -> anyhow::Result<()> {
    let admin = kafka_admin(brokers)?;
    let results = within(
        Duration::from_secs(30),
        format!("deleting Kafka topic {topic}"),
        async { Ok(admin.delete_topics(&[topic], &admin_options()).await?) },
    )
    .await?;
    for r in results {
        r.map_err(|(t, e)| anyhow!("deleting Kafka topic {t}: {e}"))?;
    }
    Ok(())
}

/// Records in `topic` (one partition): its high watermark.
async fn kafka_count(brokers: &str, topic: &str) -> anyhow::Result<u64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "bench-e2e-count")
        .create()?;
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let (_, high) = consumer
            .fetch_watermarks(&topic, 0, Duration::from_secs(10))
            .with_context(|| format!("watermarks of Kafka topic {topic}"))?;
        Ok(high.max(0) as u64)
    })
    .await?
}

async fn amqp_channel(url: &str) -> anyhow::Result<(Connection, Channel)> {
    let connection = within(Duration::from_secs(15), "connecting to RabbitMQ", async {
        Ok(Connection::connect(url, ConnectionProperties::default()).await?)
    })
    .await?;
    let channel = connection.create_channel().await?;
    Ok((connection, channel))
}

/// Declares a durable topic exchange and a durable queue bound to it with `#`.
async fn amqp_declare(channel: &Channel, exchange: &str, queue: &str) -> anyhow::Result<()> {
    channel
        .exchange_declare(
            ShortString::from(exchange),
            lapin::ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("declaring exchange {exchange}"))?;
    channel
        .queue_declare(
            ShortString::from(queue),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("declaring queue {queue}"))?;
    channel
        .queue_bind(
            ShortString::from(queue),
            ShortString::from(exchange),
            ShortString::from("#"),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("binding queue {queue}"))?;
    Ok(())
}

/// Deletes `queue` and `exchange`; the number of messages the queue held.
async fn amqp_remove(channel: &Channel, exchange: &str, queue: &str) -> anyhow::Result<u64> {
    let n = channel
        .queue_delete(ShortString::from(queue), QueueDeleteOptions::default())
        .await
        .with_context(|| format!("deleting queue {queue}"))?;
    channel
        .exchange_delete(
            ShortString::from(exchange),
            ExchangeDeleteOptions::default(),
        )
        .await
        .with_context(|| format!("deleting exchange {exchange}"))?;
    Ok(n as u64)
}

impl Plain {
    /// Connects and creates the destination `name` (stream / topic / exchange + queue).
    async fn open(b: &Bench, sink: SinkKind, name: &str) -> anyhow::Result<Plain> {
        match sink {
            SinkKind::Nats => {
                let js = nats_context(&b.env.nats_url, &b.defaults).await?;
                let _ = js.delete_stream(name).await;
                let subjects = format!("{name}.>");
                js.create_stream(stream::Config {
                    name: name.to_string(),
                    subjects: vec![subjects],
                    duplicate_window: b.defaults.nats.duplicate_window,
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .with_context(|| format!("creating stream {name}"))?;
                Ok(Plain::Nats {
                    js,
                    stream: name.to_string(),
                    subject: format!("{name}.{}.{}", common::KIND, b.args.namespace),
                })
            }
            SinkKind::Kafka => {
                kafka_create_topic(&b.env.kafka_brokers, name).await?;
                Ok(Plain::Kafka {
                    producer: kafka_producer(&b.env.kafka_brokers, &b.defaults)?,
                    topic: name.to_string(),
                })
            }
            SinkKind::Amqp => {
                let (connection, channel) = amqp_channel(&b.env.amqp_url).await?;
                amqp_declare(&channel, name, name).await?;
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await?;
                Ok(Plain::Amqp {
                    connection,
                    channel,
                    exchange: name.to_string(),
                    queue: name.to_string(),
                    routing_key: format!(
                        "bench%2Ecrbridge%2Eio.{}.{}.updated",
                        common::KIND,
                        b.args.namespace
                    ),
                })
            }
        }
    }

    /// Hands message `k` to the client; the future of its acknowledgement.
    async fn send(
        &self,
        k: usize,
        attrs: Vec<(String, String)>,
        body: &[u8],
    ) -> anyhow::Result<Ack> {
        match self {
            Plain::Nats { js, subject, .. } => {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", attrs[1].1.as_str());
                for (name, value) in &attrs {
                    headers.insert(format!("ce-{name}"), value.as_str());
                }
                headers.insert("content-type", "application/json");
                let object = &attrs[12].1;
                let ack = js
                    .send_publish(
                        format!("{subject}.{object}"),
                        PublishMessage::build()
                            .headers(headers)
                            .payload(body.to_vec().into()),
                    )
                    .await
                    .with_context(|| format!("publishing message {k}"))?;
                Ok(Box::pin(async move {
                    ack.await.map(|_| ()).map_err(anyhow::Error::from)
                }))
            }
            Plain::Kafka { producer, topic } => {
                let mut headers = OwnedHeaders::new_with_capacity(attrs.len() + 1);
                for (name, value) in &attrs {
                    headers = headers.insert(Header {
                        key: &format!("ce_{name}"),
                        value: Some(value.as_bytes()),
                    });
                }
                headers = headers.insert(Header {
                    key: "content-type",
                    value: Some("application/json".as_bytes()),
                });
                let key = attrs[6].1.as_bytes();
                let mut record = FutureRecord::to(topic)
                    .key(key)
                    .payload(body)
                    .headers(headers);
                let delivery = loop {
                    match producer.send_result(record) {
                        Ok(d) => break d,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                            record = r;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        Err((e, _)) => return Err(anyhow!("producing message {k}: {e}")),
                    }
                };
                Ok(Box::pin(async move {
                    match delivery.await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err((e, _))) => Err(anyhow!("delivery failed: {e}")),
                        Err(_) => Err(anyhow!("the producer dropped the record")),
                    }
                }))
            }
            Plain::Amqp {
                channel,
                exchange,
                routing_key,
                ..
            } => {
                let mut headers = FieldTable::default();
                for (name, value) in &attrs {
                    headers.insert(
                        ShortString::from(format!("cloudEvents:{name}").as_str()),
                        AMQPValue::LongString(LongString::from(value.as_bytes().to_vec())),
                    );
                }
                let props = BasicProperties::default()
                    .with_message_id(ShortString::from(attrs[1].1.as_str()))
                    .with_delivery_mode(2)
                    .with_content_type(ShortString::from("application/json"))
                    .with_headers(headers);
                let confirm = channel
                    .basic_publish(
                        ShortString::from(exchange.as_str()),
                        ShortString::from(routing_key.as_str()),
                        BasicPublishOptions {
                            mandatory: true,
                            ..Default::default()
                        },
                        body,
                        props,
                    )
                    .await
                    .with_context(|| format!("publishing message {k}"))?;
                Ok(Box::pin(async move {
                    match confirm.await? {
                        Confirmation::Ack(None) => Ok(()),
                        other => Err(anyhow!("not confirmed: {other:?}")),
                    }
                }))
            }
        }
    }

    /// Messages in the destination, then removes it.
    async fn close(self, b: &Bench) -> anyhow::Result<u64> {
        match self {
            Plain::Nats { js, stream, .. } => {
                let n = js.get_stream(&stream).await?.info().await?.state.messages;
                js.delete_stream(&stream).await?;
                Ok(n)
            }
            Plain::Kafka { topic, .. } => {
                let n = kafka_count(&b.env.kafka_brokers, &topic).await?;
                kafka_delete_topic(&b.env.kafka_brokers, &topic).await?;
                Ok(n)
            }
            Plain::Amqp {
                connection,
                channel,
                exchange,
                queue,
                ..
            } => {
                let n = amqp_remove(&channel, &exchange, &queue).await?;
                let _ = connection.close(200, "done".into()).await;
                Ok(n)
            }
        }
    }
}

struct PlainResult {
    elapsed: Duration,
    samples: Vec<Duration>,
    cpu: CpuUsage,
}

impl PlainResult {
    fn rate(&self) -> f64 {
        rate(self.samples.len(), self.elapsed)
    }

    fn print(&self) {
        let (p50, p99, _) = exact_stats(&self.samples);
        println!(
            "    {:.0} msgs/s, ack p50 {} p99 {}; {}",
            self.rate(),
            ms(p50),
            ms(p99),
            self.cpu.describe()
        );
    }
}

/// Publishes `m` messages keeping up to `window` unacknowledged, at full speed or at
/// `pace` messages/s; every message's publish → ack time.
async fn drive(
    p: &Plain,
    b: &Bench,
    m: usize,
    window: usize,
    pace: Option<f64>,
    seed: u64,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let mut body = vec![b' '; BODY_BYTES];
    let stamp = format!("{{\"bench\":\"{seed:x}\",\"pad\":\"");
    body[..stamp.len()].copy_from_slice(stamp.as_bytes());
    body[BODY_BYTES - 2..].copy_from_slice(b"\"}");
    let attrs: Vec<_> = (0..m)
        .map(|k| plain_attributes(&b.args.namespace, seed, k, b.args.objects))
        .collect();
    let mut attrs = attrs.into_iter();
    // One message first, acknowledged before the clock starts: connection, producer id,
    // topic metadata and stream lookups are warm, as they are in crbridge once it is ready.
    let warm = plain_attributes(&b.args.namespace, seed, m, b.args.objects);
    within(
        Duration::from_secs(30),
        "the warm-up message's ack",
        async { p.send(m, warm, &body).await?.await },
    )
    .await?;
    let mut in_flight = FuturesUnordered::new();
    let mut samples = Vec::with_capacity(m);
    let start = tokio::time::Instant::now();
    let due = |k: usize| pace.map(|r| start + Duration::from_secs_f64(k as f64 / r));
    let mut next = 0;
    while samples.len() < m {
        while next < m && in_flight.len() < window {
            if due(next).is_some_and(|t| t > tokio::time::Instant::now()) {
                break;
            }
            let sent = Instant::now();
            let attrs = attrs.next().expect("one attribute set per message");
            let ack = p.send(next, attrs, &body).await?;
            in_flight.push(async move { ack.await.map(|()| sent.elapsed()) });
            next += 1;
        }
        let wake = due(next).filter(|_| next < m && in_flight.len() < window);
        tokio::select! {
            Some(r) = in_flight.next(), if !in_flight.is_empty() => samples.push(r?),
            _ = tokio::time::sleep_until(wake.unwrap_or(start)), if wake.is_some() => {}
        }
    }
    Ok((start.elapsed(), samples))
}

// ---------------------------------------------------------------------------------------
// crbridge as a child process

/// A running crbridge; killed if dropped while still running.
struct Bridge {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Bridge {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// SIGTERM, then wait for the graceful exit.
    async fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.pid().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let status = poll_until(
            Duration::from_secs(30),
            Duration::from_millis(20),
            "crbridge to exit after SIGTERM",
            || {
                let s = self.exited();
                async move { Ok(s) }
            },
        )
        .await;
        match status {
            Ok(s) => Ok(s),
            Err(e) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                Err(e)
            }
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `perf record` (DWARF call graphs) attached to a process, stopped with SIGINT.
struct Perf(Child);

impl Perf {
    fn start(pid: u32, out: &Path) -> anyhow::Result<Perf> {
        let log = std::fs::File::create(out.with_extension("log"))?;
        let child = Command::new("perf")
            // DWARF unwinding: release builds have no frame pointers.
            .args(["record", "-F", "249", "--call-graph", "dwarf,16384"])
            .args(["-p", &pid.to_string(), "-o"])
            .arg(out)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting perf record (is perf installed?)")?;
        Ok(Perf(child))
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status()?;
        let child = &mut self.0;
        poll_until(
            Duration::from_secs(60),
            Duration::from_millis(50),
            "perf record to finish",
            || {
                let s = child.try_wait().ok().flatten();
                async move { Ok(s) }
            },
        )
        .await?;
        Ok(())
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

struct BridgeResult {
    elapsed: Duration,
    writes_done: Duration,
    published: f64,
    updated: f64,
    suppressed: f64,
    inferred: f64,
    dead_letters: f64,
    errors: f64,
    destination: u64,
    buckets: Buckets,
    latency_sum: f64,
    latency_count: f64,
    /// `crbridge_commit_seconds`: one observation per capture batch (commit + flush).
    commit_buckets: Buckets,
    commit_sum: f64,
    cpu: CpuUsage,
    rss_kib: u64,
    peak_kib: u64,
    exit: String,
    warn_lines: usize,
    error_lines: usize,
    first_problem: Option<String>,
}

impl BridgeResult {
    fn rate(&self, m: usize) -> f64 {
        rate(m, self.elapsed)
    }

    fn correct(&self, m: usize) -> bool {
        let m = m as f64;
        self.published == m
            && self.updated == m
            && self.destination as f64 == m
            && self.suppressed == 0.0
            && self.inferred == 0.0
            && self.dead_letters == 0.0
            && self.exit == "0"
    }
}

/// (e): one run of the client-go peer.
struct PeerResult {
    /// First write → the M-th update acknowledged.
    elapsed: Duration,
    writes_done: Duration,
    /// Acknowledged / refused events of every type, the initial Adds included.
    published: u64,
    failed: u64,
    /// Messages in its topic / stream after it stopped.
    destination: u64,
    /// The pool's Adds + M updates.
    expected: u64,
    cpu: CpuUsage,
    rss_kib: u64,
    peak_kib: u64,
    exit: String,
    /// Its closing `totals …` line.
    totals: String,
}

impl PeerResult {
    fn correct(&self) -> bool {
        self.published == self.expected
            && self.failed == 0
            && self.destination == self.expected
            && self.exit == "0"
    }
}

// ---------------------------------------------------------------------------------------
// The benchmark

struct LocalEnv {
    nats_url: String,
    kafka_brokers: String,
    amqp_url: String,
}

impl LocalEnv {
    fn load() -> anyhow::Result<LocalEnv> {
        common::load_local_env();
        let var = |k: &str| std::env::var(k).with_context(|| format!("{k} not set"));
        Ok(LocalEnv {
            nats_url: var("CRBRIDGE_NATS_URL")?,
            kafka_brokers: var("CRBRIDGE_KAFKA_BROKERS")?,
            amqp_url: var("CRBRIDGE_AMQP_URL")?,
        })
    }
}

struct Bench {
    args: Args,
    env: LocalEnv,
    defaults: SinkDefaults,
    client: Client,
    api: Api<DynamicObject>,
    /// Prefix of every broker resource of this run: `bench-e2e-{unix seconds}`.
    prefix: String,
    /// Next version of each pool object.
    versions: Vec<u64>,
    work: PathBuf,
    crbridge: PathBuf,
    /// The client-go peer's binary; `None` with `--no-peer`.
    peer: Option<PathBuf>,
    seed: u64,
    /// Phases that started on a machine busy with other work.
    warnings: Vec<String>,
}

impl Bench {
    async fn new(args: Args, crbridge: PathBuf, peer: Option<PathBuf>) -> anyhow::Result<Bench> {
        let env = LocalEnv::load()?;
        let client = Client::try_default()
            .await
            .context("kube client from KUBECONFIG")?;
        let api = Api::namespaced_with(client.clone(), &args.namespace, &common::api_resource());
        let secs = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let work = PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/target/bench-e2e-work"
        ));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)?;
        Ok(Bench {
            versions: vec![1; args.objects],
            args,
            env,
            defaults: SinkDefaults::load()?,
            client,
            api,
            prefix: format!("bench-e2e-{secs}"),
            work,
            crbridge,
            peer,
            seed: secs,
            warnings: Vec::new(),
        })
    }

    /// The CRD (established), the namespace, and a fresh pool of objects.
    async fn setup(&mut self) -> anyhow::Result<usize> {
        common::ensure_crd(&self.client).await?;
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        if namespaces.get_opt(&self.args.namespace).await?.is_none() {
            namespaces
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(json!({"metadata": {"name": self.args.namespace}}))?,
                )
                .await?;
        }
        self.delete_pool().await?;
        let creates = (0..self.args.objects).map(|i| {
            let api = self.api.clone();
            let obj: DynamicObject =
                serde_json::from_value(common::object(&self.args.namespace, i))
                    .expect("benchmark object");
            async move {
                api.create(&PostParams::default(), &obj)
                    .await
                    .with_context(|| format!("creating object {i}"))
            }
        });
        let mut size = 0;
        within(
            Duration::from_secs(120),
            format!("creating {} objects", self.args.objects),
            async {
                let mut created =
                    futures::stream::iter(creates).buffer_unordered(self.args.writers);
                while let Some(o) = created.next().await {
                    size = serde_json::to_vec(&o?)?.len();
                }
                Ok(())
            },
        )
        .await?;
        Ok(size)
    }

    async fn delete_pool(&self) -> anyhow::Result<()> {
        self.api
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await
            .context("deleting earlier benchmark objects")?;
        poll_until(
            Duration::from_secs(60),
            Duration::from_millis(100),
            "the namespace's benchmark objects to be deleted",
            || async {
                let left = self
                    .api
                    .list_metadata(&ListParams::default().limit(1))
                    .await?;
                Ok(left.items.is_empty().then_some(()))
            },
        )
        .await
    }

    /// Waits (up to `--quiet-wait`, polling half-second samples of `/proc/stat`) until the
    /// machine is less than 25% busy, so that a phase does not start while someone
    /// else's build or benchmark holds the CPUs; records a warning if it never is.
    async fn quiet(&mut self, phase: &str) {
        let limit = self.args.quiet_wait;
        if limit.is_zero() {
            return;
        }
        let started = Instant::now();
        let mut announced = false;
        loop {
            let before = machine_jiffies();
            tokio::time::sleep(Duration::from_millis(500)).await;
            let after = machine_jiffies();
            let busy = (after.0 - before.0) as f64 / (after.1 - before.1).max(1) as f64;
            if busy < 0.25 {
                return;
            }
            if started.elapsed() >= limit {
                let w = format!(
                    "{phase} started on a busy machine ({:.0}% busy before it, waited {:.0} s)",
                    busy * 100.0,
                    started.elapsed().as_secs_f64()
                );
                println!("    warning: {w}");
                self.warnings.push(w);
                return;
            }
            if !announced {
                println!(
                    "    waiting up to {:.0} s for the machine to be quiet ({:.0}% busy)",
                    limit.as_secs_f64(),
                    busy * 100.0
                );
                announced = true;
            }
        }
    }

    /// The next `m` updates: (object name, merge patch), round-robin over the pool.
    fn plan(&mut self, m: usize) -> Vec<(String, Value)> {
        (0..m)
            .map(|k| {
                let i = k % self.args.objects;
                let v = self.versions[i];
                self.versions[i] += 1;
                (format!("w{i:06}"), common::update_patch(i, v))
            })
            .collect()
    }

    /// Issues the planned updates, `writers` in flight; when the last one returned.
    async fn write(&self, plan: Vec<(String, Value)>) -> anyhow::Result<Instant> {
        let pp = PatchParams {
            field_manager: Some(MANAGER.into()),
            ..Default::default()
        };
        let pp = &pp;
        let mut results = futures::stream::iter(plan)
            .map(|(name, patch)| async move {
                self.api
                    .patch(&name, pp, &Patch::Merge(&patch))
                    .await
                    .with_context(|| format!("patching {name}"))
            })
            .buffer_unordered(self.args.writers);
        while let Some(r) = results.next().await {
            r?;
        }
        Ok(Instant::now())
    }

    /// (a): M updates seen by a plain watch.
    async fn api_ceiling(&mut self) -> anyhow::Result<Ceiling> {
        let m = self.args.updates;
        let rv = self
            .api
            .list_metadata(&ListParams::default().limit(1))
            .await?
            .metadata
            .resource_version
            .ok_or_else(|| anyhow!("list without a resourceVersion"))?;
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let watcher = tokio::spawn(count_watch_events(self.api.clone(), rv, m, ready_tx));
        within(Duration::from_secs(30), "the watch to open", async {
            ready_rx.await.map_err(|_| anyhow!("the watcher ended"))
        })
        .await?;
        let plan = self.plan(m);
        self.quiet("(a) API server ceiling").await;
        let cpu0 = CpuMark::take(None);
        let t0 = Instant::now();
        let outcome = within(phase_limit(m), format!("{m} watch events"), async {
            let done = self.write(plan).await?;
            let seen = watcher.await??;
            Ok((seen - t0, done - t0))
        })
        .await;
        let (elapsed, writes_done) = outcome?;
        let cpu = cpu0.usage(&CpuMark::take(None), elapsed);
        Ok(Ceiling {
            elapsed,
            writes_done,
            cpu,
        })
    }

    /// (b): one plain producer run, at full speed or at `pace` messages/s; with
    /// `under_load` while the writer issues M updates as in (c) (no crbridge), so the
    /// API server loads the machine as it does during a crbridge run.
    async fn plain(
        &mut self,
        sink: SinkKind,
        pace: Option<f64>,
        under_load: bool,
    ) -> anyhow::Result<PlainResult> {
        let m = self.args.updates;
        let label = match (pace, under_load) {
            (None, _) => "full",
            (Some(_), false) => "paced",
            (Some(_), true) => "loaded",
        };
        let name = format!("{}-plain-{label}", self.prefix);
        let plan = if under_load { self.plan(m) } else { Vec::new() };
        self.quiet(&format!("(b) plain {} {label}", sink.title()))
            .await;
        let p = Plain::open(self, sink, &name).await?;
        self.seed += 1;
        let window = self.defaults.window(sink);
        let limit = phase_limit(m)
            + pace.map_or(Duration::ZERO, |r| {
                Duration::from_secs_f64(m as f64 / r.max(1.0))
            });
        let cpu0 = CpuMark::take(None);
        let run = within(
            limit,
            format!("{m} acks from {} (plain producer)", sink.title()),
            async {
                let load = async {
                    if !plan.is_empty() {
                        self.write(plan).await?;
                    }
                    Ok(())
                };
                let (run, load) = tokio::join!(drive(&p, self, m, window, pace, self.seed), load);
                load.map_err(|e: anyhow::Error| e.context("the writer's load"))?;
                run
            },
        )
        .await;
        let cpu1 = CpuMark::take(None);
        let count = p.close(self).await;
        let (elapsed, samples) = run?;
        let count = count?;
        ensure!(
            count == m as u64 + 1,
            "plain producer to {}: {count} messages in {name}, expected {} (M + the warm-up)",
            sink.title(),
            m + 1
        );
        Ok(PlainResult {
            cpu: cpu0.usage(&cpu1, elapsed),
            elapsed,
            samples,
        })
    }

    /// crbridge's config for a run publishing only to `sink`.
    fn bridge_config(&self, sink: SinkKind, dir: &Path, port: u16) -> String {
        let name = format!("{}-crb", self.prefix);
        let sink_section = match sink {
            SinkKind::Nats => format!(
                "    type: nats\n    url: \"{}\"\n    stream: {name}\n    subject: \"{name}.{{kind}}.{{namespace}}.{{name}}\"\n",
                self.env.nats_url
            ),
            SinkKind::Kafka => format!(
                "    type: kafka\n    brokers: \"{}\"\n    topic: \"{name}\"\n",
                self.env.kafka_brokers
            ),
            SinkKind::Amqp => format!(
                "    type: amqp\n    url: \"{}\"\n    exchange: {name}\n    routingKey: \"{{group}}.{{kind}}.{{namespace}}.{{type}}\"\n",
                self.env.amqp_url
            ),
        };
        format!(
            "# bench_e2e: crbridge end-to-end run, sink {sink}\n\
             cluster: {CLUSTER}\n\
             state:\n  path: {state}\n\
             http:\n  listen: 127.0.0.1:{port}\n\
             watches:\n\
             \x20 - name: {WATCH}\n\
             \x20   group: {group}\n\
             \x20   version: v1\n\
             \x20   kind: {kind}\n\
             \x20   namespaces: [{ns}]\n\
             \x20   initial: skip\n\
             \x20   sinks: [{sink}]\n\
             sinks:\n  {sink}:\n{sink_section}",
            sink = sink.name(),
            state = dir.join("state").display(),
            group = common::GROUP,
            kind = common::KIND,
            ns = self.args.namespace,
        )
    }

    /// Prepares what crbridge publishes to: a one-partition topic; an exchange and a
    /// durable queue bound to it (crbridge publishes `mandatory`). The stream crbridge
    /// creates itself.
    async fn bridge_destination(&self, sink: SinkKind) -> anyhow::Result<()> {
        let name = format!("{}-crb", self.prefix);
        match sink {
            SinkKind::Nats => {
                let js = nats_context(&self.env.nats_url, &self.defaults).await?;
                let _ = js.delete_stream(&name).await;
            }
            SinkKind::Kafka => kafka_create_topic(&self.env.kafka_brokers, &name).await?,
            SinkKind::Amqp => {
                let (connection, channel) = amqp_channel(&self.env.amqp_url).await?;
                amqp_declare(&channel, &name, &name).await?;
                let _ = connection.close(200, "done".into()).await;
            }
        }
        Ok(())
    }

    /// Messages in crbridge's destination; then removes it.
    async fn bridge_destination_count(&self, sink: SinkKind) -> anyhow::Result<u64> {
        let name = format!("{}-crb", self.prefix);
        match sink {
            SinkKind::Nats => {
                let js = nats_context(&self.env.nats_url, &self.defaults).await?;
                let n = js.get_stream(&name).await?.info().await?.state.messages;
                js.delete_stream(&name).await?;
                Ok(n)
            }
            SinkKind::Kafka => {
                let n = kafka_count(&self.env.kafka_brokers, &name).await?;
                kafka_delete_topic(&self.env.kafka_brokers, &name).await?;
                Ok(n)
            }
            SinkKind::Amqp => {
                let (connection, channel) = amqp_channel(&self.env.amqp_url).await?;
                let n = amqp_remove(&channel, &name, &name).await?;
                let _ = connection.close(200, "done".into()).await;
                Ok(n)
            }
        }
    }

    fn spawn_bridge(&self, sink: SinkKind) -> anyhow::Result<Bridge> {
        let dir = self.work.join(sink.name());
        std::fs::create_dir_all(&dir)?;
        let port = free_port()?;
        let config = dir.join("crbridge.yaml");
        std::fs::write(&config, self.bridge_config(sink, &dir, port))?;
        let log = dir.join("crbridge.log");
        let child = Command::new(&self.crbridge)
            .args(["run", "-c"])
            .arg(&config)
            .args(["--log-format", "json"])
            .env("CRBRIDGE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("crbridge.stdout"))?)
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {}", self.crbridge.display()))?;
        Ok(Bridge { child, port, log })
    }

    /// (c) + (d): one crbridge run publishing to `sink`.
    async fn bridge(&mut self, sink: SinkKind) -> anyhow::Result<BridgeResult> {
        let m = self.args.updates;
        self.bridge_destination(sink).await?;
        let mut bridge = self.spawn_bridge(sink)?;
        let port = bridge.port;
        let ready = poll_until(
            Duration::from_secs(60),
            Duration::from_millis(50),
            "crbridge /readyz to answer 200",
            || {
                let exited = bridge.exited();
                async move {
                    if let Some(status) = exited {
                        bail!("crbridge exited ({status}) before it was ready");
                    }
                    Ok(match http_get(port, "/readyz").await {
                        Ok((200, _)) => Some(()),
                        _ => None,
                    })
                }
            },
        )
        .await;
        if let Err(e) = ready {
            bail!("{e}; end of its log:\n{}", bridge.log_tail());
        }
        let pid = bridge.pid();
        self.quiet(&format!("(c) crbridge → {}", sink.title()))
            .await;
        let perf = if self.args.perf {
            let out = self.work.join(sink.name()).join("perf.data");
            Some(Perf::start(pid, &out)?)
        } else {
            None
        };
        let plan = self.plan(m);
        // Commits before the first write (the start's list) are not the run's.
        let (_, before) = http_get(port, "/metrics").await?;
        let before = Metrics::parse(&before);
        let label = sink.name().to_string();
        let poller = tokio::spawn(wait_published(port, label, m as f64));
        let cpu0 = CpuMark::take(Some(("crbridge", pid)));
        let t0 = Instant::now();
        let outcome = within(
            phase_limit(m),
            format!(
                "crbridge_events_published_total{{sink=\"{}\"}} to reach {m}",
                sink.name()
            ),
            async {
                let writes = self.write(plan).await?;
                let done = poller.await??;
                Ok((done - t0, writes - t0))
            },
        )
        .await;
        let cpu1 = CpuMark::take(Some(("crbridge", pid)));
        if let Some(perf) = perf {
            perf.stop().await?;
        }
        let (elapsed, writes_done) = match outcome {
            Ok(v) => v,
            Err(e) => {
                let last = http_get(port, "/metrics")
                    .await
                    .map(|r| r.1)
                    .unwrap_or_default();
                let m = Metrics::parse(&last);
                bail!(
                    "{e} (observed {}, published {}, errors {}); end of crbridge's log:\n{}",
                    m.sum("crbridge_events_observed_total", &[]),
                    m.sum("crbridge_events_published_total", &[]),
                    m.sum("crbridge_errors_total", &[]),
                    bridge.log_tail()
                );
            }
        };
        let (rss_kib, peak_kib) = common::rss_kib(pid).unwrap_or((0, 0));
        let (_, text) = http_get(port, "/metrics").await?;
        let metrics = Metrics::parse(&text);
        let status = bridge.stop().await?;
        let exit = status
            .code()
            .map(|c| c.to_string())
            .unwrap_or_else(|| status.to_string());
        let destination = self.bridge_destination_count(sink).await?;
        let log = std::fs::read_to_string(&bridge.log).unwrap_or_default();
        let level = |l: &str, lvl: &str| l.contains(&format!("\"level\":\"{lvl}\""));
        let problems: Vec<&str> = log
            .lines()
            .filter(|l| level(l, "WARN") || level(l, "ERROR"))
            .collect();
        let _ = std::fs::remove_dir_all(self.work.join(sink.name()).join("state"));
        let name = sink.name();
        let lat = "crbridge_publish_latency_seconds";
        Ok(BridgeResult {
            elapsed,
            writes_done,
            published: metrics.sum("crbridge_events_published_total", &[("sink", name)]),
            updated: metrics.sum("crbridge_events_total", &[("type", "updated")]),
            suppressed: metrics.sum("crbridge_events_suppressed_total", &[]),
            inferred: metrics.sum("crbridge_events_inferred_total", &[]),
            dead_letters: metrics.sum("crbridge_dead_letters_total", &[]),
            errors: metrics.sum("crbridge_errors_total", &[]),
            destination,
            buckets: metrics.histogram(lat, &[("sink", name)]),
            commit_buckets: minus(
                &metrics.histogram("crbridge_commit_seconds", &[]),
                &before.histogram("crbridge_commit_seconds", &[]),
            ),
            commit_sum: metrics.sum("crbridge_commit_seconds_sum", &[])
                - before.sum("crbridge_commit_seconds_sum", &[]),
            latency_sum: metrics.sum(&format!("{lat}_sum"), &[("sink", name)]),
            latency_count: metrics.sum(&format!("{lat}_count"), &[("sink", name)]),
            cpu: cpu0.usage(&cpu1, elapsed),
            rss_kib,
            peak_kib,
            exit,
            warn_lines: problems.iter().filter(|l| level(l, "WARN")).count(),
            error_lines: problems.iter().filter(|l| level(l, "ERROR")).count(),
            first_problem: problems.first().map(|l| l.chars().take(300).collect()),
        })
    }

    /// (e): the client-go peer publishing M updates to `sink` (NATS or Kafka).
    async fn peer(&mut self, sink: SinkKind, bin: &Path) -> anyhow::Result<PeerResult> {
        let m = self.args.updates;
        let name = format!("{}-peer", self.prefix);
        let (url, brokers) = (self.env.nats_url.clone(), self.env.kafka_brokers.clone());
        let target = match sink {
            SinkKind::Nats => {
                let js = nats_context(&url, &self.defaults).await?;
                let _ = js.delete_stream(&name).await;
                common::peer::PeerSink::Nats {
                    url: &url,
                    stream: &name,
                    subject: &name,
                }
            }
            SinkKind::Kafka => {
                kafka_create_topic(&brokers, &name).await?;
                common::peer::PeerSink::Kafka {
                    brokers: &brokers,
                    topic: &name,
                }
            }
            SinkKind::Amqp => bail!("the client-go peer has no RabbitMQ sink"),
        };
        let dir = self.work.join(format!("peer-{}", sink.name()));
        let mut peer =
            common::peer::Peer::start(bin, &common::gvr(), &self.args.namespace, &target, &dir)
                .await?;
        peer.wait_initial(self.args.objects as u64, Duration::from_secs(60))
            .await?;
        self.quiet(&format!("(e) client-go peer → {}", sink.title()))
            .await;
        let plan = self.plan(m);
        let pid = peer.pid();
        let cpu0 = CpuMark::take(Some(("peer", pid)));
        let t0 = Instant::now();
        let outcome = within(
            phase_limit(m),
            format!("peer_events_published_total{{type=\"updated\"}} to reach {m}"),
            async {
                let (writes, done) = tokio::join!(
                    self.write(plan),
                    peer.wait_published("updated", m as u64, metrics_poll())
                );
                Ok((done? - t0, writes? - t0))
            },
        )
        .await;
        let cpu1 = CpuMark::take(Some(("peer", pid)));
        let (elapsed, writes_done) = match outcome {
            Ok(v) => v,
            Err(e) => bail!("{e}; end of the peer's log:\n{}", peer.log_tail()),
        };
        let (rss_kib, peak_kib) = common::rss_kib(pid).unwrap_or((0, 0));
        let (published, failed) = peer.counts(None).await?;
        let (exit, totals) = peer.stop().await?;
        let destination = match sink {
            SinkKind::Nats => {
                let js = nats_context(&url, &self.defaults).await?;
                let n = js.get_stream(&name).await?.info().await?.state.messages;
                js.delete_stream(&name).await?;
                n
            }
            _ => {
                let n = kafka_count(&brokers, &name).await?;
                kafka_delete_topic(&brokers, &name).await?;
                n
            }
        };
        Ok(PeerResult {
            elapsed,
            writes_done,
            published,
            failed,
            destination,
            expected: (self.args.objects + m) as u64,
            cpu: cpu0.usage(&cpu1, elapsed),
            rss_kib,
            peak_kib,
            exit,
            totals,
        })
    }

    /// Removes whatever this run may have left behind (best effort).
    async fn cleanup(&self) {
        let mut names = vec![
            format!("{}-crb", self.prefix),
            format!("{}-peer", self.prefix),
        ];
        for label in ["full", "paced", "loaded"] {
            names.push(format!("{}-plain-{label}", self.prefix));
        }
        if let Ok(js) = nats_context(&self.env.nats_url, &self.defaults).await {
            for n in &names {
                let _ = js.delete_stream(n).await;
            }
        }
        if let Ok(admin) = kafka_admin(&self.env.kafka_brokers) {
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let _ = tokio::time::timeout(
                Duration::from_secs(20),
                admin.delete_topics(&refs, &admin_options()),
            )
            .await;
        }
        if let Ok((connection, channel)) = amqp_channel(&self.env.amqp_url).await {
            for n in &names {
                // A failed delete closes the channel: one channel per attempt.
                let _ = channel
                    .queue_delete(ShortString::from(n.as_str()), QueueDeleteOptions::default())
                    .await;
                let _ = channel
                    .exchange_delete(
                        ShortString::from(n.as_str()),
                        ExchangeDeleteOptions::default(),
                    )
                    .await;
            }
            let _ = connection.close(200, "done".into()).await;
        }
        if let Err(e) = self.delete_pool().await {
            eprintln!("cleanup: {e:#}");
        }
    }
}

/// Counts MODIFIED events on a watch from `rv` until the `m`-th; when it arrived. Reopens
/// the watch from the last resourceVersion seen if the server ends it.
async fn count_watch_events(
    api: Api<DynamicObject>,
    mut rv: String,
    m: usize,
    ready: tokio::sync::oneshot::Sender<()>,
) -> anyhow::Result<Instant> {
    let wp = WatchParams::default().timeout(290);
    let mut ready = Some(ready);
    let mut seen = 0;
    loop {
        let events = api.watch(&wp, &rv).await.context("opening the watch")?;
        if let Some(r) = ready.take() {
            let _ = r.send(());
        }
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.try_next().await? {
            match event {
                WatchEvent::Modified(o) => {
                    seen += 1;
                    if seen == m {
                        return Ok(Instant::now());
                    }
                    rv = o.metadata.resource_version.unwrap_or(rv);
                }
                WatchEvent::Added(o) | WatchEvent::Deleted(o) => {
                    rv = o.metadata.resource_version.unwrap_or(rv);
                }
                WatchEvent::Bookmark(b) => rv = b.metadata.resource_version,
                WatchEvent::Error(e) => bail!("the watch failed: {e:?}"),
            }
        }
    }
}

/// Polls crbridge's `/metrics` (at [`metrics_poll`]'s pace) until
/// `crbridge_events_published_total{sink}` reaches `m`; when it did.
async fn wait_published(port: u16, sink: String, m: f64) -> anyhow::Result<Instant> {
    let mut pace = metrics_poll();
    let mut failures = 0;
    let mut wait = Duration::ZERO;
    loop {
        tokio::time::sleep(wait).await;
        wait = METRICS_POLL_FAST;
        match http_get(port, "/metrics").await {
            Ok((200, text)) => {
                failures = 0;
                let n = Metrics::parse(&text).sum(
                    "crbridge_events_published_total",
                    &[("sink", sink.as_str())],
                );
                if n >= m {
                    return Ok(Instant::now());
                }
                wait = pace.next(n, m);
            }
            Ok((status, _)) => bail!("/metrics answered {status}"),
            Err(e) => {
                failures += 1;
                if failures >= 10 {
                    return Err(e.context("crbridge's /metrics is not answering"));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Header: machine, versions

async fn header(b: &Bench, object_bytes: usize) -> String {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let ram_gib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<f64>().ok())
        .map(|k| k / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let kube = match b.client.apiserver_version().await {
        // Built from the k8s.io modules, the git version is a placeholder.
        Ok(v) if v.git_version.starts_with("v0.0.0") => format!("{}.{}", v.major, v.minor),
        Ok(v) => v.git_version,
        Err(_) => "unknown".into(),
    };
    // How busy the machine is before we start (other users, builds).
    let before = machine_jiffies();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = machine_jiffies();
    let idle_busy = (after.0 - before.0) as f64 / (after.1 - before.1).max(1) as f64;
    let work = b.work.clone();
    let fsync = tokio::task::spawn_blocking(move || fsync_probe(&work))
        .await
        .map_err(anyhow::Error::from)
        .and_then(|r| r)
        .map(|mut v| {
            let n = v.len();
            let p50 = common::quantile(&mut v, 0.5).as_secs_f64();
            let p99 = common::quantile(&mut v, 0.99).as_secs_f64();
            format!("p50 {} / p99 {} ({n} samples)", ms(p50), ms(p99))
        })
        .unwrap_or_else(|e| format!("not measured ({e})"));
    let nats = match async_nats::connect(&b.env.nats_url).await {
        Ok(c) => c.server_info().version,
        Err(_) => "unknown".into(),
    };
    let kafka = kafka_version().unwrap_or_else(|| "unknown".into());
    let rabbit = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", "rabbitmq-server"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_else(|| "unknown".into());
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]);
    let dirty = !git(&["status", "--porcelain", "--", "src", "sinks", "Cargo.toml"]).is_empty();
    let a = &b.args;
    let mut h = String::new();
    let _ = writeln!(h, "# crbridge end-to-end benchmark\n");
    let _ = writeln!(h, "* command: `{}`", a.command_line);
    let _ = writeln!(
        h,
        "* machine: {nproc} CPUs ({model}), {ram_gib:.1} GiB RAM, Linux {}",
        kernel.trim()
    );
    let _ = writeln!(
        h,
        "* state directory's disk (`target/`): 4 KiB write + fdatasync {fsync}: crbridge flushes sled once per batch before publishing it"
    );
    let _ = writeln!(
        h,
        "* machine busy before the start (1 s sample, other users included): {:.0}%",
        idle_busy * 100.0
    );
    let _ = writeln!(
        h,
        "* servers (all on this machine, shared with anyone else using them): kube-apiserver {kube} (watch cache off), NATS {nats}, Kafka {kafka} (KRaft, one node), RabbitMQ {rabbit}"
    );
    let _ = writeln!(
        h,
        "* crbridge: `{}` built from {commit}{}",
        b.crbridge.display(),
        if dirty {
            " + uncommitted changes in src/ or sinks/"
        } else {
            ""
        }
    );
    if let Some(peer) = &b.peer {
        // The module versions it is built from, as benches/peer/go.mod pins them.
        let go_mod =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/peer/go.mod"))
                .unwrap_or_default();
        let modules: Vec<String> = [
            "k8s.io/client-go",
            "github.com/IBM/sarama",
            "github.com/nats-io/nats.go",
        ]
        .iter()
        .filter_map(|m| {
            go_mod.lines().find_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some(*m)).then(|| format!("{m} {}", w.next().unwrap_or("?")))
            })
        })
        .collect();
        let _ = writeln!(
            h,
            "* client-go peer: `{}` ({})",
            peer.display(),
            modules.join(", ")
        );
    }
    let _ = writeln!(
        h,
        "* workload: {} objects of {object_bytes} bytes (as served, JSON), M = {} updates (1–3 spec fields each), round-robin, {} writers in flight; namespace `{}`",
        a.objects, a.updates, a.writers, a.namespace
    );
    let d = &b.defaults;
    let _ = writeln!(
        h,
        "* plain producers: {BODY_BYTES}-byte body + 17 CloudEvents-like headers; windows as crbridge's defaults: NATS {}, Kafka {}, RabbitMQ {}",
        d.window(SinkKind::Nats),
        d.window(SinkKind::Kafka),
        d.window(SinkKind::Amqp)
    );
    h
}

/// 200 × (append 4 KiB + fdatasync) in `dir`: what one durable commit costs on this disk.
fn fsync_probe(dir: &Path) -> anyhow::Result<Vec<Duration>> {
    use std::io::Write as _;
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path)?;
    let block = [0u8; 4096];
    let mut samples = Vec::with_capacity(200);
    for _ in 0..200 {
        let t = Instant::now();
        f.write_all(&block)?;
        f.sync_data()?;
        samples.push(t.elapsed());
    }
    drop(f);
    let _ = std::fs::remove_file(&path);
    Ok(samples)
}

/// The Kafka version from the jars `deploy/local/up` built (`kafka-server-X.jar`).
fn kafka_version() -> Option<String> {
    let cache = std::env::var("CRBRIDGE_CACHE").ok().or_else(|| {
        std::env::var("HOME")
            .ok()
            .map(|h| format!("{h}/.cache/crbridge"))
    })?;
    std::fs::read_dir(format!("{cache}/kafka-libs"))
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .find_map(|n| {
            n.strip_prefix("kafka-server-")
                .and_then(|v| v.strip_suffix(".jar"))
                .filter(|v| v.chars().next().is_some_and(|c| c.is_ascii_digit()))
                .map(str::to_string)
        })
}

/// The crbridge binary: `--crbridge PATH`, or `cargo build --release --bin crbridge`.
fn crbridge_binary(args: &Args) -> anyhow::Result<PathBuf> {
    if let Some(p) = &args.crbridge {
        ensure!(p.exists(), "--crbridge {}: no such file", p.display());
        return Ok(p.clone());
    }
    println!("building crbridge: cargo build --release --bin crbridge");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--quiet", "--bin", "crbridge"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .context("running cargo build")?;
    ensure!(
        status.success(),
        "cargo build --release --bin crbridge failed"
    );
    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target").to_string());
    Ok(PathBuf::from(target).join("release/crbridge"))
}

// ---------------------------------------------------------------------------------------
// Report

/// (a): M updates seen by a plain watch.
struct Ceiling {
    /// First write → M-th watch event.
    elapsed: Duration,
    /// First write → the last write returned.
    writes_done: Duration,
    cpu: CpuUsage,
}

impl Ceiling {
    fn describe(&self, m: usize) -> String {
        format!(
            "{:.0} events/s ({:.2} s; writes done after {:.2} s); {}",
            rate(m, self.elapsed),
            self.elapsed.as_secs_f64(),
            self.writes_done.as_secs_f64(),
            self.cpu.describe()
        )
    }
}

struct SinkRun {
    sink: SinkKind,
    ceiling: Ceiling,
    full: PlainResult,
    bridge: BridgeResult,
    paced: PlainResult,
    loaded: PlainResult,
    /// (e), for the sinks the peer has.
    peer: Option<PeerResult>,
}

fn report(header: &str, b: &Bench, runs: &[SinkRun], total: Duration) -> String {
    let m = b.args.updates;
    let mut r = String::from(header);
    let _ = writeln!(r, "\n## (a) API server ceiling\n");
    let _ = writeln!(
        r,
        "M updates seen by a plain `Api::watch`, measured right before each crbridge run (the machine is shared, so (a) and (c) are taken as close together as possible).\n"
    );
    let _ = writeln!(
        r,
        "| before the run of | events/s | first write → M-th event | writes done (writes/s) | machine busy | API server + etcd CPU-s | bench CPU-s | other processes CPU-s |"
    );
    let _ = writeln!(r, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for s in runs {
        let c = &s.ceiling;
        let _ = writeln!(
            r,
            "| {} | {:.0} | {:.2} s | {:.2} s ({:.0}) | {:.0}% | {:.2} | {:.2} | {:.2} |",
            s.sink.title(),
            rate(m, c.elapsed),
            c.elapsed.as_secs_f64(),
            c.writes_done.as_secs_f64(),
            rate(m, c.writes_done),
            c.cpu.busy * 100.0,
            c.cpu.of(KUBE),
            c.cpu.of(BENCH),
            c.cpu.other
        );
    }

    let _ = writeln!(r, "\n## (b, c) Throughput per sink\n");
    let _ = writeln!(
        r,
        "| sink | plain producer (b) msgs/s | crbridge (c) events/s | c / a | c / b | c / min(a, b) | target ≥ 0.9 |"
    );
    let _ = writeln!(r, "|---|---:|---:|---:|---:|---:|---|");
    for s in runs {
        let a = rate(m, s.ceiling.elapsed);
        let bp = s.full.rate();
        let c = s.bridge.rate(m);
        let ratio = c / a.min(bp);
        let _ = writeln!(
            r,
            "| {} | {bp:.0} | {c:.0} | {:.2} | {:.2} | {ratio:.2} | {} |",
            s.sink.title(),
            c / a,
            c / bp,
            verdict(ratio >= 0.9)
        );
    }

    let peers: Vec<(&SinkRun, &PeerResult)> = runs
        .iter()
        .filter_map(|s| s.peer.as_ref().map(|p| (s, p)))
        .collect();
    if !peers.is_empty() {
        let _ = writeln!(r, "\n## (e) crbridge beside the client-go peer\n");
        let _ = writeln!(
            r,
            "The same M updates of the same pool; the peer is a client-go informer publishing with no persistence (BENCHMARKS.md \"The client-go peer\"). \
             End to end = events/s ÷ (a) measured before that sink's runs; CPU per event = the process's utime + stime over the measured window ÷ M.\n"
        );
        let _ = writeln!(
            r,
            "| sink | bridge | events/s | ÷ API ceiling (a) | CPU per event | RSS / peak MiB | correct |"
        );
        let _ = writeln!(r, "|---|---|---:|---:|---:|---:|---|");
        for (s, p) in peers {
            let a = rate(m, s.ceiling.elapsed);
            let c = s.bridge.rate(m);
            let rows = [
                (
                    "crbridge",
                    c,
                    s.bridge.cpu.of("crbridge"),
                    s.bridge.rss_kib,
                    s.bridge.peak_kib,
                    s.bridge.correct(m),
                ),
                (
                    "client-go peer",
                    rate(m, p.elapsed),
                    p.cpu.of("peer"),
                    p.rss_kib,
                    p.peak_kib,
                    p.correct(),
                ),
            ];
            for (who, events, cpu, rss, peak, correct) in rows {
                let _ = writeln!(
                    r,
                    "| {} | {who} | {events:.0} | {:.2} | {} | {:.1} / {:.1} | {} |",
                    s.sink.title(),
                    events / a,
                    ms(cpu / m as f64),
                    rss as f64 / 1024.0,
                    peak as f64 / 1024.0,
                    if correct { "yes" } else { "**NO**" }
                );
            }
        }
    }

    let _ = writeln!(r, "\n## (d) Added latency per sink\n");
    let _ = writeln!(
        r,
        "crbridge: `crbridge_publish_latency_seconds` (change observed → broker ack), quantiles interpolated within its buckets. \
         Plain: publish call → ack, exact from every sample, and the same samples interpolated over crbridge's buckets (like for like; the target is judged on these). \
         Paced = the plain producer offered crbridge's rate from (c) on an otherwise quiet machine (the brief's comparison); \
         under API load = the same, while the writer issues M updates as in (c), so the API server competes for the CPU as it does during a crbridge run (shown for the analysis, not judged).\n"
    );
    let _ = writeln!(
        r,
        "| sink | crbridge p50 / p99 (mean) | plain paced p50 / p99 exact (mean) | plain paced p50 / p99 interpolated | limit 1.25 × plain p99 + 2 ms | target | plain paced under API load p50 / p99 exact (interpolated) | plain full speed p50 / p99 exact |"
    );
    let _ = writeln!(r, "|---|---|---|---|---:|---|---|---|");
    for s in runs {
        let bounds: Vec<f64> = s.bridge.buckets.iter().map(|x| x.0).collect();
        let c50 = histogram_quantile(0.5, &s.bridge.buckets);
        let c99 = histogram_quantile(0.99, &s.bridge.buckets);
        let cmean = s.bridge.latency_sum / s.bridge.latency_count.max(1.0);
        let (p50, p99, pmean) = exact_stats(&s.paced.samples);
        let pb = bucketize(&s.paced.samples, &bounds);
        let i50 = histogram_quantile(0.5, &pb);
        let i99 = histogram_quantile(0.99, &pb);
        let (f50, f99, _) = exact_stats(&s.full.samples);
        let (l50, l99, _) = exact_stats(&s.loaded.samples);
        let lb = bucketize(&s.loaded.samples, &bounds);
        let limit = i99.map(|p| 1.25 * p + 0.002);
        let ok = matches!((c99, limit), (Some(c), Some(l)) if c <= l);
        let _ = writeln!(
            r,
            "| {} | {} / {} ({}) | {} / {} ({}) | {} / {} | {} | {} | {} / {} ({} / {}) | {} / {} |",
            s.sink.title(),
            opt_ms(c50),
            opt_ms(c99),
            ms(cmean),
            ms(p50),
            ms(p99),
            ms(pmean),
            opt_ms(i50),
            opt_ms(i99),
            opt_ms(limit),
            verdict(ok),
            ms(l50),
            ms(l99),
            opt_ms(histogram_quantile(0.5, &lb)),
            opt_ms(histogram_quantile(0.99, &lb)),
            ms(f50),
            ms(f99),
        );
    }
    if let Some(s) = runs.first() {
        let bounds: Vec<String> = s
            .bridge
            .buckets
            .iter()
            .filter(|(le, _)| le.is_finite())
            .map(|(le, _)| format!("{:.3}", le * 1000.0))
            .collect();
        let _ = writeln!(
            r,
            "\nBucket bounds read from `/metrics` ({} finite, ms): {}",
            bounds.len(),
            bounds.join(", ")
        );
    }

    let _ = writeln!(r, "\n## crbridge resources and correctness per run\n");
    let _ = writeln!(
        r,
        "| sink | wall s | writes done s | crbridge CPU-s (per 1k events; cores) | RSS / peak MiB | published / updated / in destination | suppressed / inferred / dead letters / errors | exit, WARN / ERROR lines | correct |"
    );
    let _ = writeln!(r, "|---|---:|---:|---:|---:|---|---|---|---|");
    for s in runs {
        let x = &s.bridge;
        let cpu = x.cpu.of("crbridge");
        let _ = writeln!(
            r,
            "| {} | {:.2} | {:.2} | {cpu:.2} ({:.3}; {:.2}) | {:.1} / {:.1} | {} / {} / {} | {} / {} / {} / {} | {}, {} / {} | {} |",
            s.sink.title(),
            x.elapsed.as_secs_f64(),
            x.writes_done.as_secs_f64(),
            cpu * 1000.0 / m as f64,
            cpu / x.elapsed.as_secs_f64().max(1e-9),
            x.rss_kib as f64 / 1024.0,
            x.peak_kib as f64 / 1024.0,
            x.published,
            x.updated,
            x.destination,
            x.suppressed,
            x.inferred,
            x.dead_letters,
            x.errors,
            x.exit,
            x.warn_lines,
            x.error_lines,
            if x.correct(m) { "yes" } else { "**NO**" }
        );
    }
    for s in runs {
        if let Some(p) = &s.bridge.first_problem {
            let _ = writeln!(
                r,
                "\nFirst WARN/ERROR line of the {} run: `{p}`",
                s.sink.title()
            );
        }
    }

    let _ = writeln!(
        r,
        "\n## crbridge capture batches (`crbridge_commit_seconds`)\n"
    );
    let _ = writeln!(
        r,
        "| sink | batches (commit + flush) | events per batch | commit + flush p50 / p99 (mean) | commit + flush time, share of wall |"
    );
    let _ = writeln!(r, "|---|---:|---:|---|---:|");
    for s in runs {
        let x = &s.bridge;
        let batches = x.commit_buckets.last().map_or(0.0, |b| b.1);
        if batches == 0.0 {
            let _ = writeln!(
                r,
                "| {} | n/a (not exported by this crbridge) | | | |",
                s.sink.title()
            );
            continue;
        }
        let _ = writeln!(
            r,
            "| {} | {batches} | {:.1} | {} / {} ({}) | {:.2} s, {:.0}% |",
            s.sink.title(),
            m as f64 / batches,
            opt_ms(histogram_quantile(0.5, &x.commit_buckets)),
            opt_ms(histogram_quantile(0.99, &x.commit_buckets)),
            ms(x.commit_sum / batches),
            x.commit_sum,
            100.0 * x.commit_sum / x.elapsed.as_secs_f64().max(1e-9)
        );
    }

    let _ = writeln!(r, "\n## Where the CPU went (per phase)\n");
    for s in runs {
        let t = s.sink.title();
        let _ = writeln!(
            r,
            "* (a) API server ceiling before {t}: {}",
            s.ceiling.cpu.describe()
        );
        let _ = writeln!(r, "* (b) plain {t}, full speed: {}", s.full.cpu.describe());
        let _ = writeln!(r, "* (c) crbridge → {t}: {}", s.bridge.cpu.describe());
        let _ = writeln!(
            r,
            "* (b) plain {t}, paced at {:.0}/s: {}",
            s.bridge.rate(m),
            s.paced.cpu.describe()
        );
        let _ = writeln!(
            r,
            "* (b) plain {t}, paced, under API load: {}",
            s.loaded.cpu.describe()
        );
        if let Some(p) = &s.peer {
            let _ = writeln!(
                r,
                "* (e) client-go peer → {t}: {}; {}, {} in destination (expected {})",
                p.cpu.describe(),
                p.totals,
                p.destination,
                p.expected
            );
        }
    }
    for w in &b.warnings {
        let _ = writeln!(r, "\n**Warning**: {w}; its figures are not representative.");
    }
    let _ = writeln!(
        r,
        "\nTotal run time {:.1} s (without building crbridge).",
        total.as_secs_f64()
    );
    r
}

// ---------------------------------------------------------------------------------------

async fn run(b: &mut Bench, started: Instant) -> anyhow::Result<String> {
    let m = b.args.updates;
    println!(
        "setting up: CRD, namespace {}, {} objects",
        b.args.namespace, b.args.objects
    );
    let size = b.setup().await?;
    let header = header(b, size).await;
    print!("{header}");

    let mut runs = Vec::new();
    for sink in b.args.sinks.clone() {
        let t = sink.title();
        println!("\n(a) API server ceiling: {m} updates, plain watch");
        let ceiling = b.api_ceiling().await?;
        println!("    {}", ceiling.describe(m));
        println!(
            "(b) plain producer → {t}: {m} messages, window {}",
            b.defaults.window(sink)
        );
        let full = b.plain(sink, None, false).await?;
        full.print();

        println!("(c) crbridge → {t}: {m} updates");
        let bridge = b.bridge(sink).await?;
        let c = bridge.rate(m);
        println!(
            "    {c:.0} events/s ({:.2} s; writes done after {:.2} s), latency p50 {} p99 {}; {}; RSS {:.1} MiB (peak {:.1}); published {} / destination {}{}",
            bridge.elapsed.as_secs_f64(),
            bridge.writes_done.as_secs_f64(),
            opt_ms(histogram_quantile(0.5, &bridge.buckets)),
            opt_ms(histogram_quantile(0.99, &bridge.buckets)),
            bridge.cpu.describe(),
            bridge.rss_kib as f64 / 1024.0,
            bridge.peak_kib as f64 / 1024.0,
            bridge.published,
            bridge.destination,
            if bridge.correct(m) { "" } else { "  ** NOT EXACTLY M **" }
        );

        let peer = match (b.peer.clone(), sink) {
            (Some(bin), SinkKind::Nats | SinkKind::Kafka) => {
                println!("(e) client-go peer → {t}: {m} updates");
                let p = b.peer(sink, &bin).await?;
                println!(
                    "    {:.0} events/s ({:.2} s; writes done after {:.2} s), {:.3} ms CPU per event; {}; RSS {:.1} MiB (peak {:.1}); {}, {} in destination{}",
                    rate(m, p.elapsed),
                    p.elapsed.as_secs_f64(),
                    p.writes_done.as_secs_f64(),
                    p.cpu.of("peer") * 1000.0 / m as f64,
                    p.cpu.describe(),
                    p.rss_kib as f64 / 1024.0,
                    p.peak_kib as f64 / 1024.0,
                    p.totals,
                    p.destination,
                    if p.correct() { "" } else { "  ** NOT EXACTLY THE POOL + M **" }
                );
                Some(p)
            }
            _ => None,
        };
        println!("(b) plain producer → {t}, paced at {c:.0} msgs/s");
        let paced = b.plain(sink, Some(c), false).await?;
        paced.print();
        println!(
            "(b) plain producer → {t}, paced at {c:.0} msgs/s while the writer issues {m} updates"
        );
        let loaded = b.plain(sink, Some(c), true).await?;
        loaded.print();
        runs.push(SinkRun {
            sink,
            ceiling,
            full,
            bridge,
            paced,
            loaded,
            peer,
        });
    }
    Ok(report(&header, b, &runs, started.elapsed()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse()?;
    let crbridge = crbridge_binary(&args)?;
    let peer = if args.no_peer {
        None
    } else {
        Some(common::peer::binary(args.peer.as_deref())?)
    };
    let started = Instant::now();
    let mut bench = Bench::new(args, crbridge, peer).await?;
    // Ctrl-C drops the run (a running crbridge is killed with it) and still cleans up.
    let outcome = tokio::select! {
        r = run(&mut bench, started) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    bench.cleanup().await;
    let report = outcome?;
    println!("\n{report}");
    let out = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-e2e.md"));
    std::fs::write(&out, &report).with_context(|| format!("writing {}", out.display()))?;
    println!("written to {}", out.display());
    Ok(())
}
