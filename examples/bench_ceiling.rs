//! Bridge-internal ceiling: events/s through crbridge's own pipeline — watch stream
//! decoding, clean + normalize + diff, CloudEvent building, one sled transaction and flush
//! per batch, dispatch (window, cursor) — into a sink that acknowledges at once.
//!
//! The API server is replaced by a recorded watch stream served over HTTP on 127.0.0.1 by a
//! second process (this program re-run with `serve`), at full speed: an empty initial list,
//! then `ADDED` for every object and `MODIFIED` events where 1–3 spec fields of a ~4 KiB
//! custom resource change. crbridge's kube client, watch loop, capture and dispatcher run
//! in this process exactly as `crbridge run` wires them; the server's CPU is not counted.
//!
//! `cargo run --release --example bench_ceiling -- [objects] [updates-per-object]`
//!
//! `BENCH_RATE=250` paces the stream to 250 events/s instead: the CPU crbridge spends per
//! event at a trickle, when every event is a batch of its own. `BENCH_CACHE_BYTES` sets
//! sled's cache (default: the product's default).

#[path = "../benches/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::RawQuery;
use crbridge::capture::{Capture, CaptureStats, ScopeRules};
use crbridge::config::{InitialMode, PayloadMode};
use crbridge::diff::Rules;
use crbridge::dispatch::{DispatchStats, Dispatcher};
use crbridge::event::Identity;
use crbridge::metrics::Metrics;
use crbridge::store::{Store, StoreOptions};
use crbridge::watch::{self, KindRef, RawApi, Scope, ScopeHealth};
use crbridge_sink_api::{BoxFuture, ChangeKind, Event, PendingAck, Sink, SinkError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NAMESPACE: &str = "bench";

/// Acknowledges everything at once: the cost of the sink is zero.
struct NullSink;

impl Sink for NullSink {
    fn publish<'a>(&'a self, _: &'a Event) -> BoxFuture<'a, Result<PendingAck, SinkError>> {
        Box::pin(async { Ok(Box::pin(async { Ok(()) }) as PendingAck) })
    }
    fn healthcheck(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async { Ok(()) })
    }
    fn window(&self) -> usize {
        1024
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve") {
        let n = |i: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(0);
        return serve(n(1), n(2));
    }
    let n = |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (objects, updates) = (n(0, 2000), n(1, 10));
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bridge(objects, updates))
}

/// The recorded stream's server (child process): prints its port, serves until killed.
fn serve(objects: usize, updates: usize) -> anyhow::Result<()> {
    // Pre-rendered watch lines, in chunks of ~256 KiB (one line per chunk when paced).
    let rate: u64 = std::env::var("BENCH_RATE")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    let paced = rate > 0;
    let mut chunks = Vec::new();
    let mut chunk = Vec::with_capacity(300 << 10);
    let mut rv = 1u64;
    for version in 0..=updates as u64 {
        for i in 0..objects {
            rv += 1;
            // As the API server writes them: `type` first, then the object.
            let ty = if version == 0 { "ADDED" } else { "MODIFIED" };
            chunk.extend_from_slice(format!(r#"{{"type":"{ty}","object":"#).as_bytes());
            serde_json::to_writer(
                &mut chunk,
                &common::served_object(NAMESPACE, i, version, rv),
            )?;
            chunk.extend_from_slice(b"}\n");
            if chunk.len() >= 256 << 10 || paced {
                chunks.push(Bytes::from(std::mem::take(&mut chunk)));
            }
        }
    }
    chunks.push(Bytes::from(chunk));
    let chunks = Arc::new(chunks);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            println!("{}", listener.local_addr()?.port());
            let app = axum::Router::new().fallback(move |RawQuery(q): RawQuery| {
                let chunks = chunks.clone();
                async move {
                    if q.unwrap_or_default().contains("watch=true") {
                        let all = (*chunks).clone().into_iter().map(Ok::<_, std::io::Error>);
                        let all = futures::stream::iter(all);
                        // All of it (at full speed, or `rate` events/s), then an open but
                        // silent stream.
                        if paced {
                            let tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
                            let ticks = tokio_stream_ticks(tick);
                            Body::from_stream(all.zip(ticks).map(|(c, _)| c).chain(futures::stream::pending()))
                        } else {
                            Body::from_stream(all.chain(futures::stream::pending()))
                        }
                    } else {
                        Body::from(
                            r#"{"apiVersion":"v1","kind":"List","metadata":{"resourceVersion":"1"},"items":[]}"#,
                        )
                    }
                }
            });
            axum::serve(listener, app).await?;
            anyhow::Ok(())
        })
}

use futures::StreamExt;

/// An interval as a stream of ticks.
fn tokio_stream_ticks(tick: tokio::time::Interval) -> impl futures::Stream<Item = ()> {
    futures::stream::unfold(tick, |mut t| async move {
        t.tick().await;
        Some(((), t))
    })
}

async fn bridge(objects: usize, updates: usize) -> anyhow::Result<()> {
    let total = (objects * (updates + 1)) as u64;
    let size = serde_json::to_vec(&common::served_object(NAMESPACE, 0, 1, 1))?.len();

    let mut server = Command::new(std::env::current_exe()?)
        .args(["serve", &objects.to_string(), &updates.to_string()])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut port = String::new();
    BufReader::new(server.stdout.take().expect("piped")).read_line(&mut port)?;
    let port: u16 = port
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("stream server did not print its port: {port:?}"))?;

    let client = kube::Client::try_from(kube::Config::new(
        format!("http://127.0.0.1:{port}").parse()?,
    ))?;
    let dir = tempfile::tempdir()?;
    let mut opts = StoreOptions::default();
    if let Some(bytes) = std::env::var("BENCH_CACHE_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        opts.cache_bytes = bytes;
    }
    let store = Store::open(dir.path(), &opts)?;
    let metrics = Arc::new(Metrics::new());
    let scope = Scope {
        id: 0,
        cluster: "bench".into(),
        watch: "widgets".into(),
        namespace: Some(NAMESPACE.into()),
        resource: common::api_resource(),
        api: RawApi::new(
            client,
            KindRef::of(&common::api_resource()),
            &common::api_resource(),
            Some(NAMESPACE),
        ),
        label_selector: None,
        field_selector: None,
        page_size: 500,
        resolved: true,
    };
    let rules = vec![ScopeRules {
        watch: "widgets".into(),
        namespace: Some(NAMESPACE.into()),
        identity: Identity {
            cluster: "bench".into(),
            type_prefix: "io.crbridge.resource".into(),
            group: common::GROUP.into(),
            version: "v1".into(),
            kind: common::KIND.into(),
            plural: common::PLURAL.into(),
            payload: PayloadMode::FullPatch,
            dataschema: String::new(),
        },
        rules: Rules::new(false, &[])?,
        events: [
            ChangeKind::Created,
            ChangeKind::Updated,
            ChangeKind::Deleted,
        ]
        .into_iter()
        .collect(),
        initial: InitialMode::Snapshot,
        appeared: false,
        filter: None,
        filter_errors: Default::default(),
        redact: None,
    }];

    let cpu0 = common::cpu_seconds("self");
    let t0 = Instant::now();
    let cancel = CancellationToken::new();
    let (tx, rx) = mpsc::channel(1024);
    let (durable_tx, durable_rx) = tokio::sync::watch::channel(0);
    let capture = tokio::spawn(
        Capture::new(
            store.clone(),
            rules,
            durable_tx,
            Arc::new(CaptureStats::default()),
        )
        .with_metrics(metrics.clone())
        .run(rx, mpsc::channel(1).1, cancel.clone()),
    );
    let watcher = tokio::spawn(watch::run(
        scope,
        None,
        tx,
        Arc::new(ScopeHealth::default()),
        metrics.clone(),
        cancel.clone(),
    ));
    let stats = Arc::new(DispatchStats::default());
    let dispatcher = Dispatcher {
        name: "null".into(),
        watches: ["widgets".to_string()].into_iter().collect(),
        store: store.clone(),
        connector: Arc::new(|| Box::pin(async { Ok(Arc::new(NullSink) as Arc<dyn Sink>) })),
        durable: durable_rx,
        stats: stats.clone(),
        drain_timeout: Duration::from_secs(5),
        cursor_every: crbridge::dispatch::CURSOR_EVERY,
        policy: Default::default(),
        metrics: metrics.clone(),
    };
    let dispatch = tokio::spawn(dispatcher.run(cancel.clone()));

    let deadline = Instant::now() + Duration::from_secs(600);
    while stats.cursor.load(Ordering::Relaxed) < total {
        anyhow::ensure!(
            Instant::now() < deadline,
            "null sink acked {} of {total} events within 10 min",
            stats.cursor.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = common::cpu_seconds("self") - cpu0;
    let rss = common::rss_kib(std::process::id()).unwrap_or_default();
    // Idle for a while: what stays resident once the burst is over.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = common::rss_kib(std::process::id()).unwrap_or_default();
    cancel.cancel();
    let _ = watcher.await;
    let _ = dispatch.await;
    let _ = capture.await;
    let _ = server.kill();
    let _ = server.wait();

    println!("bridge-internal ceiling: recorded watch stream over HTTP on 127.0.0.1 -> null sink");
    println!("  object size        {size} B, 1-3 spec fields changed per update");
    println!(
        "  events             {total} ({objects} created, {} updated)",
        total - objects as u64
    );
    println!("  wall               {wall:.2} s");
    println!("  bridge cpu         {cpu:.2} s (this process; the stream server excluded)");
    println!("  events/s           {:.0}", total as f64 / wall);
    println!(
        "  events/s per core  {:.0}   (target >= 20000)",
        total as f64 / cpu.max(1e-9)
    );
    println!(
        "  rss / peak         {} / {} MiB at the end, {} MiB after 3 s idle",
        rss.0 >> 10,
        rss.1 >> 10,
        idle.0 >> 10
    );
    Ok(())
}
