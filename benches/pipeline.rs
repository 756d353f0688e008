//! Micro-benchmarks of the pure stages on a ~4 KB custom resource with 1–3 fields changed:
//! clean, normalize-and-compare, diff, event building, the stored layouts (`store::codec`)
//! and the store itself.
//!
//! `cargo bench --bench pipeline`

/// crbridge's allocator, so allocation-heavy stages cost what they cost in crbridge.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, UNIX_EPOCH};

use crbridge::config::PayloadMode;
use crbridge::diff::{self, Rules};
use crbridge::event::{self, Change, Identity};
use crbridge::store::codec;
use crbridge_sink_api::ChangeKind;
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};

fn widget(version: u64) -> Value {
    let mut spec = serde_json::Map::new();
    for f in 0..58 {
        spec.insert(
            format!("field{f:02}"),
            json!(format!("value-{f}-{:>40}", "x")),
        );
    }
    for k in 0..=(version % 3) {
        spec.insert(format!("field{k:02}"), json!(format!("v{version}")));
    }
    json!({
        "apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w", "namespace": "bench", "uid": "uid-1",
            "resourceVersion": (100 + version).to_string(), "generation": version + 1,
            "managedFields": [{"manager": "bench", "time": "2026-01-01T00:00:00Z"}]},
        "spec": spec,
        "status": {"phase": "Ready"}
    })
}

fn stages(c: &mut Criterion) {
    let rules = Rules::new(false, &["/spec/field57".to_string()]).unwrap();
    let mut a = widget(1);
    let mut b = widget(2);
    diff::clean(&mut a);
    diff::clean(&mut b);
    c.bench_function("clean", |bench| {
        bench.iter_batched(
            || widget(2),
            |mut o| diff::clean(&mut o),
            criterion::BatchSize::SmallInput,
        )
    });
    c.bench_function("normalize+compare (no-op check)", |bench| {
        bench.iter(|| rules.same(&a, &b))
    });
    c.bench_function("diff (RFC 6902)", |bench| bench.iter(|| diff::diff(&a, &b)));
    c.bench_function("compare (what capture runs: normalized patch)", |bench| {
        bench.iter(|| diff::compare(&a, &b, &rules))
    });
    c.bench_function("diff (json_patch::diff, for comparison)", |bench| {
        bench.iter(|| json_patch::diff(&a, &b))
    });
    let who = Identity {
        cluster: "bench".into(),
        type_prefix: "io.crbridge.resource".into(),
        group: "example.com".into(),
        version: "v1".into(),
        kind: "Widget".into(),
        plural: "widgets".into(),
        payload: PayloadMode::FullPatch,
        dataschema: String::new(),
    };
    let patch = rules.diff(&a, &b);
    let change = Change::new(
        ChangeKind::Updated,
        &b,
        "102",
        UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    )
    .with_patch(Some(&patch))
    .with_previous(Some("101"))
    .with_changed_by(Some("bench"));
    c.bench_function("event build", |bench| {
        bench.iter(|| event::build(&who, &change).unwrap())
    });
    let ev = event::build(&who, &change).unwrap();
    let entry = crbridge::store::OutboxEntry {
        watch: "widgets".into(),
        sinks: None,
        written_ms: 0,
        observed_us: 0,
        event: ev.clone(),
    };
    c.bench_function("outbox entry encode (header + LZ4 data)", |bench| {
        bench.iter(|| codec::encode_entry(&entry).unwrap())
    });
    let stored = codec::encode_entry(&entry).unwrap();
    c.bench_function("outbox entry decode", |bench| {
        bench.iter(|| codec::decode_entry(&stored).unwrap())
    });
    let state_json = serde_json::to_string(&b).unwrap();
    c.bench_function("state encode (LZ4)", |bench| {
        bench.iter(|| codec::encode_state("12345", &state_json).unwrap())
    });
    let obj = serde_json::to_vec(&b).unwrap();
    c.bench_function("object serialize", |bench| {
        bench.iter(|| serde_json::to_vec(&b).unwrap())
    });
    c.bench_function("object parse", |bench| {
        bench.iter(|| serde_json::from_slice::<Value>(&obj).unwrap())
    });
    c.bench_function("object clone", |bench| bench.iter(|| b.clone()));
    store_stages(c, &b, &ev);
}

/// The store's share: one transaction of 512 state + outbox writes (no flush), and
/// reading one state back.
fn store_stages(c: &mut Criterion, object: &Value, ev: &crbridge_sink_api::Event) {
    use crbridge::store::{object_key, Batch, OutboxEntry, Store, StoreOptions, Write};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    let json = serde_json::value::to_raw_value(object).unwrap();
    let batch = |round: u64| Batch {
        writes: (0..512)
            .map(|i| Write::Put {
                key: object_key("widgets", "bench", &format!("uid-{i}")),
                resource_version: (round * 1000 + i).to_string(),
                object_json: json.clone(),
                event: Some(OutboxEntry {
                    watch: "widgets".into(),
                    sinks: None,
                    written_ms: 0,
                    observed_us: 0,
                    event: ev.clone(),
                }),
            })
            .collect(),
        checkpoints: vec![],
    };
    let mut round = 0;
    c.bench_function(
        "store commit, 512 states + events per transaction",
        |bench| {
            bench.iter_batched(
                || {
                    round += 1;
                    batch(round)
                },
                |b| store.commit(&b).unwrap(),
                criterion::BatchSize::LargeInput,
            )
        },
    );
    // sled alone, one 5 KiB value (an outbox entry's size) per insert, no transaction:
    // a new key at the end (how the outbox grows) against overwriting one of 2,000 keys
    // (how object states change).
    let db = sled::Config::new()
        .temporary(true)
        .cache_capacity(64 << 20)
        .open()
        .unwrap();
    let tree = db.open_tree("t").unwrap();
    let value = vec![b'x'; 5 << 10];
    let mut seq = 0u64;
    c.bench_function("sled insert, new key at the end (outbox)", |bench| {
        bench.iter(|| {
            seq += 1;
            tree.insert(seq.to_be_bytes(), value.as_slice()).unwrap()
        })
    });
    let tree = db.open_tree("u").unwrap();
    let mut i = 0u64;
    c.bench_function("sled insert, overwrite 1 of 2000 keys (states)", |bench| {
        bench.iter(|| {
            i += 1;
            tree.insert(format!("k{}", i % 2000), value.as_slice())
                .unwrap()
        })
    });
    let key = object_key("widgets", "bench", "uid-7");
    c.bench_function("store read + decode one state", |bench| {
        bench.iter(|| store.object(&key).unwrap().unwrap())
    });
}

criterion_group!(benches, stages);
criterion_main!(benches);
