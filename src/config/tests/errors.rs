//! The wording of errors: serde's messages rewritten with a key path, "did you mean"
//! hints, syntax errors with line and column.

use super::*;

#[test]
fn missing_required_keys() {
    assert_eq!(
        err(&with_watches("  - { group: example.com, version: v1 }")),
        "crbridge.yaml: watches[0].kind: missing field (expected the resource kind, e.g. Widget)"
    );
    assert_contains(
        &err("state: { path: /s }\nwatches: []\nsinks: {}"),
        "crbridge.yaml: cluster: missing or empty (expected the cluster name used in event source and id",
    );
    assert_contains(
        &err(&with_watches("  - { kind: Pod }")),
        "crbridge.yaml: watches[0].version: missing field (expected the API version, e.g. v1)",
    );
    assert_contains(
        &err("cluster: c\nstate: { outbox: {} }\nwatches: []\nsinks: {}"),
        "crbridge.yaml: state.path: missing field (expected the state directory",
    );
    assert_contains(
        &err("cluster: c\nstate: { path: /s }\nsinks: { out: { type: stdout } }"),
        "crbridge.yaml: watches: missing field (expected a list of resources to watch",
    );
}

#[test]
fn unknown_keys_are_rejected_everywhere() {
    let line = err(&with_watches(
        "  - { version: v1, kind: Pod, includeStatuss: true }",
    ));
    assert_contains(
        &line,
        "crbridge.yaml: watches[0].includeStatuss: unknown key (expected one of: name, group, version, kind, plural,",
    );
    assert_contains(&line, "did you mean includeStatus?");
    assert_contains(
        &err(&with_top("clusterName: x")),
        "crbridge.yaml: clusterName: unknown key (expected one of: cluster, kubeconfig, clusters, state, http, admin, leaderElection, eventTypePrefix, dataSchema, redactKey, watches, sinks)",
    );
    let line =
        err(&with_top("").replace("path: /tmp/s", "path: /tmp/s, outbox: { retentoin: 1h }"));
    assert_contains(&line, "crbridge.yaml: state.outbox.retentoin: unknown key (expected one of: retention, maxBytes, max_bytes)");
    assert_contains(&line, "did you mean retention?");
    assert_contains(
        &err(&with_top("leaderElection: { lease: x }")),
        "crbridge.yaml: leaderElection.lease: unknown key (expected one of: enabled, namespace, leaseName,",
    );
    assert_contains(
        &err(&with_top("http: { port: 1 }")),
        "crbridge.yaml: http.port: unknown key (expected one of: listen)",
    );
}

#[test]
fn bad_units() {
    assert_eq!(
        err(&with_top("").replace("path: /tmp/s", "path: /tmp/s, outbox: { retention: 24x }")),
        r#"crbridge.yaml: state.outbox.retention: invalid duration "24x" (expected e.g. 30s, 15m, 24h, 7d)"#
    );
    assert_contains(
        &err(&with_top("").replace("path: /tmp/s", "path: /tmp/s, outbox: { max_bytes: 2gb }")),
        r#"crbridge.yaml: state.outbox.max_bytes: invalid byte size "2gb" (expected e.g. 512, 64KiB, 64MiB, 2GiB)"#,
    );
    assert_contains(
        &err(&with_top("").replace("path: /tmp/s", "path: /tmp/s, flushEvery: [1]")),
        "crbridge.yaml: state.flushEvery: wrong type: a list (expected a duration such as 500ms, 30s, 15m, 24h or 7d)",
    );
    assert_contains(
        &err(&with_top("").replace(
            "path: /tmp/s",
            "path: /tmp/s, outbox: { max_bytes: 1GiB, maxBytes: 2GiB }",
        )),
        "crbridge.yaml: state.outbox.max_bytes: duplicate key",
    );
    assert_contains(
        &err(&with_top("").replace("path: /tmp/s", "path: /tmp/s, cacheBytes: 0")),
        "crbridge.yaml: state.cacheBytes: must be greater than 0",
    );
    assert_contains(
        &err(&with_top("").replace("path: /tmp/s", "path: /tmp/s, flushEvery: 0ms")),
        "crbridge.yaml: state.flushEvery: must be greater than 0",
    );
}

#[test]
fn wrong_types_and_values() {
    assert_eq!(
        err(&with_watches(
            "  - { version: v1, kind: Pod, includeStatus: 3 }"
        )),
        "crbridge.yaml: watches[0].includeStatus: wrong type: integer `3` (expected true, false or a list of JSON Pointers under /status)"
    );
    assert_eq!(
        err(&with_watches(
            "  - { version: v1, kind: Pod, initial: snap }"
        )),
        r#"crbridge.yaml: watches[0].initial: unknown value "snap" (expected one of: snapshot, skip); did you mean snapshot?"#
    );
    assert_contains(
        &err(&with_watches(
            "  - { version: v1, kind: Pod, payload: both }",
        )),
        r#"crbridge.yaml: watches[0].payload: unknown value "both" (expected one of: full, patch, full+patch)"#,
    );
    assert_contains(
        &err(&with_watches(
            "  - { version: v1, kind: Pod, events: [created, changed] }",
        )),
        r#"crbridge.yaml: watches[0].events[1]: unknown value "changed" (expected one of: created, updated, deleted)"#,
    );
    assert_contains(
        &err(&with_watches(
            "  - { version: v1, kind: Pod, namespaces: team-a }",
        )),
        "crbridge.yaml: watches[0].namespaces: wrong type: string \"team-a\" (expected a list)",
    );
    assert_contains(
        &err(&with_watches("  - { version: v1, kind: }")),
        "crbridge.yaml: watches[0].kind: empty (expected the resource kind, e.g. Widget)",
    );
    assert_contains(
        &err("- cluster: x"),
        "crbridge.yaml: (top level): wrong type: a list (expected a mapping)",
    );
    assert_contains(
        &err(&with_top("http: { listen: \"localhost:9090\" }")),
        r#"crbridge.yaml: http.listen: invalid address "localhost:9090" (expected ip:port, e.g. 0.0.0.0:9090"#,
    );
    assert_contains(
        &err(&with_top("http: { listen: 9090 }")),
        r#"crbridge.yaml: http.listen: invalid address "9090" (expected ip:port"#,
    );
}

#[test]
fn yaml_syntax_errors_have_line_and_column() {
    let line = err("cluster: c\nwatches: [\n  { kind: A,\n");
    assert_contains(&line, "crbridge.yaml: line ");
    assert_contains(&line, ", column ");
    assert_contains(&line, ": invalid YAML: ");
    assert!(!line.contains(" at line "), "{line}");
    let line = err("cluster: c\n  bad: indent\n");
    assert_contains(&line, "crbridge.yaml: line 2, column");
    assert_contains(
        &err("cluster: a\n---\ncluster: b\n"),
        "crbridge.yaml: invalid YAML: ",
    );
    assert_eq!(
        err("  \n"),
        "crbridge.yaml: (top level): empty file (expected a mapping with cluster, state, watches and sinks)"
    );
}

#[test]
fn config_error_accessors() {
    let e = parse(FILE, &with_watches("  - { version: v1 }")).unwrap_err();
    assert_eq!(e.file(), FILE);
    assert_eq!(e.path(), Some("watches[0].kind"));
    let e = ConfigError::invalid(FILE, "sinks.kafka.topic", "bad");
    assert_eq!(e.to_string(), "crbridge.yaml: sinks.kafka.topic: bad");
}

#[test]
fn edit_distance_and_suggestions() {
    assert_eq!(edit_distance("kafak", "kafka"), 1);
    assert_eq!(edit_distance("includeStatuss", "includeStatus"), 1);
    assert_eq!(edit_distance("", "abc"), 3);
    assert_eq!(
        suggestion("nats2", ["nats", "kafka"]),
        "; did you mean nats?"
    );
    assert_eq!(suggestion("zzzzz", ["nats", "kafka"]), "");
    assert_eq!(
        suggestion("snap", ["snapshot", "skip"]),
        "; did you mean snapshot?"
    );
    assert_eq!(
        suggestion("kafak", ["kafka", "nats"]),
        "; did you mean kafka?"
    );
}

/// What the YAML parser must keep doing (serde-saphyr's defaults differ): YAML 1.2
/// booleans only, repeated keys named with their path, one line per error.
#[test]
fn parser_rules_kept_across_parsers() {
    assert_eq!(
        err(&with_top("leaderElection: { enabled: yes }")),
        r#"crbridge.yaml: leaderElection.enabled: wrong type: string "yes" (expected a boolean)"#
    );
    assert_eq!(
        err(&with_top("leaderElection: { enabled: 1.5 }")),
        "crbridge.yaml: leaderElection.enabled: wrong type: floating point `1.5` (expected a boolean)"
    );
    assert_contains(
        &err(&with_top("cluster: c2")),
        "crbridge.yaml: cluster: duplicate key (each key may appear only once)",
    );
    assert_eq!(
        err(&with_watches("  - { version: v1, kind: [Pod] }")),
        "crbridge.yaml: watches[0].kind: wrong type: a list (expected a string)"
    );
    assert_eq!(
        err(&with_top("").replace("state: { path: /tmp/s }", "state: /tmp/s")),
        r#"crbridge.yaml: state: wrong type: string "/tmp/s" (expected a mapping)"#
    );
    let line = err("cluster: c\nwatches: [\n  { kind: A,\n");
    assert_eq!(
        line.matches("line ").count(),
        1,
        "the position once: {line}"
    );
    assert_contains(
        &err("cluster: a\n---\ncluster: b\n"),
        "invalid YAML: more than one document (expected a single YAML document)",
    );
}

#[test]
fn filter_compile_errors_name_the_watch_the_expression_and_the_position() {
    assert_eq!(
        err(&with_watches(
            "  - { name: widgets, version: v1, kind: Widget, filter: \"object.spec.tier = 'prod'\" }"
        )),
        "crbridge.yaml: watches[0].filter: watch \"widgets\": invalid CEL expression \"object.spec.tier = 'prod'\": \
         line 1, column 18: Syntax error: token recognition error at: '= ' \
         (expected an expression over type, object, oldObject and patch, e.g. object.spec.tier == 'prod')"
    );
    // A watch without a name is named by its default.
    assert_contains(
        &err(&with_watches(
            "  - { group: example.com, plural: widgets, version: v1, kind: Widget, filter: \"type ==\" }",
        )),
        "crbridge.yaml: watches[0].filter: watch \"widgets.example.com\": invalid CEL expression \"type ==\": line 1, column ",
    );
    assert_contains(
        &err(&with_watches(
            "  - { version: v1, kind: Pod, filter: \"\" }",
        )),
        "crbridge.yaml: watches[0].filter: watch \"pods\": invalid CEL expression \"\": ",
    );
    assert_eq!(
        err(&with_watches(
            "  - { version: v1, kind: Pod, filter: \"true\", filterErrors: skip }"
        )),
        r#"crbridge.yaml: watches[0].filterErrors: unknown value "skip" (expected one of: publish, drop)"#
    );
}

#[test]
fn filters_compile_once_with_the_config() {
    let config = ok(&with_watches(
        "  - { version: v1, kind: Pod, filter: \"object.spec.tier == 'prod'\", filterErrors: drop }\n  - { version: v1, kind: Node }",
    ));
    let (with, without) = (&config.watches[0], &config.watches[1]);
    assert_eq!(
        with.compiled_filter.as_ref().map(|f| f.source()),
        Some("object.spec.tier == 'prod'")
    );
    assert_eq!(with.filter_errors, crate::config::FilterErrors::Drop);
    assert!(without.filter.is_none() && without.compiled_filter.is_none());
    assert_eq!(without.filter_errors, crate::config::FilterErrors::Publish);
}

#[test]
fn redaction_needs_a_key_from_the_environment_or_a_file() {
    let redacting = "  - { version: v1, kind: Pod, redact: [/spec/password] }";
    assert_eq!(
        err(&with_watches(redacting)),
        "crbridge.yaml: watches[0].redact: needs the top-level redactKey (expected redactKey: env:NAME or file:/path, the HMAC key of redacted values)"
    );
    let with_key = |key: &str| {
        with_watches(redacting)
            .replace("cluster: c1\n", &format!("cluster: c1\nredactKey: {key}\n"))
    };
    assert_eq!(
        err(&with_key("s3cr3t-in-the-file")),
        "crbridge.yaml: redactKey: not a reference (expected env:NAME or file:/path: the key itself does not belong in the file)"
    );
    assert_eq!(
        err(&with_key("env:CRB_TEST_REDACT_KEY_UNSET")),
        "crbridge.yaml: redactKey: environment variable CRB_TEST_REDACT_KEY_UNSET is not set"
    );
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, "tiny\n").unwrap();
    let line = err(&with_key(&format!("file:{}", short.display())));
    assert_contains(
        &line,
        "holds 4 bytes (expected a secret of at least 16 bytes)",
    );
    assert!(!line.contains("tiny"), "{line}");
    let good = dir.path().join("key");
    std::fs::write(&good, "0123456789abcdef0123\n").unwrap();
    let config = ok(&with_key(&format!("file:{}", good.display())));
    assert_eq!(
        config.resolved_redact_key,
        Some(crate::redact::RedactKey::new(b"0123456789abcdef0123"))
    );
    assert_eq!(config.watches[0].redact, ["/spec/password"]);
    assert!(!format!("{config:?}").contains("0123456789abcdef"));
    assert_contains(
        &err(&with_key("env:X").replace("redact: [/spec/password]", "redact: [/metadata/*]")),
        "crbridge.yaml: watches[0].redact[0]: \"/metadata/*\" cannot be redacted (/metadata/uid identifies the object)",
    );
    assert_contains(
        &err(&with_watches(
            "  - { version: v1, kind: Pod, redact: [spec] }",
        )),
        "crbridge.yaml: watches[0].redact[0]: invalid JSON Pointer \"spec\"",
    );
}
