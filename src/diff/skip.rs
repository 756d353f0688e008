//! The paths the normalized form leaves out, as a tree, and the three walks over it:
//! equality ([`equal`]), the normalized copy ([`project`]) and, in `patch`, the diff.
//!
//! All three read a clean object through the same two views ([`members`], [`elements`]), so
//! they agree by construction: `equal(a, b)` is `project(a) == project(b)`, and the patch
//! between two clean objects is the patch between their projections, computed without
//! copying either.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// A tree of left-out paths: a leaf leaves out the whole value under it.
#[derive(Debug, Clone, Default)]
pub(super) struct Skip {
    leaf: bool,
    children: BTreeMap<String, Skip>,
}

/// Leaves nothing out.
pub(super) static NOTHING: Skip = Skip {
    leaf: false,
    children: BTreeMap::new(),
};

impl Skip {
    /// Leaves out the value at `tokens` (unescaped RFC 6901 reference tokens).
    pub(super) fn insert(&mut self, tokens: &[String]) {
        match tokens.split_first() {
            None => self.leaf = true,
            Some((first, rest)) => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    /// True when nothing under this node is left out: its values compare and copy as is.
    fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    /// What is left out under member (or array index) `key`: `None` when the whole member
    /// is.
    fn child(&self, key: &str) -> Option<&Skip> {
        match self.children.get(key) {
            Some(s) if s.leaf => None,
            Some(s) => Some(s),
            None => Some(&NOTHING),
        }
    }
}

/// The members of an object that the normalized form keeps, each with what is left out
/// under it.
pub(super) fn members<'a>(
    m: &'a Map<String, Value>,
    skip: &'a Skip,
) -> impl Iterator<Item = (&'a String, &'a Value, &'a Skip)> {
    m.iter()
        .filter_map(move |(k, v)| skip.child(k).map(|s| (k, v, s)))
}

/// The elements of an array that the normalized form keeps (a left-out index is removed,
/// so later elements move up), each with what is left out under it.
pub(super) fn elements<'a>(a: &'a [Value], skip: &'a Skip) -> Vec<(&'a Value, &'a Skip)> {
    if skip.is_empty() {
        return a.iter().map(|v| (v, &NOTHING)).collect();
    }
    a.iter()
        .enumerate()
        .filter_map(|(i, v)| skip.child(&i.to_string()).map(|s| (v, s)))
        .collect()
}

/// `project(a, skip) == project(b, skip)`, without copying either.
pub(super) fn equal(a: &Value, b: &Value, skip: &Skip) -> bool {
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
            x.len() == y.len() && x.iter().zip(&y).all(|((v, s), (w, _))| equal(v, w, s))
        }
        _ => a == b,
    }
}

/// The normalized copy of `v`: `v` without what `skip` leaves out.
pub(super) fn project(v: &Value, skip: &Skip) -> Value {
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

    /// A skip tree of up to 4 paths over the keys `arb_json` (and `patch`'s pairs) use and
    /// small array indices.
    pub(in crate::diff) fn arb_skip() -> impl Strategy<Value = Skip> {
        let token = prop_oneof![
            "[a-d~/.]{0,2}",
            (0usize..4).prop_map(|i| i.to_string()),
            prop::sample::select(vec!["same", "changed", "kept"]).prop_map(str::to_string),
        ];
        prop::collection::vec(prop::collection::vec(token, 1..4), 0..4).prop_map(|paths| {
            let mut skip = Skip::default();
            for p in paths {
                skip.insert(&p);
            }
            skip
        })
    }

    fn skip_of(paths: &[&[&str]]) -> Skip {
        let mut skip = Skip::default();
        for p in paths {
            skip.insert(&p.iter().map(|t| t.to_string()).collect::<Vec<_>>());
        }
        skip
    }

    #[test]
    fn left_out_array_elements_are_removed_by_their_original_index() {
        let skip = skip_of(&[&["a", "0"], &["a", "2"], &["a", "1", "x"]]);
        let v = json!({"a": [0, {"x": 1, "y": 2}, 2, 3], "b": 1});
        assert_eq!(project(&v, &skip), json!({"a": [{"y": 2}, 3], "b": 1}));
        // An array one longer only in a left-out index normalizes to the same.
        let w = json!({"a": [9, {"x": 5, "y": 2}, 7, 3], "b": 1});
        assert!(equal(&v, &w, &skip));
    }

    proptest! {
        /// The copy-free comparison agrees with comparing projections.
        #[test]
        fn equal_agrees_with_project(a in arb_json(), b in arb_json(), skip in arb_skip()) {
            prop_assert_eq!(equal(&a, &b, &skip), project(&a, &skip) == project(&b, &skip));
            prop_assert!(equal(&a, &a, &skip));
        }
    }
}
