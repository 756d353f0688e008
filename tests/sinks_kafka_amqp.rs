//! Kafka and RabbitMQ sinks against the real brokers, read back by independent consumers
//! and parsed with the CloudEvents SDK.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use cloudevents::AttributesReader;
use kube::api::{DeleteParams, DynamicObject};
use kube::Api;
use lapin::options::BasicGetOptions;
use lapin::types::AMQPValue;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::Message;
use serde_json::json;
use support::bridge::Bridge;
use support::cloudevents::{parse_binary, parse_structured, BinaryMessage};

const WAIT: Duration = Duration::from_secs(30);

struct Fixture {
    api: Api<DynamicObject>,
    crd: support::TestCrd,
    ns: String,
    dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, "sinks").await;
    Fixture {
        api: Api::namespaced_with(client, &ns, &crd.resource),
        crd,
        ns,
        dir: tempfile::tempdir().unwrap(),
    }
}

/// Creates 3 objects, updates each twice, deletes one: 10 changes, interleaved.
async fn make_changes(f: &Fixture) -> Vec<(String, String)> {
    let mut rvs = Vec::new();
    for n in ["a", "b", "c"] {
        let o = support::create_widget(&f.api, &f.crd, n, json!({"size": 0})).await;
        rvs.push((n.to_string(), o.metadata.resource_version.unwrap()));
    }
    for size in 1..=2 {
        for n in ["a", "b", "c"] {
            let o = support::patch_widget(&f.api, n, json!({ "size": size })).await;
            rvs.push((n.to_string(), o.metadata.resource_version.unwrap()));
        }
    }
    f.api.delete("b", &DeleteParams::default()).await.unwrap();
    rvs
}

fn kafka_consumer(topic: &str) -> StreamConsumer {
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", support::env("CRBRIDGE_KAFKA_BROKERS"))
        .set("group.id", support::unique("verify"))
        .set("auto.offset.reset", "earliest")
        .set("topic.metadata.refresh.interval.ms", "500")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    c
}

fn kafka_event(m: &rdkafka::message::OwnedMessage) -> cloudevents::Event {
    let mut attributes = Vec::new();
    let mut content_type = None;
    if let Some(h) = m.headers() {
        for hd in h.iter() {
            let v = String::from_utf8(hd.value.unwrap_or_default().to_vec()).unwrap();
            if let Some(a) = hd.key.strip_prefix("ce_") {
                attributes.push((a.to_string(), v));
            } else if hd.key == "content-type" {
                content_type = Some(v);
            }
        }
    }
    parse_binary(BinaryMessage {
        attributes,
        content_type,
        body: m.payload().unwrap_or_default().to_vec(),
    })
}

fn ext(e: &cloudevents::Event, name: &str) -> String {
    e.extension(name).map(|v| v.to_string()).unwrap_or_default()
}

/// Every change once, in per-object order, against what the server reported.
fn assert_complete_and_ordered(events: &[cloudevents::Event], expected: &[(String, String)]) {
    let mut by_name: HashMap<String, Vec<String>> = HashMap::new();
    for e in events {
        if e.ty().ends_with(".deleted") {
            continue;
        }
        by_name
            .entry(ext(e, "crbname"))
            .or_default()
            .push(ext(e, "sequence"));
    }
    let mut want: HashMap<String, Vec<String>> = HashMap::new();
    for (n, rv) in expected {
        want.entry(n.clone())
            .or_default()
            .push(support::sequence_of(rv));
    }
    assert_eq!(
        by_name, want,
        "per-object resourceVersions, in arrival order"
    );
    let deletes: Vec<_> = events
        .iter()
        .filter(|e| e.ty().ends_with(".deleted"))
        .collect();
    assert_eq!(deletes.len(), 1);
    assert_eq!(ext(deletes[0], "crbname"), "b");
}

#[tokio::test]
async fn kafka_binary_mode_delivers_every_change_once_in_object_order() {
    let f = fixture().await;
    let topic = support::unique("crb-topic");
    let sinks = format!(
        "  kafka:\n    type: kafka\n    brokers: {}\n    topic: \"{topic}\"\n    options: {{linger.ms: \"5\"}}\n",
        support::env("CRBRIDGE_KAFKA_BROKERS")
    );
    let mut bridge = Bridge::new(
        f.dir.path(),
        &support::config_with_sinks(f.dir.path(), &f.crd, &f.ns, &["kafka"], &sinks, ""),
    );
    bridge.start();
    bridge.wait_logged("sink connected", WAIT).await;
    let expected = make_changes(&f).await;

    let consumer = kafka_consumer(&topic);
    let mut events = Vec::new();
    let mut keys = Vec::new();
    while events.len() < 10 {
        let m = support::kafka_recv(&consumer, WAIT)
            .await
            .unwrap_or_else(|| panic!("only {} of 10 records", events.len()));
        keys.push(String::from_utf8(m.key().unwrap().to_vec()).unwrap());
        events.push(kafka_event(&m));
    }
    assert_complete_and_ordered(&events, &expected);
    for (e, key) in events.iter().zip(&keys) {
        assert_eq!(*key, ext(e, "crbuid"), "record key is the object uid");
        assert_eq!(e.datacontenttype(), Some("application/json"));
        assert_eq!(
            e.subject().unwrap(),
            format!("{}/{}", f.ns, ext(e, "crbname"))
        );
    }
    // No duplicates in a clean run.
    assert!(support::kafka_recv(&consumer, Duration::from_secs(2))
        .await
        .is_none());
    assert_eq!(bridge.stop().await.code(), Some(0));
}

#[tokio::test]
async fn kafka_structured_mode_and_same_ids_after_a_forced_resend() {
    let f = fixture().await;
    let topic = support::unique("crb-structured");
    let sinks = format!(
        "  kafka:\n    type: kafka\n    brokers: {}\n    topic: \"{topic}\"\n    mode: structured\n",
        support::env("CRBRIDGE_KAFKA_BROKERS")
    );
    // Background flushes off: the cursor of the last acked events is durable only at the
    // next commit, so a kill -9 right after delivery forces a re-send on restart.
    let cfg = support::config_with_sinks(f.dir.path(), &f.crd, &f.ns, &["kafka"], &sinks, "")
        .replace("state:\n", "state:\n  flushEvery: 1h\n");
    let mut bridge = Bridge::new(f.dir.path(), &cfg);
    bridge.start();
    bridge.wait_logged("sink connected", WAIT).await;
    support::create_widget(&f.api, &f.crd, "a", json!({"size": 1})).await;
    support::patch_widget(&f.api, "a", json!({"size": 2})).await;

    let consumer = kafka_consumer(&topic);
    let mut first = Vec::new();
    while first.len() < 2 {
        let m = support::kafka_recv(&consumer, WAIT)
            .await
            .expect("the first two records");
        let ct = m
            .headers()
            .and_then(|h| {
                h.iter()
                    .find(|h| h.key == "content-type")
                    .and_then(|h| h.value)
            })
            .map(|v| String::from_utf8_lossy(v).into_owned());
        assert_eq!(ct.as_deref(), Some("application/cloudevents+json"));
        first.push(parse_structured(m.payload().unwrap()));
    }
    // Read by the CloudEvents SDK: `crbgeneration` (an int64) is a String extension, not a
    // 32-bit Integer; `sequence` is the resourceVersion padded to 20 digits.
    for e in &first {
        let object = match e.data() {
            Some(cloudevents::Data::Json(v)) => v["object"].clone(),
            other => panic!("data is not JSON: {other:?}"),
        };
        assert_eq!(
            e.extension("crbgeneration"),
            Some(&cloudevents::event::ExtensionValue::String(
                object["metadata"]["generation"].to_string()
            ))
        );
        assert_eq!(
            ext(e, "sequence"),
            support::sequence_of(object["metadata"]["resourceVersion"].as_str().unwrap())
        );
    }
    bridge.kill9();
    bridge.start();
    let m = support::kafka_recv(&consumer, WAIT)
        .await
        .expect("the unacknowledged-on-disk event was not re-sent");
    let again = parse_structured(m.payload().unwrap());
    let original = first
        .iter()
        .find(|e| e.id() == again.id())
        .expect("a re-sent event carries the id of the original");
    assert_eq!(original.data(), again.data());
    assert_eq!(ext(original, "sequence"), ext(&again, "sequence"));
    bridge.stop().await;
}

fn amqp_string(v: &AMQPValue) -> String {
    match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => format!("{other:?}"),
    }
}

#[tokio::test]
async fn amqp_confirmed_persistent_events_with_cloudevents_headers() {
    let f = fixture().await;
    let exchange = support::unique("crb-x");
    let queue = support::unique("crb-q");
    let (_conn, ch) = support::amqp_bound_queue(&exchange, &queue).await;

    let sinks = format!(
        "  rabbit:\n    type: amqp\n    url: \"{}\"\n    exchange: {exchange}\n    routingKey: \"{{group}}.{{kind}}.{{namespace}}.{{type}}\"\n",
        support::env("CRBRIDGE_AMQP_URL")
    );
    let mut bridge = Bridge::new(
        f.dir.path(),
        &support::config_with_sinks(f.dir.path(), &f.crd, &f.ns, &["rabbit"], &sinks, ""),
    );
    bridge.start();
    bridge.wait_logged("sink connected", WAIT).await;
    let expected = make_changes(&f).await;

    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while events.len() < 10 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of 10 messages",
            events.len()
        );
        let Some(m) = ch
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let props = &m.delivery.properties;
        assert_eq!(*props.delivery_mode(), Some(2), "persistent");
        let headers = props.headers().clone().unwrap_or_default();
        let attributes = headers
            .inner()
            .iter()
            .filter_map(|(k, v)| {
                k.as_str()
                    .strip_prefix("cloudEvents:")
                    .map(|a| (a.to_string(), amqp_string(v)))
            })
            .collect();
        let e = parse_binary(BinaryMessage {
            attributes,
            content_type: props.content_type().as_ref().map(|c| c.to_string()),
            body: m.delivery.data.clone(),
        });
        assert_eq!(
            props.message_id().as_ref().map(|s| s.to_string()),
            Some(e.id().to_string())
        );
        let rk = m.delivery.routing_key.to_string();
        assert_eq!(
            rk,
            format!(
                "{}.Widget.{}.{}",
                f.crd.group.replace('.', "%2E"),
                f.ns,
                e.ty().rsplit('.').next().unwrap()
            )
        );
        events.push(e);
    }
    assert_complete_and_ordered(&events, &expected);
    bridge.stop().await;
}

#[tokio::test]
async fn amqp_unroutable_event_is_a_dead_letter_not_a_success() {
    let f = fixture().await;
    // An exchange no queue is bound to: every publish comes back (basic.return), and
    // `unroutable: refuse` hands it to `onError` (the default retries: tests/error_classes.rs).
    let exchange = support::unique("crb-unbound");
    let sinks = format!(
        "  rabbit:\n    type: amqp\n    url: \"{}\"\n    exchange: {exchange}\n    routingKey: \"{{kind}}.{{name}}\"\n    unroutable: refuse\n    headerPrefix: \"ce-\"\n",
        support::env("CRBRIDGE_AMQP_URL")
    );
    let mut bridge = Bridge::new(
        f.dir.path(),
        &support::config_with_sinks(f.dir.path(), &f.crd, &f.ns, &["rabbit"], &sinks, ""),
    );
    bridge.start();
    bridge.wait_logged("sink connected", WAIT).await;
    support::create_widget(&f.api, &f.crd, "lost", json!({"size": 1})).await;
    let line = bridge
        .wait_logged("event refused by the sink; kept as a dead letter", WAIT)
        .await;
    assert!(
        line["error"].as_str().unwrap().contains("unroutable"),
        "{line}"
    );
    assert_eq!(line["subject"], format!("{}/lost", f.ns));
    assert_eq!(bridge.stop().await.code(), Some(0));

    // The same with `onError: halt`: the sink stops at the event instead.
    let dir2 = tempfile::tempdir().unwrap();
    let halting = sinks.replace("headerPrefix", "onError: halt\n    headerPrefix");
    let mut bridge2 = Bridge::new(
        dir2.path(),
        &support::config_with_sinks(dir2.path(), &f.crd, &f.ns, &["rabbit"], &halting, ""),
    );
    bridge2.start();
    let line = bridge2
        .wait_logged(
            "event cannot be published; the sink is halted at it and retried slowly until the operator acts",
            WAIT,
        )
        .await;
    assert!(
        line["error"].as_str().unwrap().contains("unroutable"),
        "{line}"
    );
    bridge2.stop().await;
}
