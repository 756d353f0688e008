//! `sinks`: the rules of a section, and `sink_config` for the sink crates.

use super::*;

#[test]
fn sink_section_debug_hides_values() {
    let c = ok(EXAMPLE);
    let debug = format!("{:?}", c.sinks["rabbit"]);
    assert_contains(&debug, "\"url\"");
    assert!(!debug.contains("guest"), "{debug}");
}

#[test]
fn sink_section_rules() {
    let text = |sinks: &str| {
        format!("cluster: c\nstate: {{ path: /s }}\nwatches: [{{ version: v1, kind: Pod }}]\nsinks:\n{sinks}")
    };
    assert_eq!(
        err(&text("  kafka: { brokers: x }")),
        "crbridge.yaml: sinks.kafka.type: missing field (expected one of: kafka, nats, amqp, stdout)"
    );
    assert_eq!(
        err(&text("  k: { type: kafak }")),
        r#"crbridge.yaml: sinks.k.type: unknown sink type "kafak" (expected one of: kafka, nats, amqp, stdout); did you mean kafka?"#
    );
    assert_contains(
        &err(&text("  k: { type: 3 }")),
        "crbridge.yaml: sinks.k.type: wrong type: a number (expected one of: kafka,",
    );
    assert_contains(
        &err(&text("  Kafka: { type: kafka }")),
        r#"crbridge.yaml: sinks.Kafka: invalid sink name "Kafka" (expected lowercase letters, digits, '_' and '-')"#,
    );
    assert_contains(
        &err(&text("  \"my sink\": { type: kafka }")),
        r#"crbridge.yaml: sinks["my sink"]: invalid sink name "my sink""#,
    );
    assert_contains(
        &err(&text("  k: kafka")),
        "crbridge.yaml: sinks.k: wrong type: a string (expected a mapping with a type key",
    );
    assert_contains(
        &err(&text("  k: { type: stdout }\n  k: { type: kafka }")),
        r#"crbridge.yaml: sinks: duplicate sink "k""#,
    );
    assert_contains(
        &err(&text("  k: { type: kafka, topic: a, topic: b }")),
        r#"crbridge.yaml: sinks.k: duplicate key "topic""#,
    );
    assert_contains(
        &err(&text("  k: { type: kafka, options: { x: .inf } }")),
        "crbridge.yaml: sinks.k.options.x: number inf is not finite",
    );
    assert_contains(
        &err(&text("  k: { type: kafka, x: !tag 1 }")),
        "crbridge.yaml: sinks.k: tag !tag is not supported (expected a plain YAML value)",
    );
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KafkaTestConfig {
    brokers: String,
    topic: Template,
    #[serde(default)]
    options: BTreeMap<String, String>,
}

#[test]
fn sink_config_deserializes_without_type() {
    let c = ok(EXAMPLE);
    let kafka: KafkaTestConfig = sink_config(FILE, &c.sinks["kafka"]).unwrap();
    assert_eq!(kafka.brokers, "127.0.0.1:9092");
    assert_eq!(
        kafka.topic.vars().collect::<Vec<_>>(),
        [Var::Group, Var::Plural]
    );
    assert!(kafka.options.is_empty());
    // The original section still has its type.
    assert_eq!(c.sinks["kafka"].raw["type"], "kafka");
}

#[test]
fn sink_config_errors_have_sink_paths() {
    let c = ok(EXAMPLE);
    let line = sink_config::<KafkaTestConfig>(FILE, &c.sinks["nats"])
        .unwrap_err()
        .to_string();
    assert_eq!(
        line,
        "crbridge.yaml: sinks.nats.stream: unknown key (expected one of: brokers, topic, options)"
    );
    let mut section = c.sinks["kafka"].clone();
    section.raw["topic"] = "t.{grp}".into();
    let line = sink_config::<KafkaTestConfig>(FILE, &section)
        .unwrap_err()
        .to_string();
    assert_contains(&line, "crbridge.yaml: sinks.kafka.topic: unknown variable {grp} at character 3 (allowed variables: cluster,");
    section.raw["options"] = serde_json::json!({"acks": 1});
    section.raw["topic"] = "t".into();
    let line = sink_config::<KafkaTestConfig>(FILE, &section)
        .unwrap_err()
        .to_string();
    assert_eq!(
        line,
        "crbridge.yaml: sinks.kafka.options.acks: wrong type: integer `1` (expected a string)"
    );
    section.raw["options"] = serde_json::json!({});
    section.raw.as_object_mut().unwrap().remove("brokers");
    let line = sink_config::<KafkaTestConfig>(FILE, &section)
        .unwrap_err()
        .to_string();
    assert_eq!(line, "crbridge.yaml: sinks.kafka.brokers: missing field (expected a value: required by the kafka sink)");
}
