use serde_json::Value;

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
    include_status: bool,
    /// Each ignore pointer split into unescaped reference tokens.
    ignore: Vec<Vec<String>>,
    /// Everything ignored, as a tree of tokens, for comparing without copying.
    skip: Skip,
}

/// A tree of ignored paths: a leaf ignores the whole value under it.
#[derive(Debug, Clone, Default)]
struct Skip {
    leaf: bool,
    children: std::collections::BTreeMap<String, Skip>,
}

impl Skip {
    fn insert(&mut self, tokens: &[String]) {
        match tokens.split_first() {
            None => self.leaf = true,
            Some((first, rest)) => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }
}

/// `a == b` apart from the paths in `skip`, without copying either.
fn equal_except(a: &Value, b: &Value, skip: &Skip) -> bool {
    if skip.children.is_empty() {
        return a == b;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let same_side = |from: &serde_json::Map<String, Value>,
                             to: &serde_json::Map<String, Value>| {
                from.iter().all(|(k, v)| match skip.children.get(k) {
                    Some(s) if s.leaf => true,
                    Some(s) => to.get(k).is_some_and(|w| equal_except(v, w, s)),
                    None => to.get(k) == Some(v),
                })
            };
            // Keys only one side has count as differences unless ignored.
            same_side(x, y) && same_side(y, x)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len()
                && x.iter().zip(y).enumerate().all(|(i, (v, w))| {
                    match skip.children.get(&i.to_string()) {
                        Some(s) if s.leaf => true,
                        Some(s) => equal_except(v, w, s),
                        None => v == w,
                    }
                })
        }
        _ => a == b,
    }
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
        Ok(Rules {
            include_status,
            ignore,
            skip,
        })
    }

    /// The comparison form of a clean object.
    pub fn normalize(&self, clean: &Value) -> Value {
        let mut v = clean.clone();
        if let Some(obj) = v.as_object_mut() {
            if !self.include_status {
                obj.remove("status");
            }
            if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("resourceVersion");
                meta.remove("generation");
                meta.remove("managedFields");
            }
        }
        for tokens in &self.ignore {
            remove_path(&mut v, tokens);
        }
        v
    }

    /// True when two clean objects differ only in what these rules ignore. Equivalent to
    /// `normalize(a) == normalize(b)`, without copying either object.
    pub fn same(&self, a: &Value, b: &Value) -> bool {
        equal_except(a, b, &self.skip)
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

/// Removes the value at `tokens`, if present (arrays by index).
fn remove_path(v: &mut Value, tokens: &[String]) {
    let Some((last, parents)) = tokens.split_last() else {
        return;
    };
    let mut cur = v;
    for t in parents {
        cur = match cur {
            Value::Object(m) => match m.get_mut(t) {
                Some(next) => next,
                None => return,
            },
            Value::Array(a) => match t.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                Some(next) => next,
                None => return,
            },
            _ => return,
        };
    }
    match cur {
        Value::Object(m) => {
            m.remove(last);
        }
        Value::Array(a) => {
            if let Ok(i) = last.parse::<usize>() {
                if i < a.len() {
                    a.remove(i);
                }
            }
        }
        _ => {}
    }
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
