//! How crbridge reaches the API server: the kubeconfig named in the config file, else the
//! first of in-cluster (the pod's service account), `KUBECONFIG`, `~/.kube/config` that
//! works.
//!
//! In-cluster comes first, as in client-go's controllers: a pod that happens to carry a
//! `KUBECONFIG` variable (or a home directory with a kubeconfig baked into the image) still
//! talks to the cluster it runs in with its own service account, which is what its RBAC
//! was written for. `kube::Config::infer` tries the files first, so the order is ours.

use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;

use crate::config::{ClusterConfig, Reach};

/// Where a client configuration can come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `kubeconfig:` in crbridge's config file.
    Configured(PathBuf),
    /// The pod's service account (`KUBERNETES_SERVICE_HOST` / `_PORT` and the token and CA
    /// under `/var/run/secrets/kubernetes.io/serviceaccount/`).
    InCluster,
    /// The files listed in `KUBECONFIG`.
    KubeconfigEnv,
    /// `~/.kube/config`.
    Home,
}

/// Why no client could be built: every source tried, with its error.
#[derive(Debug, thiserror::Error)]
#[error("no usable Kubernetes client configuration: {}", tried.join("; "))]
pub struct ClusterError {
    /// One line per source tried.
    pub tried: Vec<String>,
}

/// The sources to try, in order. Pure: `in_cluster` says whether the in-cluster variables
/// are set, `kubeconfig_env` whether `KUBECONFIG` is.
pub fn order(configured: Option<&Path>, in_cluster: bool, kubeconfig_env: bool) -> Vec<Source> {
    if let Some(path) = configured {
        // An explicit file is what the operator asked for: no fallback that would hide a typo.
        return vec![Source::Configured(path.to_owned())];
    }
    let mut sources = Vec::new();
    if in_cluster {
        sources.push(Source::InCluster);
    }
    if kubeconfig_env {
        sources.push(Source::KubeconfigEnv);
    }
    sources.push(Source::Home);
    sources
}

/// A client for one entry of `clusters` (the single-cluster form is one entry reached by
/// [`Reach::Inferred`] or its `kubeconfig`).
pub async fn client_for(cluster: &ClusterConfig) -> Result<Client, ClusterError> {
    let config = match cluster.reach() {
        Reach::Inferred => return client(None).await,
        Reach::Kubeconfig {
            path,
            context: None,
        } => return client(Some(&path)).await,
        Reach::Kubeconfig {
            path,
            context: Some(context),
        } => match Kubeconfig::read_from(&path) {
            Ok(kc) => {
                let options = KubeConfigOptions {
                    context: Some(context.clone()),
                    ..KubeConfigOptions::default()
                };
                kube::Config::from_custom_kubeconfig(kc, &options)
                    .await
                    .map_err(|e| format!("kubeconfig {} context {context:?}: {e}", path.display()))
            }
            Err(e) => Err(format!("reading kubeconfig {}: {e}", path.display())),
        },
        Reach::InCluster => kube::Config::incluster().map_err(|e| format!("in-cluster: {e}")),
    };
    let named = |e: String| ClusterError {
        tried: vec![format!("cluster {}: {e}", cluster.name)],
    };
    let config = config.map_err(named)?;
    Client::try_from(config).map_err(|e| named(format!("building the client: {e}")))
}

/// A client from the first source of [`order`] that yields a configuration.
pub async fn client(configured: Option<&Path>) -> Result<Client, ClusterError> {
    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        && std::env::var_os("KUBERNETES_SERVICE_PORT").is_some();
    let kubeconfig_env = std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty());
    let mut tried = Vec::new();
    for source in order(configured, in_cluster, kubeconfig_env) {
        let config = match &source {
            Source::Configured(path) => match Kubeconfig::read_from(path) {
                Ok(kc) => kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                    .await
                    .map_err(|e| format!("kubeconfig {}: {e}", path.display())),
                Err(e) => Err(format!("reading kubeconfig {}: {e}", path.display())),
            },
            Source::InCluster => kube::Config::incluster().map_err(|e| format!("in-cluster: {e}")),
            Source::KubeconfigEnv | Source::Home => {
                kube::Config::from_kubeconfig(&KubeConfigOptions::default())
                    .await
                    .map_err(|e| match source {
                        Source::Home => format!("~/.kube/config: {e}"),
                        _ => format!("KUBECONFIG: {e}"),
                    })
            }
        };
        match config {
            Ok(config) => {
                tracing::debug!(source = ?source, "kube client configuration");
                return Client::try_from(config).map_err(|e| ClusterError {
                    tried: vec![format!("{source:?}: building the client: {e}")],
                });
            }
            Err(e) => {
                tracing::debug!(source = ?source, error = %e, "kube client source not usable");
                tried.push(e);
            }
        }
    }
    Err(ClusterError { tried })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_cluster_then_kubeconfig_env_then_home() {
        assert_eq!(
            order(None, true, true),
            [Source::InCluster, Source::KubeconfigEnv, Source::Home]
        );
        assert_eq!(
            order(None, false, true),
            [Source::KubeconfigEnv, Source::Home]
        );
        assert_eq!(order(None, true, false), [Source::InCluster, Source::Home]);
        assert_eq!(order(None, false, false), [Source::Home]);
    }

    #[test]
    fn a_configured_file_is_the_only_source() {
        let p = Path::new("/etc/crbridge/kubeconfig");
        assert_eq!(
            order(Some(p), true, true),
            [Source::Configured(p.to_owned())]
        );
    }
}
