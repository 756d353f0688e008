//! Bridge-internal ceiling: events/s through capture (normalize + diff + event + one sled
//! transaction and flush per batch) and dispatch (window, cursor) into a null sink, with
//! the watch side replaced by a pre-generated stream of 4 KiB custom resources fed at full
//! speed. No API server, no broker: what crbridge itself can do on this machine.
//!
//! `cargo run --release --example bench_ceiling -- [objects] [updates-per-object]`

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crbridge::capture::{Capture, CaptureStats, ScopeRules};
use crbridge::config::{InitialMode, PayloadMode};
use crbridge::diff::Rules;
use crbridge::dispatch::{DispatchStats, Dispatcher};
use crbridge::event::Identity;
use crbridge::store::{Store, StoreOptions};
use crbridge::watch::{ListMode, Observed, Origin};
use crbridge_sink_api::{BoxFuture, ChangeKind, Event, PendingAck, Sink, SinkError};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

/// A ~4 KiB Widget: metadata with managedFields, a spec of 40 fields, a status.
fn widget(i: usize, rv: u64, version: u64) -> Value {
    let mut spec = serde_json::Map::new();
    for f in 0..58 {
        spec.insert(
            format!("field{f:02}"),
            json!(format!("value-{f}-{:>40}", "x")),
        );
    }
    // 1 to 3 fields change per update.
    for k in 0..=(version % 3) {
        spec.insert(format!("field{k:02}"), json!(format!("v{version}-{i}")));
    }
    json!({
        "apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {
            "name": format!("w{i}"), "namespace": "bench", "uid": format!("uid-{i}"),
            "resourceVersion": rv.to_string(), "generation": version + 1,
            "labels": {"app": "bench", "tier": "prod"},
            "managedFields": [{"manager": "bench", "operation": "Update", "apiVersion": "example.com/v1",
                "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]
        },
        "spec": spec,
        "status": {"phase": "Ready", "observedGeneration": version + 1}
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let objects = args.first().copied().unwrap_or(2000);
    let updates = args.get(1).copied().unwrap_or(10);
    let size = serde_json::to_vec(&widget(0, 1, 1))?.len();

    // The recorded stream: objects created, then updated round-robin.
    let mut stream = Vec::with_capacity(objects * (updates + 1));
    let mut rv = 1u64;
    for v in 0..=updates as u64 {
        for i in 0..objects {
            rv += 1;
            stream.push(widget(i, rv, v));
        }
    }
    let total = stream.len();

    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), &StoreOptions::default())?;
    let rules = vec![ScopeRules {
        watch: "widgets".into(),
        namespace: None,
        identity: Identity {
            cluster: "bench".into(),
            type_prefix: "io.crbridge.resource".into(),
            group: "example.com".into(),
            version: "v1".into(),
            kind: "Widget".into(),
            plural: "widgets".into(),
            payload: PayloadMode::FullPatch,
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
    }];
    let (tx, rx) = mpsc::channel(1024);
    let (durable_tx, durable_rx) = watch::channel(0);
    let capture = tokio::spawn(
        Capture::new(
            store.clone(),
            rules,
            durable_tx,
            Arc::new(CaptureStats::default()),
        )
        .run(rx, CancellationToken::new()),
    );
    let stats = Arc::new(DispatchStats::default());
    let cancel = CancellationToken::new();
    let dispatcher = Dispatcher {
        name: "null".into(),
        watches: ["widgets".to_string()].into_iter().collect(),
        store: store.clone(),
        connector: Arc::new(|| Box::pin(async { Ok(Arc::new(NullSink) as Arc<dyn Sink>) })),
        durable: durable_rx,
        stats: stats.clone(),
        drain_timeout: Duration::from_secs(5),
        policy: Default::default(),
        metrics: Arc::new(crbridge::metrics::Metrics::new()),
    };
    let dispatch = tokio::spawn(dispatcher.run(cancel.clone()));

    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    for object in stream {
        tx.send(Observed::Upsert {
            scope: 0,
            object,
            origin: Origin::Watch,
        })
        .await?;
    }
    let _ = ListMode::Initial;
    drop(tx);
    capture.await?;
    let last = store.last_seq()?;
    while stats.cursor.load(Ordering::Relaxed) < last {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    cancel.cancel();
    dispatch.await?;
    println!("bridge-internal ceiling (null sink, recorded stream, {size} B objects, 1-3 fields per update)");
    println!("  observations      {total}");
    println!("  events published  {last}");
    println!("  wall              {wall:.2} s");
    println!("  cpu (process)     {cpu:.2} s");
    println!("  events/s          {:.0}", last as f64 / wall);
    println!("  events/s per core {:.0}", last as f64 / cpu.max(1e-9));
    Ok(())
}

/// User + system CPU seconds of this process, from /proc.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields after the command: state is 0, utime 11, stime 12; 100 ticks per second.
    (ticks(11) + ticks(12)) / 100.0
}
