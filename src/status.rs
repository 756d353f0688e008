//! `crbridge status`: per watch its checkpoints, objects known and last event; per sink its
//! cursor, lag and dead letters; the outbox size. Computed from the state store (directly on
//! a stopped instance, by the running daemon for its admin endpoint).

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::stats::ScopeStats;
use crate::store::{checkpoint_key, now_ms, object_prefix, Store, StoreError};

/// The whole status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// True when read from a running instance.
    pub running: bool,
    /// Highest outbox sequence number assigned.
    pub last_seq: u64,
    /// Oldest retained outbox sequence number.
    pub first_seq: Option<u64>,
    /// Bytes in the outbox.
    pub outbox_bytes: u64,
    /// Per watch.
    pub watches: Vec<WatchStatus>,
    /// Per sink.
    pub sinks: Vec<SinkStatus>,
}

/// One watch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchStatus {
    /// The watch's state key: its name, `{cluster}/{watch}` in a fleet.
    pub name: String,
    /// The cluster.
    #[serde(default)]
    pub cluster: String,
    /// Checkpoint per scope: (namespace or `*`, resourceVersion).
    pub checkpoints: Vec<(String, Option<String>)>,
    /// Objects whose state is stored.
    pub objects: usize,
    /// When its last event was written (RFC 3339).
    pub last_event: Option<String>,
    /// Why its kind is unavailable, per scope that reports it (running instance only):
    /// `kind example.com/v1 Widget is not served (404)`, `forbidden: …`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<String>,
}

/// One sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkStatus {
    /// Sink name.
    pub name: String,
    /// Last acknowledged sequence number (contiguous).
    pub cursor: u64,
    /// Outbox events not yet acknowledged (some may be for other sinks' watches).
    pub lag_events: u64,
    /// Age in seconds of the oldest unacknowledged event.
    pub lag_seconds: Option<u64>,
    /// Dead letters kept.
    pub dead_letters: usize,
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

/// One entry per kind of the whole-group watch with state key `key` that has a checkpoint
/// (kinds are known from the store: they come and go with the group).
fn group_status(store: &Store, cluster: &str, key: &str) -> Result<Vec<WatchStatus>, StoreError> {
    let mut out: Vec<WatchStatus> = Vec::new();
    for (kind_key, ns, rv) in store.checkpoints_under(&format!("{key}/"))? {
        if out.last().is_none_or(|w| w.name != kind_key) {
            out.push(WatchStatus {
                cluster: cluster.to_owned(),
                objects: store.count_objects(&object_prefix(&kind_key, None)),
                last_event: store.last_event_ms(&kind_key)?.map(rfc3339),
                name: kind_key.clone(),
                checkpoints: Vec::new(),
                unavailable: Vec::new(),
            });
        }
        if let Some(w) = out.last_mut() {
            w.checkpoints.push((ns, Some(rv)));
        }
    }
    Ok(out)
}

/// Reads the status of `config`'s watches and sinks from `store`.
pub fn collect(store: &Store, config: &Config, running: bool) -> Result<Status, StoreError> {
    let last_seq = store.last_seq()?;
    let mut watches = Vec::new();
    for w in &config.watches {
        let scopes: Vec<Option<&str>> = if w.namespaces.is_empty() {
            vec![None]
        } else {
            w.namespaces.iter().map(|n| Some(n.as_str())).collect()
        };
        for cluster in &w.clusters {
            let key = config.state_key(cluster, &w.name);
            if w.is_group() {
                watches.extend(group_status(store, cluster, &key)?);
                continue;
            }
            let mut checkpoints = Vec::new();
            for ns in &scopes {
                checkpoints.push((
                    ns.unwrap_or("*").to_string(),
                    store.checkpoint(&checkpoint_key(&key, *ns))?,
                ));
            }
            watches.push(WatchStatus {
                cluster: cluster.clone(),
                objects: store.count_objects(&object_prefix(&key, None)),
                last_event: store.last_event_ms(&key)?.map(rfc3339),
                name: key,
                checkpoints,
                unavailable: Vec::new(),
            });
        }
    }
    let mut sinks = Vec::new();
    for name in config.sinks.keys() {
        let cursor = store.cursor(name)?;
        let lag_seconds = store
            .outbox_range(cursor + 1, cursor + 1)
            .next()
            .transpose()?
            .map(|(_, e)| now_ms().saturating_sub(e.written_ms) / 1000);
        sinks.push(SinkStatus {
            name: name.clone(),
            cursor,
            lag_events: last_seq.saturating_sub(cursor),
            lag_seconds,
            dead_letters: store.dead_letter_count(name),
        });
    }
    Ok(Status {
        running,
        last_seq,
        first_seq: store.first_seq()?,
        outbox_bytes: store.outbox_bytes()?,
        watches,
        sinks,
    })
}

/// Adds what the running watch loops report: why a watch's kind is unavailable. `scopes`
/// is the daemon's scope table.
pub fn add_health(status: &mut Status, scopes: &[ScopeStats]) {
    for w in &mut status.watches {
        for ScopeStats {
            watch: name,
            namespace: ns,
            health: h,
            ..
        } in scopes
        {
            if let (true, Some(u)) = (name == &w.name, h.unavailable()) {
                let line = if ns == "*" {
                    u.message
                } else {
                    format!("{ns}: {}", u.message)
                };
                w.unavailable.push(line);
            }
        }
    }
}

/// The status for humans.
pub fn render(s: &Status) -> String {
    let mut out = format!(
        "crbridge {} · outbox: seq {}..{} · {} bytes\n\nWATCH\n",
        if s.running { "running" } else { "stopped" },
        s.first_seq.map_or("-".into(), |f| f.to_string()),
        s.last_seq,
        s.outbox_bytes
    );
    for w in &s.watches {
        let cps: Vec<String> = w
            .checkpoints
            .iter()
            .map(|(ns, rv)| format!("{ns}@{}", rv.as_deref().unwrap_or("-")))
            .collect();
        out.push_str(&format!(
            "  {:<24} objects {:<8} last event {:<26} checkpoint {}\n",
            w.name,
            w.objects,
            w.last_event.as_deref().unwrap_or("-"),
            cps.join(" ")
        ));
        for u in &w.unavailable {
            out.push_str(&format!("    unavailable: {u}\n"));
        }
    }
    out.push_str("\nSINK\n");
    for k in &s.sinks {
        out.push_str(&format!(
            "  {:<24} cursor {:<10} lag {:<8} oldest unacked {:<8} dead letters {}\n",
            k.name,
            k.cursor,
            k.lag_events,
            k.lag_seconds.map_or("-".into(), |s| format!("{s}s")),
            k.dead_letters
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::{Reason, Unavailable};

    #[test]
    fn an_unavailable_kind_is_shown_under_its_watch() {
        let mut status = Status {
            running: true,
            last_seq: 0,
            first_seq: None,
            outbox_bytes: 0,
            watches: ["good", "bad"]
                .map(|name| WatchStatus {
                    name: name.into(),
                    cluster: "c".into(),
                    checkpoints: vec![("ns".into(), None)],
                    objects: 0,
                    last_event: None,
                    unavailable: Vec::new(),
                })
                .to_vec(),
            sinks: Vec::new(),
        };
        let scopes = vec![
            ScopeStats::new("c", "good", "ns"),
            ScopeStats::new("c", "bad", "ns"),
        ];
        *scopes[1].health.unavailable.lock().unwrap() = Some(Unavailable {
            reason: Reason::Forbidden,
            message: "forbidden: no".into(),
        });
        add_health(&mut status, &scopes);
        assert!(status.watches[0].unavailable.is_empty());
        assert_eq!(status.watches[1].unavailable, ["ns: forbidden: no"]);
        let text = render(&status);
        assert!(
            text.contains("\n    unavailable: ns: forbidden: no\n"),
            "{text}"
        );
        // The JSON of a status without it (an older instance) still reads.
        let mut json = serde_json::to_value(&status).unwrap();
        json["watches"][1]
            .as_object_mut()
            .unwrap()
            .remove("unavailable");
        let back: Status = serde_json::from_value(json).unwrap();
        assert!(back.watches[1].unavailable.is_empty());
    }
}
