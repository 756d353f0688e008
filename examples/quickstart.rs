//! The quick start, in one command: `cargo run --example quickstart`.
//!
//! Brings up the local servers (`deploy/local/up`), builds and starts `crbridge run -c
//! examples/crbridge.yaml`, installs the example Widget CRD, makes a few changes (one of them
//! status-only noise) and prints the CloudEvents as a NATS JetStream consumer receives them.

use std::process::{Command, Stdio};
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

fn local_env(name: &str) -> String {
    let text = std::fs::read_to_string("deploy/local/env").expect("deploy/local/env");
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .unwrap_or_else(|| panic!("{name} missing from deploy/local/env"))
}

fn step(what: &str) {
    println!("\n== {what}");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    step("starting the local servers (deploy/local/up)");
    anyhow::ensure!(
        Command::new("deploy/local/up").status()?.success(),
        "deploy/local/up failed"
    );
    let kubeconfig = local_env("KUBECONFIG");
    std::env::set_var("KUBECONFIG", &kubeconfig);

    step("building crbridge");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    anyhow::ensure!(
        Command::new(cargo)
            .args(["build", "--quiet", "--bin", "crbridge"])
            .status()?
            .success(),
        "cargo build failed"
    );

    step("installing the Widget CRD and namespace `quickstart`");
    let client = Client::try_default().await?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition =
        serde_saphyr::from_str(&std::fs::read_to_string("examples/widget-crd.yaml")?)?;
    if crds.get_opt("widgets.example.com").await?.is_none() {
        crds.create(&PostParams::default(), &crd).await?;
    }
    for _ in 0..100 {
        let c = crds.get("widgets.example.com").await?;
        let ok = c
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if ok {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if namespaces.get_opt("quickstart").await?.is_none() {
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": "quickstart"}}))?,
            )
            .await?;
    }

    step("crbridge run -c examples/crbridge.yaml");
    let mut bridge = Command::new("target/debug/crbridge")
        .args(["run", "-c", "examples/crbridge.yaml"])
        .env("KUBECONFIG", &kubeconfig)
        .stderr(Stdio::inherit())
        .spawn()?;

    let js = jetstream::new(async_nats::connect(local_env("CRBRIDGE_NATS_URL")).await?);
    let stream = loop {
        if let Ok(s) = js.get_stream("CRBRIDGE_QUICKSTART").await {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let consumer = stream
        .create_consumer(consumer::push::OrderedConfig {
            deliver_subject: format!("_INBOX.quickstart.{}", std::process::id()),
            deliver_policy: consumer::DeliverPolicy::New,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;

    step("changing widgets: create, update, status-only update (noise), delete");
    let ar = ApiResource {
        group: "example.com".into(),
        version: "v1".into(),
        api_version: "example.com/v1".into(),
        kind: "Widget".into(),
        plural: "widgets".into(),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client, "quickstart", &ar);
    let name = format!("demo-{}", std::process::id());
    let pp = PatchParams {
        field_manager: Some("quickstart".into()),
        ..Default::default()
    };
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": name}, "spec": {"size": 1, "color": "blue"}
        }))?,
    )
    .await?;
    api.patch(&name, &pp, &Patch::Merge(json!({"spec": {"size": 2}})))
        .await?;
    api.patch_status(
        &name,
        &pp,
        &Patch::Merge(json!({"status": {"phase": "Ready"}})),
    )
    .await?;
    api.patch(
        &name,
        &pp,
        &Patch::Merge(json!({"spec": {"replicasHint": 7}})),
    )
    .await?;
    api.delete(&name, &DeleteParams::default()).await?;

    step("events received from NATS JetStream (3 expected: the noise was suppressed)");
    for _ in 0..3 {
        let m = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("consumer ended"))??;
        let h = m.headers.clone().unwrap_or_default();
        let get = |k: &str| h.get(k).map(|v| v.to_string()).unwrap_or_default();
        let data: serde_json::Value = serde_json::from_slice(&m.payload)?;
        println!(
            "{:<34} {:<28} id={} rv={} patch={}",
            get("ce-type"),
            get("ce-subject"),
            get("ce-id"),
            // `sequence` is the resourceVersion zero-padded to 20 digits.
            get("ce-sequence").trim_start_matches('0'),
            data["patch"]
        );
    }

    step("stopping crbridge (SIGTERM)");
    Command::new("kill")
        .args(["-TERM", &bridge.id().to_string()])
        .status()?;
    bridge.wait()?;
    Ok(())
}
