//! The consumer examples (`examples/consumers/<lang>/`) against the real servers and the real
//! crbridge: each reads what crbridge published for the shared workload, with a duplicate in
//! the broker, and must report every distinct event once, every patch checked and per
//! object the state the API server holds (see `support::consumers`).

mod support;

use std::time::Duration;

use async_nats::jetstream;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use support::bridge::{run_cli, Bridge};
use support::consumers::{self, Workload, CHANGES, EVENTS};

const WAIT: Duration = Duration::from_secs(30);
/// How long the example may wait for its events.
const CONSUMER_SECS: u64 = 60;
/// The whole subprocess, a cold `prepare` included.
const RUN_LIMIT: Duration = Duration::from_secs(600);

/// b's state before its deletion and its uid.
async fn b_before_delete(w: &Workload) -> (consumers::Kept, String) {
    let (uid, kept) = w
        .live()
        .await
        .into_iter()
        .find(|(_, k)| k.name == "b")
        .expect("b exists before its deletion");
    (kept, uid)
}

/// The number of messages in JetStream stream `stream`.
async fn stream_messages(js: &jetstream::Context, stream: &str) -> u64 {
    match js.get_stream(stream).await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

async fn wait_stream(js: &jetstream::Context, stream: &str, n: u64) {
    support::eventually(
        &format!("{n} messages in stream {stream}"),
        WAIT,
        || async { (stream_messages(js, stream).await >= n).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn go_consumer_reads_jetstream_dedupes_and_checks_every_patch() {
    let w = Workload::new("cons-go").await;
    let dir = tempfile::tempdir().unwrap();
    let stream = support::unique("CONS").to_uppercase().replace('-', "_");
    let mut bridge = Bridge::new(
        dir.path(),
        &support::nats_config(dir.path(), &w.crd, &w.ns, &stream),
    );
    bridge.start();
    bridge.wait_logged("sink connected", WAIT).await;
    let js = jetstream::new(
        async_nats::connect(support::env("CRBRIDGE_NATS_URL"))
            .await
            .expect("connecting to NATS"),
    );

    w.changes().await;
    wait_stream(&js, &stream, CHANGES as u64).await;
    let (b, b_uid) = b_before_delete(&w).await;

    // A duplicate JetStream keeps: the first event again under another Nats-Msg-Id (as a
    // re-send after the stream's duplicate window would be), with the same CloudEvents id.
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

    w.delete().await;
    wait_stream(&js, &stream, CHANGES as u64 + 2).await;
    let live = w.live().await;

    let outcome = consumers::run(
        "go",
        &[
            ("CONSUMER_EXPECT", EVENTS.to_string()),
            ("NATS_URL", support::env("CRBRIDGE_NATS_URL")),
            ("NATS_STREAM", stream.clone()),
            ("NATS_SUBJECT", format!("{stream}.>")),
        ],
        CONSUMER_SECS,
        RUN_LIMIT,
    )
    .await;
    consumers::assert_complete(&outcome, &live, &b, &b_uid, 1);
    assert_eq!(outcome.summary.duplicates, 1, "{:?}", outcome.summary);
    assert_eq!(bridge.stop().await.code(), Some(0));
}

/// Counts the records of `topic` as they arrive, from its start.
struct Counter {
    consumer: StreamConsumer,
    seen: usize,
}

impl Counter {
    fn new(topic: &str) -> Counter {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", support::env("CRBRIDGE_KAFKA_BROKERS"))
            .set("group.id", support::unique("count"))
            .set("auto.offset.reset", "earliest")
            .set("topic.metadata.refresh.interval.ms", "500")
            .create()
            .unwrap();
        consumer.subscribe(&[topic]).unwrap();
        Counter { consumer, seen: 0 }
    }

    async fn wait_for(&mut self, n: usize) {
        while self.seen < n {
            support::kafka_recv(&self.consumer, WAIT)
                .await
                .unwrap_or_else(|| panic!("only {} of {n} records in the topic", self.seen));
            self.seen += 1;
        }
    }
}

#[tokio::test]
async fn java_consumer_reads_kafka_dedupes_and_checks_every_patch() {
    let w = Workload::new("cons-java").await;
    let dir = tempfile::tempdir().unwrap();
    let topic = support::unique("crb-cons-java");
    let sinks = format!(
        "  kafka:\n    type: kafka\n    brokers: {}\n    topic: \"{topic}\"\n",
        support::env("CRBRIDGE_KAFKA_BROKERS")
    );
    // A fixed admin port: `replay` reaches the running instance through it.
    let yaml = support::config_with_sinks(dir.path(), &w.crd, &w.ns, &["kafka"], &sinks, "")
        .replace(
            "admin:\n  listen: 127.0.0.1:0",
            &format!("admin:\n  listen: 127.0.0.1:{}", support::free_port()),
        );
    let mut bridge = Bridge::new(dir.path(), &yaml);
    let cfg = bridge.config.to_str().unwrap().to_string();
    bridge.start();
    bridge.wait_logged("sink connected", WAIT).await;

    w.changes().await;
    let mut counter = Counter::new(&topic);
    counter.wait_for(CHANGES).await;
    let (b, b_uid) = b_before_delete(&w).await;

    // Duplicates: a replay re-publishes every event so far with its original id.
    let (st, out, err) = run_cli(&["replay", "-c", &cfg, "--sink", "kafka", "--from-seq", "1"]);
    assert!(st.success(), "replay failed: {err}");
    assert!(out.contains(&format!("replayed {CHANGES} events")), "{out}");
    counter.wait_for(2 * CHANGES).await;

    w.delete().await;
    counter.wait_for(2 * CHANGES + 1).await;
    let live = w.live().await;

    let outcome = consumers::run(
        "java",
        &[
            ("CONSUMER_EXPECT", EVENTS.to_string()),
            ("KAFKA_BOOTSTRAP", support::env("CRBRIDGE_KAFKA_BROKERS")),
            ("KAFKA_TOPIC", topic.clone()),
            ("KAFKA_GROUP", support::unique("cons-java")),
        ],
        CONSUMER_SECS,
        RUN_LIMIT,
    )
    .await;
    consumers::assert_complete(&outcome, &live, &b, &b_uid, CHANGES);
    assert_eq!(outcome.summary.duplicates, CHANGES, "{:?}", outcome.summary);
    assert_eq!(bridge.stop().await.code(), Some(0));
}

#[tokio::test]
async fn go_consumer_counts_duplicates_stale_unchecked_and_mismatches() {
    let js = jetstream::new(
        async_nats::connect(support::env("CRBRIDGE_NATS_URL"))
            .await
            .expect("connecting to NATS"),
    );
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
    let outcome = consumers::run(
        "go",
        &[
            ("CONSUMER_EXPECT", consumers::SYNTHETIC_EVENTS.to_string()),
            ("NATS_URL", support::env("CRBRIDGE_NATS_URL")),
            ("NATS_STREAM", stream.clone()),
            ("NATS_SUBJECT", format!("{stream}.>")),
        ],
        CONSUMER_SECS,
        RUN_LIMIT,
    )
    .await;
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
    let outcome = consumers::run(
        "java",
        &[
            ("CONSUMER_EXPECT", consumers::SYNTHETIC_EVENTS.to_string()),
            ("KAFKA_BOOTSTRAP", support::env("CRBRIDGE_KAFKA_BROKERS")),
            ("KAFKA_TOPIC", topic.clone()),
            ("KAFKA_GROUP", support::unique("cons-bad")),
        ],
        CONSUMER_SECS,
        RUN_LIMIT,
    )
    .await;
    consumers::assert_synthetic(&outcome);
}
