//! The Helm chart (`deploy/helm/crbridge`) with the real `helm` (built from its module by
//! `deploy/local/up`, `CRBRIDGE_HELM`): `helm lint --strict` and `helm template` with the
//! default values and with each values file under `ci/`; every rendered object a server-side
//! dry-run apply with strict field validation against the real kube-apiserver (with the
//! Prometheus Operator's CRDs installed for the ServiceMonitor and PrometheusRule); the pod
//! admitted under the `restricted` Pod Security Standard; the RBAC equal to what
//! `crbridge rbac` prints for the rendered config; the config valid and its secrets mounted;
//! `deploy/kubernetes/crbridge.yaml` equal to the rendered defaults.
#![allow(missing_docs)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::discovery::Scope;
use kube::{Api, Client};
use serde_json::{json, Value};

const FIELD_MANAGER: &str = "crbridge-test";
/// Release name and namespace of the committed rendering and of `crbridge rbac`'s defaults.
const RELEASE: &str = "crbridge";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chart_dir() -> PathBuf {
    root().join("deploy/helm/crbridge")
}

/// The values files the chart is tested with: `None` is the defaults, then `ci/*.yaml`.
fn values_files() -> Vec<Option<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart_dir().join("ci"))
        .expect("reading the chart's ci/ folder")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "values files: {files:?}");
    std::iter::once(None)
        .chain(files.into_iter().map(Some))
        .collect()
}

fn label(values: &Option<PathBuf>) -> String {
    match values {
        None => "default values".into(),
        Some(p) => p.file_name().unwrap().to_string_lossy().into_owned(),
    }
}

/// Runs helm; (success, stdout, stderr).
fn helm(args: &[&str]) -> (bool, String, String) {
    let bin = support::env("CRBRIDGE_HELM");
    let out = Command::new(&bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {bin}: {e} (run deploy/local/up to build helm)"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `helm template RELEASE chart --namespace ns [-f values] [extra...]`: the rendered text.
fn render(values: &Option<PathBuf>, namespace: &str, extra: &[&str]) -> String {
    let chart = chart_dir();
    let mut args = vec![
        "template",
        RELEASE,
        chart.to_str().unwrap(),
        "--namespace",
        namespace,
    ];
    if let Some(v) = values {
        args.extend(["-f", v.to_str().unwrap()]);
    }
    args.extend(extra);
    let (ok, out, err) = helm(&args);
    assert!(ok, "helm template ({}): {err}", label(values));
    out
}

fn one(docs: &[Value], kind: &str, what: &str) -> Value {
    let mut found = docs.iter().filter(|d| d["kind"] == kind);
    let doc = found
        .next()
        .unwrap_or_else(|| panic!("{what}: no {kind}"))
        .clone();
    assert!(found.next().is_none(), "{what}: more than one {kind}");
    doc
}

/// The crbridge config the ConfigMap holds.
fn rendered_config(docs: &[Value], what: &str) -> String {
    one(docs, "ConfigMap", what)["data"]["crbridge.yaml"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: ConfigMap without data.crbridge.yaml"))
        .to_owned()
}

#[test]
fn lint_passes_for_every_values_file() {
    let chart = chart_dir();
    for values in values_files() {
        let mut args = vec!["lint", "--strict", chart.to_str().unwrap()];
        if let Some(v) = &values {
            args.extend(["-f", v.to_str().unwrap()]);
        }
        let (ok, out, err) = helm(&args);
        assert!(ok, "helm lint ({}):\n{out}\n{err}", label(&values));
        assert!(out.contains("0 chart(s) failed"), "{out}");
    }
}

/// The option each values file exists for shows up in what it renders.
#[test]
fn each_values_file_renders_its_option() {
    for values in values_files() {
        let what = label(&values);
        let docs = support::yaml_documents(&render(&values, RELEASE, &[]), &what);
        let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        let sts = one(&docs, "StatefulSet", &what);
        let config: Value = serde_saphyr::from_str(&rendered_config(&docs, &what)).unwrap();
        match what.as_str() {
            "leader-election-values.yaml" => {
                assert_eq!(sts["spec"]["replicas"], 2);
                assert_eq!(config["leaderElection"]["enabled"], true);
                assert_eq!(config["leaderElection"]["namespace"], RELEASE);
                assert_eq!(config["leaderElection"]["leaseName"], RELEASE);
                assert!(docs
                    .iter()
                    .any(|d| d["kind"] == "Role"
                        && d["metadata"]["name"] == "crbridge-leader-election"));
            }
            "monitoring-values.yaml" => {
                assert!(kinds.contains(&"ServiceMonitor"), "{kinds:?}");
                assert!(kinds.contains(&"PrometheusRule"), "{kinds:?}");
                let np = one(&docs, "NetworkPolicy", &what);
                assert!(np["spec"]["ingress"][0]["from"].is_array(), "{np}");
            }
            "secrets-values.yaml" => {
                assert_eq!(config["admin"]["tokenFile"], "/etc/crbridge/admin/token");
            }
            "cluster-wide-values.yaml" => {
                assert!(kinds.contains(&"ClusterRole"), "{kinds:?}");
            }
            _ => {
                assert_eq!(sts["spec"]["replicas"], 1);
                assert!(!kinds.contains(&"ServiceMonitor"), "{kinds:?}");
                assert!(!kinds.contains(&"PrometheusRule"), "{kinds:?}");
                assert!(config.get("admin").is_none(), "{config}");
            }
        }
    }
}

#[test]
fn several_replicas_need_leader_election() {
    let chart = chart_dir();
    let (ok, _, err) = helm(&[
        "template",
        RELEASE,
        chart.to_str().unwrap(),
        "--set",
        "replicas=2",
    ]);
    assert!(!ok, "two replicas without leader election rendered");
    assert!(err.contains("config.leaderElection.enabled"), "{err}");
}

/// A changed config changes the pod template's checksum (the pods roll); other values don't.
#[test]
fn config_checksum_follows_the_config() {
    let checksum = |extra: &[&str]| -> String {
        let docs = support::yaml_documents(&render(&None, RELEASE, extra), "checksum");
        let sts = one(&docs, "StatefulSet", "checksum");
        let c = sts["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
            .as_str()
            .expect("checksum/config annotation")
            .to_owned();
        assert_eq!(c.len(), 64, "{c}");
        c
    };
    let base = checksum(&[]);
    assert_ne!(base, checksum(&["--set", "config.cluster=other"]));
    assert_ne!(base, checksum(&["--set", "service.port=9100"]));
    assert_eq!(base, checksum(&["--set", "resources.limits.memory=1Gi"]));
}

/// The rendered config is valid, points at the mounted volumes, and every file it names
/// (TLS material, `file:` secrets, the admin token) is under a mounted Secret.
#[test]
fn rendered_config_is_valid_and_its_files_are_mounted() {
    for values in values_files() {
        let what = label(&values);
        let docs = support::yaml_documents(&render(&values, RELEASE, &[]), &what);
        let text = rendered_config(&docs, &what);
        let config = crbridge::config::parse(&what, &text).unwrap_or_else(|e| panic!("{e}"));
        if let Err(e) = crbridge::sinks::configure(&what, &config) {
            panic!("{what}: {e}");
        }
        let sts = one(&docs, "StatefulSet", &what);
        let pod = &sts["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        let mounts: BTreeMap<String, String> = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["name"].as_str().unwrap().to_owned(),
                    m["mountPath"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(Path::new(&mounts["state"]), config.state.path, "{what}");
        assert_eq!(
            sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
            "state"
        );
        assert_eq!(c["args"], json!(["run", "-c", mounts["config"]]), "{what}");
        assert_eq!(c["ports"][0]["containerPort"], config.http.listen.port());
        assert_eq!(pod["serviceAccountName"], RELEASE);
        assert!(
            config.kubeconfig.is_none(),
            "in the pod: the ServiceAccount"
        );

        // Every absolute path the config names lies under a read-only Secret mount.
        let secret_mounts: Vec<&String> = mounts
            .iter()
            .filter(|(name, _)| name.starts_with("secret-") || *name == "admin-token")
            .map(|(_, path)| path)
            .collect();
        let volumes = pod["volumes"].as_array().unwrap();
        for m in c["volumeMounts"].as_array().unwrap() {
            let name = m["name"].as_str().unwrap();
            if name.starts_with("secret-") || name == "admin-token" {
                assert_eq!(m["readOnly"], true, "{what}: {m}");
                let v = volumes.iter().find(|v| v["name"] == name).unwrap();
                assert!(v["secret"]["secretName"].is_string(), "{what}: {v}");
            }
        }
        let raw: Value = serde_saphyr::from_str(&text).unwrap();
        let mut files = Vec::new();
        collect_paths(&raw, &mut files);
        for f in &files {
            assert!(
                secret_mounts
                    .iter()
                    .any(|m| f.starts_with(&format!("{m}/"))),
                "{what}: {f} is not under a mounted Secret ({secret_mounts:?})"
            );
        }
        if what == "secrets-values.yaml" {
            assert!(
                files.iter().any(|f| f.ends_with("/kafka/password")),
                "{files:?}"
            );
            assert!(text.contains("file:/etc/crbridge/secrets/kafka/password"));
            assert_eq!(files.len(), 11, "{files:?}");
        }
    }
}

/// Values that are files: `file:/path`, and the `*File` keys.
fn collect_paths(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match v.as_str() {
                    Some(s) if k.ends_with("File") => out.push(s.to_owned()),
                    Some(s) if s.starts_with("file:") => out.push(s["file:".len()..].to_owned()),
                    _ => collect_paths(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_paths(v, out)),
        _ => {}
    }
}

#[test]
fn kubernetes_manifests_are_the_rendered_defaults() {
    let path = root().join("deploy/kubernetes/crbridge.yaml");
    let committed = std::fs::read_to_string(&path).unwrap();
    let (header, body): (Vec<&str>, Vec<&str>) = {
        let lines: Vec<&str> = committed.split_inclusive('\n').collect();
        (lines[..3].to_vec(), lines[3..].to_vec())
    };
    assert!(header.iter().all(|l| l.starts_with('#')), "{header:?}");
    assert!(
        body.concat() == render(&None, RELEASE, &[]),
        "deploy/kubernetes/crbridge.yaml differs from the chart's rendered defaults: regenerate it (deploy/kubernetes/README.md)"
    );
}

// ----- against the API server ----------------------------------------------------------------

fn gvk(doc: &Value) -> GroupVersionKind {
    let api_version = doc["apiVersion"].as_str().expect("apiVersion");
    let kind = doc["kind"].as_str().expect("kind");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    GroupVersionKind::gvk(group, version, kind)
}

/// Server-side apply (dry-run unless `for_real`) with strict field validation. Namespaced
/// objects go to `namespace` when given.
async fn apply(
    client: &Client,
    doc: &Value,
    namespace: Option<&str>,
    for_real: bool,
) -> Result<DynamicObject, kube::Error> {
    let gvk = gvk(doc);
    let (resource, caps) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .unwrap_or_else(|e| panic!("discovery of {gvk:?}: {e}"));
    let mut doc = doc.clone();
    let name = doc["metadata"]["name"].as_str().unwrap().to_owned();
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Namespaced => {
            let own = doc["metadata"]["namespace"]
                .as_str()
                .unwrap_or_else(|| panic!("{} {name}: no metadata.namespace", gvk.kind))
                .to_owned();
            let ns = namespace.unwrap_or(&own).to_owned();
            doc["metadata"]["namespace"] = ns.clone().into();
            Api::namespaced_with(client.clone(), &ns, &resource)
        }
        Scope::Cluster => {
            assert!(doc["metadata"]["namespace"].is_null(), "{name}");
            Api::all_with(client.clone(), &resource)
        }
    };
    let mut params = PatchParams::apply(FIELD_MANAGER).validation_strict();
    if for_real {
        params = params.force();
    } else {
        params = params.dry_run();
    }
    api.patch(&name, &params, &Patch::Apply(&doc)).await
}

/// Applies a CRD (server-side, idempotent) and waits until it is Established.
async fn install_crd(client: &Client, doc: &Value) {
    let name = doc["metadata"]["name"].as_str().unwrap().to_owned();
    apply(client, doc, None, true)
        .await
        .unwrap_or_else(|e| panic!("installing CRD {name}: {e}"));
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    support::eventually(
        &format!("CRD {name} to be Established"),
        Duration::from_secs(30),
        || async {
            let crd = api.get(&name).await.ok()?;
            let ok = crd
                .status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            ok.then_some(())
        },
    )
    .await;
}

/// The Prometheus Operator's ServiceMonitor and PrometheusRule CRDs, from its module's
/// `example/prometheus-operator-crd/` (`CRBRIDGE_PROMETHEUS_CRDS`).
async fn install_monitoring_crds(client: &Client) {
    let dir = PathBuf::from(support::env("CRBRIDGE_PROMETHEUS_CRDS"));
    for file in [
        "monitoring.coreos.com_servicemonitors.yaml",
        "monitoring.coreos.com_prometheusrules.yaml",
    ] {
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run deploy/local/up)", path.display()));
        for doc in support::yaml_documents(&text, file) {
            install_crd(client, &doc).await;
        }
    }
    // Established first, then discovery: wait until it serves the kinds.
    for kind in ["ServiceMonitor", "PrometheusRule"] {
        let gvk = GroupVersionKind::gvk("monitoring.coreos.com", "v1", kind);
        support::eventually(
            &format!("discovery to serve {kind}"),
            Duration::from_secs(30),
            || async { kube::discovery::pinned_kind(client, &gvk).await.ok() },
        )
        .await;
    }
}

/// The Widget CRD of the default values (`widgets.example.com`), for discovery.
async fn install_widget_crd(client: &Client) {
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                    }
                }}
            }]
        }
    });
    install_crd(client, &crd).await;
}

/// A namespace enforcing the `restricted` Pod Security Standard, as deploy/kubernetes's.
async fn restricted_namespace(client: &Client) -> String {
    let name = support::unique("helm-restricted");
    let text = std::fs::read_to_string(root().join("deploy/kubernetes/namespace.yaml")).unwrap();
    let labels = support::yaml_documents(&text, "namespace.yaml")[0]["metadata"]["labels"].clone();
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("creating the restricted namespace");
    name
}

/// Every object of every rendering is accepted by the API server (dry-run, strict), and the
/// StatefulSet's pod by the `restricted` Pod Security admission.
#[tokio::test]
async fn every_rendered_object_dry_run_applies() {
    let client = support::kube_client().await;
    install_monitoring_crds(&client).await;
    for values in values_files() {
        let what = label(&values);
        let ns = restricted_namespace(&client).await;
        let docs = support::yaml_documents(&render(&values, &ns, &[]), &what);
        for doc in &docs {
            let obj = apply(&client, doc, Some(&ns), false)
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "{what}: {} {}: dry-run apply refused: {e}",
                        doc["kind"], doc["metadata"]["name"]
                    )
                });
            assert!(obj.metadata.uid.is_some(), "{what}: no uid in the answer");
        }
        // The pod the StatefulSet controller would make, with its claim.
        let sts = one(&docs, "StatefulSet", &what);
        let template = &sts["spec"]["template"];
        let mut spec = template["spec"].clone();
        spec["volumes"].as_array_mut().unwrap().push(
            json!({"name": "state", "persistentVolumeClaim": {"claimName": "state-crbridge-0"}}),
        );
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "crbridge-0", "namespace": ns, "labels": template["metadata"]["labels"]},
            "spec": spec,
        });
        apply(&client, &pod, None, false)
            .await
            .unwrap_or_else(|e| panic!("{what}: the restricted namespace refused the pod: {e}"));
        // Control: the namespace does enforce.
        let mut loose = pod.clone();
        loose["spec"]["containers"][0]["securityContext"] = json!({});
        let err = apply(&client, &loose, None, false).await.unwrap_err();
        assert!(err.to_string().contains("PodSecurity"), "{what}: {err}");
    }
}

/// The checks above bite: an unknown field in a rendered object is refused.
#[tokio::test]
async fn strict_dry_run_rejects_unknown_fields() {
    let client = support::kube_client().await;
    let ns = support::namespace(&client, "helm").await;
    let docs = support::yaml_documents(&render(&None, &ns, &[]), "defaults");
    let mut sts = one(&docs, "StatefulSet", "defaults");
    sts["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = json!({});
    let err = apply(&client, &sts, None, false).await.unwrap_err();
    assert!(err.to_string().contains("livenesProbe"), "{err}");
}

const RBAC_KINDS: [&str; 5] = [
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
];

/// RBAC objects without their labels, sorted by kind, namespace and name.
fn rbac_objects(docs: &[Value]) -> Vec<Value> {
    let mut out: Vec<Value> = docs
        .iter()
        .filter(|d| RBAC_KINDS.contains(&d["kind"].as_str().unwrap_or_default()))
        .map(|d| {
            let mut d = d.clone();
            let labels = d["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("labels")
                .unwrap_or(Value::Null);
            assert_eq!(labels["app.kubernetes.io/name"], "crbridge", "{d}");
            d
        })
        .collect();
    let key = |d: &Value| {
        format!(
            "{}/{}/{}",
            d["kind"], d["metadata"]["namespace"], d["metadata"]["name"]
        )
    };
    out.sort_by_key(key);
    out
}

/// The chart's RBAC is what `crbridge rbac` prints for the rendered config (discovery
/// against the real API server resolves the plurals and scopes), for every values file.
#[tokio::test]
async fn rbac_equals_crbridge_rbac_output() {
    let client = support::kube_client().await;
    install_widget_crd(&client).await;
    let dir = tempfile::tempdir().unwrap();
    for values in values_files() {
        let what = label(&values);
        let docs = support::yaml_documents(&render(&values, RELEASE, &[]), &what);
        let config = dir.path().join(format!("{what}.crbridge.yaml"));
        std::fs::write(&config, rendered_config(&docs, &what)).unwrap();
        // Discovery may lag a moment behind a new CRD: retry until the command succeeds.
        let printed = support::eventually(
            &format!("{what}: crbridge rbac to succeed"),
            Duration::from_secs(30),
            || {
                let config = config.clone();
                async move {
                    let out = Command::new(env!("CARGO_BIN_EXE_crbridge"))
                        .args(["rbac", "-c", config.to_str().unwrap()])
                        .args(["--namespace", RELEASE, "--service-account", RELEASE])
                        .env("KUBECONFIG", support::env("KUBECONFIG"))
                        .output()
                        .expect("running crbridge rbac");
                    if !out.status.success() {
                        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
                    }
                    out.status
                        .success()
                        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
                }
            },
        )
        .await;
        let expected = rbac_objects(&support::yaml_documents(&printed, "crbridge rbac"));
        let rendered = rbac_objects(&docs);
        assert!(
            expected == rendered,
            "{what}: the chart's RBAC differs from `crbridge rbac`:\nchart: {}\ncrbridge rbac: {}",
            serde_json::to_string_pretty(&rendered).unwrap(),
            serde_json::to_string_pretty(&expected).unwrap()
        );
    }
}

// ----- the dashboard and the alerts ------------------------------------------------------------

/// Metric names other exporters provide, that the alerts may use: kube-state-metrics' pod
/// readiness (crbridge cannot report its own unreadiness when it is not scraped).
const FOREIGN_METRICS: [&str; 1] = ["kube_pod_status_ready"];

/// The metric names in PromQL expressions: identifiers directly followed by `{` (every
/// selector in the dashboard and the rules names its labels).
fn metric_names(expr: &str, out: &mut std::collections::BTreeSet<String>) {
    let b = expr.as_bytes();
    for (i, _) in expr.match_indices('{') {
        let start = b[..i]
            .iter()
            .rposition(|c| !(c.is_ascii_alphanumeric() || *c == b'_' || *c == b':'))
            .map_or(0, |p| p + 1);
        let name = &expr[start..i];
        if !name.is_empty() && !name.starts_with('$') && !b[start..i][0].is_ascii_digit() {
            out.insert(name.to_owned());
        }
    }
}

/// Every PromQL expression of the Grafana dashboard: panel targets and variable queries.
fn dashboard_exprs() -> Vec<String> {
    let path = root().join("deploy/grafana/crbridge.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            out.push(t["expr"].as_str().unwrap().to_owned());
        }
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            out.push(q.to_owned());
        }
    }
    assert!(out.len() > 20, "{out:?}");
    out
}

/// The PrometheusRule's alerts as rendered: (name, expression).
fn alert_exprs() -> Vec<(String, String)> {
    let values = Some(chart_dir().join("ci/monitoring-values.yaml"));
    let docs = support::yaml_documents(&render(&values, RELEASE, &[]), "monitoring");
    let rule = one(&docs, "PrometheusRule", "monitoring");
    rule["spec"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().iter())
        .map(|r| {
            (
                r["alert"].as_str().unwrap().to_owned(),
                r["expr"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Every alert has a runbook entry in the README, and its annotations point there.
#[test]
fn every_alert_has_a_runbook_in_the_readme() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let section = readme
        .split("### Alerts and runbooks")
        .nth(1)
        .expect("README: no \"### Alerts and runbooks\" section");
    let section = section.split("\n## ").next().unwrap();
    let section = section.split("\n### ").next().unwrap();
    let alerts = alert_exprs();
    assert_eq!(alerts.len(), 7, "{alerts:?}");
    for (alert, _) in &alerts {
        assert!(
            section.contains(&format!("`{alert}`")),
            "README's \"Alerts and runbooks\" has no entry for {alert}"
        );
    }
}

/// The names the metric families export: samples, and each `# TYPE` family with its
/// suffixes (`_total` for counters, `_bucket`/`_sum`/`_count` for histograms), so a family
/// with no series yet still counts.
fn exported_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (name, kind) = (it.next().unwrap(), it.next().unwrap_or_default());
            out.insert(name.to_owned());
            match kind {
                "counter" => {
                    out.insert(format!("{}_total", name.trim_end_matches("_total")));
                }
                "histogram" => {
                    for s in ["_bucket", "_sum", "_count"] {
                        out.insert(format!("{name}{s}"));
                    }
                }
                _ => {}
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            out.insert(line[..end].to_owned());
        }
    }
    out
}

/// Every metric the Grafana dashboard and the PrometheusRule use is exported by a running
/// crbridge. A family appears in /metrics once it has a series, so the instance goes through
/// what each one counts: events published and suppressed, a dead letter (an unroutable
/// RabbitMQ message refused), connect errors (a NATS sink nobody listens for), a dispatcher
/// panic (the test hook) and, on its second run, a 410 Gone after compacted history, a relist
/// and an inferred deletion.
#[tokio::test]
async fn dashboard_and_alerts_use_exported_metrics() {
    let mut used = std::collections::BTreeSet::new();
    for e in dashboard_exprs() {
        metric_names(&e, &mut used);
    }
    for (_, e) in alert_exprs() {
        metric_names(&e, &mut used);
    }
    used.retain(|n| !FOREIGN_METRICS.contains(&n.as_str()));
    assert!(used.len() > 15, "{used:?}");

    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, "helm-metrics").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &crd.resource);
    let dir = tempfile::tempdir().unwrap();
    let sinks = format!(
        "  out:\n    type: stdout\n  rabbit:\n    type: amqp\n    url: \"{amqp}\"\n    exchange: {exchange}\n    routingKey: \"{{kind}}.{{name}}\"\n    unroutable: refuse\n  down:\n    type: nats\n    url: nats://127.0.0.1:{port}\n    stream: DOWN\n    subject: down.{{name}}\n",
        amqp = support::env("CRBRIDGE_AMQP_URL"),
        exchange = support::unique("crb-helm"),
        port = support::free_port(),
    );
    let config = support::config_with_sinks(
        dir.path(),
        &crd,
        &ns,
        &["out", "rabbit", "down"],
        &sinks,
        "",
    );
    let mut bridge = support::bridge::Bridge::new(dir.path(), &config);
    bridge.env("CRBRIDGE_TEST_PANIC", "dispatch/out:1");
    let wait = Duration::from_secs(30);

    // First run: a checkpoint with two objects.
    bridge.start();
    bridge.wait_logged("list reconciled", wait).await;
    support::create_widget(&api, &crd, "a", json!({"size": 1})).await;
    support::create_widget(&api, &crd, "b", json!({"size": 1})).await;
    support::eventually("two events captured", wait, || {
        let line = bridge.logged("http listening")[0]["addr"]
            .as_str()
            .unwrap()
            .to_owned();
        async move {
            let (_, text) = support::http_get(&format!("http://{line}/metrics"));
            text.contains(
                "crbridge_events_total{cluster=\"test\",watch=\"widgets\",type=\"created\"} 2",
            )
            .then_some(())
        }
    })
    .await;
    assert!(bridge.stop().await.success(), "{}", bridge.raw_log());

    // While down: b deleted, d created, history compacted (past the deletion: compacting at
    // the deletion's own revision leaves an event whose previous state is gone, which the
    // API server answers with an internal error instead of 410).
    api.delete("b", &Default::default()).await.unwrap();
    support::create_widget(&api, &crd, "d", json!({"size": 1})).await;
    support::compact_etcd();

    // Second run: 410 Gone, a relist inferring the deletion, a status-only update
    // (suppressed), a new object (dead letter on rabbit; the panic after out's first ack).
    bridge.start();
    bridge
        .wait_logged("resourceVersion expired (410 Gone), relisting", wait)
        .await;
    let line = bridge.logged("http listening");
    let base = format!("http://{}", line.last().unwrap()["addr"].as_str().unwrap());
    api.patch_status(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"x": 1}})),
    )
    .await
    .unwrap();
    support::create_widget(&api, &crd, "c", json!({"size": 1})).await;
    // Every family used appears (the gauges with the next refresh): poll until none is
    // missing, and name the missing ones if some never appear.
    let mut last = (used.iter().cloned().collect::<Vec<_>>(), String::new());
    let appeared = tokio::time::timeout(wait, async {
        loop {
            let (code, text) = support::http_get(&format!("{base}/metrics"));
            let exported = exported_names(&text);
            let missing: Vec<String> = used.difference(&exported).cloned().collect();
            if code == 200 && missing.is_empty() {
                return;
            }
            last = (missing, text);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    bridge.stop().await;
    assert!(
        appeared.is_ok(),
        "used by deploy/grafana/crbridge.json or the PrometheusRule but not exported within {wait:?}: {:?}\n{}",
        last.0,
        last.1
    );
}
