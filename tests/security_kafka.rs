//! The Kafka sink behind TLS and SASL, against the real SASL_SSL listener of
//! `deploy/local/up` (SCRAM, client certificate required): events published through it are
//! read back over SASL_SSL by an independent consumer and by `crbridge tail`; a wrong CA, a
//! client certificate from another CA, a wrong password and a plaintext client on the TLS
//! port each give `crbridge check` one FAIL line naming the sink and the cause; every
//! compression codec publishes; a TRACE-level run never logs the password.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use kube::api::DynamicObject;
use kube::Api;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::Message;
use serde_json::json;
use support::bridge::Bridge;

const WAIT: Duration = Duration::from_secs(30);

struct Fixture {
    api: Api<DynamicObject>,
    crd: support::TestCrd,
    ns: String,
    dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, "sec-kafka").await;
    Fixture {
        api: Api::namespaced_with(client, &ns, &crd.resource),
        crd,
        ns,
        dir: tempfile::tempdir().unwrap(),
    }
}

/// Writes the SASL password into a file in `dir` (read by the sink as `file:`).
fn password_file(dir: &Path) -> PathBuf {
    let path = dir.join("kafka-password");
    std::fs::write(&path, support::env("CRBRIDGE_KAFKA_SASL_PASSWORD") + "\n").unwrap();
    path
}

/// A `kafka` sink section for the SASL_SSL listener: `tls` and `sasl` as given.
fn secure_sink(name: &str, topic: &str, tls: &str, sasl: &str, extra: &str) -> String {
    format!(
        "  {name}:\n    type: kafka\n    brokers: {}\n    topic: \"{topic}\"\n    tls: {tls}\n    sasl: {sasl}\n{extra}",
        support::env("CRBRIDGE_KAFKA_SASL_SSL_BROKERS"),
    )
}

/// The `tls` section of the local CA and client certificate.
fn good_tls() -> String {
    format!(
        "{{caFile: {}, certFile: {}, keyFile: {}}}",
        support::env("CRBRIDGE_TLS_CA"),
        support::env("CRBRIDGE_TLS_CLIENT_CERT"),
        support::env("CRBRIDGE_TLS_CLIENT_KEY")
    )
}

fn scram(password: &str) -> String {
    format!(
        "{{mechanism: SCRAM-SHA-512, username: {}, password: \"{password}\"}}",
        support::env("CRBRIDGE_KAFKA_SASL_USERNAME")
    )
}

/// An independent consumer over SASL_SSL with the client certificate.
fn secure_consumer(topic: &str) -> StreamConsumer {
    let c: StreamConsumer = ClientConfig::new()
        .set(
            "bootstrap.servers",
            support::env("CRBRIDGE_KAFKA_SASL_SSL_BROKERS"),
        )
        .set("security.protocol", "SASL_SSL")
        .set("ssl.ca.location", support::env("CRBRIDGE_TLS_CA"))
        .set(
            "ssl.certificate.location",
            support::env("CRBRIDGE_TLS_CLIENT_CERT"),
        )
        .set("ssl.key.location", support::env("CRBRIDGE_TLS_CLIENT_KEY"))
        .set("sasl.mechanism", "SCRAM-SHA-512")
        .set(
            "sasl.username",
            support::env("CRBRIDGE_KAFKA_SASL_USERNAME"),
        )
        .set(
            "sasl.password",
            support::env("CRBRIDGE_KAFKA_SASL_PASSWORD"),
        )
        .set("group.id", support::unique("sec-verify"))
        .set("auto.offset.reset", "earliest")
        .set("topic.metadata.refresh.interval.ms", "500")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    c
}

fn plain_consumer(topic: &str) -> StreamConsumer {
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", support::env("CRBRIDGE_KAFKA_BROKERS"))
        .set("group.id", support::unique("sec-verify"))
        .set("auto.offset.reset", "earliest")
        .set("topic.metadata.refresh.interval.ms", "500")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    c
}

fn header(m: &rdkafka::message::OwnedMessage, key: &str) -> String {
    m.headers()
        .and_then(|h| h.iter().find(|h| h.key == key).and_then(|h| h.value))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

/// Runs `crbridge <args>`, killing it after `limit`: (exit success, stdout, stderr).
fn run_cli_within(args: &[&str], limit: Duration) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_crbridge"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("running crbridge");
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if std::time::Instant::now() >= deadline {
            child.kill().ok();
            child.wait().ok();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = std::fs::read_to_string(out).unwrap_or_default();
    let err = std::fs::read_to_string(err).unwrap_or_default();
    assert!(
        status.is_some(),
        "crbridge {args:?} did not finish within {limit:?}\nstdout:\n{out}\nstderr:\n{err}"
    );
    (status.unwrap().success(), out, err)
}

#[tokio::test]
async fn sasl_ssl_scram_with_client_certificate_publishes_and_reads_back() {
    let f = fixture().await;
    let topic = support::unique("crb-sec");
    let pw = password_file(f.dir.path());
    let sinks = secure_sink(
        "kafka",
        &topic,
        &good_tls(),
        &scram(&format!("file:{}", pw.display())),
        "",
    );
    let mut bridge = Bridge::new(
        f.dir.path(),
        &support::config_with_sinks(f.dir.path(), &f.crd, &f.ns, &["kafka"], &sinks, ""),
    );
    bridge.start();
    bridge.wait_logged("sink connected", WAIT).await;
    support::create_widget(&f.api, &f.crd, "a", json!({"size": 1})).await;

    let consumer = secure_consumer(&topic);
    let m = support::kafka_recv(&consumer, WAIT)
        .await
        .expect("the event, read back over SASL_SSL");
    assert_eq!(header(&m, "ce_subject"), format!("{}/a", f.ns));
    assert!(header(&m, "ce_type").ends_with(".created"), "{m:?}");

    // `crbridge tail` reaches the same listener with the sink's own tls and sasl keys.
    let cfg = bridge.config.to_str().unwrap().to_owned();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        run_cli_within(
            &[
                "tail",
                "-c",
                &cfg,
                "--sink",
                "kafka",
                "--from-start",
                "--count",
                "1",
                "--output",
                "json",
            ],
            WAIT,
        )
    })
    .await
    .unwrap();
    assert!(ok, "tail failed:\n{out}\n{err}");
    let line: serde_json::Value = serde_json::from_str(out.lines().next().unwrap_or("")).unwrap();
    assert_eq!(line["subject"], format!("{}/a", f.ns), "{out}");
    assert_eq!(bridge.stop().await.code(), Some(0));
}

/// A config whose only sink is `sink_yaml` (the watch need not exist: only the sink line
/// of `check` is looked at).
fn check_config(dir: &Path, sink_yaml: &str) -> PathBuf {
    let path = dir.join("check.yaml");
    std::fs::write(
        &path,
        format!(
            "cluster: test\nkubeconfig: {}\nstate:\n  path: {}\nwatches:\n  - name: widgets\n    group: crbridge.test\n    version: v1\n    kind: Widget\n    sinks: [kafka]\nsinks:\n{sink_yaml}",
            support::env("KUBECONFIG"),
            dir.join("state").display()
        ),
    )
    .unwrap();
    path
}

/// `crbridge check`'s line for sink `kafka`.
async fn check_sink_line(dir: &Path, sink_yaml: &str) -> String {
    let path = check_config(dir, sink_yaml);
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        run_cli_within(&["check", "-c", path.to_str().unwrap()], WAIT)
    })
    .await
    .unwrap();
    assert!(!ok, "check passed a broken sink:\n{out}\n{err}");
    let line = out
        .lines()
        .find(|l| l.contains("sink kafka"))
        .unwrap_or_else(|| panic!("no line for sink kafka:\n{out}\n{err}"))
        .to_owned();
    eprintln!("{line}");
    line
}

#[tokio::test]
async fn a_ca_that_did_not_sign_the_broker_fails_check_with_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let ca = support::tls::foreign_ca(dir.path()).ca;
    let tls = format!(
        "{{caFile: {}, certFile: {}, keyFile: {}}}",
        ca.display(),
        support::env("CRBRIDGE_TLS_CLIENT_CERT"),
        support::env("CRBRIDGE_TLS_CLIENT_KEY")
    );
    let line = check_sink_line(
        dir.path(),
        &secure_sink(
            "kafka",
            "t",
            &tls,
            &scram(&support::env("CRBRIDGE_KAFKA_SASL_PASSWORD")),
            "",
        ),
    )
    .await;
    assert!(line.starts_with("FAIL sink kafka: connect: "), "{line}");
    assert!(line.contains("certificate verify failed"), "{line}");
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_fails_check_with_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let support::tls::ForeignCa { cert, key, .. } = support::tls::foreign_ca(dir.path());
    let tls = format!(
        "{{caFile: {}, certFile: {}, keyFile: {}}}",
        support::env("CRBRIDGE_TLS_CA"),
        cert.display(),
        key.display()
    );
    let line = check_sink_line(
        dir.path(),
        &secure_sink(
            "kafka",
            "t",
            &tls,
            &scram(&support::env("CRBRIDGE_KAFKA_SASL_PASSWORD")),
            "",
        ),
    )
    .await;
    assert!(line.starts_with("FAIL sink kafka: connect: "), "{line}");
    assert!(
        line.contains("SSL") || line.contains("certificate"),
        "no TLS cause in: {line}"
    );
}

#[tokio::test]
async fn a_wrong_password_fails_check_and_run_logs_it_and_retries() {
    let f = fixture().await;
    let wrong = "not-the-password-3141";
    let sinks = secure_sink(
        "kafka",
        &support::unique("crb-sec-pw"),
        &good_tls(),
        &scram(wrong),
        "",
    );
    let line = check_sink_line(f.dir.path(), &sinks).await;
    assert!(line.starts_with("FAIL sink kafka: connect: "), "{line}");
    assert!(line.contains("Authentication failed"), "{line}");
    assert!(!line.contains(wrong), "{line}");

    let mut bridge = Bridge::new(
        f.dir.path(),
        &support::config_with_sinks(f.dir.path(), &f.crd, &f.ns, &["kafka"], &sinks, ""),
    );
    bridge.start();
    bridge.wait_logged("connecting sink failed", WAIT).await;
    // It keeps trying: a second attempt fails the same way.
    let failures = support::eventually("a second connect attempt", WAIT, || async {
        let l = bridge.logged("connecting sink failed");
        (l.len() >= 2).then_some(l)
    })
    .await;
    for l in &failures {
        let error = l["error"].as_str().unwrap_or_default().to_owned();
        assert!(error.contains("Authentication failed"), "{l}");
    }
    assert!(bridge.is_running());
    assert!(!bridge.raw_log().contains(wrong));
    bridge.stop().await;
}

#[tokio::test]
async fn a_plaintext_client_on_the_tls_port_fails_check_with_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let sink = format!(
        "  kafka:\n    type: kafka\n    brokers: {}\n    topic: t\n    options: {{security.protocol: PLAINTEXT}}\n",
        support::env("CRBRIDGE_KAFKA_SASL_SSL_BROKERS")
    );
    let line = check_sink_line(dir.path(), &sink).await;
    assert!(line.starts_with("FAIL sink kafka: connect: "), "{line}");
    assert!(line.contains("in state APIVERSION_QUERY"), "{line}");
    assert!(line.contains("is this a TLS listener?"), "{line}");
}

#[tokio::test]
async fn every_compression_codec_publishes() {
    let f = fixture().await;
    let codecs = ["gzip", "snappy", "lz4", "zstd"];
    let mut sinks = String::new();
    let mut topics = Vec::new();
    for codec in codecs {
        let topic = support::unique(&format!("crb-{codec}"));
        sinks.push_str(&format!(
            "  {codec}:\n    type: kafka\n    brokers: {}\n    topic: \"{topic}\"\n    options: {{compression.type: {codec}}}\n",
            support::env("CRBRIDGE_KAFKA_BROKERS")
        ));
        topics.push(topic);
    }
    let mut bridge = Bridge::new(
        f.dir.path(),
        &support::config_with_sinks(f.dir.path(), &f.crd, &f.ns, &codecs, &sinks, ""),
    );
    bridge.start();
    support::create_widget(&f.api, &f.crd, "a", json!({"size": 1})).await;
    for (codec, topic) in codecs.iter().zip(&topics) {
        let consumer = plain_consumer(topic);
        let m = support::kafka_recv(&consumer, WAIT)
            .await
            .unwrap_or_else(|| {
                panic!(
                    "nothing published with compression.type {codec}; log:\n{}",
                    bridge.raw_log()
                )
            });
        assert_eq!(header(&m, "ce_subject"), format!("{}/a", f.ns), "{codec}");
    }
    assert_eq!(bridge.stop().await.code(), Some(0));
}

#[tokio::test]
async fn a_trace_level_run_never_logs_the_password() {
    let f = fixture().await;
    let password = support::env("CRBRIDGE_KAFKA_SASL_PASSWORD");
    let topic = support::unique("crb-sec-trace");
    // The password as a literal in the file (the worst case for Debug output), and
    // librdkafka's own debug output on for every context, its configuration dump included.
    let sinks = secure_sink(
        "kafka",
        &topic,
        &good_tls(),
        &scram(&password),
        "    options: {debug: all}\n",
    );
    let mut bridge = Bridge::new(
        f.dir.path(),
        &support::config_with_sinks(f.dir.path(), &f.crd, &f.ns, &["kafka"], &sinks, ""),
    );
    bridge.env("CRBRIDGE_LOG", "trace");
    bridge.start();
    bridge.wait_logged("sink connected", WAIT).await;
    support::create_widget(&f.api, &f.crd, "a", json!({"size": 1})).await;
    let consumer = secure_consumer(&topic);
    support::kafka_recv(&consumer, WAIT)
        .await
        .expect("the event published under TRACE");
    bridge.stop().await;

    let log = bridge.raw_log() + &bridge.stdout();
    // Teeth: librdkafka's debug lines, its SASL exchange and its configuration, are there.
    let librdkafka = bridge
        .logs()
        .into_iter()
        .filter(|l| l["target"] == "librdkafka")
        .count();
    assert!(librdkafka > 10, "librdkafka's debug lines are missing");
    assert!(log.contains("SCRAM"), "no SASL exchange in the TRACE log");
    assert!(
        log.contains("sasl.password"),
        "no configuration dump in the log"
    );
    assert!(!log.contains(&password), "the password is in the TRACE log");
}

#[tokio::test]
async fn conflicting_or_incomplete_security_keys_are_config_errors_with_key_paths() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "    tls: {caFile: /ca.crt}\n    options: {ssl.ca.location: /other.crt}\n",
            "sinks.kafka.options.ssl.ca.location: conflicts with sinks.kafka.tls.caFile",
        ),
        (
            "    sasl: {mechanism: PLAIN, username: u, password: p}\n    options: {security.protocol: SASL_SSL}\n",
            "sinks.kafka.options.security.protocol: conflicts with sinks.kafka.sasl",
        ),
        (
            "    tls: {certFile: /tls.crt}\n",
            "sinks.kafka.tls.keyFile: missing",
        ),
        (
            "    sasl: {mechanism: SCRAM-SHA-512, username: u}\n",
            "sinks.kafka.sasl.password: missing",
        ),
    ];
    for (keys, expected) in cases {
        let path = check_config(
            dir.path(),
            &format!("  kafka:\n    type: kafka\n    brokers: h:9093\n    topic: t\n{keys}"),
        );
        let (ok, out, err) = run_cli_within(&["check", "-c", path.to_str().unwrap()], WAIT);
        assert!(!ok, "{keys} accepted");
        assert!(
            out.contains(expected),
            "{keys}: expected {expected:?} in:\n{out}{err}"
        );
        assert!(out.contains("check.yaml"), "file not named:\n{out}");
    }
}
