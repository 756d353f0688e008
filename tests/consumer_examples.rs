//! The consumer examples (`examples/consumers/<lang>/`) against the real servers and the real
//! crbridge: Go on NATS JetStream, Java and JavaScript on Kafka, Python on RabbitMQ. Each
//! reads what crbridge published for the shared workload, with duplicates in the broker, and
//! must report every distinct event once, every patch checked and per object the state the
//! API server holds; on a hand-made stream, each counter of its summary (see
//! `support::consumers`).

mod support;

use std::time::Duration;

use async_nats::jetstream;
use rdkafka::config::ClientConfig;
use support::consumers::{self, Workload, CHANGES, EVENTS};

/// A JetStream context on the test server.
async fn jetstream() -> jetstream::Context {
    jetstream::new(
        async_nats::connect(support::env("CRBRIDGE_NATS_URL"))
            .await
            .expect("connecting to NATS"),
    )
}

/// The Go example's variables for JetStream stream `stream`.
fn go_env(expect: usize, stream: &str) -> [(&'static str, String); 4] {
    [
        ("CONSUMER_EXPECT", expect.to_string()),
        ("NATS_URL", support::env("CRBRIDGE_NATS_URL")),
        ("NATS_STREAM", stream.to_string()),
        ("NATS_SUBJECT", format!("{stream}.>")),
    ]
}

/// The Java and JavaScript examples' variables for Kafka topic `topic`.
fn kafka_env(expect: usize, topic: &str) -> [(&'static str, String); 4] {
    [
        ("CONSUMER_EXPECT", expect.to_string()),
        ("KAFKA_BOOTSTRAP", support::env("CRBRIDGE_KAFKA_BROKERS")),
        ("KAFKA_TOPIC", topic.to_string()),
        ("KAFKA_GROUP", support::unique("crb-cons")),
    ]
}

/// A `kafka` sink named `kafka` on `topic`, `options` (lines of its section) appended.
fn kafka_sink(topic: &str, options: &str) -> String {
    format!(
        "  kafka:\n    type: kafka\n    brokers: {}\n    topic: \"{topic}\"\n{options}",
        support::env("CRBRIDGE_KAFKA_BROKERS")
    )
}

#[tokio::test]
async fn go_consumer_reads_jetstream_dedupes_and_checks_every_patch() {
    let w = Workload::new("cons-go").await;
    let stream = support::unique("CONS").to_uppercase().replace('-', "_");
    let sink = format!(
        "  nats:\n    type: nats\n    url: {}\n    stream: {stream}\n    subject: \"{stream}.{{cluster}}.{{group}}.{{kind}}.{{namespace}}.{{name}}\"\n",
        support::env("CRBRIDGE_NATS_URL")
    );
    let mut bridge = w.bridge("nats", &sink).await;
    let js = jetstream().await;
    // A duplicate JetStream keeps (it drops a replay's copies, whose Nats-Msg-Id it has
    // seen): the first event again under another Nats-Msg-Id, as a re-send after the
    // stream's duplicate window would be, with the same CloudEvents id.
    let expected = w
        .run(&bridge, || async {
            let s = js.get_stream(&stream).await.unwrap();
            let first = s
                .get_raw_message(1)
                .await
                .expect("the stream's first message");
            let mut headers = first.headers.clone();
            headers.insert("Nats-Msg-Id", "resent-outside-the-window");
            js.publish_with_headers(first.subject.clone(), headers, first.payload.clone())
                .await
                .unwrap()
                .await
                .expect("JetStream accepts the duplicate");
        })
        .await;

    let outcome = consumers::run("go", &go_env(EVENTS, &stream)).await;
    consumers::assert_complete(&outcome, &expected, 1);
    assert_eq!(outcome.summary.duplicates, 1, "{:?}", outcome.summary);
    assert_eq!(bridge.stop().await.code(), Some(0));
}

#[tokio::test]
async fn java_consumer_reads_kafka_dedupes_and_checks_every_patch() {
    let w = Workload::new("cons-java").await;
    let topic = support::unique("crb-cons-java");
    let mut bridge = w.bridge("kafka", &kafka_sink(&topic, "")).await;
    // Duplicates: a replay re-publishes every event so far with its original id.
    let expected = w
        .run(&bridge, || async { consumers::replay(&bridge, "kafka") })
        .await;

    let outcome = consumers::run("java", &kafka_env(EVENTS, &topic)).await;
    consumers::assert_complete(&outcome, &expected, CHANGES);
    assert_eq!(outcome.summary.duplicates, CHANGES, "{:?}", outcome.summary);
    assert_eq!(bridge.stop().await.code(), Some(0));
}

/// The Python example against an `amqp` sink with `options` (lines of the sink's section),
/// duplicates by a replay.
async fn python_consumer_case(options: &str) {
    let w = Workload::new("cons-py").await;
    let exchange = support::unique("crb-cons-x");
    let queue = support::unique("crb-cons-q");
    // Bound before crbridge publishes, so the queue holds every event for the consumer.
    let (_conn, ch) = support::amqp_bound_queue(&exchange, &queue).await;
    let sink = format!(
        "  rabbit:\n    type: amqp\n    url: \"{}\"\n    exchange: {exchange}\n    routingKey: \"{{kind}}.{{namespace}}.{{name}}.{{type}}\"\n{options}",
        support::env("CRBRIDGE_AMQP_URL")
    );
    let mut bridge = w.bridge("rabbit", &sink).await;
    let expected = w
        .run(&bridge, || async { consumers::replay(&bridge, "rabbit") })
        .await;

    let outcome = consumers::run(
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
    consumers::assert_complete(&outcome, &expected, CHANGES);
    assert_eq!(bridge.stop().await.code(), Some(0));
    ch.queue_delete(queue.as_str().into(), Default::default())
        .await
        .unwrap();
}

/// The JavaScript example against a `kafka` sink with `options` (lines of the sink's
/// section), duplicates by a replay.
async fn js_consumer_case(options: &str) {
    let w = Workload::new("cons-js").await;
    let topic = support::unique("crb-cons-js");
    // Tombstones on: the consumer must skip the null record after the delete.
    let options = format!("    tombstones: true\n    options: {{linger.ms: \"5\"}}\n{options}");
    let mut bridge = w.bridge("kafka", &kafka_sink(&topic, &options)).await;
    let expected = w
        .run(&bridge, || async { consumers::replay(&bridge, "kafka") })
        .await;

    let outcome = consumers::run("js", &kafka_env(EVENTS, &topic)).await;
    consumers::assert_complete(&outcome, &expected, CHANGES);
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

#[tokio::test]
async fn go_consumer_counts_duplicates_stale_unchecked_and_mismatches() {
    let js = jetstream().await;
    let stream = support::unique("CONSBAD").to_uppercase().replace('-', "_");
    js.create_stream(jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![format!("{stream}.>")],
        ..Default::default()
    })
    .await
    .expect("creating the stream");
    // Tombstones are Kafka's; on NATS the same stream without it.
    for (n, (attrs, data)) in consumers::synthetic().into_iter().flatten().enumerate() {
        let mut headers = async_nats::HeaderMap::new();
        for (k, v) in attrs {
            headers.insert(format!("ce-{k}").as_str(), v.as_str());
        }
        headers.insert("content-type", "application/json");
        headers.insert("Nats-Msg-Id", n.to_string().as_str());
        js.publish_with_headers(
            format!("{stream}.widgets"),
            headers,
            serde_json::to_vec(&data).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .expect("JetStream accepts the event");
    }
    let outcome = consumers::run("go", &go_env(consumers::SYNTHETIC_EVENTS, &stream)).await;
    consumers::assert_synthetic(&outcome);
}

#[tokio::test]
async fn java_consumer_skips_tombstones_and_counts_duplicates_stale_unchecked_and_mismatches() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let topic = support::unique("crb-cons-bad");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", support::env("CRBRIDGE_KAFKA_BROKERS"))
        .create()
        .unwrap();
    for event in consumers::synthetic() {
        let sent = match &event {
            // A tombstone: the key of the object before it, no value, no headers.
            None => {
                producer
                    .send(
                        FutureRecord::<str, [u8]>::to(&topic).key("u1"),
                        Duration::from_secs(10),
                    )
                    .await
            }
            Some((attrs, data)) => {
                let uid = &attrs.iter().find(|(k, _)| k == "partitionkey").unwrap().1;
                let mut headers = OwnedHeaders::new().insert(Header {
                    key: "content-type",
                    value: Some("application/json"),
                });
                for (k, v) in attrs {
                    headers = headers.insert(Header {
                        key: &format!("ce_{k}"),
                        value: Some(v.as_str()),
                    });
                }
                let body = serde_json::to_vec(data).unwrap();
                producer
                    .send(
                        FutureRecord::to(&topic)
                            .key(uid.as_str())
                            .payload(&body)
                            .headers(headers),
                        Duration::from_secs(10),
                    )
                    .await
            }
        };
        sent.unwrap_or_else(|(e, _)| panic!("producing to {topic}: {e}"));
    }
    let outcome = consumers::run("java", &kafka_env(consumers::SYNTHETIC_EVENTS, &topic)).await;
    consumers::assert_synthetic(&outcome);
}
