//! `crbridge schema` against the real API server: the JSON Schema it prints for a CRD that
//! uses every structural-schema extension validates the `data` of real events of every
//! type (snapshot, created, updated, deleted), read back from the real NATS JetStream, with
//! a third-party validator (Python's `jsonschema`, Draft 2020-12), and the events name it
//! in `dataschema`.

mod support;

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::{json, Value};
use support::bridge::{run_cli, Bridge};
use support::nats::Reader;

const WAIT: Duration = Duration::from_secs(30);

/// A Gadget CRD whose schema uses nullable, int-or-string, preserve-unknown-fields,
/// embedded-resource, defaults, maps, enums and exclusive bounds.
async fn gadget_crd(client: &kube::Client) -> support::TestCrd {
    let group = format!("{}.crbridge.test", support::unique("s"));
    let name = format!("gadgets.{group}");
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": "Gadget", "plural": "gadgets", "singular": "gadget", "listKind": "GadgetList"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["size"],
                            "properties": {
                                "size": {"type": "integer", "minimum": 0, "maximum": 100, "exclusiveMaximum": true},
                                "color": {"type": "string", "enum": ["red", "blue"], "default": "red"},
                                "port": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]},
                                "note": {"type": "string", "nullable": true},
                                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                                "template": {
                                    "type": "object",
                                    "x-kubernetes-embedded-resource": true,
                                    "x-kubernetes-preserve-unknown-fields": true
                                }
                            }
                        }
                    }
                }}
            }]
        }
    }))
    .unwrap();
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    api.create(&PostParams::default(), &crd)
        .await
        .unwrap_or_else(|e| panic!("creating CRD {name}: {e}"));
    support::eventually(&format!("CRD {name} to be Established"), WAIT, || async {
        let crd = api.get(&name).await.ok()?;
        crd.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
            .then_some(())
    })
    .await;
    support::TestCrd {
        group: group.clone(),
        version: "v1".into(),
        kind: "Gadget".into(),
        plural: "gadgets".into(),
        resource: ApiResource {
            group: group.clone(),
            version: "v1".into(),
            api_version: format!("{group}/v1"),
            kind: "Gadget".into(),
            plural: "gadgets".into(),
        },
    }
}

fn gadget(crd: &support::TestCrd, name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": crd.resource.api_version,
        "kind": "Gadget",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

/// Validates each of `instances` against `schema` with Python's `jsonschema`
/// (Draft202012Validator); returns one verdict per instance: `None` when valid, else the
/// validator's message.
fn validate(schema: &Value, instances: &[Value]) -> Vec<Option<String>> {
    const SCRIPT: &str = r#"
import json, sys
try:
    import jsonschema
except ImportError:
    sys.exit("python3 jsonschema is missing: pip install --user jsonschema (or apt-get install python3-jsonschema)")
doc = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(doc["schema"])
v = jsonschema.Draft202012Validator(doc["schema"])
out = []
for inst in doc["instances"]:
    errs = sorted(v.iter_errors(inst), key=lambda e: list(e.path))
    out.append(None if not errs else "; ".join(f"{list(e.path)}: {e.message}" for e in errs))
print(json.dumps(out))
"#;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("doc.json");
    std::fs::write(
        &file,
        serde_json::to_vec(&json!({"schema": schema, "instances": instances})).unwrap(),
    )
    .unwrap();
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(&file)
        .output()
        .expect("running python3");
    assert!(
        out.status.success(),
        "the validator failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("validator output")
}

#[tokio::test]
async fn events_of_every_type_validate_against_the_printed_schema() {
    let client = support::kube_client().await;
    let crd = gadget_crd(&client).await;
    let ns = support::namespace(&client, "schema").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &crd.resource);
    let stream = support::unique("CRBS").to_uppercase().replace('-', "_");
    let dir = tempfile::tempdir().unwrap();
    let cfg = support::nats_config(dir.path(), &crd, &ns, &stream);
    let cfg_path = dir.path().join("crbridge.yaml");
    std::fs::write(&cfg_path, &cfg).unwrap();

    let (status, schema_text, stderr) = run_cli(&[
        "schema",
        "-c",
        cfg_path.to_str().unwrap(),
        "--watch",
        "widgets",
    ]);
    assert!(status.success(), "crbridge schema failed: {stderr}");
    let schema: Value = serde_json::from_str(&schema_text).expect("the schema is JSON");
    let id = format!("urn:crbridge:schema:{}:v1:Gadget", crd.group);
    assert_eq!(schema["$id"], id.as_str());
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );

    // Before the first start: emitted as a snapshot.
    let full = json!({
        "size": 3, "port": "http", "note": null, "labels": {"a": "b"},
        "extra": {"anything": [1, {"goes": true}]},
        "template": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "t"}, "data": {"k": "v"}}
    });
    api.create(&PostParams::default(), &gadget(&crd, "pre", full))
        .await
        .unwrap();
    let mut bridge = Bridge::new(dir.path(), &cfg);
    bridge.start();
    bridge.wait_logged("list reconciled", WAIT).await;
    let mut reader = Reader::open(&stream).await;
    api.create(
        &PostParams::default(),
        &gadget(&crd, "g", json!({"size": 1, "port": 8080})),
    )
    .await
    .unwrap();
    api.patch(
        "g",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"size": 2, "note": "hi", "color": "blue"}})),
    )
    .await
    .unwrap();
    api.delete("g", &DeleteParams::default()).await.unwrap();
    let events = reader.take(4, WAIT).await;
    let changes: Vec<&str> = events.iter().map(|e| e.change()).collect();
    assert_eq!(changes, ["snapshot", "created", "updated", "deleted"]);
    for e in &events {
        assert_eq!(e.attr("dataschema"), id, "dataschema of {}", e.change());
    }
    let data: Vec<Value> = events.iter().map(|e| e.data.clone()).collect();
    let verdicts = validate(&schema, &data);
    for (e, verdict) in events.iter().zip(&verdicts) {
        assert_eq!(
            verdict,
            &None,
            "{} event does not validate: {}",
            e.change(),
            e.data
        );
    }

    // The schema has teeth: what the CRD forbids, it rejects.
    let mut bad = Vec::new();
    for (pointer, value) in [
        ("/object/spec/size", json!(100)),
        ("/object/spec/size", json!("2")),
        ("/object/spec/port", json!(1.5)),
        ("/object/spec/color", json!("green")),
        ("/object/spec/template/kind", json!(7)),
        ("/object/metadata/uid", json!(null)),
    ] {
        let mut d = data[0].clone();
        *d.pointer_mut(pointer)
            .unwrap_or_else(|| panic!("{pointer}")) = value;
        bad.push(d);
    }
    let mut d = data[2].clone();
    d["patch"] = json!([{"op": "jump", "path": "/spec"}]);
    bad.push(d);
    for (d, verdict) in bad.iter().zip(validate(&schema, &bad)) {
        assert!(verdict.is_some(), "accepted: {d}");
    }
    bridge.stop().await;
}

#[tokio::test]
async fn a_core_kind_gets_a_permissive_schema_and_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let core = support::TestCrd {
        group: String::new(),
        version: "v1".into(),
        kind: "ConfigMap".into(),
        plural: "configmaps".into(),
        resource: ApiResource {
            group: String::new(),
            version: "v1".into(),
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            plural: "configmaps".into(),
        },
    };
    let sinks = "  out:\n    type: stdout\n";
    let cfg = support::config_with_sinks(dir.path(), &core, "default", &["out"], sinks, "");
    let cfg_path = dir.path().join("crbridge.yaml");
    std::fs::write(&cfg_path, &cfg).unwrap();
    let path = cfg_path.to_str().unwrap();
    let (status, out, err) = run_cli(&["schema", "-c", path, "--watch", "widgets"]);
    assert!(status.success(), "{err}");
    assert!(
        err.contains("no CustomResourceDefinition describes this kind"),
        "{err}"
    );
    let schema: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(schema["$id"], "urn:crbridge:schema::v1:ConfigMap");
    let object = &schema["$defs"]["object"];
    assert_eq!(
        object["required"],
        json!(["apiVersion", "kind", "metadata"])
    );

    let (status, _, err) = run_cli(&["schema", "-c", path, "--watch", "nope"]);
    assert!(!status.success());
    assert!(
        err.contains(r#"unknown watch "nope" (configured: widgets)"#),
        "{err}"
    );
}
