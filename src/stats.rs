//! What the running daemon shares with its HTTP endpoints: metrics, and the health of every
//! loop, with the pure checks `/healthz` and `/readyz` answer from it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use crate::capture::CaptureStats;
use crate::dispatch::DispatchStats;
use crate::metrics::Metrics;
use crate::supervise::Tasks;
use crate::watch::{Reason, ScopeHealth};

/// A scope whose requests have failed for this long makes the process not ready (a single
/// failed request retried at once does not).
const FAILING_MS: u64 = 3_000;

/// A watch loop silent for this long (no page, no event, no bookmark, no reopen) is
/// stalled: it reopens an idle watch every 330 s at the latest, so twice that is a hang.
const STALLED_MS: u64 = 11 * 60 * 1000;

/// One watch scope as the endpoints see it.
#[derive(Debug, Clone)]
pub struct ScopeStats {
    /// The cluster it is in.
    pub cluster: String,
    /// Its state key: the watch name (`{cluster}/{watch}` in a fleet).
    pub watch: String,
    /// Its namespace, or `*`.
    pub namespace: String,
    /// Its loop's health.
    pub health: Arc<ScopeHealth>,
}

impl ScopeStats {
    /// A scope whose loop has not started.
    pub fn new(cluster: &str, watch: &str, namespace: &str) -> Self {
        ScopeStats {
            cluster: cluster.into(),
            watch: watch.into(),
            namespace: namespace.into(),
            health: Arc::default(),
        }
    }
}

/// The watch scopes: the ones planned at start, and the kinds whole-group watches add and
/// remove while the process runs.
#[derive(Debug, Default)]
pub struct ScopeList(RwLock<Vec<ScopeStats>>);

impl ScopeList {
    /// Every scope now, in the order they were added.
    pub fn all(&self) -> Vec<ScopeStats> {
        // A poisoned lock still holds whole entries: writers push or retain.
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Adds a scope.
    pub fn push(&self, scope: ScopeStats) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(scope);
    }

    /// Removes the scopes of state key `watch` in `cluster` (a kind its group no longer
    /// serves).
    pub fn remove(&self, cluster: &str, watch: &str) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|s| !(s.cluster == cluster && s.watch == watch));
    }
}

impl From<Vec<ScopeStats>> for ScopeList {
    fn from(scopes: Vec<ScopeStats>) -> Self {
        ScopeList(RwLock::new(scopes))
    }
}

/// Shared state the HTTP endpoints read: metrics, health of every loop.
#[derive(Default)]
pub struct Stats {
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Capture counters and health.
    pub capture: Arc<CaptureStats>,
    /// Per-scope watch health.
    pub scopes: Arc<ScopeList>,
    /// Per-sink counters and health.
    pub sinks: Vec<(String, Arc<DispatchStats>)>,
    /// True while waiting for leadership (watches and sinks not started).
    pub standby: AtomicBool,
    /// Supervised tasks that are down (restarting, or stopping the process).
    pub tasks: Arc<Tasks>,
}

impl Stats {
    /// Sets `crbridge_watch_up` and `crbridge_watch_unavailable_scopes` from the scopes'
    /// health (one watch may have several scopes, so per watch, at read time).
    pub fn refresh_watch_gauges(&self) {
        let m = &self.metrics;
        let scopes = self.scopes.all();
        let mut watches: Vec<(&str, &str)> = scopes
            .iter()
            .map(|s| (s.cluster.as_str(), s.watch.as_str()))
            .collect();
        watches.sort_unstable();
        watches.dedup();
        for (cluster, w) in watches {
            let reasons: Vec<Reason> = scopes
                .iter()
                .filter(|s| s.watch == w && s.cluster == cluster)
                .filter_map(|s| s.health.unavailable().map(|u| u.reason))
                .collect();
            m.watch_up
                .get_or_create(&crate::metrics::watch(cluster, w))
                .set(i64::from(reasons.is_empty()));
            for r in [Reason::Forbidden, Reason::NotFound, Reason::Other] {
                let n = reasons.iter().filter(|x| **x == r).count();
                m.watch_unavailable
                    .get_or_create(&crate::metrics::watch_reason(cluster, w, r.as_str()))
                    .set(n as i64);
            }
        }
    }
}

/// One line per supervised task that is down: it died and has not run again yet.
fn tasks_down(stats: &Stats) -> impl Iterator<Item = String> {
    stats
        .tasks
        .down()
        .into_iter()
        .map(|(task, why)| format!("task {task} {why}"))
}

/// Problems that make the process unhealthy (it should be restarted): a stalled watch, or
/// a supervised task that died (shown from its death until it runs again, so within
/// seconds, whether it is restarting or stopping the process). A scope whose kind is
/// unavailable is not one: its loop is alive, re-resolving with backoff, and a restart
/// would not bring the kind back.
pub fn liveness_problems(stats: &Stats) -> Vec<String> {
    let now = crate::store::now_ms();
    let mut out: Vec<String> = tasks_down(stats).collect();
    out.extend(
        stats
            .scopes
            .all()
            .iter()
            .filter(|s| {
                now.saturating_sub(s.health.last_progress_ms.load(Ordering::Relaxed)) > STALLED_MS
                    && s.health.unavailable().is_none()
            })
            .map(|s| format!("watch {} ({}) stalled", s.watch, s.namespace)),
    );
    out
}

/// Reasons the process is not ready (should not receive traffic / is not caught up).
/// A standby waiting for leadership is ready: it is doing its job, and a StatefulSet rollout
/// must not wait on it.
pub fn readiness_problems(stats: &Stats) -> Vec<String> {
    if stats.standby.load(Ordering::Relaxed) {
        return Vec::new();
    }
    let mut out: Vec<String> = tasks_down(stats).collect();
    let now = crate::store::now_ms();
    for ScopeStats {
        cluster,
        watch: w,
        namespace: ns,
        health: h,
    } in &stats.scopes.all()
    {
        let failing = h
            .failing()
            .filter(|(since, _)| now.saturating_sub(*since) >= FAILING_MS);
        let problem = match (h.unavailable(), failing) {
            (Some(u), _) => format!("watch {w}: {}", u.message),
            (None, Some((since, message))) => format!(
                "cluster {cluster}: watch {w} ({ns}) failing for {}s: {message}",
                now.saturating_sub(since) / 1000
            ),
            (None, None) if !h.synced.load(Ordering::Relaxed) => {
                format!("watch {w} ({ns}) not synced")
            }
            (None, None) => continue,
        };
        // Scopes of one watch in several namespaces often share the reason.
        if !out.contains(&problem) {
            out.push(problem);
        }
    }
    out.extend(
        stats
            .sinks
            .iter()
            .filter(|(_, s)| !s.healthy.load(Ordering::Relaxed))
            .map(|(n, _)| format!("sink {n} unhealthy")),
    );
    if !stats.capture.healthy.load(Ordering::Relaxed) {
        out.push("state store commits failing".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> Stats {
        Stats {
            scopes: Arc::new(vec![ScopeStats::new("c", "w", "*")].into()),
            sinks: vec![("s".into(), Arc::new(DispatchStats::default()))],
            ..Default::default()
        }
    }

    #[test]
    fn nothing_started_is_neither_ready_nor_alive_but_a_standby_is_ready() {
        let stats = stats();
        assert_eq!(
            readiness_problems(&stats),
            [
                "watch w (*) not synced",
                "sink s unhealthy",
                "state store commits failing"
            ]
        );
        assert_eq!(liveness_problems(&stats), ["watch w (*) stalled"]);
        stats.standby.store(true, Ordering::Relaxed);
        assert!(readiness_problems(&stats).is_empty());
    }

    fn unavailable(h: &ScopeHealth, reason: Reason, message: &str) {
        *h.unavailable.lock().unwrap() = Some(crate::watch::Unavailable {
            reason,
            message: message.into(),
        });
    }

    #[test]
    fn an_unavailable_kind_is_named_in_readiness_not_liveness_and_in_the_gauges() {
        let stats = Stats {
            scopes: Arc::new(
                vec![
                    ScopeStats::new("c", "good", "*"),
                    ScopeStats::new("c", "bad", "a"),
                    ScopeStats::new("c", "bad", "b"),
                ]
                .into(),
            ),
            ..Default::default()
        };
        stats.capture.healthy.store(true, Ordering::Relaxed);
        for s in &stats.scopes.all() {
            s.health.last_progress_ms.store(0, Ordering::Relaxed);
        }
        stats.scopes.all()[0]
            .health
            .synced
            .store(true, Ordering::Relaxed);
        stats.scopes.all()[0]
            .health
            .last_progress_ms
            .store(crate::store::now_ms(), Ordering::Relaxed);
        let message = "kind example.com/v1 Widget is not served (404)";
        unavailable(&stats.scopes.all()[1].health, Reason::NotFound, message);
        unavailable(&stats.scopes.all()[2].health, Reason::NotFound, message);
        // Both scopes say the same: one line.
        assert_eq!(
            readiness_problems(&stats),
            [format!("watch bad: {message}")]
        );
        // Long without progress, but alive and retrying.
        assert!(liveness_problems(&stats).is_empty());

        unavailable(
            &stats.scopes.all()[2].health,
            Reason::Forbidden,
            "forbidden: no",
        );
        stats.refresh_watch_gauges();
        let text = stats.metrics.encode();
        for line in [
            "crbridge_watch_up{cluster=\"c\",watch=\"good\"} 1",
            "crbridge_watch_up{cluster=\"c\",watch=\"bad\"} 0",
            "crbridge_watch_unavailable_scopes{cluster=\"c\",watch=\"bad\",reason=\"not_found\"} 1",
            "crbridge_watch_unavailable_scopes{cluster=\"c\",watch=\"bad\",reason=\"forbidden\"} 1",
            "crbridge_watch_unavailable_scopes{cluster=\"c\",watch=\"good\",reason=\"not_found\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        *stats.scopes.all()[1].health.unavailable.lock().unwrap() = None;
        *stats.scopes.all()[2].health.unavailable.lock().unwrap() = None;
        stats.refresh_watch_gauges();
        assert!(stats
            .metrics
            .encode()
            .contains("crbridge_watch_up{cluster=\"c\",watch=\"bad\"} 1"));
    }

    #[test]
    fn a_scope_failing_for_seconds_names_its_cluster_in_readiness() {
        let stats = stats();
        stats.scopes.all()[0]
            .health
            .synced
            .store(true, Ordering::Relaxed);
        stats.sinks[0].1.healthy.store(true, Ordering::Relaxed);
        stats.capture.healthy.store(true, Ordering::Relaxed);
        let now = crate::store::now_ms();
        *stats.scopes.all()[0].health.failing.lock().unwrap() = Some((now, "refused".into()));
        assert!(
            readiness_problems(&stats).is_empty(),
            "a fresh failure is retried first"
        );
        *stats.scopes.all()[0].health.failing.lock().unwrap() =
            Some((now - 5_000, "refused".into()));
        let problems = readiness_problems(&stats);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("cluster c: watch w (*) failing for ")
                && problems[0].ends_with(": refused"),
            "{problems:?}"
        );
    }

    #[test]
    fn synced_healthy_loops_are_ready_and_alive() {
        let stats = stats();
        stats.scopes.all()[0]
            .health
            .synced
            .store(true, Ordering::Relaxed);
        stats.scopes.all()[0]
            .health
            .last_progress_ms
            .store(crate::store::now_ms(), Ordering::Relaxed);
        stats.sinks[0].1.healthy.store(true, Ordering::Relaxed);
        stats.capture.healthy.store(true, Ordering::Relaxed);
        assert!(readiness_problems(&stats).is_empty());
        assert!(liveness_problems(&stats).is_empty());
    }

    #[test]
    fn a_dead_task_is_named_by_both_checks_until_it_runs_again() {
        let stats = stats();
        stats.scopes.all()[0]
            .health
            .synced
            .store(true, Ordering::Relaxed);
        stats.scopes.all()[0]
            .health
            .last_progress_ms
            .store(crate::store::now_ms(), Ordering::Relaxed);
        stats.sinks[0].1.healthy.store(true, Ordering::Relaxed);
        stats.capture.healthy.store(true, Ordering::Relaxed);
        stats
            .tasks
            .set_down("dispatch/s", "panicked: boom; restarting".into());
        let want = ["task dispatch/s panicked: boom; restarting"];
        assert_eq!(liveness_problems(&stats), want);
        assert_eq!(readiness_problems(&stats), want);
        stats.tasks.set_up("dispatch/s");
        assert!(liveness_problems(&stats).is_empty());
        assert!(readiness_problems(&stats).is_empty());
    }
}
