//! Redaction: which values, what they become, and that nothing of the raw value remains.

use super::*;
use proptest::prelude::*;
use serde_json::json;

fn redactor(pointers: &[&str]) -> Redactor {
    let pointers: Vec<String> = pointers.iter().map(|p| p.to_string()).collect();
    Redactor::new(RedactKey::new(b"k1"), &pointers)
}

#[test]
fn exact_and_wildcard_pointers_replace_values_by_keyed_hashes() {
    let r = redactor(&[
        "/spec/password",
        "/spec/credentials/*",
        "/spec/users/*/token",
        "/spec/a~1b",
    ]);
    let mut o = json!({"spec": {
        "password": "hunter2", "keep": "x",
        "credentials": {"aws": "AKIA", "gcp": {"json": 1}},
        "users": [{"name": "a", "token": "t1"}, {"name": "b"}],
        "a/b": 7,
    }});
    r.apply(&mut o);
    let h = |v: Value| r.hash(&v);
    assert_eq!(
        o,
        json!({"spec": {
            "password": h(json!("hunter2")), "keep": "x",
            "credentials": {"aws": h(json!("AKIA")), "gcp": h(json!({"json": 1}))},
            "users": [{"name": "a", "token": h(json!("t1"))}, {"name": "b"}],
            "a/b": h(json!(7)),
        }})
    );
    assert!(h(json!("hunter2")).starts_with(PREFIX));
    assert_eq!(h(json!("hunter2")).len(), PREFIX.len() + 64);
    // Applying again changes nothing.
    let once = o.clone();
    r.apply(&mut o);
    assert_eq!(o, once);
}

#[test]
fn the_hash_depends_on_the_key_and_the_value() {
    let other = Redactor::new(RedactKey::new(b"k2"), &[]);
    let r = redactor(&[]);
    assert_ne!(r.hash(&json!("v")), other.hash(&json!("v")));
    assert_ne!(r.hash(&json!("v")), r.hash(&json!("w")));
    assert_eq!(r.hash(&json!("v")), r.hash(&json!("v")));
    assert_eq!(format!("{:?}", RedactKey::new(b"secret")), "RedactKey(***)");
}

proptest! {
    /// Whatever the secret, it appears nowhere in the redacted object's JSON.
    #[test]
    fn no_trace_of_the_raw_value_remains(secret in "[a-zA-Z0-9]{12,24}", n in 0usize..4) {
        let r = redactor(&["/spec/items/*/secret"]);
        let items: Vec<Value> = (0..n).map(|i| json!({"i": i, "secret": secret})).collect();
        let mut o = json!({"spec": {"items": items}});
        r.apply(&mut o);
        prop_assert!(!o.to_string().contains(&secret));
    }
}
