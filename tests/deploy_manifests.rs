//! The deploy manifests (`deploy/kubernetes/`: the namespace and the Helm chart's rendered
//! defaults, which tests/helm_chart.rs keeps equal to the chart) and the generated RBAC
//! (`crbridge::rbac`),
//! checked against the real kube-apiserver `deploy/local/up` runs: every document is a
//! server-side dry-run apply with strict field validation, the pod template passes the
//! `restricted` Pod Security Standard, and the generated RBAC grants exactly the watched
//! kinds (SubjectAccessReview). Plus the consistency of the files with each other, with the
//! Dockerfile and with the config format.
#![allow(missing_docs)]

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crbridge::rbac::{self, RbacOptions, ResolvedKind};
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::discovery::Scope;
use kube::{Api, Client};
use serde_json::{json, Value};

const FIELD_MANAGER: &str = "crbridge-test";

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The YAML files holding Kubernetes objects (not the kustomization), sorted.
fn manifest_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(manifests_dir())
        .expect("reading deploy/kubernetes")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .filter(|p| p.file_name().unwrap() != "kustomization.yaml")
        .collect();
    files.sort();
    files
}

/// The one document of `kind` in `file` (under deploy/kubernetes).
fn document(file: &str, kind: &str) -> Value {
    let docs = support::yaml_documents(&read(&manifests_dir().join(file)), file);
    let mut found = docs.into_iter().filter(|d| d["kind"] == kind);
    let doc = found.next().unwrap_or_else(|| panic!("{file}: no {kind}"));
    assert!(found.next().is_none(), "{file}: more than one {kind}");
    doc
}

fn gvk(doc: &Value) -> GroupVersionKind {
    let api_version = doc["apiVersion"].as_str().expect("apiVersion");
    let kind = doc["kind"].as_str().expect("kind");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    GroupVersionKind::gvk(group, version, kind)
}

/// Server-side apply of `doc` with `dryRun=All` and `fieldValidation=Strict` (an unknown or
/// duplicate field is an error, not a warning). A namespaced object goes to `namespace` when
/// given, else to the namespace it names, which it must name: the manifests are applied as
/// they are, without a default namespace. The resource comes from discovery.
async fn dry_run_apply(
    client: &Client,
    doc: &Value,
    namespace: Option<&str>,
    what: &str,
) -> Result<DynamicObject, kube::Error> {
    apply(client, doc, namespace, what, true).await
}

async fn apply(
    client: &Client,
    doc: &Value,
    namespace: Option<&str>,
    what: &str,
    dry_run: bool,
) -> Result<DynamicObject, kube::Error> {
    let gvk = gvk(doc);
    let (resource, caps) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .unwrap_or_else(|e| panic!("{what}: discovery of {gvk:?}: {e}"));
    let mut doc = doc.clone();
    let name = doc["metadata"]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no metadata.name"))
        .to_owned();
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Namespaced => {
            let own = doc["metadata"]["namespace"].as_str().map(str::to_owned);
            let own = own.unwrap_or_else(|| panic!("{what}: namespaced but no metadata.namespace"));
            let ns = namespace.unwrap_or(&own).to_owned();
            doc["metadata"]["namespace"] = ns.clone().into();
            Api::namespaced_with(client.clone(), &ns, &resource)
        }
        Scope::Cluster => {
            assert!(
                doc["metadata"]["namespace"].is_null(),
                "{what}: cluster-scoped {} with a metadata.namespace",
                gvk.kind
            );
            Api::all_with(client.clone(), &resource)
        }
    };
    let mut params = PatchParams::apply(FIELD_MANAGER).validation_strict();
    if dry_run {
        params = params.dry_run();
    }
    api.patch(&name, &params, &Patch::Apply(&doc)).await
}

/// Dry-run applies every document of `text`; panics naming the document that failed.
async fn dry_run_all(client: &Client, text: &str, namespace: Option<&str>, what: &str) -> usize {
    let docs = support::yaml_documents(text, what);
    assert!(!docs.is_empty(), "{what}: no documents");
    for (i, doc) in docs.iter().enumerate() {
        let what = format!(
            "{what}: document {i} ({} {})",
            doc["kind"], doc["metadata"]["name"]
        );
        let obj = dry_run_apply(client, doc, namespace, &what)
            .await
            .unwrap_or_else(|e| panic!("{what}: dry-run apply refused: {e}"));
        assert_eq!(
            obj.metadata.name.as_deref(),
            doc["metadata"]["name"].as_str(),
            "{what}"
        );
        // Dry run: the server filled in what it would store, but stored nothing.
        assert!(obj.metadata.uid.is_some(), "{what}: no uid in the answer");
    }
    docs.len()
}

#[tokio::test]
async fn every_manifest_dry_run_applies() {
    let client = support::kube_client().await;
    let ns = support::namespace(&client, "deploy").await;
    let mut kinds = BTreeSet::new();
    for file in manifest_files() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let text = read(&file);
        for doc in support::yaml_documents(&text, &name) {
            kinds.insert(doc["kind"].as_str().unwrap_or_default().to_owned());
        }
        let n = dry_run_all(&client, &text, Some(&ns), &name).await;
        eprintln!("{name}: {n} documents accepted");
    }
    let expected = [
        "ConfigMap",
        "Namespace",
        "NetworkPolicy",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
        "StatefulSet",
    ];
    assert_eq!(kinds, expected.iter().map(|s| s.to_string()).collect());
}

#[tokio::test]
async fn strict_dry_run_rejects_unknown_fields_and_bad_values() {
    // The other tests are only as strong as the server's checks: make sure they bite.
    let client = support::kube_client().await;
    let ns = support::namespace(&client, "deploy").await;
    let mut sts = document("crbridge.yaml", "StatefulSet");
    sts["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = json!({});
    let err = dry_run_apply(&client, &sts, Some(&ns), "typo")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("livenesProbe"), "{err}");
    let mut sts = document("crbridge.yaml", "StatefulSet");
    sts["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] =
        json!("lots");
    dry_run_apply(&client, &sts, Some(&ns), "bad quantity")
        .await
        .unwrap_err();
    let mut role = support::yaml_documents(
        &read(&manifests_dir().join("crbridge.yaml")),
        "crbridge.yaml",
    )
    .into_iter()
    .find(|d| d["kind"] == "Role")
    .unwrap();
    role["rules"][0]["verb"] = json!(["get"]);
    dry_run_apply(&client, &role, Some(&ns), "rule typo")
        .await
        .unwrap_err();
}

/// The ConfigMap's config and what the StatefulSet and the Dockerfile assume about it agree.
#[test]
fn configmap_config_is_valid_and_matches_the_statefulset() {
    let cm = document("crbridge.yaml", "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "crbridge-config");
    let text = cm["data"]["crbridge.yaml"]
        .as_str()
        .expect("configmap.yaml: data.crbridge.yaml");
    let file = "crbridge.yaml:ConfigMap";
    let config = crbridge::config::parse(file, text).unwrap_or_else(|e| panic!("{e}"));
    if let Err(e) = crbridge::sinks::configure(file, &config) {
        panic!("{e}");
    }
    assert_eq!(config.state.path, Path::new("/var/lib/crbridge"));
    assert_eq!(config.http.listen.to_string(), "0.0.0.0:9090");
    assert!(
        config.kubeconfig.is_none(),
        "in the pod: the ServiceAccount"
    );

    let sts = document("crbridge.yaml", "StatefulSet");
    let spec = &sts["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(
        spec["serviceName"],
        document("crbridge.yaml", "Service")["metadata"]["name"]
    );
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "crbridge");
    assert_eq!(pod["terminationGracePeriodSeconds"], 30);
    let c = &pod["containers"][0];
    let mount = |name: &str| -> String {
        let m = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("no volumeMount {name}"));
        m["mountPath"].as_str().unwrap().to_owned()
    };
    assert_eq!(Path::new(&mount("state")), config.state.path);
    assert_eq!(spec["volumeClaimTemplates"][0]["metadata"]["name"], "state");
    assert_eq!(
        spec["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
        "10Gi"
    );
    let config_volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "config")
        .unwrap();
    assert_eq!(config_volume["configMap"]["name"], "crbridge-config");
    // The config file itself is mounted (subPath), at the path the image's CMD reads.
    let config_path = mount("config");
    assert_eq!(c["args"], json!(["run", "-c", config_path]));
    assert_eq!(c["ports"][0]["name"], "http");
    assert_eq!(c["ports"][0]["containerPort"], config.http.listen.port());
    assert_eq!(
        c["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "http"})
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "http"})
    );
    assert_eq!(
        c["resources"],
        json!({"requests": {"cpu": "250m", "memory": "128Mi"}, "limits": {"cpu": "2", "memory": "512Mi"}})
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    let svc = document("crbridge.yaml", "Service");
    assert_eq!(svc["spec"]["clusterIP"], "None");
    assert_eq!(svc["spec"]["ports"][0]["name"], "metrics");
    assert_eq!(svc["spec"]["ports"][0]["port"], 9090);
    assert_eq!(
        svc["spec"]["selector"],
        spec["template"]["metadata"]["labels"]
    );
    assert_eq!(
        spec["selector"]["matchLabels"],
        spec["template"]["metadata"]["labels"]
    );

    // The image: same config path, port and user as the manifests.
    let dockerfile = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/Dockerfile"));
    let line = |prefix: &str| -> String {
        dockerfile
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("Dockerfile: no {prefix} line"))
            .to_owned()
    };
    assert_eq!(
        line("CMD "),
        format!(r#"CMD ["run", "-c", "{config_path}"]"#)
    );
    assert_eq!(
        line("ENTRYPOINT "),
        r#"ENTRYPOINT ["/usr/local/bin/crbridge"]"#
    );
    assert_eq!(
        line("EXPOSE "),
        format!("EXPOSE {}", config.http.listen.port())
    );
    let uid = pod["securityContext"]["runAsUser"].as_u64().unwrap();
    assert_eq!(line("USER "), format!("USER {uid}:{uid}"));
    assert!(dockerfile.contains("cargo build --release --locked --bin crbridge"));
}

#[test]
fn kustomization_lists_every_manifest() {
    let k: Value = serde_saphyr::from_str(&read(&manifests_dir().join("kustomization.yaml")))
        .expect("kustomization.yaml");
    let listed: BTreeSet<String> = k["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    let present: BTreeSet<String> = manifest_files()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(listed, present);
    // A kustomize `namespace:` would move rbac.yaml's Roles out of the watched namespaces.
    assert!(k.get("namespace").is_none());
}

/// The RBAC in crbridge.yaml is what `crbridge rbac` generates for the example config, and
/// for the ConfigMap's config (the chart adds its labels; tests/helm_chart.rs compares the
/// chart with the command for every values file).
#[test]
fn rbac_example_is_current() {
    let without_labels = |docs: Vec<Value>| -> Vec<Value> {
        docs.into_iter()
            .filter(|d| {
                let kind = d["kind"].as_str().unwrap_or_default();
                kind == "ServiceAccount" || kind.contains("Role")
            })
            .map(|mut d| {
                let labels = d["metadata"].as_object_mut().unwrap().remove("labels");
                assert_eq!(labels.unwrap()["app.kubernetes.io/name"], "crbridge");
                d
            })
            .collect()
    };
    let mut shipped = without_labels(support::yaml_documents(
        &read(&manifests_dir().join("crbridge.yaml")),
        "crbridge.yaml",
    ));
    // helm orders by kind; `crbridge rbac` puts the ServiceAccount first, then the Roles.
    shipped.sort_by_key(|d| d["kind"] != "ServiceAccount");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = crbridge::config::load(&root.join("examples/crbridge.yaml")).unwrap();
    let cm = document("crbridge.yaml", "ConfigMap");
    let deployed = crbridge::config::parse(
        "crbridge.yaml:ConfigMap",
        cm["data"]["crbridge.yaml"].as_str().unwrap(),
    )
    .unwrap();
    for config in [example, deployed] {
        let kinds: Vec<ResolvedKind> = config
            .watches
            .iter()
            .map(|w| {
                assert_eq!(
                    (w.group.as_str(), w.kind.as_str()),
                    ("example.com", "Widget")
                );
                ResolvedKind::from_watch(w, "widgets", true)
            })
            .collect();
        let generated = without_labels(rbac::objects(&config, &kinds, &RbacOptions::default()));
        assert_eq!(
            shipped, generated,
            "deploy/kubernetes/crbridge.yaml's RBAC is not what crbridge rbac generates"
        );
    }
}

/// A config watching core ConfigMaps in `watched` (and Events in all namespaces when
/// `events_everywhere`), with leader election in `lease_ns`.
fn core_config(watched: &str, lease_ns: &str, lease: &str) -> crbridge::config::Config {
    let text = format!(
        "cluster: test\nstate: {{ path: /tmp/unused }}\n\
         leaderElection: {{ enabled: true, namespace: {lease_ns}, leaseName: {lease} }}\n\
         watches:\n  - {{ version: v1, kind: ConfigMap, namespaces: [{watched}] }}\n  - {{ version: v1, kind: Event }}\n\
         sinks: {{ out: {{ type: stdout }} }}\n"
    );
    crbridge::config::parse("test.yaml", &text).unwrap()
}

fn core_kinds(config: &crbridge::config::Config) -> Vec<ResolvedKind> {
    vec![
        ResolvedKind::from_watch(&config.watches[0], "configmaps", true),
        ResolvedKind::from_watch(&config.watches[1], "events", true),
    ]
}

#[tokio::test]
async fn generated_rbac_dry_run_applies() {
    let client = support::kube_client().await;
    let home = support::namespace(&client, "deploy").await;
    let watched = support::namespace(&client, "deploy").await;
    let config = core_config(&watched, &home, "crbridge");
    let opts = RbacOptions {
        namespace: home.clone(),
        ..RbacOptions::default()
    };
    let text = rbac::manifests(&config, &core_kinds(&config), &opts);
    let n = dry_run_all(&client, &text, None, "generated rbac").await;
    // SA, ClusterRole + binding (Events everywhere), Role + binding (ConfigMaps), Lease
    // Role + binding.
    assert_eq!(n, 7, "{text}");
}

/// What the ServiceAccount may do, by SubjectAccessReview (the server's RBAC authorizer).
async fn allowed(client: &Client, user: &str, groups: &[String], attrs: Value) -> bool {
    let sar: SubjectAccessReview = serde_json::from_value(json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {"user": user, "groups": groups, "resourceAttributes": attrs},
    }))
    .unwrap();
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &sar)
        .await
        .expect("creating a SubjectAccessReview");
    answer.status.expect("SubjectAccessReview status").allowed
}

#[tokio::test]
async fn generated_rbac_grants_exactly_the_watched_kinds() {
    let client = support::kube_client().await;
    let home = support::namespace(&client, "deploy").await;
    let watched = support::namespace(&client, "deploy").await;
    let other = support::namespace(&client, "deploy").await;
    let lease = support::unique("lease");
    let config = core_config(&watched, &home, &lease);
    // Cluster-scoped names are unique per run, and deleted at the end.
    let opts = RbacOptions {
        namespace: home.clone(),
        service_account: "crbridge".into(),
        name: support::unique("crbridge"),
        lease: true,
    };
    let docs = rbac::objects(&config, &core_kinds(&config), &opts);
    for doc in &docs {
        apply(&client, doc, None, "generated rbac", false)
            .await
            .unwrap_or_else(|e| {
                panic!("applying {} {}: {e}", doc["kind"], doc["metadata"]["name"])
            });
    }

    let user = format!("system:serviceaccount:{home}:crbridge");
    let groups = vec![
        "system:serviceaccounts".to_owned(),
        format!("system:serviceaccounts:{home}"),
        "system:authenticated".to_owned(),
    ];
    let res = |ns: Option<&str>, group: &str, resource: &str, verb: &str, name: Option<&str>| {
        let mut a = json!({"group": group, "resource": resource, "verb": verb, "version": "v1"});
        if let Some(ns) = ns {
            a["namespace"] = ns.into();
        }
        if let Some(name) = name {
            a["name"] = name.into();
        }
        a
    };
    let cases: Vec<(Value, bool)> = vec![
        // ConfigMaps: read in the watched namespace only.
        (res(Some(&watched), "", "configmaps", "list", None), true),
        (res(Some(&watched), "", "configmaps", "watch", None), true),
        (
            res(Some(&watched), "", "configmaps", "get", Some("x")),
            true,
        ),
        (res(Some(&watched), "", "configmaps", "create", None), false),
        (
            res(Some(&watched), "", "configmaps", "update", Some("x")),
            false,
        ),
        (
            res(Some(&watched), "", "configmaps", "delete", Some("x")),
            false,
        ),
        (res(Some(&other), "", "configmaps", "list", None), false),
        (res(None, "", "configmaps", "list", None), false),
        (res(Some(&watched), "", "secrets", "list", None), false),
        // Events: read everywhere, nothing else.
        (res(None, "", "events", "list", None), true),
        (res(None, "", "events", "watch", None), true),
        (res(Some(&other), "", "events", "get", Some("x")), true),
        (res(Some(&other), "", "events", "create", None), false),
        (res(None, "events.k8s.io", "events", "list", None), false),
        (res(None, "", "pods", "list", None), false),
        // The Lease: get/update that one, create any, in its namespace only.
        (
            res(
                Some(&home),
                "coordination.k8s.io",
                "leases",
                "get",
                Some(&lease),
            ),
            true,
        ),
        (
            res(
                Some(&home),
                "coordination.k8s.io",
                "leases",
                "update",
                Some(&lease),
            ),
            true,
        ),
        (
            res(Some(&home), "coordination.k8s.io", "leases", "create", None),
            true,
        ),
        (
            res(
                Some(&home),
                "coordination.k8s.io",
                "leases",
                "get",
                Some("other"),
            ),
            false,
        ),
        (
            res(
                Some(&home),
                "coordination.k8s.io",
                "leases",
                "update",
                Some("other"),
            ),
            false,
        ),
        (
            res(
                Some(&home),
                "coordination.k8s.io",
                "leases",
                "delete",
                Some(&lease),
            ),
            false,
        ),
        (
            res(
                Some(&home),
                "coordination.k8s.io",
                "leases",
                "patch",
                Some(&lease),
            ),
            false,
        ),
        (
            res(Some(&home), "coordination.k8s.io", "leases", "list", None),
            false,
        ),
        (
            res(
                Some(&other),
                "coordination.k8s.io",
                "leases",
                "create",
                None,
            ),
            false,
        ),
    ];
    // The authorizer sees new bindings through its informers: wait for the first grant.
    let (first, _) = &cases[0];
    support::eventually(
        "the RBAC authorizer to see the new bindings",
        std::time::Duration::from_secs(20),
        || async {
            allowed(&client, &user, &groups, first.clone())
                .await
                .then_some(())
        },
    )
    .await;
    let (lease_get, _) = &cases[15];
    support::eventually(
        "the RBAC authorizer to see the Lease binding",
        std::time::Duration::from_secs(20),
        || async {
            allowed(&client, &user, &groups, lease_get.clone())
                .await
                .then_some(())
        },
    )
    .await;
    let events_list = res(None, "", "events", "list", None);
    support::eventually(
        "the RBAC authorizer to see the ClusterRoleBinding",
        std::time::Duration::from_secs(20),
        || async {
            allowed(&client, &user, &groups, events_list.clone())
                .await
                .then_some(())
        },
    )
    .await;
    let mut wrong = Vec::new();
    for (attrs, expected) in &cases {
        if allowed(&client, &user, &groups, attrs.clone()).await != *expected {
            wrong.push(format!("{attrs}: expected allowed={expected}"));
        }
    }

    // Cluster-scoped objects outlive the test namespaces: delete them.
    let name = format!("{}-watch", opts.name);
    let dp = DeleteParams::default();
    let crb: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(client.clone());
    let cr: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(client.clone());
    crb.delete(&name, &dp)
        .await
        .expect("deleting the ClusterRoleBinding");
    cr.delete(&name, &dp)
        .await
        .expect("deleting the ClusterRole");

    assert!(
        wrong.is_empty(),
        "wrong authorizations:\n{}",
        wrong.join("\n")
    );
}

/// The pod the StatefulSet makes is admitted in a namespace enforcing the `restricted` Pod
/// Security Standard (as namespace.yaml's does).
#[tokio::test]
async fn pod_template_passes_restricted_pod_security() {
    let client = support::kube_client().await;
    let ns_name = support::unique("deploy-restricted");
    let ns_doc = document("namespace.yaml", "Namespace");
    assert_eq!(
        ns_doc["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    let ns: Namespace = serde_json::from_value(json!({
        "metadata": {"name": ns_name, "labels": ns_doc["metadata"]["labels"]},
    }))
    .unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("creating the restricted namespace");

    let sts = document("crbridge.yaml", "StatefulSet");
    let template = &sts["spec"]["template"];
    let mut spec = template["spec"].clone();
    // What the StatefulSet controller adds: the claim from volumeClaimTemplates.
    spec["volumes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "state", "persistentVolumeClaim": {"claimName": "state-crbridge-0"}}));
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "crbridge-0", "namespace": ns_name, "labels": template["metadata"]["labels"]},
        "spec": spec,
    });
    dry_run_apply(&client, &pod, None, "pod from the StatefulSet template")
        .await
        .unwrap_or_else(|e| panic!("the restricted namespace refused the pod: {e}"));

    // Control: the namespace does enforce (a pod without the security settings is refused).
    let mut loose = pod.clone();
    loose["spec"]
        .as_object_mut()
        .unwrap()
        .remove("securityContext");
    loose["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("securityContext");
    let err = dry_run_apply(&client, &loose, None, "loose pod")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("PodSecurity"), "{err}");
}

/// docker-compose.yml runs the brokers `deploy/local/up` runs: Kafka at the version of
/// up's pom.xml, NATS and RabbitMQ at the series of the Debian packages up installed (read
/// from the installed servers). And its crbridge service runs the Dockerfile's image.
#[test]
fn compose_uses_the_versions_of_deploy_local_up() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let compose: Value = serde_saphyr::from_str(&read(&root.join("docker-compose.yml")))
        .expect("docker-compose.yml");
    let image = |service: &str| -> String {
        compose["services"][service]["image"]
            .as_str()
            .unwrap_or_else(|| panic!("docker-compose.yml: no image for {service}"))
            .to_owned()
    };
    let pom = read(&root.join("deploy/local/kafka/pom.xml"));
    let kafka = pom
        .split("<kafka.version>")
        .nth(1)
        .and_then(|r| r.split("</kafka.version>").next())
        .expect("pom.xml: kafka.version");
    assert_eq!(image("kafka"), format!("apache/kafka:{kafka}"));

    // `major.minor` of a version string's first `N.N.N` word.
    let series = |text: &str, what: &str| -> String {
        let v = text
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .find(|w| w.matches('.').count() >= 2)
            .unwrap_or_else(|| panic!("{what}: no version in {text:?}"));
        v.splitn(3, '.').take(2).collect::<Vec<_>>().join(".")
    };
    let run = |cmd: &str, args: &[&str]| -> String {
        let out = std::process::Command::new(cmd)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {cmd}: {e} (deploy/local/up installs it)"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let nats = series(&run("nats-server", &["--version"]), "nats-server");
    assert_eq!(image("nats"), format!("nats:{nats}"));
    let rabbit = series(
        &run("dpkg-query", &["-W", "-f", "${Version}", "rabbitmq-server"]),
        "rabbitmq-server",
    );
    assert_eq!(image("rabbitmq"), format!("rabbitmq:{rabbit}-management"));

    let crbridge = &compose["services"]["crbridge"];
    assert_eq!(crbridge["build"]["dockerfile"], "deploy/Dockerfile");
    assert_eq!(crbridge["profiles"], json!(["crbridge"]));
    let volumes: Vec<&str> = crbridge["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        volumes
            .iter()
            .any(|v| v.ends_with(":/etc/crbridge/crbridge.yaml:ro")),
        "{volumes:?}"
    );
    assert!(
        volumes.iter().any(|v| v.ends_with(":/var/lib/crbridge")),
        "{volumes:?}"
    );
}
