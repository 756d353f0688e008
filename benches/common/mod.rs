//! Shared by the benchmark programs (`examples/bench_*.rs`, `benches/pipeline.rs`): the
//! benchmark custom resource, its ~4 KiB objects and 1–3-field updates, and process
//! readings (RSS, CPU) and percentiles. Included with `#[path]`; not every program uses
//! every item.
#![allow(dead_code)]

use std::time::Duration;

use serde_json::{json, Map, Value};

/// API group of the benchmark kind.
pub const GROUP: &str = "bench.crbridge.io";
/// Kind of the benchmark custom resource.
pub const KIND: &str = "BenchWidget";
/// Plural of the benchmark kind.
pub const PLURAL: &str = "benchwidgets";

pub mod peer;

/// The benchmark resource as the client-go peer's `--gvr` takes it.
pub fn gvr() -> String {
    format!("{GROUP}/v1/{PLURAL}")
}

/// The benchmark kind as kube-rs addresses it.
pub fn api_resource() -> kube::api::ApiResource {
    kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk(GROUP, "v1", KIND),
        PLURAL,
    )
}

/// The benchmark CRD: a namespaced kind whose spec keeps unknown fields, so objects can
/// carry the ~60 fields that make them 4 KiB.
pub const CRD_YAML: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: benchwidgets.bench.crbridge.io
spec:
  group: bench.crbridge.io
  scope: Namespaced
  names: {kind: BenchWidget, plural: benchwidgets, singular: benchwidget, listKind: BenchWidgetList}
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {status: {}}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec: {type: object, x-kubernetes-preserve-unknown-fields: true}
            status: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;

/// Spec fields per object; with metadata and status the object serializes to ~4 KiB.
const FIELDS: usize = 62;

/// Words for the free-text and image-name fields.
const WORDS: &[&str] = &[
    "alpha", "bravo", "cache", "drain", "edge", "fleet", "gateway", "harbor", "ingress", "jitter",
    "kernel", "ledger", "mirror", "node", "orbit", "proxy", "quota", "relay", "shard", "tenant",
    "uplink", "vault", "worker", "zone",
];

/// splitmix64: a fixed pseudo-random number per (object, field), no dependency.
fn mix(i: usize, f: usize) -> u64 {
    let mut z = (i as u64) << 8 ^ f as u64;
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Spec field `f` of object `i`, shaped like what real custom resources hold, so that
/// compression (crbridge stores states LZ4-compressed) sees realistic input rather than
/// padding: a digest (64 hex digits, incompressible), an image reference, a quantity or a
/// short phrase, by field.
fn field_value(i: usize, f: usize) -> String {
    let n = mix(i, f);
    let word = |k: u32| WORDS[((n >> (5 * k)) % WORDS.len() as u64) as usize];
    match f % 4 {
        0 => format!(
            "{:016x}{:016x}{:016x}{:016x}",
            n,
            mix(n as usize, 1),
            mix(n as usize, 2),
            mix(n as usize, 3)
        ),
        1 => format!(
            "registry.example.com/team-{f}/{}-{}:v{}.{}.{}",
            word(0),
            word(1),
            n % 5,
            n % 17,
            n % 101
        ),
        2 => format!("{}Mi", n % 65_536),
        _ => format!(
            "{} {} {} {} for tier {} in zone eu-west-{}",
            word(0),
            word(1),
            word(2),
            word(3),
            word(4),
            n % 9
        ),
    }
}

/// The spec of object `i` at `version`: 62 string fields, of which 1–3 (depending on the
/// version) carry the version.
pub fn spec(i: usize, version: u64) -> Map<String, Value> {
    let mut spec = Map::new();
    for f in 0..FIELDS {
        spec.insert(format!("field{f:02}"), json!(field_value(i, f)));
    }
    for (k, v) in changed_fields(i, version) {
        spec.insert(k, v);
    }
    spec
}

/// The 1–3 spec fields version `version` of object `i` sets: a merge patch body's spec.
pub fn changed_fields(i: usize, version: u64) -> Map<String, Value> {
    (0..=(version % 3))
        .map(|k| (format!("field{k:02}"), json!(format!("v{version}-{i}"))))
        .collect()
}

/// A new benchmark object (no uid / resourceVersion: the server assigns them).
pub fn object(namespace: &str, i: usize) -> Value {
    json!({
        "apiVersion": format!("{GROUP}/v1"),
        "kind": KIND,
        "metadata": {
            "name": format!("w{i:06}"),
            "namespace": namespace,
            "labels": {"app": "bench", "tier": "prod"},
        },
        "spec": spec(i, 0),
    })
}

/// The merge patch that takes object `i` to `version` (1–3 spec fields change).
pub fn update_patch(i: usize, version: u64) -> Value {
    json!({ "spec": changed_fields(i, version) })
}

/// A stored-looking object as a watch delivers it: [`object`] at `version` plus server
/// fields, managedFields and a status, ~4 KiB serialized.
pub fn served_object(namespace: &str, i: usize, version: u64, rv: u64) -> Value {
    let mut object = object(namespace, i);
    object["spec"] = Value::Object(spec(i, version));
    object["status"] = json!({"phase": "Ready", "observedGeneration": version + 1});
    let meta = object["metadata"]
        .as_object_mut()
        .expect("object() has metadata");
    meta.extend([
        (
            "uid".into(),
            json!(format!("00000000-0000-4000-8000-{i:012}")),
        ),
        ("resourceVersion".into(), json!(rv.to_string())),
        ("generation".into(), json!(version + 1)),
        ("creationTimestamp".into(), json!("2026-01-01T00:00:00Z")),
        (
            "managedFields".into(),
            json!([{"manager": "bench", "operation": "Update",
                "apiVersion": format!("{GROUP}/v1"), "time": "2026-01-01T00:00:00Z",
                "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]),
        ),
    ]);
    object
}

/// Creates the benchmark CRD unless it exists, and waits (up to 60 s) until it is
/// Established.
pub async fn ensure_crd(client: &kube::Client) -> anyhow::Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Api, PostParams};
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_saphyr::from_str(CRD_YAML)?;
    let name = format!("{PLURAL}.{GROUP}");
    if crds.get_opt(&name).await?.is_none() {
        match crds.create(&PostParams::default(), &crd).await {
            Ok(_) => {}
            // Created meanwhile by another benchmark.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(anyhow::Error::new(e).context("creating the BenchWidget CRD")),
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let established = crds
            .get(&name)
            .await?
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!("CRD {name} not Established within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Fields of `/proc/<pid>/status` measured in KiB (`VmRSS:`, `RssAnon:`, …), in the order
/// asked; `None` when the process is gone or a field is missing.
pub fn status_kib<const N: usize>(pid: u32, names: [&str; N]) -> Option<[u64; N]> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let mut out = [0; N];
    for (slot, name) in out.iter_mut().zip(names) {
        *slot = field(name)?;
    }
    Some(out)
}

/// Resident set size and its peak (`VmRSS`, `VmHWM`) of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let [rss, hwm] = status_kib(pid, ["VmRSS:", "VmHWM:"])?;
    Some((rss, hwm))
}

/// User + system CPU seconds a process has used so far (`self` for this one).
pub fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
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
    // After the command: state is field 0, utime 11, stime 12; 100 ticks per second.
    (ticks(11) + ticks(12)) / 100.0
}

/// The `q`-quantile (0..=1) of `samples`, sorting them.
pub fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let idx = ((samples.len() - 1) as f64 * q).round() as usize;
    samples[idx]
}

/// Reads `deploy/local/env` (written by `deploy/local/up`) into this process's environment
/// where a variable is not already set.
pub fn load_local_env() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/local/env");
    let Ok(text) = std::fs::read_to_string(path) else {
        panic!("{path} missing: run deploy/local/up first");
    };
    for line in text.lines() {
        let line = line.trim().trim_start_matches("export ");
        if let Some((k, v)) = line.split_once('=') {
            if std::env::var_os(k).is_none() {
                std::env::set_var(k, v.trim_matches('"').trim_matches('\''));
            }
        }
    }
}

/// How often a benchmark polls a counter it waits for (`/metrics` of crbridge or the peer)
/// until it reaches a target. Each scrape costs the scraped process CPU (crbridge: ~0.2 ms to
/// render its registry), which a 20 ms poll would add to the CPU per event measured. So it
/// polls every `slow` while the target is far, and every `fast` once the count, moving as
/// it did over the last poll, would reach the target within two slow polls: the moment the
/// target is reached is still known to within `fast`.
pub struct PollPace {
    slow: Duration,
    fast: Duration,
    last: Option<f64>,
}

impl PollPace {
    /// Polls every `slow` while the target is far, every `fast` near it.
    pub fn new(slow: Duration, fast: Duration) -> Self {
        PollPace {
            slow,
            fast,
            last: None,
        }
    }

    /// The wait before the next poll, after one that read `count` of `target`.
    pub fn next(&mut self, count: f64, target: f64) -> Duration {
        let step = self
            .last
            .map_or(f64::INFINITY, |last| (count - last).max(0.0));
        self.last = Some(count);
        if count + 2.0 * step >= target {
            self.fast
        } else {
            self.slow
        }
    }
}
