//! The local RabbitMQ is real: a confirmed, mandatory publish to a topic exchange is routed
//! to a bound queue and read back.

mod support;

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::Confirmation;
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};

#[tokio::test]
async fn confirmed_publish_reaches_bound_queue() {
    let conn = Connection::connect(
        &support::env("CRBRIDGE_AMQP_URL"),
        ConnectionProperties::default(),
    )
    .await
    .expect("connecting to RabbitMQ");
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    let exchange = support::unique("smoke-x");
    let queue = support::unique("smoke-q");
    ch.exchange_declare(
        exchange.as_str().into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("declaring the exchange");
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("declaring the queue");
    ch.queue_bind(
        queue.as_str().into(),
        exchange.as_str().into(),
        "widgets.#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("binding");

    let confirm = ch
        .basic_publish(
            exchange.as_str().into(),
            "widgets.created".into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"hello",
            BasicProperties::default().with_message_id("event-1".into()),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(
        matches!(confirm, Confirmation::Ack(None)),
        "routed and acked, got {confirm:?}"
    );

    let got = ch
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
        .expect("a message in the bound queue");
    assert_eq!(got.delivery.data, b"hello");
    assert_eq!(
        got.delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str()),
        Some("event-1")
    );
}
