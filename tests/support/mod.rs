//! Shared helpers for the integration tests: where the real servers are, unique names, and
//! Kubernetes fixtures (namespaces, CRDs) created against the real kube-apiserver.
//!
//! The servers are started by `deploy/local/up`, which writes `deploy/local/env`. Tests read
//! the variables from the environment first and fall back to that file, so `cargo test` works
//! without sourcing it. A missing server is a test failure with a hint, never a skip.
#![allow(dead_code, missing_docs)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::json;

/// Reads a setting written by `deploy/local/up`, from the environment or `deploy/local/env`.
pub fn env(name: &str) -> String {
    if let Ok(v) = std::env::var(name) {
        return v;
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/local/env");
    let text = std::fs::read_to_string(path).unwrap_or_else(|_| {
        panic!("{name} is not set and {path} does not exist: run deploy/local/up first")
    });
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .unwrap_or_else(|| panic!("{name} is missing from {path}: run deploy/local/up again"))
}

/// The `sequence` attribute of an event at resourceVersion `rv`: zero-padded to 20 digits.
pub fn sequence_of(rv: &str) -> String {
    format!("{rv:0>20}")
}

/// A name no other test (or earlier run) uses: DNS-1123 safe, lower case.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{prefix}-{:x}{:x}{n}",
        std::process::id(),
        nanos % 0xffff_ffff
    )
}

/// Polls `check` every 100 ms until it yields a value, or panics naming `what` after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The non-empty documents of a multi-document YAML text, as JSON; panics naming `what`.
pub fn yaml_documents(text: &str, what: &str) -> Vec<serde_json::Value> {
    serde_saphyr::from_multiple::<serde_json::Value>(text)
        .unwrap_or_else(|e| panic!("{what}: {e}"))
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

/// Waits until `{base}/readyz` answers `code` with a body containing `text`; returns the
/// body.
pub async fn wait_readyz(base: &str, code: u16, text: &str, limit: Duration) -> String {
    let url = format!("{base}/readyz");
    eventually(
        &format!("/readyz to answer {code} with {text:?}"),
        limit,
        || async {
            let (c, body) = http_get(&url);
            (c == code && body.contains(text)).then_some(body)
        },
    )
    .await
}

/// A client for the local kube-apiserver, from the kubeconfig `deploy/local/up` wrote.
pub async fn kube_client() -> Client {
    kube_client_from(&env("KUBECONFIG")).await
}

/// A client for the second local kube-apiserver (another cluster, its own etcd).
pub async fn kube_client_b() -> Client {
    kube_client_from(&env("CRBRIDGE_KUBECONFIG_B")).await
}

/// A client from the kubeconfig file at `path`.
pub async fn kube_client_from(path: &str) -> Client {
    let path = path.to_string();
    let kubeconfig =
        Kubeconfig::read_from(&path).unwrap_or_else(|e| panic!("reading kubeconfig {path}: {e}"));
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("kubeconfig {path}: {e}"));
    Client::try_from(config).expect("building the kube client")
}

/// Creates a fresh namespace (no controller-manager runs here, so namespaces are never
/// deleted: every test takes a new one).
pub async fn namespace(client: &Client, prefix: &str) -> String {
    let name = unique(prefix);
    namespace_named(client, &name).await;
    name
}

/// Creates the namespace `name`.
pub async fn namespace_named(client: &Client, name: &str) {
    let name = name.to_string();
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
}

/// A namespaced CRD with a free-form spec and a status subresource, in a group of its own.
pub struct TestCrd {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub resource: ApiResource,
}

/// Creates a CRD `kind` in a unique group and waits until the server reports it Established.
pub async fn crd(client: &Client, kind: &str) -> TestCrd {
    crd_in(client, &format!("{}.crbridge.test", unique("g")), kind).await
}

/// Creates a CRD `kind` in `group` (a group no other test uses) and waits until the server
/// reports it Established.
pub async fn crd_in(client: &Client, group: &str, kind: &str) -> TestCrd {
    let group = group.to_string();
    let plural = format!("{}s", kind.to_lowercase());
    let name = format!("{plural}.{group}");
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(), "listKind": format!("{kind}List")},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                    }
                }}
            }]
        }
    }))
    .unwrap();
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    api.create(&PostParams::default(), &crd)
        .await
        .unwrap_or_else(|e| panic!("creating CRD {name}: {e}"));
    eventually(
        &format!("CRD {name} to be Established"),
        Duration::from_secs(30),
        || async {
            let crd = api.get(&name).await.ok()?;
            let established = crd
                .status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            established.then_some(())
        },
    )
    .await;
    let resource = ApiResource {
        group: group.clone(),
        version: "v1".into(),
        api_version: format!("{group}/v1"),
        kind: kind.into(),
        plural: plural.clone(),
    };
    // Established means the API is served, but discovery may lag a moment behind it.
    TestCrd {
        group,
        version: "v1".into(),
        kind: kind.into(),
        plural,
        resource,
    }
}

pub mod bridge;
pub mod consumers;
pub mod nats;
pub mod servers;
pub mod tls;

/// A crbridge config watching `crd` in `namespace`, publishing to a NATS stream of its own.
pub fn nats_config(dir: &std::path::Path, crd: &TestCrd, namespace: &str, stream: &str) -> String {
    let sinks = format!(
        "  nats:\n    type: nats\n    url: {}\n    stream: {stream}\n    subject: \"{stream}.{{cluster}}.{{group}}.{{kind}}.{{namespace}}.{{name}}\"\n",
        env("CRBRIDGE_NATS_URL")
    );
    config_with_sinks(dir, crd, namespace, &["nats"], &sinks, "")
}

/// The current etcd revision.
pub fn etcd_revision() -> i64 {
    etcd_revision_at(&env("CRBRIDGE_ETCD_ENDPOINT"))
}

/// The current revision of the etcd at `endpoint`.
pub fn etcd_revision_at(endpoint: &str) -> i64 {
    let out = std::process::Command::new("curl")
        .args(["-sf", "-X", "POST", "-d", r#"{"key":"AA=="}"#])
        .arg(format!("{endpoint}/v3/kv/range"))
        .output()
        .expect("running curl");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("etcd range answer");
    v["header"]["revision"].as_str().unwrap().parse().unwrap()
}

/// Compacts etcd history up to the current revision: every older resourceVersion is gone,
/// so a watch from it answers 410 Gone.
pub fn compact_etcd() {
    compact_etcd_at(&env("CRBRIDGE_ETCD_ENDPOINT"))
}

/// Compacts the history of the etcd at `endpoint` (see [`compact_etcd`]).
pub fn compact_etcd_at(endpoint: &str) {
    let rev = etcd_revision_at(endpoint);
    let out = std::process::Command::new("curl")
        .args(["-sf", "-X", "POST", "-d"])
        .arg(format!(r#"{{"revision":"{rev}","physical":true}}"#))
        .arg(format!("{endpoint}/v3/kv/compaction"))
        .output()
        .expect("running curl");
    assert!(
        out.status.success(),
        "etcd compaction failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
pub mod cloudevents;

/// A crbridge config watching `crd` in `namespace`, publishing to the sinks in
/// `sinks_yaml` (the lines under `sinks:`, indented two spaces), `extra` appended to the
/// top level.
pub fn config_with_sinks(
    dir: &std::path::Path,
    crd: &TestCrd,
    namespace: &str,
    watch_sinks: &[&str],
    sinks_yaml: &str,
    extra: &str,
) -> String {
    format!(
        r#"cluster: test
kubeconfig: {kubeconfig}
state:
  path: {state}
http:
  listen: 127.0.0.1:0
admin:
  listen: 127.0.0.1:0
watches:
  - name: widgets
    group: {group}
    version: {version}
    kind: {kind}
    namespaces: [{namespace}]
    sinks: [{sinks}]
sinks:
{sinks_yaml}
{extra}"#,
        kubeconfig = env("KUBECONFIG"),
        state = bridge::Bridge::state_path(dir).display(),
        group = crd.group,
        version = crd.version,
        kind = crd.kind,
        sinks = watch_sinks.join(", "),
    )
}

/// Creates a Widget `name` with `spec`; returns the server's object.
pub async fn create_widget(
    api: &kube::Api<kube::api::DynamicObject>,
    crd: &TestCrd,
    name: &str,
    spec: serde_json::Value,
) -> kube::api::DynamicObject {
    let obj: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": crd.resource.api_version,
        "kind": crd.kind,
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap();
    api.create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e}"))
}

/// Merge-patches a Widget's spec; returns the server's object.
pub async fn patch_widget(
    api: &kube::Api<kube::api::DynamicObject>,
    name: &str,
    spec: serde_json::Value,
) -> kube::api::DynamicObject {
    api.patch(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({ "spec": spec })),
    )
    .await
    .unwrap_or_else(|e| panic!("patch {name}: {e}"))
}

/// GET `url` with curl: (HTTP status, body).
pub fn http_get(url: &str) -> (u16, String) {
    curl_get(url, &[])
}

/// GET `url` with curl and `Authorization: Bearer {token}`: (HTTP status, body).
pub fn http_get_authorized(url: &str, token: &str) -> (u16, String) {
    curl_get(url, &["-H", &format!("Authorization: Bearer {token}")])
}

fn curl_get(url: &str, extra: &[&str]) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "5", "-w", "\n%{http_code}"])
        .args(extra)
        .arg(url)
        .output()
        .expect("running curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The admin token a running instance generated in its state directory `state`.
pub fn admin_token(state: &std::path::Path) -> String {
    let path = state.join("admin.token");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

/// A TCP port nothing listens on right now (for a fixed `http.listen` or `admin.listen`).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
pub mod fault;
pub mod verify;

/// A durable topic exchange `exchange` and a durable queue `queue` bound to it with `#` on
/// the local RabbitMQ (both survive a broker restart); returns the connection (keep it
/// alive) and a channel.
pub async fn amqp_bound_queue(exchange: &str, queue: &str) -> (lapin::Connection, lapin::Channel) {
    use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    let conn = lapin::Connection::connect(
        &env("CRBRIDGE_AMQP_URL"),
        lapin::ConnectionProperties::default(),
    )
    .await
    .expect("connecting to RabbitMQ");
    let ch = conn.create_channel().await.expect("AMQP channel");
    ch.exchange_declare(
        exchange.into(),
        lapin::ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("declaring the exchange");
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("declaring the queue");
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("binding the queue");
    (conn, ch)
}

/// The next Kafka record within `limit`, skipping the consumer's transient errors (a topic
/// the producer has not auto-created yet answers UnknownTopicOrPartition for a moment).
pub async fn kafka_recv(
    consumer: &rdkafka::consumer::StreamConsumer,
    limit: Duration,
) -> Option<rdkafka::message::OwnedMessage> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Err(_) => return None,
            Ok(Ok(m)) => return Some(m.detach()),
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
