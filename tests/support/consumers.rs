//! Drives the consumer examples under `examples/consumers/<lang>/` (README, "For consumers")
//! against the real servers: the same workload for every language, the example run as a
//! user would (`run`, which prepares a cached build when needed), and its one-line JSON
//! summary checked against what the API server holds.

use std::collections::BTreeMap;
use std::future::Future;
use std::process::Stdio;
use std::time::Duration;

use kube::api::{DeleteParams, DynamicObject};
use kube::Api;
use serde::Deserialize;
use serde_json::json;

use super::bridge::{run_cli, Bridge};

/// Objects the workload creates; the first two are updated twice, the second is deleted.
pub const NAMES: [&str; 3] = ["a", "b", "c"];
/// Events of [`Workload::changes`]: 3 created, 4 updated.
pub const CHANGES: usize = 7;
/// `updated` events of [`Workload::changes`]: each carries a patch the consumer checks.
pub const UPDATES: usize = 4;
/// Distinct events of the whole workload: the changes and one deletion.
pub const EVENTS: usize = CHANGES + 1;

/// How long crbridge may take to connect and to publish.
const WAIT: Duration = Duration::from_secs(30);
/// How long the example may wait for its events (`CONSUMER_TIMEOUT_SECS`).
const CONSUMER_SECS: u64 = 60;
/// The whole subprocess, a cold `prepare` (a dependency download) included.
const RUN_LIMIT: Duration = Duration::from_secs(600);

/// The consumer's state of one object, as its summary prints it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Kept {
    pub name: String,
    pub namespace: String,
    pub sequence: String,
    pub deleted: bool,
}

/// The one JSON line a consumer example prints at the end.
#[derive(Debug, Clone, Deserialize)]
pub struct Summary {
    pub lang: String,
    pub events: usize,
    pub duplicates: usize,
    pub stale: usize,
    pub patched: usize,
    pub unchecked: usize,
    pub mismatches: usize,
    pub objects: BTreeMap<String, Kept>,
}

/// A finished consumer run.
#[derive(Debug)]
pub struct Outcome {
    pub success: bool,
    pub summary: Summary,
    /// Its log, for failure messages.
    pub stderr: String,
}

/// `examples/consumers/{lang}/run`.
pub fn run_script(lang: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/consumers")
        .join(lang)
        .join("run")
}

/// Runs the `lang` example with `env` (CONSUMER_EXPECT and the broker's variables) and a
/// consumer timeout of [`CONSUMER_SECS`]; panics, with its log, when it does not finish
/// within [`RUN_LIMIT`] or prints no summary. The limit covers a cold `prepare` too;
/// `deploy/local/up` prepares every example so a test run normally finds them built.
pub async fn run(lang: &str, env: &[(&str, String)]) -> Outcome {
    use tokio::io::AsyncReadExt;
    let script = run_script(lang);
    // Stderr goes to a file so that it is still there when the process must be killed.
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = tokio::process::Command::new(&script)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("CONSUMER_TIMEOUT_SECS", CONSUMER_SECS.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log.reopen().unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", script.display()));
    let mut out = child.stdout.take().unwrap();
    let read = tokio::spawn(async move {
        let mut s = String::new();
        out.read_to_string(&mut s).await.map(|_| s)
    });
    let stderr = || std::fs::read_to_string(log.path()).unwrap_or_default();
    let status = match tokio::time::timeout(RUN_LIMIT, child.wait()).await {
        Ok(status) => status.unwrap_or_else(|e| panic!("waiting for the {lang} consumer: {e}")),
        Err(_) => {
            let _ = child.kill().await;
            panic!(
                "the {lang} consumer did not finish within {RUN_LIMIT:?} (a first run downloads \
                 its dependencies: run examples/consumers/{lang}/prepare once to see why); its \
                 stderr:\n{}",
                stderr()
            );
        }
    };
    let stdout = read
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("reading the {lang} consumer's stdout: {e}"));
    let line = stdout.lines().rev().find(|l| l.starts_with('{'));
    let summary: Summary = line
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "the {lang} consumer ({status}) printed no JSON summary; stdout:\n{stdout}\nstderr:\n{}",
                stderr()
            )
        });
    assert_eq!(summary.lang, lang, "summary of another language: {line:?}");
    Outcome {
        success: status.success(),
        summary,
        stderr: stderr(),
    }
}

/// The workload every consumer test runs, on its own CRD, namespace and crbridge state.
pub struct Workload {
    pub api: Api<DynamicObject>,
    pub crd: super::TestCrd,
    pub ns: String,
    pub dir: tempfile::TempDir,
}

/// What the consumer should hold at the end of [`Workload::run`].
pub struct Expected {
    /// The live objects per uid (from [`Workload::live`], taken after the deletion).
    pub live: BTreeMap<String, Kept>,
    /// `b`'s uid and its state before the deletion.
    pub b_uid: String,
    pub b_before_delete: Kept,
}

impl Workload {
    /// A fresh CRD, namespace and state directory.
    pub async fn new(prefix: &str) -> Workload {
        let client = super::kube_client().await;
        let crd = super::crd(&client, "Widget").await;
        let ns = super::namespace(&client, prefix).await;
        Workload {
            api: Api::namespaced_with(client, &ns, &crd.resource),
            crd,
            ns,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Starts crbridge with the one sink `name` described by `sink_yaml` (lines under
    /// `sinks:`), its admin endpoint on a fixed port so that `status` and `replay` find the
    /// running instance; returns once the sink is connected.
    pub async fn bridge(&self, name: &str, sink_yaml: &str) -> Bridge {
        let yaml =
            super::config_with_sinks(self.dir.path(), &self.crd, &self.ns, &[name], sink_yaml, "")
                .replace(
                    "admin:\n  listen: 127.0.0.1:0",
                    &format!("admin:\n  listen: 127.0.0.1:{}", super::free_port()),
                );
        let mut bridge = Bridge::new(self.dir.path(), &yaml);
        bridge.start();
        bridge.wait_logged("sink connected", WAIT).await;
        bridge
    }

    /// The whole workload through `bridge`: [`Workload::changes`], then `duplicate` (which
    /// puts copies of events already published into the broker), then [`Workload::delete`],
    /// each step published before the next.
    pub async fn run<F, Fut>(&self, bridge: &Bridge, duplicate: F) -> Expected
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = ()>,
    {
        self.changes().await;
        wait_published(bridge, CHANGES).await;
        let (b_uid, b_before_delete) = self
            .live()
            .await
            .into_iter()
            .find(|(_, k)| k.name == "b")
            .expect("b exists before its deletion");
        duplicate().await;
        self.delete().await;
        wait_published(bridge, EVENTS).await;
        Expected {
            live: self.live().await,
            b_uid,
            b_before_delete,
        }
    }

    /// Creates `a`, `b`, `c` and changes the spec of `a` and `b` twice ([`CHANGES`] events,
    /// [`UPDATES`] of them updates): fields and list items and map keys added, replaced and
    /// removed. A spec change also bumps `generation`, which the normalized form leaves out,
    /// so each patch says exactly what the test changed.
    pub async fn changes(&self) {
        for n in NAMES {
            super::create_widget(&self.api, &self.crd, n, json!({"size": 0, "color": "red"})).await;
        }
        for size in 1..=2 {
            for n in &NAMES[..2] {
                let spec = if size == 1 {
                    json!({"size": size, "labels": [n, "new"], "owner": {"tier": n}})
                } else {
                    json!({"size": size, "color": null, "labels": [n]})
                };
                super::patch_widget(&self.api, n, spec).await;
            }
        }
    }

    /// Deletes `b`, the event that comes after the duplicates: a consumer stops once it has
    /// [`EVENTS`] distinct ids, so whatever the test duplicated before it has been read too.
    pub async fn delete(&self) {
        self.api
            .delete("b", &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("delete b: {e}"));
    }

    /// What the consumer should hold per uid: the live objects at their resourceVersion.
    pub async fn live(&self) -> BTreeMap<String, Kept> {
        let list = self
            .api
            .list(&Default::default())
            .await
            .expect("listing the widgets");
        list.items
            .into_iter()
            .map(|o| {
                (
                    o.metadata.uid.clone().unwrap(),
                    Kept {
                        name: o.metadata.name.clone().unwrap(),
                        namespace: self.ns.clone(),
                        sequence: super::sequence_of(
                            o.metadata.resource_version.as_deref().unwrap(),
                        ),
                        deleted: false,
                    },
                )
            })
            .collect()
    }
}

/// Waits until the outbox of `bridge` holds `n` events and its (only) sink acknowledged all
/// of them.
pub async fn wait_published(bridge: &Bridge, n: usize) {
    let config = bridge.config.to_str().unwrap();
    super::eventually(
        &format!("crbridge to publish {n} events (status: last_seq and the sink's cursor)"),
        WAIT,
        || async {
            let (st, out, _) = run_cli(&["status", "-c", config, "--output", "json"]);
            let s: serde_json::Value = serde_json::from_str(&out).ok().filter(|_| st.success())?;
            (s["last_seq"] == n && s["sinks"][0]["cursor"] == n).then_some(())
        },
    )
    .await;
}

/// Duplicates by `crbridge replay`: every event published so far ([`CHANGES`]) again, with
/// its original id, to `sink` of the running `bridge`.
pub fn replay(bridge: &Bridge, sink: &str) {
    let config = bridge.config.to_str().unwrap();
    let (st, out, err) = run_cli(&["replay", "-c", config, "--sink", sink, "--from-seq", "1"]);
    assert!(st.success(), "replay failed: {err}");
    assert!(
        out.contains(&format!("replayed {CHANGES} events to sink {sink}")),
        "{out}"
    );
}

/// Asserts the outcome of a run over the whole workload: every distinct event, every patch
/// checked, at least `min_duplicates` duplicates skipped, and per object the state the API
/// server holds plus `b` deleted at a newer sequence than `b`'s last update.
pub fn assert_complete(outcome: &Outcome, expected: &Expected, min_duplicates: usize) {
    let Expected {
        live,
        b_uid,
        b_before_delete,
    } = expected;
    let s = &outcome.summary;
    let log = &outcome.stderr;
    assert!(
        outcome.success,
        "the {} consumer failed: {s:?}\n{log}",
        s.lang
    );
    assert_eq!(s.events, EVENTS, "distinct events: {s:?}\n{log}");
    assert_eq!(s.mismatches, 0, "patch mismatches: {s:?}\n{log}");
    assert_eq!(s.patched, UPDATES, "patches checked: {s:?}\n{log}");
    assert_eq!(s.unchecked, 0, "read from the start: {s:?}\n{log}");
    assert_eq!(s.stale, 0, "nothing goes back in time: {s:?}\n{log}");
    assert!(
        s.duplicates >= min_duplicates,
        "at least {min_duplicates} duplicates skipped: {s:?}\n{log}"
    );
    let mut want = live.clone();
    let b = s
        .objects
        .get(b_uid)
        .unwrap_or_else(|| panic!("no state for b ({b_uid}): {s:?}\n{log}"));
    assert!(b.deleted, "b is deleted: {b:?}");
    assert!(
        b.sequence > b_before_delete.sequence,
        "b's deletion is newer than its last update: {b:?} vs {b_before_delete:?}"
    );
    want.insert(
        b_uid.to_string(),
        Kept {
            sequence: b.sequence.clone(),
            deleted: true,
            ..b_before_delete.clone()
        },
    );
    assert_eq!(
        s.objects, want,
        "per-object state against the API server\n{log}"
    );
}

/// One hand-made event for [`synthetic`]: CloudEvents attributes (without a prefix) and
/// `data`, as crbridge would publish them in binary mode. `None`: a Kafka tombstone.
pub type Synthetic = Option<(Vec<(String, String)>, serde_json::Value)>;

fn synthetic_event(
    id: &str,
    change: &str,
    uid: &str,
    seq: u64,
    size: i64,
    patch: serde_json::Value,
) -> Synthetic {
    let attrs = [
        ("specversion", "1.0".to_string()),
        ("id", id.to_string()),
        (
            "source",
            "/clusters/test/apis/example.com/v1/widgets".to_string(),
        ),
        ("type", format!("io.crbridge.resource.{change}")),
        ("subject", format!("ns/{uid}")),
        ("partitionkey", uid.to_string()),
        ("sequence", format!("{seq:020}")),
        ("crbname", uid.to_string()),
        ("crbnamespace", "ns".to_string()),
        ("crbuid", uid.to_string()),
    ];
    let data = json!({
        "object": {
            "apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": uid, "namespace": "ns", "uid": uid,
                         "resourceVersion": seq.to_string(), "generation": seq},
            "spec": {"size": size},
            "status": {"observed": seq},
        },
        "patch": patch,
        "previousResourceVersion": null,
    });
    Some((
        attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        data,
    ))
}

/// A stream that exercises every counter of a consumer example, in this order: `u1`
/// created and updated (patched; status and the bookkeeping fields differ, which the
/// normalized form leaves out), a tombstone, the update again (duplicate), an older update
/// of `u1` (stale), an update of `u2` never seen created (unchecked), an update of `u1`
/// whose patch does not give its object (mismatch). [`SYNTHETIC_EVENTS`] distinct ids.
pub fn synthetic() -> Vec<Synthetic> {
    let size = |v: i64| json!([{"op": "replace", "path": "/spec/size", "value": v}]);
    let created = json!([{"op": "add", "path": "", "value": {}}]);
    let updated = synthetic_event("e2", "updated", "u1", 12, 2, size(2));
    vec![
        synthetic_event("e1", "created", "u1", 10, 1, created),
        updated.clone(),
        None,
        updated,
        synthetic_event("e3", "updated", "u1", 11, 5, size(5)),
        synthetic_event("e4", "updated", "u2", 7, 3, size(3)),
        synthetic_event("e5", "updated", "u1", 13, 4, size(3)),
    ]
}

/// Distinct ids in [`synthetic`].
pub const SYNTHETIC_EVENTS: usize = 5;

/// The verdict on [`synthetic`]: one of each, a failure exit (there is a mismatch), and
/// the state per uid.
pub fn assert_synthetic(outcome: &Outcome) {
    let s = &outcome.summary;
    let log = &outcome.stderr;
    assert!(!outcome.success, "a mismatch fails the run: {s:?}\n{log}");
    let counts = (
        s.events,
        s.duplicates,
        s.stale,
        s.patched,
        s.unchecked,
        s.mismatches,
    );
    assert_eq!(
        counts,
        (SYNTHETIC_EVENTS, 1, 1, 1, 1, 1),
        "(events, duplicates, stale, patched, unchecked, mismatches): {s:?}\n{log}"
    );
    let kept = |name: &str, seq: u64| Kept {
        name: name.into(),
        namespace: "ns".into(),
        sequence: format!("{seq:020}"),
        deleted: false,
    };
    let want: BTreeMap<String, Kept> = [
        ("u1".to_string(), kept("u1", 13)),
        ("u2".to_string(), kept("u2", 7)),
    ]
    .into();
    assert_eq!(s.objects, want, "per-object state\n{log}");
}
