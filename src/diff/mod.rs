//! What counts as a change: cleaning, normalization and the RFC 6902 diff.
//!
//! Pure functions on `serde_json::Value`, no I/O. Four forms of an object are involved:
//!
//! * the **raw** object as the API server sends it;
//! * the **clean** object ([`clean`]): raw minus `metadata.managedFields` and the
//!   `kubectl.kubernetes.io/last-applied-configuration` annotation (and redacted, if the
//!   watch redacts). This is what crbridge stores, and what the watch's `filter` sees;
//! * the **published** object ([`Rules::published`]): the clean object projected on the
//!   watch's `fields` (plus [`ALWAYS_PUBLISHED`], the identity and version fields); the
//!   clean object itself without `fields`. This is `data.object`;
//! * the **normalized** object ([`Rules::normalize`]): published minus the fields that change
//!   without a meaningful change (`resourceVersion`, `generation`, `status` or the parts of
//!   it the kind does not opt in, what its `include` list does not name, and its `ignore`
//!   pointers; `*` in a pointer matches any key or index; every pointer names array elements
//!   by their index in the clean object). A change outside the projection is therefore no
//!   change at all. Two clean objects whose normalized forms are equal are the same as far as consumers care: the update is a no-op and is
//!   suppressed. An update's patch is computed between the normalized forms, so it says
//!   what changed and carries no bookkeeping (issue 16): applying the patches in order to
//!   the previous event's normalized object gives the next event's normalized object.
//!
//! The normalized form is never built on the hot path: comparison and patch read the clean
//! objects through trees of kept and left-out paths (`skip`) in one walk.
//!
//! The stored state is the clean object of the last published change, not its projection:
//! the filter's `object` and `oldObject` are then both whole (a filter may select on a field
//! the projection leaves out), and an on-demand snapshot or an inferred delete publishes the
//! stored state through the same projection.

mod changed_by;
mod normalize;
mod patch;
mod skip;

pub use changed_by::changed_by;
pub use normalize::{clean, NormalizeError, Rules, StatusRule, ALWAYS_PUBLISHED};
pub use patch::diff;

use serde_json::Value;

/// The outcome of comparing the previously published object with a new one.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Nothing a consumer cares about changed: publish nothing.
    Noop,
    /// A real change, with the RFC 6902 patch from the previous normalized object to the
    /// new one.
    Changed(json_patch::Patch),
}

/// Compares two clean objects under `rules`, in one walk: unchanged parts are compared,
/// not copied, and only the values in the patch's operations are.
pub fn compare(prev: &Value, next: &Value, rules: &Rules) -> Verdict {
    let patch = rules.diff(prev, next);
    if patch.0.is_empty() {
        Verdict::Noop
    } else {
        Verdict::Changed(patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn rules() -> Rules {
        Rules::new(false, &["/spec/replicasHint".to_string()]).unwrap()
    }

    fn widget(size: i64, rv: &str) -> Value {
        json!({
            "apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w", "namespace": "ns", "uid": "u1", "resourceVersion": rv, "generation": 1},
            "spec": {"size": size},
            "status": {"phase": "Ready"}
        })
    }

    #[test]
    fn spec_change_is_a_change_with_a_patch_that_applies() {
        let (a, b) = (widget(1, "10"), widget(2, "11"));
        let Verdict::Changed(p) = compare(&a, &b, &rules()) else {
            panic!("expected a change")
        };
        let mut doc = rules().normalize(&a);
        json_patch::patch(&mut doc, &p).unwrap();
        assert_eq!(doc, rules().normalize(&b));
    }

    #[test]
    fn patch_says_what_changed_without_bookkeeping() {
        let a = widget(1, "10");
        let mut b = widget(2, "11");
        b["metadata"]["generation"] = json!(2);
        b["status"]["phase"] = json!("Degraded");
        b["spec"]["replicasHint"] = json!(4);
        let Verdict::Changed(p) = compare(&a, &b, &rules()) else {
            panic!("expected a change")
        };
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!([{"op": "replace", "path": "/spec/size", "value": 2}])
        );
        // With status included, its change is in the patch too.
        let with_status = Rules::new(true, &[]).unwrap();
        let Verdict::Changed(p) = compare(&a, &b, &with_status) else {
            panic!("expected a change")
        };
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!([
                {"op": "add", "path": "/spec/replicasHint", "value": 4},
                {"op": "replace", "path": "/spec/size", "value": 2},
                {"op": "replace", "path": "/status/phase", "value": "Degraded"},
            ])
        );
    }

    #[test]
    fn added_subtrees_are_added_normalized() {
        let a = json!({"metadata": {"name": "w"}});
        let b = json!({"metadata": {"name": "w"}, "spec": {"size": 1, "replicasHint": 2}});
        let Verdict::Changed(p) = compare(&a, &b, &rules()) else {
            panic!("expected a change")
        };
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!([{"op": "add", "path": "/spec", "value": {"size": 1}}])
        );
    }

    #[test]
    fn status_only_update_is_noop_unless_included() {
        let a = widget(1, "10");
        let mut b = widget(1, "11");
        b["status"]["phase"] = json!("Degraded");
        assert_eq!(compare(&a, &b, &rules()), Verdict::Noop);
        let with_status = Rules::new(true, &[]).unwrap();
        assert!(matches!(compare(&a, &b, &with_status), Verdict::Changed(_)));
    }

    #[test]
    fn metadata_noise_is_noop() {
        let a = widget(1, "10");
        let mut b = widget(1, "12");
        b["metadata"]["generation"] = json!(7);
        assert_eq!(compare(&a, &b, &rules()), Verdict::Noop);
    }

    #[test]
    fn ignored_pointer_is_noop_but_label_change_is_not() {
        let a = widget(1, "10");
        let mut b = widget(1, "11");
        b["spec"]["replicasHint"] = json!(3);
        assert_eq!(compare(&a, &b, &rules()), Verdict::Noop);
        let mut c = widget(1, "11");
        c["metadata"]["labels"] = json!({"tier": "prod"});
        assert!(matches!(compare(&a, &c, &rules()), Verdict::Changed(_)));
    }

    /// Arbitrary JSON over small alphabets, so that two documents often share keys and
    /// values (equal subtrees, nested changes), with `~`, `/` and the empty key included.
    /// Also used by `patch`'s tests.
    pub(super) fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-3i64..3).prop_map(|i| json!(i)),
            any::<i64>().prop_map(|i| json!(i)),
            "[a-c~/]{0,2}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("[a-d~/.]{0,2}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// apply(diff(a, b), a) == b for arbitrary documents, keys with `~` and `/` included.
        #[test]
        fn patch_applied_to_previous_gives_next(a in arb_json(), b in arb_json()) {
            let mut doc = a.clone();
            json_patch::patch(&mut doc, &diff(&a, &b)).unwrap();
            prop_assert_eq!(doc, b);
        }

        /// The patch turns the previous normalized object into the next one; a no-op
        /// exactly when the normalized forms are equal.
        #[test]
        fn patch_chains_over_normalized_forms(a in arb_json(), b in arb_json(), status in any::<bool>()) {
            let r = Rules::new(status, &["/spec/a".to_string(), "/b/0".to_string()]).unwrap();
            let (a, b) = (json!({"metadata": {"resourceVersion": "1"}, "spec": a.clone(), "b": a, "status": 1}),
                          json!({"metadata": {"resourceVersion": "2", "generation": 3}, "spec": b.clone(), "b": b, "status": 2}));
            match compare(&a, &b, &r) {
                Verdict::Noop => prop_assert_eq!(r.normalize(&a), r.normalize(&b)),
                Verdict::Changed(p) => {
                    let mut doc = r.normalize(&a);
                    json_patch::patch(&mut doc, &p).unwrap();
                    prop_assert_eq!(doc, r.normalize(&b));
                }
            }
        }

        /// A projection is the same as projecting first and applying the other rules to
        /// the projection: same normalized form, same patch. So a change outside the
        /// projection is no change.
        #[test]
        fn projection_then_rules_is_rules_with_fields(
            a in arb_json(), b in arb_json(), status in any::<bool>(),
            fields in prop::collection::vec((
                prop::sample::select(vec!["spec", "b", "status", "metadata"]),
                prop::collection::vec(prop_oneof!["[a-d~/.]{0,2}", Just("*".to_string())], 0..3),
            ), 1..4),
        ) {
            // Array indices in `fields` would shift the elements other pointers name (the
            // combined rules name them in the clean object); names and `*` do not.
            let fields: Vec<String> = fields
                .into_iter()
                .map(|(top, rest)| {
                    std::iter::once(top.to_string())
                        .chain(rest.into_iter().map(|t| t.replace('~', "~0").replace('/', "~1")))
                        .map(|t| format!("/{t}"))
                        .collect()
                })
                .collect();
            let (include, ignore) = (vec!["/spec".to_string(), "/b".to_string()], vec!["/spec/a".to_string(), "/b/*/c".to_string()]);
            let status = if status { StatusRule::Included } else { StatusRule::Excluded };
            let plain = Rules::with_paths(&status, &include, &ignore).unwrap();
            let r = plain.clone().with_fields(&fields).unwrap();
            let (a, b) = (json!({"metadata": {"name": "w", "uid": "u", "resourceVersion": "1", "labels": a.clone()}, "spec": a.clone(), "b": a, "status": 1}),
                          json!({"metadata": {"name": "w", "uid": "u", "resourceVersion": "2", "generation": 3, "labels": b.clone()}, "spec": b.clone(), "b": b, "status": 2}));
            let (pa, pb) = (r.published(&a).into_owned(), r.published(&b).into_owned());
            prop_assert_eq!(r.normalize(&a), plain.normalize(&pa));
            prop_assert_eq!(compare(&a, &b, &r), compare(&pa, &pb, &plain));
            if pa == pb {
                prop_assert_eq!(compare(&a, &b, &r), Verdict::Noop);
            }
            // The identity is always published.
            prop_assert_eq!(&pa["metadata"]["uid"], "u");
            prop_assert_eq!(&pb["metadata"]["generation"], 3);
        }

        /// Changing only noise never produces an event; changing spec always does.
        #[test]
        fn noise_never_counts_spec_always_does(rv in "[0-9]{1,8}", phase in "[A-Za-z]{0,8}", size in any::<i64>()) {
            let a = widget(1, "1");
            let mut noisy = a.clone();
            noisy["metadata"]["resourceVersion"] = json!(rv);
            noisy["status"]["phase"] = json!(phase);
            noisy["metadata"]["managedFields"] = json!([{"manager": "x"}]);
            clean(&mut noisy);
            prop_assert_eq!(compare(&a, &noisy, &rules()), Verdict::Noop);
            let changed = widget(size, "2");
            prop_assert_eq!(compare(&a, &changed, &rules()) == Verdict::Noop, size == 1);
        }
    }
}
