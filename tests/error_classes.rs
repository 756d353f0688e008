//! Broker refusals take the path an operator can act on, against the local RabbitMQ and
//! NATS: a size refusal (RabbitMQ's `max_message_size`, a JetStream stream's
//! `max_msg_size`) takes the oversize path (the event arrives without `data.object`), an access refusal halts the sink until the permission is granted (then
//! everything arrives, nothing is dead-lettered), and an unroutable message is retried
//! until a queue is bound (the default `unroutable: retry`), never dropped silently.
//!
//! Users and the node's `max_message_size` are changed with `rabbitmqctl` against the node
//! `deploy/local/up` runs; each test undoes its change when it ends, even on failure.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use kube::api::DynamicObject;
use kube::Api;
use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::{json, Value};
use support::bridge::Bridge;

const WAIT: Duration = Duration::from_secs(30);
/// An access refusal or a missing binding backs off exponentially (up to 30 s): enough
/// for the retry after the fix.
const RECOVER: Duration = Duration::from_secs(60);
const DEAD_LETTER: &str = "event refused by the sink; kept as a dead letter";
const RETRYING: &str = "publishing failed; resending from the cursor";

/// Runs `rabbitmqctl` against the node `deploy/local/up` started (its HOME holds the
/// Erlang cookie; its epmd listens on a private port).
fn rabbitmqctl(args: &[&str]) -> String {
    let dir = PathBuf::from(support::env("CRBRIDGE_LOCAL_STATE")).join("rabbitmq");
    let epmd = std::env::var("CRBRIDGE_PORT_EPMD").unwrap_or_else(|_| "14369".into());
    let out = Command::new("/usr/lib/rabbitmq/bin/rabbitmqctl")
        .arg("-q")
        .args(args)
        .env("HOME", dir.join("home"))
        .env("RABBITMQ_CONF_ENV_FILE", dir.join("rabbitmq-env.conf"))
        .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf"))
        .env("RABBITMQ_NODENAME", "crbridge@localhost")
        .env("ERL_EPMD_ADDRESS", "127.0.0.1")
        .env("ERL_EPMD_PORT", epmd)
        .output()
        .expect("running rabbitmqctl");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Puts the node's `max_message_size` back to what it was when dropped.
struct MaxMessageSize {
    before: String,
}

impl MaxMessageSize {
    /// Sets `max_message_size` to `bytes` at run time (no restart: RabbitMQ reads it when a
    /// channel opens, so channels opened from now on get the limit).
    fn set(bytes: u64) -> MaxMessageSize {
        let before = rabbitmqctl(&["eval", "application:get_env(rabbit, max_message_size)."]);
        let before = before
            .strip_prefix("{ok,")
            .and_then(|v| v.strip_suffix('}'))
            .unwrap_or_else(|| panic!("max_message_size: {before}"))
            .to_string();
        rabbitmqctl(&[
            "eval",
            &format!("application:set_env(rabbit, max_message_size, {bytes})."),
        ]);
        MaxMessageSize { before }
    }
}

impl Drop for MaxMessageSize {
    fn drop(&mut self) {
        rabbitmqctl(&[
            "eval",
            &format!(
                "application:set_env(rabbit, max_message_size, {}).",
                self.before
            ),
        ]);
    }
}

/// A RabbitMQ user of the default vhost, deleted when dropped.
struct User {
    name: String,
    password: String,
}

impl User {
    fn create(prefix: &str) -> User {
        let user = User {
            name: support::unique(prefix),
            password: support::unique("pw"),
        };
        rabbitmqctl(&["add_user", &user.name, &user.password]);
        user
    }

    /// `configure`, `write`, `read` permissions (regular expressions) on vhost `/`.
    fn permit(&self, configure: &str, write: &str, read: &str) {
        rabbitmqctl(&[
            "set_permissions",
            "-p",
            "/",
            &self.name,
            configure,
            write,
            read,
        ]);
    }

    fn url(&self) -> String {
        support::env("CRBRIDGE_AMQP_URL")
            .replace("guest:guest", &format!("{}:{}", self.name, self.password))
    }
}

impl Drop for User {
    fn drop(&mut self) {
        rabbitmqctl(&["delete_user", &self.name]);
    }
}

fn amqp_sink(url: &str, exchange: &str) -> String {
    format!(
        "  rabbit:\n    type: amqp\n    url: \"{url}\"\n    exchange: {exchange}\n    routingKey: \"{{name}}.{{type}}\"\n"
    )
}

/// The next `n` messages of `queue` as (object name, CloudEvents `data`), or a panic after
/// `limit`.
async fn take(ch: &lapin::Channel, queue: &str, n: usize, limit: Duration) -> Vec<(String, Value)> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut got = Vec::new();
    while got.len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {n} messages in {queue} after {limit:?}: {got:?}",
            got.len()
        );
        match ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            Some(m) => {
                let headers = m.delivery.properties.headers().clone().unwrap_or_default();
                let name = match headers.inner().get("cloudEvents:crbname") {
                    Some(lapin::types::AMQPValue::LongString(s)) => s.to_string(),
                    other => panic!("no crbname header: {other:?}"),
                };
                got.push((name, serde_json::from_slice(&m.delivery.data).unwrap()));
            }
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    got
}

/// Waits until the current run logged a failed publish whose error contains `cause`.
async fn wait_retrying(bridge: &Bridge, cause: &str) -> Value {
    support::eventually(
        &format!("a retried publish failing with {cause:?}"),
        WAIT,
        || {
            let hit = bridge
                .logged(RETRYING)
                .into_iter()
                .find(|l| l.to_string().contains(cause));
            async move { hit }
        },
    )
    .await
}

#[tokio::test]
async fn a_max_message_size_refusal_sends_the_event_without_its_object() {
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, "amqp-size").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &crd.resource);
    let dir = tempfile::tempdir().unwrap();
    let exchange = support::unique("crb-size-x");
    let queue = support::unique("crb-size-q");
    let (_conn, ch) = support::amqp_bound_queue(&exchange, &queue).await;
    let url = support::env("CRBRIDGE_AMQP_URL");
    let cfg = support::config_with_sinks(
        dir.path(),
        &crd,
        &ns,
        &["rabbit"],
        &amqp_sink(&url, &exchange),
        "",
    );
    let mut bridge = Bridge::new(dir.path(), &cfg);

    // The limit applies to channels opened while it is set: only the sink's first channel
    // gets it, and it is lifted as soon as that channel is open (the node is shared).
    let limit = MaxMessageSize::set(4096);
    bridge.start();
    bridge.wait_logged("sink connected", WAIT).await;
    drop(limit);
    bridge.wait_logged("list reconciled", WAIT).await;

    // A created object is in the event twice (data.object and the patch that adds it):
    // about 5.5 KB refused by the 4 KiB limit; the patch alone (about 3 KB) fits.
    support::create_widget(&api, &crd, "big", json!({"blob": "x".repeat(2500)})).await;
    support::create_widget(&api, &crd, "small", json!({"size": 1})).await;

    let mut got = take(&ch, &queue, 2, WAIT).await;
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got[0].0, "big");
    assert!(got[0].1.get("object").is_none(), "sent without data.object");
    assert_eq!(
        got[0].1["patch"][0]["value"]["spec"]["blob"]
            .as_str()
            .map(str::len),
        Some(2500)
    );
    assert_eq!(got[1].0, "small");
    assert!(got[1].1.get("object").is_some());
    let trimmed = bridge
        .wait_logged("event too large; sent without data.object", WAIT)
        .await;
    assert_eq!(trimmed["sink"], "rabbit");
    assert!(
        bridge.logged(DEAD_LETTER).is_empty(),
        "{}",
        bridge.raw_log()
    );
    bridge.stop().await;
}

#[tokio::test]
async fn access_refused_halts_the_sink_until_the_permission_is_granted() {
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, "amqp-acl").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &crd.resource);
    let dir = tempfile::tempdir().unwrap();
    let exchange = support::unique("crb-acl-x");
    let queue = support::unique("crb-acl-q");
    let (_conn, ch) = support::amqp_bound_queue(&exchange, &queue).await;
    // May declare (configure) the exchange, may not publish to it (write).
    let user = User::create("crb-acl");
    user.permit(".*", "^$", ".*");
    let cfg = support::config_with_sinks(
        dir.path(),
        &crd,
        &ns,
        &["rabbit"],
        &amqp_sink(&user.url(), &exchange),
        "",
    );
    let mut bridge = Bridge::new(dir.path(), &cfg);
    bridge.start();
    let base = bridge.http_base().await;
    bridge.wait_logged("list reconciled", WAIT).await;
    for name in ["a", "b", "c"] {
        support::create_widget(&api, &crd, name, json!({"size": 1})).await;
    }

    // Halted at the first event: retried, unready by name, nothing dead-lettered.
    wait_retrying(&bridge, "access refused").await;
    let (code, body) = support::http_get(&format!("{base}/readyz"));
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("sink rabbit unhealthy"), "{body}");
    assert!(
        bridge.logged(DEAD_LETTER).is_empty(),
        "{}",
        bridge.raw_log()
    );

    // The operator grants the permission: everything arrives, in order.
    user.permit(".*", ".*", ".*");
    let got = take(&ch, &queue, 3, RECOVER).await;
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    support::eventually("/readyz to answer 200", WAIT, || {
        let base = base.clone();
        async move { (support::http_get(&format!("{base}/readyz")).0 == 200).then_some(()) }
    })
    .await;
    assert!(
        bridge.logged(DEAD_LETTER).is_empty(),
        "{}",
        bridge.raw_log()
    );
    bridge.stop().await;
}

#[tokio::test]
async fn an_unroutable_message_is_retried_until_a_queue_is_bound() {
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, "amqp-noroute").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &crd.resource);
    let dir = tempfile::tempdir().unwrap();
    let exchange = support::unique("crb-noroute-x");
    let queue = support::unique("crb-noroute-q");
    // The sink declares the exchange; no queue is bound to it yet.
    let cfg = support::config_with_sinks(
        dir.path(),
        &crd,
        &ns,
        &["rabbit"],
        &amqp_sink(&support::env("CRBRIDGE_AMQP_URL"), &exchange),
        "",
    );
    let mut bridge = Bridge::new(dir.path(), &cfg);
    bridge.start();
    bridge.wait_logged("list reconciled", WAIT).await;
    support::create_widget(&api, &crd, "lonely", json!({"size": 1})).await;

    let failed = wait_retrying(&bridge, "unroutable").await;
    assert!(
        failed.to_string().contains("unroutable: retry"),
        "the log names the setting: {failed}"
    );
    assert!(
        bridge.logged(DEAD_LETTER).is_empty(),
        "{}",
        bridge.raw_log()
    );

    // A consumer binds its queue: the event arrives.
    let conn = lapin::Connection::connect(
        &support::env("CRBRIDGE_AMQP_URL"),
        lapin::ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        queue.as_str().into(),
        exchange.as_str().into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let got = take(&ch, &queue, 1, RECOVER).await;
    assert_eq!(got[0].0, "lonely");
    assert!(
        bridge.logged(DEAD_LETTER).is_empty(),
        "{}",
        bridge.raw_log()
    );
    bridge.stop().await;
}

#[tokio::test]
async fn a_stream_max_msg_size_refusal_sends_the_event_without_its_object() {
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, "nats-size").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &crd.resource);
    let dir = tempfile::tempdir().unwrap();
    let stream = support::unique("SIZE").to_uppercase().replace('-', "_");
    // The stream exists with a 4 KiB message limit, far under the server's max_payload:
    // the refusal comes from JetStream in the PubAck, not from the client's own check.
    let js = async_nats::jetstream::new(
        async_nats::connect(support::env("CRBRIDGE_NATS_URL"))
            .await
            .expect("connecting to NATS"),
    );
    js.create_stream(async_nats::jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![format!("{stream}.>")],
        max_message_size: 4096,
        ..Default::default()
    })
    .await
    .expect("creating the stream");
    let mut bridge = Bridge::new(
        dir.path(),
        &support::nats_config(dir.path(), &crd, &ns, &stream),
    );
    bridge.start();
    bridge.wait_logged("list reconciled", WAIT).await;
    let mut reader = support::nats::Reader::open(&stream).await;

    support::create_widget(&api, &crd, "big", json!({"blob": "x".repeat(2500)})).await;
    support::create_widget(&api, &crd, "small", json!({"size": 1})).await;
    // Two objects, both in flight at once: the stream may hold them in either order.
    let mut got = reader.take(2, WAIT).await;
    got.sort_by(|a, b| a.attr("crbname").cmp(b.attr("crbname")));
    assert_eq!(got[0].attr("crbname"), "big");
    assert!(
        got[0].data.get("object").is_none(),
        "sent without data.object"
    );
    assert_eq!(
        got[0].data["patch"][0]["value"]["spec"]["blob"]
            .as_str()
            .map(str::len),
        Some(2500)
    );
    assert_eq!(got[1].attr("crbname"), "small");
    assert!(got[1].data.get("object").is_some());
    assert!(
        bridge.logged(DEAD_LETTER).is_empty(),
        "{}",
        bridge.raw_log()
    );
    bridge.stop().await;
    js.delete_stream(&stream)
        .await
        .expect("deleting the stream");
}
