//! `fields` (projection) end to end: the real kube-apiserver → crbridge (the binary) → the
//! real NATS JetStream. `data.object` holds only the listed pointers and the identity and
//! version fields, the patch names only projected changes, a change outside the projection
//! publishes nothing, and the filter still sees the whole object.

mod support;

use std::time::Duration;

use kube::api::{DeleteParams, DynamicObject};
use kube::Api;
use serde_json::json;
use support::bridge::Bridge;
use support::nats::{Reader, Received};

const WAIT: Duration = Duration::from_secs(30);

/// A config for `crd` in `ns` publishing to `stream`, with `lines` added to the watch.
fn with_watch_lines(
    dir: &std::path::Path,
    crd: &support::TestCrd,
    ns: &str,
    stream: &str,
    lines: &[&str],
) -> String {
    let cfg = support::nats_config(dir, crd, ns, stream);
    let added: String = lines.iter().map(|l| format!("    {l}\n")).collect();
    let with = cfg.replacen(
        "    sinks: [nats]\n",
        &format!("{added}    sinks: [nats]\n"),
        1,
    );
    assert_ne!(cfg, with, "the watch's sinks line was not found");
    with
}

fn summary(events: &[Received]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| (e.change().to_string(), e.attr("crbname").to_string()))
        .collect()
}

#[tokio::test]
async fn only_projected_fields_are_published_and_count_as_changes() {
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, "fields").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &crd.resource);
    let stream = support::unique("CRBP").to_uppercase().replace('-', "_");
    let dir = tempfile::tempdir().unwrap();
    // The filter reads spec.tier, which the projection leaves out: it sees the whole object.
    let cfg = with_watch_lines(
        dir.path(),
        &crd,
        &ns,
        &stream,
        &[
            "fields: [/metadata/labels, /spec/size, '/spec/parts/*/name']",
            "filter: \"object.spec.tier == 'prod'\"",
        ],
    );
    let mut bridge = Bridge::new(dir.path(), &cfg);
    bridge.start();
    bridge.wait_logged("list reconciled", WAIT).await;
    let mut reader = Reader::open(&stream).await;

    let spec = json!({"size": 1, "tier": "prod", "note": "a",
                      "parts": [{"name": "p1", "weight": 1}, {"name": "p2", "weight": 2}]});
    let created = support::create_widget(&api, &crd, "w1", spec).await;
    // Outside the projection only: no event.
    support::patch_widget(
        &api,
        "w1",
        json!({"note": "b", "parts": [{"name": "p1", "weight": 5}, {"name": "p2", "weight": 2}]}),
    )
    .await;
    // Inside: an update whose patch names only the projected change.
    let updated = support::patch_widget(&api, "w1", json!({"size": 2})).await;
    // Left out by the filter, which reads a field the projection leaves out.
    support::create_widget(&api, &crd, "w2", json!({"size": 1, "tier": "dev"})).await;
    api.delete("w1", &DeleteParams::default()).await.unwrap();

    // Events arrive in the order the server reported the changes: an event for the change
    // outside the projection, or for w2, would come before w1's delete.
    let events = reader.take(3, WAIT).await;
    assert_eq!(
        summary(&events),
        [("created", "w1"), ("updated", "w1"), ("deleted", "w1")]
            .map(|(t, n)| (t.to_string(), n.to_string()))
    );
    let meta = |o: &DynamicObject, generation: i64| {
        json!({
            "name": "w1",
            "namespace": ns,
            "uid": o.metadata.uid.clone().unwrap(),
            "resourceVersion": o.metadata.resource_version.clone().unwrap(),
            "generation": generation,
        })
    };
    assert_eq!(
        events[0].data["object"],
        json!({
            "apiVersion": crd.resource.api_version,
            "kind": crd.kind,
            "metadata": meta(&created, 1),
            "spec": {"size": 1, "parts": [{"name": "p1"}, {"name": "p2"}]},
        })
    );
    assert_eq!(
        events[1].data["object"],
        json!({
            "apiVersion": crd.resource.api_version,
            "kind": crd.kind,
            "metadata": meta(&updated, 3),
            "spec": {"size": 2, "parts": [{"name": "p1"}, {"name": "p2"}]},
        })
    );
    assert_eq!(
        events[1].data["patch"],
        json!([{"op": "replace", "path": "/spec/size", "value": 2}])
    );
    // The patch chains from the previous event's normalized object.
    let mut doc = support::verify::normalized(&events[0].data["object"]);
    let patch: json_patch::Patch = serde_json::from_value(events[1].data["patch"].clone()).unwrap();
    json_patch::patch(&mut doc, &patch).unwrap();
    assert_eq!(doc, support::verify::normalized(&events[1].data["object"]));
    // The delete carries the projected object too.
    let deleted = &events[2].data["object"];
    assert_eq!(
        deleted["spec"],
        json!({"size": 2, "parts": [{"name": "p1"}, {"name": "p2"}]})
    );
    assert_eq!(
        deleted["metadata"]["uid"],
        created.metadata.uid.clone().unwrap()
    );
    assert!(deleted["metadata"].get("creationTimestamp").is_none());
    assert_eq!(bridge.stop().await.code(), Some(0));
}
