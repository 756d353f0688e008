//! `http`: the listening socket for metrics, health and the admin API.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// `http`: the one listening socket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpConfig {
    /// `ip:port` serving `/metrics`, `/healthz`, `/readyz` and the admin API.
    // 0.0.0.0:9090: all interfaces so the kubelet probes and Prometheus reach it; 9090 is
    // the port of the manifests in deploy/kubernetes.
    #[serde(
        default = "default_listen",
        deserialize_with = "deserialize_socket_addr"
    )]
    pub listen: SocketAddr,
}

pub(super) fn default_listen() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 9090))
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_listen(),
        }
    }
}

/// `http.listen` and `admin.listen`: `ip:port` through `SocketAddr::from_str`, with a message that shows the
/// expected form.
pub(super) fn deserialize_socket_addr<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<SocketAddr, D::Error> {
    struct AddrVisitor;

    impl Visitor<'_> for AddrVisitor {
        type Value = SocketAddr;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("ip:port, e.g. 0.0.0.0:9090")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<SocketAddr, E> {
            v.parse().map_err(|_| {
                E::custom(format!(
                    "invalid address {v:?} (expected ip:port, e.g. 0.0.0.0:9090 or [::]:9090)"
                ))
            })
        }
    }

    deserializer.deserialize_str(AddrVisitor)
}
