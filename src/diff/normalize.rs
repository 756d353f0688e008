use std::borrow::Cow;

use serde_json::Value;

use super::patch::diff_except;
use super::skip::{equal, project, Skip, Tree};

/// What a projection (`fields`) always keeps, listed or not: the identity and version
/// fields. The event's key, id and extensions (`crbuid`, `crbname`, `crbnamespace`,
/// `sequence`, `crbgeneration`) are read from the published object, and consumers can
/// tell which object a `data.object` is without the headers.
pub const ALWAYS_PUBLISHED: [&str; 7] = [
    "/apiVersion",
    "/kind",
    "/metadata/name",
    "/metadata/namespace",
    "/metadata/uid",
    "/metadata/resourceVersion",
    "/metadata/generation",
];

/// The annotation `kubectl apply` writes: a copy of the object, pure noise for consumers.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A bad normalization rule from the config.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NormalizeError {
    /// An `ignore` / `include` / `includeStatus` entry is not an RFC 6901 JSON Pointer.
    #[error("pointer {pointer:?} must start with '/' (RFC 6901 JSON Pointer)")]
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

/// Which parts of `status` count as changes (key `includeStatus`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StatusRule {
    /// None of it (`includeStatus: false`).
    #[default]
    Excluded,
    /// All of it (`includeStatus: true`).
    Included,
    /// Only these pointers (each under `/status`, `*` segments allowed).
    Only(Vec<String>),
}

/// Per-kind normalization rules: what does not count as a change.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// What is kept (`include`, an `includeStatus` list); empty: everything.
    keep: Tree,
    /// What is left out (bookkeeping, `status` unless included, `ignore`).
    drop: Tree,
    /// The projection (`fields`, plus [`ALWAYS_PUBLISHED`]); `None`: the whole object.
    fields: Option<Tree>,
}

impl Rules {
    /// Rules for a kind: whether `status` counts, and JSON Pointers to ignore.
    pub fn new(include_status: bool, ignore: &[String]) -> Result<Self, NormalizeError> {
        let status = if include_status {
            StatusRule::Included
        } else {
            StatusRule::Excluded
        };
        Self::with_paths(&status, &[], ignore)
    }

    /// Rules from every key: which parts of `status` count, the pointers that alone count
    /// outside `status` (`include`; empty: all of it), and those that do not (`ignore`).
    /// A `*` segment matches any key or array index.
    pub fn with_paths(
        status: &StatusRule,
        include: &[String],
        ignore: &[String],
    ) -> Result<Self, NormalizeError> {
        let mut keep = Tree::default();
        for p in include {
            keep.insert(&parse_pointer(p)?, true);
        }
        let mut drop = Tree::default();
        for fixed in [
            &["metadata", "resourceVersion"][..],
            &["metadata", "generation"],
            &["metadata", "managedFields"],
        ] {
            drop.insert(
                &fixed.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                false,
            );
        }
        match status {
            StatusRule::Excluded => drop.insert(&["status".to_string()], false),
            StatusRule::Included if !include.is_empty() => {
                keep.insert(&["status".to_string()], true)
            }
            StatusRule::Included => {}
            StatusRule::Only(paths) => {
                let everything_else = include.is_empty();
                for p in paths {
                    keep.insert(&parse_pointer(p)?, true);
                }
                // Without `include`, what is outside `status` all counts.
                if everything_else {
                    keep.unrestrict();
                }
            }
        }
        for p in ignore {
            drop.insert(&parse_pointer(p)?, false);
        }
        keep.settle();
        drop.settle();
        Ok(Rules {
            keep,
            drop,
            fields: None,
        })
    }

    /// These rules with a projection (key `fields`): only the listed pointers (`*`
    /// segments allowed) and [`ALWAYS_PUBLISHED`] are in the published object, and only
    /// they can count as changes. Empty: no projection.
    pub fn with_fields(mut self, fields: &[String]) -> Result<Self, NormalizeError> {
        if fields.is_empty() {
            self.fields = None;
            return Ok(self);
        }
        let mut tree = Tree::default();
        for p in fields.iter().map(String::as_str).chain(ALWAYS_PUBLISHED) {
            tree.insert(&parse_pointer(p)?, true);
        }
        tree.settle();
        self.fields = Some(tree);
        Ok(self)
    }

    fn skip(&self) -> Skip<'_> {
        let skip = Skip::root(&self.keep, &self.drop);
        match &self.fields {
            Some(f) => skip.within(f),
            None => skip,
        }
    }

    /// The object as published (`data.object`): the clean object projected on `fields`;
    /// without a projection, the clean object itself (not copied).
    pub fn published<'v>(&self, clean: &'v Value) -> Cow<'v, Value> {
        match &self.fields {
            None => Cow::Borrowed(clean),
            Some(f) => Cow::Owned(project(clean, Skip::root(f, &Tree::default()))),
        }
    }

    /// True when the rules project (`fields` is set).
    pub fn projects(&self) -> bool {
        self.fields.is_some()
    }

    /// The comparison form of a clean object. An ignored array element is removed (the
    /// elements after it move up), as `ignore` pointers name elements by their index in
    /// the clean object.
    pub fn normalize(&self, clean: &Value) -> Value {
        project(clean, self.skip())
    }

    /// True when two clean objects differ only in what these rules ignore. Equivalent to
    /// `normalize(a) == normalize(b)`, without copying either object.
    pub fn same(&self, a: &Value, b: &Value) -> bool {
        equal(a, b, self.skip())
    }

    /// The RFC 6902 patch from `normalize(prev)` to `normalize(next)` (empty when they are
    /// the same), without building either normalized copy.
    pub fn diff(&self, prev: &Value, next: &Value) -> json_patch::Patch {
        diff_except(prev, next, self.skip())
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
    fn include_and_status_lists_select_what_counts() {
        let v = json!({
            "metadata": {"name": "w", "resourceVersion": "5", "labels": {"a": "1"}},
            "spec": {"size": 1, "hint": 2},
            "status": {"phase": "Ready", "conditions": [{"type": "A", "lastHeartbeatTime": "t"}]}
        });
        let status = StatusRule::Only(vec!["/status/phase".into()]);
        // includeStatus list alone: all of the object outside status, only phase in it.
        let r = Rules::with_paths(&status, &[], &[]).unwrap();
        assert_eq!(
            r.normalize(&v),
            json!({"metadata": {"name": "w", "labels": {"a": "1"}},
                   "spec": {"size": 1, "hint": 2}, "status": {"phase": "Ready"}})
        );
        // With include: only the included paths and phase; ignore still applies.
        let r = Rules::with_paths(&status, &["/spec".into()], &["/spec/hint".into()]).unwrap();
        assert_eq!(
            r.normalize(&v),
            json!({"spec": {"size": 1}, "status": {"phase": "Ready"}})
        );
        // includeStatus: true with include: all of status; a wildcard ignore inside it.
        let r = Rules::with_paths(
            &StatusRule::Included,
            &["/metadata/labels".into()],
            &["/status/conditions/*/lastHeartbeatTime".into()],
        )
        .unwrap();
        assert_eq!(
            r.normalize(&v),
            json!({"metadata": {"labels": {"a": "1"}},
                   "status": {"phase": "Ready", "conditions": [{"type": "A"}]}})
        );
        let mut heartbeat = v.clone();
        heartbeat["status"]["conditions"][0]["lastHeartbeatTime"] = json!("t2");
        heartbeat["spec"]["size"] = json!(9);
        assert!(r.same(&v, &heartbeat));
    }

    #[test]
    fn fields_project_the_published_object_and_what_counts() {
        let v = json!({
            "apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w", "namespace": "ns", "uid": "u1", "resourceVersion": "7",
                         "generation": 2, "labels": {"tier": "prod"}, "annotations": {"a": "1"}},
            "spec": {"size": 1, "containers": [{"name": "c", "image": "i"}, {"name": "d"}]},
            "status": {"phase": "Ready"}
        });
        let r = Rules::new(true, &[])
            .unwrap()
            .with_fields(&["/metadata/labels".into(), "/spec/containers/*/name".into()])
            .unwrap();
        assert!(r.projects());
        assert_eq!(
            *r.published(&v),
            json!({
                "apiVersion": "example.com/v1", "kind": "Widget",
                "metadata": {"name": "w", "namespace": "ns", "uid": "u1", "resourceVersion": "7",
                             "generation": 2, "labels": {"tier": "prod"}},
                "spec": {"containers": [{"name": "c"}, {"name": "d"}]}
            })
        );
        // Outside the projection: no change, even where the rules would count it (status).
        let mut outside = v.clone();
        outside["spec"]["size"] = json!(2);
        outside["spec"]["containers"][0]["image"] = json!("j");
        outside["status"]["phase"] = json!("Degraded");
        outside["metadata"]["annotations"]["a"] = json!("2");
        assert!(r.same(&v, &outside));
        // Inside: a change, with a patch over the projected, normalized forms.
        let mut inside = outside.clone();
        inside["spec"]["containers"][1]["name"] = json!("e");
        assert_eq!(
            serde_json::to_value(r.diff(&v, &inside)).unwrap(),
            json!([{"op": "replace", "path": "/spec/containers/1/name", "value": "e"}])
        );
        // No fields: the clean object itself, not a copy.
        let whole = Rules::new(false, &[]).unwrap().with_fields(&[]).unwrap();
        assert!(!whole.projects());
        assert!(matches!(whole.published(&v), Cow::Borrowed(_)));
        assert_eq!(
            Rules::new(false, &[])
                .unwrap()
                .with_fields(&["spec".into()])
                .unwrap_err(),
            NormalizeError::BadPointer {
                pointer: "spec".into()
            }
        );
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
