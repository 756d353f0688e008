//! Scope state keys: `[{cluster}/]{watch}[/{plural}]`. The cluster comes first in a fleet
//! ([`super::Config::state_key`]); the plural last for the kinds of a whole-group watch
//! (`kind: "*"`), each with its own checkpoints. Watch names have no `/`, cluster names
//! and plurals neither, so a key splits without guessing once the fleet flag is known.

use std::collections::HashSet;

/// The state key of one kind of a whole-group watch whose key is `watch_key`.
pub fn kind_key(watch_key: &str, plural: &str) -> String {
    format!("{watch_key}/{plural}")
}

/// A state key split into its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateKey<'a> {
    /// The cluster, in a fleet.
    pub cluster: Option<&'a str>,
    /// The watch name.
    pub watch: &'a str,
    /// The kind's plural, for a kind of a whole-group watch.
    pub kind: Option<&'a str>,
}

impl<'a> StateKey<'a> {
    /// Splits `key`; `fleet`: whether keys carry their cluster.
    pub fn parse(key: &'a str, fleet: bool) -> Self {
        let (cluster, rest) = match key.split_once('/') {
            Some((c, rest)) if fleet => (Some(c), rest),
            _ => (None, key),
        };
        let (watch, kind) = match rest.split_once('/') {
            Some((w, k)) => (w, Some(k)),
            None => (rest, None),
        };
        StateKey {
            cluster,
            watch,
            kind,
        }
    }

    /// True when a `--watch` argument names this key: the whole key, the key without its
    /// cluster (`widgets`, `example.com/gadgets`), the watch (every kind and cluster of it),
    /// or `{cluster}/{watch}`.
    pub fn named_by(&self, arg: &str) -> bool {
        let without_cluster = match self.kind {
            Some(k) => format!("{}/{k}", self.watch),
            None => self.watch.to_owned(),
        };
        let full = match self.cluster {
            Some(c) => format!("{c}/{without_cluster}"),
            None => without_cluster.clone(),
        };
        arg == full
            || arg == without_cluster
            || arg == self.watch
            || self.cluster.is_some_and(|c| {
                arg.strip_prefix(c).and_then(|a| a.strip_prefix('/')) == Some(self.watch)
            })
    }
}

/// The state keys a sink carries: its watches' keys, and every kind under the keys of its
/// whole-group watches (kinds appear while the process runs, so they are matched by form).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchSet {
    keys: HashSet<String>,
    groups: HashSet<String>,
    fleet: bool,
}

impl WatchSet {
    /// An empty set; `fleet`: whether keys carry their cluster.
    pub fn new(fleet: bool) -> Self {
        WatchSet {
            fleet,
            ..Default::default()
        }
    }

    /// Adds a watch's state key; `group`: it is a whole-group watch.
    pub fn insert(&mut self, key: String, group: bool) {
        if group {
            self.groups.insert(key);
        } else {
            self.keys.insert(key);
        }
    }

    /// True when events of state key `key` belong to the set.
    pub fn contains(&self, key: &str) -> bool {
        self.keys.contains(key)
            || key
                .rsplit_once('/')
                .is_some_and(|(watch, _)| self.groups.contains(watch))
    }

    /// True when the set carries the watch whose state key is `watch_key`: a watch of the
    /// set, or a whole-group watch of it (whose events come under its kinds' keys).
    pub fn carries(&self, watch_key: &str) -> bool {
        self.keys.contains(watch_key) || self.groups.contains(watch_key)
    }

    /// True when events of `key` belong to the set and, if `arg` is given, `--watch arg`
    /// names it ([`StateKey::named_by`]).
    pub fn selects(&self, arg: Option<&str>, key: &str) -> bool {
        self.contains(key) && arg.is_none_or(|a| StateKey::parse(key, self.fleet).named_by(a))
    }

    /// True when no watch is in the set.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.groups.is_empty()
    }
}

/// Plain watch keys (no whole-group watch, no fleet).
impl FromIterator<String> for WatchSet {
    fn from_iter<I: IntoIterator<Item = String>>(iter: I) -> Self {
        let mut set = WatchSet::new(false);
        for key in iter {
            set.insert(key, false);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_by_the_fleet_flag() {
        let k = StateKey::parse;
        assert_eq!(
            k("widgets", false),
            StateKey {
                cluster: None,
                watch: "widgets",
                kind: None
            }
        );
        assert_eq!(
            k("example.com/gadgets", false),
            StateKey {
                cluster: None,
                watch: "example.com",
                kind: Some("gadgets")
            }
        );
        assert_eq!(
            k("east/widgets", true),
            StateKey {
                cluster: Some("east"),
                watch: "widgets",
                kind: None
            }
        );
        assert_eq!(
            k("east/example.com/gadgets", true),
            StateKey {
                cluster: Some("east"),
                watch: "example.com",
                kind: Some("gadgets")
            }
        );
    }

    #[test]
    fn a_watch_argument_names_its_keys_and_no_other() {
        let named = |arg: &str, key: &str, fleet: bool| StateKey::parse(key, fleet).named_by(arg);
        assert!(named("widgets", "widgets", false));
        assert!(named("widgets", "east/widgets", true));
        assert!(named("east/widgets", "east/widgets", true));
        assert!(!named("east/widgets", "west/widgets", true));
        assert!(!named("gets", "east/widgets", true));
        assert!(
            !named("east", "east/widgets", true),
            "a cluster is not a watch"
        );
        // A whole-group watch: by its name, by kind, with or without the cluster.
        assert!(named("example.com", "example.com/gadgets", false));
        assert!(named("example.com/gadgets", "example.com/gadgets", false));
        assert!(
            !named("gadgets", "example.com/gadgets", false),
            "a plural alone is not a watch"
        );
        assert!(!named("example.com/gizmos", "example.com/gadgets", false));
        assert!(named("example.com", "east/example.com/gadgets", true));
        assert!(named("east/example.com", "east/example.com/gadgets", true));
        assert!(named(
            "example.com/gadgets",
            "east/example.com/gadgets",
            true
        ));
        assert!(named(
            "east/example.com/gadgets",
            "east/example.com/gadgets",
            true
        ));
        assert!(!named("west/example.com", "east/example.com/gadgets", true));
    }

    #[test]
    fn a_set_carries_its_watches_and_every_kind_of_its_groups() {
        let mut set = WatchSet::new(false);
        set.insert("widgets".into(), false);
        set.insert("example.com".into(), true);
        assert!(set.contains("widgets"));
        assert!(set.contains("example.com/gadgets"));
        assert!(set.contains("example.com/installed-later"));
        assert!(
            !set.contains("example.com"),
            "the group itself publishes nothing"
        );
        assert!(!set.contains("other.org/gadgets"));
        assert!(
            !set.contains("widgets/x"),
            "a plain watch has no kinds under it"
        );
        assert!(set.selects(Some("example.com"), "example.com/gadgets"));
        assert!(!set.selects(Some("widgets"), "example.com/gadgets"));
        assert!(set.selects(None, "widgets"));
        assert!(set.carries("example.com") && set.carries("widgets") && !set.carries("other.org"));

        let mut fleet = WatchSet::new(true);
        fleet.insert("east/example.com".into(), true);
        assert!(fleet.contains("east/example.com/gadgets"));
        assert!(!fleet.contains("west/example.com/gadgets"));
    }
}
