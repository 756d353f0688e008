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
