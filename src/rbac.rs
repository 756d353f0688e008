//! Least-privilege RBAC for a config: what `crbridge rbac -c crbridge.yaml` prints.
//!
//! [`manifests`] turns the configured watches (resolved by discovery into [`ResolvedKind`]s)
//! into multi-document YAML, ready for `kubectl apply -f -`:
//!
//! * a ServiceAccount crbridge runs as;
//! * for kinds watched in **all** namespaces, and cluster-scoped kinds: one ClusterRole with
//!   `get`, `list`, `watch` on exactly those resources, and its ClusterRoleBinding;
//! * for kinds watched in **listed** namespaces: one Role per namespace with `get`, `list`,
//!   `watch` on exactly the resources watched there (minus any the ClusterRole already
//!   grants), and its RoleBinding in that namespace;
//! * with `leaderElection.enabled`: a Role in the Lease's namespace allowing `get` and
//!   `update` on that one Lease and `create` on Leases (`create` cannot be narrowed by
//!   name: the object does not exist yet), and its RoleBinding.
//!
//! Rules hold one API group each, so a rule never grants a resource of one group under
//! another group's name (`apiGroups: [a, b], resources: [x, y]` would grant all four
//! pairs). Everything is sorted: the same config always prints the same bytes.
//!
//! Pure: no I/O; the caller does discovery and prints the string.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::config::{Config, WatchConfig};

/// Verbs crbridge needs on a watched resource: list and watch (the watch loop), get.
const WATCH_VERBS: [&str; 3] = ["get", "list", "watch"];

/// The `app.kubernetes.io/name` label value on every generated object.
const APP_LABEL: &str = "crbridge";

/// A watched kind as discovery describes it: what RBAC needs to name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedKind {
    /// API group; `""` for the core group.
    pub group: String,
    /// Plural resource name, e.g. `widgets`.
    pub plural: String,
    /// True for namespaced kinds; cluster-scoped kinds always go to the ClusterRole.
    pub namespaced: bool,
    /// Namespaces watched; empty: all namespaces.
    pub namespaces: Vec<String>,
}

impl ResolvedKind {
    /// The kind of `watch`, with the plural and scope discovery reported for it (a
    /// configured `plural` takes precedence over `plural`).
    pub fn from_watch(watch: &WatchConfig, plural: &str, namespaced: bool) -> Self {
        ResolvedKind {
            group: watch.group.clone(),
            plural: watch.plural.clone().unwrap_or_else(|| plural.to_owned()),
            namespaced,
            namespaces: watch.namespaces.clone(),
        }
    }

    /// Every resource of a whole-group watch's group (`resources: ["*"]`): kinds installed
    /// later are covered without a new grant.
    pub fn whole_group(watch: &WatchConfig) -> Self {
        ResolvedKind {
            group: watch.group.clone(),
            plural: "*".to_owned(),
            namespaced: true,
            namespaces: watch.namespaces.clone(),
        }
    }

    /// True when the grant must be cluster-wide: a cluster-scoped kind, or all namespaces.
    fn cluster_wide(&self) -> bool {
        !self.namespaced || self.namespaces.is_empty()
    }
}

/// Where and as whom crbridge runs; names of the generated objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbacOptions {
    /// Namespace crbridge runs in (of the ServiceAccount). Default `crbridge`.
    pub namespace: String,
    /// ServiceAccount name. Default `crbridge`.
    pub service_account: String,
    /// Prefix of the Role, ClusterRole and binding names. Default `crbridge`.
    pub name: String,
    /// Whether this cluster holds the leader-election Lease (the home cluster; in a fleet
    /// the others need no Lease role). Default true.
    pub lease: bool,
}

impl Default for RbacOptions {
    fn default() -> Self {
        RbacOptions {
            namespace: "crbridge".into(),
            service_account: "crbridge".into(),
            name: "crbridge".into(),
            lease: true,
        }
    }
}

/// Resources by API group: one rule per group.
type Grants = BTreeMap<String, BTreeSet<String>>;

/// The RBAC objects for `config` and its `resolved` kinds, in apply order: ServiceAccount,
/// ClusterRole, ClusterRoleBinding, then Role and RoleBinding per namespace (sorted), the
/// leader-election Role and RoleBinding last.
pub fn objects(config: &Config, resolved: &[ResolvedKind], opts: &RbacOptions) -> Vec<Value> {
    let mut cluster: Grants = BTreeMap::new();
    for k in resolved.iter().filter(|k| k.cluster_wide()) {
        cluster
            .entry(k.group.clone())
            .or_default()
            .insert(k.plural.clone());
    }
    let mut per_namespace: BTreeMap<String, Grants> = BTreeMap::new();
    for k in resolved.iter().filter(|k| !k.cluster_wide()) {
        let covered = cluster
            .get(&k.group)
            .is_some_and(|plurals| plurals.contains(&k.plural));
        if covered {
            continue;
        }
        for ns in &k.namespaces {
            per_namespace
                .entry(ns.clone())
                .or_default()
                .entry(k.group.clone())
                .or_default()
                .insert(k.plural.clone());
        }
    }

    let watch_role = format!("{}-watch", opts.name);
    let mut out = vec![json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(&opts.service_account, Some(&opts.namespace)),
    })];
    if !cluster.is_empty() {
        out.push(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": metadata(&watch_role, None),
            "rules": watch_rules(&cluster),
        }));
        out.push(binding(opts, "ClusterRole", &watch_role, None));
    }
    for (ns, grants) in &per_namespace {
        out.push(role(&watch_role, ns, watch_rules(grants)));
        out.push(binding(opts, "Role", &watch_role, Some(ns)));
    }
    let le = &config.leader_election;
    if le.enabled && opts.lease {
        let name = format!("{}-leader-election", opts.name);
        let rules = json!([
            {
                "apiGroups": ["coordination.k8s.io"],
                "resources": ["leases"],
                "resourceNames": [le.lease_name],
                "verbs": ["get", "update"],
            },
            {
                "apiGroups": ["coordination.k8s.io"],
                "resources": ["leases"],
                "verbs": ["create"],
            },
        ]);
        out.push(role(&name, &le.namespace, rules));
        out.push(binding(opts, "Role", &name, Some(&le.namespace)));
    }
    out
}

/// [`objects`] as multi-document YAML, each document starting with `---`.
pub fn manifests(config: &Config, resolved: &[ResolvedKind], opts: &RbacOptions) -> String {
    let mut out = String::from(
        "# Least-privilege RBAC for crbridge, generated by `crbridge rbac` from its config.\n\
         # Regenerate it after changing the watches or leaderElection.\n",
    );
    for obj in objects(config, resolved, opts) {
        out.push_str("---\n");
        // A `Value` of strings, arrays and maps always serializes.
        out.push_str(&serde_saphyr::to_string(&obj).expect("serializing a JSON value"));
    }
    out
}

fn metadata(name: &str, namespace: Option<&str>) -> Value {
    let mut m = json!({
        "name": name,
        "labels": {"app.kubernetes.io/name": APP_LABEL},
    });
    if let Some(ns) = namespace {
        m["namespace"] = ns.into();
    }
    m
}

/// One `get, list, watch` rule per API group, on exactly its resources.
fn watch_rules(grants: &Grants) -> Value {
    grants
        .iter()
        .map(|(group, plurals)| {
            json!({
                "apiGroups": [group],
                "resources": plurals,
                "verbs": WATCH_VERBS,
            })
        })
        .collect()
}

fn role(name: &str, namespace: &str, rules: Value) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": metadata(name, Some(namespace)),
        "rules": rules,
    })
}

/// A (Cluster)RoleBinding of `role_kind`/`role_name` to the ServiceAccount; namespaced
/// (a RoleBinding) when `namespace` is given.
fn binding(opts: &RbacOptions, role_kind: &str, role_name: &str, namespace: Option<&str>) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": if namespace.is_some() { "RoleBinding" } else { "ClusterRoleBinding" },
        "metadata": metadata(role_name, namespace),
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": role_kind,
            "name": role_name,
        },
        "subjects": [{
            "kind": "ServiceAccount",
            "name": opts.service_account,
            "namespace": opts.namespace,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!(
            "cluster: c\nstate: {{ path: /s }}\n{extra}\nwatches: [{{ version: v1, kind: Pod }}]\nsinks: {{ out: {{ type: stdout }} }}\n"
        );
        crate::config::parse("test.yaml", &text).unwrap()
    }

    fn kind(group: &str, plural: &str, namespaces: &[&str]) -> ResolvedKind {
        ResolvedKind {
            group: group.into(),
            plural: plural.into(),
            namespaced: true,
            namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn docs(config: &Config, kinds: &[ResolvedKind]) -> Vec<Value> {
        let text = manifests(config, kinds, &RbacOptions::default());
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
        assert_eq!(docs, objects(config, kinds, &RbacOptions::default()));
        docs
    }

    fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
        docs.iter().filter(|d| d["kind"] == kind).collect()
    }

    fn kinds(docs: &[Value]) -> Vec<String> {
        docs.iter()
            .map(|d| match d["metadata"]["namespace"].as_str() {
                Some(ns) => format!(
                    "{}/{ns}/{}",
                    d["kind"].as_str().unwrap(),
                    d["metadata"]["name"].as_str().unwrap()
                ),
                None => format!(
                    "{}/{}",
                    d["kind"].as_str().unwrap(),
                    d["metadata"]["name"].as_str().unwrap()
                ),
            })
            .collect()
    }

    #[test]
    fn all_namespaces_kind_gets_a_cluster_role() {
        let docs = docs(&config(""), &[kind("example.com", "widgets", &[])]);
        assert_eq!(
            kinds(&docs),
            [
                "ServiceAccount/crbridge/crbridge",
                "ClusterRole/crbridge-watch",
                "ClusterRoleBinding/crbridge-watch",
            ]
        );
        let role = of_kind(&docs, "ClusterRole")[0];
        assert_eq!(
            role["rules"],
            json!([{"apiGroups": ["example.com"], "resources": ["widgets"], "verbs": ["get", "list", "watch"]}])
        );
        let binding = of_kind(&docs, "ClusterRoleBinding")[0];
        assert_eq!(
            binding["roleRef"],
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "crbridge-watch"})
        );
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "crbridge", "namespace": "crbridge"}])
        );
        for d in &docs {
            assert_eq!(
                d["metadata"]["labels"]["app.kubernetes.io/name"],
                "crbridge"
            );
        }
    }

    #[test]
    fn cluster_scoped_kind_gets_a_cluster_role() {
        let mut k = kind("example.com", "clusterwidgets", &[]);
        k.namespaced = false;
        let docs = docs(&config(""), &[k]);
        assert_eq!(
            of_kind(&docs, "ClusterRole")[0]["rules"][0]["resources"],
            json!(["clusterwidgets"])
        );
        assert!(of_kind(&docs, "Role").is_empty());
    }

    #[test]
    fn listed_namespaces_get_roles_only() {
        let docs = docs(
            &config(""),
            &[
                kind("example.com", "widgets", &["team-b", "team-a"]),
                kind("other.io", "gadgets", &["team-a"]),
            ],
        );
        assert!(of_kind(&docs, "ClusterRole").is_empty());
        assert!(of_kind(&docs, "ClusterRoleBinding").is_empty());
        assert_eq!(
            kinds(&docs),
            [
                "ServiceAccount/crbridge/crbridge",
                "Role/team-a/crbridge-watch",
                "RoleBinding/team-a/crbridge-watch",
                "Role/team-b/crbridge-watch",
                "RoleBinding/team-b/crbridge-watch",
            ]
        );
        let roles = of_kind(&docs, "Role");
        assert_eq!(
            roles[0]["rules"],
            json!([
                {"apiGroups": ["example.com"], "resources": ["widgets"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["other.io"], "resources": ["gadgets"], "verbs": ["get", "list", "watch"]},
            ])
        );
        assert_eq!(
            roles[1]["rules"],
            json!([{"apiGroups": ["example.com"], "resources": ["widgets"], "verbs": ["get", "list", "watch"]}])
        );
        let binding = of_kind(&docs, "RoleBinding")[1];
        assert_eq!(binding["roleRef"]["kind"], "Role");
        assert_eq!(binding["subjects"][0]["namespace"], "crbridge");
    }

    #[test]
    fn kinds_of_one_group_merge_and_sort() {
        let docs = docs(
            &config(""),
            &[
                kind("example.com", "widgets", &[]),
                kind("example.com", "gadgets", &[]),
                kind("example.com", "widgets", &[]),
                kind("apps", "deployments", &[]),
            ],
        );
        assert_eq!(
            of_kind(&docs, "ClusterRole")[0]["rules"],
            json!([
                {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["example.com"], "resources": ["gadgets", "widgets"], "verbs": ["get", "list", "watch"]},
            ])
        );
    }

    #[test]
    fn namespaced_grant_covered_by_the_cluster_role_is_dropped() {
        let docs = docs(
            &config(""),
            &[
                kind("example.com", "widgets", &[]),
                kind("example.com", "widgets", &["team-a"]),
                kind("example.com", "gadgets", &["team-a"]),
            ],
        );
        let roles = of_kind(&docs, "Role");
        assert_eq!(roles.len(), 1);
        assert_eq!(roles[0]["rules"][0]["resources"], json!(["gadgets"]));
        assert_eq!(
            of_kind(&docs, "ClusterRole")[0]["rules"][0]["resources"],
            json!(["widgets"])
        );
    }

    #[test]
    fn core_group_is_the_empty_string() {
        let k = kind("", "configmaps", &[]);
        let docs = docs(&config(""), std::slice::from_ref(&k));
        assert_eq!(
            of_kind(&docs, "ClusterRole")[0]["rules"],
            json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}])
        );
        let text = manifests(&config(""), &[k], &RbacOptions::default());
        // Quoted, so that it reads as the empty string and not as null.
        assert!(text.contains("- \"\"\n"), "{text}");
    }

    #[test]
    fn only_the_home_cluster_gets_the_lease_role() {
        let cfg = config("leaderElection: { enabled: true }");
        let opts = RbacOptions {
            lease: false,
            ..Default::default()
        };
        let docs = objects(&cfg, &[kind("", "secrets", &[])], &opts);
        assert!(!serde_json::to_string(&docs).unwrap().contains("leases"));
        let docs = objects(&cfg, &[kind("", "secrets", &[])], &RbacOptions::default());
        assert!(serde_json::to_string(&docs).unwrap().contains("leases"));
    }

    #[test]
    fn leader_election_off_has_no_lease_role() {
        let docs = docs(&config(""), &[kind("", "configmaps", &["a"])]);
        assert!(!serde_json::to_string(&docs).unwrap().contains("leases"));
        assert!(docs
            .iter()
            .all(|d| d["metadata"]["name"] != "crbridge-leader-election"));
    }

    #[test]
    fn leader_election_on_gets_a_lease_role() {
        let cfg = config("leaderElection: { enabled: true, namespace: ops, leaseName: bridge-1 }");
        let docs = docs(&cfg, &[kind("", "configmaps", &["a"])]);
        assert_eq!(
            kinds(&docs),
            [
                "ServiceAccount/crbridge/crbridge",
                "Role/a/crbridge-watch",
                "RoleBinding/a/crbridge-watch",
                "Role/ops/crbridge-leader-election",
                "RoleBinding/ops/crbridge-leader-election",
            ]
        );
        assert_eq!(
            docs[3]["rules"],
            json!([
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["bridge-1"], "verbs": ["get", "update"]},
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
            ])
        );
        assert_eq!(
            docs[4]["roleRef"],
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "crbridge-leader-election"})
        );
    }

    #[test]
    fn options_name_everything() {
        let opts = RbacOptions {
            namespace: "ops".into(),
            service_account: "bridge".into(),
            name: "cdc".into(),
            lease: true,
        };
        let cfg = config("leaderElection: { enabled: true }");
        let docs = objects(&cfg, &[kind("", "secrets", &[])], &opts);
        assert_eq!(
            kinds(&docs),
            [
                "ServiceAccount/ops/bridge",
                "ClusterRole/cdc-watch",
                "ClusterRoleBinding/cdc-watch",
                "Role/crbridge/cdc-leader-election",
                "RoleBinding/crbridge/cdc-leader-election",
            ]
        );
        for b in docs.iter().filter(|d| d["subjects"].is_array()) {
            assert_eq!(
                b["subjects"],
                json!([{"kind": "ServiceAccount", "name": "bridge", "namespace": "ops"}])
            );
        }
    }

    #[test]
    fn output_is_deterministic_yaml() {
        let cfg = config("");
        let a = [
            kind("b.io", "xs", &["n2", "n1"]),
            kind("a.io", "ys", &["n1"]),
        ];
        let b = [a[1].clone(), a[0].clone()];
        let text = manifests(&cfg, &a, &RbacOptions::default());
        assert_eq!(text, manifests(&cfg, &b, &RbacOptions::default()));
        assert!(text.starts_with("# "));
        assert_eq!(text.matches("\n---\n").count(), 5);
    }

    #[test]
    fn from_watch_prefers_the_configured_plural() {
        let cfg = crate::config::parse(
            "test.yaml",
            "cluster: c\nstate: { path: /s }\nwatches:\n  - { group: example.com, version: v1, kind: Widget, plural: widgetz, namespaces: [a] }\n  - { version: v1, kind: Pod }\nsinks: { out: { type: stdout } }\n",
        )
        .unwrap();
        assert_eq!(
            ResolvedKind::from_watch(&cfg.watches[0], "widgets", true),
            kind("example.com", "widgetz", &["a"])
        );
        assert_eq!(
            ResolvedKind::from_watch(&cfg.watches[1], "pods", true),
            kind("", "pods", &[])
        );
    }

    #[test]
    fn a_whole_group_watch_is_granted_every_resource_of_its_group() {
        let c = crate::config::parse(
            "test.yaml",
            "cluster: c\nstate: { path: /s }\nwatches:\n  - { group: example.com, version: v1, kind: \"*\" }\n  - { group: other.io, version: v1, kind: \"*\", namespaces: [a] }\nsinks: { out: { type: stdout } }\n",
        )
        .unwrap();
        let kinds: Vec<ResolvedKind> = c.watches.iter().map(ResolvedKind::whole_group).collect();
        let docs = docs(&c, &kinds);
        assert_eq!(
            of_kind(&docs, "ClusterRole")[0]["rules"],
            json!([{"apiGroups": ["example.com"], "resources": ["*"], "verbs": ["get", "list", "watch"]}]),
            "kinds installed later need no new grant"
        );
        let roles = of_kind(&docs, "Role");
        let watched: Vec<&Value> = roles
            .iter()
            .filter(|r| r["metadata"]["namespace"] == "a")
            .map(|r| &r["rules"][0])
            .collect();
        assert_eq!(
            watched,
            [
                &json!({"apiGroups": ["other.io"], "resources": ["*"], "verbs": ["get", "list", "watch"]})
            ]
        );
    }
}
