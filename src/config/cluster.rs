//! `clusters`: the clusters one crbridge watches. The single-cluster form (`cluster` +
//! `kubeconfig`) is the same as a one-entry list, which [`resolve_clusters`] builds, so the
//! rest of crbridge only ever sees a list.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::path::PathBuf;

use serde::Deserialize;

use super::resolve::expand_home;

/// One entry of `clusters`: a name and how to reach the cluster's API server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterConfig {
    /// Name used in event `source` and `id`, in metrics and in state keys; `[a-z0-9.-]+`.
    pub name: String,
    /// Kubeconfig file (`~/` expanded).
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// Context of the kubeconfig to use; absent: its current context.
    #[serde(default)]
    pub context: Option<String>,
    /// Reach the cluster crbridge runs in with its service account (key `inCluster`).
    #[serde(default)]
    pub in_cluster: bool,
}

impl ClusterConfig {
    /// How to reach this cluster, for [`crate::cluster::client_for`].
    pub fn reach(&self) -> Reach {
        if self.in_cluster {
            Reach::InCluster
        } else if let Some(path) = &self.kubeconfig {
            Reach::Kubeconfig {
                path: path.clone(),
                context: self.context.clone(),
            }
        } else {
            Reach::Inferred
        }
    }
}

/// How a cluster is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// The pod's service account.
    InCluster,
    /// A kubeconfig file, with a context or its current one.
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// The context; `None`: the file's current context.
        context: Option<String>,
    },
    /// The single-cluster form without `kubeconfig`: in-cluster, then `KUBECONFIG`, then
    /// `~/.kube/config` ([`crate::cluster::order`]).
    Inferred,
}

/// True for a cluster name crbridge accepts: lowercase letters, digits, `.` and `-`.
pub(super) fn is_cluster_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
}

/// Checks `clusters` (or builds the one-entry list from `cluster` + `kubeconfig`) and
/// expands `~` in kubeconfig paths. Errors carry (path, message).
pub(super) fn resolve_clusters(
    cluster: &str,
    kubeconfig: Option<&PathBuf>,
    clusters: &mut Vec<ClusterConfig>,
    home: Option<&OsStr>,
) -> Result<(), (String, String)> {
    if clusters.is_empty() {
        clusters.push(ClusterConfig {
            name: cluster.to_owned(),
            kubeconfig: kubeconfig.cloned(),
            context: None,
            in_cluster: false,
        });
        return Ok(());
    }
    if !cluster.is_empty() {
        return Err((
            "cluster".into(),
            "set together with clusters (expected one of them: cluster + kubeconfig for one cluster, or a name per entry of clusters)".into(),
        ));
    }
    if kubeconfig.is_some() {
        return Err((
            "kubeconfig".into(),
            "set together with clusters (expected a kubeconfig per entry of clusters)".into(),
        ));
    }
    let mut seen = HashSet::new();
    for (i, c) in clusters.iter_mut().enumerate() {
        let at = format!("clusters[{i}]");
        if !is_cluster_name(&c.name) {
            return Err((
                format!("{at}.name"),
                format!(
                    "invalid cluster name {:?} (expected lowercase letters, digits, '.' and '-', e.g. prod-eu-1)",
                    c.name
                ),
            ));
        }
        if !seen.insert(c.name.clone()) {
            return Err((
                format!("{at}.name"),
                format!("duplicate cluster name {:?}", c.name),
            ));
        }
        match (&c.kubeconfig, c.in_cluster) {
            (Some(_), true) => {
                return Err((
                    format!("{at}.inCluster"),
                    "set together with kubeconfig (expected one way to reach the cluster)".into(),
                ))
            }
            (None, false) => {
                return Err((
                    at,
                    format!(
                        "cluster {:?} has no kubeconfig and no inCluster: true (expected one way to reach it)",
                        c.name
                    ),
                ))
            }
            (None, true) if c.context.is_some() => {
                return Err((
                    format!("{at}.context"),
                    "set with inCluster: true (a context belongs to a kubeconfig)".into(),
                ))
            }
            _ => {}
        }
        if let Some(path) = &c.kubeconfig {
            if path.as_os_str().is_empty() {
                return Err((
                    format!("{at}.kubeconfig"),
                    "empty (expected a kubeconfig path)".into(),
                ));
            }
            c.kubeconfig =
                Some(expand_home(path, home).map_err(|m| (format!("{at}.kubeconfig"), m))?);
        }
        if c.context.as_deref() == Some("") {
            return Err((
                format!("{at}.context"),
                "empty (expected a context name of the kubeconfig, or no context key)".into(),
            ));
        }
    }
    if clusters.iter().filter(|c| c.in_cluster).count() > 1 {
        return Err((
            "clusters".into(),
            "more than one entry with inCluster: true (crbridge runs in one cluster)".into(),
        ));
    }
    Ok(())
}

impl super::Config {
    /// The name a scope's state is kept under (checkpoints, object states, outbox
    /// entries): the watch name in the single-cluster form, as it always was, and
    /// `{cluster}/{watch}` in a fleet, so the same uid in two clusters never collides.
    pub fn state_key(&self, cluster: &str, watch: &str) -> String {
        if self.fleet {
            format!("{cluster}/{watch}")
        } else {
            watch.to_owned()
        }
    }

    /// The state keys of a watch: one per cluster it watches.
    pub fn watch_keys(&self, watch: &super::WatchConfig) -> Vec<String> {
        watch
            .clusters
            .iter()
            .map(|c| self.state_key(c, &watch.name))
            .collect()
    }

    /// What a `--watch` argument names: a watch (every cluster of it) or, in a fleet,
    /// `{cluster}/{watch}` (one); for a whole-group watch also one kind,
    /// `[{cluster}/]{watch}/{plural}` (its key, whether or not the kind is served now).
    /// `None` when it names nothing configured.
    pub fn watch_arg_keys(&self, arg: &str) -> Option<Vec<String>> {
        self.watches.iter().find_map(|w| {
            let keys = self.watch_keys(w);
            if w.name == arg {
                return Some(keys);
            }
            if let Some(k) = keys.iter().find(|k| *k == arg) {
                return Some(vec![k.clone()]);
            }
            if !w.is_group() {
                return None;
            }
            // One kind of the group: `{watch}/{plural}` in every cluster, or one key.
            let (watch_part, plural) = arg.rsplit_once('/')?;
            if plural.is_empty() {
                return None;
            }
            if watch_part == w.name {
                return Some(keys.iter().map(|k| super::kind_key(k, plural)).collect());
            }
            keys.iter()
                .find(|k| *k == watch_part)
                .map(|k| vec![super::kind_key(k, plural)])
        })
    }

    /// The state keys of every watch routed to `sink`: what its dispatcher publishes.
    pub fn sink_watches(&self, sink: &str) -> super::WatchSet {
        let mut set = super::WatchSet::new(self.fleet);
        for w in self
            .watches
            .iter()
            .filter(|w| w.sinks.iter().any(|s| s == sink))
        {
            for key in self.watch_keys(w) {
                set.insert(key, w.is_group());
            }
        }
        set
    }

    /// Every `--watch` argument that names something, for error messages.
    pub fn watch_args(&self) -> Vec<String> {
        let mut names = Vec::new();
        for w in &self.watches {
            names.push(w.name.clone());
            if self.fleet {
                names.extend(self.watch_keys(w));
            }
        }
        names
    }
}
