//! `filter` and `redact` end to end: the real kube-apiserver → crbridge (the binary) → the
//! real NATS JetStream. What a filter keeps out is never published, an object is first
//! published as `created` whenever it first matches, the next patch goes from what
//! consumers saw, and a delete is published exactly when the object was. A redacted value
//! is on no disk and in no message.

mod support;

use std::time::Duration;

use kube::api::{DeleteParams, DynamicObject};
use kube::Api;
use serde_json::json;
use support::bridge::{run_cli, Bridge};
use support::nats::{Reader, Received};

const WAIT: Duration = Duration::from_secs(30);

/// A config for `crd` in `ns` publishing to `stream`, with the watch's `filter` line.
fn config(
    dir: &std::path::Path,
    crd: &support::TestCrd,
    ns: &str,
    stream: &str,
    filter: &str,
) -> String {
    with_watch_line(dir, crd, ns, stream, &format!("filter: {filter}"))
}

/// A config for `crd` in `ns` publishing to `stream`, with `line` added to the watch.
fn with_watch_line(
    dir: &std::path::Path,
    crd: &support::TestCrd,
    ns: &str,
    stream: &str,
    line: &str,
) -> String {
    let cfg = support::nats_config(dir, crd, ns, stream);
    let with = cfg.replacen(
        "    sinks: [nats]\n",
        &format!("    {line}\n    sinks: [nats]\n"),
        1,
    );
    assert_ne!(cfg, with, "the watch's sinks line was not found");
    with
}

fn rv(o: &DynamicObject) -> String {
    o.metadata.resource_version.clone().unwrap()
}

fn summary(events: &[Received]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| (e.change().to_string(), e.attr("crbname").to_string()))
        .collect()
}

#[tokio::test]
async fn only_matching_changes_are_published_and_deletes_follow_what_was_published() {
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, "filter").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &crd.resource);
    let stream = support::unique("CRBF").to_uppercase().replace('-', "_");
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &crd, &ns, &stream, "\"object.spec.size >= 2\"");
    let mut bridge = Bridge::new(dir.path(), &cfg);
    bridge.start();
    bridge.wait_logged("list reconciled", WAIT).await;
    let mut reader = Reader::open(&stream).await;

    // w1 does not match at first: nothing is published and nothing stored.
    support::create_widget(&api, &crd, "w1", json!({"size": 1})).await;
    support::create_widget(&api, &crd, "w2", json!({"size": 5})).await;
    // w1 matches on an update: consumers never saw it, so it is created, whole.
    let first = support::patch_widget(&api, "w1", json!({"size": 3})).await;
    // Out of the filter again, then back in: the update goes from size 3 (what consumers
    // saw), not from size 0.
    support::patch_widget(&api, "w1", json!({"size": 0})).await;
    let back = support::patch_widget(&api, "w1", json!({"size": 4})).await;
    // Never published: its delete is silent too.
    support::create_widget(&api, &crd, "w3", json!({"size": 0})).await;
    api.delete("w3", &DeleteParams::default()).await.unwrap();
    api.delete("w1", &DeleteParams::default()).await.unwrap();

    // Events arrive in the order the server reported the changes, so anything about w3 or
    // the filtered versions of w1 would come before w1's delete.
    let events = reader.take(4, WAIT).await;
    assert_eq!(
        summary(&events),
        [
            ("created", "w2"),
            ("created", "w1"),
            ("updated", "w1"),
            ("deleted", "w1")
        ]
        .map(|(t, n)| (t.to_string(), n.to_string()))
    );
    let (created, updated, deleted) = (&events[1], &events[2], &events[3]);
    assert_eq!(created.attr("sequence"), support::sequence_of(&rv(&first)));
    assert_eq!(created.data["object"]["spec"]["size"], 3);
    assert!(created.data["previousResourceVersion"].is_null());
    assert_eq!(updated.attr("sequence"), support::sequence_of(&rv(&back)));
    assert_eq!(updated.data["previousResourceVersion"], rv(&first));
    // The patch goes between normalized forms, from what consumers last saw.
    let mut doc = support::verify::normalized(&created.data["object"]);
    let patch: json_patch::Patch = serde_json::from_value(updated.data["patch"].clone()).unwrap();
    json_patch::patch(&mut doc, &patch).unwrap();
    assert_eq!(doc, support::verify::normalized(&updated.data["object"]));
    assert_eq!(updated.data["object"]["spec"]["size"], 4);
    assert_eq!(deleted.data["previousResourceVersion"], rv(&back));
    assert_eq!(bridge.stop().await.code(), Some(0));
}

#[tokio::test]
async fn check_compiles_every_filter() {
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, "filterchk").await;
    let stream = support::unique("CRBFC").to_uppercase().replace('-', "_");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crbridge.yaml");
    let path_str = path.to_str().unwrap();

    std::fs::write(
        &path,
        config(dir.path(), &crd, &ns, &stream, "\"object.spec.size = 2\""),
    )
    .unwrap();
    let (status, out, _) = run_cli(&["check", "-c", path_str]);
    assert!(!status.success(), "{out}");
    assert!(out.starts_with("FAIL config: "), "{out}");
    assert!(
        out.contains(
            "crbridge.yaml: watches[0].filter: watch \"widgets\": invalid CEL expression \"object.spec.size = 2\": line 1, column 18: "
        ),
        "{out}"
    );

    std::fs::write(
        &path,
        config(dir.path(), &crd, &ns, &stream, "\"type != 'snapshot'\""),
    )
    .unwrap();
    let (_, out, _) = run_cli(&["check", "-c", path_str]);
    assert!(
        out.contains("ok   filter widgets: type != 'snapshot'"),
        "{out}"
    );
}

/// Every file under `dir`, recursively.
fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn redacted_values_reach_no_disk_and_no_message() {
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, "redact").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &crd.resource);
    let stream = support::unique("CRBR").to_uppercase().replace('-', "_");
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("redact.key");
    std::fs::write(&key_file, "test-redaction-key-0123456789\n").unwrap();
    let cfg = with_watch_line(dir.path(), &crd, &ns, &stream, "redact: [/spec/password]")
        + &format!("redactKey: file:{}\n", key_file.display());
    let mut bridge = Bridge::new(dir.path(), &cfg);
    bridge.start();
    bridge.wait_logged("list reconciled", WAIT).await;
    let mut reader = Reader::open(&stream).await;

    let raw = [
        support::unique("rawpw1"),
        support::unique("rawpw2"),
        support::unique("rawpw3"),
    ];
    support::create_widget(&api, &crd, "w1", json!({"size": 1, "password": raw[0]})).await;
    support::patch_widget(&api, "w1", json!({"size": 2})).await;
    support::patch_widget(&api, "w1", json!({"password": raw[1]})).await;
    api.delete("w1", &DeleteParams::default()).await.unwrap();
    // w2 stays: its state remains stored.
    support::create_widget(&api, &crd, "w2", json!({"size": 1, "password": raw[2]})).await;

    let events = reader.take(5, WAIT).await;
    assert_eq!(
        summary(&events),
        [
            ("created", "w1"),
            ("updated", "w1"),
            ("updated", "w1"),
            ("deleted", "w1"),
            ("created", "w2")
        ]
        .map(|(t, n)| (t.to_string(), n.to_string()))
    );
    for e in &events {
        let text = format!("{} {:?} {}", e.subject, e.headers, e.data);
        for r in &raw {
            assert!(!text.contains(r.as_str()), "raw value in a message: {text}");
        }
        let password = e.data["object"]["spec"]["password"].as_str().unwrap();
        assert!(password.starts_with("redacted:sha256:"), "{password}");
    }
    let hash = |i: usize| events[i].data["object"]["spec"]["password"].clone();
    // The same value gives the same hash; a new value is a change with a new hash.
    assert_eq!(hash(0), hash(1));
    assert_ne!(hash(1), hash(2));
    let replaced = json!({"op": "replace", "path": "/spec/password", "value": hash(2)});
    assert!(
        events[2].data["patch"]
            .as_array()
            .unwrap()
            .contains(&replaced),
        "{}",
        events[2].data["patch"]
    );
    assert_eq!(bridge.stop().await.code(), Some(0));

    // No file of the state directory holds a raw value, compressed or not: the bytes are
    // searched, and every stored state and outbox entry is decoded and searched.
    let state = Bridge::state_path(dir.path());
    for file in files(&state) {
        let bytes = std::fs::read(&file).unwrap();
        for r in &raw {
            assert!(
                !bytes.windows(r.len()).any(|w| w == r.as_bytes()),
                "raw value in {}",
                file.display()
            );
        }
    }
    let store =
        crbridge::store::Store::open(&state, &crbridge::store::StoreOptions::default()).unwrap();
    let mut decoded = String::new();
    for entry in store.outbox_range(1, u64::MAX) {
        let (_, entry) = entry.unwrap();
        decoded.push_str(entry.event.data.get());
    }
    let objects: Vec<_> = store
        .objects_after(&crbridge::store::object_prefix("widgets", None), None)
        .map(|r| r.unwrap().1.object.to_string())
        .collect();
    assert_eq!(objects.len(), 1, "w2 is stored");
    decoded.push_str(&objects.concat());
    assert!(decoded.contains("redacted:sha256:"));
    for r in &raw {
        assert!(
            !decoded.contains(r.as_str()),
            "raw value in the store: {decoded}"
        );
    }
    assert!(!bridge.raw_log().contains("rawpw"), "raw value in the logs");
}
