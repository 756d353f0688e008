//! Drives the consumer examples under `examples/consumers/<lang>/` (README, "For consumers")
//! against the real servers: the same workload for every language, the example run as a
//! user would (`run`, which prepares a cached build when needed), and its one-line JSON
//! summary checked against what the API server holds.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use kube::api::{DeleteParams, DynamicObject};
use kube::Api;
use serde::Deserialize;
use serde_json::json;

/// Objects the workload creates; the first two are updated twice, the second is deleted.
pub const NAMES: [&str; 3] = ["a", "b", "c"];
/// Events of [`Workload::changes`]: 3 created, 4 updated.
pub const CHANGES: usize = 7;
/// `updated` events of [`Workload::changes`]: each carries a patch the consumer checks.
pub const UPDATES: usize = 4;
/// Distinct events of the whole workload: the changes and one deletion.
pub const EVENTS: usize = CHANGES + 1;

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
/// consumer timeout of `consumer_secs`; panics, with its log, when it does not finish within
/// `limit` or prints no summary. `limit` covers a cold `prepare` (a dependency download)
/// too; `deploy/local/up` prepares every example so a test run normally finds them built.
pub async fn run(
    lang: &str,
    env: &[(&str, String)],
    consumer_secs: u64,
    limit: Duration,
) -> Outcome {
    let script = run_script(lang);
    let child = tokio::process::Command::new(&script)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("CONSUMER_TIMEOUT_SECS", consumer_secs.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", script.display()));
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the {lang} consumer did not finish within {limit:?} (a first run downloads its \
                 dependencies: run examples/consumers/{lang}/prepare once to see why)"
            )
        })
        .unwrap_or_else(|e| panic!("waiting for the {lang} consumer: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let line = stdout.lines().rev().find(|l| l.starts_with('{'));
    let summary: Summary = line
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "the {lang} consumer ({}) printed no JSON summary; stdout:\n{stdout}\nstderr:\n{stderr}",
                out.status
            )
        });
    assert_eq!(summary.lang, lang, "summary of another language: {line:?}");
    Outcome {
        success: out.status.success(),
        summary,
        stderr,
    }
}

/// The workload every consumer test runs, on its own CRD and namespace.
pub struct Workload {
    pub api: Api<DynamicObject>,
    pub crd: super::TestCrd,
    pub ns: String,
}

impl Workload {
    /// A fresh CRD and namespace.
    pub async fn new(prefix: &str) -> Workload {
        let client = super::kube_client().await;
        let crd = super::crd(&client, "Widget").await;
        let ns = super::namespace(&client, prefix).await;
        Workload {
            api: Api::namespaced_with(client, &ns, &crd.resource),
            crd,
            ns,
        }
    }

    /// Creates `a`, `b`, `c` and changes the spec of `a` and `b` twice ([`CHANGES`] events,
    /// [`UPDATES`] of them updates). A spec change also bumps `generation`, which the
    /// normalized form leaves out, so each patch says exactly what the test changed.
    pub async fn changes(&self) {
        for n in NAMES {
            super::create_widget(&self.api, &self.crd, n, json!({"size": 0, "color": "red"})).await;
        }
        for size in 1..=2 {
            for n in &NAMES[..2] {
                let spec = if size == 1 {
                    json!({"size": size, "labels": [n, "new"]})
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

/// Asserts the outcome of a run over the whole workload: every distinct event, every patch
/// checked, at least `min_duplicates` duplicates skipped, and per object the state `live`
/// (from [`Workload::live`], taken after the deletion) plus `b` deleted at a newer sequence
/// than `b`'s last update.
pub fn assert_complete(
    outcome: &Outcome,
    live: &BTreeMap<String, Kept>,
    b_before_delete: &Kept,
    b_uid: &str,
    min_duplicates: usize,
) {
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
