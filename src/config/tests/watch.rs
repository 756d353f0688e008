//! `watches`: default names, spellings and the rules of one entry and across entries.

use super::*;

#[test]
fn default_watch_names() {
    let c = ok(&with_watches(
        "  - { group: example.com, version: v1, kind: Widget, plural: widgets }\n  \
         - { version: v1, kind: ConfigMap }\n  \
         - { group: \"\", version: v1, kind: Pod, plural: pods }\n  \
         - { group: , version: v1, kind: Secret }\n  \
         - { group: example.com, version: v1, kind: Widget, name: w }\n  \
         - { group: example.com, version: v1, kind: Gadget }\n  \
         - { group: example.com, version: v1, kind: Policy }\n  \
         - { group: example.com, version: v1, kind: Ingress }",
    ));
    let names: Vec<&str> = c.watches.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "widgets.example.com",
            "configmaps",
            "pods",
            "secrets",
            "w",
            "gadgets.example.com",
            "policies.example.com",
            "ingresses.example.com"
        ],
        "{{plural}}.{{group}}, the plural as the API server derives it when not written"
    );
    assert_eq!(c.watches[3].group, "", "null group means core");
    let legacy: Vec<Option<String>> = c.watches.iter().map(legacy_default_name).collect();
    assert_eq!(
        legacy,
        [
            None,
            Some("configmap".into()),
            None,
            Some("secret".into()),
            None,
            Some("gadget.example.com".into()),
            Some("policy.example.com".into()),
            Some("ingress.example.com".into())
        ],
        "the name earlier releases derived, where it differs"
    );
}

#[test]
fn payload_and_change_type_spellings() {
    for (text, mode) in [
        ("full", PayloadMode::Full),
        ("patch", PayloadMode::Patch),
        ("full+patch", PayloadMode::FullPatch),
    ] {
        let c = ok(&with_watches(&format!(
            "  - {{ version: v1, kind: Pod, payload: \"{text}\" }}"
        )));
        assert_eq!(c.watches[0].payload, mode);
        assert_eq!(mode.as_str(), text);
    }
    let names: Vec<&str> = ChangeType::ALL.iter().map(|t| t.as_str()).collect();
    assert_eq!(names, ["created", "updated", "deleted"]);
    assert_eq!(ChangeType::Updated.to_string(), "updated");
    assert_eq!(InitialMode::Skip.as_str(), "skip");
}

#[test]
fn unknown_sink_in_a_watch() {
    let line = err(&with_watches(
        "  - { version: v1, kind: Pod }\n  - { version: v1, kind: Secret, sinks: [kafak] }",
    ));
    assert_contains(
        &line,
        r#"crbridge.yaml: watches[1].sinks[0]: unknown sink "kafak" (defined sinks: kafka, nats)"#,
    );
    assert_contains(&line, "did you mean kafka?");
    assert_contains(
        &err(&with_watches(
            "  - { version: v1, kind: Pod, sinks: [kafka, kafka] }",
        )),
        r#"crbridge.yaml: watches[0].sinks[1]: duplicate sink "kafka""#,
    );
    assert_contains(
        &err(&with_watches("  - { version: v1, kind: Pod, sinks: [] }")),
        "crbridge.yaml: watches[0].sinks: empty list (expected sink names",
    );
}

#[test]
fn watch_rules() {
    let w = |watch: &str| err(&with_watches(&format!("  - {{ {watch} }}")));
    assert_contains(
        &w("group: Example.com, version: v1, kind: W"),
        r#"crbridge.yaml: watches[0].group: invalid API group "Example.com""#,
    );
    assert_contains(
        &w("group: example.com, version: example.com/v1, kind: W"),
        r#"crbridge.yaml: watches[0].version: "example.com/v1" contains "/" (expected only the version, e.g. v1"#,
    );
    assert_contains(
        &w("version: V1, kind: W"),
        r#"crbridge.yaml: watches[0].version: invalid API version "V1""#,
    );
    assert_contains(
        &w("version: v1, kind: ''"),
        "crbridge.yaml: watches[0].kind: empty (expected the resource kind",
    );
    assert_contains(
        &w("version: v1, kind: my-kind"),
        r#"crbridge.yaml: watches[0].kind: invalid kind "my-kind""#,
    );
    assert_contains(
        &w("version: v1, kind: W, plural: Ws"),
        r#"crbridge.yaml: watches[0].plural: invalid plural "Ws""#,
    );
    assert_contains(
        &w("name: '', version: v1, kind: W"),
        "crbridge.yaml: watches[0].name: empty (expected a watch name",
    );
    assert_contains(
        &w("name: 'a b', version: v1, kind: W"),
        r#"crbridge.yaml: watches[0].name: invalid watch name "a b""#,
    );
    assert_contains(
        &w("version: v1, kind: W, namespaces: [ok, Team_A]"),
        r#"crbridge.yaml: watches[0].namespaces[1]: invalid namespace "Team_A" (expected a DNS-1123 label"#,
    );
    assert_contains(
        &w("version: v1, kind: W, namespaces: [a, a]"),
        r#"crbridge.yaml: watches[0].namespaces[1]: duplicate namespace "a""#,
    );
    assert_contains(
        &w("version: v1, kind: W, events: [created, created]"),
        r#"crbridge.yaml: watches[0].events[1]: duplicate "created""#,
    );
    assert_contains(
        &w("version: v1, kind: W, events: []"),
        "crbridge.yaml: watches[0].events: empty list (expected some of: created, updated, deleted",
    );
}

#[test]
fn ignore_pointer_rules() {
    let w = |ignore: &str| {
        err(&with_watches(&format!(
            "  - {{ version: v1, kind: W, ignore: [{ignore}] }}"
        )))
    };
    assert_contains(
        &w("''"),
        r#"crbridge.yaml: watches[0].ignore[0]: invalid JSON Pointer "" (expected RFC 6901, starting with "/""#,
    );
    assert_contains(
        &w("spec/x"),
        r#"crbridge.yaml: watches[0].ignore[0]: invalid JSON Pointer "spec/x""#,
    );
    assert_contains(
        &w("/a~2b"),
        r#"invalid JSON Pointer "/a~2b" ("~" must be followed by 0 or 1"#,
    );
    assert_contains(&w("/a~"), r#"invalid JSON Pointer "/a~""#);
    for protected in [
        "/metadata/uid",
        "/metadata/name",
        "/metadata/namespace",
        "/metadata",
        "/kind",
    ] {
        assert_contains(
            &w(protected),
            &format!("crbridge.yaml: watches[0].ignore[0]: {protected:?} cannot be ignored"),
        );
    }
    assert_contains(
        &w("/spec/x, /spec/x"),
        r#"watches[0].ignore[1]: duplicate pointer "/spec/x""#,
    );
    let c = ok(&with_watches(
        "  - { version: v1, kind: W, ignore: ['/metadata/labels/x', '/metadata/names', '/'] }",
    ));
    assert_eq!(c.watches[0].ignore.len(), 3);
}

#[test]
fn wildcards_include_and_status_lists() {
    let w = |keys: &str| {
        err(&with_watches(&format!(
            "  - {{ version: v1, kind: W, {keys} }}"
        )))
    };
    // A wildcard that would drop an identifying field is refused like the field itself.
    assert_contains(
        &w("ignore: ['/metadata/*']"),
        r#"crbridge.yaml: watches[0].ignore[0]: "/metadata/*" cannot be ignored (/metadata/uid identifies the object)"#,
    );
    assert_contains(
        &w("ignore: ['/*']"),
        r#"watches[0].ignore[0]: "/*" cannot be ignored"#,
    );
    assert_contains(
        &w("include: [/spec, spec/x]"),
        r#"crbridge.yaml: watches[0].include[1]: invalid JSON Pointer "spec/x""#,
    );
    assert_contains(
        &w("include: [/status/phase]"),
        r#"crbridge.yaml: watches[0].include[0]: "/status/phase" is under /status, which includeStatus selects (e.g. includeStatus: [/status/phase])"#,
    );
    assert_contains(
        &w("include: [/spec, /spec]"),
        r#"watches[0].include[1]: duplicate pointer "/spec""#,
    );
    assert_contains(
        &w("includeStatus: [/spec/x]"),
        r#"crbridge.yaml: watches[0].includeStatus[0]: "/spec/x" is not under /status (expected e.g. /status/phase)"#,
    );
    assert_contains(
        &w("includeStatus: []"),
        "crbridge.yaml: watches[0].includeStatus: empty list (expected pointers under /status",
    );
    assert_contains(
        &w("includeStatus: ['/status/a~2']"),
        r#"watches[0].includeStatus[0]: invalid JSON Pointer "/status/a~2""#,
    );
    let c = ok(&with_watches(
        "  - { version: v1, kind: W, ignore: ['/status/conditions/*/lastHeartbeatTime', '/spec/*/x'],\n      include: ['/spec', '/metadata/labels'], includeStatus: ['/status/phase', '/status/conditions'] }",
    ));
    let w = &c.watches[0];
    assert_eq!(w.include, ["/spec", "/metadata/labels"]);
    assert_eq!(
        w.include_status,
        StatusRule::Only(vec!["/status/phase".into(), "/status/conditions".into()])
    );
    assert_eq!(w.ignore.len(), 2);
}

#[test]
fn fields_are_a_non_empty_list_of_pointers() {
    let w = |keys: &str| {
        err(&with_watches(&format!(
            "  - {{ version: v1, kind: W, {keys} }}"
        )))
    };
    assert_contains(
        &w("fields: []"),
        "crbridge.yaml: watches[0].fields: empty list (expected the pointers to publish",
    );
    assert_contains(
        &w("fields: [/spec, metadata/labels]"),
        r#"crbridge.yaml: watches[0].fields[1]: invalid JSON Pointer "metadata/labels""#,
    );
    assert_contains(
        &w("fields: [/spec, /spec]"),
        r#"crbridge.yaml: watches[0].fields[1]: duplicate pointer "/spec""#,
    );
    assert_contains(
        &w("fields: ['/spec/a~2']"),
        r#"watches[0].fields[0]: invalid JSON Pointer "/spec/a~2""#,
    );
    assert_contains(&w("fields: /spec"), "watches[0].fields");
    let c = ok(&with_watches(
        "  - { version: v1, kind: W, fields: [/metadata/labels, '/spec/*/name', /status/phase] }",
    ));
    assert_eq!(
        c.watches[0].fields,
        ["/metadata/labels", "/spec/*/name", "/status/phase"]
    );
    let c = ok(&with_watches("  - { version: v1, kind: W }"));
    assert!(c.watches[0].fields.is_empty());
}

#[test]
fn watch_names_must_be_unique() {
    let line = err(&with_watches(
        "  - { group: example.com, version: v1, kind: Widget }\n  - { group: example.com, version: v2, kind: Widget }",
    ));
    assert_contains(
        &line,
        r#"crbridge.yaml: watches[1].name: duplicate watch name "widgets.example.com" (the default from plural/kind and group), also used by watches[0]"#,
    );
    assert_contains(
        &err(&with_watches(
            "  - { name: a, version: v1, kind: Pod }\n  - { name: a, version: v1, kind: Secret }",
        )),
        r#"crbridge.yaml: watches[1].name: duplicate watch name "a", also used by watches[0]"#,
    );
}

#[test]
fn blank_selectors_mean_none() {
    let c = ok(&with_watches(
        "  - { version: v1, kind: W, labelSelector: '', fieldSelector: ' ' }",
    ));
    assert_eq!(
        (
            c.watches[0].label_selector.as_deref(),
            c.watches[0].field_selector.as_deref()
        ),
        (None, None)
    );
}

#[test]
fn a_whole_group_watch_is_named_by_its_group_and_checked() {
    let c = ok(&with_watches(
        "  - { group: example.com, version: v1, kind: \"*\", discoveryInterval: 5s }\n  \
         - { group: example.com, version: v1, kind: Widget }",
    ));
    assert_eq!(c.watches[0].name, "example.com");
    assert!(c.watches[0].is_group() && !c.watches[1].is_group());
    assert_eq!(c.watches[0].discovery_interval(), Duration::from_secs(5));
    assert_eq!(legacy_default_name(&c.watches[0]), None);
    let default = ok(&with_watches(
        "  - { group: example.com, version: v1, kind: \"*\" }",
    ));
    assert_eq!(
        default.watches[0].discovery_interval(),
        crate::config::DEFAULT_DISCOVERY_INTERVAL
    );

    for (watch, key, says) in [
        (
            "{ version: v1, kind: \"*\" }",
            "watches[0].kind",
            "needs a group",
        ),
        (
            "{ group: example.com, version: v1, kind: \"*\", plural: things }",
            "watches[0].plural",
            "not with kind: \"*\"",
        ),
        (
            "{ group: example.com, version: v1, kind: Widget, discoveryInterval: 5s }",
            "watches[0].discoveryInterval",
            "only for a whole-group watch",
        ),
        (
            "{ group: example.com, version: v1, kind: \"*\", discoveryInterval: 0s }",
            "watches[0].discoveryInterval",
            "zero",
        ),
        (
            "{ group: example.com, version: v1, kind: \"**\" }",
            "watches[0].kind",
            "invalid kind",
        ),
    ] {
        let e = err(&with_watches(&format!("  - {watch}")));
        assert_contains(&e, key);
        assert_contains(&e, says);
    }
}

#[test]
fn a_watch_argument_names_one_kind_of_a_whole_group_watch() {
    let c = ok(&with_watches(
        "  - { group: example.com, version: v1, kind: \"*\" }",
    ));
    assert_eq!(
        c.watch_arg_keys("example.com"),
        Some(vec!["example.com".into()])
    );
    assert_eq!(
        c.watch_arg_keys("example.com/gadgets"),
        Some(vec!["example.com/gadgets".into()])
    );
    assert_eq!(c.watch_arg_keys("example.com/"), None);
    assert_eq!(c.watch_arg_keys("other/gadgets"), None);
    let routed = c.sink_watches("nats");
    assert!(routed.contains("example.com/gadgets") && !routed.contains("gadgets"));
}
