//! Scale benchmarks of the real `crbridge run` process against the local servers
//! (`deploy/local/up`): memory at 10k / 100k watched objects, and restart catch-up after
//! `kill -9` with changes made while it was down.
//!
//! ```sh
//! cargo build --release --bin crbridge
//! cargo run --release --example bench_scale -- [--objects 10000,100000] [--changes 1000]
//!     [--cache-bytes default,16MiB] [--smoke] [--peer PATH | --no-peer]
//! ```
//!
//! `bench_scale seed <n>` leaves `n` objects in namespace `bench-scale-<n>` for profiling
//! a `crbridge run` by hand; `bench_scale unseed <n>` removes them.
//!
//! `--smoke` is `--objects 1000 --changes 100`; `--cache-bytes` repeats the memory
//! measurement per `state.cacheBytes` value (`default`: crbridge's own). The report goes to
//! stdout and, as markdown, to `target/bench-scale.md`; progress goes to stderr; crbridge's
//! logs and the events of the restarts stay in `target/bench-scale/`. `CRBRIDGE_BIN` picks
//! another crbridge binary (default `target/release/crbridge`); crbridge inherits the
//! environment, so `MIMALLOC_*` options apply to it. Both show in the report's command line.
//!
//! **Objects.** The custom resource is `BenchWidget` (`benches/common`): ~4 KiB served
//! objects (62 spec fields: digests, image references, quantities, phrases; labels, managedFields, a status). Creating 100k of them through
//! the API server takes minutes here, so they are written straight into etcd through its
//! v3 JSON gateway (100 puts per transaction): one object is first created through the API
//! server to learn the key layout (`/registry/<group>/<plural>/<ns>/<name>`) and that stored
//! values are JSON without a resourceVersion; every seeded object gets its own uid. The API
//! server runs with `--watch-cache=false`, so it serves them from etcd at once; a paginated
//! list through it checks the count and the size. Each size has its own namespace
//! `bench-scale-<N>`. Seeded keys and namespaces are deleted at the end (and etcd compacted,
//! so their history does not linger), and at the start (a previous aborted run); the
//! namespace key is removed from etcd too, because without a controller-manager a deleted
//! namespace would stay `Terminating` for ever.
//!
//! **Memory.** `crbridge run` with a fresh state directory, one watch on the namespace,
//! `initial: snapshot`, a `stdout` sink whose output goes to `/dev/null`. Every 500 ms the
//! program reads `crbridge_events_published_total` on `/metrics` and the process's
//! `VmRSS` / `VmHWM`; once all N snapshot events are published and the counter has stopped
//! moving, RSS is sampled for 5 s more and the last sample is the steady RSS; `VmHWM` is the
//! peak of the initial list. The report splits steady RSS into anonymous memory and
//! file-backed pages (mostly the binary's own text). Baseline: this same binary re-executed as `bench_scale reflector
//! <ns> <N>` (no custom allocator), holding the objects in a kube-rs
//! `reflector(watcher(Api<DynamicObject>))` store, RSS once the store holds N and settled.
//! Targets: steady ≤ 40 MiB + 0.5 KiB × N and ≤ 0.2 × the reflector; peak ≤ steady + 64 MiB.
//! Second baseline: the client-go peer (`benches/peer`, BENCHMARKS.md "The client-go
//! peer"; built by `benches/peer/build`, or `--peer PATH`; `--no-peer` leaves it out), what
//! users deploy instead of crbridge: its informer on the same namespace, its stdout sink to
//! /dev/null like crbridge's, measured as crbridge is (all N Add events published and the
//! counter still, then 5 s of samples). Target (issue 21): crbridge's steady RSS below the
//! peer's.
//!
//! **Restart catch-up** (on the largest size only). With crbridge caught up: `kill -9`,
//! merge-patch `--changes` distinct objects through the API server (1–3 spec fields each),
//! restart on the same state directory with the sink writing to a file, and time from
//! spawning the process until `crbridge_events_published_total` reaches the number of
//! changes. Then wait until the watch has settled (resumed, or relisted all N) and check that
//! exactly that many events were written (`crbridge_events_total`) and delivered (lines of
//! the sink's output), one per changed object, none for an unchanged one. Variant *resume*:
//! the watch continues from the checkpoint. Variant *relist*: etcd is compacted while
//! crbridge is down, so the watch gets 410 Gone, lists all N objects and reconciles. Baseline:
//! a plain paginated kube-rs list of the same N objects (500 per page, crbridge's page size),
//! the faster of one right after seeding and one after the catch-ups. Target: catch-up ≤
//! 1.3 × plain list, and zero events for unchanged objects. The RSS of the restarted
//! process, settled, is reported too: it tells memory that comes from opening the state
//! apart from memory that comes from processing a full list.
//!
//! Compacting etcd affects every client of the shared servers: other watches get 410 Gone and
//! relist, as the fault suite's compactions make them do.

#[path = "../benches/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::runtime::{reflector, watcher};
use kube::{Api, Client};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// Objects per list page: crbridge's `PAGE_SIZE` (src/app.rs) and kube-rs's watcher default.
const PAGE_SIZE: u32 = 500;
/// Prefix of every namespace this program creates (and deletes).
const NS_PREFIX: &str = "bench-scale-";
/// The namespace of the object that reveals the etcd layout.
const PROBE_NS: &str = "bench-scale-probe";
/// Watch and sink names in the crbridge config.
const WATCH: &str = "widgets";
const SINK: &str = "out";
/// Puts per etcd transaction (etcd allows 128 by default; 100 × ~5.5 KiB stays well under
/// its 1.5 MiB request limit) and transactions in flight.
const PUTS_PER_TXN: usize = 100;
const SEED_CONNECTIONS: usize = 3;
/// Merge patches in flight while making the changes.
const PATCH_CONCURRENCY: usize = 16;
/// How often RSS and the counters are sampled.
const SAMPLE: Duration = Duration::from_millis(500);

const MIB: f64 = 1024.0 * 1024.0;

// ---------------------------------------------------------------------------------------
// Command line

struct Opts {
    objects: Vec<usize>,
    changes: usize,
    /// `None`: crbridge's default `state.cacheBytes`.
    cache: Vec<Option<String>>,
    /// The client-go peer's binary (`None`: `benches/peer/build`).
    peer: Option<PathBuf>,
    /// Leave the client-go peer out.
    no_peer: bool,
}

fn parse_opts(args: &[String]) -> Result<Opts> {
    let mut opts = Opts {
        objects: vec![10_000, 100_000],
        changes: 1000,
        cache: vec![None],
        peer: None,
        no_peer: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| anyhow!("{arg} needs a value"))
                .cloned()
        };
        match arg.as_str() {
            "--smoke" => {
                opts.objects = vec![1000];
                opts.changes = 100;
            }
            "--objects" => {
                opts.objects = value()?
                    .split(',')
                    .map(|s| s.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .context("--objects: a comma-separated list of counts")?;
            }
            "--peer" => opts.peer = Some(value()?.into()),
            "--no-peer" => opts.no_peer = true,
            "--changes" => opts.changes = value()?.parse().context("--changes: a count")?,
            "--cache-bytes" => {
                opts.cache = value()?
                    .split(',')
                    .map(|s| match s.trim() {
                        "default" => None,
                        s => Some(s.to_string()),
                    })
                    .collect();
            }
            "-h" | "--help" => {
                println!(
                    "bench_scale [--objects 10000,100000] [--changes 1000] \
                     [--cache-bytes default,16MiB] [--smoke] [--peer PATH | --no-peer]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    opts.objects.sort_unstable();
    opts.objects.dedup();
    if opts.objects.is_empty() || opts.objects.contains(&0) || opts.cache.is_empty() {
        bail!("--objects and --cache-bytes need at least one value, objects > 0");
    }
    let largest = *opts.objects.last().unwrap_or(&0);
    if opts.changes == 0 || opts.changes * 2 > largest {
        bail!(
            "--changes must be between 1 and half the largest object count ({largest}): \
             the two catch-up variants change distinct objects"
        );
    }
    Ok(opts)
}

// ---------------------------------------------------------------------------------------
// Small HTTP/1.0 client: etcd's JSON gateway and crbridge's /metrics. HTTP/1.0 makes both
// servers answer without chunked encoding and close the connection after the body.

async fn http(addr: &str, method: &str, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>)> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let head = format!(
            "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(Duration::from_secs(60), exchange)
        .await
        .map_err(|_| anyhow!("{method} http://{addr}{path}: no answer within 60 s"))?
        .with_context(|| format!("{method} http://{addr}{path}"))?;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("{method} http://{addr}{path}: malformed answer"))?;
    let status_line = String::from_utf8_lossy(&answer[..split]);
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("{method} http://{addr}{path}: bad status line"))?;
    Ok((status, answer[split + 4..].to_vec()))
}

// ---------------------------------------------------------------------------------------
// etcd v3 JSON gateway (keys and values are base64).

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn b64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn unb64(text: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = B64
            .iter()
            .position(|b| *b == c)
            .ok_or_else(|| anyhow!("not base64: {c:?}"))?;
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

/// The end of the key range holding every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[derive(Clone)]
struct Etcd {
    addr: String,
}

impl Etcd {
    fn from_env() -> Result<Etcd> {
        let endpoint = std::env::var("CRBRIDGE_ETCD_ENDPOINT")
            .context("CRBRIDGE_ETCD_ENDPOINT not set (deploy/local/env)")?;
        let addr = endpoint
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("CRBRIDGE_ETCD_ENDPOINT {endpoint}: expected http://host:port"))?
            .trim_end_matches('/')
            .to_string();
        Ok(Etcd { addr })
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let (status, answer) = http(&self.addr, "POST", path, &serde_json::to_vec(body)?).await?;
        if status != 200 {
            bail!(
                "etcd {path}: HTTP {status}: {}",
                String::from_utf8_lossy(&answer[..answer.len().min(500)])
            );
        }
        serde_json::from_slice(&answer).with_context(|| format!("etcd {path}: answer not JSON"))
    }

    /// Keys (and values unless `keys_only`) of every key under `prefix`.
    async fn range(&self, prefix: &[u8], keys_only: bool) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let answer = self
            .post(
                "/v3/kv/range",
                &json!({"key": b64(prefix), "range_end": b64(&prefix_end(prefix)),
                        "keys_only": keys_only}),
            )
            .await?;
        let mut out = Vec::new();
        for kv in answer["kvs"].as_array().into_iter().flatten() {
            let key = unb64(kv["key"].as_str().unwrap_or_default())?;
            let value = unb64(kv["value"].as_str().unwrap_or_default())?;
            out.push((key, value));
        }
        Ok(out)
    }

    async fn put_all(&self, kvs: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        let ops: Vec<Value> = kvs
            .iter()
            .map(|(k, v)| json!({"requestPut": {"key": b64(k), "value": b64(v)}}))
            .collect();
        let answer = self.post("/v3/kv/txn", &json!({"success": ops})).await?;
        if answer["succeeded"] != json!(true) {
            bail!("etcd txn not applied: {answer}");
        }
        Ok(())
    }

    async fn delete_prefix(&self, prefix: &[u8]) -> Result<u64> {
        let answer = self
            .post(
                "/v3/kv/deleterange",
                &json!({"key": b64(prefix), "range_end": b64(&prefix_end(prefix))}),
            )
            .await?;
        Ok(answer["deleted"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .unwrap_or(0))
    }

    async fn delete_key(&self, key: &[u8]) -> Result<()> {
        self.post("/v3/kv/deleterange", &json!({"key": b64(key)}))
            .await?;
        Ok(())
    }

    async fn revision(&self) -> Result<i64> {
        let answer = self
            .post("/v3/kv/range", &json!({"key": b64(b"a")}))
            .await?;
        answer["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .ok_or_else(|| anyhow!("etcd range answer without header.revision: {answer}"))
    }

    /// Compacts the history up to the current revision: older resourceVersions are gone.
    async fn compact(&self) -> Result<i64> {
        let revision = self.revision().await?;
        self.post(
            "/v3/kv/compaction",
            &json!({"revision": revision.to_string(), "physical": true}),
        )
        .await?;
        Ok(revision)
    }
}

// ---------------------------------------------------------------------------------------
// Waiting with a deadline.

struct Deadline {
    what: String,
    until: Instant,
    limit: Duration,
}

impl Deadline {
    fn new(what: impl Into<String>, limit: Duration) -> Deadline {
        Deadline {
            what: what.into(),
            until: Instant::now() + limit,
            limit,
        }
    }

    /// An error naming what was waited for and `state` once the time is up.
    fn check(&self, state: impl FnOnce() -> String) -> Result<()> {
        if Instant::now() >= self.until {
            bail!(
                "timed out after {:?} waiting for {} ({})",
                self.limit,
                self.what,
                state()
            );
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// The cluster side: CRD, namespaces, seeding, lists, patches.

struct Cluster {
    client: Client,
    ar: ApiResource,
    etcd: Etcd,
    /// etcd key prefix of BenchWidgets, ending in `/`; a namespace's objects are under
    /// `<prefix><ns>/`.
    key_prefix: Vec<u8>,
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

fn name(i: usize) -> String {
    format!("w{i:06}")
}

impl Cluster {
    async fn connect() -> Result<Cluster> {
        let client = Client::try_default()
            .await
            .context("kube client from KUBECONFIG (deploy/local/env)")?;
        let etcd = Etcd::from_env()?;
        etcd.revision()
            .await
            .context("etcd JSON gateway not answering")?;
        let mut cluster = Cluster {
            client,
            ar: common::api_resource(),
            etcd,
            key_prefix: Vec::new(),
        };
        common::ensure_crd(&cluster.client).await?;
        cluster.remove_namespaces(None).await?;
        cluster.key_prefix = cluster.probe_layout().await?;
        let stale = cluster
            .etcd
            .delete_prefix(&[cluster.key_prefix.as_slice(), NS_PREFIX.as_bytes()].concat())
            .await?;
        if stale > 0 {
            eprintln!("cleanup: removed {stale} objects left by an earlier run");
        }
        Ok(cluster)
    }

    fn api(&self, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), ns, &self.ar)
    }

    async fn create_namespace(&self, ns: &str) -> Result<()> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let object: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
        match namespaces.create(&PostParams::default(), &object).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 409) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("creating namespace {ns}")),
        }
    }

    /// Deletes namespace `only`, or every `bench-scale-*` one. No controller-manager runs,
    /// so a deleted namespace would stay Terminating for ever: its key goes from etcd too.
    async fn remove_namespaces(&self, only: Option<&str>) -> Result<()> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let names: Vec<String> = match only {
            Some(ns) => vec![ns.to_string()],
            None => namespaces
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .filter_map(|n| n.metadata.name)
                .filter(|n| n.starts_with(NS_PREFIX))
                .collect(),
        };
        for ns in names {
            match namespaces.delete(&ns, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
                Err(e) => return Err(e).with_context(|| format!("deleting namespace {ns}")),
            }
            self.etcd
                .delete_key(format!("/registry/namespaces/{ns}").as_bytes())
                .await?;
        }
        Ok(())
    }

    /// Creates one object through the API server and finds its etcd key; returns the key
    /// prefix of the kind. Also checks the stored value is the JSON the seeding writes.
    async fn probe_layout(&self) -> Result<Vec<u8>> {
        self.create_namespace(PROBE_NS).await?;
        let api = self.api(PROBE_NS);
        let mut object: DynamicObject = serde_json::from_value(common::object(PROBE_NS, 0))?;
        object.metadata.name = Some("probe".into());
        // Established does not mean every API server path serves the kind yet.
        let deadline = Deadline::new("the API server to serve BenchWidgets", secs(30));
        loop {
            match api.create(&PostParams::default(), &object).await {
                Ok(_) => break,
                Err(e) if is_status(&e, 409) => break,
                Err(e) => deadline.check(|| e.to_string())?,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let guess = format!("/registry/{}/{}/", common::GROUP, common::PLURAL).into_bytes();
        let suffix = format!("/{PROBE_NS}/probe");
        let mut found = self
            .etcd
            .range(&[guess.as_slice(), PROBE_NS.as_bytes()].concat(), false)
            .await?;
        if found.is_empty() {
            // Not the usual layout (an --etcd-prefix?): look for the key among all of them.
            let all = self.etcd.range(b"/", true).await?;
            let key = all
                .into_iter()
                .map(|(k, _)| k)
                .find(|k| k.ends_with(suffix.as_bytes()))
                .ok_or_else(|| anyhow!("the probe object's etcd key was not found"))?;
            found = self.etcd.range(&key, false).await?;
        }
        let (key, value) = found
            .into_iter()
            .find(|(k, _)| k.ends_with(suffix.as_bytes()))
            .ok_or_else(|| anyhow!("the probe object's etcd key was not found"))?;
        let stored: Value = serde_json::from_slice(&value).context(
            "the stored custom resource is not JSON (a storage encoding this program cannot seed)",
        )?;
        if stored["metadata"]["uid"].as_str().is_none()
            || !stored["metadata"]["resourceVersion"].is_null()
        {
            bail!("unexpected stored object shape: {stored}");
        }
        api.delete("probe", &DeleteParams::default()).await?;
        let key_prefix = key[..key.len() - suffix.len() + 1].to_vec();
        Ok(key_prefix)
    }

    /// Writes objects `0..n` of `ns` straight into etcd.
    async fn seed(&self, ns: &str, n: usize) -> Result<Duration> {
        let started = Instant::now();
        let uid_head = format!(
            "{:08x}-{:04x}",
            rand::random::<u32>(),
            rand::random::<u16>()
        );
        let batches = n.div_ceil(PUTS_PER_TXN);
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..SEED_CONNECTIONS {
            let (etcd, next, ns, uid_head) = (
                self.etcd.clone(),
                next.clone(),
                ns.to_string(),
                uid_head.clone(),
            );
            let prefix = [self.key_prefix.as_slice(), ns.as_bytes(), b"/"].concat();
            tasks.push(tokio::spawn(async move {
                loop {
                    let batch = next.fetch_add(1, Ordering::Relaxed);
                    if batch >= batches {
                        return Ok::<_, anyhow::Error>(());
                    }
                    let mut kvs = Vec::with_capacity(PUTS_PER_TXN);
                    for i in batch * PUTS_PER_TXN..((batch + 1) * PUTS_PER_TXN).min(n) {
                        let mut object = common::served_object(&ns, i, 0, 0);
                        let meta = object["metadata"].as_object_mut().expect("metadata");
                        meta.remove("resourceVersion");
                        meta.insert("uid".into(), json!(format!("{uid_head}-4000-8000-{i:012}")));
                        let mut value = serde_json::to_vec(&object)?;
                        value.push(b'\n');
                        kvs.push(([prefix.as_slice(), name(i).as_bytes()].concat(), value));
                    }
                    etcd.put_all(&kvs).await?;
                    if batch % 100 == 99 {
                        eprintln!("  seeded {} of {n}", (batch + 1) * PUTS_PER_TXN);
                    }
                }
            }));
        }
        for task in tasks {
            task.await??;
        }
        Ok(started.elapsed())
    }

    /// Lists `ns` page by page as crbridge does; time, count and mean object size (JSON).
    async fn plain_list(&self, ns: &str) -> Result<(Duration, usize, usize)> {
        let api = self.api(ns);
        let started = Instant::now();
        let mut params = ListParams::default().limit(PAGE_SIZE);
        let (mut count, mut first_page) = (0, None);
        loop {
            let page = api.list(&params).await?;
            count += page.items.len();
            let token = page.metadata.continue_.clone().filter(|c| !c.is_empty());
            if first_page.is_none() {
                first_page = Some(page.items);
            }
            match token {
                Some(token) => params.continue_token = Some(token),
                None => break,
            }
        }
        let elapsed = started.elapsed();
        let first_page = first_page.unwrap_or_default();
        let bytes: usize = first_page
            .iter()
            .map(|o| serde_json::to_vec(o).map(|v| v.len()).unwrap_or(0))
            .sum();
        Ok((elapsed, count, bytes / first_page.len().max(1)))
    }

    /// Merge-patches objects `indices` of `ns` (1–3 spec fields each, starting at version
    /// `version_base`), a few in flight at once.
    async fn patch(&self, ns: &str, indices: &[usize], version_base: u64) -> Result<Duration> {
        let api = self.api(ns);
        let started = Instant::now();
        let api = &api;
        futures::stream::iter(indices.iter().enumerate())
            .map(|(j, &i)| async move {
                let patch = common::update_patch(i, version_base + (j % 3) as u64);
                let params = PatchParams::default();
                api.patch(&name(i), &params, &Patch::Merge(&patch))
                    .await
                    .with_context(|| format!("patching {ns}/{}", name(i)))
            })
            .buffer_unordered(PATCH_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(started.elapsed())
    }

    async fn remove(&self, ns: &str) -> Result<u64> {
        let deleted = self
            .etcd
            .delete_prefix(&[self.key_prefix.as_slice(), ns.as_bytes(), b"/"].concat())
            .await?;
        self.remove_namespaces(Some(ns)).await?;
        Ok(deleted)
    }
}

// ---------------------------------------------------------------------------------------
// The crbridge process.

struct Metrics(String);

impl Metrics {
    /// Sum of the samples of `name` whose labels include `label` (all if `None`).
    fn get(&self, name: &str, label: Option<(&str, &str)>) -> f64 {
        let want = label.map(|(k, v)| format!("{k}=\"{v}\""));
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let (metric, labels) = match series.split_once('{') {
                    Some((m, rest)) => (m, rest.trim_end_matches('}')),
                    None => (series, ""),
                };
                if metric != name {
                    return None;
                }
                if let Some(want) = &want {
                    if !labels.split(',').any(|l| l == want) {
                        return None;
                    }
                }
                value.parse::<f64>().ok()
            })
            .sum()
    }

    fn published(&self) -> u64 {
        self.get("crbridge_events_published_total", Some(("sink", SINK))) as u64
    }
    fn written(&self) -> u64 {
        self.get("crbridge_events_total", Some(("watch", WATCH))) as u64
    }
    fn observed(&self) -> u64 {
        self.get("crbridge_events_observed_total", Some(("watch", WATCH))) as u64
    }
    fn relists(&self) -> u64 {
        self.get("crbridge_relists_total", Some(("watch", WATCH))) as u64
    }
    fn gone(&self) -> u64 {
        self.get("crbridge_watch_gone_total", Some(("watch", WATCH))) as u64
    }
    fn inferred(&self) -> u64 {
        self.get("crbridge_events_inferred_total", Some(("watch", WATCH))) as u64
    }
}

/// A crbridge config watching `ns` into the stdout sink.
fn write_config(dir: &Path, ns: &str, cache: &Option<String>) -> Result<PathBuf> {
    let kubeconfig = std::env::var("KUBECONFIG").context("KUBECONFIG not set")?;
    let cache = cache
        .as_ref()
        .map(|c| format!("  cacheBytes: {c}\n"))
        .unwrap_or_default();
    let text = format!(
        "cluster: bench\nkubeconfig: {kubeconfig}\nstate:\n  path: {state}\n{cache}\
         http:\n  listen: 127.0.0.1:0\nwatches:\n  - name: {WATCH}\n    group: {group}\n    \
         version: v1\n    kind: {kind}\n    namespaces: [{ns}]\n    initial: snapshot\n    \
         sinks: [{SINK}]\nsinks:\n  {SINK}:\n    type: stdout\n",
        state = dir.join("state").display(),
        group = common::GROUP,
        kind = common::KIND,
    );
    let path = dir.join("crbridge.yaml");
    std::fs::write(&path, text)?;
    Ok(path)
}

struct Bridge {
    child: Child,
    pid: u32,
    log: PathBuf,
    metrics_addr: String,
    spawned: Instant,
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

impl Bridge {
    /// Spawns `crbridge run`, stdout to `events` (or /dev/null), JSON logs to `log`, and
    /// waits for its HTTP address in the log.
    async fn start(bin: &Path, config: &Path, events: Option<&Path>, log: &Path) -> Result<Bridge> {
        let stdout = match events {
            Some(path) => Stdio::from(std::fs::File::create(path)?),
            None => Stdio::null(),
        };
        let stderr = Stdio::from(std::fs::File::create(log)?);
        let spawned = Instant::now();
        let child = Command::new(bin)
            .args(["run", "-c"])
            .arg(config)
            .env("CRBRIDGE_LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("crbridge exited at once"))?;
        let mut bridge = Bridge {
            child,
            pid,
            log: log.to_path_buf(),
            metrics_addr: String::new(),
            spawned,
        };
        let deadline = Deadline::new("crbridge's \"http listening\" log line", secs(60));
        loop {
            bridge.check_alive()?;
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let addr = text
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|l| l["message"] == "http listening")
                .and_then(|l| l["addr"].as_str().map(String::from));
            if let Some(addr) = addr {
                bridge.metrics_addr = addr;
                return Ok(bridge);
            }
            deadline.check(|| format!("log: {}", log_tail(log)))?;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "crbridge exited ({status}); end of its log {}:\n{}",
                self.log.display(),
                log_tail(&self.log)
            );
        }
        Ok(())
    }

    async fn metrics(&mut self) -> Result<Metrics> {
        self.check_alive()?;
        let (status, body) = http(&self.metrics_addr, "GET", "/metrics", b"").await?;
        if status != 200 {
            bail!("crbridge /metrics: HTTP {status}");
        }
        Ok(Metrics(String::from_utf8(body)?))
    }

    fn rss(&self) -> Result<(u64, u64)> {
        common::rss_kib(self.pid).ok_or_else(|| anyhow!("crbridge pid {} gone", self.pid))
    }

    async fn kill9(mut self) -> Result<()> {
        self.child.start_kill()?;
        tokio::time::timeout(secs(10), self.child.wait())
            .await
            .map_err(|_| anyhow!("crbridge did not die within 10 s of SIGKILL"))??;
        Ok(())
    }

    /// SIGTERM, and the exit it promises (drain up to 10 s, flush).
    async fn stop(mut self) -> Result<()> {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -TERM {} failed", self.pid);
        }
        let exit = tokio::time::timeout(secs(60), self.child.wait())
            .await
            .map_err(|_| anyhow!("crbridge did not exit within 60 s of SIGTERM"))??;
        if !exit.success() {
            eprintln!(
                "warning: crbridge exited with {exit} after SIGTERM; log {}",
                self.log.display()
            );
        }
        Ok(())
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

// ---------------------------------------------------------------------------------------
// Measurements.

struct Memory {
    n: usize,
    cache: String,
    steady_kib: u64,
    peak_kib: u64,
    /// `RssAnon` and `RssFile` of the steady reading (heap vs. mapped binary and files).
    anon_kib: u64,
    file_kib: u64,
    /// From spawn until all N snapshot events were published.
    initial: Duration,
}

/// Starts crbridge on a fresh state directory in `dir`, waits until the initial snapshot of
/// `n` objects is published and the counter stands still, then reads its memory. The bridge
/// is handed back still running.
async fn measure_memory(
    bin: &Path,
    dir: &Path,
    ns: &str,
    n: usize,
    cache: &Option<String>,
) -> Result<(Memory, Bridge, PathBuf)> {
    let config = write_config(dir, ns, cache)?;
    let mut bridge = Bridge::start(bin, &config, None, &dir.join("crbridge-initial.log")).await?;
    let deadline = Deadline::new(
        format!("crbridge to publish the {n} snapshot events"),
        secs(120) + Duration::from_millis(3 * n as u64),
    );
    let (mut last, mut still, mut initial) = (u64::MAX, 0, None);
    loop {
        tokio::time::sleep(SAMPLE).await;
        let published = bridge.metrics().await?.published();
        if initial.is_none() && published >= n as u64 {
            initial = Some(bridge.spawned.elapsed());
        }
        still = if published == last { still + 1 } else { 0 };
        last = published;
        if published >= n as u64 && still >= 2 {
            break;
        }
        deadline.check(|| format!("{published} published"))?;
    }
    if last != n as u64 {
        eprintln!("warning: {last} events published for {n} objects");
    }
    // Idle-ish now: let background work (sled flushes, allocator) settle.
    let mut rss = bridge.rss()?;
    for _ in 0..10 {
        tokio::time::sleep(SAMPLE).await;
        rss = bridge.rss()?;
    }
    let [anon_kib, file_kib] =
        common::status_kib(bridge.pid, ["RssAnon:", "RssFile:"]).unwrap_or_default();
    let memory = Memory {
        n,
        cache: cache.clone().unwrap_or_else(|| "default (64MiB)".into()),
        steady_kib: rss.0,
        peak_kib: rss.1,
        anon_kib,
        file_kib,
        initial: initial.unwrap_or_default(),
    };
    Ok((memory, bridge, config))
}

/// The client-go peer with `n` objects in its informer.
struct PeerMemory {
    steady_kib: u64,
    peak_kib: u64,
    anon_kib: u64,
    file_kib: u64,
    /// From spawn until all N Add events were published.
    initial: Duration,
}

/// Starts the peer on `ns` with its stdout sink, waits until its N Add events are
/// published and the counter stands still, then reads its memory as [`measure_memory`]
/// reads crbridge's.
async fn measure_peer(bin: &Path, dir: &Path, ns: &str, n: usize) -> Result<PeerMemory> {
    let spawned = Instant::now();
    let sink = common::peer::PeerSink::Stdout;
    let mut peer = common::peer::Peer::start(bin, &common::gvr(), ns, &sink, dir).await?;
    let deadline = Deadline::new(
        format!("the client-go peer to publish the {n} Add events"),
        secs(120) + Duration::from_millis(3 * n as u64),
    );
    let (mut last, mut still, mut initial) = (u64::MAX, 0, None);
    loop {
        tokio::time::sleep(SAMPLE).await;
        let (published, _) = peer.counts(None).await?;
        if initial.is_none() && published >= n as u64 {
            initial = Some(spawned.elapsed());
        }
        still = if published == last { still + 1 } else { 0 };
        last = published;
        if published >= n as u64 && still >= 2 {
            break;
        }
        deadline.check(|| format!("{published} published; log:\n{}", peer.log_tail()))?;
    }
    if last != n as u64 {
        eprintln!("warning: the peer published {last} events for {n} objects");
    }
    let pid = peer.pid();
    let read = || common::rss_kib(pid).ok_or_else(|| anyhow!("peer pid {pid} gone"));
    let mut rss = read()?;
    for _ in 0..10 {
        tokio::time::sleep(SAMPLE).await;
        rss = read()?;
    }
    let [anon_kib, file_kib] =
        common::status_kib(pid, ["RssAnon:", "RssFile:"]).unwrap_or_default();
    let (exit, totals) = peer.stop().await?;
    if exit != "0" {
        eprintln!("warning: the peer exited with {exit} ({totals})");
    }
    Ok(PeerMemory {
        steady_kib: rss.0,
        peak_kib: rss.1,
        anon_kib,
        file_kib,
        initial: initial.unwrap_or_default(),
    })
}

struct Reflector {
    steady_kib: u64,
    peak_kib: u64,
    synced: Duration,
}

/// This binary as `reflector <ns> <n>`: RSS once its store holds `n` objects and settled.
async fn measure_reflector(ns: &str, n: usize) -> Result<Reflector> {
    let started = Instant::now();
    let mut child = Command::new(std::env::current_exe()?)
        .args(["reflector", ns, &n.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| anyhow!("reflector exited at once"))?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let limit = secs(120) + Duration::from_millis(2 * n as u64);
    let line = tokio::time::timeout(limit, lines.next_line())
        .await
        .map_err(|_| anyhow!("timed out after {limit:?} waiting for the reflector to hold {n}"))??
        .ok_or_else(|| anyhow!("the reflector exited before holding {n} objects"))?;
    if line.trim() != format!("synced {n}") {
        bail!("reflector said {line:?}, expected \"synced {n}\"");
    }
    let synced = started.elapsed();
    // Settled: RSS changes by less than 1% over a second (at most 15 s).
    let read = || common::rss_kib(pid).ok_or_else(|| anyhow!("reflector pid {pid} gone"));
    let mut prev = read()?;
    for _ in 0..15 {
        tokio::time::sleep(secs(1)).await;
        let now = read()?;
        let stable = now.0.abs_diff(prev.0) * 100 < prev.0;
        prev = now;
        if stable {
            break;
        }
    }
    child.start_kill()?;
    let _ = child.wait().await;
    Ok(Reflector {
        steady_kib: prev.0,
        peak_kib: prev.1,
        synced,
    })
}

/// The baseline process: a kube-rs reflector store of `ns`'s BenchWidgets.
async fn reflector_main(ns: &str, n: usize) -> Result<()> {
    let client = Client::try_default().await?;
    let ar = common::api_resource();
    let api: Api<DynamicObject> = Api::namespaced_with(client, ns, &ar);
    let writer = reflector::store::Writer::new(ar);
    let store = writer.as_reader();
    let stream = reflector::reflector(writer, watcher::watcher(api, watcher::Config::default()));
    let mut stream = std::pin::pin!(stream);
    let mut told = false;
    while let Some(event) = stream.next().await {
        if let Err(e) = event {
            eprintln!("reflector: watcher error: {e}");
            tokio::time::sleep(secs(1)).await;
            continue;
        }
        if !told && store.len() >= n {
            println!("synced {}", store.len());
            use std::io::Write;
            std::io::stdout().flush()?;
            told = true;
        }
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Resume,
    Relist,
}

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Variant::Resume => "resume",
            Variant::Relist => "relist (etcd compacted: 410 Gone)",
        }
    }
}

struct CatchUp {
    variant: Variant,
    /// `state.cacheBytes` of the instance.
    cache: String,
    changes: usize,
    patch_time: Duration,
    /// Spawn to `changes` events published.
    delivered: Duration,
    /// Spawn to the watch settled (resumed, or relisted every object).
    settled: Duration,
    written: u64,
    published: u64,
    lines: usize,
    distinct_changed: usize,
    unchanged_objects: usize,
    inferred: u64,
    relists: u64,
    gone: u64,
    /// `VmRSS` and `VmHWM` of the restarted process once settled.
    rss_kib: u64,
    peak_kib: u64,
}

impl CatchUp {
    fn exact(&self) -> bool {
        let c = self.changes;
        self.written == c as u64
            && self.published == c as u64
            && self.lines == c
            && self.distinct_changed == c
            && self.unchanged_objects == 0
    }
    fn path_ok(&self) -> bool {
        match self.variant {
            Variant::Resume => self.relists == 0 && self.gone == 0,
            Variant::Relist => self.relists >= 1 && self.gone >= 1,
        }
    }
}

/// Kills `bridge`, changes objects `indices`, (compacts), restarts on the same state and
/// measures the catch-up. Returns the restarted bridge.
#[allow(clippy::too_many_arguments)]
async fn catch_up(
    cluster: &Cluster,
    bin: &Path,
    work: &Path,
    config: &Path,
    bridge: Bridge,
    ns: &str,
    n: usize,
    indices: &[usize],
    version_base: u64,
    variant: Variant,
) -> Result<(CatchUp, Bridge)> {
    let changes = indices.len();
    bridge.kill9().await?;
    let patch_time = cluster.patch(ns, indices, version_base).await?;
    eprintln!(
        "  {changes} objects patched in {:.1} s while crbridge was down",
        patch_time.as_secs_f64()
    );
    if variant == Variant::Relist {
        let revision = cluster.etcd.compact().await?;
        eprintln!("  etcd compacted at revision {revision}");
    }
    let tag = if variant == Variant::Resume {
        "resume"
    } else {
        "relist"
    };
    let events = work.join(format!("events-{tag}.jsonl"));
    let mut bridge = Bridge::start(
        bin,
        config,
        Some(&events),
        &work.join(format!("crbridge-{tag}.log")),
    )
    .await?;
    let deadline = Deadline::new(
        format!("{changes} events published after the restart ({tag})"),
        secs(120) + Duration::from_millis(2 * n as u64),
    );
    let delivered = loop {
        let metrics = bridge.metrics().await?;
        if metrics.published() >= changes as u64 {
            break bridge.spawned.elapsed();
        }
        deadline.check(|| format!("{} published", metrics.published()))?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Settled: the watch saw what it must (the changes, or every object of the relist) and
    // the counters stood still for 2 s.
    let must_observe = match variant {
        Variant::Resume => changes,
        Variant::Relist => n,
    } as u64;
    let deadline = Deadline::new(format!("crbridge to settle ({tag})"), deadline.limit);
    let (mut last, mut still, mut settled) = ((0, 0, 0), 0, None);
    let metrics = loop {
        let metrics = bridge.metrics().await?;
        let now = (metrics.published(), metrics.written(), metrics.observed());
        if settled.is_none() && now.2 >= must_observe {
            settled = Some(bridge.spawned.elapsed());
        }
        still = if now == last { still + 1 } else { 0 };
        last = now;
        if now.2 >= must_observe && still >= 4 {
            break metrics;
        }
        deadline.check(|| format!("published, written, observed = {now:?}"))?;
        tokio::time::sleep(SAMPLE).await;
    };
    let (rss_kib, peak_kib) = bridge.rss()?;
    // What a consumer got: one line per event.
    let text = std::fs::read_to_string(&events)?;
    let changed: HashSet<String> = indices
        .iter()
        .map(|&i| format!("{ns}/{}", name(i)))
        .collect();
    let mut seen = HashSet::new();
    let mut unchanged = HashSet::new();
    let mut lines = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        lines += 1;
        let event: Value = serde_json::from_str(line).context("a sink line is not JSON")?;
        let subject = event["subject"].as_str().unwrap_or_default().to_string();
        if changed.contains(&subject) {
            seen.insert(subject);
        } else {
            unchanged.insert(subject);
        }
    }
    let result = CatchUp {
        variant,
        cache: String::new(),
        changes,
        patch_time,
        delivered,
        settled: settled.unwrap_or_default(),
        written: metrics.written(),
        published: metrics.published(),
        lines,
        distinct_changed: seen.len(),
        unchanged_objects: unchanged.len(),
        inferred: metrics.inferred(),
        relists: metrics.relists(),
        gone: metrics.gone(),
        rss_kib,
        peak_kib,
    };
    Ok((result, bridge))
}

// ---------------------------------------------------------------------------------------
// Report.

struct Row {
    what: String,
    figure: String,
    baseline: String,
    ratio: String,
    target: String,
    pass: Option<bool>,
}

fn verdict(pass: Option<bool>) -> &'static str {
    match pass {
        Some(true) => "PASS",
        Some(false) => "MISS",
        None => "—",
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 * 1024.0 / MIB)
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let ram_kib: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim());
    format!(
        "{cores} cores ({model}), {:.1} GiB RAM",
        ram_kib as f64 / 1024.0 / 1024.0
    )
}

#[allow(clippy::too_many_arguments)]
fn render(
    command: &str,
    opts: &Opts,
    seeds: &[(usize, Duration, usize)],
    memory: &[Memory],
    reflectors: &BTreeMap<usize, Reflector>,
    peers: &BTreeMap<usize, PeerMemory>,
    lists: &BTreeMap<usize, Vec<Duration>>,
    catchups: &[CatchUp],
    notes: &[String],
    total: Duration,
) -> (String, String) {
    let mut rows = Vec::new();
    for m in memory {
        let target = 40.0 * MIB + 512.0 * m.n as f64;
        let steady = m.steady_kib as f64 * 1024.0;
        rows.push(Row {
            what: format!("steady RSS, {} objects, cacheBytes {}", m.n, m.cache),
            figure: mib(m.steady_kib),
            baseline: "—".into(),
            ratio: "—".into(),
            target: format!("≤ 40 MiB + 0.5 KiB × N = {:.1} MiB", target / MIB),
            pass: Some(steady <= target),
        });
        if let Some(r) = reflectors.get(&m.n) {
            let ratio = m.steady_kib as f64 / r.steady_kib as f64;
            rows.push(Row {
                what: format!(
                    "steady RSS vs reflector, {} objects, cacheBytes {}",
                    m.n, m.cache
                ),
                figure: mib(m.steady_kib),
                baseline: format!("reflector {}", mib(r.steady_kib)),
                ratio: format!("{ratio:.2}×"),
                target: "≤ 0.2×".into(),
                pass: Some(ratio <= 0.2),
            });
        }
        if let Some(p) = peers.get(&m.n) {
            let ratio = m.steady_kib as f64 / p.steady_kib as f64;
            rows.push(Row {
                what: format!(
                    "steady RSS vs client-go peer, {} objects, cacheBytes {}",
                    m.n, m.cache
                ),
                figure: mib(m.steady_kib),
                baseline: format!("peer {}", mib(p.steady_kib)),
                ratio: format!("{ratio:.2}×"),
                target: "< 1× (below the peer)".into(),
                pass: Some(ratio < 1.0),
            });
        }
        rows.push(Row {
            what: format!(
                "peak RSS during the initial list, {} objects, cacheBytes {}",
                m.n, m.cache
            ),
            figure: mib(m.peak_kib),
            baseline: format!("steady {}", mib(m.steady_kib)),
            ratio: format!("+{}", mib(m.peak_kib.saturating_sub(m.steady_kib))),
            target: "≤ steady + 64 MiB".into(),
            pass: Some(m.peak_kib <= m.steady_kib + 64 * 1024),
        });
    }
    for c in catchups {
        let n = *lists.keys().last().unwrap_or(&0);
        let list = lists
            .get(&n)
            .and_then(|l| l.iter().min().copied())
            .unwrap_or_default();
        let ratio = c.delivered.as_secs_f64() / list.as_secs_f64().max(1e-9);
        rows.push(Row {
            what: format!(
                "catch-up, {}: {} changes of {n} objects, spawn → all delivered",
                c.variant.label(),
                c.changes
            ),
            figure: format!("{:.2} s", c.delivered.as_secs_f64()),
            baseline: format!("plain list {:.2} s", list.as_secs_f64()),
            ratio: format!("{ratio:.2}×"),
            target: "≤ 1.3×".into(),
            pass: Some(ratio <= 1.3),
        });
        rows.push(Row {
            what: format!("events after the restart, {}", c.variant.label()),
            figure: format!(
                "written {}, published {}, sink lines {} ({} changed objects, {} unchanged)",
                c.written, c.published, c.lines, c.distinct_changed, c.unchanged_objects
            ),
            baseline: format!("{} changes", c.changes),
            ratio: "—".into(),
            target: "exactly one per change, 0 for unchanged objects".into(),
            pass: Some(c.exact()),
        });
        rows.push(Row {
            what: format!("path taken, {}", c.variant.label()),
            figure: format!(
                "relists {}, 410 Gone {}, inferred events {}; settled {:.2} s after spawn",
                c.relists,
                c.gone,
                c.inferred,
                c.settled.as_secs_f64()
            ),
            baseline: "—".into(),
            ratio: "—".into(),
            target: match c.variant {
                Variant::Resume => "no relist".into(),
                Variant::Relist => "410 Gone, one relist".into(),
            },
            pass: Some(c.path_ok()),
        });
    }

    let mut text = String::new();
    let mut md = String::new();
    let when = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    let _ = writeln!(text, "bench_scale  {when}");
    let _ = writeln!(text, "machine: {}", machine());
    let _ = writeln!(text, "command: {command}");
    let _ = writeln!(
        md,
        "# bench_scale — memory and restart catch-up\n\n{when}; machine: {}\n\n```sh\n{command}\n```\n",
        machine()
    );
    let _ = writeln!(
        md,
        "Objects: {:?}; changes while down: {}; cacheBytes: {:?}\n",
        opts.objects,
        opts.changes,
        opts.cache
            .iter()
            .map(|c| c.clone().unwrap_or_else(|| "default".into()))
            .collect::<Vec<_>>()
    );
    let _ = writeln!(text);
    for r in &rows {
        let _ = writeln!(
            text,
            "{:<4} {}\n     {} | baseline {} | ratio {} | target {}",
            verdict(r.pass),
            r.what,
            r.figure,
            r.baseline,
            r.ratio,
            r.target
        );
    }
    let _ = writeln!(
        md,
        "| measurement | figure | baseline | ratio | target | result |\n|---|---|---|---|---|---|"
    );
    for r in &rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            r.what,
            r.figure,
            r.baseline,
            r.ratio,
            r.target,
            verdict(r.pass)
        );
    }

    let mut info = Vec::new();
    for (n, took, size) in seeds {
        info.push(format!(
            "seeded {n} objects (~{size} B each as served) into etcd in {:.1} s",
            took.as_secs_f64()
        ));
    }
    for m in memory {
        info.push(format!(
            "crbridge, {} objects, cacheBytes {}: initial snapshot all published {:.1} s after \
             spawn ({:.0} events/s); steady RSS {} = anonymous {} + file-backed {}",
            m.n,
            m.cache,
            m.initial.as_secs_f64(),
            m.n as f64 / m.initial.as_secs_f64().max(1e-9),
            mib(m.steady_kib),
            mib(m.anon_kib),
            mib(m.file_kib),
        ));
    }
    for (n, r) in reflectors {
        info.push(format!(
            "reflector with {n} objects: steady {}, peak {}, store full {:.1} s after spawn",
            mib(r.steady_kib),
            mib(r.peak_kib),
            r.synced.as_secs_f64()
        ));
    }
    for (n, p) in peers {
        info.push(format!(
            "client-go peer with {n} objects: steady {} = anonymous {} + file-backed {}, \
             peak {}, all {n} Add events published {:.1} s after spawn",
            mib(p.steady_kib),
            mib(p.anon_kib),
            mib(p.file_kib),
            mib(p.peak_kib),
            p.initial.as_secs_f64()
        ));
    }
    for (n, l) in lists {
        let runs: Vec<String> = l
            .iter()
            .map(|d| format!("{:.2} s", d.as_secs_f64()))
            .collect();
        info.push(format!(
            "plain paginated list of {n} objects ({PAGE_SIZE} per page): {}",
            runs.join(", ")
        ));
    }
    for c in catchups {
        info.push(format!(
            "{}: {} merge patches took {:.1} s while crbridge was down; the restarted \
             crbridge (cacheBytes {}), settled: RSS {}, peak {}",
            c.variant.label(),
            c.changes,
            c.patch_time.as_secs_f64(),
            c.cache,
            mib(c.rss_kib),
            mib(c.peak_kib)
        ));
    }
    info.extend(notes.iter().cloned());
    info.push(format!("total run time {:.0} s", total.as_secs_f64()));
    let _ = writeln!(text);
    let _ = writeln!(md);
    for i in &info {
        let _ = writeln!(text, "  {i}");
        let _ = writeln!(md, "* {i}");
    }
    (text, md)
}

// ---------------------------------------------------------------------------------------

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    common::load_local_env();
    if args.get(1).map(String::as_str) == Some("reflector") {
        let ns = args.get(2).context("reflector <ns> <n>")?;
        let n = args.get(3).context("reflector <ns> <n>")?.parse()?;
        return reflector_main(ns, n).await;
    }
    if let Some(verb @ ("seed" | "unseed")) = args.get(1).map(String::as_str) {
        return seed_main(verb, &args[2..]).await;
    }
    let opts = parse_opts(&args[1..])?;
    // Variables that change what is measured (crbridge inherits them) go in front.
    let env: String = std::env::vars()
        .filter(|(k, _)| k.starts_with("MIMALLOC_") || k == "CRBRIDGE_BIN")
        .map(|(k, v)| format!("{k}={v} "))
        .collect();
    let command = format!(
        "{env}cargo run --release --example bench_scale --{}",
        args[1..]
            .iter()
            .map(|a| format!(" {a}"))
            .collect::<String>()
    );
    let started = Instant::now();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = std::env::var_os("CRBRIDGE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/release/crbridge"));
    if !bin.exists() {
        bail!(
            "{} missing: cargo build --release --bin crbridge",
            bin.display()
        );
    }
    let peer = if opts.no_peer {
        None
    } else {
        Some(common::peer::binary(opts.peer.as_deref())?)
    };
    let work = root.join("target/bench-scale");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;

    let cluster = Cluster::connect().await?;
    let bins = Binaries {
        crbridge: bin,
        peer,
    };
    let result = run(&cluster, &opts, &bins, &work, &command, started).await;
    // Clean up whatever happened: 100k objects are ~0.5 GB in etcd.
    let mut cleanup = Ok(());
    for n in &opts.objects {
        if let Err(e) = cluster.remove(&format!("{NS_PREFIX}{n}")).await {
            cleanup = Err(e);
        }
    }
    if let Err(e) = cluster.remove(PROBE_NS).await {
        cleanup = Err(e);
    }
    // Drop the deleted objects' history too, so it does not linger in etcd.
    if let Err(e) = cluster.etcd.compact().await {
        cleanup = Err(e);
    }
    result?;
    cleanup.context("cleanup")
}

/// `seed <n>`: leaves `n` objects in namespace `bench-scale-<n>` for profiling a
/// `crbridge run` by hand (heap profiler, `perf`); `unseed <n>` removes them again.
async fn seed_main(verb: &str, args: &[String]) -> Result<()> {
    let n: usize = args
        .first()
        .context("seed <n> | unseed <n>")?
        .parse()
        .context("<n>: a count")?;
    let ns = format!("{NS_PREFIX}{n}");
    let cluster = Cluster::connect().await?;
    if verb == "unseed" {
        // Connecting already removed every seeded object and namespace.
        cluster.remove(PROBE_NS).await?;
        cluster.etcd.compact().await?;
        eprintln!("removed the objects of {ns}");
        return Ok(());
    }
    cluster.create_namespace(&ns).await?;
    let took = cluster.seed(&ns, n).await?;
    eprintln!(
        "seeded {n} objects into {ns} in {:.1} s; `bench_scale unseed {n}` removes them",
        took.as_secs_f64()
    );
    Ok(())
}

/// The programs under measurement.
struct Binaries {
    crbridge: PathBuf,
    /// The client-go peer; `None` with `--no-peer`.
    peer: Option<PathBuf>,
}

async fn run(
    cluster: &Cluster,
    opts: &Opts,
    bins: &Binaries,
    work: &Path,
    command: &str,
    started: Instant,
) -> Result<()> {
    let largest = *opts.objects.last().expect("checked");
    let mut seeds = Vec::new();
    let mut memory = Vec::new();
    let bin = bins.crbridge.as_path();
    let mut reflectors = BTreeMap::new();
    let mut peers = BTreeMap::new();
    let mut lists: BTreeMap<usize, Vec<Duration>> = BTreeMap::new();
    let mut catchups = Vec::new();
    let mut notes = Vec::new();

    for &n in &opts.objects {
        let ns = format!("{NS_PREFIX}{n}");
        eprintln!("[{n}] seeding namespace {ns}");
        cluster.create_namespace(&ns).await?;
        let took = cluster.seed(&ns, n).await?;
        let (list, count, size) = cluster.plain_list(&ns).await?;
        if count != n {
            bail!("a list of {ns} through the API server returned {count} objects, not {n}");
        }
        if !(3000..6000).contains(&size) {
            bail!("objects of {ns} are {size} bytes as served, not ~4 KiB");
        }
        eprintln!(
            "[{n}] seeded in {:.1} s; a list returns {count} objects of ~{size} B in {:.1} s",
            took.as_secs_f64(),
            list.as_secs_f64()
        );
        seeds.push((n, took, size));
        if n == largest {
            lists.entry(n).or_default().push(list);
        }

        for (k, cache) in opts.cache.iter().enumerate() {
            let dir = work.join(format!(
                "{n}-{}",
                cache.as_deref().unwrap_or("default").to_lowercase()
            ));
            std::fs::create_dir_all(&dir)?;
            eprintln!(
                "[{n}] crbridge initial snapshot, cacheBytes {}",
                cache.as_deref().unwrap_or("default")
            );
            let (m, bridge, config) = measure_memory(bin, &dir, &ns, n, cache).await?;
            eprintln!(
                "[{n}] steady RSS {} (anon {}, file {}), peak {}, initial {:.1} s",
                mib(m.steady_kib),
                mib(m.anon_kib),
                mib(m.file_kib),
                mib(m.peak_kib),
                m.initial.as_secs_f64()
            );
            memory.push(m);
            if n == largest && k == 0 {
                let stride = n / opts.changes;
                let resume: Vec<usize> = (0..opts.changes).map(|j| j * stride).collect();
                let relist: Vec<usize> = (0..opts.changes).map(|j| j * stride + 1).collect();
                let mut bridge = bridge;
                for (variant, indices, base) in
                    [(Variant::Resume, &resume, 1), (Variant::Relist, &relist, 4)]
                {
                    eprintln!("[{n}] catch-up, {}", variant.label());
                    let (mut c, b) = catch_up(
                        cluster, bin, &dir, &config, bridge, &ns, n, indices, base, variant,
                    )
                    .await?;
                    c.cache = cache.as_deref().unwrap_or("default").to_string();
                    eprintln!(
                        "[{n}] delivered {:.2} s after spawn; written {}, published {}, lines {}",
                        c.delivered.as_secs_f64(),
                        c.written,
                        c.published,
                        c.lines
                    );
                    catchups.push(c);
                    bridge = b;
                }
                bridge.stop().await?;
            } else {
                bridge.stop().await?;
            }
            let state_bytes = dir_size(&dir.join("state"));
            notes.push(format!(
                "state directory after {n} objects (cacheBytes {}): {:.0} MiB on disk",
                cache.as_deref().unwrap_or("default"),
                state_bytes as f64 / MIB
            ));
            let _ = std::fs::remove_dir_all(dir.join("state"));
        }

        eprintln!("[{n}] kube-rs reflector baseline");
        let r = measure_reflector(&ns, n).await?;
        eprintln!(
            "[{n}] reflector steady {}, peak {}",
            mib(r.steady_kib),
            mib(r.peak_kib)
        );
        reflectors.insert(n, r);
        if let Some(peer) = &bins.peer {
            eprintln!("[{n}] client-go peer baseline");
            let p = measure_peer(peer, &work.join(format!("{n}-peer")), &ns, n).await?;
            eprintln!(
                "[{n}] peer steady {} (anon {}, file {}), peak {}, initial {:.1} s",
                mib(p.steady_kib),
                mib(p.anon_kib),
                mib(p.file_kib),
                mib(p.peak_kib),
                p.initial.as_secs_f64()
            );
            peers.insert(n, p);
        }
        if n == largest {
            let (list, count, _) = cluster.plain_list(&ns).await?;
            if count != n {
                bail!("the second list of {ns} returned {count} objects, not {n}");
            }
            lists.entry(n).or_default().push(list);
        }
        let deleted = cluster.remove(&ns).await?;
        eprintln!("[{n}] removed {deleted} objects and namespace {ns}");
    }

    let (text, md) = render(
        command,
        opts,
        &seeds,
        &memory,
        &reflectors,
        &peers,
        &lists,
        &catchups,
        &notes,
        started.elapsed(),
    );
    println!("{text}");
    let path = work.parent().expect("target").join("bench-scale.md");
    std::fs::write(&path, md)?;
    println!("written to {}", path.display());
    Ok(())
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
