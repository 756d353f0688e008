//! `crbridge schema` (and the payloads of `crbridge asyncapi`): the JSON Schema of `data`
//! per watched kind, read from the kind's CustomResourceDefinition in the cluster.
//!
//! A kind without a CRD (a core kind such as ConfigMap, or a kind served by an aggregated
//! API server) gets a permissive schema: `apiVersion`, `kind` and `metadata` described,
//! the rest open, and a note on stderr says so. A watch of every kind of a group (`kind:
//! "*"`) has a schema per kind its group serves now, each from that kind's CRD.

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
    /// The kind.
    pub kind: String,
    /// The kind's plural (as written, else from discovery).
    pub plural: String,
    /// True for one kind of a whole-group watch (`kind: "*"`).
    pub of_group: bool,
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
/// cluster: one per kind, so a whole-group watch gives one per kind its group serves now
/// (`{watch}/{plural}` in `only` names one of them). An unknown name is an error naming the
/// configured ones.
pub async fn kind_schemas(cfg: &Config, only: &[&str]) -> anyhow::Result<Vec<KindSchema>> {
    let named = |w: &WatchConfig, plural: Option<&str>| {
        only.is_empty()
            || only.iter().any(|n| {
                *n == w.name
                    || (w.is_group()
                        && n.split_once('/')
                            .is_some_and(|(wn, p)| wn == w.name && plural.is_none_or(|x| x == p)))
            })
    };
    for name in only {
        if !cfg.watches.iter().any(|w| {
            w.name == *name
                || (w.is_group() && name.split_once('/').is_some_and(|(wn, _)| wn == w.name))
        }) {
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
    for w in cfg.watches.iter().filter(|w| named(w, None)) {
        if !w.is_group() {
            let plural = match &w.plural {
                Some(p) => p.clone(),
                None => crate::plan::resolve(&client, w).await?.resource.plural,
            };
            out.push(kind_schema(cfg, &client, w, &w.kind, &plural, false).await?);
            continue;
        }
        let kinds = crate::watch::discover_group(&client, &w.group, &w.version)
            .await
            .with_context(|| {
                format!(
                    "watch {}: discovering the kinds of {}/{}",
                    w.name, w.group, w.version
                )
            })?;
        let before = out.len();
        for k in kinds
            .iter()
            .filter(|k| named(w, Some(&k.found.resource.plural)))
        {
            out.push(kind_schema(cfg, &client, w, &k.kind, &k.found.resource.plural, true).await?);
        }
        if out.len() == before && !only.is_empty() {
            let served: Vec<&str> = kinds
                .iter()
                .map(|k| k.found.resource.plural.as_str())
                .collect();
            anyhow::bail!(
                "watch {}: no such kind served by {}/{} now (served: {})",
                w.name,
                w.group,
                w.version,
                if served.is_empty() {
                    "none".to_owned()
                } else {
                    served.join(", ")
                }
            );
        }
    }
    Ok(out)
}

async fn kind_schema(
    cfg: &Config,
    client: &Client,
    w: &WatchConfig,
    kind: &str,
    plural: &str,
    of_group: bool,
) -> anyhow::Result<KindSchema> {
    let plural = plural.to_owned();
    let crd = if w.group.is_empty() {
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
        kind,
        &plural,
    );
    let schema = schema::data_schema(
        &DataSchemaInfo {
            id: &dataschema,
            group: &w.group,
            version: &w.version,
            kind,
            payload: w.payload,
        },
        object,
    );
    Ok(KindSchema {
        watch: w.name.clone(),
        kind: kind.to_owned(),
        plural,
        of_group,
        dataschema,
        schema,
        from_crd,
    })
}
