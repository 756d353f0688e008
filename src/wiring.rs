//! Wiring shared by `crbridge run`, the admin endpoints and the operator commands: which
//! watches feed a sink, and how a configured sink becomes a connector, a policy and a
//! [`Dispatcher`]. Each is decided here once, so the daemon and the commands cannot drift
//! apart.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::{Config, ConfigError, SinkPolicy, SinkSection, WatchSet};
use crate::dispatch::{Connector, DispatchStats, Dispatcher};
use crate::metrics::Metrics;
use crate::store::Store;

/// How long a stopping dispatcher waits for in-flight broker acks. Brokers ack within
/// milliseconds when healthy; what is not acked by then is re-sent (same ids) next time.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The watches whose events go to `sink` ([`Config::sink_watches`]).
pub fn sink_watches(config: &Config, sink: &str) -> WatchSet {
    config.sink_watches(sink)
}

/// A configured sink, ready to connect: what a dispatcher or a replay needs of it.
#[derive(Clone)]
pub struct SinkSetup {
    /// The sink's name (its key under `sinks`).
    pub name: String,
    /// Connects the sink.
    pub connector: Connector,
    /// What happens to events the sink refuses for good.
    pub policy: SinkPolicy,
}

impl SinkSetup {
    /// Reads one sink section of `file`. Fails on anything wrong in it, before anything
    /// connects.
    pub fn new(file: &str, section: &SinkSection) -> Result<Self, ConfigError> {
        let sink = crate::sinks::configure_sink(file, section)?;
        Ok(SinkSetup {
            name: section.name.clone(),
            connector: sink.connector(),
            policy: sink.policy,
        })
    }

    /// Every sink of `config`, in name order.
    pub fn all(config: &Config, file: &str) -> Result<Vec<Self>, ConfigError> {
        config
            .sinks
            .values()
            .map(|section| SinkSetup::new(file, section))
            .collect()
    }

    /// A dispatcher publishing the outbox of `store` to this sink, up to what `durable`
    /// announces, for the watches `config` routes to it.
    pub fn dispatcher(
        self,
        config: &Config,
        store: Store,
        durable: watch::Receiver<u64>,
        stats: Arc<DispatchStats>,
        metrics: Arc<Metrics>,
    ) -> Dispatcher {
        Dispatcher {
            watches: sink_watches(config, &self.name),
            name: self.name,
            store,
            connector: self.connector,
            durable,
            stats,
            drain_timeout: DRAIN_TIMEOUT,
            cursor_every: crate::dispatch::CURSOR_EVERY,
            policy: self.policy,
            metrics,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_watches_are_the_watches_naming_the_sink() {
        let yaml = r#"
cluster: c1
state: { path: /tmp/s }
sinks:
  a: { type: stdout }
  b: { type: stdout }
watches:
  - { name: w1, version: v1, kind: Pod, sinks: [a] }
  - { name: w2, group: example.com, version: v1, kind: Widget, sinks: [a, b] }
"#;
        let config = crate::config::parse("test.yaml", yaml).unwrap();
        let (a, b) = (sink_watches(&config, "a"), sink_watches(&config, "b"));
        assert!(a.contains("w1") && a.contains("w2"));
        assert!(!b.contains("w1") && b.contains("w2"));
        assert!(sink_watches(&config, "c").is_empty());
    }
}
