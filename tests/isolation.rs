//! One bad watched kind does not take crbridge down (issue 15): a kind that does not exist
//! yet, is deleted while watched, or is forbidden is reported by name in `/readyz`, the log
//! and `crbridge_watch_up`, while the other watch keeps publishing; a kind that becomes
//! available is picked up without a restart. Real kube-apiserver, real NATS, the binary.

mod support;

use std::time::Duration;

use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, DynamicObject, PostParams};
use kube::{Api, Client};
use serde_json::json;
use support::bridge::Bridge;
use support::nats::{Reader, Received};

const WAIT: Duration = Duration::from_secs(30);
/// An unavailable kind is resolved again with backoff from 5 s (jittered, doubling): a kind
/// that appears a few seconds after the start is found within about 40 s.
const RESOLVE_WAIT: Duration = Duration::from_secs(90);

/// A second watch entry, `name`, on `kind` in `group` in `ns`, publishing to `nats`.
fn with_second_watch(cfg: &str, name: &str, group: &str, kind: &str, ns: &str) -> String {
    let entry = format!(
        "  - name: {name}\n    group: {group}\n    version: v1\n    kind: {kind}\n    namespaces: [{ns}]\n    sinks: [nats]\nsinks:\n"
    );
    assert!(cfg.contains("\nsinks:\n"), "{cfg}");
    cfg.replacen("\nsinks:\n", &format!("\n{entry}"), 1)
}

fn metric(base: &str, series: &str) -> Option<f64> {
    let (_, text) = support::http_get(&format!("{base}/metrics"));
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
}

/// Reads events until one for object `name` of change `change` arrives.
async fn until(reader: &mut Reader, name: &str, change: &str, limit: Duration) -> Received {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(
            !left.is_zero(),
            "no {change} event for {name} within {limit:?}"
        );
        let e = reader.take(1, left).await.remove(0);
        if e.change() == change && e.attr("subject").ends_with(&format!("/{name}")) {
            return e;
        }
    }
}

async fn create(client: &Client, crd: &support::TestCrd, ns: &str, name: &str) {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &crd.resource);
    support::create_widget(&api, crd, name, json!({"size": 1})).await;
}

fn unique_group(prefix: &str) -> String {
    format!("{}.crbridge.test", support::unique(prefix))
}

#[tokio::test]
async fn a_kind_missing_at_start_is_reported_and_picked_up_once_installed() {
    let client = support::kube_client().await;
    let widgets = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, "iso-missing").await;
    let stream = support::unique("ISO").to_uppercase().replace('-', "_");
    let dir = tempfile::tempdir().unwrap();
    let group = unique_group("late");
    let cfg = support::nats_config(dir.path(), &widgets, &ns, &stream);
    let cfg = with_second_watch(&cfg, "gadgets", &group, "Gadget", &ns);
    // `crbridge status` finds a running instance by its admin port.
    let admin = "admin:\n  listen: 127.0.0.1:0";
    assert!(cfg.contains(admin), "{cfg}");
    let cfg = cfg.replacen(
        admin,
        &format!("admin:\n  listen: 127.0.0.1:{}", support::free_port()),
        1,
    );
    let mut bridge = Bridge::new(dir.path(), &cfg);
    bridge.start();
    let base = bridge.http_base().await;

    // The good watch runs and publishes.
    let mut reader = Reader::open(&stream).await;
    create(&client, &widgets, &ns, "w1").await;
    until(&mut reader, "w1", "created", WAIT).await;

    // The missing kind is named, the process is alive, the gauge says down.
    let missing = format!("watch gadgets: kind {group}/v1 Gadget is not served (404)");
    support::wait_readyz(&base, 503, &missing, WAIT).await;
    assert_eq!(support::http_get(&format!("{base}/healthz")).0, 200);
    assert_eq!(
        metric(
            &base,
            "crbridge_watch_up{cluster=\"test\",watch=\"gadgets\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &base,
            "crbridge_watch_up{cluster=\"test\",watch=\"widgets\"}"
        ),
        Some(1.0)
    );
    let logged = bridge
        .wait_logged("watch unavailable; other watches go on, retrying", WAIT)
        .await;
    assert_eq!(logged["watch"], "gadgets", "{logged}");
    assert_eq!(logged["reason"], "not_found", "{logged}");
    let config = bridge.config.to_str().unwrap().to_string();
    let (st, out, err) = support::bridge::run_cli(&["status", "-c", &config]);
    assert!(st.success(), "{out}{err}");
    assert!(
        out.contains(&format!(
            "unavailable: {ns}: kind {group}/v1 Gadget is not served (404)"
        )),
        "{out}"
    );

    // Installed after the start: found without a restart.
    let gadgets = support::crd_in(&client, &group, "Gadget").await;
    support::wait_readyz(&base, 200, "ok", RESOLVE_WAIT).await;
    assert_eq!(
        metric(
            &base,
            "crbridge_watch_up{cluster=\"test\",watch=\"gadgets\"}"
        ),
        Some(1.0)
    );
    create(&client, &gadgets, &ns, "g1").await;
    let e = until(&mut reader, "g1", "created", WAIT).await;
    assert!(e.attr("source").contains(&group), "{e:?}");
    bridge.wait_logged("watch available again", WAIT).await;
    // Logged once per reason, not once per retry.
    let warned = bridge
        .logged("watch unavailable; other watches go on, retrying")
        .into_iter()
        .filter(|l| l["watch"] == "gadgets")
        .count();
    assert_eq!(warned, 1, "{}", bridge.raw_log());
    assert!(bridge.is_running());
    assert_eq!(bridge.stop().await.code(), Some(0));
}

#[tokio::test]
async fn a_watched_kind_deleted_while_running_leaves_the_other_watch_publishing() {
    let client = support::kube_client().await;
    let widgets = support::crd(&client, "Widget").await;
    let gadgets = support::crd(&client, "Gadget").await;
    let ns = support::namespace(&client, "iso-deleted").await;
    let stream = support::unique("ISO").to_uppercase().replace('-', "_");
    let dir = tempfile::tempdir().unwrap();
    let cfg = support::nats_config(dir.path(), &widgets, &ns, &stream);
    let cfg = with_second_watch(&cfg, "gadgets", &gadgets.group, "Gadget", &ns);
    let mut bridge = Bridge::new(dir.path(), &cfg);
    bridge.start();
    let base = bridge.http_base().await;
    support::wait_readyz(&base, 200, "ok", WAIT).await;

    let mut reader = Reader::open(&stream).await;
    create(&client, &gadgets, &ns, "g1").await;
    until(&mut reader, "g1", "created", WAIT).await;

    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let name = format!("{}.{}", gadgets.plural, gadgets.group);
    crds.delete(&name, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("deleting CRD {name}: {e}"));

    let gone = format!(
        "watch gadgets: kind {}/v1 Gadget is not served (404)",
        gadgets.group
    );
    support::wait_readyz(&base, 503, &gone, RESOLVE_WAIT).await;
    create(&client, &widgets, &ns, "w-after").await;
    until(&mut reader, "w-after", "created", WAIT).await;
    assert_eq!(support::http_get(&format!("{base}/healthz")).0, 200);
    assert_eq!(
        metric(
            &base,
            "crbridge_watch_up{cluster=\"test\",watch=\"gadgets\"}"
        ),
        Some(0.0)
    );
    assert!(bridge.is_running(), "{}", bridge.raw_log());
    assert_eq!(bridge.stop().await.code(), Some(0));
}

/// A copy of the test kubeconfig that acts as `user` (impersonation: the test identity is
/// system:masters, which may impersonate anyone); its path.
fn kubeconfig_as(dir: &std::path::Path, user: &str) -> std::path::PathBuf {
    let original = std::fs::read_to_string(support::env("KUBECONFIG")).unwrap();
    assert!(original.contains("\n  user:\n"), "{original}");
    let text = original.replacen("\n  user:\n", &format!("\n  user:\n    as: {user}\n"), 1);
    let path = dir.join("kubeconfig-limited");
    std::fs::write(&path, text).unwrap();
    path
}

/// Lets `user` list and watch `plural` in `group` in `ns`.
async fn allow(client: &Client, ns: &str, user: &str, group: &str, plural: &str) {
    let name = support::unique("crbridge-read");
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns},
        "rules": [{"apiGroups": [group], "resources": [plural], "verbs": ["get", "list", "watch"]}]
    }))
    .unwrap();
    Api::<Role>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &role)
        .await
        .expect("creating the role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .expect("creating the role binding");
}

#[tokio::test]
async fn a_forbidden_kind_is_reported_and_picked_up_once_rbac_allows_it() {
    let client = support::kube_client().await;
    let widgets = support::crd(&client, "Widget").await;
    let gadgets = support::crd(&client, "Gadget").await;
    let ns = support::namespace(&client, "iso-forbidden").await;
    let user = support::unique("crbridge-limited");
    allow(&client, &ns, &user, &widgets.group, &widgets.plural).await;
    let stream = support::unique("ISO").to_uppercase().replace('-', "_");
    let dir = tempfile::tempdir().unwrap();
    let cfg = support::nats_config(dir.path(), &widgets, &ns, &stream);
    let cfg = with_second_watch(&cfg, "gadgets", &gadgets.group, "Gadget", &ns);
    let limited = kubeconfig_as(dir.path(), &user);
    let cfg = cfg.replacen(
        &format!("kubeconfig: {}", support::env("KUBECONFIG")),
        &format!("kubeconfig: {}", limited.display()),
        1,
    );
    let mut bridge = Bridge::new(dir.path(), &cfg);
    bridge.start();
    let base = bridge.http_base().await;

    let mut reader = Reader::open(&stream).await;
    create(&client, &widgets, &ns, "w1").await;
    until(&mut reader, "w1", "created", WAIT).await;

    let body = support::wait_readyz(&base, 503, "watch gadgets: forbidden: ", WAIT).await;
    assert!(
        body.contains(&user),
        "the RBAC message names the user: {body}"
    );
    assert_eq!(support::http_get(&format!("{base}/healthz")).0, 200);
    let logged = bridge
        .wait_logged("watch unavailable; other watches go on, retrying", WAIT)
        .await;
    assert_eq!(logged["reason"], "forbidden", "{logged}");

    // Granted while running: picked up without a restart.
    allow(&client, &ns, &user, &gadgets.group, &gadgets.plural).await;
    support::wait_readyz(&base, 200, "ok", RESOLVE_WAIT).await;
    create(&client, &gadgets, &ns, "g1").await;
    until(&mut reader, "g1", "created", WAIT).await;
    assert_eq!(bridge.stop().await.code(), Some(0));
}
