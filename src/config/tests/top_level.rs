//! The top-level keys, `leaderElection`, and `~` expansion in paths.

use super::*;

#[test]
fn top_level_rules() {
    assert_contains(
        &err(&with_top("").replace("cluster: c1", "cluster: Prod EU")),
        r#"crbridge.yaml: cluster: invalid cluster name "Prod EU" (expected lowercase letters, digits, '.' and '-'"#,
    );
    assert_contains(
        &err(&with_top("").replace("cluster: c1", "cluster: ''")),
        "crbridge.yaml: cluster: missing or empty (expected",
    );
    assert_contains(
        &err(&with_top("eventTypePrefix: io crbridge")),
        r#"crbridge.yaml: eventTypePrefix: invalid event type prefix "io crbridge" (expected no spaces"#,
    );
    assert_contains(
        &err(&with_top("dataSchema: 'urn:x:{name}'")),
        "crbridge.yaml: dataSchema: {name} varies per object (expected only {cluster} {group} {version} {kind} {plural})",
    );
    assert_contains(
        &err(&with_top("dataSchema: 'schema {kind}'")),
        r#"crbridge.yaml: dataSchema: "schema {kind}" is not a URI (expected e.g. urn:crbridge:schema:{group}:{version}:{kind})"#,
    );
    assert_contains(
        &err(&with_top("eventTypePrefix: ''")),
        "crbridge.yaml: eventTypePrefix: empty (expected",
    );
    assert_contains(
        &err(&with_top("").replace("path: /tmp/s", "path: ''")),
        "crbridge.yaml: state.path: empty (expected the state directory",
    );
    assert_contains(
        &err("cluster: c\nstate: { path: /s }\nwatches: []\nsinks: { out: { type: stdout } }"),
        "crbridge.yaml: watches: empty (expected at least one watch",
    );
    assert_contains(
        &err("cluster: c\nstate: { path: /s }\nwatches: [{ version: v1, kind: Pod }]\nsinks: {}"),
        "crbridge.yaml: sinks: empty (expected at least one sink",
    );
}

#[test]
fn leader_election_rules() {
    assert_contains(
        &err(&with_top(
            "leaderElection: { leaseDuration: 10s, renewDeadline: 10s }",
        )),
        "crbridge.yaml: leaderElection.renewDeadline: 10s must be shorter than leaseDuration (10s)",
    );
    assert_contains(
        &err(&with_top(
            "leaderElection: { renewDeadline: 2s, retryPeriod: 2s }",
        )),
        "crbridge.yaml: leaderElection.retryPeriod: 2s is too long for renewDeadline 2s",
    );
    assert_contains(
        &err(&with_top("leaderElection: { namespace: Ops }")),
        r#"crbridge.yaml: leaderElection.namespace: invalid namespace "Ops""#,
    );
    assert_contains(
        &err(&with_top("leaderElection: { leaseName: a_b }")),
        r#"crbridge.yaml: leaderElection.leaseName: invalid Lease name "a_b""#,
    );
}

#[test]
fn home_expansion() {
    let home = Some(OsStr::new("/home/me"));
    assert_eq!(
        expand_home(Path::new("~/.kube/config"), home),
        Ok(PathBuf::from("/home/me/.kube/config"))
    );
    assert_eq!(
        expand_home(Path::new("~"), home),
        Ok(PathBuf::from("/home/me"))
    );
    assert_eq!(
        expand_home(Path::new("/abs/~/x"), home),
        Ok(PathBuf::from("/abs/~/x"))
    );
    assert_eq!(
        expand_home(Path::new("~other/x"), home),
        Ok(PathBuf::from("~other/x"))
    );
    assert!(expand_home(Path::new("~/x"), None)
        .unwrap_err()
        .contains("$HOME is not set"));
    let c = resolve(FILE, ok_raw(&with_top("kubeconfig: ~/k")), home).unwrap();
    assert_eq!(c.kubeconfig, Some(PathBuf::from("/home/me/k")));
    let line = resolve(FILE, ok_raw(&with_top("kubeconfig: ~/k")), None)
        .unwrap_err()
        .to_string();
    assert_contains(
        &line,
        r#"crbridge.yaml: kubeconfig: cannot expand "~/k": $HOME is not set"#,
    );
}

/// Deserialized but not resolved, to drive `resolve` with a chosen $HOME.
fn ok_raw(text: &str) -> Config {
    serde_saphyr::from_str(text).unwrap()
}
