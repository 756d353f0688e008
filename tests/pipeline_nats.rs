//! The core pipeline end to end: the real kube-apiserver → crbridge (the binary) → the real
//! NATS JetStream, read back by an independent consumer. Each test has its own CRD group,
//! namespace, stream and state directory.

mod support;

use std::time::Duration;

use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::{json, Value};
use support::bridge::Bridge;
use support::nats::{Reader, Received};

const WAIT: Duration = Duration::from_secs(30);

struct Setup {
    api: Api<DynamicObject>,
    crd: support::TestCrd,
    ns: String,
    stream: String,
    _dir: tempfile::TempDir,
}

async fn setup() -> (Setup, Bridge) {
    setup_with("").await
}

/// [`setup`] with `watch_keys` (YAML lines, indented 4 spaces) added to the watch.
async fn setup_with(watch_keys: &str) -> (Setup, Bridge) {
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, "pipe").await;
    let api = Api::namespaced_with(client, &ns, &crd.resource);
    let stream = support::unique("CRB").to_uppercase().replace('-', "_");
    let dir = tempfile::tempdir().unwrap();
    let cfg = support::nats_config(dir.path(), &crd, &ns, &stream).replace(
        "    sinks: [nats]\n",
        &format!("{watch_keys}    sinks: [nats]\n"),
    );
    let bridge = Bridge::new(dir.path(), &cfg);
    (
        Setup {
            api,
            crd,
            ns,
            stream,
            _dir: dir,
        },
        bridge,
    )
}

impl Setup {
    async fn create(&self, name: &str, spec: Value) -> DynamicObject {
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": self.crd.resource.api_version,
            "kind": self.crd.kind,
            "metadata": {"name": name},
            "spec": spec,
        }))
        .unwrap();
        self.api
            .create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}"))
    }

    async fn patch_spec(&self, name: &str, spec: Value) -> DynamicObject {
        self.api
            .patch(
                name,
                &PatchParams {
                    field_manager: Some("widget-editor".into()),
                    ..Default::default()
                },
                &Patch::Merge(json!({ "spec": spec })),
            )
            .await
            .unwrap_or_else(|e| panic!("patch {name}: {e}"))
    }

    async fn delete(&self, name: &str) {
        self.api
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("delete {name}: {e}"));
    }
}

fn rv(o: &DynamicObject) -> String {
    o.metadata.resource_version.clone().unwrap()
}

fn summary(events: &[Received]) -> Vec<(String, String, bool)> {
    events
        .iter()
        .map(|e| {
            (
                e.change().to_string(),
                e.attr("crbname").to_string(),
                e.inferred(),
            )
        })
        .collect()
}

fn s(change: &str, name: &str, inferred: bool) -> (String, String, bool) {
    (change.into(), name.into(), inferred)
}

#[tokio::test]
async fn changes_are_published_and_noise_is_not() {
    let (t, mut bridge) = setup().await;
    bridge.start();
    bridge.wait_logged("list reconciled", WAIT).await;
    let mut reader = Reader::open(&t.stream).await;

    let created = t.create("w1", json!({"size": 1})).await;
    let updated = t.patch_spec("w1", json!({"size": 2})).await;
    // Status only: the status subresource changes resourceVersion and status, nothing else.
    t.api
        .patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Ready"}})),
        )
        .await
        .unwrap();
    // Metadata only: another field manager applies the same spec value, which changes
    // managedFields and resourceVersion but no content.
    t.api
        .patch(
            "w1",
            &PatchParams::apply("someone-else").force(),
            &Patch::Apply(json!({
                "apiVersion": t.crd.resource.api_version, "kind": t.crd.kind,
                "metadata": {"name": "w1"}, "spec": {"size": 2}
            })),
        )
        .await
        .unwrap();
    t.delete("w1").await;

    let events = reader.take(3, WAIT).await;
    assert_eq!(
        summary(&events),
        vec![
            s("created", "w1", false),
            s("updated", "w1", false),
            s("deleted", "w1", false)
        ]
    );
    reader.expect_none(Duration::from_secs(2)).await;

    let (c, u, d) = (&events[0], &events[1], &events[2]);
    // CloudEvents attributes as the README's "The event" section specifies.
    assert_eq!(c.attr("specversion"), "1.0");
    assert_eq!(c.attr("content-type"), "application/json");
    assert_eq!(
        c.attr("source"),
        format!("/clusters/test/apis/{}/v1/widgets", t.crd.group)
    );
    assert_eq!(c.attr("type"), "io.crbridge.resource.created");
    assert_eq!(c.attr("subject"), format!("{}/w1", t.ns));
    // `sequence` sorts as the number; the raw resourceVersion stays in the object.
    assert_eq!(c.attr("sequence"), support::sequence_of(&rv(&created)));
    assert_eq!(
        c.data["object"]["metadata"]["resourceVersion"],
        rv(&created)
    );
    assert_eq!(
        c.attr("partitionkey"),
        created.metadata.uid.clone().unwrap()
    );
    assert_eq!(c.headers["Nats-Msg-Id"], c.attr("id"));
    assert_eq!(u.attr("sequence"), support::sequence_of(&rv(&updated)));
    assert_eq!(u.attr("crbchangedby"), "widget-editor");
    assert_eq!(u.data["previousResourceVersion"], rv(&created));
    // The patch says what changed, no bookkeeping (resourceVersion, generation), and
    // turns the previous normalized object into the new one.
    assert_eq!(
        u.data["patch"],
        json!([{"op": "replace", "path": "/spec/size", "value": 2}])
    );
    let mut doc = support::verify::normalized(&c.data["object"]);
    let patch: json_patch::Patch = serde_json::from_value(u.data["patch"].clone()).unwrap();
    json_patch::patch(&mut doc, &patch).unwrap();
    assert_eq!(doc, support::verify::normalized(&u.data["object"]));
    assert_eq!(u.attr("crbgeneration"), "2");
    assert_eq!(u.data["object"]["spec"]["size"], 2);
    assert_eq!(d.data["object"]["metadata"]["name"], "w1");
    // Subject: group dots escaped, one token per value.
    assert_eq!(
        c.subject,
        format!(
            "{}.test.{}.Widget.{}.w1",
            t.stream,
            t.crd.group.replace('.', "%2E"),
            t.ns
        )
    );
    assert_eq!(bridge.stop().await.code(), Some(0));
}

#[tokio::test]
async fn include_status_lists_and_wildcard_ignores_decide_what_counts() {
    let (t, mut bridge) = setup_with(
        "    include: [/spec/size]\n    includeStatus: [/status/phase, /status/conditions]\n    ignore: [\"/status/conditions/*/lastHeartbeatTime\"]\n",
    )
    .await;
    bridge.start();
    bridge.wait_logged("list reconciled", WAIT).await;
    let mut reader = Reader::open(&t.stream).await;
    let status = |status: Value| {
        let api = t.api.clone();
        async move {
            api.patch_status(
                "w1",
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
            .unwrap()
        }
    };
    t.create("w1", json!({"size": 1, "hint": 1})).await;
    status(json!({"phase": "Pending", "conditions": [{"type": "A", "lastHeartbeatTime": "t1"}]}))
        .await;
    // None of these count: a heartbeat (ignored by a wildcard), a status field not listed,
    // a spec field not included.
    status(json!({"conditions": [{"type": "A", "lastHeartbeatTime": "t2"}]})).await;
    status(json!({"observedAt": "x"})).await;
    t.patch_spec("w1", json!({"hint": 2})).await;
    status(json!({"phase": "Ready"})).await;
    t.patch_spec("w1", json!({"size": 2})).await;

    let events = reader.take(4, WAIT).await;
    let patches: Vec<(String, Value)> = events
        .iter()
        .skip(1)
        .map(|e| (e.change().to_string(), e.data["patch"].clone()))
        .collect();
    assert_eq!(events[0].change(), "created");
    assert_eq!(
        patches,
        vec![
            (
                "updated".to_string(),
                json!([{"op": "add", "path": "/status",
                        "value": {"conditions": [{"type": "A"}], "phase": "Pending"}}])
            ),
            (
                "updated".to_string(),
                json!([{"op": "replace", "path": "/status/phase", "value": "Ready"}])
            ),
            (
                "updated".to_string(),
                json!([{"op": "replace", "path": "/spec/size", "value": 2}])
            ),
        ]
    );
    // `data.object` is still the whole object.
    assert_eq!(events[3].data["object"]["spec"]["hint"], 2);
    assert_eq!(events[3].data["object"]["status"]["observedAt"], "x");
    reader.expect_none(Duration::from_secs(2)).await;
    assert_eq!(bridge.stop().await.code(), Some(0));
}

#[tokio::test]
async fn restart_within_history_resumes_without_a_list() {
    let (t, mut bridge) = setup().await;
    bridge.start();
    bridge.wait_logged("list reconciled", WAIT).await;
    let mut reader = Reader::open(&t.stream).await;
    t.create("w1", json!({"size": 0})).await;
    reader.take(1, WAIT).await;
    assert_eq!(bridge.stop().await.code(), Some(0));

    // Changed while crbridge is down: every intermediate state must arrive, in order.
    let mut rvs = Vec::new();
    for size in 1..=3 {
        rvs.push(rv(&t.patch_spec("w1", json!({ "size": size })).await));
    }
    bridge.start();
    let resumed = bridge
        .wait_logged("watch resumed from checkpoint", WAIT)
        .await;
    let events = reader.take(3, WAIT).await;
    let seen: Vec<(String, Value)> = events
        .iter()
        .map(|e| {
            (
                e.attr("sequence").to_string(),
                e.data["object"]["spec"]["size"].clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (support::sequence_of(&rvs[0]), json!(1)),
            (support::sequence_of(&rvs[1]), json!(2)),
            (support::sequence_of(&rvs[2]), json!(3))
        ]
    );
    assert!(events
        .iter()
        .all(|e| e.change() == "updated" && !e.inferred()));
    assert!(
        bridge.logged("listing").is_empty(),
        "second run listed instead of resuming (resumed at {resumed})"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn compacted_history_relists_and_infers_what_changed() {
    let (t, mut bridge) = setup().await;
    bridge.start();
    bridge.wait_logged("list reconciled", WAIT).await;
    let mut reader = Reader::open(&t.stream).await;
    for name in ["a", "b", "c"] {
        t.create(name, json!({"size": 1})).await;
    }
    reader.take(3, WAIT).await;
    assert_eq!(bridge.stop().await.code(), Some(0));

    // While down: a unchanged, b updated, c deleted, d created, then history compacted.
    t.patch_spec("b", json!({"size": 2})).await;
    t.delete("c").await;
    t.create("d", json!({"size": 1})).await;
    support::compact_etcd();

    bridge.start();
    bridge
        .wait_logged("resourceVersion expired (410 Gone), relisting", WAIT)
        .await;
    let mut events = reader.take(3, WAIT).await;
    events.sort_by_key(|e| e.attr("crbname").to_string());
    assert_eq!(
        summary(&events),
        vec![
            s("updated", "b", true),
            s("deleted", "c", true),
            s("created", "d", true)
        ]
    );
    assert_eq!(events[0].data["object"]["spec"]["size"], 2);
    reader.expect_none(Duration::from_secs(2)).await;
    let relists: Vec<Value> = bridge.logged("listing");
    assert_eq!(relists.len(), 1, "exactly one relist: {relists:?}");
    assert_eq!(relists[0]["mode"], "Relist");
    bridge.stop().await;
}

#[tokio::test]
async fn kill_9_during_a_burst_loses_nothing() {
    let (t, mut bridge) = setup().await;
    bridge.start();
    bridge.wait_logged("list reconciled", WAIT).await;
    let mut reader = Reader::open(&t.stream).await;

    // Every (uid, resourceVersion) the server reported for our writes.
    let mut expected = std::collections::BTreeSet::new();
    let mut killed = false;
    for round in 0..4 {
        for i in 0..10 {
            let name = format!("w{i}");
            let o = if round == 0 {
                t.create(&name, json!({"size": 0})).await
            } else {
                t.patch_spec(&name, json!({ "size": round })).await
            };
            expected.insert((o.metadata.uid.clone().unwrap(), rv(&o)));
        }
        if round == 1 && !killed {
            bridge.kill9();
            killed = true;
            bridge.start();
        }
    }
    for i in 0..5 {
        t.delete(&format!("w{i}")).await;
    }
    let events = reader
        .until(Duration::from_secs(60), |got| {
            got.iter().filter(|e| e.change() == "deleted").count() == 5
                && expected.iter().all(|(uid, rv)| {
                    got.iter().any(|e| {
                        e.attr("crbuid") == uid && e.attr("sequence") == support::sequence_of(rv)
                    })
                })
        })
        .await;
    // Duplicates (re-sent after the kill) carry the same id and the same content.
    let mut by_id = std::collections::HashMap::new();
    for e in &events {
        if let Some(prev) = by_id.insert(e.attr("id").to_string(), e) {
            assert_eq!(prev.data, e.data, "same id, different content");
            assert_eq!(prev.attr("sequence"), e.attr("sequence"));
        }
    }
    // Per object, resourceVersions never go backwards.
    let mut last: std::collections::HashMap<String, u64> = Default::default();
    for e in &events {
        let rv: u64 = e.attr("sequence").parse().unwrap();
        let prev = last.insert(e.attr("crbuid").to_string(), rv).unwrap_or(0);
        assert!(
            rv >= prev,
            "{} went back from {prev} to {rv}",
            e.attr("crbname")
        );
    }
    assert!(bridge
        .logs_of(2)
        .iter()
        .any(|l| l["message"] == "watch resumed from checkpoint"));
    bridge.stop().await;
}

#[tokio::test]
async fn bad_config_is_rejected_with_file_key_and_expectation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    let state = dir.path().join("state");
    std::fs::write(
        &path,
        format!("cluster: test\nstate: {{path: {}}}\nwatches:\n  - group: example.com\n    version: v1\n    kind: Widget\n    includeStatuss: true\nsinks:\n  nats: {{type: nats, url: x, stream: S, subject: a}}\n", state.display()),
    )
    .unwrap();
    let p = path.to_str().unwrap();
    for cmd in ["run", "check"] {
        let (status, out, err) = support::bridge::run_cli(&[cmd, "-c", p]);
        assert!(!status.success(), "{cmd} accepted a bad config");
        let text = format!("{out}{err}");
        assert!(text.contains("bad.yaml"), "{cmd}: file not named: {text}");
        assert!(
            text.contains("watches[0].includeStatuss"),
            "{cmd}: key path not named: {text}"
        );
        assert!(
            text.contains("includeStatus"),
            "{cmd}: expectation not named: {text}"
        );
    }
    assert!(!state.exists(), "nothing may start on a bad config");
}

#[tokio::test]
async fn check_probes_cluster_watches_and_sinks() {
    let (t, bridge) = setup().await;
    let cfg = bridge.config.to_str().unwrap().to_string();
    let (status, out, err) = support::bridge::run_cli(&["check", "-c", &cfg]);
    assert!(status.success(), "check failed:\n{out}\n{err}");
    for expected in [
        "ok   config",
        "ok   cluster: Kubernetes v1.34.",
        "ok   watch widgets: Widget → widgets (namespaced)",
        "ok   sink nats",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }

    // An unreachable sink and a kind that does not exist are reported, each on its own line.
    let broken = std::fs::read_to_string(&bridge.config)
        .unwrap()
        .replace(&support::env("CRBRIDGE_NATS_URL"), "nats://127.0.0.1:1")
        .replace(&format!("kind: {}", t.crd.kind), "kind: Gadget");
    let path = bridge.dir.join("broken.yaml");
    std::fs::write(&path, broken).unwrap();
    let (status, out, _) = support::bridge::run_cli(&["check", "-c", path.to_str().unwrap()]);
    assert!(!status.success());
    assert!(
        out.contains("FAIL watch widgets: watch widgets: kind Gadget"),
        "{out}"
    );
    assert!(
        out.contains("FAIL sink nats: connect: NATS at nats://127.0.0.1:1"),
        "{out}"
    );
}

/// The items of `check --output json`: one object per line, as (item, name, ok).
fn check_items(out: &str) -> Vec<(String, Option<String>, bool)> {
    out.lines()
        .map(|l| {
            let v: Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{out}"));
            let detail = v["detail"].as_str().unwrap_or_default();
            assert!(!detail.is_empty(), "every item says what was found: {l}");
            (
                v["item"].as_str().unwrap_or_default().to_owned(),
                v["name"].as_str().map(str::to_owned),
                v["ok"].as_bool().unwrap_or_else(|| panic!("no ok in {l}")),
            )
        })
        .collect()
}

#[tokio::test]
async fn check_output_json_is_one_object_per_item() {
    let (t, bridge) = setup().await;
    let cfg = bridge.config.to_str().unwrap().to_string();
    let (status, out, err) = support::bridge::run_cli(&["check", "-c", &cfg, "--output", "json"]);
    assert!(status.success(), "check failed:\n{out}\n{err}");
    let some = |s: &str| Some(s.to_owned());
    assert_eq!(
        check_items(&out),
        [
            ("config".into(), some(&cfg), true),
            ("cluster".into(), None, true),
            ("watch".into(), some("widgets"), true),
            ("sink".into(), some("nats"), true),
        ],
        "{out}"
    );

    let broken = std::fs::read_to_string(&bridge.config)
        .unwrap()
        .replace(&support::env("CRBRIDGE_NATS_URL"), "nats://127.0.0.1:1")
        .replace(&format!("kind: {}", t.crd.kind), "kind: Gadget");
    let path = bridge.dir.join("broken.yaml");
    std::fs::write(&path, broken).unwrap();
    let (status, out, _) =
        support::bridge::run_cli(&["check", "-c", path.to_str().unwrap(), "-o", "json"]);
    assert!(!status.success());
    let items = check_items(&out);
    assert!(
        items.contains(&("watch".into(), some("widgets"), false)),
        "{out}"
    );
    assert!(
        items.contains(&("sink".into(), some("nats"), false)),
        "{out}"
    );

    // A config that does not load is the one item.
    std::fs::write(&path, "cluster: [\n").unwrap();
    let (status, out, _) =
        support::bridge::run_cli(&["check", "-c", path.to_str().unwrap(), "-o", "json"]);
    assert!(!status.success());
    assert_eq!(
        check_items(&out),
        [("config".into(), some(path.to_str().unwrap()), false)],
        "{out}"
    );
}
