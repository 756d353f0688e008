//! What the normalized form keeps of a clean object, and the three walks over it: equality
//! ([`equal`]), the normalized copy ([`project`]) and, in `patch`, the diff.
//!
//! Two trees of reference tokens say it, both with `*` (any key or array index):
//!
//! * the **keep** tree, from `include` and an `includeStatus` list: where a node lists
//!   paths, members and elements it does not list are left out; a leaf keeps everything
//!   under it;
//! * the **drop** tree, from the bookkeeping fields, `status` unless included, and `ignore`:
//!   a leaf leaves out everything under it.
//!
//! A third tree, the **fields** tree from `fields` (projection), is a keep tree too: where a
//! watch projects, a member is kept only when both keep trees keep it and the drop tree
//! does not drop it. A left-out array element is removed, so the elements after it move up;
//! every tree names elements by their index in the clean object.
//!
//! All three walks read a clean object through the same cursor ([`Skip`]) and the same two
//! views ([`members`], [`elements`]), so they agree by construction: `equal(a, b)` is
//! `project(a) == project(b)`, and the patch between two clean objects is the patch between
//! their projections, computed without copying either.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// The token that matches any key or array index.
pub(super) const ANY: &str = "*";

/// A tree of paths (see the module doc for what a leaf means in each tree).
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Tree {
    /// Everything under this node is kept (keep tree) or left out (drop tree).
    leaf: bool,
    /// Keep tree: members and elements this node does not name are left out.
    only: bool,
    /// Rules for the members (or indices) named exactly; each holds `any`'s rules too.
    children: BTreeMap<String, Tree>,
    /// Rules for every member or index (`*`).
    any: Option<Box<Tree>>,
}

impl Tree {
    /// Adds the path `tokens`: `only` is set on every node along it (keep trees), and its
    /// last node becomes a leaf.
    pub(super) fn insert(&mut self, tokens: &[String], only: bool) {
        let Some((first, rest)) = tokens.split_first() else {
            self.leaf = true;
            return;
        };
        self.only |= only;
        let next = if first == ANY {
            self.any.get_or_insert_with(Default::default)
        } else {
            self.children.entry(first.clone()).or_default()
        };
        next.insert(rest, only);
    }

    /// Merges the wildcard rules into every exact child, so that one lookup (the exact
    /// child, else the wildcard) finds everything that applies. Call once, after inserting.
    pub(super) fn settle(&mut self) {
        if let Some(any) = &mut self.any {
            any.settle();
        }
        let any = self.any.as_deref();
        for child in self.children.values_mut() {
            if let Some(any) = any {
                child.merge(any);
            }
            child.settle();
        }
    }

    /// Keeps, at this node, the members no path names (only the named ones are
    /// restricted).
    pub(super) fn unrestrict(&mut self) {
        self.only = false;
    }

    /// Unions `other` into `self`: kept (or dropped) when either keeps (or drops) it.
    fn merge(&mut self, other: &Tree) {
        self.leaf |= other.leaf;
        self.only &= other.only;
        for (k, v) in &other.children {
            self.children.entry(k.clone()).or_default().merge(v);
        }
        if let Some(o) = &other.any {
            self.any.get_or_insert_with(Default::default).merge(o);
        }
    }

    /// The node that applies to member `key`.
    fn get(&self, key: &str) -> Option<&Tree> {
        self.children.get(key).or(self.any.as_deref())
    }
}

/// Where a walk is: the keep and drop rules that apply to the current value. `None` keeps
/// everything (keep) or drops nothing (drop).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Skip<'a> {
    keep: Option<&'a Tree>,
    fields: Option<&'a Tree>,
    drop: Option<&'a Tree>,
}

/// Leaves nothing out.
pub(super) const NOTHING: Skip<'static> = Skip {
    keep: None,
    fields: None,
    drop: None,
};

/// A keep tree at the root, or `None` when it keeps everything.
fn keep_root(keep: &Tree) -> Option<&Tree> {
    (!keep.leaf && (keep.only || !keep.children.is_empty() || keep.any.is_some())).then_some(keep)
}

/// What keep tree `keep` says of member `key`: `None` when the member is left out, else
/// the rules under it (`None` inside: keep everything).
fn kept<'a>(keep: Option<&'a Tree>, key: &str) -> Option<Option<&'a Tree>> {
    let Some(k) = keep else {
        return Some(None);
    };
    match k.get(key) {
        Some(c) if c.leaf => Some(None),
        Some(c) => Some(Some(c)),
        None if k.only => None,
        None => Some(None),
    }
}

impl<'a> Skip<'a> {
    /// The rules at the root of an object.
    pub(super) fn root(keep: &'a Tree, drop: &'a Tree) -> Self {
        Skip {
            keep: keep_root(keep),
            fields: None,
            drop: Some(drop),
        }
    }

    /// These rules, restricted to what the fields tree `fields` keeps as well (at the root).
    pub(super) fn within(self, fields: &'a Tree) -> Self {
        Skip {
            fields: keep_root(fields),
            ..self
        }
    }

    /// True when nothing under this value is left out: it compares and copies as is.
    fn is_empty(&self) -> bool {
        self.keep.is_none()
            && self.fields.is_none()
            && self
                .drop
                .is_none_or(|d| d.children.is_empty() && d.any.is_none())
    }

    /// The rules under member (or array index) `key`: `None` when the whole member is left
    /// out.
    fn child(&self, key: &str) -> Option<Skip<'a>> {
        let drop = self.drop.and_then(|d| d.get(key));
        if drop.is_some_and(|d| d.leaf) {
            return None;
        }
        let keep = kept(self.keep, key)?;
        let fields = kept(self.fields, key)?;
        Some(Skip { keep, fields, drop })
    }
}

/// The members of an object that the normalized form keeps, each with the rules under it.
pub(super) fn members<'a, 's>(
    m: &'a Map<String, Value>,
    skip: Skip<'s>,
) -> impl Iterator<Item = (&'a String, &'a Value, Skip<'s>)> {
    m.iter()
        .filter_map(move |(k, v)| skip.child(k).map(|s| (k, v, s)))
}

/// The elements of an array that the normalized form keeps (a left-out index is removed,
/// so later elements move up), each with the rules under it.
pub(super) fn elements<'a, 's>(a: &'a [Value], skip: Skip<'s>) -> Vec<(&'a Value, Skip<'s>)> {
    if skip.is_empty() {
        return a.iter().map(|v| (v, NOTHING)).collect();
    }
    a.iter()
        .enumerate()
        .filter_map(|(i, v)| skip.child(&i.to_string()).map(|s| (v, s)))
        .collect()
}

/// `project(a, skip) == project(b, skip)`, without copying either.
pub(super) fn equal(a: &Value, b: &Value, skip: Skip<'_>) -> bool {
    if skip.is_empty() {
        return a == b;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            members(x, skip).count() == members(y, skip).count()
                && members(x, skip).all(|(k, v, s)| y.get(k).is_some_and(|w| equal(v, w, s)))
        }
        (Value::Array(x), Value::Array(y)) => {
            let (x, y) = (elements(x, skip), elements(y, skip));
            x.len() == y.len() && x.iter().zip(&y).all(|((v, s), (w, _))| equal(v, w, *s))
        }
        _ => a == b,
    }
}

/// The normalized copy of `v`: `v` without what `skip` leaves out.
pub(super) fn project(v: &Value, skip: Skip<'_>) -> Value {
    if skip.is_empty() {
        return v.clone();
    }
    match v {
        Value::Object(m) => Value::Object(
            members(m, skip)
                .map(|(k, v, s)| (k.clone(), project(v, s)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(
            elements(a, skip)
                .into_iter()
                .map(|(v, s)| project(v, s))
                .collect(),
        ),
        _ => v.clone(),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::diff::tests::arb_json;
    use proptest::prelude::*;
    use serde_json::json;

    /// Keep and drop trees of up to 3 paths each over the keys `arb_json` (and `patch`'s
    /// pairs) use, small array indices and `*`.
    pub(in crate::diff) fn arb_trees() -> impl Strategy<Value = (Tree, Tree)> {
        let token = prop_oneof![
            "[a-d~/.]{0,2}",
            (0usize..4).prop_map(|i| i.to_string()),
            prop::sample::select(vec!["same", "changed", "kept", ANY]).prop_map(str::to_string),
        ];
        let paths = prop::collection::vec(prop::collection::vec(token, 1..4), 0..3);
        (paths.clone(), paths).prop_map(|(keep, drop)| (tree(&keep, true), tree(&drop, false)))
    }

    fn tree(paths: &[Vec<String>], only: bool) -> Tree {
        let mut t = Tree::default();
        for p in paths {
            t.insert(p, only);
        }
        t.settle();
        t
    }

    fn strs(paths: &[&[&str]]) -> Vec<Vec<String>> {
        paths
            .iter()
            .map(|p| p.iter().map(|t| t.to_string()).collect())
            .collect()
    }

    /// Every concrete path of `v` that `pattern` matches (`*`: any key or index).
    fn expand(v: &Value, pattern: &[String]) -> Vec<Vec<String>> {
        let Some((first, rest)) = pattern.split_first() else {
            return vec![vec![]];
        };
        let keys: Vec<(String, &Value)> = match v {
            Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), v)).collect(),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, v)| (i.to_string(), v))
                .collect(),
            _ => vec![],
        };
        let mut out = Vec::new();
        for (k, child) in keys {
            if first == ANY || *first == k {
                for mut tail in expand(child, rest) {
                    tail.insert(0, k.clone());
                    out.push(tail);
                }
            }
        }
        out
    }

    #[test]
    fn left_out_array_elements_are_removed_by_their_original_index() {
        let drop = tree(&strs(&[&["a", "0"], &["a", "2"], &["a", "1", "x"]]), false);
        let none = Tree::default();
        let skip = Skip::root(&none, &drop);
        let v = json!({"a": [0, {"x": 1, "y": 2}, 2, 3], "b": 1});
        assert_eq!(project(&v, skip), json!({"a": [{"y": 2}, 3], "b": 1}));
        // An array one longer only in a left-out index normalizes to the same.
        let w = json!({"a": [9, {"x": 5, "y": 2}, 7, 3], "b": 1});
        assert!(equal(&v, &w, skip));
    }

    #[test]
    fn wildcards_match_any_key_or_index_and_keep_selects() {
        let v = json!({
            "spec": {"a": 1, "b": {"c": 2}},
            "status": {"phase": "Ready", "conditions": [
                {"type": "A", "lastHeartbeatTime": "t1"},
                {"type": "B", "lastHeartbeatTime": "t2"}]}
        });
        let drop = tree(
            &strs(&[&["status", "conditions", "*", "lastHeartbeatTime"]]),
            false,
        );
        let keep = tree(&strs(&[&["spec", "b"], &["status"]]), true);
        assert_eq!(
            project(&v, Skip::root(&keep, &drop)),
            json!({"spec": {"b": {"c": 2}},
                   "status": {"phase": "Ready", "conditions": [{"type": "A"}, {"type": "B"}]}})
        );
        // An exact path under a wildcard gets both rules.
        let drop = tree(&strs(&[&["spec", "*", "c"], &["spec", "b", "d"]]), false);
        let none = Tree::default();
        let skip = Skip::root(&none, &drop);
        let w = json!({"spec": {"a": 1, "b": {"c": 2, "d": 3, "e": 4}}});
        assert_eq!(project(&w, skip), json!({"spec": {"a": 1, "b": {"e": 4}}}));
    }

    proptest! {
        /// The copy-free comparison agrees with comparing projections.
        #[test]
        fn equal_agrees_with_project(a in arb_json(), b in arb_json(), (keep, drop) in arb_trees()) {
            let skip = Skip::root(&keep, &drop);
            prop_assert_eq!(equal(&a, &b, skip), project(&a, skip) == project(&b, skip));
            prop_assert!(equal(&a, &a, skip));
        }

        /// A `*` segment in a dropped path drops the same as the path written out for every
        /// key and index the document has there.
        #[test]
        fn a_dropped_wildcard_is_every_matching_path(
            v in arb_json(),
            pattern in prop::collection::vec(
                prop_oneof![Just(ANY.to_string()), "[a-d~/.]{0,2}", (0usize..3).prop_map(|i| i.to_string())],
                1..4),
        ) {
            let wild = tree(std::slice::from_ref(&pattern), false);
            let concrete = tree(&expand(&v, &pattern), false);
            // Dropping array elements one path at a time shifts indices only between paths
            // of one array; written out, every index is dropped by its original position,
            // as the wildcard does.
            prop_assert_eq!(
                project(&v, Skip::root(&Tree::default(), &wild)),
                project(&v, Skip::root(&Tree::default(), &concrete))
            );
        }

        /// Whatever a kept path (`*` segments included) matches is in the projection
        /// intact, at the same place.
        #[test]
        fn a_kept_wildcard_keeps_every_matching_path(
            v in arb_json(),
            patterns in prop::collection::vec(prop::collection::vec(
                prop_oneof![Just(ANY.to_string()), "[a-d~/.]{0,2}"], 1..4), 1..3),
        ) {
            let keep = tree(&patterns, true);
            let projected = project(&v, Skip::root(&keep, &Tree::default()));
            for pattern in &patterns {
                for path in expand(&v, pattern) {
                    let pointer: String = path
                        .iter()
                        .map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1")))
                        .collect();
                    prop_assert_eq!(projected.pointer(&pointer), v.pointer(&pointer), "{}", pointer);
                }
            }
        }
    }
}
