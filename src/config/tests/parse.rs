//! Whole files: the values and defaults a valid config yields, and reading a file.

use super::*;

#[test]
fn example_parses_with_expected_values() {
    let c = ok(EXAMPLE);
    assert_eq!(c.cluster, "prod-eu-1");
    let expected_kubeconfig = match std::env::var_os("HOME") {
        Some(home) => Path::new(&home).join(".kube/config"),
        None => PathBuf::from("~/.kube/config"),
    };
    assert_eq!(c.kubeconfig, Some(expected_kubeconfig));
    assert_eq!(c.state.path, PathBuf::from("/var/lib/crbridge"));
    assert_eq!(c.state.outbox.retention, Duration::from_secs(24 * 3600));
    assert_eq!(c.state.outbox.max_bytes, 2 * 1024 * 1024 * 1024);
    assert_eq!(c.state.cache_bytes, 64 * 1024 * 1024);
    assert_eq!(c.state.flush_every, Duration::from_millis(200));
    assert_eq!(c.http.listen, "0.0.0.0:9090".parse::<SocketAddr>().unwrap());
    let le = &c.leader_election;
    assert!(!le.enabled);
    assert_eq!(
        (le.namespace.as_str(), le.lease_name.as_str()),
        ("crbridge", "crbridge")
    );
    assert_eq!(
        (le.lease_duration, le.renew_deadline, le.retry_period),
        (
            Duration::from_secs(15),
            Duration::from_secs(10),
            Duration::from_secs(2)
        )
    );
    assert_eq!(c.event_type_prefix, "io.crbridge.resource");
    assert_eq!(
        crate::config::data_schema_uri(
            &c.data_schema,
            "c",
            "example.com",
            "v1",
            "Widget",
            "widgets"
        ),
        "urn:crbridge:schema:example.com:v1:Widget"
    );

    assert_eq!(c.watches.len(), 1);
    let w = &c.watches[0];
    assert_eq!(w.name, "widgets");
    assert_eq!(
        (w.group.as_str(), w.version.as_str(), w.kind.as_str()),
        ("example.com", "v1", "Widget")
    );
    assert_eq!(w.plural, None);
    assert_eq!(w.namespaces, ["team-a", "team-b"]);
    assert_eq!(w.label_selector.as_deref(), Some("tier=prod"));
    assert_eq!(w.field_selector, None);
    assert_eq!(w.events, ChangeType::ALL);
    assert_eq!(w.ignore, ["/spec/replicasHint"]);
    assert_eq!(w.include_status, StatusRule::Excluded);
    assert!(w.include.is_empty());
    assert_eq!(w.initial, InitialMode::Snapshot);
    assert_eq!(w.payload, PayloadMode::FullPatch);
    assert_eq!(w.sinks, ["kafka", "nats"]);

    assert_eq!(
        c.sinks.keys().collect::<Vec<_>>(),
        ["kafka", "nats", "rabbit"]
    );
    let kafka = &c.sinks["kafka"];
    assert_eq!(
        (kafka.name.as_str(), kafka.kind.as_str()),
        ("kafka", "kafka")
    );
    assert_eq!(
        kafka.raw,
        serde_json::json!({"type": "kafka", "brokers": "127.0.0.1:9092",
                           "topic": "crbridge.{group}.{plural}", "options": {}})
    );
    assert_eq!(c.sinks["nats"].raw["stream"], "CRBRIDGE");
    assert_eq!(c.sinks["rabbit"].kind, "amqp");
    assert_eq!(
        c.sinks["rabbit"].raw["routingKey"],
        "{group}.{kind}.{namespace}.{type}"
    );
}

#[test]
fn defaults_for_a_minimal_config() {
    let c = ok(&with_watches(
        "  - { group: example.com, version: v1, kind: Widget }",
    ));
    assert_eq!(c.kubeconfig, None);
    assert_eq!(c.http.listen, default_listen());
    assert_eq!(c.state.outbox.retention, Duration::from_secs(86_400));
    assert_eq!(c.state.outbox.max_bytes, 2 << 30);
    let w = &c.watches[0];
    assert_eq!(w.name, "widgets.example.com");
    assert_eq!(w.sinks, ["kafka", "nats"], "default: every sink");
    assert_eq!(w.events, ChangeType::ALL);
    assert!(w.namespaces.is_empty());
    assert_eq!(
        (w.initial, w.payload),
        (InitialMode::Snapshot, PayloadMode::FullPatch)
    );
}

#[test]
fn every_key_set_explicitly() {
    let c = ok(
        "cluster: a.b-1\nkubeconfig: /etc/kube.conf\neventTypePrefix: com.example.k8s\n\
         state: { path: /s, cacheBytes: 128MiB, flushEvery: 1s, outbox: { retention: 7d, maxBytes: 10GB } }\n\
         http: { listen: \"[::1]:8080\" }\n\
         leaderElection: { enabled: true, namespace: ops, leaseName: cr.lease, leaseDuration: 30s, renewDeadline: 20s, retryPeriod: 4s }\n\
         watches:\n  - { name: w_1, group: apps.example.com, version: v1beta1, kind: Thing, plural: things,\n      \
         namespaces: [a], labelSelector: 'x=y', fieldSelector: 'metadata.name=n', events: [deleted, created],\n      \
         ignore: ['/spec/a~1b', '/status/x'], includeStatus: true, initial: skip, payload: patch, sinks: [out] }\n\
         sinks:\n  out: { type: stdout }\n",
    );
    assert_eq!(c.kubeconfig, Some(PathBuf::from("/etc/kube.conf")));
    assert_eq!(c.event_type_prefix, "com.example.k8s");
    assert_eq!(c.state.cache_bytes, 128 << 20);
    assert_eq!(c.state.flush_every, Duration::from_secs(1));
    assert_eq!(c.state.outbox.retention, Duration::from_secs(7 * 86_400));
    assert_eq!(c.state.outbox.max_bytes, 10_000_000_000, "maxBytes alias");
    assert_eq!(c.http.listen.port(), 8080);
    let le = &c.leader_election;
    assert!(le.enabled);
    assert_eq!(
        (le.namespace.as_str(), le.lease_name.as_str()),
        ("ops", "cr.lease")
    );
    assert_eq!(le.retry_period, Duration::from_secs(4));
    let w = &c.watches[0];
    assert_eq!(w.name, "w_1");
    assert_eq!(w.plural.as_deref(), Some("things"));
    assert_eq!(w.field_selector.as_deref(), Some("metadata.name=n"));
    assert_eq!(w.events, [ChangeType::Deleted, ChangeType::Created]);
    assert_eq!(w.include_status, StatusRule::Included);
    assert_eq!(
        (w.initial, w.payload),
        (InitialMode::Skip, PayloadMode::Patch)
    );
    assert!(!w.payload.includes_object() && w.payload.includes_patch());
}

#[test]
fn unreadable_file() {
    let path = Path::new("/nonexistent/crbridge-config-test/crbridge.yaml");
    let line = load(path).unwrap_err().to_string();
    assert_contains(
        &line,
        "/nonexistent/crbridge-config-test/crbridge.yaml: cannot read: ",
    );
}

#[test]
fn load_reads_a_file() {
    let path =
        std::env::temp_dir().join(format!("crbridge-config-test-{}.yaml", std::process::id()));
    std::fs::write(&path, EXAMPLE).unwrap();
    let result = load(&path);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(result.unwrap().cluster, "prod-eu-1");
    let missing = load(&path).unwrap_err();
    assert!(matches!(missing, ConfigError::Read { .. }));
    assert_eq!(missing.file(), path.display().to_string());
    assert_eq!(missing.path(), None);
}
