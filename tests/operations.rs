//! Running it: /metrics, /healthz, /readyz on the configured address, and a graceful stop
//! after which a restart re-sends nothing.

mod support;

use std::time::Duration;

use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};
use kube::Api;
use serde_json::json;
use support::bridge::Bridge;
use support::nats::Reader;

const WAIT: Duration = Duration::from_secs(30);

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

#[tokio::test]
async fn metrics_health_and_a_graceful_restart_that_resends_nothing() {
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, "ops").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &crd.resource);
    let dir = tempfile::tempdir().unwrap();
    let stream = support::unique("OPS").to_uppercase().replace('-', "_");
    let mut bridge = Bridge::new(
        dir.path(),
        &support::nats_config(dir.path(), &crd, &ns, &stream),
    );
    bridge.start();
    let base = bridge.http_base().await;
    support::eventually("/readyz to answer 200", WAIT, || {
        let base = base.clone();
        async move { (support::http_get(&format!("{base}/readyz")).0 == 200).then_some(()) }
    })
    .await;
    assert_eq!(
        support::http_get(&format!("{base}/healthz")),
        (200, "ok\n".into())
    );

    let mut reader = Reader::open(&stream).await;
    support::create_widget(&api, &crd, "secret-name", json!({"size": 1})).await;
    support::patch_widget(&api, "secret-name", json!({"size": 2})).await;
    api.patch_status(
        "secret-name",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"x": 1}})),
    )
    .await
    .unwrap();
    api.delete("secret-name", &DeleteParams::default())
        .await
        .unwrap();
    reader.take(3, WAIT).await;

    let text = support::eventually("published count in /metrics", WAIT, || {
        let base = base.clone();
        async move {
            let (code, text) = support::http_get(&format!("{base}/metrics"));
            (code == 200 && text.contains("crbridge_events_published_total{sink=\"nats\"} 3"))
                .then_some(text)
        }
    })
    .await;
    assert_eq!(
        metric(
            &text,
            "crbridge_events_total{cluster=\"test\",watch=\"widgets\",type=\"created\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "crbridge_events_total{cluster=\"test\",watch=\"widgets\",type=\"updated\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "crbridge_events_total{cluster=\"test\",watch=\"widgets\",type=\"deleted\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "crbridge_events_suppressed_total{cluster=\"test\",watch=\"widgets\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "crbridge_publish_latency_seconds_count{sink=\"nats\"}"
        ),
        3.0
    );
    assert_eq!(
        metric(
            &text,
            "crbridge_relists_total{cluster=\"test\",watch=\"widgets\"}"
        ),
        1.0
    );
    assert!(
        !text.contains("secret-name"),
        "object names must never be labels"
    );

    // Graceful stop, then a restart: nothing is sent again.
    assert_eq!(bridge.stop().await.code(), Some(0));
    bridge.start();
    bridge
        .wait_logged("watch resumed from checkpoint", WAIT)
        .await;
    bridge.wait_logged("sink connected", WAIT).await;
    reader.expect_none(Duration::from_secs(3)).await;
    bridge.stop().await;
}

#[tokio::test]
async fn readyz_names_an_unhealthy_sink() {
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, "ops-unready").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = support::nats_config(dir.path(), &crd, &ns, "UNREACHABLE")
        .replace(&support::env("CRBRIDGE_NATS_URL"), "nats://127.0.0.1:1");
    let mut bridge = Bridge::new(dir.path(), &cfg);
    bridge.start();
    let base = bridge.http_base().await;
    bridge.wait_logged("connecting sink failed", WAIT).await;
    let (code, body) = support::http_get(&format!("{base}/readyz"));
    assert_eq!(code, 503);
    assert!(body.contains("sink nats unhealthy"), "{body}");
    // Alive all the same: a broker outage is not a reason to restart crbridge.
    assert_eq!(support::http_get(&format!("{base}/healthz")).0, 200);
    bridge.stop().await;
}

#[tokio::test]
async fn secrets_come_from_the_environment_and_are_never_logged() {
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, "secrets").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &crd.resource);
    let dir = tempfile::tempdir().unwrap();
    let stream = support::unique("SECRET").to_uppercase().replace('-', "_");
    let nats = support::env("CRBRIDGE_NATS_URL");
    let with_creds = nats.replace("nats://", "nats://crbuser:NatsSecret4711@");
    let amqp_bad = support::env("CRBRIDGE_AMQP_URL").replace("guest:guest", "guest:AmqpSecret0815");
    let sinks = format!(
        "  nats:\n    type: nats\n    url: env:CRB_NATS_URL\n    stream: {stream}\n    subject: \"{stream}.{{name}}\"\n  rabbit:\n    type: amqp\n    url: env:CRB_AMQP_URL\n    exchange: x\n    routingKey: \"{{name}}\"\n"
    );
    let mut bridge = Bridge::new(
        dir.path(),
        &support::config_with_sinks(dir.path(), &crd, &ns, &["nats", "rabbit"], &sinks, ""),
    );
    bridge.env("CRB_NATS_URL", &with_creds);
    bridge.env("CRB_AMQP_URL", &amqp_bad);
    bridge.env("CRBRIDGE_LOG", "trace");
    bridge.start();
    let mut reader = Reader::open(&stream).await;
    support::create_widget(&api, &crd, "a", json!({"size": 1})).await;
    reader.take(1, WAIT).await;
    // The wrong AMQP password fails to connect: the error is logged, the password is not.
    let failed = bridge.wait_logged("connecting sink failed", WAIT).await;
    assert!(
        failed["error"].as_str().unwrap().contains("***@"),
        "{failed}"
    );
    bridge.stop().await;
    let everything = bridge.raw_log() + &bridge.stdout();
    assert!(everything.len() > 1000, "trace logging produced output");
    for secret in ["NatsSecret4711", "AmqpSecret0815"] {
        if let Some(i) = everything.find(secret) {
            panic!(
                "{secret} leaked: {}",
                &everything[i.saturating_sub(300)..(i + 50).min(everything.len())]
            );
        }
    }
}

#[test]
fn rbac_command_prints_least_privilege_for_the_configured_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(
        &cfg,
        format!(
            "cluster: t\nkubeconfig: {}\nstate: {{path: {}}}\nleaderElection: {{enabled: true, namespace: ops, leaseName: l}}\nwatches:\n  - group: \"\"\n    version: v1\n    kind: ConfigMap\n    namespaces: [team-a]\nsinks:\n  out: {{type: stdout}}\n",
            support::env("KUBECONFIG"),
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let (status, out, err) = support::bridge::run_cli(&["rbac", "-c", cfg.to_str().unwrap()]);
    assert!(status.success(), "{err}");
    let docs: Vec<serde_json::Value> = out
        .split("\n---\n")
        .filter_map(|d| serde_saphyr::from_str(d).ok())
        .filter(|v: &serde_json::Value| v.is_object())
        .collect();
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert!(
        !kinds.contains(&"ClusterRole"),
        "namespaced watch needs no ClusterRole: {kinds:?}"
    );
    let role = docs
        .iter()
        .find(|d| d["kind"] == "Role" && d["metadata"]["namespace"] == "team-a")
        .expect("a Role in team-a");
    assert_eq!(role["rules"][0]["resources"], json!(["configmaps"]));
    assert_eq!(role["rules"][0]["verbs"], json!(["get", "list", "watch"]));
    assert!(docs.iter().any(|d| d["kind"] == "Role"
        && d["metadata"]["namespace"] == "ops"
        && d["rules"].to_string().contains("leases")));
}

#[test]
fn completions_for_each_shell_name_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let (status, out, err) = support::bridge::run_cli(&["completions", shell]);
        assert!(status.success(), "{shell}: {err}");
        for sub in [
            "run",
            "check",
            "status",
            "replay",
            "deadletters",
            "completions",
        ] {
            assert!(out.contains(sub), "{shell}: {sub} missing from\n{out}");
        }
        // The subcommands' own flags complete too.
        assert!(
            out.contains("from-seq"),
            "{shell}: replay's --from-seq missing"
        );
    }
    let (_, script, _) = support::bridge::run_cli(&["completions", "bash"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crbridge.bash");
    std::fs::write(&path, script).unwrap();
    let syntax = std::process::Command::new("bash")
        .arg("-n")
        .arg(&path)
        .output()
        .expect("running bash -n");
    assert!(
        syntax.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    let (status, _, err) = support::bridge::run_cli(&["completions", "tcsh"]);
    assert!(!status.success(), "an unknown shell is refused");
    assert!(err.contains("bash, zsh, fish"), "{err}");
}

#[tokio::test]
async fn the_admin_api_is_on_its_own_listener_behind_a_token() {
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, "admin").await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = support::config_with_sinks(
        dir.path(),
        &crd,
        &ns,
        &["out"],
        "  out: {type: stdout}\n",
        "",
    );
    let mut bridge = Bridge::new(dir.path(), &yaml);
    bridge.start();
    let base = bridge.http_base().await;
    let line = bridge.wait_logged("admin listening", WAIT).await;
    let admin = format!("http://{}", line["addr"].as_str().unwrap());
    let state = Bridge::state_path(dir.path());

    // The metrics listener serves nothing that changes state.
    assert_eq!(support::http_get(&format!("{base}/admin/status")).0, 404);
    // The admin listener asks for the token the instance generated, readable by its owner only.
    let token = support::admin_token(&state);
    let mode = std::fs::metadata(state.join("admin.token"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    assert_eq!(support::http_get(&format!("{admin}/admin/status")).0, 401);
    assert_eq!(
        support::http_get_authorized(&format!("{admin}/admin/status"), "not-the-token").0,
        401
    );
    let (code, body) = support::http_get_authorized(&format!("{admin}/admin/status"), &token);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"running\":true"), "{body}");
    bridge.stop().await;
}

#[tokio::test]
async fn in_cluster_variables_without_a_service_account_fall_back_to_kubeconfig() {
    // Pods carry KUBERNETES_SERVICE_HOST/PORT; without the service account files (not a
    // pod) the next source, KUBECONFIG, is used.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(
        &cfg,
        format!(
            "cluster: t\nstate: {{path: {}}}\nwatches:\n  - {{group: \"\", version: v1, kind: ConfigMap}}\nsinks:\n  out: {{type: stdout}}\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crbridge"))
        .args(["check", "-c", cfg.to_str().unwrap()])
        .env("KUBECONFIG", support::env("KUBECONFIG"))
        .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        .env("KUBERNETES_SERVICE_PORT", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ok   cluster: Kubernetes"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
