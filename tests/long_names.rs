//! A Widget with the longest name Kubernetes allows (253 characters, four DNS labels) and a
//! routing template using `{name}` reaches every broker: the name is shortened
//! deterministically where a protocol limit needs it (AMQP routing key: 255 bytes, Kafka
//! topic: 249 characters), never panics a sink or dead-letters the event, and both events
//! of the object use the same subject / routing key / topic.

mod support;

use std::time::Duration;

use kube::api::DynamicObject;
use kube::Api;
use lapin::options::BasicGetOptions;
use lapin::types::AMQPValue;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::Message;
use serde_json::json;
use support::bridge::Bridge;

const WAIT: Duration = Duration::from_secs(30);

/// 63 + 1 + 63 + 1 + 63 + 1 + 61 = 253 characters: a valid DNS subdomain, the longest
/// object name the API server accepts. Unique per test through its first label.
fn long_name() -> String {
    let first = support::unique("long");
    let pad = |s: &str, c: char| format!("{s}{}", c.to_string().repeat(63 - s.len()));
    let name = [pad(&first, 'a'), pad("", 'b'), pad("", 'c'), "d".repeat(61)].join(".");
    assert_eq!(name.len(), 253);
    name
}

struct Fixture {
    api: Api<DynamicObject>,
    crd: support::TestCrd,
    ns: String,
    dir: tempfile::TempDir,
    name: String,
}

async fn fixture() -> Fixture {
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, "long").await;
    Fixture {
        api: Api::namespaced_with(client, &ns, &crd.resource),
        crd,
        ns,
        dir: tempfile::tempdir().unwrap(),
        name: long_name(),
    }
}

/// Starts crbridge with `sinks_yaml` (one sink named `sink`), then creates the long-named
/// Widget and updates it once: two events.
async fn run(f: &Fixture, sinks_yaml: &str) -> Bridge {
    let mut bridge = Bridge::new(
        f.dir.path(),
        &support::config_with_sinks(f.dir.path(), &f.crd, &f.ns, &["sink"], sinks_yaml, ""),
    );
    bridge.start();
    bridge.wait_logged("sink connected", WAIT).await;
    support::create_widget(&f.api, &f.crd, &f.name, json!({"size": 1})).await;
    support::patch_widget(&f.api, &f.name, json!({"size": 2})).await;
    bridge
}

#[tokio::test]
async fn nats_delivers_a_253_character_name() {
    let f = fixture().await;
    let stream = support::unique("LONG").to_uppercase();
    let sinks = format!(
        "  sink:\n    type: nats\n    url: {}\n    stream: {stream}\n    subject: \"{stream}.{{namespace}}.{{name}}.{{type}}\"\n",
        support::env("CRBRIDGE_NATS_URL")
    );
    let mut bridge = run(&f, &sinks).await;
    let mut reader = support::nats::Reader::open(&stream).await;
    let events = reader.take(2, WAIT).await;
    for (e, change) in events.iter().zip(["created", "updated"]) {
        assert_eq!(e.change(), change);
        assert_eq!(e.attr("crbname"), f.name);
        // 259 bytes escaped: the subject fits NATS' limit as is.
        assert_eq!(
            e.subject,
            format!("{stream}.{}.{}.{change}", f.ns, f.name.replace('.', "%2E"))
        );
    }
    bridge.stop().await;
}

#[tokio::test]
async fn kafka_delivers_a_253_character_name_to_a_legal_topic() {
    let f = fixture().await;
    let prefix = support::unique("crb-long");
    let sinks = format!(
        "  sink:\n    type: kafka\n    brokers: {}\n    topic: \"{prefix}.{{name}}\"\n    options: {{linger.ms: \"5\"}}\n",
        support::env("CRBRIDGE_KAFKA_BROKERS")
    );
    let mut bridge = run(&f, &sinks).await;
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", support::env("CRBRIDGE_KAFKA_BROKERS"))
        .set("group.id", support::unique("verify"))
        .set("auto.offset.reset", "earliest")
        .set("topic.metadata.refresh.interval.ms", "500")
        .create()
        .unwrap();
    // The topic name is crbridge's to choose: subscribe by its prefix.
    consumer
        .subscribe(&[&format!("^{}\\..*", prefix.replace('-', "\\-"))])
        .unwrap();
    let mut topics = Vec::new();
    for change in ["created", "updated"] {
        let m = support::kafka_recv(&consumer, WAIT)
            .await
            .unwrap_or_else(|| panic!("no {change} record within {WAIT:?}"));
        let header = |name: &str| {
            m.headers()
                .and_then(|h| h.iter().find(|h| h.key == name))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        assert!(header("ce_type").ends_with(change), "{}", header("ce_type"));
        assert_eq!(header("ce_crbname"), f.name);
        let topic = m.topic().to_owned();
        assert!(topic.len() <= 249, "{} characters: {topic}", topic.len());
        assert!(
            topic.starts_with(&format!("{prefix}.{}", &f.name[..100])),
            "{topic}"
        );
        topics.push(topic);
    }
    assert_eq!(
        topics[0], topics[1],
        "one topic for every event of the object"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn amqp_delivers_a_253_character_name_with_a_short_string_routing_key() {
    let f = fixture().await;
    let exchange = support::unique("crb-long-x");
    let queue = support::unique("crb-long-q");
    let (_conn, ch) = support::amqp_bound_queue(&exchange, &queue).await;
    let sinks = format!(
        "  sink:\n    type: amqp\n    url: \"{}\"\n    exchange: {exchange}\n    routingKey: \"{{namespace}}.{{name}}.{{type}}\"\n",
        support::env("CRBRIDGE_AMQP_URL")
    );
    let mut bridge = run(&f, &sinks).await;
    let mut keys = Vec::new();
    for change in ["created", "updated"] {
        let m = support::eventually(
            &format!("the {change} message in queue {queue}"),
            WAIT,
            || {
                let ch = ch.clone();
                let queue = queue.clone();
                async move {
                    ch.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
                        .await
                        .unwrap()
                }
            },
        )
        .await;
        let headers = m.delivery.properties.headers().clone().unwrap_or_default();
        let header = |name: &str| match headers.inner().get(name) {
            Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            other => format!("{other:?}"),
        };
        assert!(header("cloudEvents:type").ends_with(change));
        assert_eq!(header("cloudEvents:crbname"), f.name);
        let key = m.delivery.routing_key.to_string();
        assert!(key.len() <= 255, "{} bytes: {key}", key.len());
        let (object, ty) = key.rsplit_once('.').unwrap();
        assert_eq!(ty, change);
        assert!(
            object.starts_with(&format!("{}.{}", f.ns, &f.name[..63])),
            "{key}"
        );
        assert_eq!(key.split('.').count(), 3, "the key keeps its words: {key}");
        keys.push(object.to_owned());
    }
    assert_eq!(
        keys[0], keys[1],
        "one routing key for every event of the object"
    );
    bridge.stop().await;
}
