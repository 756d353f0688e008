//! Which parts of `object` and `oldObject` an expression can read, so that only those are
//! turned into CEL values for each change (issue 17: a filter costs under 5 µs per event;
//! converting the whole object was most of the cost).
//!
//! Found on the compiled expression, once: every use of the variable is either a chain of
//! field selections that starts at it (`object.metadata.labels.tier`, or the presence test
//! `has(object.spec)`), which reads only the value at the chain's end, or anything else
//! (`object` alone, `object == oldObject`, `object['spec']`, `size(object)`), which reads
//! it whole. The maps along a chain then hold only the members some chain selects; the
//! value at a chain's end is whole. An intermediate map is never seen as a value: CEL only
//! selects a named member of it, which is there when it is in the object.
//!
//! A comprehension variable with the same name (`list.exists(object, object.x)`) is
//! counted as the variable too: it can only add reads, never remove one.

use std::collections::BTreeMap;

use cel::common::ast::{EntryExpr, Expr};

/// The parts of one variable an expression reads: a tree of member names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Reads {
    /// Read as a whole value (the members below do not matter).
    whole: bool,
    /// The members selected by name, each with what is read of it.
    members: BTreeMap<String, Reads>,
}

impl Reads {
    /// What `expr` reads of the variable `var`.
    pub(super) fn of(expr: &Expr, var: &str) -> Reads {
        let mut reads = Reads::default();
        reads.walk(expr, var);
        reads
    }

    /// Everything: the value is converted whole.
    pub(super) fn all() -> Reads {
        Reads {
            whole: true,
            members: BTreeMap::new(),
        }
    }

    /// True when the expression does not read the variable at all.
    pub(super) fn is_none(&self) -> bool {
        !self.whole && self.members.is_empty()
    }

    /// True when the value is read whole.
    pub(super) fn is_whole(&self) -> bool {
        self.whole
    }

    /// The selected member names.
    pub(super) fn names(&self) -> impl Iterator<Item = (&String, &Reads)> {
        self.members.iter()
    }

    /// Adds a read of the value at `path` (member names from the variable).
    fn add(&mut self, path: &[&str]) {
        if self.whole {
            return;
        }
        match path.split_first() {
            None => {
                self.whole = true;
                self.members.clear();
            }
            Some((first, rest)) => self
                .members
                .entry((*first).to_owned())
                .or_default()
                .add(rest),
        }
    }

    fn walk(&mut self, expr: &Expr, var: &str) {
        match expr {
            Expr::Select(_) => {
                // The chain of selections down to its operand, innermost last.
                let mut fields = Vec::new();
                let mut at = expr;
                while let Expr::Select(s) = at {
                    fields.push(s.field.as_str());
                    at = &s.operand.expr;
                }
                match at {
                    Expr::Ident(name) if name == var => {
                        fields.reverse();
                        self.add(&fields);
                    }
                    other => self.walk(other, var),
                }
            }
            Expr::Ident(name) => {
                if name == var {
                    self.add(&[]);
                }
            }
            Expr::Call(call) => {
                if let Some(target) = &call.target {
                    self.walk(&target.expr, var);
                }
                for arg in &call.args {
                    self.walk(&arg.expr, var);
                }
            }
            Expr::Comprehension(c) => {
                for e in [
                    &c.iter_range,
                    &c.accu_init,
                    &c.loop_cond,
                    &c.loop_step,
                    &c.result,
                ] {
                    self.walk(&e.expr, var);
                }
            }
            Expr::List(list) => {
                for e in &list.elements {
                    self.walk(&e.expr, var);
                }
            }
            Expr::Map(map) => self.entries(map.entries.iter().map(|e| &e.expr), var),
            Expr::Struct(s) => self.entries(s.entries.iter().map(|e| &e.expr), var),
            Expr::Literal(_) | Expr::Unspecified => {}
        }
    }

    fn entries<'e>(&mut self, entries: impl Iterator<Item = &'e EntryExpr>, var: &str) {
        for entry in entries {
            match entry {
                EntryExpr::MapEntry(m) => {
                    self.walk(&m.key.expr, var);
                    self.walk(&m.value.expr, var);
                }
                EntryExpr::StructField(f) => self.walk(&f.value.expr, var),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads(source: &str) -> Reads {
        let program = cel::Program::compile(source).unwrap();
        Reads::of(&program.expression().expr, "object")
    }

    fn paths(r: &Reads) -> Vec<String> {
        if r.whole {
            return vec![String::new()];
        }
        r.members
            .iter()
            .flat_map(|(k, v)| paths(v).into_iter().map(move |p| format!("/{k}{p}")))
            .collect()
    }

    #[test]
    fn chains_read_their_end_anything_else_reads_all() {
        for (source, want) in [
            ("object.metadata.labels.tier == 'prod'", vec!["/metadata/labels/tier"]),
            (
                "has(object.spec.x) && object.metadata.name == 'a' && object.metadata.labels.t == 'b'",
                vec!["/metadata/labels/t", "/metadata/name", "/spec/x"],
            ),
            ("object.spec.items.exists(i, i.x == 1)", vec!["/spec/items"]),
            ("size(object.metadata) > 1 && object.metadata.name == 'a'", vec!["/metadata"]),
            ("object == oldObject", vec![""]),
            ("object['spec'].x == 1", vec![""]),
            ("has(object.spec)", vec!["/spec"]),
            ("[object.spec, 1].size() == 2", vec!["/spec"]),
            ("{'a': object.spec.a}.a == 1", vec!["/spec/a"]),
            ("type == 'created'", vec![]),
            ("oldObject.spec.x == 1", vec![]),
        ] {
            assert_eq!(paths(&reads(source)), want, "{source}");
        }
    }
}
