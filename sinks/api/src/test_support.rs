//! Property-test generators shared by the sink crates' tests (feature `test-support`).
//!
//! Each sink checks its own limits (topic, subject, routing key) against arbitrary routes
//! and templates; the generators live here once, and each sink passes what is its own:
//! the cluster name of its routes, and the literal text its templates may contain.

use proptest::prelude::*;

use crate::template::{Template, Var};
use crate::{ChangeKind, Route};

/// Any of the four changes.
pub fn arb_change() -> impl Strategy<Value = ChangeKind> {
    prop_oneof![
        Just(ChangeKind::Created),
        Just(ChangeKind::Updated),
        Just(ChangeKind::Deleted),
        Just(ChangeKind::Snapshot)
    ]
}

/// Routes of the cluster `cluster` with a DNS-subdomain name (up to 253 characters), a
/// DNS-label namespace (possibly empty, so cluster-scoped), any group, a kind of up to 300
/// printable characters and any change; version `v1`, plural `widgets`, uid `u`.
pub fn arb_route(cluster: &str) -> impl Strategy<Value = Route> {
    let cluster = cluster.to_owned();
    (
        "[a-z0-9.-]{1,253}",
        "[a-z0-9-]{0,63}",
        any::<String>(),
        "\\PC{0,300}",
        arb_change(),
    )
        .prop_map(move |(name, namespace, group, kind, change)| Route {
            cluster: cluster.clone(),
            group,
            version: "v1".into(),
            kind,
            plural: "widgets".into(),
            namespace,
            name,
            change,
            uid: "u".into(),
        })
}

/// Templates of one to nine parts, each a variable, a match of the regex `literal` or a
/// match of the regex `filler` (meant for long runs), keeping only those that parse.
pub fn arb_template(
    literal: &'static str,
    filler: &'static str,
) -> impl Strategy<Value = Template> {
    let var = proptest::sample::select(Var::ALL.as_slice())
        .prop_map(|var| format!("{{{}}}", var.as_str()));
    let part = prop_oneof![var, literal, filler];
    proptest::collection::vec(part, 1..10)
        .prop_filter_map("parses", |parts| Template::parse(&parts.concat()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    #[test]
    fn templates_reach_every_variable_and_routes_keep_the_cluster() {
        let mut runner = TestRunner::deterministic();
        let templates = arb_template("[a-z.]{0,6}", "x{0,20}");
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            seen.extend(templates.new_tree(&mut runner).unwrap().current().vars());
        }
        assert_eq!(seen.len(), Var::ALL.len(), "{seen:?}");
        let route = arb_route("c1").new_tree(&mut runner).unwrap().current();
        assert_eq!(route.cluster, "c1");
    }
}
