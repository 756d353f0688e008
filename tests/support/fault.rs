//! The fault suite's machinery: consumers that collect everything each sink delivers, a
//! steady workload of creates / updates / deletes, quiesce detection and the report.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{DeleteParams, DynamicObject, ListParams};
use kube::Api;
use rand::Rng;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::verify::{lost, verify, Ev, Truth, Verdict};
use super::TestCrd;

/// Events one sink delivered, collected in the background.
pub struct Collected {
    /// Sink name.
    pub sink: String,
    /// Everything received, in arrival order.
    pub events: Arc<Mutex<Vec<Ev>>>,
}

impl Collected {
    /// A copy of what arrived so far.
    pub fn snapshot(&self) -> Vec<Ev> {
        self.events.lock().unwrap().clone()
    }
}

/// Reads a JetStream stream from its start (waits for the stream to exist).
pub async fn collect_nats(sink: &str, stream: &str) -> Collected {
    use async_nats::jetstream::{self, consumer};
    let js = jetstream::new(
        async_nats::connect(super::env("CRBRIDGE_NATS_URL"))
            .await
            .unwrap(),
    );
    let events = Arc::new(Mutex::new(Vec::new()));
    let out = events.clone();
    let stream = stream.to_string();
    tokio::spawn(async move {
        let s = loop {
            if let Ok(s) = js.get_stream(&stream).await {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let c = s
            .create_consumer(consumer::push::OrderedConfig {
                deliver_subject: format!("_INBOX.{}", super::unique("fault")),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut msgs = c.messages().await.unwrap();
        while let Some(m) = msgs.next().await {
            let Ok(m) = m else { continue };
            let h = m.headers.clone().unwrap_or_default();
            let attr = |k: &str| {
                h.get(format!("ce-{k}").as_str())
                    .map(|v| v.to_string())
                    .unwrap_or_default()
            };
            let data: Value = serde_json::from_slice(&m.payload).unwrap_or(Value::Null);
            out.lock().unwrap().push(Ev::from_parts(&attr, data));
        }
    });
    Collected {
        sink: sink.into(),
        events,
    }
}

/// Reads a Kafka topic from the earliest offset.
pub fn collect_kafka(sink: &str, topic: &str) -> Collected {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::Headers;
    use rdkafka::Message;
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", super::env("CRBRIDGE_KAFKA_BROKERS"))
        .set("group.id", super::unique("fault"))
        .set("auto.offset.reset", "earliest")
        .set("topic.metadata.refresh.interval.ms", "500")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let out = events.clone();
    tokio::spawn(async move {
        loop {
            let Ok(m) = consumer.recv().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let mut attrs = std::collections::HashMap::new();
            if let Some(h) = m.headers() {
                for hd in h.iter() {
                    if let Some(a) = hd.key.strip_prefix("ce_") {
                        attrs.insert(
                            a.to_string(),
                            String::from_utf8_lossy(hd.value.unwrap_or_default()).into_owned(),
                        );
                    }
                }
            }
            let data: Value =
                serde_json::from_slice(m.payload().unwrap_or_default()).unwrap_or(Value::Null);
            let attr = |k: &str| attrs.get(k).cloned().unwrap_or_default();
            out.lock().unwrap().push(Ev::from_parts(&attr, data));
        }
    });
    Collected {
        sink: sink.into(),
        events,
    }
}

/// Declares `exchange` and a durable `queue` bound to everything, then consumes it.
pub async fn collect_amqp(sink: &str, exchange: &str, queue: &str) -> Collected {
    use lapin::options::BasicConsumeOptions;
    use lapin::types::{AMQPValue, FieldTable};
    let url = super::env("CRBRIDGE_AMQP_URL");
    let (conn, _ch) = super::amqp_bound_queue(exchange, queue).await;
    let events = Arc::new(Mutex::new(Vec::new()));
    let out = events.clone();
    let queue = queue.to_string();
    tokio::spawn(async move {
        // A broker restart closes the connection: reconnect and go on consuming (the queue
        // is durable and the messages persistent, so nothing is lost in between).
        let mut conn = Some(conn);
        loop {
            let c = match conn.take() {
                Some(c) => c,
                None => {
                    match lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
                        .await
                    {
                        Ok(c) => c,
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            continue;
                        }
                    }
                }
            };
            let Ok(ch) = c.create_channel().await else {
                continue;
            };
            let Ok(mut consumer) = ch
                .basic_consume(
                    queue.as_str().into(),
                    "fault".into(),
                    BasicConsumeOptions {
                        no_ack: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
            else {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            while let Some(Ok(d)) = consumer.next().await {
                let headers = d.properties.headers().clone().unwrap_or_default();
                let attr = |k: &str| match headers.inner().get(format!("cloudEvents:{k}").as_str())
                {
                    Some(AMQPValue::LongString(s)) => {
                        String::from_utf8_lossy(s.as_bytes()).into_owned()
                    }
                    _ => String::new(),
                };
                let data: Value = serde_json::from_slice(&d.data).unwrap_or(Value::Null);
                out.lock().unwrap().push(Ev::from_parts(&attr, data));
            }
            drop(c);
        }
    });
    Collected {
        sink: sink.into(),
        events,
    }
}

/// A steady stream of creates, updates and deletes over `objects` names.
pub struct Workload {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<HashSet<String>>,
    /// Operations the API server accepted so far.
    pub done: Arc<std::sync::atomic::AtomicU64>,
}

impl Workload {
    /// Starts changing objects until stopped; `pause` between operations.
    pub fn start(
        api: Api<DynamicObject>,
        crd: &TestCrd,
        objects: usize,
        pause: Duration,
    ) -> Workload {
        let stop = CancellationToken::new();
        let s = stop.clone();
        let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let ok = done.clone();
        let count = move || {
            ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        };
        let api_version = crd.resource.api_version.clone();
        let kind = crd.kind.clone();
        let task = tokio::spawn(async move {
            let mut created = HashSet::new();
            let mut live: Vec<bool> = vec![false; objects];
            let mut n = 0u64;
            let started = Instant::now();
            while !s.is_cancelled() {
                n += 1;
                let i = rand::rng().random_range(0..objects);
                let name = format!("w{i}");
                let r: f64 = rand::rng().random();
                if !live[i] {
                    let obj: DynamicObject = serde_json::from_value(json!({
                        "apiVersion": api_version, "kind": kind,
                        "metadata": {"name": name}, "spec": {"n": n, "tags": ["a", "b"]}
                    }))
                    .unwrap();
                    match api.create(&Default::default(), &obj).await {
                        Ok(o) => {
                            created.insert(o.metadata.uid.unwrap());
                            live[i] = true;
                            count();
                        }
                        Err(kube::Error::Api(s)) if s.code == 409 => live[i] = true,
                        Err(_) => {}
                    }
                } else if r < 0.12 {
                    if api.delete(&name, &DeleteParams::default()).await.is_ok() {
                        live[i] = false;
                        count();
                    }
                } else {
                    let patch = json!({"spec": {"n": n, "odd": {"a/b": n % 3, "c~d": [n]}}});
                    if api
                        .patch(&name, &Default::default(), &kube::api::Patch::Merge(patch))
                        .await
                        .is_ok()
                    {
                        count();
                    }
                }
                tokio::time::sleep(pause).await;
            }
            println!(
                "workload: {n} operations in {:?}, {} creates",
                started.elapsed(),
                created.len()
            );
            created
        });
        Workload { stop, task, done }
    }

    /// Waits until the API server accepted `more` further operations.
    pub async fn progress(&self, more: u64) {
        let target = self.done.load(std::sync::atomic::Ordering::Relaxed) + more;
        super::eventually("workload progress", Duration::from_secs(120), || {
            let done = self.done.clone();
            async move { (done.load(std::sync::atomic::Ordering::Relaxed) >= target).then_some(()) }
        })
        .await;
    }

    /// Stops and returns the uids it created.
    pub async fn stop(self) -> HashSet<String> {
        self.stop.cancel();
        self.task.await.unwrap()
    }
}

/// The API server's final state for the workload's objects.
pub async fn truth(api: &Api<DynamicObject>, created: &HashSet<String>) -> Truth {
    let list = api.list(&ListParams::default()).await.unwrap();
    let mut t = Truth::default();
    for o in list.items {
        let uid = o.metadata.uid.clone().unwrap();
        t.live
            .insert(uid, o.metadata.resource_version.unwrap().parse().unwrap());
    }
    for uid in created {
        if !t.live.contains_key(uid) {
            t.deleted.insert(uid.clone());
        }
    }
    println!(
        "truth: {} live, {} deleted, {} created by the workload",
        t.live.len(),
        t.deleted.len(),
        created.len()
    );
    t
}

/// Waits until every sink delivered every final state (or `limit`); returns how long it
/// took and the verdict per sink.
pub async fn quiesce(
    sinks: &[Collected],
    truth: &Truth,
    limit: Duration,
) -> (Duration, Vec<(String, Verdict)>) {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if sinks.iter().all(|c| lost(&c.snapshot(), truth).is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = t0.elapsed();
    // A moment more, so late duplicates are counted too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let verdicts = sinks
        .iter()
        .map(|c| (c.sink.clone(), verify(&c.snapshot(), truth)))
        .collect();
    (took, verdicts)
}

/// Appends a line per sink to `target/fault-report.md` and prints it.
pub fn report(fault: &str, iterations: usize, recovery: Duration, verdicts: &[(String, Verdict)]) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/target/fault-report.md");
    let mut text = String::new();
    if !std::path::Path::new(path).exists() {
        text.push_str("| fault | sink | iterations | events | duplicates | lost | order violations | broken patch chains | recovery |\n|---|---|---|---|---|---|---|---|---|\n");
    }
    for (sink, v) in verdicts {
        text.push_str(&format!(
            "| {fault} | {sink} | {iterations} | {} | {} | {} | {} | {} | {:.1} s |\n",
            v.events,
            v.duplicates,
            v.lost.len(),
            v.order_violations.len(),
            v.broken_chains.len(),
            recovery.as_secs_f64()
        ));
    }
    print!("{text}");
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Asserts every verdict is clean, with the details when not.
pub fn assert_clean(fault: &str, verdicts: &[(String, Verdict)]) {
    for (sink, v) in verdicts {
        assert!(v.ok(), "{fault}: sink {sink}: {v:#?}");
    }
}
