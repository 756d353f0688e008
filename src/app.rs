//! Wiring: resolve the watched kinds, open the store, start capture, one dispatcher per sink
//! and one watch loop per scope; shut down in order on SIGTERM / SIGINT.
//!
//! Shutdown order: watches stop first (no new observations), capture commits what it has
//! and ends, dispatchers drain in-flight acks up to a deadline and write their cursors, the
//! store is flushed. A second signal exits at once.
//!
//! Every long-running task runs under a [`Supervisor`] with a fixed name; what happens when
//! one panics or exits early is decided per task where it is spawned in [`run`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::admin::auth::AdminToken;
use crate::capture::{Capture, NewScopes};
use crate::config::Config;
use crate::dispatch::DispatchStats;
use crate::leader::{ElectionConfig, Elector, Held};
use crate::plan::{cluster_clients, plan};
use crate::stats::{ScopeStats, Stats};
use crate::store::{Store, StoreOptions};
use crate::supervise::{with_test_panic, Supervisor};
use crate::watch::{Scope, ScopeHealth};
use crate::wiring::SinkSetup;
use std::sync::atomic::Ordering;

/// Observations buffered between the watches and capture. Small: the outbox is the buffer.
const OBSERVED_CHANNEL: usize = 1024;
/// Operator commands buffered on their way to capture: a handful of snapshot requests.
const COMMAND_CHANNEL: usize = 16;
/// Opens the state directory with the config's tuning.
pub fn open_store(config: &Config) -> anyhow::Result<Store> {
    std::fs::create_dir_all(&config.state.path)
        .with_context(|| format!("creating state directory {}", config.state.path.display()))?;
    Ok(Store::open(
        &config.state.path,
        &StoreOptions {
            cache_bytes: config.state.cache_bytes,
            flush_every: config.state.flush_every,
        },
    )?)
}

/// Refuses to start when a watch named by default kept its state under the name earlier
/// releases derived (`{kind-lowercase}.{group}`): starting under the new name would send
/// every object again as new and never send the deletes the old state would have found.
pub fn check_renamed_watches(config: &Config, store: &Store) -> anyhow::Result<()> {
    for w in &config.watches {
        let Some(legacy) = crate::config::legacy_default_name(w) else {
            continue;
        };
        if store.has_watch_state(&legacy)? && !store.has_watch_state(&w.name)? {
            bail!(
                "watch {name}: the state directory {dir} holds its checkpoints and objects under \
                 {legacy:?}, the default name earlier releases gave it; add `name: {legacy}` to \
                 this watch in the config to keep them (the default is now {{plural}}.{{group}})",
                name = w.name,
                dir = config.state.path.display(),
            );
        }
    }
    Ok(())
}

/// Runs the bridge until a signal.
pub async fn run(config: Config, file: &str) -> anyhow::Result<()> {
    // Everything that can be wrong in the config or the cluster fails before anything starts.
    let sinks = SinkSetup::all(&config, file)?;
    let clients = cluster_clients(&config).await?;
    let (scopes, mut rules) = plan(&config, &clients).await?;

    let listener = crate::http::bind("http.listen", config.http.listen).await?;
    let admin_listener = crate::http::bind("admin.listen", config.admin.listen).await?;
    let store = open_store(&config)?;
    check_renamed_watches(&config, &store)?;
    // After the store: its lock makes this the only process touching the state directory.
    let token = Arc::new(AdminToken::load_or_create(
        config.admin.token_file.as_deref(),
        &config.state.path,
    )?);
    let last = store.last_seq()?;
    // A sink seen for the first time starts with what comes next, not with the retained
    // history of the others (that is what `replay` is for).
    for sink in &sinks {
        if !store.has_cursor(&sink.name)? {
            store.set_cursor(&sink.name, last)?;
        }
    }
    store.flush().await?;
    let group_keys: Vec<String> = config
        .watches
        .iter()
        .filter(|w| w.is_group())
        .flat_map(|w| config.watch_keys(w))
        .collect();
    // A kind without a checkpoint in a group watched before appeared since: its objects
    // are new to consumers.
    for r in &mut rules {
        if let Some(g) = group_of(&r.watch, &group_keys) {
            r.appeared = store.has_checkpoint_under(&format!("{g}/"))?;
        }
    }

    // Health and counters exist from the start, so the endpoints answer while a standby
    // waits for leadership.
    let stats = Arc::new(Stats {
        scopes: Arc::new(
            scopes
                .iter()
                .map(|s| {
                    ScopeStats::new(&s.cluster, &s.watch, s.namespace.as_deref().unwrap_or("*"))
                })
                .collect::<Vec<_>>()
                .into(),
        ),
        sinks: sinks
            .iter()
            .map(|s| (s.name.clone(), Arc::new(DispatchStats::default())))
            .collect(),
        ..Default::default()
    });
    stats.metrics.register_known(
        sinks.iter().map(|s| s.name.as_str()),
        scopes
            .iter()
            .map(|s| (s.cluster.as_str(), s.watch.as_str())),
    );
    // Each whole-group watch in each cluster: its discovery's health, and its task.
    let shared = Arc::new(config.clone());
    let mut groups = Vec::new();
    for (i, w) in config
        .watches
        .iter()
        .enumerate()
        .filter(|(_, w)| w.is_group())
    {
        let rules = crate::plan::WatchRules::of(&config, w)?;
        for cluster in &w.clusters {
            let client = clients
                .get(cluster)
                .with_context(|| format!("watch {}: no client for cluster {cluster}", w.name))?;
            let health = ScopeStats::new(cluster, &config.state_key(cluster, &w.name), "*");
            stats.scopes.push(health.clone());
            groups.push(crate::group::GroupWatch {
                config: shared.clone(),
                watch: i,
                cluster: cluster.clone(),
                client: client.clone(),
                rules: rules.clone(),
                health: health.health,
            });
        }
    }
    let mut by_watch: HashMap<String, Vec<crate::watch::ScopeId>> = Default::default();
    for s in &scopes {
        by_watch.entry(s.watch.clone()).or_default().push(s.id);
        // A whole-group watch's key names every kind of it.
        if let Some(g) = group_of(&s.watch, &group_keys) {
            by_watch.entry(g.to_owned()).or_default().push(s.id);
        }
    }
    // In a fleet, the watch name alone names its scopes in every cluster.
    if config.fleet {
        for w in &config.watches {
            let ids: Vec<_> = config
                .watch_keys(w)
                .iter()
                .flat_map(|k| by_watch.get(k).cloned().unwrap_or_default())
                .collect();
            by_watch.insert(w.name.clone(), ids);
        }
    }
    let shutdown = CancellationToken::new();
    let supervisor = Supervisor::new(stats.tasks.clone(), stats.metrics.clone(), shutdown.clone());
    let admin = Arc::new(crate::admin::Admin {
        store: store.clone(),
        config: config.clone(),
        sinks: sinks.iter().map(|s| (s.name.clone(), s.clone())).collect(),
        scopes: std::sync::RwLock::new(by_watch),
        health: stats.scopes.clone(),
        capture: std::sync::Mutex::new(None),
        busy: Arc::new(tokio::sync::Semaphore::new(1)),
        shutdown: shutdown.clone(),
    });
    let http_cancel = CancellationToken::new();
    // The servers own their listeners, so they cannot start twice; without them Kubernetes
    // cannot see the process, so a server that dies stops it and a new one binds again.
    let http = supervisor.observe(
        "http",
        http_cancel.clone(),
        crate::http::serve(listener, stats.clone(), http_cancel.clone()),
    );
    let admin_http = supervisor.observe(
        "admin",
        http_cancel.clone(),
        crate::admin::serve(admin_listener, admin.clone(), token, http_cancel.clone()),
    );

    // Without it SIGTERM would not stop the process in order: stop, and a new process
    // installs the handlers again.
    supervisor.stop_on_failure("signals", http_cancel.clone(), {
        let shutdown = shutdown.clone();
        async move {
            wait_for_signal().await;
            info!("signal received: shutting down");
            shutdown.cancel();
            wait_for_signal().await;
            tracing::warn!("second signal: exiting at once");
            std::process::exit(130);
        }
    });

    let mut elector = None;
    if config.leader_election.enabled {
        let le = &config.leader_election;
        // The Lease lives in the home cluster (`leaderElection.cluster`).
        let home = clients
            .get(&config.cluster)
            .with_context(|| format!("no client for the home cluster {}", config.cluster))?;
        let mut e = Elector::new(
            home.clone(),
            ElectionConfig {
                namespace: le.namespace.clone(),
                lease_name: le.lease_name.clone(),
                identity: crate::leader::identity(),
                lease_duration: le.lease_duration,
                renew_deadline: le.renew_deadline,
                retry_period: le.retry_period,
            },
        );
        stats.standby.store(true, Ordering::Relaxed);
        info!(lease = %format!("{}/{}", le.namespace, le.lease_name), "waiting for leadership");
        if !e.acquire(&shutdown).await {
            http_cancel.cancel();
            let _ = http.await;
            let _ = admin_http.await;
            info!("stopped while standing by");
            return Ok(());
        }
        stats.standby.store(false, Ordering::Relaxed);
        elector = Some(e);
    }

    let (obs_tx, obs_rx) = mpsc::channel(OBSERVED_CHANNEL);
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_CHANNEL);
    if let Ok(mut c) = admin.capture.lock() {
        *c = Some(cmd_tx);
    }
    let (durable_tx, durable_rx) = watch::channel(last);
    let watch_cancel = CancellationToken::new();
    // Capture stops the process when it fails: it is the single writer, and a half-built
    // batch in its memory cannot be repaired in place. A new process resumes from the
    // durable checkpoints, and the watches replay what the lost batch held.
    let committed = {
        let durable = durable_rx.clone();
        move || durable.borrow().saturating_sub(last)
    };
    let new_scopes = Arc::new(NewScopes::starting_at(rules.len()));
    let capture = supervisor.stop_on_failure(
        "capture",
        watch_cancel.clone(),
        with_test_panic(
            "capture",
            committed,
            Capture::new(store.clone(), rules, durable_tx, stats.capture.clone())
                .with_metrics(stats.metrics.clone())
                .with_max_outbox_bytes(config.state.outbox.max_bytes)
                .with_new_scopes(new_scopes.clone())
                .run(obs_rx, cmd_rx, watch_cancel.clone()),
        ),
    );

    // A dispatcher restarts: everything it knows is its cursor in the store, so a new one
    // resends from the cursor with the same event ids (duplicates, never gaps).
    let sinks_cancel = CancellationToken::new();
    let config = Arc::new(config);
    let mut dispatchers = Vec::new();
    for (sink, (_, ds)) in sinks.into_iter().zip(&stats.sinks) {
        let task = format!("dispatch/{}", sink.name);
        let (config, store, durable, ds, metrics, cancel) = (
            config.clone(),
            store.clone(),
            durable_rx.clone(),
            ds.clone(),
            stats.metrics.clone(),
            sinks_cancel.clone(),
        );
        dispatchers.push(supervisor.restart(&task, sinks_cancel.clone(), {
            let task = task.clone();
            move || {
                let published = {
                    let (metrics, label) = (metrics.clone(), crate::metrics::sink(&sink.name));
                    move || metrics.published.get_or_create(&label).get()
                };
                let d = sink.clone().dispatcher(
                    &config,
                    store.clone(),
                    durable.clone(),
                    ds.clone(),
                    metrics.clone(),
                );
                let task = task.clone();
                let cancel = cancel.clone();
                async move { with_test_panic(&task, published, d.run(cancel)).await }
            }
        }));
    }

    // GC and the gauges restart: they keep nothing between rounds.
    let gc = supervisor.restart("gc", sinks_cancel.clone(), {
        let (store, sinks, cancel) = (
            store.clone(),
            config.sinks.keys().cloned().collect::<Vec<_>>(),
            sinks_cancel.clone(),
        );
        let (retention, max_bytes) = (config.state.outbox.retention, config.state.outbox.max_bytes);
        move || {
            collect_garbage(
                store.clone(),
                sinks.clone(),
                retention,
                max_bytes,
                cancel.clone(),
            )
        }
    });
    let gauges = supervisor.restart("gauges", http_cancel.clone(), {
        let (store, stats, cancel) = (store.clone(), stats.clone(), http_cancel.clone());
        move || update_gauges(store.clone(), stats.clone(), cancel.clone())
    });

    // A watch loop restarts from the checkpoint capture last committed for its scope:
    // what it had sent but capture had not committed comes again, and capture drops what
    // it already has as stale. The kinds of whole-group watches run under their group's
    // task, which also starts and stops kinds while the process runs.
    let runtime = crate::group::Runtime {
        supervisor: supervisor.clone(),
        store: store.clone(),
        observed: obs_tx.clone(),
        new_scopes: new_scopes.clone(),
        stats: stats.clone(),
        admin: admin.clone(),
        cancel: watch_cancel.clone(),
    };
    let mut watches = Vec::new();
    let mut initial: HashMap<String, Vec<(Scope, Arc<ScopeHealth>)>> = HashMap::new();
    for (scope, ScopeStats { health, .. }) in scopes.into_iter().zip(stats.scopes.all()) {
        match group_of(&scope.watch, &group_keys) {
            Some(g) => initial
                .entry(g.to_owned())
                .or_default()
                .push((scope, health)),
            None => watches.push(spawn_watch(&runtime, scope, health, watch_cancel.clone())),
        }
    }
    for g in groups {
        let key = g
            .config
            .state_key(&g.cluster, &g.config.watches[g.watch].name);
        let first = initial.remove(&key).unwrap_or_default();
        // The group task owns its kinds' loops: one that died could not tell which of them
        // still run, so its failure stops the process, and a new one starts every kind
        // again from its checkpoint.
        watches.push(supervisor.stop_on_failure(
            &format!("group/{key}"),
            watch_cancel.clone(),
            g.run(runtime.clone(), first),
        ));
    }
    // Capture ends once every sender of observations is gone: the loops' and these.
    drop(runtime);
    drop(obs_tx);
    info!(
        watches = watches.len(),
        sinks = dispatchers.len(),
        "crbridge running"
    );

    let lost = match elector.as_mut() {
        Some(e) => e.hold(&shutdown).await == Held::Lost,
        None => {
            shutdown.cancelled().await;
            false
        }
    };
    if lost {
        // Stop publishing first: another replica may take over once the lease expires.
        tracing::error!("leadership lost: stopping publishing and exiting");
        sinks_cancel.cancel();
    }
    info!("stopping watches");
    // Capture ends when the last senders of both its channels are gone: the admin
    // endpoint's command sender goes first.
    if let Ok(mut c) = admin.capture.lock() {
        c.take();
    }
    watch_cancel.cancel();
    for w in watches {
        let _ = w.await;
    }
    let _ = capture.await;
    info!("draining sinks");
    sinks_cancel.cancel();
    for d in dispatchers {
        let _ = d.await;
    }
    let _ = gc.await;
    store.flush().await?;
    if let Some(e) = elector.as_mut() {
        if !lost {
            e.release().await;
        }
    }
    http_cancel.cancel();
    let _ = http.await;
    let _ = admin_http.await;
    let _ = gauges.await;
    info!("stopped");
    if let Some(failure) = supervisor.failure() {
        anyhow::bail!("{failure}");
    }
    if lost {
        anyhow::bail!("leadership lost (lease could not be renewed within renewDeadline)");
    }
    Ok(())
}

/// The key of the whole-group watch whose kind has state key `key`, if it is one.
fn group_of<'a>(key: &str, group_keys: &'a [String]) -> Option<&'a str> {
    let (parent, _) = key.rsplit_once('/')?;
    group_keys.iter().find(|g| *g == parent).map(String::as_str)
}

/// Starts the supervised watch loop of `scope`, reporting to `health`. It restarts from
/// the checkpoint capture last committed for the scope.
pub(crate) fn spawn_watch(
    rt: &crate::group::Runtime,
    scope: Scope,
    health: Arc<ScopeHealth>,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let key = crate::store::checkpoint_key(&scope.watch, scope.namespace.as_deref());
    // Named by the config only: the watch, and the namespace when it lists several.
    let task = match &scope.namespace {
        Some(ns) => format!("watch/{}/{ns}", scope.watch),
        None => format!("watch/{}", scope.watch),
    };
    let (store, tx, metrics) = (
        rt.store.clone(),
        rt.observed.clone(),
        rt.stats.metrics.clone(),
    );
    let loop_cancel = cancel.clone();
    rt.supervisor.restart(&task, cancel, move || {
        let checkpoint = store.checkpoint(&key).unwrap_or_else(|e| {
            // Without a checkpoint the scope lists again: slower, nothing lost.
            tracing::warn!(error = %e, "reading the watch checkpoint failed: relisting");
            None
        });
        crate::watch::run(
            scope.clone(),
            checkpoint,
            tx.clone(),
            health.clone(),
            metrics.clone(),
            loop_cancel.clone(),
        )
    })
}

/// How often acked outbox entries past retention (or over the byte budget) are deleted.
const GC_EVERY: Duration = Duration::from_secs(1);

/// Dead letters past retention are looked for every this many GC rounds (a minute).
const DEAD_LETTER_EXPIRY_ROUNDS: u64 = 60;

/// Deletes outbox entries every sink has acked that are older than `retention`, or, while
/// the outbox is over `max_bytes`, acked ones regardless of age. Unacked entries are never
/// deleted: the slowest sink bounds what goes. Dead letters older than `retention` go too,
/// and the oldest ones while the outbox and dead letters together are over `max_bytes`
/// (a WARN line each).
async fn collect_garbage(
    store: Store,
    sinks: Vec<String>,
    retention: Duration,
    max_bytes: u64,
    cancel: CancellationToken,
) {
    let mut round: u64 = 0;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(GC_EVERY) => {}
        }
        let slowest = sinks
            .iter()
            .map(|s| store.cursor(s))
            .collect::<Result<Vec<_>, _>>()
            .map(|c| c.into_iter().min().unwrap_or(0));
        let cutoff = crate::store::now_ms().saturating_sub(retention.as_millis() as u64);
        match slowest.and_then(|upto| store.gc_outbox(upto, cutoff, max_bytes)) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(removed = n, "outbox garbage collected"),
            Err(e) => tracing::warn!(error = %e, "outbox garbage collection failed"),
        }
        // Dead letters count in the budget: when freeing acked events was not enough, the
        // oldest dead letters go (a WARN line each), so a sink that refuses everything
        // cannot fill the disk.
        match store.trim_dead_letters(max_bytes) {
            Ok(gone) => {
                for (sink, l) in gone {
                    tracing::warn!(sink = %sink, seq = l.seq, id = %l.entry.event.id, subject = %l.entry.event.subject, "dead letter over state.outbox.max_bytes deleted");
                }
            }
            Err(e) => tracing::warn!(error = %e, "dead letter trimming failed"),
        }
        // Dead letters are kept as long as the outbox keeps events for replay; checked once
        // a minute, since that reads every letter.
        round += 1;
        if round % DEAD_LETTER_EXPIRY_ROUNDS != 1 {
            continue;
        }
        match store.expire_dead_letters(cutoff) {
            Ok(gone) => {
                for (sink, l) in gone {
                    tracing::warn!(sink = %sink, seq = l.seq, id = %l.entry.event.id, subject = %l.entry.event.subject, "dead letter past state.outbox.retention deleted");
                }
            }
            Err(e) => tracing::warn!(error = %e, "dead letter expiry failed"),
        }
    }
}

/// Refreshes the outbox, lag and dead-letter gauges every second.
async fn update_gauges(store: Store, stats: Arc<Stats>, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let (Ok(last), Ok(first), Ok(bytes)) =
            (store.last_seq(), store.first_seq(), store.outbox_bytes())
        else {
            continue;
        };
        let m = &stats.metrics;
        m.outbox_bytes.set(bytes as i64);
        m.outbox_entries
            .set(first.map_or(0, |f| last.saturating_sub(f) + 1) as i64);
        for (name, ds) in &stats.sinks {
            let cursor = ds
                .cursor
                .load(std::sync::atomic::Ordering::Relaxed)
                .max(store.cursor(name).unwrap_or(0));
            let label = crate::metrics::sink(name);
            m.sink_lag_events
                .get_or_create(&label)
                .set(last.saturating_sub(cursor) as i64);
            let age = store
                .outbox_range(cursor + 1, cursor + 1)
                .next()
                .and_then(|r| r.ok())
                .map_or(0, |(_, e)| {
                    crate::store::now_ms().saturating_sub(e.written_ms) / 1000
                });
            m.sink_lag_seconds.get_or_create(&label).set(age as i64);
            m.dead_letters_kept
                .get_or_create(&label)
                .set(store.dead_letter_count(name) as i64);
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{checkpoint_key, Batch};

    fn config(state: &std::path::Path, name: &str) -> Config {
        crate::config::parse(
            "crbridge.yaml",
            &format!(
                "cluster: c\nstate: {{ path: {} }}\nwatches:\n  - {{ group: example.com, version: v1, kind: Widget{name}, sinks: [out] }}\nsinks:\n  out: {{ type: stdout }}\n",
                state.display()
            ),
        )
        .unwrap()
    }

    fn checkpointed(store: &Store, watch: &str) {
        store
            .commit(&Batch {
                writes: vec![],
                checkpoints: vec![(checkpoint_key(watch, None), "5".into())],
            })
            .unwrap();
    }

    #[test]
    fn state_under_the_earlier_default_name_refuses_the_start_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &Default::default()).unwrap();
        let cfg = config(dir.path(), "");
        assert_eq!(cfg.watches[0].name, "widgets.example.com");
        check_renamed_watches(&cfg, &store).expect("a new state directory starts");

        checkpointed(&store, "widget.example.com");
        let err = check_renamed_watches(&cfg, &store).unwrap_err().to_string();
        assert!(
            err.contains("widgets.example.com") && err.contains("name: widget.example.com"),
            "{err}"
        );
        // Naming it keeps the old state; once the new name has state, it is the one in use.
        check_renamed_watches(&config(dir.path(), ", name: widget.example.com"), &store).unwrap();
        checkpointed(&store, "widgets.example.com");
        check_renamed_watches(&cfg, &store).unwrap();
    }
}
