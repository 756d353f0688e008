//! The local NATS server is real and runs JetStream: a stream dedups by `Nats-Msg-Id`.

mod support;

use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;

#[tokio::test]
async fn jetstream_reports_duplicate_message_id() {
    let client = async_nats::connect(support::env("CRBRIDGE_NATS_URL"))
        .await
        .expect("connecting to NATS");
    let js = jetstream::new(client);
    let name = support::unique("SMOKE").to_uppercase();
    let subject = format!("{name}.events");
    js.get_or_create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![format!("{name}.>")],
        ..Default::default()
    })
    .await
    .expect("creating the stream");

    let publish = || async {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", "event-1");
        js.publish_with_headers(subject.clone(), headers, "x".into())
            .await
            .expect("publish")
            .await
            .expect("PubAck")
    };
    let first = publish().await;
    let second = publish().await;
    assert!(!first.duplicate);
    assert!(
        second.duplicate,
        "same Nats-Msg-Id must be reported as duplicate"
    );
    assert_eq!(first.sequence, second.sequence);

    let mut stream = js.get_stream(&name).await.expect("stream info");
    assert_eq!(stream.info().await.expect("info").state.messages, 1);
}
