//! The operator commands `status`, `replay`, `snapshot`, `deadletters` and `tail`. All but
//! `tail` work on a stopped instance (opening its state directory) and on a running one
//! (through its admin endpoint on `admin.listen`, with the token the instance wrote into its
//! state directory or `admin.tokenFile`, since sled allows one process per state directory).
//! The contract commands `schema` and `asyncapi` read only the config and the cluster.

pub mod asyncapi;
pub mod deadletters;
pub mod replay;
pub mod schema;
pub mod snapshot;
pub mod status;
pub mod tail;

use std::net::SocketAddr;

use anyhow::{bail, Context};

use crate::admin::auth::AdminToken;
use crate::config::Config;
use crate::store::{Store, StoreOptions};

/// Where the state is reached.
pub enum Target {
    /// No process holds the state directory: it is open here.
    Stopped(Store),
    /// A running crbridge holds it: its admin endpoint.
    Running(Endpoint),
}

/// The admin endpoint of a running instance and the token it accepts.
pub struct Endpoint {
    /// Where it listens, as reached from this host.
    pub addr: SocketAddr,
    /// The bearer token.
    pub token: AdminToken,
}

impl Endpoint {
    /// Sends one request (see [`crate::admin::client::request`]); a refused token is an
    /// error that says where the token was read.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        json: Option<&str>,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> anyhow::Result<u16> {
        let code =
            crate::admin::client::request(self.addr, &self.token, method, path, json, on_line)
                .await
                .context("the state directory is in use, so crbridge should be running")?;
        if code == 401 {
            bail!(
                "the admin endpoint at {} refused the token (401) (hint: the CLI reads admin.tokenFile, else {{state.path}}/admin.token; use the config the instance runs with)",
                self.addr
            );
        }
        Ok(code)
    }
}

/// Finds out whether an instance is running on `config`'s state directory.
pub fn target(config: &Config) -> anyhow::Result<Target> {
    let path = &config.state.path;
    if !path.exists() {
        bail!(
            "no state at {}: crbridge has not run with this config yet (hint: crbridge run -c <config>)",
            path.display()
        );
    }
    let opts = StoreOptions {
        cache_bytes: config.state.cache_bytes,
        flush_every: config.state.flush_every,
    };
    match Store::open(path, &opts) {
        Ok(store) => Ok(Target::Stopped(store)),
        Err(e) => {
            let addr = crate::admin::client::local_addr(config.admin.listen);
            if addr.port() == 0 {
                bail!(
                    "{e}; its admin endpoint cannot be found because admin.listen uses port 0 (hint: give admin.listen a fixed port)"
                );
            }
            let token = AdminToken::for_client(config.admin.token_file.as_deref(), path)
                .with_context(|| format!("{e}; reaching its admin endpoint"))?;
            Ok(Target::Running(Endpoint { addr, token }))
        }
    }
}

/// Output format of the commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// For people.
    Text,
    /// One JSON document (status) or one JSON object per line (tail, check).
    Json,
}
