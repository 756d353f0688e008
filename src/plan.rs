//! Planning: from the config and the clusters' discovery to the watch scopes and the rules
//! capture applies to each. Shared by `crbridge run`, `snapshot` on a stopped instance, and
//! the whole-group watches, which plan their kinds again while the process runs.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use crbridge_sink_api::ChangeKind;
use kube::Client;
use tracing::{info, warn};

use crate::capture::ScopeRules;
use crate::config::{ChangeType, Config, WatchConfig};
use crate::diff::Rules;
use crate::event::Identity;
use crate::redact::Redactor;
use crate::watch::{KindRef, Scope};

/// Objects per list page: big enough for few round trips, small enough for bounded memory.
const PAGE_SIZE: u32 = 500;

/// A watched kind as the server describes it.
pub use crate::watch::Discovered as Resolved;

/// The kind a watch names, for discovery.
fn kind_ref(w: &WatchConfig) -> KindRef {
    KindRef {
        group: w.group.clone(),
        version: w.version.clone(),
        kind: w.kind.clone(),
        plural: w.plural.clone(),
    }
}

/// A cluster-scoped kind cannot be watched in namespaces: a config error.
fn check_scope(w: &WatchConfig, r: &Resolved) -> anyhow::Result<()> {
    if !r.namespaced && !w.namespaces.is_empty() {
        bail!(
            "watch {}: kind {} is cluster-scoped; remove `namespaces`",
            w.name,
            w.kind
        );
    }
    Ok(())
}

/// Resolves a watch's kind by discovery.
pub async fn resolve(client: &Client, w: &WatchConfig) -> anyhow::Result<Resolved> {
    let r = crate::watch::discover(client, &kind_ref(w))
        .await
        .with_context(|| {
            format!(
                "watch {}: kind {} in {}/{} not found by discovery (is the CRD installed?)",
                w.name,
                w.kind,
                if w.group.is_empty() { "core" } else { &w.group },
                w.version
            )
        })?;
    check_scope(w, &r)?;
    Ok(r)
}

/// True for the answers that make a kind unavailable rather than the start impossible: not
/// served (404) or not allowed (403). The watch resolves it again while it runs.
pub fn unavailable(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404 || s.code == 403)
}

fn change_kind(c: ChangeType) -> ChangeKind {
    match c {
        ChangeType::Created => ChangeKind::Created,
        ChangeType::Updated => ChangeKind::Updated,
        ChangeType::Deleted => ChangeKind::Deleted,
    }
}

/// A client per cluster of the config, by name. Building one reads its kubeconfig but does
/// not reach the server: an unreachable cluster does not stop the others from starting.
pub async fn cluster_clients(config: &Config) -> anyhow::Result<BTreeMap<String, Client>> {
    let mut clients = BTreeMap::new();
    for c in &config.clusters {
        clients.insert(c.name.clone(), crate::cluster::client_for(c).await?);
    }
    Ok(clients)
}

/// What a watch applies to every object of every scope it has: built once per watch.
#[derive(Clone)]
pub struct WatchRules {
    /// Normalization: ignore, include, includeStatus, fields.
    pub norm: Rules,
    /// Redaction, when the watch redacts.
    pub redact: Option<Redactor>,
}

impl WatchRules {
    /// The rules of watch `w`.
    pub fn of(config: &Config, w: &WatchConfig) -> anyhow::Result<Self> {
        let norm = Rules::with_paths(&w.include_status, &w.include, &w.ignore)
            .and_then(|r| r.with_fields(&w.fields))
            .with_context(|| {
                format!(
                    "watch {}: ignore / include / includeStatus / fields",
                    w.name
                )
            })?;
        let redact = match (&config.resolved_redact_key, w.redact.is_empty()) {
            (_, true) => None,
            (Some(key), false) => Some(Redactor::new(key.clone(), &w.redact)),
            // `config::load` refuses this; a config built otherwise must not leak values.
            (None, false) => bail!("watch {}: redact needs redactKey", w.name),
        };
        Ok(WatchRules { norm, redact })
    }
}

/// One watch in one cluster: what its scopes are made from.
pub struct WatchIn<'a> {
    /// The config (event type prefix, data schema template).
    pub config: &'a Config,
    /// The watch.
    pub watch: &'a WatchConfig,
    /// Its rules.
    pub rules: &'a WatchRules,
    /// The cluster's name.
    pub cluster: &'a str,
    /// The cluster's client.
    pub client: &'a Client,
}

impl WatchIn<'_> {
    /// The scopes of `kind` (one per configured namespace, or one for all) under state key
    /// `key`, with the rules capture applies to each, numbered from `first_id`. `resolved`:
    /// discovery answered for `found` (otherwise it is a guess the loop corrects).
    pub fn kind_scopes(
        &self,
        key: &str,
        kind: &KindRef,
        found: &Resolved,
        resolved: bool,
        first_id: usize,
    ) -> Vec<(Scope, ScopeRules)> {
        let (w, cluster, config) = (self.watch, self.cluster, self.config);
        let namespaces: Vec<Option<String>> = if !found.namespaced || w.namespaces.is_empty() {
            vec![None]
        } else {
            w.namespaces.iter().cloned().map(Some).collect()
        };
        namespaces
            .into_iter()
            .enumerate()
            .map(|(i, ns)| {
                let api = crate::watch::RawApi::new(
                    self.client.clone(),
                    kind.clone(),
                    &found.resource,
                    ns.as_deref(),
                );
                let scope = Scope {
                    id: first_id + i,
                    cluster: cluster.to_owned(),
                    watch: key.to_owned(),
                    namespace: ns.clone(),
                    resource: found.resource.clone(),
                    api,
                    label_selector: w.label_selector.clone(),
                    field_selector: w.field_selector.clone(),
                    page_size: PAGE_SIZE,
                    resolved,
                };
                let rules = ScopeRules {
                    watch: key.to_owned(),
                    namespace: ns,
                    identity: Identity {
                        cluster: cluster.to_owned(),
                        type_prefix: config.event_type_prefix.clone(),
                        group: w.group.clone(),
                        version: w.version.clone(),
                        kind: kind.kind.clone(),
                        plural: found.resource.plural.clone(),
                        payload: w.payload,
                        dataschema: crate::config::data_schema_uri(
                            &config.data_schema,
                            cluster,
                            &w.group,
                            &w.version,
                            &kind.kind,
                            &found.resource.plural,
                        ),
                    },
                    rules: self.rules.norm.clone(),
                    events: w.events.iter().copied().map(change_kind).collect(),
                    initial: w.initial,
                    appeared: false,
                    filter: w.compiled_filter.clone(),
                    filter_errors: w.filter_errors,
                    redact: self.rules.redact.clone(),
                };
                (scope, rules)
            })
            .collect()
    }

    /// The kinds of a whole-group watch that get a scope: those discovery lists, minus the
    /// ones another watch of this cluster names (an explicit watch wins) and, when the watch
    /// lists namespaces, the cluster-scoped ones.
    pub fn group_kinds(&self, found: Vec<crate::watch::GroupKind>) -> Vec<crate::watch::GroupKind> {
        let (w, config) = (self.watch, self.config);
        found
            .into_iter()
            .filter(|k| {
                let explicit = config.watches.iter().find(|x| {
                    !x.is_group()
                        && x.group == w.group
                        && x.kind == k.kind
                        && x.clusters.iter().any(|c| c == self.cluster)
                });
                if let Some(x) = explicit {
                    tracing::debug!(cluster = self.cluster, watch = %w.name, kind = %k.kind, by = %x.name, "kind left to the watch that names it");
                    return false;
                }
                if !k.found.namespaced && !w.namespaces.is_empty() {
                    tracing::debug!(cluster = self.cluster, watch = %w.name, kind = %k.kind, "cluster-scoped kind skipped: the watch lists namespaces");
                    return false;
                }
                true
            })
            .collect()
    }

    /// The scopes of this watch in this cluster, numbered from `first_id` (see [`plan`]).
    async fn scopes(&self, first_id: usize) -> anyhow::Result<Vec<(Scope, ScopeRules)>> {
        let (w, cluster) = (self.watch, self.cluster);
        let key = self.config.state_key(cluster, &w.name);
        if w.is_group() {
            return match crate::watch::discover_group(self.client, &w.group, &w.version).await {
                Ok(found) => {
                    let mut out = Vec::new();
                    for k in self.group_kinds(found) {
                        let kind = KindRef::of(&k.found.resource);
                        let key = crate::config::kind_key(&key, &k.found.resource.plural);
                        out.extend(self.kind_scopes(
                            &key,
                            &kind,
                            &k.found,
                            true,
                            first_id + out.len(),
                        ));
                    }
                    info!(cluster, watch = %w.name, kinds = out.len(), "resolved the group's kinds");
                    Ok(out)
                }
                // Kinds come and go while it runs: a group served by nothing yet is not an error.
                Err(e) if unavailable(&e) || self.config.fleet => {
                    info!(cluster, watch = %w.name, error = %e, "group not available at start; looked for again while running");
                    Ok(Vec::new())
                }
                Err(e) => Err(e).with_context(|| {
                    format!(
                        "watch {}: discovering the kinds of {}/{}",
                        w.name, w.group, w.version
                    )
                }),
            };
        }
        let kind = kind_ref(w);
        let (r, resolved) = match crate::watch::discover(self.client, &kind).await {
            Ok(r) => {
                check_scope(w, &r)?;
                (r, true)
            }
            Err(e) if unavailable(&e) || self.config.fleet => {
                info!(cluster, watch = %w.name, error = %e, "kind not available at start; its watch retries");
                let guessed = Resolved {
                    resource: kind.guessed(),
                    namespaced: !w.namespaces.is_empty(),
                };
                (guessed, false)
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("watch {}: resolving kind {}", w.name, kind.describe())
                })
            }
        };
        if resolved {
            info!(cluster, watch = %w.name, plural = %r.resource.plural, namespaced = r.namespaced, "resolved kind");
            if w.plural.is_none()
                && w.name == crate::config::default_watch_name(w)
                && r.resource.plural != crate::config::default_plural(&w.kind)
            {
                warn!(cluster, watch = %w.name, plural = %r.resource.plural, "the kind's plural is not the one derived from its kind; the watch keeps its name (write `name:` or `plural:` to choose)");
            }
        }
        Ok(self.kind_scopes(&key, &kind, &r, resolved, first_id))
    }
}

/// Resolves every watch by discovery into scopes (one per cluster and namespace, or all
/// namespaces; for a whole-group watch, per kind too) and the rules capture applies to
/// each. A kind that is not served or not allowed yet does not fail the plan: its scopes
/// start unresolved (one per configured namespace, or all) and their loops resolve it while
/// the others run; until then its plural is the configured one or the conventional guess.
/// In a fleet, a cluster that does not answer at all is treated the same way, so it holds
/// back only its own scopes. A group that serves nothing yet plans no scope; its kinds are
/// found while the process runs.
pub async fn plan(
    config: &Config,
    clients: &BTreeMap<String, Client>,
) -> anyhow::Result<(Vec<Scope>, Vec<ScopeRules>)> {
    let mut scopes = Vec::new();
    let mut rules = Vec::new();
    for w in &config.watches {
        let watch_rules = WatchRules::of(config, w)?;
        for cluster in &w.clusters {
            let client = clients
                .get(cluster)
                .with_context(|| format!("watch {}: no client for cluster {cluster}", w.name))?;
            let planned = WatchIn {
                config,
                watch: w,
                rules: &watch_rules,
                cluster,
                client,
            }
            .scopes(scopes.len())
            .await?;
            for (s, r) in planned {
                scopes.push(s);
                rules.push(r);
            }
        }
    }
    Ok((scopes, rules))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::GroupKind;
    use kube::api::ApiResource;

    fn kind(kind: &str, plural: &str, namespaced: bool) -> GroupKind {
        GroupKind {
            kind: kind.into(),
            found: Resolved {
                resource: ApiResource {
                    group: "example.com".into(),
                    version: "v1".into(),
                    api_version: "example.com/v1".into(),
                    kind: kind.into(),
                    plural: plural.into(),
                },
                namespaced,
            },
        }
    }

    fn kinds_of(yaml_watches: &str, watch: usize) -> Vec<String> {
        let config = crate::config::parse(
            "crbridge.yaml",
            &format!(
                "clusters:\n  - {{ name: east, kubeconfig: /k }}\n  - {{ name: west, kubeconfig: /k }}\nstate: {{ path: /s }}\nwatches:\n{yaml_watches}\nsinks: {{ out: {{ type: stdout }} }}\n"
            ),
        )
        .unwrap();
        // Never reached: choosing kinds asks no server.
        let client =
            Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
        let rules = WatchRules::of(&config, &config.watches[watch]).unwrap();
        let w = WatchIn {
            config: &config,
            watch: &config.watches[watch],
            rules: &rules,
            cluster: "east",
            client: &client,
        };
        w.group_kinds(vec![
            kind("Gadget", "gadgets", true),
            kind("Widget", "widgets", true),
            kind("Zone", "zones", false),
        ])
        .into_iter()
        .map(|k| k.found.resource.plural)
        .collect()
    }

    // A client needs a runtime to exist, not to be used.
    #[tokio::test]
    async fn a_whole_group_watch_leaves_a_kind_to_the_watch_that_names_it_in_that_cluster() {
        let group = "  - { group: example.com, version: v1, kind: \"*\" }\n";
        assert_eq!(kinds_of(group, 0), ["gadgets", "widgets", "zones"]);
        let explicit =
            format!("{group}  - {{ group: example.com, version: v1, kind: Widget, name: w }}\n");
        assert_eq!(kinds_of(&explicit, 0), ["gadgets", "zones"]);
        let elsewhere = format!(
            "{group}  - {{ group: example.com, version: v1, kind: Widget, name: w, clusters: [west] }}\n"
        );
        assert_eq!(
            kinds_of(&elsewhere, 0),
            ["gadgets", "widgets", "zones"],
            "watched explicitly only in another cluster"
        );
    }

    #[tokio::test]
    async fn a_whole_group_watch_in_namespaces_leaves_out_cluster_scoped_kinds() {
        let group = "  - { group: example.com, version: v1, kind: \"*\", namespaces: [a] }\n";
        assert_eq!(kinds_of(group, 0), ["gadgets", "widgets"]);
    }
}
