//! Supervision of the long-running tasks: a panic injected (debug builds only, through
//! `CRBRIDGE_TEST_PANIC`) into a dispatcher restarts it and shows in `/healthz` within
//! seconds; one injected into capture stops the process with a non-zero exit, and the next
//! run delivers everything; one in the dispatcher of a stopped-instance snapshot fails the
//! command instead of leaving it waiting.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use kube::api::DynamicObject;
use kube::Api;
use serde_json::{json, Value};
use support::bridge::Bridge;
use support::nats::{Reader, Received};

const WAIT: Duration = Duration::from_secs(30);

/// Names of the objects whose `created` events are in `events`.
fn created(events: &[Received]) -> BTreeSet<String> {
    events
        .iter()
        .filter(|e| e.change() == "created")
        .map(|e| {
            e.attr("subject")
                .rsplit('/')
                .next()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

fn names(n: &[&str]) -> BTreeSet<String> {
    n.iter().map(|s| s.to_string()).collect()
}

/// The ERROR line of `task`'s failure with message `msg`, if logged.
fn failure(bridge: &Bridge, msg: &str, task: &str) -> Option<Value> {
    bridge
        .logged(msg)
        .into_iter()
        .find(|l| l["task"] == task && l["level"] == "ERROR")
}

#[tokio::test]
async fn a_panicking_dispatcher_shows_in_healthz_restarts_and_keeps_delivering() {
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, "sup-dispatch").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &crd.resource);
    let dir = tempfile::tempdir().unwrap();
    let stream = support::unique("SUPD").to_uppercase().replace('-', "_");
    let mut bridge = Bridge::new(
        dir.path(),
        &support::nats_config(dir.path(), &crd, &ns, &stream),
    );
    bridge.env("CRBRIDGE_TEST_PANIC", "dispatch/nats:2");
    bridge.start();
    let base = bridge.http_base().await;
    support::eventually("/readyz to answer 200", WAIT, || {
        let base = base.clone();
        async move { (support::http_get(&format!("{base}/readyz")).0 == 200).then_some(()) }
    })
    .await;
    let mut reader = Reader::open(&stream).await;

    // Two acked events make the dispatcher panic.
    support::create_widget(&api, &crd, "before-1", json!({"size": 1})).await;
    support::create_widget(&api, &crd, "before-2", json!({"size": 1})).await;
    let body = support::eventually(
        "/healthz to answer 503 naming the dispatcher",
        Duration::from_secs(5),
        || {
            let base = base.clone();
            async move {
                let (code, body) = support::http_get(&format!("{base}/healthz"));
                (code == 503).then_some(body)
            }
        },
    )
    .await;
    assert!(body.contains("task dispatch/nats panicked"), "{body}");
    let line = failure(&bridge, "task failed: restarting", "dispatch/nats")
        .unwrap_or_else(|| panic!("no ERROR line naming dispatch/nats:\n{}", bridge.raw_log()));
    assert!(
        line["error"]
            .as_str()
            .unwrap_or("")
            .contains("test panic injected into dispatch/nats"),
        "{line}"
    );

    // Restarted: alive again, and events created after the panic arrive.
    support::eventually("/healthz to answer 200 again", WAIT, || {
        let base = base.clone();
        async move { (support::http_get(&format!("{base}/healthz")).0 == 200).then_some(()) }
    })
    .await;
    support::create_widget(&api, &crd, "after-1", json!({"size": 1})).await;
    support::create_widget(&api, &crd, "after-2", json!({"size": 1})).await;
    let want = names(&["before-1", "before-2", "after-1", "after-2"]);
    reader
        .until(WAIT, |got| created(got).is_superset(&want))
        .await;
    let (_, metrics) = support::http_get(&format!("{base}/metrics"));
    assert!(
        metrics.contains("crbridge_task_restarts_total{task=\"dispatch/nats\"} 1"),
        "{metrics}"
    );
    assert!(bridge.stop().await.success());
}

#[tokio::test]
async fn a_panicking_capture_stops_the_process_and_the_next_run_loses_nothing() {
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, "sup-capture").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &crd.resource);
    let dir = tempfile::tempdir().unwrap();
    let stream = support::unique("SUPC").to_uppercase().replace('-', "_");
    let mut bridge = Bridge::new(
        dir.path(),
        &support::nats_config(dir.path(), &crd, &ns, &stream),
    );
    bridge.env("CRBRIDGE_TEST_PANIC", "capture:2");
    bridge.start();
    let base = bridge.http_base().await;
    support::eventually("/readyz to answer 200", WAIT, || {
        let base = base.clone();
        async move { (support::http_get(&format!("{base}/readyz")).0 == 200).then_some(()) }
    })
    .await;
    let mut reader = Reader::open(&stream).await;

    // Two committed events make capture panic; the third may be in its hands or not yet.
    support::create_widget(&api, &crd, "first-1", json!({"size": 1})).await;
    support::create_widget(&api, &crd, "first-2", json!({"size": 1})).await;
    support::create_widget(&api, &crd, "first-3", json!({"size": 1})).await;
    let status = bridge.wait_exit(WAIT).await;
    assert!(!status.success(), "exit status {status}");
    let line = failure(&bridge, "task failed: stopping crbridge", "capture")
        .unwrap_or_else(|| panic!("no ERROR line naming capture:\n{}", bridge.raw_log()));
    assert!(
        line["error"]
            .as_str()
            .unwrap_or("")
            .contains("test panic injected into capture"),
        "{line}"
    );

    // Changes while it is down, then a run without the fault: everything arrives.
    support::create_widget(&api, &crd, "while-down", json!({"size": 1})).await;
    bridge.remove_env("CRBRIDGE_TEST_PANIC");
    bridge.start();
    let want = names(&["first-1", "first-2", "first-3", "while-down"]);
    reader
        .until(WAIT, |got| created(got).is_superset(&want))
        .await;
    assert!(bridge.stop().await.success());
}

#[tokio::test]
async fn a_dispatcher_panicking_in_a_stopped_snapshot_fails_the_command_instead_of_hanging() {
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, "sup-snapshot").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &crd.resource);
    let dir = tempfile::tempdir().unwrap();
    let stream = support::unique("SUPS").to_uppercase().replace('-', "_");
    let mut bridge = Bridge::new(
        dir.path(),
        &support::nats_config(dir.path(), &crd, &ns, &stream),
    );
    bridge.start();
    let mut reader = Reader::open(&stream).await;
    for n in ["s-1", "s-2", "s-3"] {
        support::create_widget(&api, &crd, n, json!({"size": 1})).await;
    }
    reader.take(3, WAIT).await;
    assert!(bridge.stop().await.success());

    // Stopped: the command publishes the snapshot itself; its dispatcher panics at once.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_crbridge"))
        .args(["snapshot", "-c"])
        .arg(&bridge.config)
        .args(["--watch", "widgets"])
        .env("CRBRIDGE_TEST_PANIC", "dispatch/nats:0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawning crbridge snapshot");
    let deadline = tokio::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if tokio::time::Instant::now() >= deadline {
            child.kill().ok();
            child.wait().ok();
            panic!("the snapshot command still runs after {WAIT:?}: it hangs");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("sink nats: the dispatcher panicked: test panic injected into dispatch/nats"),
        "{err}"
    );
}
