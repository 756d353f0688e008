//! Prometheus metrics. Names are constants here; labels never carry object names (only
//! cluster, watch, sink, change type and error kind), so cardinality is bounded by the
//! config. Every per-watch metric carries the cluster as well (`cluster`, the name events
//! carry in `source`), also with a single cluster.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels: a watch.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchLabel {
    /// Cluster name.
    pub cluster: String,
    /// Watch name.
    pub watch: String,
}

/// Labels: a watch and a change type.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchType {
    /// Cluster name.
    pub cluster: String,
    /// Watch name.
    pub watch: String,
    /// created / updated / deleted / snapshot.
    pub r#type: String,
}

/// Labels: a watch and why it is unavailable (a fixed set: forbidden, not_found, other).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchReason {
    /// Cluster name.
    pub cluster: String,
    /// Watch name.
    pub watch: String,
    /// forbidden / not_found / other.
    pub reason: String,
}

/// Labels: a sink.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabel {
    /// Sink name.
    pub sink: String,
}

/// Labels: a supervised task.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabel {
    /// Task name: a fixed string (`capture`, `dispatch/<sink>`, `watch/<watch>`, `gc`, ...).
    pub task: String,
}

/// Labels: an error kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorKind {
    /// Where it happened: watch, commit, publish, connect, gc.
    pub kind: String,
}

/// Every metric crbridge exports.
pub struct Metrics {
    registry: Registry,
    /// Observations received from watches (events, list items).
    pub observed: Family<WatchLabel, Counter>,
    /// Events written to the outbox.
    pub events: Family<WatchType, Counter>,
    /// Updates dropped as no-ops.
    pub suppressed: Family<WatchLabel, Counter>,
    /// Changes the watch's `filter` did not publish.
    pub filtered: Family<WatchLabel, Counter>,
    /// Evaluations of the watch's `filter` that failed.
    pub filter_errors: Family<WatchLabel, Counter>,
    /// Events reconstructed by a relist.
    pub inferred: Family<WatchType, Counter>,
    /// Events acknowledged by a sink's broker.
    pub published: Family<SinkLabel, Counter>,
    /// Seconds from the change being observed to the broker's ack.
    pub publish_latency: Family<SinkLabel, Histogram>,
    /// Seconds one capture batch took to commit and flush to disk.
    pub commit_seconds: Histogram,
    /// Entries in the outbox.
    pub outbox_entries: Gauge,
    /// Bytes in the outbox.
    pub outbox_bytes: Gauge,
    /// Events in the outbox a sink has not acked.
    pub sink_lag_events: Family<SinkLabel, Gauge>,
    /// Age in seconds of the oldest event a sink has not acked.
    pub sink_lag_seconds: Family<SinkLabel, Gauge>,
    /// Events kept as dead letters.
    pub dead_letters: Family<SinkLabel, Counter>,
    /// Dead letters kept now (not yet redriven or dropped).
    pub dead_letters_kept: Family<SinkLabel, Gauge>,
    /// Watches (re)opened.
    pub watch_restarts: Family<WatchLabel, Counter>,
    /// Lists started (first start and relists).
    pub relists: Family<WatchLabel, Counter>,
    /// 410 Gone answers.
    pub gone: Family<WatchLabel, Counter>,
    /// Errors by kind.
    pub errors: Family<ErrorKind, Counter>,
    /// Supervised tasks restarted after a panic or an unexpected exit.
    pub task_restarts: Family<TaskLabel, Counter>,
    /// 1 while every scope of the watch has its kind served and allowed, else 0.
    pub watch_up: Family<WatchLabel, Gauge>,
    /// Scopes of the watch whose kind is unavailable, by reason.
    pub watch_unavailable: Family<WatchReason, Gauge>,
}

/// `crbridge_events_observed_total`
pub const OBSERVED: &str = "crbridge_events_observed";
/// `crbridge_events_total`
pub const EVENTS: &str = "crbridge_events";
/// `crbridge_events_suppressed_total`
pub const SUPPRESSED: &str = "crbridge_events_suppressed";
/// `crbridge_events_filtered_total`
pub const FILTERED: &str = "crbridge_events_filtered";
/// `crbridge_filter_errors_total`
pub const FILTER_ERRORS: &str = "crbridge_filter_errors";
/// `crbridge_events_inferred_total`
pub const INFERRED: &str = "crbridge_events_inferred";
/// `crbridge_events_published_total`
pub const PUBLISHED: &str = "crbridge_events_published";
/// `crbridge_publish_latency_seconds`
pub const PUBLISH_LATENCY: &str = "crbridge_publish_latency_seconds";
/// `crbridge_commit_seconds`
pub const COMMIT: &str = "crbridge_commit_seconds";
/// `crbridge_outbox_entries`
pub const OUTBOX_ENTRIES: &str = "crbridge_outbox_entries";
/// `crbridge_outbox_bytes`
pub const OUTBOX_BYTES: &str = "crbridge_outbox_bytes";
/// `crbridge_sink_lag_events`
pub const SINK_LAG_EVENTS: &str = "crbridge_sink_lag_events";
/// `crbridge_sink_lag_seconds`
pub const SINK_LAG_SECONDS: &str = "crbridge_sink_lag_seconds";
/// `crbridge_dead_letters_total`
pub const DEAD_LETTERS: &str = "crbridge_dead_letters";
/// The `kind` values of `crbridge_errors_total`: a failed commit of the state store, a
/// failed watch request.
pub const ERROR_KINDS: [&str; 2] = ["commit", "watch"];
/// `crbridge_dead_letters_kept`
pub const DEAD_LETTERS_KEPT: &str = "crbridge_dead_letters_kept";
/// `crbridge_watch_restarts_total`
pub const WATCH_RESTARTS: &str = "crbridge_watch_restarts";
/// `crbridge_relists_total`
pub const RELISTS: &str = "crbridge_relists";
/// `crbridge_watch_gone_total`
pub const GONE: &str = "crbridge_watch_gone";
/// `crbridge_errors_total`
pub const ERRORS: &str = "crbridge_errors";
/// `crbridge_task_restarts_total`
pub const TASK_RESTARTS: &str = "crbridge_task_restarts";
/// `crbridge_watch_up`
pub const WATCH_UP: &str = "crbridge_watch_up";
/// `crbridge_watch_unavailable_scopes`
pub const WATCH_UNAVAILABLE: &str = "crbridge_watch_unavailable_scopes";

/// 100 µs .. ~27 s in steps of 25 %: fine enough to read p50 / p99 of sub-millisecond
/// acks and flushes, and outages still show in the top buckets.
fn latency_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 1.25, 57,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// All metrics, registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            observed: Family::default(),
            events: Family::default(),
            suppressed: Family::default(),
            filtered: Family::default(),
            filter_errors: Family::default(),
            inferred: Family::default(),
            published: Family::default(),
            publish_latency: Family::new_with_constructor(latency_histogram),
            commit_seconds: latency_histogram(),
            outbox_entries: Gauge::default(),
            outbox_bytes: Gauge::default(),
            sink_lag_events: Family::default(),
            sink_lag_seconds: Family::default(),
            dead_letters: Family::default(),
            dead_letters_kept: Family::default(),
            watch_restarts: Family::default(),
            relists: Family::default(),
            gone: Family::default(),
            errors: Family::default(),
            task_restarts: Family::default(),
            watch_up: Family::default(),
            watch_unavailable: Family::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            OBSERVED,
            "Observations received from watches and lists",
            m.observed.clone(),
        );
        r.register(EVENTS, "Events written to the outbox", m.events.clone());
        r.register(
            SUPPRESSED,
            "Updates dropped because nothing meaningful changed",
            m.suppressed.clone(),
        );
        r.register(
            FILTERED,
            "Changes the watch's filter did not publish",
            m.filtered.clone(),
        );
        r.register(
            FILTER_ERRORS,
            "Evaluations of the watch's filter that failed (the change is published unless filterErrors: drop)",
            m.filter_errors.clone(),
        );
        r.register(
            INFERRED,
            "Events reconstructed by a relist",
            m.inferred.clone(),
        );
        r.register(
            PUBLISHED,
            "Events acknowledged by the sink's broker",
            m.published.clone(),
        );
        r.register(
            PUBLISH_LATENCY,
            "Seconds from observing a change to the broker's ack",
            m.publish_latency.clone(),
        );
        r.register(
            COMMIT,
            "Seconds a capture batch took to commit and flush to disk",
            m.commit_seconds.clone(),
        );
        r.register(
            OUTBOX_ENTRIES,
            "Entries in the outbox",
            m.outbox_entries.clone(),
        );
        r.register(
            OUTBOX_BYTES,
            "Bytes of events in the outbox",
            m.outbox_bytes.clone(),
        );
        r.register(
            SINK_LAG_EVENTS,
            "Outbox events the sink has not acked",
            m.sink_lag_events.clone(),
        );
        r.register(
            SINK_LAG_SECONDS,
            "Age of the oldest event the sink has not acked",
            m.sink_lag_seconds.clone(),
        );
        r.register(
            DEAD_LETTERS,
            "Events a sink refused for good, kept as dead letters",
            m.dead_letters.clone(),
        );
        r.register(
            DEAD_LETTERS_KEPT,
            "Dead letters kept now, until redriven or dropped (crbridge deadletters)",
            m.dead_letters_kept.clone(),
        );
        r.register(
            WATCH_RESTARTS,
            "Watches opened or reopened",
            m.watch_restarts.clone(),
        );
        r.register(
            RELISTS,
            "Lists started (first start and after 410 Gone)",
            m.relists.clone(),
        );
        r.register(
            GONE,
            "410 Gone answers (resourceVersion expired)",
            m.gone.clone(),
        );
        r.register(ERRORS, "Errors by kind", m.errors.clone());
        r.register(
            TASK_RESTARTS,
            "Supervised tasks restarted after a panic or an unexpected exit",
            m.task_restarts.clone(),
        );
        r.register(
            WATCH_UP,
            "1 while the watch's kind is served and allowed in every scope, else 0",
            m.watch_up.clone(),
        );
        r.register(
            WATCH_UNAVAILABLE,
            "Scopes of the watch whose kind is unavailable, by reason (forbidden, not_found, other)",
            m.watch_unavailable.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Creates, at 0, the counters alerts take an `increase` or `rate` of, for every sink and
    /// scope (`(cluster, state key)`) of the config: Prometheus sees a series only from its
    /// first sample, so a counter that appeared at 1 would never show an increase.
    pub fn register_known<'a>(
        &self,
        sinks: impl IntoIterator<Item = &'a str>,
        scopes: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) {
        // `get_or_create` alone creates the series; the guard it returns is not needed.
        for s in sinks {
            let _ = self.dead_letters.get_or_create(&sink(s));
        }
        for (cluster, key) in scopes {
            let _ = self.gone.get_or_create(&watch(cluster, key));
        }
        for kind in ERROR_KINDS {
            let _ = self.errors.get_or_create(&ErrorKind {
                kind: kind.to_string(),
            });
        }
    }

    /// Counts an error of `kind`.
    pub fn error(&self, kind: &str) {
        self.errors
            .get_or_create(&ErrorKind {
                kind: kind.to_string(),
            })
            .inc();
    }
}

/// The watch name in a scope's state key (`{cluster}/{watch}` in a fleet).
fn watch_name<'a>(cluster: &str, key: &'a str) -> &'a str {
    key.strip_prefix(cluster)
        .and_then(|k| k.strip_prefix('/'))
        .unwrap_or(key)
}

/// Labels for the watch whose state key is `key`, in `cluster`.
pub fn watch(cluster: &str, key: &str) -> WatchLabel {
    WatchLabel {
        cluster: cluster.to_string(),
        watch: watch_name(cluster, key).to_string(),
    }
}

/// Labels for a watch and change type.
pub fn watch_type(cluster: &str, key: &str, t: &str) -> WatchType {
    WatchType {
        cluster: cluster.to_string(),
        watch: watch_name(cluster, key).to_string(),
        r#type: t.to_string(),
    }
}

/// Labels for a watch and an unavailability reason.
pub fn watch_reason(cluster: &str, key: &str, reason: &str) -> WatchReason {
    WatchReason {
        cluster: cluster.to_string(),
        watch: watch_name(cluster, key).to_string(),
        reason: reason.to_string(),
    }
}

/// Labels for a sink.
pub fn sink(s: &str) -> SinkLabel {
    SinkLabel {
        sink: s.to_string(),
    }
}

/// Labels for a supervised task.
pub fn task(t: &str) -> TaskLabel {
    TaskLabel {
        task: t.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_counters_start_at_zero() {
        let m = Metrics::new();
        m.register_known(["nats"], [("east", "east/widgets")]);
        let text = m.encode();
        for line in [
            "crbridge_dead_letters_total{sink=\"nats\"} 0",
            "crbridge_watch_gone_total{cluster=\"east\",watch=\"widgets\"} 0",
            "crbridge_errors_total{kind=\"commit\"} 0",
            "crbridge_errors_total{kind=\"watch\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn exposition_names_and_labels() {
        let m = Metrics::new();
        m.events
            .get_or_create(&watch_type("east", "east/widgets", "created"))
            .inc();
        m.publish_latency
            .get_or_create(&sink("nats"))
            .observe(0.003);
        m.error("commit");
        let text = m.encode();
        assert!(
            text.contains(
                "crbridge_events_total{cluster=\"east\",watch=\"widgets\",type=\"created\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("crbridge_publish_latency_seconds_count{sink=\"nats\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("crbridge_errors_total{kind=\"commit\"} 1"),
            "{text}"
        );
    }
}
