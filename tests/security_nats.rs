//! The NATS sink against the real TLS server of `deploy/local`: TLS with a client
//! certificate and an nkey user. crbridge publishes over it and `crbridge tail` reads back
//! over it; each way of getting TLS or authentication wrong is reported by `crbridge check`
//! with the sink's name and the cause, and logged (and retried) by `crbridge run`; a TRACE
//! log never holds the seed.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use kube::api::DynamicObject;
use kube::Api;
use serde_json::json;
use support::bridge::{run_cli, Bridge};

const WAIT: Duration = Duration::from_secs(30);

/// A user nkey seed the server does not know (the example seed of the async-nats docs).
const OTHER_SEED: &str = "SUANQDPB2RUOE4ETUA26CNX7FUKE5ZZKFCQIIW63OX225F2CO7UEXTM7ZY";

/// The files of the local TLS setup.
struct Tls {
    url: String,
    ca: String,
    cert: String,
    key: String,
    seed_file: String,
}

impl Tls {
    fn local() -> Tls {
        Tls {
            url: support::env("CRBRIDGE_NATS_TLS_URL"),
            ca: support::env("CRBRIDGE_TLS_CA"),
            cert: support::env("CRBRIDGE_TLS_CLIENT_CERT"),
            key: support::env("CRBRIDGE_TLS_CLIENT_KEY"),
            seed_file: support::env("CRBRIDGE_NATS_NKEY_SEED_FILE"),
        }
    }

    fn seed(&self) -> String {
        std::fs::read_to_string(&self.seed_file)
            .expect("reading the nkey seed")
            .trim()
            .to_string()
    }

    /// `tls:` with the local CA and client certificate.
    fn tls_yaml(&self) -> String {
        tls_yaml(&self.ca, Some((&self.cert, &self.key)))
    }
}

fn tls_yaml(ca: &str, identity: Option<(&str, &str)>) -> String {
    match identity {
        Some((cert, key)) => {
            format!("    tls: {{ caFile: {ca}, certFile: {cert}, keyFile: {key} }}\n")
        }
        None => format!("    tls: {{ caFile: {ca} }}\n"),
    }
}

fn nkey_yaml(seed_file: &str) -> String {
    format!("    auth: {{ nkeySeedFile: {seed_file} }}\n")
}

/// A NATS sink `name` on its own stream, with `extra` (tls/auth lines) appended.
fn sink_yaml(name: &str, url: &str, extra: &str) -> String {
    let stream = support::unique("SEC").to_uppercase().replace('-', "_");
    format!(
        "  {name}:\n    type: nats\n    url: {url}\n    stream: {stream}\n    subject: \"{stream}.{{kind}}.{{namespace}}.{{name}}\"\n{extra}"
    )
}

/// Runs `crbridge tail` until it printed `count` events (JSON lines), or panics after `limit`.
async fn tail(config: &Path, sink: &str, count: usize, limit: Duration) -> String {
    let child = Command::new(env!("CARGO_BIN_EXE_crbridge"))
        .args(["tail", "--from-start", "-o", "json", "--count"])
        .arg(count.to_string())
        .args(["--sink", sink, "-c"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning crbridge tail");
    let pid = child.id().to_string();
    let waited = tokio::task::spawn_blocking(move || child.wait_with_output());
    match tokio::time::timeout(limit, waited).await {
        Ok(out) => {
            let out = out.unwrap().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "crbridge tail failed ({}): {stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            stdout
        }
        Err(_) => {
            Command::new("kill").args(["-KILL", &pid]).status().ok();
            panic!("crbridge tail printed fewer than {count} events within {limit:?}");
        }
    }
}

async fn widgets(prefix: &str) -> (support::TestCrd, String, Api<DynamicObject>) {
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, prefix).await;
    let api = Api::namespaced_with(client, &ns, &crd.resource);
    (crd, ns, api)
}

#[tokio::test]
async fn publishes_over_tls_with_an_nkey_tail_reads_back_and_trace_logs_hold_no_seed() {
    let tls = Tls::local();
    let (crd, ns, api) = widgets("secnats").await;
    let dir = tempfile::tempdir().unwrap();
    let sinks = sink_yaml(
        "secure",
        &tls.url,
        &format!("{}{}", tls.tls_yaml(), nkey_yaml(&tls.seed_file)),
    );
    let cfg = support::config_with_sinks(dir.path(), &crd, &ns, &["secure"], &sinks, "");
    let mut bridge = Bridge::new(dir.path(), &cfg);
    bridge.env("CRBRIDGE_LOG", "trace");
    bridge.start();
    bridge.wait_logged("sink connected", WAIT).await;

    support::create_widget(&api, &crd, "tls-widget", json!({"size": 1})).await;
    let out = tail(&bridge.config, "secure", 1, WAIT).await;
    let event: serde_json::Value = serde_json::from_str(out.lines().next().unwrap_or(""))
        .unwrap_or_else(|e| panic!("tail printed no JSON event ({e}): {out}"));
    assert!(
        event["subject"]
            .as_str()
            .is_some_and(|s| s.ends_with("tls-widget")),
        "{event}"
    );
    assert!(
        event["type"].as_str().unwrap_or("").ends_with("created"),
        "{event}"
    );

    bridge.stop().await;
    let log = bridge.raw_log();
    assert!(
        log.contains(r#""level":"TRACE""#) && log.contains("async_nats"),
        "the run did not log the NATS client at TRACE level"
    );
    assert!(
        !log.contains(&tls.seed()),
        "the nkey seed appears in the TRACE log"
    );
}

#[tokio::test]
async fn check_names_the_sink_and_the_cause_of_each_tls_and_auth_failure() {
    let tls = Tls::local();
    let (crd, ns, _api) = widgets("secnats-check").await;
    let dir = tempfile::tempdir().unwrap();
    let support::tls::ForeignCa {
        ca: other_ca,
        cert: other_cert,
        key: other_key,
    } = support::tls::foreign_ca(dir.path());
    let (other_ca, other_cert, other_key) = (
        other_ca.display().to_string(),
        other_cert.display().to_string(),
        other_key.display().to_string(),
    );
    let other_seed = dir.path().join("other.nk");
    std::fs::write(&other_seed, format!("{OTHER_SEED}\n")).unwrap();
    let not_a_seed = dir.path().join("not-a-seed.nk");
    std::fs::write(&not_a_seed, "this is not a seed\n").unwrap();
    let nkey = nkey_yaml(&tls.seed_file);
    let plaintext_url = tls.url.replacen("tls://", "nats://", 1);
    let identity = Some((tls.cert.as_str(), tls.key.as_str()));
    let cases: Vec<(&str, String, String, &str)> = vec![
        (
            "good",
            tls.url.clone(),
            format!("{}{nkey}", tls.tls_yaml()),
            "",
        ),
        (
            "wrong-ca",
            tls.url.clone(),
            format!("{}{nkey}", tls_yaml(&other_ca, identity)),
            "the server's certificate is not signed by a CA in tls.caFile",
        ),
        (
            "no-client-cert",
            tls.url.clone(),
            format!("{}{nkey}", tls_yaml(&tls.ca, None)),
            "the server requires a client certificate",
        ),
        (
            "foreign-client-cert",
            tls.url.clone(),
            format!(
                "{}{nkey}",
                tls_yaml(&tls.ca, Some((&other_cert, &other_key)))
            ),
            "the server refused the client certificate of tls.certFile",
        ),
        (
            "mismatched-key",
            tls.url.clone(),
            format!("{}{nkey}", tls_yaml(&tls.ca, Some((&tls.cert, &other_key)))),
            "tls.certFile and tls.keyFile are not a certificate and its private key",
        ),
        (
            "wrong-nkey",
            tls.url.clone(),
            format!(
                "{}{}",
                tls.tls_yaml(),
                nkey_yaml(&other_seed.display().to_string())
            ),
            "the server refused the credentials of auth.nkeySeedFile",
        ),
        (
            "invalid-seed",
            tls.url.clone(),
            format!(
                "{}{}",
                tls.tls_yaml(),
                nkey_yaml(&not_a_seed.display().to_string())
            ),
            "auth.nkeySeedFile does not hold a valid nkey seed",
        ),
        (
            "plaintext",
            plaintext_url.clone(),
            nkey.clone(),
            "the server requires TLS but this sink connects in plaintext",
        ),
        (
            "required-on-nats-url",
            plaintext_url,
            format!(
                "    tls: {{ caFile: {}, certFile: {}, keyFile: {}, required: true }}\n{nkey}",
                tls.ca, tls.cert, tls.key
            ),
            "",
        ),
        (
            "required-on-plaintext-server",
            support::env("CRBRIDGE_NATS_URL"),
            "    tls: { required: true }\n".into(),
            "the server did not answer in TLS",
        ),
    ];
    let sinks: String = cases
        .iter()
        .map(|(name, url, extra, _)| sink_yaml(name, url, extra))
        .collect();
    let names: Vec<&str> = cases.iter().map(|c| c.0).collect();
    let cfg = support::config_with_sinks(dir.path(), &crd, &ns, &names, &sinks, "");
    let path = dir.path().join("crbridge.yaml");
    std::fs::write(&path, cfg).unwrap();

    let (status, stdout, stderr) = run_cli(&["check", "-c", path.to_str().unwrap()]);
    assert!(!status.success(), "check passed: {stdout}{stderr}");
    for (name, _, _, cause) in &cases {
        let item = format!("sink {name}: ");
        let line = stdout
            .lines()
            .find(|l| l[4..].trim_start().starts_with(&item))
            .unwrap_or_else(|| panic!("no line for sink {name}:\n{stdout}"));
        if cause.is_empty() {
            assert!(line.starts_with("ok "), "{line}");
        } else {
            assert!(line.starts_with("FAIL "), "{line}");
            assert!(line.contains(cause), "expected {cause:?} in:\n{line}");
        }
    }
    assert!(!stdout.contains(&tls.seed()) && !stderr.contains(&tls.seed()));
    assert!(!stdout.contains(OTHER_SEED) && !stderr.contains(OTHER_SEED));
}

#[tokio::test]
async fn run_logs_the_cause_with_the_sink_name_and_retries() {
    let tls = Tls::local();
    let (crd, ns, _api) = widgets("secnats-run").await;
    let dir = tempfile::tempdir().unwrap();
    let other_ca = support::tls::foreign_ca(dir.path()).ca;
    let sinks = sink_yaml(
        "untrusted",
        &tls.url,
        &format!(
            "{}{}",
            tls_yaml(&other_ca.display().to_string(), Some((&tls.cert, &tls.key))),
            nkey_yaml(&tls.seed_file)
        ),
    );
    let cfg = support::config_with_sinks(dir.path(), &crd, &ns, &["untrusted"], &sinks, "");
    let mut bridge = Bridge::new(dir.path(), &cfg);
    bridge.start();
    let failures = support::eventually("two failed connects logged", WAIT, || {
        let logged = bridge.logged("connecting sink failed");
        async move { (logged.len() >= 2).then_some(logged) }
    })
    .await;
    for line in &failures {
        assert_eq!(line["sink"], "untrusted", "{line}");
        let error = line["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("the server's certificate is not signed by a CA in tls.caFile"),
            "{line}"
        );
    }
    bridge.stop().await;
}
