//! Whole-group watches (`kind: "*"`) end to end: the real kube-apiserver → crbridge (the
//! binary) → the real NATS JetStream. Every kind the group serves is watched with its own
//! checkpoint, a kind whose CRD is installed while crbridge runs is picked up (its objects
//! arrive as `created`), and a kind whose CRD is deleted is reported, not fatal.

mod support;

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, DynamicObject};
use kube::Api;
use serde_json::{json, Value};
use support::bridge::{run_cli, Bridge};
use support::nats::{Reader, Received};

const WAIT: Duration = Duration::from_secs(30);

fn summary(events: &[Received]) -> Vec<(String, String, String)> {
    let mut s: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.change().to_string(),
                e.attr("crbkind").to_string(),
                e.attr("crbname").to_string(),
            )
        })
        .collect();
    s.sort();
    s
}

#[tokio::test]
async fn a_whole_group_watch_follows_every_kind_also_ones_installed_later() {
    let client = support::kube_client().await;
    let ns = support::namespace(&client, "group").await;
    let group = format!("{}.crbridge.test", support::unique("grp"));
    let widgets = support::crd_in(&client, &group, "Widget").await;
    let gadgets = support::crd_in(&client, &group, "Gadget").await;
    let wapi: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &widgets.resource);
    let gapi: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &gadgets.resource);
    support::create_widget(&wapi, &widgets, "w1", json!({"size": 1})).await;
    support::create_widget(&gapi, &gadgets, "g1", json!({"size": 1})).await;

    let stream = support::unique("CRBG").to_uppercase().replace('-', "_");
    let dir = tempfile::tempdir().unwrap();
    let base = support::nats_config(dir.path(), &widgets, &ns, &stream);
    let cfg = base
        .replacen("  - name: widgets\n", "  - name: everything\n", 1)
        .replacen(
            "    kind: Widget\n",
            "    kind: \"*\"\n    discoveryInterval: 1s\n",
            1,
        );
    assert!(
        cfg.contains("name: everything") && cfg.contains("kind: \"*\""),
        "{cfg}"
    );
    let mut bridge = Bridge::new(dir.path(), &cfg);
    bridge.start();
    let mut reader = Reader::open(&stream).await;

    // Both kinds served at the start: the first start's snapshot of each.
    let first = reader.take(2, WAIT).await;
    assert_eq!(
        summary(&first),
        [
            ("snapshot".into(), "Gadget".into(), "g1".into()),
            ("snapshot".into(), "Widget".into(), "w1".into()),
        ]
    );
    let base_url = bridge.http_base().await;
    support::wait_readyz(&base_url, 200, "", WAIT).await;

    // A kind installed while it runs: found by discovery, its objects are new.
    let gizmos = support::crd_in(&client, &group, "Gizmo").await;
    let zapi: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &gizmos.resource);
    support::create_widget(&zapi, &gizmos, "z1", json!({"size": 1})).await;
    bridge
        .wait_logged("kind found in the group: watching it", WAIT)
        .await;
    let later = reader.take(1, WAIT).await;
    assert_eq!(
        summary(&later),
        [("created".into(), "Gizmo".into(), "z1".into())]
    );
    assert!(
        later[0].attr("type").ends_with(".gizmos.created")
            || later[0].attr("type").contains("created"),
        "{:?}",
        later[0].headers
    );
    support::patch_widget(&zapi, "z1", json!({"size": 2})).await;
    support::patch_widget(&wapi, "w1", json!({"size": 2})).await;
    let updates = reader.take(2, WAIT).await;
    assert_eq!(
        summary(&updates),
        [
            ("updated".into(), "Gizmo".into(), "z1".into()),
            ("updated".into(), "Widget".into(), "w1".into()),
        ]
    );

    // A kind removed from the group: reported, the others carry on, the process is ready.
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    crds.delete(&format!("gizmos.{group}"), &DeleteParams::default())
        .await
        .expect("deleting the Gizmo CRD");
    let removed = bridge
        .wait_logged(
            "kind no longer served by the group: its watch stopped (its state is kept; it resumes if the kind is served again)",
            WAIT,
        )
        .await;
    assert_eq!(removed["plural"], "gizmos", "{removed}");
    support::wait_readyz(&base_url, 200, "", WAIT).await;
    support::patch_widget(&gapi, "g1", json!({"size": 3})).await;
    // The delete of z1 (the CRD's objects go with it) may come first.
    let mut after: Vec<Received> = Vec::new();
    while !after.iter().any(|e| e.attr("crbname") == "g1") {
        after.extend(reader.take(1, WAIT).await);
    }
    assert!(
        after
            .iter()
            .all(|e| e.attr("crbname") == "g1"
                || (e.attr("crbname") == "z1" && e.change() == "deleted")),
        "{:?}",
        summary(&after)
    );

    // Each kind has its own checkpoint under the watch's name.
    assert_eq!(bridge.stop().await.code(), Some(0));
    let config = dir.path().join("crbridge.yaml");
    let (st, out, err) = run_cli(&["status", "-c", config.to_str().unwrap(), "--output", "json"]);
    assert!(st.success(), "status: {err}");
    let status: Value = serde_json::from_str(out.trim()).expect("status JSON");
    let mut names: Vec<&str> = status["watches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "everything/gadgets",
            "everything/gizmos",
            "everything/widgets"
        ]
    );
    // A snapshot of the watch (stopped instance) covers every kind the group serves.
    let (st, out, err) = run_cli(&[
        "snapshot",
        "-c",
        config.to_str().unwrap(),
        "--watch",
        "everything",
    ]);
    assert!(st.success(), "snapshot: {out} {err}");
    // (z1's delete, if it was read after g1's update above, comes first.)
    let mut snap: Vec<Received> = Vec::new();
    while snap.len() < 2 {
        snap.extend(
            reader
                .take(1, WAIT)
                .await
                .into_iter()
                .filter(|e| e.change() == "snapshot"),
        );
    }
    assert_eq!(
        summary(&snap),
        [
            ("snapshot".into(), "Gadget".into(), "g1".into()),
            ("snapshot".into(), "Widget".into(), "w1".into()),
        ]
    );
    // A schema per kind, each from its own CRD, and an AsyncAPI channel per kind.
    let cfg_path = config.to_str().unwrap();
    let (st, out, err) = run_cli(&["schema", "-c", cfg_path, "--watch", "everything/widgets"]);
    assert!(st.success(), "schema: {err}");
    let schema: Value = serde_json::from_str(&out).expect("one schema");
    assert!(
        schema["$id"].as_str().unwrap().ends_with(":Widget"),
        "{}",
        schema["$id"]
    );
    let (st, out, err) = run_cli(&["schema", "-c", cfg_path, "--watch", "everything"]);
    assert!(st.success(), "schema: {err}");
    assert!(
        out.contains(":Gadget\"") && out.contains(":Widget\""),
        "{out}"
    );
    let (st, _, err) = run_cli(&["schema", "-c", cfg_path, "--watch", "everything/gizmos"]);
    assert!(
        !st.success() && err.contains("served: gadgets, widgets"),
        "{err}"
    );
    let (st, out, err) = run_cli(&["asyncapi", "-c", cfg_path]);
    assert!(st.success(), "asyncapi: {err}");
    let doc: Value = serde_json::from_str(&out).expect("AsyncAPI JSON");
    let mut channels: Vec<&String> = doc["channels"].as_object().unwrap().keys().collect();
    channels.sort();
    assert_eq!(
        channels,
        ["everything_gadgets__nats", "everything_widgets__nats"]
    );
    let (st, out, err) = run_cli(&["check", "-c", config.to_str().unwrap()]);
    assert!(
        out.contains("ok   watch everything: * → 2 kinds of"),
        "check: {out} {err} {st:?}"
    );
}
