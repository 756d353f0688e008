//! The operator commands `status`, `replay`, `snapshot` and `tail`. The first three work on
//! a stopped instance (opening its state directory) and on a running one (through its admin
//! endpoint on `http.listen`, since sled allows one process per state directory).

pub mod replay;
pub mod snapshot;
pub mod status;
pub mod tail;

use std::net::SocketAddr;

use anyhow::bail;

use crate::config::Config;
use crate::store::{Store, StoreOptions};

/// Where the state is reached.
pub enum Target {
    /// No process holds the state directory: it is open here.
    Stopped(Store),
    /// A running crbridge holds it: its admin endpoint.
    Running(SocketAddr),
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
            let addr = crate::admin::client::local_addr(config.http.listen);
            if addr.port() == 0 {
                bail!(
                    "{e}; its admin endpoint cannot be found because http.listen uses port 0 (hint: give http.listen a fixed port)"
                );
            }
            Ok(Target::Running(addr))
        }
    }
}

/// Output format of the commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// For people.
    Text,
    /// One JSON document (status) or one JSON object per line (tail).
    Json,
}
