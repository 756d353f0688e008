//! `crbridge asyncapi`: the AsyncAPI 3.0 document of the whole config (`crate::asyncapi`),
//! with the payload schemas read from the cluster (`super::schema`).

use std::process::ExitCode;

use crate::config::Config;

/// Prints the document (JSON, pretty).
pub async fn run(cfg: &Config) -> anyhow::Result<ExitCode> {
    let schemas = super::schema::kind_schemas(cfg, &[]).await?;
    let doc = crate::asyncapi::document(cfg, &schemas, env!("CARGO_PKG_VERSION"));
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(ExitCode::SUCCESS)
}
