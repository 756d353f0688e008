//! `crbridge status`.

use std::process::ExitCode;

use anyhow::{bail, Context};

use super::{target, Output, Target};
use crate::config::Config;
use crate::status::{collect, render, Status};

/// Prints the status.
pub async fn run(config: &Config, output: Output) -> anyhow::Result<ExitCode> {
    let status: Status = match target(config)? {
        Target::Stopped(store) => collect(&store, config, false)?,
        Target::Running(endpoint) => {
            let mut body = String::new();
            let code = endpoint
                .request("GET", "/admin/status", None, &mut |l| {
                    body.push_str(l);
                    body.push('\n');
                })
                .await?;
            if code != 200 {
                bail!("admin endpoint answered {code}: {}", body.trim());
            }
            serde_json::from_str(&body).context("reading the admin endpoint's status")?
        }
    };
    match output {
        Output::Text => print!("{}", render(&status)),
        Output::Json => println!("{}", serde_json::to_string_pretty(&status)?),
    }
    Ok(ExitCode::SUCCESS)
}
