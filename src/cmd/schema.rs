//! `crbridge schema` (and the payloads of `crbridge asyncapi`): the JSON Schema of `data`
//! per watched kind, read from the kind's CustomResourceDefinition in the cluster.
//!
//! A kind without a CRD (a core kind such as ConfigMap, or a kind served by an aggregated
//! API server) gets a permissive schema: `apiVersion`, `kind` and `metadata` described,
//! the rest open, and a note on stderr says so. A watch of every kind of a group (`kind:
//! "*"`) gets the same.

use std::process::ExitCode;

use anyhow::Context;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, Client};
use serde_json::Value;

use crate::config::{self, Config, WatchConfig};
use crate::schema::{self, DataSchemaInfo};

/// The schema of one watch's events.
#[derive(Debug, Clone)]
pub struct KindSchema {
    /// The watch's name.
    pub watch: String,
    /// The kind's plural (as written, else from discovery; `*` for every kind of a group).
    pub plural: String,
    /// The `dataschema` URI its events carry (the schema's `$id`).
    pub dataschema: String,
    /// The JSON Schema 2020-12 document of `data`.
    pub schema: Value,
    /// False when no CRD described the kind (the permissive schema).
    pub from_crd: bool,
}

/// `crbridge schema --watch W`: prints W's schema (JSON, pretty), with a note on stderr
/// when no CRD describes the kind.
pub async fn run(cfg: &Config, watch: &str) -> anyhow::Result<ExitCode> {
    for k in kind_schemas(cfg, &[watch]).await? {
        if !k.from_crd {
            eprintln!(
                "crbridge: note: watch {}: no CustomResourceDefinition describes this kind (a built-in kind?); the schema describes apiVersion, kind and metadata and leaves the rest open",
                k.watch
            );
        }
        println!("{}", serde_json::to_string_pretty(&k.schema)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// The schemas of the watches named in `only` (all when empty), read from the home
/// cluster. An unknown watch name is an error naming the configured ones.
pub async fn kind_schemas(cfg: &Config, only: &[&str]) -> anyhow::Result<Vec<KindSchema>> {
    for name in only {
        if !cfg.watches.iter().any(|w| w.name == *name) {
            let known: Vec<&str> = cfg.watches.iter().map(|w| w.name.as_str()).collect();
            anyhow::bail!("unknown watch {name:?} (configured: {})", known.join(", "));
        }
    }
    let home = cfg
        .clusters
        .iter()
        .find(|c| c.name == cfg.cluster)
        .or(cfg.clusters.first())
        .context("no cluster configured")?;
    let client = crate::cluster::client_for(home).await?;
    let mut out = Vec::new();
    for w in cfg
        .watches
        .iter()
        .filter(|w| only.is_empty() || only.contains(&w.name.as_str()))
    {
        out.push(kind_schema(cfg, &client, w).await?);
    }
    Ok(out)
}

async fn kind_schema(cfg: &Config, client: &Client, w: &WatchConfig) -> anyhow::Result<KindSchema> {
    let wildcard = w.kind == "*";
    let plural = match (&w.plural, wildcard) {
        (Some(p), _) => p.clone(),
        (None, true) => "*".to_owned(),
        (None, false) => crate::plan::resolve(client, w).await?.resource.plural,
    };
    let crd = if wildcard || w.group.is_empty() {
        None
    } else {
        let name = format!("{plural}.{}", w.group);
        Api::<CustomResourceDefinition>::all(client.clone())
            .get_opt(&name)
            .await
            .with_context(|| format!("watch {}: reading CustomResourceDefinition {name}", w.name))?
    };
    let (object, from_crd) = match crd {
        Some(crd) => {
            let crd = serde_json::to_value(&crd).context("serializing the CRD")?;
            let openapi = schema::crd_version_schema(&crd, &w.version)
                .with_context(|| format!("watch {}: CRD {plural}.{}", w.name, w.group))?;
            (schema::object_schema(openapi), true)
        }
        None => (schema::permissive_object_schema(), false),
    };
    let dataschema = config::data_schema_uri(
        &cfg.data_schema,
        &cfg.cluster,
        &w.group,
        &w.version,
        &w.kind,
        &plural,
    );
    let schema = schema::data_schema(
        &DataSchemaInfo {
            id: &dataschema,
            group: &w.group,
            version: &w.version,
            kind: &w.kind,
            payload: w.payload,
        },
        object,
    );
    Ok(KindSchema {
        watch: w.name.clone(),
        plural,
        dataschema,
        schema,
        from_crd,
    })
}
