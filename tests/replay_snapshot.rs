//! The operator's commands against the real servers: `replay`, `snapshot`, `status` (on a
//! running instance through its admin endpoint, and on a stopped one) and `tail`.

mod support;

use std::time::Duration;

use kube::api::DynamicObject;
use kube::Api;
use lapin::options::{BasicGetOptions, QueuePurgeOptions};
use serde_json::{json, Value};
use support::bridge::{run_cli, Bridge};

const WAIT: Duration = Duration::from_secs(30);

/// Reads `n` messages from `queue`: (message_id, type).
async fn drain(ch: &lapin::Channel, queue: &str, n: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while out.len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {n} messages: {out:?}",
            out.len()
        );
        match ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            Some(m) => {
                let p = &m.delivery.properties;
                let ty = p
                    .headers()
                    .clone()
                    .unwrap_or_default()
                    .inner()
                    .get("cloudEvents:type")
                    .and_then(|v| match v {
                        lapin::types::AMQPValue::LongString(s) => {
                            Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
                        }
                        _ => None,
                    })
                    .unwrap_or_default();
                out.push((p.message_id().as_ref().unwrap().to_string(), ty));
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    out
}

fn status(cfg: &str) -> Value {
    let (st, out, err) = run_cli(&["status", "-c", cfg, "--output", "json"]);
    assert!(st.success(), "status failed: {err}");
    serde_json::from_str(&out).unwrap()
}

#[tokio::test]
async fn replay_snapshot_and_status_on_a_running_and_a_stopped_instance() {
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, "replay").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &crd.resource);
    let dir = tempfile::tempdir().unwrap();
    let exchange = support::unique("crb-replay-x");
    let queue = support::unique("crb-replay-q");
    let (_conn, ch) = support::amqp_bound_queue(&exchange, &queue).await;
    let sinks = format!(
        "  rabbit:\n    type: amqp\n    url: \"{}\"\n    exchange: {exchange}\n    routingKey: \"{{name}}.{{type}}\"\n",
        support::env("CRBRIDGE_AMQP_URL")
    );
    let port = support::free_port();
    let yaml = support::config_with_sinks(dir.path(), &crd, &ns, &["rabbit"], &sinks, "").replace(
        "admin:\n  listen: 127.0.0.1:0",
        &format!("admin:\n  listen: 127.0.0.1:{port}"),
    );
    let mut bridge = Bridge::new(dir.path(), &yaml);
    let cfg = bridge.config.to_str().unwrap().to_string();
    bridge.start();
    bridge.wait_logged("sink connected", WAIT).await;
    for n in ["a", "b", "c"] {
        support::create_widget(&api, &crd, n, json!({"size": 1})).await;
    }
    support::patch_widget(&api, "a", json!({"size": 2})).await;
    let first = drain(&ch, &queue, 4).await;

    // Running: status through the admin endpoint.
    let s = status(&cfg);
    assert_eq!(s["running"], true);
    assert_eq!(s["watches"][0]["objects"], 3);
    assert!(s["watches"][0]["checkpoints"][0][1].is_string());
    assert!(s["watches"][0]["last_event"].is_string());
    assert_eq!(s["sinks"][0]["cursor"], s["last_seq"]);
    assert_eq!(s["sinks"][0]["lag_events"], 0);
    assert_eq!(s["sinks"][0]["dead_letters"], 0);

    // The consumer loses its data; a replay on the running instance brings it back with
    // the same ids.
    ch.queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
        .await
        .unwrap();
    let (st, out, err) = run_cli(&["replay", "-c", &cfg, "--sink", "rabbit", "--from-seq", "1"]);
    assert!(st.success(), "replay failed: {err}");
    assert!(out.contains("replayed 4 events to sink rabbit"), "{out}");
    assert!(err.contains("replay:"), "progress is shown: {err}");
    assert_eq!(drain(&ch, &queue, 4).await, first);

    // Snapshot while running: one snapshot event per object.
    let (st, out, err) = run_cli(&["snapshot", "-c", &cfg, "--watch", "widgets"]);
    assert!(st.success(), "snapshot failed: {err}");
    assert!(out.contains("3 events queued"), "{out}");
    let snaps = drain(&ch, &queue, 3).await;
    assert!(
        snaps.iter().all(|(_, t)| t.contains("snapshot")),
        "{snaps:?}"
    );

    // Stopped: status from the state directory, replay by time opens it directly.
    assert_eq!(bridge.stop().await.code(), Some(0));
    let s = status(&cfg);
    assert_eq!(s["running"], false);
    assert_eq!(s["watches"][0]["objects"], 3);
    let (st, out, err) = run_cli(&[
        "replay", "-c", &cfg, "--sink", "rabbit", "--since", "1h", "--watch", "widgets",
    ]);
    assert!(st.success(), "stopped replay failed: {err}");
    assert!(out.contains("replayed 7 events"), "{out}");
    let again = drain(&ch, &queue, 7).await;
    assert_eq!(&again[..4], &first[..]);

    // Bad names are one clear line.
    let (st, _, err) = run_cli(&["replay", "-c", &cfg, "--sink", "kafka", "--from-seq", "1"]);
    assert!(!st.success());
    assert!(
        err.contains("unknown sink \"kafka\" (configured: rabbit)"),
        "{err}"
    );
}

#[tokio::test]
async fn replay_beyond_retention_is_refused_naming_the_oldest_point() {
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, "retention").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &crd.resource);
    let dir = tempfile::tempdir().unwrap();
    let stream = support::unique("RET").to_uppercase().replace('-', "_");
    let yaml = support::nats_config(dir.path(), &crd, &ns, &stream)
        .replace("state:\n", "state:\n  outbox: {retention: 1s}\n");
    let mut bridge = Bridge::new(dir.path(), &yaml);
    let cfg = bridge.config.to_str().unwrap().to_string();
    bridge.start();
    bridge.wait_logged("list reconciled", WAIT).await;
    let mut reader = support::nats::Reader::open(&stream).await;
    support::create_widget(&api, &crd, "a", json!({"size": 1})).await;
    support::create_widget(&api, &crd, "b", json!({"size": 1})).await;
    reader.take(2, WAIT).await;
    // Acked and older than 1 s: garbage collection (every second) removes them.
    bridge.wait_logged("outbox garbage collected", WAIT).await;
    bridge.stop().await;
    let (st, _, err) = run_cli(&["replay", "-c", &cfg, "--sink", "nats", "--from-seq", "1"]);
    assert!(!st.success(), "a garbage-collected range must be refused");
    assert!(err.contains("seq 1 is no longer retained"), "{err}");
    assert!(err.contains("oldest retained event is"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[tokio::test]
async fn tail_prints_events_for_people_and_for_pipes() {
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, "tail").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &crd.resource);
    let dir = tempfile::tempdir().unwrap();
    let stream = support::unique("TAIL").to_uppercase().replace('-', "_");
    let mut bridge = Bridge::new(
        dir.path(),
        &support::nats_config(dir.path(), &crd, &ns, &stream),
    );
    let cfg = bridge.config.to_str().unwrap().to_string();
    bridge.start();
    bridge.wait_logged("list reconciled", WAIT).await;
    let mut reader = support::nats::Reader::open(&stream).await;
    support::create_widget(&api, &crd, "t1", json!({"size": 1})).await;
    support::patch_widget(&api, "t1", json!({"size": 5})).await;
    reader.take(2, WAIT).await;

    let (st, out, err) = run_cli(&[
        "tail",
        "-c",
        &cfg,
        "--sink",
        "nats",
        "--from-start",
        "--count",
        "2",
    ]);
    assert!(st.success(), "tail failed: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].contains("created") && lines[0].contains(&format!("{ns}/t1")),
        "{out}"
    );
    assert!(
        lines[1].contains("updated") && lines[1].contains("replace /spec/size=5"),
        "{out}"
    );

    let (st, out, _) = run_cli(&[
        "tail",
        "-c",
        &cfg,
        "--sink",
        "nats",
        "--from-start",
        "--count",
        "1",
        "--output",
        "json",
        "--watch",
        "widgets",
    ]);
    assert!(st.success());
    let e: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(e["type"], "io.crbridge.resource.created");
    assert_eq!(e["data"]["object"]["metadata"]["name"], "t1");
    bridge.stop().await;
}
