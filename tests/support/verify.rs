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
                if let Err(why) = chain(a, b) {
                    v.broken_chains
                        .push(format!("{uid}: {} -> {}: {why}", a.rv, b.rv));
                }
            }
        }
    }
    v
}

/// The form the patch chain runs over: the object without the fields whose change is not
/// one (README, "The event"), for a watch like the fault suite's, with neither
/// `includeStatus` nor `ignore`.
pub fn normalized(object: &Value) -> Value {
    let mut o = object.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("status");
    }
    if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        for bookkeeping in ["resourceVersion", "generation", "managedFields"] {
            meta.remove(bookkeeping);
        }
    }
    o
}

/// Whether `next`'s patch turns `prev`'s normalized object into `next`'s.
pub fn chain(prev: &Ev, next: &Ev) -> Result<(), String> {
    let patch = serde_json::from_value::<json_patch::Patch>(next.data["patch"].clone())
        .map_err(|e| format!("patch unreadable: {e}"))?;
    let mut doc = normalized(&prev.data["object"]);
    json_patch::patch(&mut doc, &patch).map_err(|e| format!("patch does not apply: {e}"))?;
    if doc != normalized(&next.data["object"]) {
        return Err("patch gives another object".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(rv: u64, size: i64, patch: Value) -> Ev {
        Ev {
            id: rv.to_string(),
            uid: "u".into(),
            name: "w".into(),
            change: if rv == 1 { "created" } else { "updated" }.into(),
            rv,
            inferred: false,
            data: json!({
                "object": {"metadata": {"name": "w", "resourceVersion": rv.to_string(), "generation": rv},
                           "spec": {"size": size}, "status": {"seen": rv}},
                "patch": patch,
                "previousResourceVersion": (rv - 1).to_string(),
            }),
        }
    }

    #[test]
    fn the_chain_runs_over_normalized_objects() {
        let truth = Truth {
            live: [("u".to_string(), 2)].into(),
            deleted: Default::default(),
        };
        let created = ev(1, 1, Value::Null);
        let what_changed = ev(
            2,
            2,
            json!([{"op": "replace", "path": "/spec/size", "value": 2}]),
        );
        assert!(verify(&[created.clone(), what_changed], &truth).ok());
        // A patch that misses the change, or touches a normalized-away field, breaks it.
        let missed = ev(2, 2, json!([]));
        assert_eq!(
            verify(&[created.clone(), missed], &truth)
                .broken_chains
                .len(),
            1
        );
        let bookkeeping = ev(
            2,
            2,
            json!([{"op": "replace", "path": "/spec/size", "value": 2},
                   {"op": "replace", "path": "/metadata/resourceVersion", "value": "2"}]),
        );
        assert!(chain(&created, &bookkeeping).is_err());
    }
}
