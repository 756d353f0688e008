//! The RFC 6902 patch between two clean objects.
//!
//! Produces exactly the operations of [`json_patch::diff`] (same operations, paths and
//! order, so consumers see no difference), but compares each pair of subtrees before
//! descending into it. `json_patch::diff` builds a JSON Pointer token for every key and
//! array index it visits, equal or not; an update that changes 1–3 fields of a 60-field
//! spec then spends most of its diff formatting paths that produce no operation.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation, ReplaceOperation};
use serde_json::{Map, Value};

/// The patch that turns `prev` into `next`.
pub fn diff(prev: &Value, next: &Value) -> Patch {
    let mut ops = Vec::new();
    if prev != next {
        value(prev, next, &mut PointerBuf::new(), &mut ops);
    }
    Patch(ops)
}

/// Operations for two values known to differ.
fn value(prev: &Value, next: &Value, at: &mut PointerBuf, ops: &mut Vec<PatchOperation>) {
    match (prev, next) {
        (Value::Object(p), Value::Object(n)) => object(p, n, at, ops),
        (Value::Array(p), Value::Array(n)) => array(p, n, at, ops),
        _ => ops.push(PatchOperation::Replace(ReplaceOperation {
            path: at.clone(),
            value: next.clone(),
        })),
    }
}

fn object(
    prev: &Map<String, Value>,
    next: &Map<String, Value>,
    at: &mut PointerBuf,
    ops: &mut Vec<PatchOperation>,
) {
    for (key, n) in next {
        match prev.get(key) {
            Some(p) if p == n => {}
            Some(p) => {
                at.push_back(key);
                value(p, n, at, ops);
                at.pop_back();
            }
            None => {
                at.push_back(key);
                ops.push(PatchOperation::Add(AddOperation {
                    path: at.clone(),
                    value: n.clone(),
                }));
                at.pop_back();
            }
        }
    }
    for key in prev.keys().filter(|k| !next.contains_key(*k)) {
        at.push_back(key);
        ops.push(PatchOperation::Remove(RemoveOperation { path: at.clone() }));
        at.pop_back();
    }
}

/// Element by element, like `json_patch`: trailing elements are added or removed, and a
/// removal shifts the indices after it.
fn array(prev: &[Value], next: &[Value], at: &mut PointerBuf, ops: &mut Vec<PatchOperation>) {
    let mut removed = 0usize;
    for idx in 0..prev.len().max(next.len()) {
        match (prev.get(idx), next.get(idx)) {
            (Some(p), Some(n)) if p == n => {}
            (Some(p), Some(n)) => {
                at.push_back(idx - removed);
                value(p, n, at, ops);
                at.pop_back();
            }
            (Some(_), None) => {
                at.push_back(idx - removed);
                ops.push(PatchOperation::Remove(RemoveOperation { path: at.clone() }));
                at.pop_back();
                removed += 1;
            }
            (None, Some(n)) => {
                at.push_back(idx - removed);
                ops.push(PatchOperation::Add(AddOperation {
                    path: at.clone(),
                    value: n.clone(),
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
