//! `admin`: the listener of the admin API (`/admin/status`, `/admin/replay`,
//! `/admin/snapshot`) and where its bearer token comes from, with the rules relating it
//! to `http` (issue 14, item 5).

use std::ffi::OsStr;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;

use serde::Deserialize;

use super::http::{deserialize_socket_addr, HttpConfig};
use super::resolve::expand_home;

/// `admin`: the admin API, on its own socket and behind a bearer token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AdminConfig {
    /// `ip:port` serving the admin API, never shared with `http.listen`.
    // 127.0.0.1:9091: replay and snapshot can fill the outbox, so by default only this host
    // (the CLI, `kubectl exec`, `kubectl port-forward`) reaches them, even with the token;
    // 9091 is the port after `http.listen`'s 9090.
    #[serde(
        default = "default_listen",
        deserialize_with = "deserialize_socket_addr"
    )]
    pub listen: SocketAddr,
    /// File holding the bearer token (key `tokenFile`, `~/` expanded); absent: the token
    /// is generated at start into `{state.path}/admin.token` (mode 0600).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9091))
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: default_listen(),
            token_file: None,
        }
    }
}

/// Expands `~` in `admin.tokenFile` and checks that `admin.listen` does not take the
/// socket of `http.listen`. Errors carry (key path, message).
pub(super) fn validate_admin(
    admin: &mut AdminConfig,
    http: &HttpConfig,
    home: Option<&OsStr>,
) -> Result<(), (&'static str, String)> {
    if overlaps(admin.listen, http.listen) {
        return Err((
            "admin.listen",
            format!(
                "{} takes the socket of http.listen ({}) (expected another port, e.g. 127.0.0.1:9091: \
                 the admin API never shares the metrics listener)",
                admin.listen, http.listen
            ),
        ));
    }
    if let Some(token_file) = &admin.token_file {
        if token_file.as_os_str().is_empty() {
            return Err((
                "admin.tokenFile",
                "empty (expected a file holding the token, or no tokenFile key to generate \
                 {state.path}/admin.token)"
                    .into(),
            ));
        }
        admin.token_file = Some(expand_home(token_file, home).map_err(|m| ("admin.tokenFile", m))?);
    }
    Ok(())
}

/// Whether two listeners would fight over one socket: the same non-zero port on the same
/// address, or on any address when one of them listens on all interfaces (`0.0.0.0` or
/// `[::]`, which on Linux also takes IPv4). Port 0 picks a free port, so never clashes.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}
