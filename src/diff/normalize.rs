use serde_json::Value;

use super::patch::diff_except;
use super::skip::{equal, project, Skip};

/// The annotation `kubectl apply` writes: a copy of the object, pure noise for consumers.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A bad normalization rule from the config.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NormalizeError {
    /// An `ignore` entry is not an RFC 6901 JSON Pointer.
    #[error("ignore pointer {pointer:?} must start with '/' (RFC 6901 JSON Pointer)")]
    BadPointer {
        /// The pointer as written.
        pointer: String,
    },
}

/// Turns a raw object into the clean form crbridge stores and publishes: without
/// `metadata.managedFields` and the last-applied annotation (an `annotations` map left
/// empty is removed, so adding or dropping only that annotation changes nothing).
pub fn clean(obj: &mut Value) {
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    meta.remove("managedFields");
    if let Some(ann) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
        ann.remove(LAST_APPLIED);
        if ann.is_empty() {
            meta.remove("annotations");
        }
    }
}

/// Per-kind normalization rules: what does not count as a change.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Everything left out of the normalized form, as a tree of tokens.
    skip: Skip,
}

impl Rules {
    /// Rules for a kind: whether `status` counts, and JSON Pointers to ignore.
    pub fn new(include_status: bool, ignore: &[String]) -> Result<Self, NormalizeError> {
        let ignore: Vec<Vec<String>> = ignore
            .iter()
            .map(|p| parse_pointer(p))
            .collect::<Result<_, _>>()?;
        let mut skip = Skip::default();
        for fixed in [
            &["metadata", "resourceVersion"][..],
            &["metadata", "generation"],
            &["metadata", "managedFields"],
        ] {
            skip.insert(&fixed.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        }
        if !include_status {
            skip.insert(&["status".to_string()]);
        }
        for tokens in &ignore {
            skip.insert(tokens);
        }
        Ok(Rules { skip })
    }

    /// The comparison form of a clean object. An ignored array element is removed (the
    /// elements after it move up), as `ignore` pointers name elements by their index in
    /// the clean object.
    pub fn normalize(&self, clean: &Value) -> Value {
        project(clean, &self.skip)
    }

    /// True when two clean objects differ only in what these rules ignore. Equivalent to
    /// `normalize(a) == normalize(b)`, without copying either object.
    pub fn same(&self, a: &Value, b: &Value) -> bool {
        equal(a, b, &self.skip)
    }

    /// The RFC 6902 patch from `normalize(prev)` to `normalize(next)` (empty when they are
    /// the same), without building either normalized copy.
    pub fn diff(&self, prev: &Value, next: &Value) -> json_patch::Patch {
        diff_except(prev, next, &self.skip)
    }
}

fn parse_pointer(p: &str) -> Result<Vec<String>, NormalizeError> {
    let Some(rest) = p.strip_prefix('/') else {
        return Err(NormalizeError::BadPointer {
            pointer: p.to_string(),
        });
    };
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn clean_drops_managed_fields_and_last_applied() {
        let mut v = json!({"metadata": {"name": "a", "managedFields": [{}],
            "annotations": {LAST_APPLIED: "{}"}}});
        clean(&mut v);
        assert_eq!(v, json!({"metadata": {"name": "a"}}));
        let mut w = json!({"metadata": {"annotations": {LAST_APPLIED: "{}", "keep": "1"}}});
        clean(&mut w);
        assert_eq!(w, json!({"metadata": {"annotations": {"keep": "1"}}}));
    }

    #[test]
    fn pointer_tokens_are_unescaped_and_validated() {
        let r = Rules::new(false, &["/metadata/labels/a~1b".into()]).unwrap();
        let v = json!({"metadata": {"labels": {"a/b": "x", "c": "y"}}});
        assert_eq!(r.normalize(&v), json!({"metadata": {"labels": {"c": "y"}}}));
        assert_eq!(
            Rules::new(false, &["spec/x".into()]).unwrap_err(),
            NormalizeError::BadPointer {
                pointer: "spec/x".into()
            }
        );
    }

    proptest::proptest! {
        /// The copy-free comparison agrees with comparing normalized copies.
        #[test]
        fn same_agrees_with_normalize(
            a in proptest::collection::btree_map("[a-c]", 0i64..3, 0..4),
            b in proptest::collection::btree_map("[a-c]", 0i64..3, 0..4),
            rv in "[0-9]", status in 0i64..2, ignore_b in proptest::bool::ANY,
        ) {
            let r = Rules::new(false, &if ignore_b { vec!["/spec/b".to_string()] } else { vec![] }).unwrap();
            let x = json!({"metadata": {"resourceVersion": "1"}, "spec": a, "status": {"s": 0}});
            let y = json!({"metadata": {"resourceVersion": rv}, "spec": b, "status": {"s": status}});
            proptest::prop_assert_eq!(r.same(&x, &y), r.normalize(&x) == r.normalize(&y));
        }
    }

    #[test]
    fn odd_shapes_do_not_panic() {
        let r = Rules::new(false, &["/spec/0/x".into(), "/a/b/c".into()]).unwrap();
        for v in [
            json!(null),
            json!([1, 2]),
            json!({"spec": "str"}),
            json!({"spec": [{"x": 1}]}),
        ] {
            let _ = r.normalize(&v);
            let mut c = v.clone();
            clean(&mut c);
        }
    }
}
