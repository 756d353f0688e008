//! Scopes that start while capture runs: the kinds a whole-group watch (`kind: "*"`) finds
//! after the start. A scope is registered here before its watch loop starts, so capture
//! knows its rules before its first observation arrives.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::ScopeRules;
use crate::watch::ScopeId;

/// The scopes registered since capture last looked, and the next free [`ScopeId`].
#[derive(Debug)]
pub struct NewScopes {
    pending: Mutex<Pending>,
    /// True while `pending` holds rules capture has not taken: its hot path checks this
    /// flag, not the lock.
    waiting: AtomicBool,
}

#[derive(Debug)]
struct Pending {
    next: ScopeId,
    rules: Vec<ScopeRules>,
}

impl NewScopes {
    /// A registry whose first scope gets id `first` (the number of scopes planned at start).
    pub fn starting_at(first: ScopeId) -> Self {
        NewScopes {
            pending: Mutex::new(Pending {
                next: first,
                rules: Vec::new(),
            }),
            waiting: AtomicBool::new(false),
        }
    }

    /// Registers a scope's rules and returns the id its observations carry.
    pub fn add(&self, rules: ScopeRules) -> ScopeId {
        // A poisoned lock still holds whole entries: pushes are the only writes.
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let id = p.next;
        p.next += 1;
        p.rules.push(rules);
        self.waiting.store(true, Ordering::Release);
        id
    }

    /// The rules registered since the last call, in id order (empty when none).
    pub(super) fn take(&self) -> Vec<ScopeRules> {
        // A load first: capture asks for every input, and nothing is waiting almost always.
        if !self.waiting.load(Ordering::Acquire) || !self.waiting.swap(false, Ordering::Acquire) {
            return Vec::new();
        }
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut p.rules)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(watch: &str) -> ScopeRules {
        ScopeRules {
            watch: watch.into(),
            ..super::super::tests::rules(Default::default())
        }
    }

    #[test]
    fn ids_follow_the_planned_scopes_and_rules_come_out_in_id_order() {
        let new = NewScopes::starting_at(3);
        assert!(new.take().is_empty());
        assert_eq!(new.add(rules("g/a")), 3);
        assert_eq!(new.add(rules("g/b")), 4);
        let taken: Vec<String> = new.take().into_iter().map(|r| r.watch).collect();
        assert_eq!(taken, ["g/a", "g/b"]);
        assert!(new.take().is_empty(), "taken once");
        assert_eq!(new.add(rules("g/c")), 5);
        assert_eq!(new.take().len(), 1);
    }
}
