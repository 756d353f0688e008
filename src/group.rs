//! Whole-group watches (`kind: "*"`): one task per such watch and cluster asks discovery
//! for the kinds the group serves every `discoveryInterval`. A kind it has not seen gets its
//! scopes (registered with capture before their loops start, each with its own checkpoint
//! under `{watch}/{plural}`); a kind the group no longer serves has its loops stopped and is
//! reported (WARN), its state kept so that it resumes where it was if the kind returns.
//!
//! The group's own health (one entry under the watch's key) says whether discovery
//! answers: not synced until it first has, failing while it errs, unavailable while the
//! group is not served or not allowed.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use kube::Client;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::admin::Admin;
use crate::capture::NewScopes;
use crate::config::{kind_key, Config};
use crate::plan::{WatchIn, WatchRules};
use crate::stats::{ScopeStats, Stats};
use crate::store::Store;
use crate::supervise::Supervisor;
use crate::watch::{GroupKind, KindRef, Observed, Reason, Scope, ScopeHealth, Unavailable};

/// One whole-group watch in one cluster.
pub struct GroupWatch {
    /// The config.
    pub config: Arc<Config>,
    /// Index of the watch in `config.watches`.
    pub watch: usize,
    /// The cluster's name.
    pub cluster: String,
    /// The cluster's client.
    pub client: Client,
    /// The watch's rules.
    pub rules: WatchRules,
    /// The group's own health (discovery).
    pub health: Arc<ScopeHealth>,
}

/// What a group task shares with the daemon.
#[derive(Clone)]
pub struct Runtime {
    /// Runs each kind's loops.
    pub supervisor: Supervisor,
    /// The store (checkpoints).
    pub store: Store,
    /// Where the loops send what they observe.
    pub observed: mpsc::Sender<Observed>,
    /// Where new scopes are registered with capture.
    pub new_scopes: Arc<NewScopes>,
    /// Health and metrics.
    pub stats: Arc<Stats>,
    /// The admin endpoints (scopes by watch, for snapshots).
    pub admin: Arc<Admin>,
    /// Stops the loops.
    pub cancel: CancellationToken,
}

/// The loops of one kind.
struct Running {
    key: String,
    ids: Vec<crate::watch::ScopeId>,
    cancel: CancellationToken,
    loops: Vec<JoinHandle<()>>,
}

impl GroupWatch {
    /// The state key of the watch in this cluster.
    fn key(&self) -> String {
        self.config
            .state_key(&self.cluster, &self.config.watches[self.watch].name)
    }

    /// Runs until `rt.cancel`: the loops of `initial` (the kinds planned at start, with
    /// their health) and those of kinds found later.
    pub async fn run(self, rt: Runtime, initial: Vec<(Scope, Arc<ScopeHealth>)>) {
        let w = &self.config.watches[self.watch];
        let key = self.key();
        let mut running: BTreeMap<String, Running> = BTreeMap::new();
        for (scope, health) in initial {
            let plural = scope.resource.plural.clone();
            let kind = running.entry(plural).or_insert_with(|| Running {
                key: scope.watch.clone(),
                ids: Vec::new(),
                cancel: rt.cancel.child_token(),
                loops: Vec::new(),
            });
            let cancel = kind.cancel.clone();
            kind.ids.push(scope.id);
            kind.loops
                .push(crate::app::spawn_watch(&rt, scope, health, cancel));
        }
        // Kinds found after the group was first watched are new: their first list holds
        // objects created since, published as `created` whatever `initial` says.
        let mut appeared = rt
            .store
            .has_checkpoint_under(&format!("{key}/"))
            .unwrap_or(true)
            || !running.is_empty();
        let mut reported: Option<String> = None;
        loop {
            match crate::watch::discover_group(&self.client, &w.group, &w.version).await {
                Ok(found) => {
                    self.healthy(&mut reported);
                    let wanted = self.watch_in().group_kinds(found);
                    for k in &wanted {
                        if !running.contains_key(&k.found.resource.plural) {
                            let r = self.start_kind(&rt, &key, k, appeared);
                            running.insert(k.found.resource.plural.clone(), r);
                        }
                    }
                    let gone: Vec<String> = running
                        .keys()
                        .filter(|p| !wanted.iter().any(|k| &k.found.resource.plural == *p))
                        .cloned()
                        .collect();
                    for plural in gone {
                        if let Some(r) = running.remove(&plural) {
                            self.stop_kind(&rt, &plural, r).await;
                        }
                    }
                    appeared = true;
                }
                Err(e) => {
                    let gone = self.failed(&e, &mut reported);
                    if gone {
                        // Not served at all: every kind of it is gone.
                        for (plural, r) in std::mem::take(&mut running) {
                            self.stop_kind(&rt, &plural, r).await;
                        }
                        appeared = true;
                    }
                }
            }
            self.health
                .last_progress_ms
                .store(crate::store::now_ms(), Ordering::Relaxed);
            tokio::select! {
                _ = rt.cancel.cancelled() => break,
                _ = tokio::time::sleep(w.discovery_interval()) => {}
            }
        }
        for (_, r) in running {
            r.cancel.cancel();
            for l in r.loops {
                let _ = l.await;
            }
        }
    }

    fn watch_in(&self) -> WatchIn<'_> {
        WatchIn {
            config: &self.config,
            watch: &self.config.watches[self.watch],
            rules: &self.rules,
            cluster: &self.cluster,
            client: &self.client,
        }
    }

    /// Discovery answered: the group's health is good again.
    fn healthy(&self, reported: &mut Option<String>) {
        let h = &self.health;
        h.synced.store(true, Ordering::Relaxed);
        *h.failing.lock().unwrap_or_else(|e| e.into_inner()) = None;
        *h.unavailable.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if reported.take().is_some() {
            info!(cluster = %self.cluster, watch = %self.config.watches[self.watch].name, "group discovery answers again");
        }
    }

    /// Discovery failed with `e`: recorded in the group's health and logged once per
    /// distinct error. True when the group is not served (404), so its kinds are gone.
    fn failed(&self, e: &kube::Error, reported: &mut Option<String>) -> bool {
        let w = &self.config.watches[self.watch];
        let message = e.to_string();
        let (reason, gone) = match e {
            kube::Error::Api(s) if s.code == 404 => (Some(Reason::NotFound), true),
            kube::Error::Api(s) if s.code == 403 => (Some(Reason::Forbidden), false),
            _ => (None, false),
        };
        let h = &self.health;
        match reason {
            Some(reason) => {
                *h.unavailable.lock().unwrap_or_else(|e| e.into_inner()) = Some(Unavailable {
                    reason,
                    message: format!(
                        "discovering the kinds of {}/{}: {message}",
                        w.group, w.version
                    ),
                });
            }
            None => {
                let mut f = h.failing.lock().unwrap_or_else(|e| e.into_inner());
                let since = f.as_ref().map_or_else(crate::store::now_ms, |(s, _)| *s);
                *f = Some((since, message.clone()));
            }
        }
        if reported.as_deref() != Some(message.as_str()) {
            warn!(cluster = %self.cluster, watch = %w.name, group = %w.group, version = %w.version, error = %message, "discovering the group's kinds failed; trying again every discoveryInterval");
            *reported = Some(message);
        }
        gone
    }

    /// Registers and starts the scopes of a kind the group serves.
    fn start_kind(&self, rt: &Runtime, key: &str, k: &GroupKind, appeared: bool) -> Running {
        let kind = KindRef::of(&k.found.resource);
        let kkey = kind_key(key, &k.found.resource.plural);
        let cancel = rt.cancel.child_token();
        let mut loops = Vec::new();
        let mut ids = Vec::new();
        let w = &self.config.watches[self.watch];
        for (mut scope, mut rules) in self.watch_in().kind_scopes(&kkey, &kind, &k.found, true, 0) {
            rules.appeared = appeared;
            // Before its loop starts: capture knows the scope before its first observation.
            scope.id = rt.new_scopes.add(rules);
            ids.push(scope.id);
            let stats = ScopeStats::new(
                &self.cluster,
                &kkey,
                scope.namespace.as_deref().unwrap_or("*"),
            );
            rt.stats.scopes.push(stats.clone());
            rt.stats
                .metrics
                .register_known([], [(self.cluster.as_str(), kkey.as_str())]);
            {
                let mut by_watch = rt.admin.scopes.write().unwrap_or_else(|e| e.into_inner());
                let mut names = vec![kkey.clone(), key.to_owned(), w.name.clone()];
                names.dedup();
                for name in names {
                    by_watch.entry(name).or_default().push(scope.id);
                }
            }
            loops.push(crate::app::spawn_watch(
                rt,
                scope,
                stats.health,
                cancel.clone(),
            ));
        }
        info!(cluster = %self.cluster, watch = %w.name, kind = %k.kind, plural = %k.found.resource.plural, key = %kkey, "kind found in the group: watching it");
        Running {
            key: kkey,
            ids,
            cancel,
            loops,
        }
    }

    /// Stops the loops of a kind the group no longer serves; its state stays.
    async fn stop_kind(&self, rt: &Runtime, plural: &str, r: Running) {
        r.cancel.cancel();
        for l in r.loops {
            let _ = l.await;
        }
        rt.stats.scopes.remove(&self.cluster, &r.key);
        // A snapshot no longer asks for them; the kind gets new scopes if it returns.
        for ids in rt
            .admin
            .scopes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .values_mut()
        {
            ids.retain(|id| !r.ids.contains(id));
        }
        warn!(cluster = %self.cluster, watch = %self.config.watches[self.watch].name, plural, key = %r.key, "kind no longer served by the group: its watch stopped (its state is kept; it resumes if the kind is served again)");
    }
}
