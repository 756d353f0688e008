//! The consumer examples under `examples/consumers/` (Python on RabbitMQ, JavaScript on
//! Kafka) run against a real crbridge and the real brokers: each must receive every event,
//! drop the duplicates a `crbridge replay` adds, chain every update's patch onto the previous
//! object, and end with the objects the API server holds.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use kube::api::{DeleteParams, DynamicObject};
use kube::Api;
use serde_json::{json, Value};
use support::bridge::{run_cli, Bridge};

const WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// Harness shared by the consumer-example tests (one per language).
// ---------------------------------------------------------------------------------------

/// How long a consumer may take, a cold `prepare` (dependency download) included.
const CONSUMER_LIMIT: Duration = Duration::from_secs(300);
/// What the consumer itself is told to wait for the events (`CONSUMER_TIMEOUT_SECS`).
const CONSUMER_TIMEOUT_SECS: &str = "60";

/// The result of one run of a consumer example.
struct ConsumerRun {
    status: ExitStatus,
    /// The JSON summary line it printed on stdout.
    summary: Value,
    stderr: String,
}

/// Runs `examples/consumers/{lang}/run` with `envs`, within [`CONSUMER_LIMIT`]; panics with
/// its stderr when it does not finish or prints no JSON summary.
async fn run_consumer(lang: &str, envs: &[(&str, String)]) -> ConsumerRun {
    let script: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "examples",
        "consumers",
        lang,
        "run",
    ]
    .iter()
    .collect();
    // Stderr goes to a file so that it is still there when the process must be killed.
    let logs = tempfile::NamedTempFile::new().unwrap();
    let mut child = tokio::process::Command::new(&script)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .env("CONSUMER_TIMEOUT_SECS", CONSUMER_TIMEOUT_SECS)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(logs.reopen().unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", script.display()));
    let stdout = child.stdout.take().unwrap();
    let read = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut out = String::new();
        tokio::io::BufReader::new(stdout)
            .read_to_string(&mut out)
            .await
            .map(|_| out)
    });
    let stderr = || std::fs::read_to_string(logs.path()).unwrap_or_default();
    let status = match tokio::time::timeout(CONSUMER_LIMIT, child.wait()).await {
        Ok(status) => status.expect("waiting for the consumer"),
        Err(_) => {
            let _ = child.kill().await;
            panic!(
                "the {lang} consumer did not finish within {CONSUMER_LIMIT:?}; its stderr:\n{}",
                stderr()
            );
        }
    };
    let stdout = read.await.unwrap().expect("reading the consumer's stdout");
    let summary = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "the {lang} consumer ({status}) printed no JSON summary; stdout:\n{stdout}\nstderr:\n{}",
                stderr()
            )
        });
    ConsumerRun {
        status,
        summary,
        stderr: stderr(),
    }
}

/// A fresh CRD and namespace, and a crbridge whose admin endpoint has a fixed port (so the
/// `replay` and `status` commands find the running instance).
struct Fixture {
    api: Api<DynamicObject>,
    crd: support::TestCrd,
    ns: String,
    dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, "consumers").await;
    Fixture {
        api: Api::namespaced_with(client, &ns, &crd.resource),
        crd,
        ns,
        dir: tempfile::tempdir().unwrap(),
    }
}

impl Fixture {
    /// Starts crbridge with the one sink `name` described by `sink_yaml`.
    async fn bridge(&self, name: &str, sink_yaml: &str) -> Bridge {
        let yaml = support::config_with_sinks(
            self.dir.path(),
            &self.crd,
            &self.ns,
            &[name],
            sink_yaml,
            "",
        )
        .replace(
            "admin:\n  listen: 127.0.0.1:0",
            &format!("admin:\n  listen: 127.0.0.1:{}", support::free_port()),
        );
        let mut bridge = Bridge::new(self.dir.path(), &yaml);
        bridge.start();
        bridge.wait_logged("sink connected", WAIT).await;
        bridge
    }
}

/// What the API server holds once the scenario ran: per name, the uid and (for a live
/// object) its last resourceVersion.
struct Truth {
    live: BTreeMap<String, (String, String)>,
    deleted: BTreeMap<String, String>,
}

/// Events of [`scenario`]: 3 creates, 2 objects updated twice, 1 delete.
const EVENTS: u64 = 8;
/// Updates of [`scenario`], each one a patch the consumer checks.
const UPDATES: u64 = 4;
/// Events published before the replay (3 creates, 2 updates): all are sent again.
const REPLAYED: u64 = 5;

/// Creates a, b and c, updates a and b, waits until crbridge published those 5 events and
/// replays them (duplicates in the broker), then updates a and b again and deletes c.
async fn scenario(f: &Fixture, bridge: &Bridge, sink: &str) -> Truth {
    let mut uids = BTreeMap::new();
    for n in ["a", "b", "c"] {
        let o = support::create_widget(&f.api, &f.crd, n, json!({"size": 0, "color": "red"})).await;
        uids.insert(n.to_string(), o.metadata.uid.unwrap());
    }
    for n in ["a", "b"] {
        support::patch_widget(&f.api, n, json!({"size": 1, "labels": {"tier": n}})).await;
    }
    let config = bridge.config.to_str().unwrap().to_string();
    wait_published(&config, REPLAYED).await;
    let (st, out, err) = run_cli(&["replay", "-c", &config, "--sink", sink, "--from-seq", "1"]);
    assert!(st.success(), "replay failed: {err}");
    assert!(
        out.contains(&format!("replayed {REPLAYED} events to sink {sink}")),
        "{out}"
    );
    // The replayed copies are in the broker before these: the consumer meets them before
    // its last distinct event.
    let mut live = BTreeMap::new();
    for n in ["a", "b"] {
        let o = support::patch_widget(&f.api, n, json!({"size": 2, "color": null})).await;
        live.insert(
            n.to_string(),
            (uids[n].clone(), o.metadata.resource_version.unwrap()),
        );
    }
    f.api.delete("c", &DeleteParams::default()).await.unwrap();
    Truth {
        live,
        deleted: BTreeMap::from([("c".to_string(), uids["c"].clone())]),
    }
}

/// Waits until the outbox holds `n` events and the (only) sink acknowledged all of them.
async fn wait_published(config: &str, n: u64) {
    support::eventually(
        &format!("crbridge to publish {n} events (status: last_seq and the sink's cursor)"),
        WAIT,
        || async {
            let (st, out, _) = run_cli(&["status", "-c", config, "--output", "json"]);
            let s: Value = serde_json::from_str(&out).ok().filter(|_| st.success())?;
            (s["last_seq"] == n && s["sinks"][0]["cursor"] == n).then_some(())
        },
    )
    .await;
}

/// The consumer's summary agrees with the scenario and with the API server.
fn assert_consumer_saw(lang: &str, run: &ConsumerRun, truth: &Truth) {
    let s = &run.summary;
    let context = format!("{lang} consumer summary {s}\nstderr:\n{}", run.stderr);
    assert!(run.status.success(), "exit {}: {context}", run.status);
    assert_eq!(s["lang"], lang, "{context}");
    assert_eq!(s["events"], EVENTS, "{context}");
    assert_eq!(s["mismatches"], 0, "{context}");
    assert_eq!(s["patched"], UPDATES, "{context}");
    assert_eq!(s["unchecked"], 0, "{context}");
    assert_eq!(s["stale"], 0, "{context}");
    assert!(
        s["duplicates"].as_u64().unwrap_or(0) >= 1,
        "the replayed events are counted as duplicates: {context}"
    );
    let objects = s["objects"].as_object().expect("objects");
    assert_eq!(
        objects.len(),
        truth.live.len() + truth.deleted.len(),
        "{context}"
    );
    for (name, (uid, rv)) in &truth.live {
        let o = &objects[uid];
        assert_eq!(o["name"], name.as_str(), "{context}");
        assert_eq!(o["deleted"], false, "{name}: {context}");
        assert_eq!(o["sequence"], support::sequence_of(rv), "{name}: {context}");
    }
    for (name, uid) in &truth.deleted {
        let o = &objects[uid];
        assert_eq!(o["name"], name.as_str(), "{context}");
        assert_eq!(o["deleted"], true, "{name}: {context}");
    }
}

// ---------------------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------------------

/// The Python example against an `amqp` sink with `options` (lines of the sink's section).
async fn python_consumer_case(options: &str) {
    let f = fixture().await;
    let exchange = support::unique("crb-cons-x");
    let queue = support::unique("crb-cons-q");
    // Bound before crbridge publishes, so the queue holds every event for the consumer.
    let (_conn, ch) = support::amqp_bound_queue(&exchange, &queue).await;
    let sink = format!(
        "  rabbit:\n    type: amqp\n    url: \"{}\"\n    exchange: {exchange}\n    routingKey: \"{{kind}}.{{namespace}}.{{name}}.{{type}}\"\n{options}",
        support::env("CRBRIDGE_AMQP_URL")
    );
    let mut bridge = f.bridge("rabbit", &sink).await;
    let truth = scenario(&f, &bridge, "rabbit").await;

    let run = run_consumer(
        "python",
        &[
            ("CONSUMER_EXPECT", EVENTS.to_string()),
            ("AMQP_URL", support::env("CRBRIDGE_AMQP_URL")),
            ("AMQP_EXCHANGE", exchange.clone()),
            ("AMQP_QUEUE", queue.clone()),
            ("AMQP_ROUTING_KEY", "#".into()),
        ],
    )
    .await;
    assert_consumer_saw("python", &run, &truth);
    assert_eq!(bridge.stop().await.code(), Some(0));
    ch.queue_delete(queue.as_str().into(), Default::default())
        .await
        .unwrap();
}

/// The JavaScript example against a `kafka` sink with `options` (lines of the sink's
/// section).
async fn js_consumer_case(options: &str) {
    let f = fixture().await;
    let topic = support::unique("crb-cons");
    // Tombstones on: the consumer must skip the null record after the delete.
    let sink = format!(
        "  kafka:\n    type: kafka\n    brokers: {}\n    topic: \"{topic}\"\n    tombstones: true\n    options: {{linger.ms: \"5\"}}\n{options}",
        support::env("CRBRIDGE_KAFKA_BROKERS")
    );
    let mut bridge = f.bridge("kafka", &sink).await;
    let truth = scenario(&f, &bridge, "kafka").await;

    let run = run_consumer(
        "js",
        &[
            ("CONSUMER_EXPECT", EVENTS.to_string()),
            ("KAFKA_BOOTSTRAP", support::env("CRBRIDGE_KAFKA_BROKERS")),
            ("KAFKA_TOPIC", topic.clone()),
            ("KAFKA_GROUP", support::unique("crb-cons-js")),
        ],
    )
    .await;
    assert_consumer_saw("js", &run, &truth);
    assert_eq!(bridge.stop().await.code(), Some(0));
}

#[tokio::test]
async fn python_consumer_on_rabbitmq_dedupes_orders_and_chains_patches() {
    // The defaults: binary mode, `cloudEvents:` headers (the CloudEvents AMQP binding).
    python_consumer_case("").await;
}

#[tokio::test]
async fn python_consumer_reads_ce_headers_and_structured_messages() {
    // `ce-` headers are the RabbitMQ binding; structured mode puts the whole event in the body.
    python_consumer_case("    headerPrefix: \"ce-\"\n").await;
    python_consumer_case("    mode: structured\n").await;
}

#[tokio::test]
async fn js_consumer_on_kafka_dedupes_orders_and_chains_patches() {
    // The default: binary mode, `ce_*` headers.
    js_consumer_case("").await;
}

#[tokio::test]
async fn js_consumer_reads_structured_records() {
    js_consumer_case("    mode: structured\n").await;
}
