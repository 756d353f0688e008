//! `clusters`: the fleet form, its rules, and the single-cluster form as a one-entry list.

use super::admin::unresolved;
use super::*;
use crate::config::Reach;

/// A config with `clusters_yaml` as its `clusters:` block and `watch_extra` in its watch.
fn fleet(clusters_yaml: &str, watch_extra: &str, top: &str) -> String {
    format!(
        "clusters:\n{clusters_yaml}\nstate: {{ path: /tmp/s }}\n{top}\nwatches:\n  - {{ group: example.com, version: v1, kind: Widget{watch_extra} }}\n\
         sinks:\n  out: {{ type: stdout }}\n"
    )
}

const TWO: &str = "  - { name: east, kubeconfig: /k/east }\n  - { name: west, kubeconfig: ~/west, context: admin }";

#[test]
fn the_single_cluster_form_is_a_one_entry_list() {
    let c = ok(&with_top("kubeconfig: /k/config"));
    assert!(!c.fleet);
    assert_eq!(
        c.clusters,
        [ClusterConfig {
            name: "c1".into(),
            kubeconfig: Some("/k/config".into()),
            context: None,
            in_cluster: false
        }]
    );
    assert_eq!(c.watches[0].clusters, ["c1"]);
    assert_eq!(c.leader_election.cluster.as_deref(), Some("c1"));
    let c = ok(&with_top(""));
    assert_eq!(c.clusters[0].reach(), Reach::Inferred);
}

#[test]
fn a_fleet_lists_its_clusters_and_watches_default_to_all() {
    let c = resolve(
        FILE,
        unresolved(&fleet(TWO, "", "")),
        Some(OsStr::new("/home/u")),
    )
    .unwrap();
    assert!(c.fleet);
    let names: Vec<&str> = c.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["east", "west"]);
    assert_eq!(
        c.clusters[1].reach(),
        Reach::Kubeconfig {
            path: "/home/u/west".into(),
            context: Some("admin".into())
        }
    );
    assert_eq!(c.watches[0].clusters, ["east", "west"], "default: all");
    assert_eq!(c.cluster, "east", "the home cluster: the first");
    assert_eq!(c.leader_election.cluster.as_deref(), Some("east"));

    let c = ok(&fleet(
        TWO,
        ", clusters: [west]",
        "leaderElection: { cluster: west }",
    ));
    assert_eq!(c.watches[0].clusters, ["west"]);
    assert_eq!(c.cluster, "west");
    let c = ok(&fleet("  - { name: here, inCluster: true }", "", ""));
    assert_eq!(c.clusters[0].reach(), Reach::InCluster);
}

#[test]
fn fleet_mistakes_name_the_key() {
    for (text, expected) in [
        (
            fleet(TWO, "", "cluster: c"),
            "crbridge.yaml: cluster: set together with clusters",
        ),
        (
            fleet(TWO, "", "kubeconfig: /k"),
            "crbridge.yaml: kubeconfig: set together with clusters",
        ),
        (
            fleet("  - { name: East, kubeconfig: /k }", "", ""),
            r#"crbridge.yaml: clusters[0].name: invalid cluster name "East""#,
        ),
        (
            fleet(
                "  - { name: a, kubeconfig: /k }\n  - { name: a, kubeconfig: /j }",
                "",
                "",
            ),
            r#"crbridge.yaml: clusters[1].name: duplicate cluster name "a""#,
        ),
        (
            fleet("  - { name: a }", "", ""),
            r#"crbridge.yaml: clusters[0]: cluster "a" has no kubeconfig and no inCluster: true"#,
        ),
        (
            fleet("  - { name: a, kubeconfig: /k, inCluster: true }", "", ""),
            "crbridge.yaml: clusters[0].inCluster: set together with kubeconfig",
        ),
        (
            fleet("  - { name: a, inCluster: true, context: x }", "", ""),
            "crbridge.yaml: clusters[0].context: set with inCluster: true",
        ),
        (
            fleet(TWO, ", clusters: [north]", ""),
            r#"crbridge.yaml: watches[0].clusters[0]: unknown cluster "north" (expected one of: east, west)"#,
        ),
        (
            fleet(TWO, ", clusters: [east, east]", ""),
            r#"crbridge.yaml: watches[0].clusters[1]: duplicate cluster "east""#,
        ),
        (
            fleet(TWO, "", "leaderElection: { cluster: north }"),
            r#"crbridge.yaml: leaderElection.cluster: unknown cluster "north" (expected one of: east, west)"#,
        ),
        (
            fleet("  - { name: a, kubeconfig: /k, kubeConfig: /j }", "", ""),
            "crbridge.yaml: clusters[0].kubeConfig: unknown key",
        ),
    ] {
        assert_contains(&err(&text), expected);
    }
}

#[test]
fn state_keys_carry_the_cluster_only_in_a_fleet() {
    let single = ok(&with_top(""));
    assert_eq!(single.state_key("c1", "pods"), "pods");
    assert_eq!(
        single.watch_arg_keys("pods"),
        Some(vec!["pods".to_string()])
    );
    assert_eq!(single.watch_arg_keys("c1/pods"), None);

    let c = ok(&fleet(TWO, "", ""));
    let w = &c.watches[0].name;
    assert_eq!(w, "widgets.example.com");
    assert_eq!(
        c.watch_arg_keys(w),
        Some(vec![format!("east/{w}"), format!("west/{w}")])
    );
    assert_eq!(
        c.watch_arg_keys(&format!("west/{w}")),
        Some(vec![format!("west/{w}")])
    );
    assert_eq!(c.watch_arg_keys("north/x"), None);
    assert_eq!(c.watch_args().len(), 3);
}
