//! One crbridge for two clusters: two real kube-apiservers, each with its own etcd
//! (`deploy/local/up` starts the second as `kube-b`), the same CRD in both, one NATS stream.
//! Each cluster keeps its own checkpoints and state; one going away, or losing its history,
//! concerns only its own scopes.
//!
//! One test stops the second API server: the tests of this binary run one at a time, and
//! no other binary uses that server.

mod support;

use std::time::Duration;

use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{json, Value};
use support::bridge::Bridge;
use support::nats::{Reader, Received};
use support::servers::{restart_server, signal_server};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const WAIT: Duration = Duration::from_secs(60);

/// The same CRD and namespace in both clusters, and a bridge watching both.
struct Fleet {
    east: Api<DynamicObject>,
    west: Api<DynamicObject>,
    crd: support::TestCrd,
    ns: String,
    stream: String,
    dir: tempfile::TempDir,
}

async fn fleet(prefix: &str) -> (Fleet, Bridge) {
    let (a, b) = (support::kube_client().await, support::kube_client_b().await);
    let crd = support::crd(&a, "Widget").await;
    support::crd_in(&b, &crd.group, "Widget").await;
    let ns = support::namespace(&a, prefix).await;
    support::namespace_named(&b, &ns).await;
    let stream = support::unique("FLEET").to_uppercase().replace('-', "_");
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"clusters:
  - {{ name: east, kubeconfig: {a} }}
  - {{ name: west, kubeconfig: {b} }}
state: {{ path: {state} }}
http: {{ listen: 127.0.0.1:0 }}
admin: {{ listen: 127.0.0.1:0 }}
watches:
  - name: widgets
    group: {group}
    version: v1
    kind: Widget
    namespaces: [{ns}]
sinks:
  nats:
    type: nats
    url: {nats}
    stream: {stream}
    subject: "{stream}.{{cluster}}.{{namespace}}.{{name}}"
"#,
        a = support::env("KUBECONFIG"),
        b = support::env("CRBRIDGE_KUBECONFIG_B"),
        state = Bridge::state_path(dir.path()).display(),
        group = crd.group,
        nats = support::env("CRBRIDGE_NATS_URL"),
    );
    let bridge = Bridge::new(dir.path(), &yaml);
    let api = |c: Client| Api::namespaced_with(c, &ns, &crd.resource);
    (
        Fleet {
            east: api(a),
            west: api(b),
            crd,
            ns: ns.clone(),
            stream,
            dir,
        },
        bridge,
    )
}

impl Fleet {
    async fn create(&self, api: &Api<DynamicObject>, name: &str, size: i64) -> DynamicObject {
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": self.crd.resource.api_version,
            "kind": self.crd.kind,
            "metadata": {"name": name},
            "spec": {"size": size},
        }))
        .unwrap();
        api.create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}"))
    }

    async fn resize(&self, api: &Api<DynamicObject>, name: &str, size: i64) {
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": size}})),
        )
        .await
        .unwrap_or_else(|e| panic!("patch {name}: {e}"));
    }
}

/// The cluster an event came from, by its `source` (`/clusters/{cluster}/apis/...`).
fn cluster_of(e: &Received) -> &str {
    e.attr("source")
        .strip_prefix("/clusters/")
        .and_then(|s| s.split('/').next())
        .unwrap_or("")
}

/// (cluster, change, name) of each event, sorted.
fn summary(events: &[Received]) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = events
        .iter()
        .map(|e| {
            (
                cluster_of(e).to_string(),
                e.change().to_string(),
                e.attr("crbname").to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn triple(c: &str, change: &str, name: &str) -> (String, String, String) {
    (c.into(), change.into(), name.into())
}

#[tokio::test]
async fn changes_in_both_clusters_reach_the_sink_with_their_own_source_and_ids() {
    let _serial = SERIAL.lock().await;
    let (f, mut bridge) = fleet("fleet-both").await;
    bridge.start();
    let base = bridge.http_base().await;
    support::wait_readyz(&base, 200, "ok", WAIT).await;
    let mut reader = Reader::open(&f.stream).await;

    // The same name in both clusters: two objects, two uids, two events.
    let a = f.create(&f.east, "twin", 1).await;
    let b = f.create(&f.west, "twin", 1).await;
    let events = reader.take(2, WAIT).await;
    assert_eq!(
        summary(&events),
        [
            triple("east", "created", "twin"),
            triple("west", "created", "twin")
        ]
    );
    assert_ne!(events[0].attr("id"), events[1].attr("id"));
    for e in &events {
        let (uid, subject_cluster) = match cluster_of(e) {
            "east" => (a.metadata.uid.as_deref().unwrap(), "east"),
            _ => (b.metadata.uid.as_deref().unwrap(), "west"),
        };
        assert_eq!(e.data["object"]["metadata"]["uid"], uid, "{e:?}");
        assert!(e.subject.contains(&format!(".{subject_cluster}.")), "{e:?}");
    }

    // State per cluster: an update in one cluster is an update there only.
    f.resize(&f.west, "twin", 2).await;
    let e = reader.take(1, WAIT).await;
    assert_eq!(summary(&e), [triple("west", "updated", "twin")]);
    reader.expect_none(Duration::from_secs(1)).await;

    // Metrics and status carry the cluster.
    let (_, metrics) = support::http_get(&format!("{base}/metrics"));
    for line in [
        "crbridge_events_total{cluster=\"east\",watch=\"widgets\",type=\"created\"} 1",
        "crbridge_events_total{cluster=\"west\",watch=\"widgets\",type=\"updated\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    assert_eq!(bridge.stop().await.code(), Some(0));
    let config = f.dir.path().join("crbridge.yaml");
    let (st, out, err) =
        support::bridge::run_cli(&["status", "-c", config.to_str().unwrap(), "--output", "json"]);
    assert!(st.success(), "status: {err}");
    let status: Value = serde_json::from_str(out.trim()).expect("status JSON");
    let (st, out, err) = support::bridge::run_cli(&["check", "-c", config.to_str().unwrap()]);
    assert!(st.success(), "check: {out} {err}");
    for line in [
        "ok   cluster east: Kubernetes v",
        "ok   cluster west: Kubernetes v",
        "ok   watch east/widgets: Widget → widgets (namespaced)",
        "ok   watch west/widgets: Widget → widgets (namespaced)",
    ] {
        assert!(out.contains(line), "{line:?} missing from\n{out}");
    }
    let watches: Vec<(String, String, u64)> = status["watches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["cluster"].as_str().unwrap().to_string(),
                w["name"].as_str().unwrap().to_string(),
                w["objects"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        watches,
        [
            ("east".into(), "east/widgets".into(), 1),
            ("west".into(), "west/widgets".into(), 1)
        ]
    );
}

#[tokio::test]
async fn one_cluster_down_the_other_flows_and_the_returned_one_catches_up() {
    let _serial = SERIAL.lock().await;
    let (f, mut bridge) = fleet("fleet-down").await;
    bridge.start();
    let base = bridge.http_base().await;
    support::wait_readyz(&base, 200, "ok", WAIT).await;
    let mut reader = Reader::open(&f.stream).await;
    f.create(&f.west, "w1", 1).await;
    f.create(&f.east, "e1", 1).await;
    reader.take(2, WAIT).await;

    // The second API server dies: its scope fails, /readyz says which cluster, and the
    // first cluster's changes keep flowing.
    signal_server("kube-b", "KILL");
    let body = support::wait_readyz(&base, 503, "cluster west", WAIT).await;
    assert!(!body.contains("cluster east"), "{body}");
    f.create(&f.east, "e2", 1).await;
    f.resize(&f.east, "e1", 2).await;
    let events = reader.take(2, WAIT).await;
    assert_eq!(
        summary(&events),
        [
            triple("east", "created", "e2"),
            triple("east", "updated", "e1")
        ]
    );

    // Back: it resumes from its checkpoint, and what changes there arrives.
    restart_server("kube-b").await;
    let west = Api::namespaced_with(support::kube_client_b().await, &f.ns, &f.crd.resource);
    f.resize(&west, "w1", 2).await;
    f.create(&west, "w2", 1).await;
    west.delete("w1", &DeleteParams::default()).await.unwrap();
    let events = reader.take(3, WAIT).await;
    assert_eq!(
        summary(&events),
        [
            triple("west", "created", "w2"),
            triple("west", "deleted", "w1"),
            triple("west", "updated", "w1")
        ]
    );
    reader.expect_none(Duration::from_secs(1)).await;
    support::wait_readyz(&base, 200, "ok", WAIT).await;
    assert_eq!(bridge.stop().await.code(), Some(0));
}

#[tokio::test]
async fn compacted_history_in_one_cluster_relists_only_that_one() {
    let _serial = SERIAL.lock().await;
    let (f, mut bridge) = fleet("fleet-gone").await;
    bridge.start();
    bridge.wait_logged("http listening", WAIT).await;
    let mut reader = Reader::open(&f.stream).await;
    f.create(&f.east, "e1", 1).await;
    f.create(&f.west, "w1", 1).await;
    reader.take(2, WAIT).await;
    assert_eq!(bridge.stop().await.code(), Some(0));

    // While crbridge is down: a change in each cluster, then the west's history is gone.
    f.resize(&f.east, "e1", 2).await;
    f.resize(&f.west, "w1", 2).await;
    support::compact_etcd_at(&support::env("CRBRIDGE_ETCD_ENDPOINT_B"));

    bridge.start();
    let events = reader.take(2, WAIT).await;
    assert_eq!(
        summary(&events),
        [
            triple("east", "updated", "e1"),
            triple("west", "updated", "w1")
        ]
    );
    // A compacted history answers 410 Gone, or 500 when etcd lost the previous value of
    // an event after the checkpoint: either way a relist, of that cluster only.
    let relisted: Vec<String> = bridge
        .logged("listing")
        .iter()
        .filter(|l| l["mode"] == "Relist")
        .map(|l| l["watch"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        relisted,
        ["west/widgets"],
        "only the compacted cluster relists"
    );
    let resumed: Vec<String> = bridge
        .logged("watch resumed from checkpoint")
        .iter()
        .map(|l| l["watch"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(resumed.contains(&"east/widgets".to_string()), "{resumed:?}");
    assert!(
        events
            .iter()
            .all(|e| (cluster_of(e) == "west") == e.inferred()),
        "the relisted change is inferred, the watched one is not: {events:?}"
    );
    reader.expect_none(Duration::from_secs(1)).await;
    assert_eq!(bridge.stop().await.code(), Some(0));
}
