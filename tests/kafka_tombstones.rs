//! Kafka tombstones against the real API server and the real broker: with `tombstones: true`
//! a compacted topic, read from the start keeping the last record per key (a null value
//! removes the key), holds exactly the objects the API server has, also after a delete that
//! only a relist could infer.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kube::api::{DeleteParams, DynamicObject, ListParams};
use kube::Api;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::Message;
use serde_json::json;
use support::bridge::Bridge;

const WAIT: Duration = Duration::from_secs(30);

/// Creates `topic` with `cleanup.policy=compact`, as an operator would for a table topic.
async fn create_compacted_topic(topic: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", support::env("CRBRIDGE_KAFKA_BROKERS"))
        .create()
        .expect("kafka admin client");
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(1)).set("cleanup.policy", "compact");
    let results = admin
        .create_topics([&new], &AdminOptions::new())
        .await
        .expect("create_topics request");
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
}

/// One record as read back: its key, whether it is a tombstone (null value), and the
/// CloudEvents type header of a non-null one.
#[derive(Debug, Clone)]
struct Record {
    key: String,
    tombstone: bool,
    ty: String,
}

/// Reads the whole topic so far, in order.
struct TopicReader {
    consumer: StreamConsumer,
    records: Vec<Record>,
}

impl TopicReader {
    fn open(topic: &str) -> TopicReader {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", support::env("CRBRIDGE_KAFKA_BROKERS"))
            .set("group.id", support::unique("tombstones"))
            .set("auto.offset.reset", "earliest")
            .set("topic.metadata.refresh.interval.ms", "500")
            .create()
            .unwrap();
        consumer.subscribe(&[topic]).unwrap();
        TopicReader {
            consumer,
            records: Vec::new(),
        }
    }

    /// Takes every record that arrives within a short quiet period.
    async fn poll(&mut self) {
        while let Some(m) = support::kafka_recv(&self.consumer, Duration::from_millis(500)).await {
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            let ty = m
                .headers()
                .and_then(|h| {
                    h.iter()
                        .find(|hd| hd.key == "ce_type")
                        .and_then(|hd| hd.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                })
                .unwrap_or_default();
            self.records.push(Record {
                key,
                tombstone: m.payload().is_none(),
                ty,
            });
        }
    }

    /// What a compacted topic converges on: the last record per key, a tombstone removing it.
    fn table(&self) -> BTreeSet<String> {
        let mut last: BTreeMap<&str, bool> = BTreeMap::new();
        for r in &self.records {
            last.insert(&r.key, r.tombstone);
        }
        last.into_iter()
            .filter(|(_, tombstone)| !tombstone)
            .map(|(k, _)| k.to_owned())
            .collect()
    }

    /// Every deleted event is followed, next for its key, by a tombstone.
    fn assert_each_delete_has_its_tombstone(&self) {
        for (i, r) in self.records.iter().enumerate() {
            if r.ty.ends_with(".deleted") {
                let next = self.records[i + 1..].iter().find(|n| n.key == r.key);
                assert!(
                    next.is_some_and(|n| n.tombstone),
                    "deleted event of {} not followed by its tombstone: {:?}",
                    r.key,
                    self.records
                );
            }
        }
    }
}

/// The uids the API server has in the namespace.
async fn live_uids(api: &Api<DynamicObject>) -> BTreeSet<String> {
    api.list(&ListParams::default())
        .await
        .expect("listing widgets")
        .items
        .into_iter()
        .filter_map(|o| o.metadata.uid)
        .collect()
}

#[tokio::test]
async fn a_compacted_topic_converges_on_the_live_objects() {
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, "tomb").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &crd.resource);
    let dir = tempfile::tempdir().unwrap();
    let topic = support::unique("crb-tomb");
    create_compacted_topic(&topic).await;
    let sinks = format!(
        "  kafka:\n    type: kafka\n    brokers: {}\n    topic: \"{topic}\"\n    tombstones: true\n    options: {{linger.ms: \"5\"}}\n",
        support::env("CRBRIDGE_KAFKA_BROKERS")
    );
    let mut bridge = Bridge::new(
        dir.path(),
        &support::config_with_sinks(dir.path(), &crd, &ns, &["kafka"], &sinks, ""),
    );
    bridge.start();
    bridge.wait_logged("list reconciled", WAIT).await;

    let mut uids = BTreeMap::new();
    for n in ["a", "b", "c", "d"] {
        let o = support::create_widget(&api, &crd, n, json!({"size": 0})).await;
        uids.insert(n, o.metadata.uid.unwrap());
    }
    for n in ["a", "b"] {
        support::patch_widget(&api, n, json!({"size": 1})).await;
    }
    api.delete("b", &DeleteParams::default()).await.unwrap();

    let reader = tokio::sync::Mutex::new(TopicReader::open(&topic));
    let live = live_uids(&api).await;
    assert_eq!(live.len(), 3);
    converges(&reader, &live, "watched delete").await;
    let records = reader.lock().await.records.clone();
    assert!(
        records.iter().any(|r| r.tombstone && r.key == uids["b"]),
        "no tombstone for b: {records:?}"
    );
    assert_eq!(bridge.stop().await.code(), Some(0));

    // While down: c deleted and e created, then history compacted, so only a relist can
    // infer the delete.
    api.delete("c", &DeleteParams::default()).await.unwrap();
    support::eventually("c to be gone from the API server", WAIT, || async {
        (!live_uids(&api).await.contains(&uids["c"])).then_some(())
    })
    .await;
    support::create_widget(&api, &crd, "e", json!({"size": 0})).await;
    support::compact_etcd();
    bridge.start();
    let listing = bridge.wait_logged("listing", WAIT).await;
    assert_eq!(listing["mode"], "Relist", "{listing}");
    let live = live_uids(&api).await;
    assert_eq!(live.len(), 3);
    converges(&reader, &live, "inferred delete").await;
    let reader = reader.into_inner();
    reader.assert_each_delete_has_its_tombstone();
    let tombstoned: BTreeSet<&str> = reader
        .records
        .iter()
        .filter(|r| r.tombstone)
        .map(|r| r.key.as_str())
        .collect();
    assert_eq!(
        tombstoned,
        BTreeSet::from([uids["b"].as_str(), uids["c"].as_str()]),
        "one tombstone key per deleted object"
    );
    bridge.stop().await;
}

/// Waits until the compacted view of the topic equals `live`.
async fn converges(reader: &tokio::sync::Mutex<TopicReader>, live: &BTreeSet<String>, after: &str) {
    support::eventually(
        &format!("the compacted view of the topic to equal the live objects ({after})"),
        WAIT,
        || async {
            let mut r = reader.lock().await;
            r.poll().await;
            (r.table() == *live).then_some(())
        },
    )
    .await;
}
