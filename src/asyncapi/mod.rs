//! The AsyncAPI 3.0 document of a whole config: pure, no I/O (`crbridge asyncapi` reads the
//! schemas from the cluster and hands them in).
//!
//! * A **server** per sink (`kafka`, `nats`, `amqp`; a `stdout` sink has no broker). A URL
//!   given as `env:` / `file:` becomes a server variable, and credentials in a URL are never
//!   copied.
//! * A **channel** per watch and sink: the sink's topic / subject / routing-key template with
//!   the watch's own values filled in (escaped as the sink escapes them) and the
//!   per-object variables (`{namespace}`, `{name}`, `{type}`) left as channel parameters.
//!   AMQP adds the exchange in its channel binding; Kafka names the record key (uid).
//! * A **message** per channel: in binary mode the CloudEvents attributes as headers with
//!   the binding's prefix (`ce_`, `ce-`, `cloudEvents:`) and `data` as payload; in
//!   structured mode one `application/cloudevents+json` payload with `data` inside.
//! * The payload schemas are the ones of `crbridge schema` (`crate::schema`), their `$defs`
//!   moved under `components.schemas`.
//! * An **operation** (`send`) per channel.

use serde_json::{json, Map, Value};

use crate::cmd::schema::KindSchema;
use crate::config::{Config, SinkSection, Template, Var};

/// The CloudEvents attributes every event carries as binary-mode headers (`true`: always
/// present).
const ATTRIBUTES: &[(&str, bool)] = &[
    ("specversion", true),
    ("id", true),
    ("source", true),
    ("type", true),
    ("subject", true),
    ("time", true),
    ("dataschema", true),
    ("partitionkey", true),
    ("sequence", true),
    ("crbgroup", true),
    ("crbversion", true),
    ("crbkind", true),
    ("crbnamespace", true),
    ("crbname", true),
    ("crbuid", true),
    ("crbgeneration", false),
    ("crbinferred", true),
    ("crbchangedby", false),
];

/// A key usable in `channels`, `operations` and `components` (`^[A-Za-z0-9_\-]+$`).
fn key(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn str_of<'a>(section: &'a SinkSection, name: &str) -> Option<&'a str> {
    section.raw.get(name).and_then(Value::as_str)
}

/// The AsyncAPI 3.0 document for `cfg`, with the payload schemas of its watches.
pub fn document(cfg: &Config, schemas: &[KindSchema], version: &str) -> Value {
    let mut servers = Map::new();
    let mut channels = Map::new();
    let mut operations = Map::new();
    let mut components = Map::new();
    for section in cfg.sinks.values() {
        if let Some(server) = server(section) {
            servers.insert(key(&section.name), server);
        }
    }
    for k in schemas {
        // A whole-group watch has a schema and a channel per kind.
        let name = if k.of_group {
            format!("{}/{}", k.watch, k.plural)
        } else {
            k.watch.clone()
        };
        let wkey = key(&name);
        add_schemas(&mut components, &wkey, &k.schema);
        let Some(w) = cfg.watches.iter().find(|w| w.name == k.watch) else {
            continue;
        };
        for sink in &w.sinks {
            let Some(section) = cfg.sinks.get(sink) else {
                continue;
            };
            if !servers.contains_key(&key(sink)) {
                continue;
            }
            let per_kind = |var: Var| -> Option<String> {
                Some(match var {
                    Var::Cluster => cfg.cluster.clone(),
                    Var::Group => w.group.clone(),
                    Var::Version => w.version.clone(),
                    Var::Kind => k.kind.clone(),
                    Var::Plural => k.plural.clone(),
                    _ => return None,
                })
            };
            let ckey = format!("{wkey}__{}", key(sink));
            let Some(channel) = channel(section, &wkey, &per_kind, &k.watch) else {
                continue;
            };
            channels.insert(ckey.clone(), channel);
            operations.insert(
                format!("send__{ckey}"),
                json!({
                    "action": "send",
                    "title": format!("publish the changes of watch {} to sink {sink}", k.watch),
                    "channel": {"$ref": format!("#/channels/{ckey}")},
                    "messages": [{"$ref": format!("#/channels/{ckey}/messages/event")}],
                }),
            );
        }
    }
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": format!("crbridge events of cluster {}", cfg.cluster),
            "version": version,
            "description": "Changes of Kubernetes resources as CloudEvents 1.0, one channel per watch and sink. Deduplicate by `id`; per object (`partitionkey`) ignore an event whose `sequence` is not newer than the last applied.",
        },
        "defaultContentType": "application/json",
        "servers": servers,
        "channels": channels,
        "operations": operations,
        "components": {"schemas": components},
    })
}

/// The server of a sink; `None` for a sink without a broker.
fn server(section: &SinkSection) -> Option<Value> {
    let (protocol, url) = match section.kind.as_str() {
        "kafka" => ("kafka", str_of(section, "brokers")?),
        "nats" => ("nats", str_of(section, "url")?),
        "amqp" => (
            if str_of(section, "url").is_some_and(|u| u.starts_with("amqps:")) {
                "amqps"
            } else {
                "amqp"
            },
            str_of(section, "url")?,
        ),
        _ => return None,
    };
    if url.starts_with("env:") || url.starts_with("file:") {
        return Some(json!({
            "host": "{host}",
            "protocol": protocol,
            "description": format!("sink {}: the address comes from {url}", section.name),
            "variables": {"host": {"description": format!("host[:port] of the broker ({url})")}},
        }));
    }
    // First of a comma-separated list; no scheme, no credentials, no path.
    let first = url.split(',').next().unwrap_or(url).trim();
    let no_scheme = first.split_once("://").map_or(first, |(_, rest)| rest);
    let no_user = no_scheme
        .rsplit_once('@')
        .map_or(no_scheme, |(_, host)| host);
    let host = no_user.split('/').next().unwrap_or(no_user);
    Some(json!({
        "host": host,
        "protocol": protocol,
        "description": format!("sink {}", section.name),
    }))
}

/// Escapes a value as the sink does in its addresses.
fn escape(kind: &str, value: &str) -> String {
    match kind {
        "kafka" if value.is_empty() => "_".to_owned(),
        "kafka" => value
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect(),
        _ => crbridge_sink_api::template::escape_token(value).into_owned(),
    }
}

/// One watch's channel on one sink.
fn channel(
    section: &SinkSection,
    wkey: &str,
    per_kind: &dyn Fn(Var) -> Option<String>,
    watch: &str,
) -> Option<Value> {
    let kind = section.kind.as_str();
    let template_key = match kind {
        "kafka" => "topic",
        "nats" => "subject",
        "amqp" => "routingKey",
        _ => return None,
    };
    let template: Template = str_of(section, template_key)?.parse().ok()?;
    let mut parameters = Map::new();
    let address = template.render(&|var| match per_kind(var) {
        Some(value) => escape(kind, &value),
        // Per object: an AsyncAPI channel parameter of the same name.
        None => format!("{{{}}}", var.as_str()),
    });
    for var in template.vars().filter(|v| per_kind(*v).is_none()) {
        let p = match var {
            Var::Type => {
                json!({"enum": ["created", "updated", "deleted", "snapshot"], "description": "the change"})
            }
            Var::Namespace => {
                json!({"description": "the object's namespace, escaped as the sink escapes values (`_` for cluster-scoped objects)"})
            }
            _ => json!({"description": "the object's name, escaped as the sink escapes values"}),
        };
        parameters.insert(var.as_str().to_owned(), p);
    }
    let structured = str_of(section, "mode") == Some("structured");
    let prefix = match kind {
        "kafka" => "ce_".to_owned(),
        "nats" => "ce-".to_owned(),
        _ => str_of(section, "headerPrefix")
            .unwrap_or("cloudEvents:")
            .to_owned(),
    };
    let data_ref = json!({"$ref": format!("#/components/schemas/{wkey}_data")});
    let mut message = if structured {
        let mut props = Map::new();
        let mut required = vec![json!("datacontenttype"), json!("data")];
        for (name, always) in ATTRIBUTES {
            let schema = if *name == "crbinferred" {
                json!({"type": "boolean"})
            } else {
                json!({"type": "string"})
            };
            props.insert((*name).to_owned(), schema);
            if *always {
                required.push(json!(name));
            }
        }
        props.insert(
            "datacontenttype".into(),
            json!({"const": "application/json"}),
        );
        props.insert("data".into(), data_ref);
        json!({
            "name": "event",
            "title": format!("a change of watch {watch} (CloudEvents structured mode)"),
            "contentType": "application/cloudevents+json",
            "payload": {"type": "object", "required": required, "properties": props},
        })
    } else {
        let mut props = Map::new();
        let mut required = Vec::new();
        for (name, always) in ATTRIBUTES {
            let header = format!("{prefix}{name}");
            props.insert(header.clone(), json!({"type": "string"}));
            if *always {
                required.push(json!(header));
            }
        }
        json!({
            "name": "event",
            "title": format!("a change of watch {watch} (CloudEvents binary mode)"),
            "contentType": "application/json",
            "headers": {"type": "object", "required": required, "properties": props},
            "payload": data_ref,
        })
    };
    let mut bindings = Map::new();
    match kind {
        "kafka" => {
            message["bindings"] = json!({"kafka": {
                "key": {"type": "string", "description": "the object's uid: one partition per object, in order"},
                "bindingVersion": "0.5.0"
            }});
        }
        "amqp" => {
            let exchange_type = str_of(section, "exchangeType").unwrap_or("topic");
            bindings.insert(
                "amqp".into(),
                json!({
                    "is": "routingKey",
                    "exchange": {"name": str_of(section, "exchange").unwrap_or_default(), "type": exchange_type, "durable": true, "autoDelete": false},
                    "bindingVersion": "0.3.0"
                }),
            );
        }
        _ => {}
    }
    let mut channel = json!({
        "address": address,
        "title": format!("watch {watch} on sink {}", section.name),
        "servers": [{"$ref": format!("#/servers/{}", key(&section.name))}],
        "messages": {"event": message},
    });
    if !parameters.is_empty() {
        channel["parameters"] = Value::Object(parameters);
    }
    if !bindings.is_empty() {
        channel["bindings"] = Value::Object(bindings);
    }
    Some(channel)
}

/// `schema`'s document as `{wkey}_data` plus its `$defs` as `{wkey}_{def}` (references
/// rewritten), in the default AsyncAPI schema format (a JSON Schema draft-07 superset).
fn add_schemas(components: &mut Map<String, Value>, wkey: &str, schema: &Value) {
    let mut data = schema.clone();
    if let Value::Object(m) = &mut data {
        m.remove("$schema");
        m.remove("$id");
        if let Some(Value::Object(defs)) = m.remove("$defs") {
            for (name, def) in defs {
                let mut def = def;
                rewrite(&mut def, wkey);
                components.insert(format!("{wkey}_{name}"), def);
            }
        }
    }
    rewrite(&mut data, wkey);
    components.insert(format!("{wkey}_data"), data);
}

/// Rewrites, in the schema `v`, `#/$defs/x` references to `#/components/schemas/{wkey}_x`
/// and boolean `true` subschemas to `{}` (the same meaning, in the object form every
/// AsyncAPI tool reads).
fn rewrite(v: &mut Value, wkey: &str) {
    if *v == Value::Bool(true) {
        *v = json!({});
        return;
    }
    let Value::Object(m) = v else { return };
    if let Some(Value::String(r)) = m.get_mut("$ref") {
        if let Some(name) = r.strip_prefix("#/$defs/") {
            *r = format!("#/components/schemas/{wkey}_{name}");
        }
    }
    for (k, child) in m.iter_mut() {
        match (k.as_str(), child) {
            ("properties", Value::Object(props)) => {
                props.values_mut().for_each(|p| rewrite(p, wkey));
            }
            ("items" | "additionalProperties" | "not", child) => rewrite(child, wkey),
            ("allOf" | "anyOf" | "oneOf", Value::Array(list)) => {
                list.iter_mut().for_each(|c| rewrite(c, wkey));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defs_move_to_components_and_true_becomes_an_empty_schema() {
        let mut components = Map::new();
        let schema = json!({
            "$schema": crate::schema::DIALECT, "$id": "urn:x",
            "properties": {"object": {"$ref": "#/$defs/object"}},
            "$defs": {"object": {"type": "object"}, "operation": {"properties": {"value": true}}}
        });
        add_schemas(&mut components, "widgets", &schema);
        assert_eq!(
            components["widgets_data"],
            json!({"properties": {"object": {"$ref": "#/components/schemas/widgets_object"}}})
        );
        assert_eq!(components["widgets_object"], json!({"type": "object"}));
        assert_eq!(
            components["widgets_operation"],
            json!({"properties": {"value": {}}})
        );
        assert_eq!(key("widgets.example.com"), "widgets_example_com");
    }

    #[test]
    fn servers_never_copy_credentials() {
        let section = |kind: &str, raw: Value| SinkSection {
            name: "s".into(),
            kind: kind.into(),
            raw,
        };
        let s = server(&section(
            "amqp",
            json!({"url": "amqps://u:pw@rabbit:5671/%2f"}),
        ))
        .unwrap();
        assert_eq!(s["host"], "rabbit:5671");
        assert_eq!(s["protocol"], "amqps");
        let s = server(&section("nats", json!({"url": "env:NATS_URL"}))).unwrap();
        assert_eq!(s["host"], "{host}");
        assert!(server(&section("stdout", json!({}))).is_none());
    }
}
