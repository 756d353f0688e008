//! `crbridge asyncapi` against the real API server: the document for a config with a
//! Kafka, a NATS and an AMQP sink (binary and structured modes) parses with the official
//! AsyncAPI parser (`@asyncapi/parser`, pinned in tests/asyncapi/package.json) without a
//! single error or warning.

mod support;

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;
use support::bridge::run_cli;

/// The parser's directory, installed once per test process by tests/asyncapi/install.
fn parser_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/asyncapi/install");
        let out = std::process::Command::new(script)
            .output()
            .expect("running tests/asyncapi/install (needs node and npm)");
        assert!(
            out.status.success(),
            "installing @asyncapi/parser failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

#[tokio::test]
async fn the_document_parses_with_the_official_parser_without_diagnostics() {
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let dir = tempfile::tempdir().unwrap();
    let sinks = format!(
        "  kafka:\n    type: kafka\n    brokers: {}\n    topic: \"crbridge.{{group}}.{{plural}}\"\n    tombstones: true\n  \
         nats:\n    type: nats\n    url: {}\n    stream: CRB\n    subject: \"crbridge.{{cluster}}.{{group}}.{{kind}}.{{namespace}}.{{name}}\"\n    mode: structured\n  \
         rabbit:\n    type: amqp\n    url: \"env:CRB_TEST_AMQP_URL\"\n    exchange: crbridge\n    routingKey: \"{{group}}.{{kind}}.{{namespace}}.{{type}}\"\n",
        support::env("CRBRIDGE_KAFKA_BROKERS"),
        support::env("CRBRIDGE_NATS_URL"),
    );
    let cfg = support::config_with_sinks(
        dir.path(),
        &crd,
        "default",
        &["kafka", "nats", "rabbit"],
        &sinks,
        "",
    );
    let cfg_path = dir.path().join("crbridge.yaml");
    std::fs::write(&cfg_path, &cfg).unwrap();
    let (status, out, stderr) = run_cli(&["asyncapi", "-c", cfg_path.to_str().unwrap()]);
    assert!(status.success(), "crbridge asyncapi failed: {stderr}");
    let doc: Value = serde_json::from_str(&out).expect("the document is JSON");
    assert_eq!(doc["asyncapi"], "3.0.0");
    let channels = doc["channels"].as_object().unwrap();
    assert_eq!(channels.len(), 3, "{channels:?}");
    let rabbit = &channels["widgets__rabbit"];
    assert_eq!(
        rabbit["address"],
        format!(
            "{}.Widget.{{namespace}}.{{type}}",
            crd.group.replace('.', "%2E")
        )
    );
    assert_eq!(rabbit["bindings"]["amqp"]["exchange"]["name"], "crbridge");
    assert!(rabbit["messages"]["event"]["headers"]["properties"]
        .get("cloudEvents:dataschema")
        .is_some());
    assert_eq!(
        channels["widgets__nats"]["messages"]["event"]["contentType"],
        "application/cloudevents+json"
    );
    assert_eq!(
        channels["widgets__kafka"]["address"],
        format!("crbridge.{}.widgets", crd.group)
    );

    let file = dir.path().join("asyncapi.json");
    std::fs::write(&file, &out).unwrap();
    let parsed = std::process::Command::new("node")
        .arg(parser_dir().join("validate.mjs"))
        .arg(&file)
        .current_dir(parser_dir())
        .output()
        .expect("running node");
    assert!(
        parsed.status.success(),
        "the AsyncAPI parser reported errors or warnings:\n{}{}",
        String::from_utf8_lossy(&parsed.stdout),
        String::from_utf8_lossy(&parsed.stderr)
    );
}
