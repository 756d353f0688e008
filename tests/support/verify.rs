//! An independent verifier for the fault suite: it knows nothing of crbridge's internals,
//! only what a consumer receives and what the API server finally holds.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::Value;

/// One event as a consumer sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Ev {
    /// CloudEvent id.
    pub id: String,
    /// Object uid (`crbuid`).
    pub uid: String,
    /// Object name.
    pub name: String,
    /// created / updated / deleted / snapshot.
    pub change: String,
    /// `sequence` (resourceVersion) as a number.
    pub rv: u64,
    /// `crbinferred`.
    pub inferred: bool,
    /// `data`.
    pub data: Value,
}

impl Ev {
    /// From CloudEvents attributes (as strings) and `data`.
    pub fn from_parts(attr: &dyn Fn(&str) -> String, data: Value) -> Ev {
        Ev {
            id: attr("id"),
            uid: attr("crbuid"),
            name: attr("crbname"),
            change: attr("type").rsplit('.').next().unwrap_or("").to_string(),
            rv: attr("sequence").parse().unwrap_or(0),
            inferred: attr("crbinferred") == "true",
            data,
        }
    }
}

/// What the API server holds at quiesce, and what the workload did.
#[derive(Debug, Clone, Default)]
pub struct Truth {
    /// Existing objects: uid → resourceVersion.
    pub live: HashMap<String, u64>,
    /// uids the workload created that no longer exist.
    pub deleted: HashSet<String>,
}

/// The verdict for one sink.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    /// Events received.
    pub events: usize,
    /// Events whose id was seen before.
    pub duplicates: usize,
    /// Objects whose final state or deletion never arrived.
    pub lost: Vec<String>,
    /// Same id with different content.
    pub conflicting_duplicates: Vec<String>,
    /// A resourceVersion older than one already delivered for the object.
    pub order_violations: Vec<String>,
    /// A patch that does not turn the previous object into the next.
    pub broken_chains: Vec<String>,
}

impl Verdict {
    /// True when nothing is wrong.
    pub fn ok(&self) -> bool {
        self.lost.is_empty()
            && self.conflicting_duplicates.is_empty()
            && self.order_violations.is_empty()
            && self.broken_chains.is_empty()
    }
}

/// Only the final-state check: cheap enough to poll while waiting for quiesce.
pub fn lost(events: &[Ev], truth: &Truth) -> Vec<String> {
    let mut last: HashMap<&str, &Ev> = HashMap::new();
    let mut deleted: HashSet<&str> = HashSet::new();
    for e in events {
        if e.change == "deleted" {
            deleted.insert(&e.uid);
        }
        match last.get(e.uid.as_str()) {
            Some(prev) if prev.rv > e.rv => {}
            _ => {
                last.insert(&e.uid, e);
            }
        }
    }
    let mut out = Vec::new();
    for (uid, rv) in &truth.live {
        match last.get(uid.as_str()) {
            Some(e) if e.rv == *rv && e.change != "deleted" => {}
            Some(e) => out.push(format!(
                "{uid}: final rv {rv}, last delivered {} {}",
                e.change, e.rv
            )),
            None => out.push(format!("{uid}: final rv {rv} never delivered")),
        }
    }
    // A deleted object must be retracted from every consumer that saw it. One created and
    // deleted while crbridge was down and had to relist was never seen: nothing to retract
    // (the documented coalescing of a relist).
    for uid in &truth.deleted {
        if last.contains_key(uid.as_str()) && !deleted.contains(uid.as_str()) {
            out.push(format!("{uid}: deletion never delivered"));
        }
    }
    out.sort();
    out
}

/// Every check, for one sink's events in arrival order.
pub fn verify(events: &[Ev], truth: &Truth) -> Verdict {
    let mut v = Verdict {
        events: events.len(),
        lost: lost(events, truth),
        ..Default::default()
    };
    let mut seen: HashMap<&str, &Ev> = HashMap::new();
    let mut unique: Vec<&Ev> = Vec::new();
    for e in events {
        match seen.get(e.id.as_str()) {
            Some(first) => {
                v.duplicates += 1;
                if first.data != e.data || first.rv != e.rv || first.change != e.change {
                    v.conflicting_duplicates.push(e.id.clone());
                }
            }
            None => {
                seen.insert(&e.id, e);
                unique.push(e);
            }
        }
    }
    let mut by_uid: BTreeMap<&str, Vec<&Ev>> = BTreeMap::new();
    for e in unique {
        by_uid.entry(&e.uid).or_default().push(e);
    }
    for (uid, evs) in by_uid {
        for w in evs.windows(2) {
            let (a, b) = (w[0], w[1]);
            if b.rv < a.rv {
                v.order_violations.push(format!(
                    "{uid}: {} {} after {} {}",
                    b.change, b.rv, a.change, a.rv
                ));
            }
            // The patch chain holds where nothing was coalesced: an update that names the
            // previous event's version as its previous one.
            let prev_rv = b.data["previousResourceVersion"].as_str().unwrap_or("");
            if b.change == "updated" && prev_rv == a.rv.to_string() && a.change != "deleted" {
                let Ok(patch) =
                    serde_json::from_value::<json_patch::Patch>(b.data["patch"].clone())
                else {
                    v.broken_chains
                        .push(format!("{uid}@{}: patch unreadable", b.rv));
                    continue;
                };
                let mut doc = a.data["object"].clone();
                if json_patch::patch(&mut doc, &patch).is_err() || doc != b.data["object"] {
                    v.broken_chains.push(format!("{uid}: {} -> {}", a.rv, b.rv));
                }
            }
        }
    }
    v
}
