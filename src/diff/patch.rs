//! The RFC 6902 patch between two normalized objects, computed from the clean ones.
//!
//! Produces exactly the operations of [`json_patch::diff`] over the normalized forms (same
//! operations, paths and order), without building those forms: the walk reads the clean
//! objects through the [`Skip`] tree and copies only the values that go into operations.
//! It also compares each pair of subtrees before descending into it: `json_patch::diff`
//! builds a JSON Pointer token for every key and array index it visits, equal or not; an
//! update that changes 1–3 fields of a 60-field spec then spends most of its diff
//! formatting paths that produce no operation.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation, ReplaceOperation};
use serde_json::{Map, Value};

use super::skip::{self, elements, equal, members, project, Skip};

/// The patch that turns `prev` into `next` (every field counts).
pub fn diff(prev: &Value, next: &Value) -> Patch {
    diff_except(prev, next, skip::NOTHING)
}

/// The patch that turns `prev` without what `skip` leaves out into `next` without it;
/// empty when the two are equal so.
pub(super) fn diff_except(prev: &Value, next: &Value, skip: Skip<'_>) -> Patch {
    let mut ops = Vec::new();
    if !equal(prev, next, skip) {
        value(prev, next, skip, &mut PointerBuf::new(), &mut ops);
    }
    Patch(ops)
}

/// Operations for two values known to differ.
fn value(
    prev: &Value,
    next: &Value,
    skip: Skip<'_>,
    at: &mut PointerBuf,
    ops: &mut Vec<PatchOperation>,
) {
    match (prev, next) {
        (Value::Object(p), Value::Object(n)) => object(p, n, skip, at, ops),
        (Value::Array(p), Value::Array(n)) => {
            array(&elements(p, skip), &elements(n, skip), at, ops)
        }
        _ => ops.push(PatchOperation::Replace(ReplaceOperation {
            path: at.clone(),
            value: project(next, skip),
        })),
    }
}

fn object(
    prev: &Map<String, Value>,
    next: &Map<String, Value>,
    skip: Skip<'_>,
    at: &mut PointerBuf,
    ops: &mut Vec<PatchOperation>,
) {
    for (key, n, s) in members(next, skip) {
        match prev.get(key) {
            Some(p) if equal(p, n, s) => {}
            Some(p) => {
                at.push_back(key);
                value(p, n, s, at, ops);
                at.pop_back();
            }
            None => {
                at.push_back(key);
                ops.push(PatchOperation::Add(AddOperation {
                    path: at.clone(),
                    value: project(n, s),
                }));
                at.pop_back();
            }
        }
    }
    // A member kept on one side is kept on the other: the same rules apply to both.
    for (key, _, _) in members(prev, skip).filter(|(k, _, _)| !next.contains_key(*k)) {
        at.push_back(key);
        ops.push(PatchOperation::Remove(RemoveOperation { path: at.clone() }));
        at.pop_back();
    }
}

/// Element by element over the kept elements, like `json_patch`: trailing elements are
/// added or removed, and a removal shifts the indices after it.
fn array(
    prev: &[(&Value, Skip<'_>)],
    next: &[(&Value, Skip<'_>)],
    at: &mut PointerBuf,
    ops: &mut Vec<PatchOperation>,
) {
    let mut removed = 0usize;
    for idx in 0..prev.len().max(next.len()) {
        match (prev.get(idx), next.get(idx)) {
            (Some((p, s)), Some((n, _))) if equal(p, n, *s) => {}
            (Some((p, s)), Some((n, _))) => {
                at.push_back(idx - removed);
                value(p, n, *s, at, ops);
                at.pop_back();
            }
            (Some(_), None) => {
                at.push_back(idx - removed);
                ops.push(PatchOperation::Remove(RemoveOperation { path: at.clone() }));
                at.pop_back();
                removed += 1;
            }
            (None, Some((n, s))) => {
                at.push_back(idx - removed);
                ops.push(PatchOperation::Add(AddOperation {
                    path: at.clone(),
                    value: project(n, *s),
                }));
                at.pop_back();
            }
            (None, None) => unreachable!("idx is below the longer length"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::skip::tests::arb_trees;
    use crate::diff::tests::arb_json;
    use proptest::prelude::*;
    use serde_json::json;

    /// A value and a mutation of it that shares most of its subtrees.
    fn pair() -> impl Strategy<Value = (Value, Value)> {
        (arb_json(), arb_json(), arb_json()).prop_map(|(a, b, c)| {
            let next = json!({"same": a.clone(), "changed": c, "dropped": null});
            let prev = json!({"same": a, "changed": b, "kept": [1, 2]});
            (prev, next)
        })
    }

    proptest! {
        #[test]
        fn matches_json_patch_exactly(a in arb_json(), b in arb_json()) {
            prop_assert_eq!(diff(&a, &b), json_patch::diff(&a, &b));
        }

        #[test]
        fn matches_json_patch_on_mostly_equal_objects((a, b) in pair()) {
            prop_assert_eq!(diff(&a, &b), json_patch::diff(&a, &b));
        }

        /// With paths left out: exactly `json_patch::diff` of the projections, and it
        /// turns the previous projection into the next.
        #[test]
        fn except_matches_json_patch_of_projections(
            (a, b) in pair(), (c, d) in (arb_json(), arb_json()), (keep, drop) in arb_trees(),
        ) {
            let skip = Skip::root(&keep, &drop);
            for (a, b) in [(&a, &b), (&c, &d)] {
                let (pa, pb) = (project(a, skip), project(b, skip));
                let patch = diff_except(a, b, skip);
                prop_assert_eq!(&patch, &json_patch::diff(&pa, &pb));
                let mut doc = pa;
                json_patch::patch(&mut doc, &patch).unwrap();
                prop_assert_eq!(doc, pb);
            }
        }

    }

    #[test]
    fn equal_values_give_an_empty_patch() {
        let v = json!({"spec": {"a": [1, {"b": "~/"}]}});
        assert!(diff(&v, &v).0.is_empty());
    }

    #[test]
    fn operations_come_in_json_patch_order_with_escaped_paths() {
        let prev = json!({"spec": {"a": 1, "b": [1, 2, 3], "c": "x"}});
        let next = json!({"spec": {"a": 1, "b": [1, 2], "c": "y", "d~/": true}});
        let ops = serde_json::to_value(diff(&prev, &next)).unwrap();
        assert_eq!(
            ops,
            json!([
                {"op": "remove", "path": "/spec/b/2"},
                {"op": "replace", "path": "/spec/c", "value": "y"},
                {"op": "add", "path": "/spec/d~0~1", "value": true},
            ])
        );
    }
}
