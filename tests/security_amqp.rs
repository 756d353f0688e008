//! The RabbitMQ sink over TLS with a client certificate, against the local broker's TLS
//! listener (`CRBRIDGE_AMQPS_URL`, client certificate required): events published by
//! `crbridge run` are read back over amqps by an independent consumer; every way of getting
//! TLS or the login wrong gives one clear `crbridge check` line naming the sink and the cause;
//! the plaintext and TLS ports are never confused; and the password appears nowhere, even in
//! TRACE logs.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::api::{ApiResource, DynamicObject};
use kube::Api;
use lapin::options::{
    BasicGetOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::FieldTable;
use serde_json::json;
use support::bridge::{run_cli, Bridge};

const WAIT: Duration = Duration::from_secs(30);

/// The TLS listener's URL, with the password.
fn amqps_url() -> String {
    support::env("CRBRIDGE_AMQPS_URL")
}

/// The password inside the TLS listener's URL.
fn password() -> String {
    let url = amqps_url();
    let (_, rest) = url.split_once("://").unwrap();
    let (userinfo, _) = rest.rsplit_once('@').unwrap();
    let (_, pw) = userinfo.split_once(':').unwrap();
    assert!(
        pw.len() >= 8,
        "the test password is long enough to be found"
    );
    pw.to_string()
}

/// `host:port` of the TLS listener.
fn tls_endpoint() -> String {
    let url = amqps_url();
    let (_, rest) = url.rsplit_once('@').unwrap();
    rest.split('/').next().unwrap().to_string()
}

/// `host:port` of the plaintext listener.
fn plain_endpoint() -> String {
    let url = support::env("CRBRIDGE_AMQP_URL");
    let (_, rest) = url.rsplit_once('@').unwrap();
    rest.split('/').next().unwrap().to_string()
}

/// The YAML of a `tls` section: the local CA and client certificate unless replaced.
fn tls_yaml(ca: Option<&Path>, client_cert: bool) -> String {
    let ca = ca.map_or_else(
        || PathBuf::from(support::env("CRBRIDGE_TLS_CA")),
        Path::to_path_buf,
    );
    let mut s = format!("    tls:\n      caFile: {}\n", ca.display());
    if client_cert {
        s.push_str(&format!(
            "      certFile: {}\n      keyFile: {}\n",
            support::env("CRBRIDGE_TLS_CLIENT_CERT"),
            support::env("CRBRIDGE_TLS_CLIENT_KEY")
        ));
    }
    s
}

/// A sink section `name` with `url` and `tls` (the lines of a `tls` section, or empty).
fn sink_yaml(name: &str, url: &str, exchange: &str, tls: &str) -> String {
    format!(
        "  {name}:\n    type: amqp\n    url: \"{url}\"\n    exchange: {exchange}\n    routingKey: \"{{kind}}.{{namespace}}.{{name}}\"\n{tls}"
    )
}

/// A connection of the test's own over TLS with the client certificate: the independent
/// reader.
async fn amqps_connect() -> lapin::Connection {
    let tls = OwnedTLSConfig {
        identity: Some(OwnedIdentity::PKCS8 {
            pem: std::fs::read(support::env("CRBRIDGE_TLS_CLIENT_CERT")).unwrap(),
            key: std::fs::read(support::env("CRBRIDGE_TLS_CLIENT_KEY")).unwrap(),
        }),
        cert_chain: Some(std::fs::read_to_string(support::env("CRBRIDGE_TLS_CA")).unwrap()),
    };
    lapin::Connection::connect_with_config(
        &amqps_url(),
        lapin::ConnectionProperties::default(),
        tls,
        lapin::runtime::default_runtime().unwrap(),
    )
    .await
    .expect("connecting to RabbitMQ's TLS listener with the client certificate")
}

/// A topic exchange and a queue bound to it with `#`, declared over TLS.
async fn amqps_bound_queue(exchange: &str, queue: &str) -> (lapin::Connection, lapin::Channel) {
    let conn = amqps_connect().await;
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
            auto_delete: true,
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

/// The next `n` message ids and routing keys in `queue`, within [`WAIT`].
async fn take(ch: &lapin::Channel, queue: &str, n: usize) -> Vec<(String, String)> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while got.len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {n} messages in queue {queue} after {WAIT:?}",
            got.len()
        );
        let Some(m) = ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
        else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let id = m
            .delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default();
        got.push((id, m.delivery.routing_key.to_string()));
    }
    got
}

/// A watch of a kind that need not exist: `check` only has to reach the sink.
fn placeholder_crd() -> support::TestCrd {
    let group = format!("{}.crbridge.test", support::unique("g"));
    support::TestCrd {
        resource: ApiResource {
            group: group.clone(),
            version: "v1".into(),
            api_version: format!("{group}/v1"),
            kind: "Widget".into(),
            plural: "widgets".into(),
        },
        group,
        version: "v1".into(),
        kind: "Widget".into(),
        plural: "widgets".into(),
    }
}

/// Runs `crbridge check` with `sinks` (sink `rabbit`) and returns its `sink rabbit` line and
/// the whole output; asserts the check failed.
fn check_fails(dir: &Path, sinks: &str) -> (String, String) {
    std::fs::create_dir_all(dir).unwrap();
    let crd = placeholder_crd();
    let cfg = support::config_with_sinks(dir, &crd, "default", &["rabbit"], sinks, "");
    let path = dir.join("crbridge.yaml");
    std::fs::write(&path, cfg).unwrap();
    let (st, out, err) = run_cli(&["check", "-c", path.to_str().unwrap()]);
    let all = format!("{out}{err}");
    assert!(!st.success(), "check should fail:\n{all}");
    let line = out
        .lines()
        .find(|l| l.contains("sink rabbit:"))
        .unwrap_or_else(|| panic!("no line for sink rabbit:\n{all}"))
        .to_string();
    assert!(line.starts_with("FAIL sink rabbit: "), "{line}");
    assert!(!all.contains(&password()), "the password leaked:\n{all}");
    (line, all)
}

#[tokio::test]
async fn events_go_over_amqps_with_a_client_certificate_and_are_read_back_over_amqps() {
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, "amqps").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &crd.resource);
    let dir = tempfile::tempdir().unwrap();
    let exchange = support::unique("crb-tls-x");
    let queue = support::unique("crb-tls-q");
    let (_conn, ch) = amqps_bound_queue(&exchange, &queue).await;

    let sinks = sink_yaml("rabbit", &amqps_url(), &exchange, &tls_yaml(None, true));
    let cfg = support::config_with_sinks(dir.path(), &crd, &ns, &["rabbit"], &sinks, "");
    let mut bridge = Bridge::new(dir.path(), &cfg);

    let (st, out, err) = run_cli(&["check", "-c", bridge.config.to_str().unwrap()]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("ok   sink rabbit: amqp reachable")),
        "check over amqps ({st}):\n{out}{err}"
    );

    bridge.start();
    bridge.wait_logged("sink connected", WAIT).await;
    let a = support::create_widget(&api, &crd, "tls-a", json!({"size": 1})).await;
    support::patch_widget(&api, "tls-a", json!({"size": 2})).await;
    let got = take(&ch, &queue, 2).await;
    assert!(
        got.iter()
            .all(|(id, key)| !id.is_empty() && key == &format!("Widget.{ns}.tls-a")),
        "{got:?} (object {:?})",
        a.metadata.name
    );
    bridge.stop().await;
    let logs = bridge.raw_log();
    assert!(!logs.contains(&password()), "the password leaked:\n{logs}");
}

#[tokio::test]
async fn a_ca_that_did_not_sign_the_broker_is_one_clear_failure() {
    let dir = tempfile::tempdir().unwrap();
    let ca = support::tls::foreign_ca(dir.path()).ca;
    let sinks = sink_yaml("rabbit", &amqps_url(), "x", &tls_yaml(Some(&ca), true));
    let (line, _) = check_fails(&dir.path().join("c"), &sinks);
    assert!(
        line.contains("the broker's certificate is not signed by a trusted CA"),
        "{line}"
    );
    assert!(line.contains("amqps://***@"), "{line}");
}

#[tokio::test]
async fn no_client_certificate_is_one_clear_failure() {
    let dir = tempfile::tempdir().unwrap();
    let sinks = sink_yaml("rabbit", &amqps_url(), "x", &tls_yaml(None, false));
    let (line, _) = check_fails(dir.path(), &sinks);
    assert!(line.contains("client certificate"), "{line}");
    assert!(line.contains("tls.certFile"), "{line}");
}

#[tokio::test]
async fn a_wrong_password_is_one_clear_failure_that_shows_neither_password() {
    let dir = tempfile::tempdir().unwrap();
    let wrong = "NotThePassword4711";
    let url = amqps_url().replace(&format!(":{}@", password()), &format!(":{wrong}@"));
    assert_ne!(url, amqps_url());
    let sinks = sink_yaml("rabbit", &url, "x", &tls_yaml(None, true));
    let (line, all) = check_fails(dir.path(), &sinks);
    assert!(line.contains("the broker refused the login"), "{line}");
    assert!(!all.contains(wrong), "the wrong password leaked:\n{all}");
}

#[tokio::test]
async fn plaintext_amqp_to_the_tls_port_is_one_clear_failure() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("amqp://crbridge:{}@{}/%2f", password(), tls_endpoint());
    let sinks = sink_yaml("rabbit", &url, "x", "");
    let (line, _) = check_fails(dir.path(), &sinks);
    assert!(line.contains("use an amqps:// URL"), "{line}");
}

/// Proof the connection is really TLS: the plaintext listener cannot complete a handshake.
#[tokio::test]
async fn amqps_to_the_plaintext_port_fails_with_a_tls_error() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("amqps://guest:guest@{}/%2f", plain_endpoint());
    let sinks = sink_yaml("rabbit", &url, "x", &tls_yaml(None, true));
    let (line, _) = check_fails(dir.path(), &sinks);
    assert!(line.contains("TLS: "), "{line}");
    assert!(line.contains("does not answer in TLS"), "{line}");
}

#[tokio::test]
async fn a_tls_section_with_a_plaintext_url_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("amqp://crbridge:{}@{}/%2f", password(), plain_endpoint());
    let sinks = sink_yaml("rabbit", &url, "x", &tls_yaml(None, true));
    let (line, _) = check_fails(dir.path(), &sinks);
    assert!(line.contains("sinks.rabbit.tls: "), "{line}");
    assert!(
        line.contains("amqp://") && line.contains("amqps://"),
        "{line}"
    );

    // The same words when the URL comes from the environment, found when connecting.
    let mut bridge = Bridge::new(
        dir.path(),
        &support::config_with_sinks(
            dir.path(),
            &placeholder_crd(),
            "default",
            &["rabbit"],
            &sink_yaml(
                "rabbit",
                "env:CRB_TEST_AMQP_URL",
                "x",
                &tls_yaml(None, true),
            ),
            "",
        ),
    );
    bridge.env("CRB_TEST_AMQP_URL", &url);
    let (_, out, err) = {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_crbridge"))
            .args(["check", "-c", bridge.config.to_str().unwrap()])
            .env("CRB_TEST_AMQP_URL", &url)
            .output()
            .unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let line = out
        .lines()
        .find(|l| l.contains("sink rabbit:"))
        .unwrap_or_else(|| panic!("{out}{err}"));
    assert!(line.starts_with("FAIL sink rabbit: "), "{line}");
    assert!(line.contains("sinks.rabbit.tls: "), "{line}");
    assert!(line.contains("CRB_TEST_AMQP_URL"), "{line}");
    assert!(!format!("{out}{err}").contains(&password()), "{out}{err}");
}

/// `run` logs the cause and keeps retrying; `tail` connects the same way and fails the same
/// way.
#[tokio::test]
async fn run_logs_the_cause_and_retries_and_tail_uses_the_same_tls() {
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, "amqps-retry").await;
    let dir = tempfile::tempdir().unwrap();
    let ca = support::tls::foreign_ca(&dir.path().join("ca")).ca;
    let sinks = sink_yaml("rabbit", &amqps_url(), "x", &tls_yaml(Some(&ca), true));
    let cfg = support::config_with_sinks(dir.path(), &crd, &ns, &["rabbit"], &sinks, "");
    let mut bridge = Bridge::new(dir.path(), &cfg);
    bridge.start();
    let failures = support::eventually("two failed connects", WAIT, || {
        let l = bridge.logged("connecting sink failed");
        async move { (l.len() >= 2).then_some(l) }
    })
    .await;
    for l in &failures {
        assert_eq!(l["sink"], "rabbit", "{l}");
        let e = l["error"].as_str().unwrap_or_default();
        assert!(e.contains("not signed by a trusted CA"), "{l}");
    }
    assert!(bridge.is_running(), "a failing sink does not stop crbridge");
    let config = bridge.config.to_str().unwrap().to_string();
    let (st, out, err) = run_cli(&["tail", "-c", &config, "--sink", "rabbit", "--count", "1"]);
    assert!(
        !st.success(),
        "tail cannot connect with the wrong CA:\n{out}{err}"
    );
    assert!(err.contains("not signed by a trusted CA"), "{err}");
    bridge.stop().await;
    let logs = bridge.raw_log();
    assert!(!logs.contains(&password()), "the password leaked:\n{logs}");
}

/// Everything crbridge writes at TRACE, for a good sink and one with a wrong password, holds
/// neither password.
#[tokio::test]
async fn trace_logs_never_hold_the_password() {
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, "amqps-trace").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &crd.resource);
    let dir = tempfile::tempdir().unwrap();
    let exchange = support::unique("crb-trace-x");
    let queue = support::unique("crb-trace-q");
    let (_conn, ch) = amqps_bound_queue(&exchange, &queue).await;
    let wrong = "AnotherWrongPassword0815";
    let bad_url = amqps_url().replace(&format!(":{}@", password()), &format!(":{wrong}@"));
    let sinks = format!(
        "{}{}",
        sink_yaml("rabbit", &amqps_url(), &exchange, &tls_yaml(None, true)),
        sink_yaml("badlogin", &bad_url, &exchange, &tls_yaml(None, true)),
    );
    let cfg =
        support::config_with_sinks(dir.path(), &crd, &ns, &["rabbit", "badlogin"], &sinks, "");
    let mut bridge = Bridge::new(dir.path(), &cfg);
    bridge.env("CRBRIDGE_LOG", "trace");
    bridge.start();
    bridge.wait_logged("sink connected", WAIT).await;
    support::create_widget(&api, &crd, "traced", json!({"size": 1})).await;
    take(&ch, &queue, 1).await;
    support::eventually("a failed login logged", WAIT, || {
        let n = bridge.logged("connecting sink failed").len();
        async move { (n >= 1).then_some(()) }
    })
    .await;
    bridge.stop().await;
    let all = format!("{}{}", bridge.raw_log(), bridge.stdout());
    assert!(
        all.lines()
            .filter(|l| l.contains(r#""level":"TRACE""#))
            .count()
            > 100,
        "TRACE is on: {} lines",
        all.lines().count()
    );
    assert!(
        all.contains("lapin"),
        "the AMQP client's own lines are in the output"
    );
    for secret in [password(), wrong.to_string()] {
        for form in written_forms(&secret) {
            if let Some(l) = all.lines().find(|l| l.contains(&form)) {
                let l = l.replace(&form, "<PASSWORD HERE>");
                panic!("a password is in the TRACE output: {l}");
            }
        }
    }
}

/// How a secret may show in a log line: as text, or as the bytes of a `Debug`-printed
/// buffer (`[66, 77, …]`, which is how a client prints a frame holding it).
fn written_forms(secret: &str) -> Vec<String> {
    let bytes = |sep: &str| {
        secret
            .bytes()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(sep)
    };
    vec![
        secret.to_string(),
        bytes(", "),
        bytes(","),
        format!("{secret:?}"),
    ]
}
