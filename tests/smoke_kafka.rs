//! The local Kafka broker is real: an idempotent producer's record comes back to a consumer.

mod support;

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;

#[tokio::test]
async fn idempotent_producer_record_is_consumed() {
    let brokers = support::env("CRBRIDGE_KAFKA_BROKERS");
    let topic = support::unique("smoke-kafka");

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("creating the producer");
    let delivery = producer
        .send(
            FutureRecord::to(&topic).key("uid-1").payload("hello"),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("delivery report");
    assert_eq!(delivery.offset, 0, "first record of a fresh topic");

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", support::unique("smoke-group"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("creating the consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");
    let msg = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("timed out waiting for the record")
        .expect("consumer error");
    assert_eq!(msg.key(), Some(&b"uid-1"[..]));
    assert_eq!(msg.payload(), Some(&b"hello"[..]));
}
