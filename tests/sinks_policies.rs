//! Sink policies and the stdout sink, end to end: oversized objects (NATS refuses payloads
//! over 1 MiB), dead letters, and structured JSON lines on stdout.

mod support;

use std::time::Duration;

use kube::api::DynamicObject;
use kube::Api;
use serde_json::{json, Value};
use support::bridge::Bridge;
use support::nats::Reader;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn oversized_events_go_patch_only_then_to_dead_letters() {
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, "oversize").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &crd.resource);
    let dir = tempfile::tempdir().unwrap();
    let stream = support::unique("BIG").to_uppercase().replace('-', "_");
    let mut bridge = Bridge::new(
        dir.path(),
        &support::nats_config(dir.path(), &crd, &ns, &stream),
    );
    bridge.start();
    bridge.wait_logged("list reconciled", WAIT).await;
    let mut reader = Reader::open(&stream).await;

    // 600 KB: object + patch (which adds the whole object) exceed NATS's 1 MiB; the patch
    // alone fits, so the event goes without `data.object`.
    let big = "x".repeat(600 * 1024);
    support::create_widget(&api, &crd, "big", json!({"blob": big})).await;
    // 1.1 MB: too large even patch-only: a dead letter, and the sink goes on.
    let huge = "y".repeat(1100 * 1024);
    support::create_widget(&api, &crd, "huge", json!({"blob": huge})).await;
    support::create_widget(&api, &crd, "small", json!({"size": 1})).await;

    let got = reader.take(2, WAIT).await;
    assert_eq!(got[0].attr("crbname"), "big");
    assert!(got[0].data.get("object").is_none(), "object dropped");
    assert_eq!(
        got[0].data["patch"][0]["value"]["spec"]["blob"]
            .as_str()
            .map(str::len),
        Some(600 * 1024)
    );
    assert_eq!(got[1].attr("crbname"), "small");
    assert!(got[1].data.get("object").is_some());
    let letter = bridge
        .wait_logged("event refused by the sink; kept as a dead letter", WAIT)
        .await;
    assert_eq!(letter["subject"], format!("{ns}/huge"));
    assert!(!bridge
        .logged("event too large; sent without data.object")
        .is_empty());
    bridge.stop().await;
}

#[tokio::test]
async fn stdout_sink_prints_one_structured_event_per_line() {
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, "stdout").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &crd.resource);
    let dir = tempfile::tempdir().unwrap();
    let mut bridge = Bridge::new(
        dir.path(),
        &support::config_with_sinks(
            dir.path(),
            &crd,
            &ns,
            &["out"],
            "  out: {type: stdout}\n",
            "",
        ),
    );
    bridge.start();
    bridge.wait_logged("list reconciled", WAIT).await;
    support::create_widget(&api, &crd, "a", json!({"size": 1})).await;
    support::patch_widget(&api, "a", json!({"size": 2})).await;
    let lines = support::eventually("two events on stdout", WAIT, || {
        let out = bridge.stdout();
        async move {
            let lines: Vec<Value> = out
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            (lines.len() >= 2).then_some(lines)
        }
    })
    .await;
    for l in &lines {
        support::cloudevents::parse_structured(l.to_string().as_bytes());
    }
    assert_eq!(lines[0]["type"], "io.crbridge.resource.created");
    assert_eq!(lines[1]["type"], "io.crbridge.resource.updated");
    assert_eq!(lines[1]["data"]["object"]["spec"]["size"], 2);
    bridge.stop().await;
}

#[tokio::test]
async fn a_full_outbox_pauses_the_watch_and_nothing_is_lost() {
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, "fullbox").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &crd.resource);
    let dir = tempfile::tempdir().unwrap();
    let stream = support::unique("FULL").to_uppercase().replace('-', "_");
    // The NATS sink points nowhere: nothing is acked, so a 4 KiB outbox fills up.
    let good = support::nats_config(dir.path(), &crd, &ns, &stream)
        .replace("state:\n", "state:\n  outbox: {max_bytes: 4KiB}\n");
    let broken = good.replace(&support::env("CRBRIDGE_NATS_URL"), "nats://127.0.0.1:1");
    let mut bridge = Bridge::new(dir.path(), &broken);
    bridge.start();
    bridge.wait_logged("list reconciled", WAIT).await;
    for i in 0..10 {
        support::create_widget(&api, &crd, &format!("w{i}"), json!({"size": i})).await;
    }
    bridge
        .wait_logged(
            "outbox full: watches paused until the slowest sink catches up",
            WAIT,
        )
        .await;
    bridge.stop().await;

    // Sink fixed: the backlog drains, the watch resumes, every object arrives.
    std::fs::write(&bridge.config, good).unwrap();
    bridge.start();
    let mut reader = Reader::open(&stream).await;
    let got = reader
        .until(Duration::from_secs(60), |evs| {
            (0..10).all(|i| evs.iter().any(|e| e.attr("crbname") == format!("w{i}")))
        })
        .await;
    assert!(got.iter().all(|e| e.change() == "created"));
    bridge.stop().await;
}
