//! The filter language over the four variables: values, errors and positions.

use super::*;
use proptest::prelude::*;
use serde_json::json;

fn widget(tier: &str, size: i64) -> Value {
    json!({"metadata": {"name": "w", "labels": {"tier": tier}}, "spec": {"tier": tier, "size": size, "tags": ["a", "b"]}})
}

fn eval(source: &str, input: &Input<'_>) -> Result<bool, FilterError> {
    Filter::new(source).unwrap().matches(input)
}

fn created(object: &Value) -> Input<'_> {
    Input {
        kind: ChangeKind::Created,
        object,
        old_object: None,
        patch: None,
    }
}

#[test]
fn the_four_variables_are_bound() {
    let old = widget("dev", 1);
    let new = widget("prod", 2);
    let patch = crate::diff::diff(&old, &new);
    let updated = Input {
        kind: ChangeKind::Updated,
        object: &new,
        old_object: Some(&old),
        patch: Some(&patch),
    };
    for (source, want) in [
        ("type == 'updated'", true),
        ("object.spec.tier == 'prod' && object.spec.size > 1", true),
        ("oldObject.spec.tier == 'dev'", true),
        (
            "patch.exists(p, p.path == '/spec/size' && p.op == 'replace' && p.value == 2)",
            true,
        ),
        ("patch.all(p, p.path.startsWith('/metadata'))", false),
        ("'tier' in object.metadata.labels", true),
        ("has(object.spec.missing)", false),
        (
            "object.spec.tags.size() == 2 && 'b' in object.spec.tags",
            true,
        ),
        ("object.metadata.name.matches('^w$')", true),
        ("object.spec.tier.upperAscii() == 'PROD'", true),
    ] {
        assert_eq!(eval(source, &updated), Ok(want), "{source}");
    }
    let c = created(&new);
    assert_eq!(
        eval("oldObject == null && patch == [] && type == 'created'", &c),
        Ok(true)
    );
    let snapshot = Input {
        kind: ChangeKind::Snapshot,
        ..c
    };
    assert_eq!(eval("type == 'snapshot'", &snapshot), Ok(true));
}

#[test]
fn runtime_errors_are_values_not_panics() {
    let o = widget("prod", 1);
    let c = created(&o);
    let missing = eval("object.spec.nope == 1", &c).unwrap_err();
    assert!(
        matches!(&missing, FilterError::Evaluate(m) if m.contains("nope")),
        "{missing}"
    );
    assert!(matches!(
        eval("object.spec.size == 'one'", &c),
        Ok(false) | Err(FilterError::Evaluate(_))
    ));
    assert!(matches!(
        eval("object.spec.size / 0 == 1", &c),
        Err(FilterError::Evaluate(_))
    ));
    assert!(matches!(
        eval("oldObject.spec.tier == 'x'", &c),
        Err(FilterError::Evaluate(_))
    ));
    assert_eq!(
        eval("object.spec.size", &c),
        Err(FilterError::NotBool("int".into()))
    );
}

#[test]
fn compile_errors_carry_line_and_column() {
    let e = Filter::new("object.spec.tier = 'prod'").unwrap_err();
    let FilterError::Compile { line, column, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!((*line, *column), (Some(1), Some(18)), "{e}");
    assert!(e.to_string().starts_with("line 1, column 18: "), "{e}");
    let e = Filter::new("type == 'created' &&\n  object.spec.(").unwrap_err();
    assert!(e.to_string().starts_with("line 2, "), "{e}");
    assert!(Filter::new("").is_err());
}

proptest! {
    /// Whatever the object, a compiled filter answers (true, false or an error value),
    /// and a comparison with a literal gives the same answer as the JSON comparison.
    #[test]
    fn json_values_compare_like_json(n in any::<i64>(), s in "[a-z]{0,8}", b in any::<bool>()) {
        let o = json!({"spec": {"n": n, "s": s, "b": b}});
        let c = created(&o);
        prop_assert_eq!(eval(&format!("object.spec.n == {n}"), &c), Ok(true));
        prop_assert_eq!(eval(&format!("object.spec.n > {n}"), &c), Ok(false));
        prop_assert_eq!(eval(&format!("object.spec.s == '{s}'"), &c), Ok(true));
        prop_assert_eq!(eval("object.spec.b", &c), Ok(b));
    }
}

/// Objects over a small alphabet of keys, so that the expressions below often find what
/// they select, and often do not: maps, lists and scalars at every level.
fn arb_object() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-2i64..3).prop_map(|i| json!(i)),
        prop::sample::select(vec!["prod", "dev", "a", ""]).prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(4, 40, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "metadata", "labels", "spec", "tier", "items", "x", "name"
                ]),
                inner,
                0..5,
            )
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

/// Expressions that read `object` and `oldObject` in every way the pruning tells apart:
/// chains, presence tests, chains whose end is used whole, and whole uses.
const PRUNED_EXPRESSIONS: &[&str] = &[
    "object.metadata.labels.tier == 'prod'",
    "has(object.metadata.labels) && object.metadata.labels.tier == 'prod'",
    "has(object.spec) || has(object.metadata.name)",
    "object.spec.items.exists(i, i == 1 || i.x == 'a')",
    "size(object.spec) > 1 && object.spec.x == 1",
    "object.spec == oldObject.spec",
    "object == oldObject",
    "object.spec.x != oldObject.spec.x",
    "'tier' in object.metadata.labels",
    "object.metadata.labels.tier == 'prod' && object['spec'].x == 1",
    "[object.spec.x, object.metadata].exists(v, v == 1)",
    "object.spec.items.exists(object, object.x == 1) && object.spec.tier == 'dev'",
    "oldObject == null || oldObject.metadata.name == 'a'",
    "object.metadata.labels.map(k, k).size() == 1",
];

proptest! {
    /// Converting only what an expression reads never changes its verdict, nor its error.
    #[test]
    fn pruning_never_changes_a_verdict(object in arb_object(), old in arb_object(), none in any::<bool>()) {
        for source in PRUNED_EXPRESSIONS {
            let filter = Filter::new(source).unwrap();
            let input = Input {
                kind: ChangeKind::Updated,
                object: &object,
                old_object: (!none).then_some(&old),
                patch: None,
            };
            prop_assert_eq!(
                filter.evaluate(&input, true),
                filter.evaluate(&input, false),
                "{}", source
            );
        }
    }
}
