//! Fan-out: one watch to Kafka, NATS and RabbitMQ, each sink with its own cursor. NATS is
//! stopped mid-run (the real server, by its pid): Kafka and RabbitMQ get every change at
//! once; NATS gets all of them after it is back.
//!
//! This file holds ONE test on purpose: it stops a shared server, and cargo runs test
//! binaries one after another, so no other test sees the outage.

mod support;

use std::time::Duration;

use kube::api::{DeleteParams, DynamicObject};
use kube::Api;
use lapin::options::BasicGetOptions;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use serde_json::json;
use support::bridge::Bridge;
use support::nats::Reader;

const WAIT: Duration = Duration::from_secs(60);

fn nats_pid() -> String {
    let path = format!("{}/nats.pid", support::env("CRBRIDGE_LOCAL_STATE"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .to_string()
}

async fn stop_nats() {
    let pid = nats_pid();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    support::eventually("NATS to exit", Duration::from_secs(30), || {
        let pid = pid.clone();
        async move {
            let alive = std::process::Command::new("kill")
                .args(["-0", &pid])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            (!alive).then_some(())
        }
    })
    .await;
}

fn start_nats() {
    // The state folder of the server that was stopped (see support/servers.rs `restart_server`).
    let up = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/local/up");
    let out = std::process::Command::new(up)
        .env("CRBRIDGE_LOCAL_STATE", support::env("CRBRIDGE_LOCAL_STATE"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "deploy/local/up: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_stopped_sink_does_not_hold_back_the_others_and_catches_up() {
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, "fanout").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &crd.resource);
    let dir = tempfile::tempdir().unwrap();

    let topic = support::unique("crb-fanout");
    let stream = support::unique("FANOUT").to_uppercase().replace('-', "_");
    let exchange = support::unique("crb-fanout-x");
    let queue = support::unique("crb-fanout-q");
    let (_conn, ch) = support::amqp_bound_queue(&exchange, &queue).await;

    let sinks = format!(
        "  kafka:\n    type: kafka\n    brokers: {brokers}\n    topic: \"{topic}\"\n  nats:\n    type: nats\n    url: {nats}\n    stream: {stream}\n    subject: \"{stream}.{{namespace}}.{{name}}\"\n  rabbit:\n    type: amqp\n    url: \"{amqp}\"\n    exchange: {exchange}\n    routingKey: \"{{name}}.{{type}}\"\n",
        brokers = support::env("CRBRIDGE_KAFKA_BROKERS"),
        nats = support::env("CRBRIDGE_NATS_URL"),
        amqp = support::env("CRBRIDGE_AMQP_URL"),
    );
    let mut bridge = Bridge::new(
        dir.path(),
        &support::config_with_sinks(
            dir.path(),
            &crd,
            &ns,
            &["kafka", "nats", "rabbit"],
            &sinks,
            "",
        ),
    );
    bridge.start();
    bridge.wait_logged("list reconciled", WAIT).await;
    let mut nats = Reader::open(&stream).await;
    support::create_widget(&api, &crd, "before", json!({"size": 1})).await;
    nats.take(1, WAIT).await;

    stop_nats().await;
    let mut expected = vec![];
    for i in 0..5 {
        let o = support::create_widget(&api, &crd, &format!("w{i}"), json!({"size": i})).await;
        expected.push(support::sequence_of(&o.metadata.resource_version.unwrap()));
    }
    api.delete("w0", &DeleteParams::default()).await.unwrap();

    // Kafka and RabbitMQ: everything (1 before + 5 creates + 1 delete), while NATS is down.
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", support::env("CRBRIDGE_KAFKA_BROKERS"))
        .set("group.id", support::unique("fanout"))
        .set("auto.offset.reset", "earliest")
        .set("topic.metadata.refresh.interval.ms", "500")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let mut kafka_seqs = Vec::new();
    while kafka_seqs.len() < 7 {
        let m = support::kafka_recv(&consumer, WAIT)
            .await
            .unwrap_or_else(|| {
                panic!(
                    "Kafka held back by the NATS outage: {} of 7",
                    kafka_seqs.len()
                )
            });
        kafka_seqs.push(m.offset());
    }
    let mut amqp_count = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    while amqp_count < 7 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "RabbitMQ held back by the NATS outage: {amqp_count} of 7"
        );
        match ch
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            Some(_) => amqp_count += 1,
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }

    // NATS back: the 6 events it missed arrive, in order.
    start_nats();
    let got = nats.take(6, WAIT).await;
    let seqs: Vec<String> = got
        .iter()
        .filter(|e| e.change() == "created")
        .map(|e| e.attr("sequence").to_string())
        .collect();
    assert_eq!(seqs, expected);
    assert_eq!(got.last().unwrap().change(), "deleted");
    bridge.stop().await;
}
