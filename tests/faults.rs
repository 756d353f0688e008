//! The fault suite: under a steady stream of creates / updates / deletes, crash crbridge,
//! stop the brokers and the API server, fill its disk and feed it odd objects; then an
//! independent verifier (tests/support/verify.rs) checks every sink against the API
//! server's final state. Each test appends its figures to target/fault-report.md.
//!
//! Faults stop shared servers, so this binary's tests run one at a time (SERIAL), and cargo
//! runs test binaries one after another. `CRBRIDGE_FAULT_ITERATIONS` (default 10) sets the
//! kill -9 iterations; raise it for a long run.

mod support;

use std::time::Duration;

use kube::api::DynamicObject;
use kube::Api;
use rand::Rng;
use serde_json::json;
use support::bridge::Bridge;
use support::fault::{
    assert_clean, collect_amqp, collect_kafka, collect_nats, quiesce, report, truth, Collected,
    Workload,
};
use support::servers::{restart_server, signal_server};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const WAIT: Duration = Duration::from_secs(60);

struct Rig {
    api: Api<DynamicObject>,
    crd: support::TestCrd,
    dir: tempfile::TempDir,
    bridge: Bridge,
    sinks: Vec<Collected>,
    stream: String,
}

/// A bridge watching a fresh CRD, fanning out to NATS, Kafka and RabbitMQ, each read back
/// by a collector. `state_yaml` goes under `state:`.
async fn rig(prefix: &str, state_yaml: &str) -> Rig {
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, prefix).await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &crd.resource);
    let dir = tempfile::tempdir().unwrap();
    let stream = support::unique("FAULT").to_uppercase().replace('-', "_");
    let topic = support::unique("crb-fault");
    let exchange = support::unique("crb-fault-x");
    let queue = support::unique("crb-fault-q");
    let sinks_yaml = format!(
        "  nats:\n    type: nats\n    url: {nats}\n    stream: {stream}\n    subject: \"{stream}.{{name}}\"\n  kafka:\n    type: kafka\n    brokers: {kafka}\n    topic: \"{topic}\"\n  rabbit:\n    type: amqp\n    url: \"{amqp}\"\n    exchange: {exchange}\n    routingKey: \"{{name}}.{{type}}\"\n",
        nats = support::env("CRBRIDGE_NATS_URL"),
        kafka = support::env("CRBRIDGE_KAFKA_BROKERS"),
        amqp = support::env("CRBRIDGE_AMQP_URL"),
    );
    let yaml = support::config_with_sinks(
        dir.path(),
        &crd,
        &ns,
        &["nats", "kafka", "rabbit"],
        &sinks_yaml,
        "",
    )
    .replace("state:\n", &format!("state:\n{state_yaml}"));
    let sinks = vec![
        collect_nats("nats", &stream).await,
        collect_kafka("kafka", &topic),
        collect_amqp("rabbit", &exchange, &queue).await,
    ];
    let bridge = Bridge::new(dir.path(), &yaml);
    Rig {
        api,
        crd,
        dir,
        bridge,
        sinks,
        stream,
    }
}

fn iterations() -> usize {
    std::env::var("CRBRIDGE_FAULT_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

async fn finish(fault: &str, iterations: usize, mut r: Rig, workload: Workload) {
    let created = workload.stop().await;
    let t = truth(&r.api, &created).await;
    let (took, verdicts) = quiesce(&r.sinks, &t, Duration::from_secs(120)).await;
    report(fault, iterations, took, &verdicts);
    if r.bridge.is_running() {
        r.bridge.stop().await;
    }
    assert_clean(fault, &verdicts);
    drop(r.dir);
}

#[tokio::test]
async fn kill_9_at_random_points_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let mut r = rig("fault-kill", "").await;
    // Objects present before the first start make the initial list take a while, so some
    // kills land in it.
    for i in 0..150 {
        support::create_widget(&r.api, &r.crd, &format!("p{i}"), json!({"n": i})).await;
    }
    let workload = Workload::start(r.api.clone(), &r.crd, 40, Duration::from_millis(5));
    let n = iterations();
    for i in 0..n {
        r.bridge.start();
        let wait = rand::rng().random_range(20..1500);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        r.bridge.kill9();
        if i % 3 == 2 {
            // Down long enough for history to go: the next start relists (and may be
            // killed while it does).
            tokio::time::sleep(Duration::from_millis(200)).await;
            support::compact_etcd();
        }
    }
    r.bridge.start();
    finish(
        "kill -9 at random points (initial list, relist, mid-burst)",
        n,
        r,
        workload,
    )
    .await;
}

#[tokio::test]
async fn brokers_stopped_and_restarted_lose_nothing() {
    let _serial = SERIAL.lock().await;
    let mut r = rig("fault-brokers", "").await;
    let workload = Workload::start(r.api.clone(), &r.crd, 30, Duration::from_millis(10));
    r.bridge.start();
    r.bridge.wait_logged("crbridge running", WAIT).await;
    for (server, signal) in [
        ("nats", "KILL"),
        ("kafka", "KILL"),
        ("rabbitmq", "TERM"),
        ("nats", "TERM"),
    ] {
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(500..1500))).await;
        signal_server(server, signal);
        tokio::time::sleep(Duration::from_secs(2)).await;
        restart_server(server).await;
    }
    finish(
        "brokers stopped (SIGKILL/SIGTERM) and restarted",
        4,
        r,
        workload,
    )
    .await;
}

#[tokio::test]
async fn api_server_restart_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let mut r = rig("fault-apiserver", "").await;
    let workload = Workload::start(r.api.clone(), &r.crd, 30, Duration::from_millis(10));
    r.bridge.start();
    r.bridge.wait_logged("crbridge running", WAIT).await;
    workload.progress(50).await;
    // A crash of the API server (and its etcd): SIGKILL, then `up` starts it again.
    signal_server("kube", "KILL");
    restart_server("kube").await;
    // Real changes after the restart, seen by a watch that had to reconnect.
    workload.progress(50).await;
    finish("kube-apiserver killed and restarted", 1, r, workload).await;
}

#[tokio::test]
async fn odd_objects_do_not_block_the_others() {
    let _serial = SERIAL.lock().await;
    let mut r = rig("fault-odd", "").await;
    let workload = Workload::start(r.api.clone(), &r.crd, 20, Duration::from_millis(10));
    r.bridge.start();
    r.bridge.wait_logged("crbridge running", WAIT).await;
    let mut deep = json!("bottom");
    for _ in 0..90 {
        deep = json!({ "d": deep });
    }
    let odd = [
        ("deep", json!({ "nest": deep })),
        ("wide", json!({ "items": (0..20000).collect::<Vec<_>>() })),
        (
            "types",
            json!({"f": 1.5e300, "neg": -0.0, "big": 9007199254740993u64, "null": null, "empty": {}, "e": [], "uni": "ü🦀\u{0}x", "k/with~slashes": {"~0": "~1"}}),
        ),
    ];
    for (name, spec) in &odd {
        support::create_widget(&r.api, &r.crd, name, spec.clone()).await;
        support::patch_widget(&r.api, name, json!({"touched": true})).await;
    }
    finish(
        "odd objects (deep nesting, 20k-element array, odd types and keys)",
        1,
        r,
        workload,
    )
    .await;
}

#[tokio::test]
async fn a_full_disk_pauses_capture_and_recovers_without_a_restart() {
    let _serial = SERIAL.lock().await;
    // The state directory on an 16 MiB tmpfs, filled up while crbridge runs.
    let mnt = tempfile::tempdir().unwrap();
    let m = mnt.path().to_str().unwrap().to_string();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs", &m])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "mounting a tmpfs for the disk-full fault needs root (CAP_SYS_ADMIN)"
    );
    struct Unmount(String);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(m.clone());
    let mut r = rig("fault-disk", "").await;
    let yaml = std::fs::read_to_string(&r.bridge.config).unwrap().replace(
        &r.dir.path().join("state").display().to_string(),
        &format!("{m}/state"),
    );
    std::fs::write(&r.bridge.config, yaml).unwrap();
    r.bridge.start();
    let line = r.bridge.wait_logged("http listening", WAIT).await;
    let base = format!("http://{}", line["addr"].as_str().unwrap());
    let line = r.bridge.wait_logged("admin listening", WAIT).await;
    let admin = format!("http://{}", line["addr"].as_str().unwrap());
    r.bridge.wait_logged("crbridge running", WAIT).await;
    let token = support::admin_token(std::path::Path::new(&format!("{m}/state")));
    let workload = Workload::start(r.api.clone(), &r.crd, 30, Duration::from_millis(10));
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Fill the disk.
    let filler = format!("{m}/filler");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", &format!("of={filler}"), "bs=64k"])
        .stderr(std::process::Stdio::null())
        .status();
    let failing = support::eventually("readiness to turn false on a full disk", WAIT, || {
        let base = base.clone();
        async move {
            let (code, body) = support::http_get(&format!("{base}/readyz"));
            (code == 503 && body.contains("state store commits failing")).then_some(body)
        }
    })
    .await;
    assert!(failing.contains("commits failing"));
    assert_eq!(
        support::http_get(&format!("{base}/healthz")).0,
        200,
        "alive while the disk is full"
    );
    // The checkpoint does not move while commits fail (status may briefly fail while the
    // store is reopened: ask until it answers).
    let checkpoint = || {
        let admin = admin.clone();
        let token = token.clone();
        async move {
            support::eventually("a status answer", WAIT, || {
                let admin = admin.clone();
                let token = token.clone();
                async move {
                    let (code, body) =
                        support::http_get_authorized(&format!("{admin}/admin/status"), &token);
                    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
                    (code == 200).then(|| v["watches"][0]["checkpoints"].clone())
                }
            })
            .await
        }
    };
    let c1 = checkpoint().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let c2 = checkpoint().await;
    assert_eq!(c1, c2, "checkpoint advanced while commits fail");

    // Space again: capture recovers by itself.
    std::fs::remove_file(&filler).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while support::http_get(&format!("{base}/readyz")).0 != 200 {
        if tokio::time::Instant::now() > deadline {
            let log = r.bridge.raw_log();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            panic!(
                "readiness did not come back after freeing space; log tail:\n{}",
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        r.bridge.is_running(),
        "crbridge must not exit on a full disk"
    );
    finish("state disk full, then space freed", 1, r, workload).await;
}

/// The stream vanishes under a running bridge, a few changes are made, the stream comes
/// back: returns the verdict of a consumer of the new stream.
async fn stream_outage(weakened: bool) -> support::verify::Verdict {
    use async_nats::jetstream;
    let mut r = rig(
        if weakened {
            "fault-teeth"
        } else {
            "fault-teeth-ok"
        },
        "  flushEvery: 50ms\n",
    )
    .await;
    if weakened {
        r.bridge.env("CRBRIDGE_TEST_ACK_BEFORE_BROKER", "1");
    }
    r.bridge.start();
    r.bridge.wait_logged("crbridge running", WAIT).await;
    support::create_widget(&r.api, &r.crd, "before", json!({"n": 0})).await;
    support::eventually("the first event", WAIT, || {
        let n = r.sinks[0].snapshot().len();
        async move { (n > 0).then_some(()) }
    })
    .await;
    let js = jetstream::new(
        async_nats::connect(support::env("CRBRIDGE_NATS_URL"))
            .await
            .unwrap(),
    );
    js.delete_stream(&r.stream).await.unwrap();
    for i in 0..5 {
        support::create_widget(&r.api, &r.crd, &format!("t{i}"), json!({"n": i})).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    js.create_stream(jetstream::stream::Config {
        name: r.stream.clone(),
        subjects: vec![format!("{}.*", r.stream)],
        duplicate_window: Duration::from_secs(600),
        ..Default::default()
    })
    .await
    .unwrap();
    let fresh = collect_nats("nats", &r.stream).await;
    support::create_widget(&r.api, &r.crd, "after", json!({"n": 9})).await;
    // Judge only what the new stream must hold: t0..t4 and "after".
    let mut t = truth(&r.api, &Default::default()).await;
    let before: Vec<String> = r.sinks[0]
        .snapshot()
        .iter()
        .map(|e| e.uid.clone())
        .collect();
    t.live.retain(|uid, _| !before.contains(uid));
    let (took, verdicts) = quiesce(std::slice::from_ref(&fresh), &t, Duration::from_secs(30)).await;
    let label = if weakened {
        "teeth: stream lost under a bridge that acks before the broker (test-only)"
    } else {
        "teeth control: the same outage, correct bridge"
    };
    report(label, 1, took, &verdicts);
    r.bridge.stop().await;
    verdicts.into_iter().next().unwrap().1
}

#[tokio::test]
async fn the_verifier_catches_a_bridge_that_acks_before_the_broker() {
    let _serial = SERIAL.lock().await;
    let weak = stream_outage(true).await;
    assert!(
        weak.lost.len() >= 5,
        "the verifier must report the 5 lost objects of a bridge that acks before the broker: {weak:#?}"
    );
    let control = stream_outage(false).await;
    assert!(
        control.ok(),
        "the correct bridge re-sends after the outage: {control:#?}"
    );
}

#[tokio::test]
async fn a_long_outage_fills_the_outbox_pauses_the_watch_and_recovers() {
    let _serial = SERIAL.lock().await;
    // A 32 KiB outbox: a frozen NATS fills it within seconds.
    let mut r = rig("fault-outbox", "  outbox: {max_bytes: 32KiB}\n").await;
    let workload = Workload::start(r.api.clone(), &r.crd, 30, Duration::from_millis(10));
    r.bridge.start();
    r.bridge.wait_logged("crbridge running", WAIT).await;
    signal_server("nats", "STOP");
    r.bridge
        .wait_logged(
            "outbox full: watches paused until the slowest sink catches up",
            WAIT,
        )
        .await;
    workload.progress(30).await;
    // Crash while paused, with history gone meanwhile: the restart must relist and
    // reconcile what changed while the watch was held back.
    r.bridge.kill9();
    support::compact_etcd();
    signal_server("nats", "CONT");
    r.bridge.start();
    r.bridge
        .wait_logged("resourceVersion expired (410 Gone), relisting", WAIT)
        .await;
    workload.progress(30).await;
    finish(
        "outbox full during a broker outage, kill -9, relist",
        1,
        r,
        workload,
    )
    .await;
}
