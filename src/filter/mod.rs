//! `filter`: a CEL expression per watch that decides which changes are published.
//!
//! CEL is the expression language Kubernetes users already write in CRD validation rules
//! and admission policies. A [`Filter`] is compiled once, when the config is loaded (a
//! syntax error is a config error with its position), and evaluated for each change
//! capture would publish, over four variables:
//!
//! | variable | value |
//! |---|---|
//! | `type` | `"created"`, `"updated"`, `"deleted"` or `"snapshot"`: the event that would be published |
//! | `object` | the new clean object, redacted but whole: not projected by the watch's `fields` |
//! | `oldObject` | the object as last published (whole, like `object`), `null` when there is none (created, snapshot) |
//! | `patch` | the RFC 6902 operations from `oldObject` to `object`, as maps (`op`, `path`, `value`, `from`); `[]` without `oldObject` |
//!
//! Pure: no I/O, no state. What a verdict means for the stored state, deletes and errors is
//! capture's business (`src/capture/observe.rs`, README "Choosing what to publish").
//! Only what the expression can read of `object` and `oldObject` is turned into CEL values
//! for each change (`reads.rs`): the members along its chains of field selections.
//!
//! The standard library is extended with the `strings` and `lists` extensions, as in
//! Kubernetes (`lowerAscii`, `split`, `join`, `flatten`, ...).

use std::fmt;
use std::sync::Arc;

use cel::common::types::CelString;
use cel::{Context, Env, Program, Value as CelValue};
use crbridge_sink_api::ChangeKind;
use serde_json::Value;

use reads::Reads;

mod error;
mod reads;
mod value;

pub use error::FilterError;

/// One change, as the expression sees it.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The event that would be published (`type`).
    pub kind: ChangeKind,
    /// The new clean object (`object`).
    pub object: &'a Value,
    /// The last published object (`oldObject`); `None` binds `null`.
    pub old_object: Option<&'a Value>,
    /// The operations from `old_object` to `object` (`patch`); `None` binds `[]`.
    pub patch: Option<&'a json_patch::Patch>,
}

/// A compiled filter expression. Cheap to clone (shared).
#[derive(Clone)]
pub struct Filter {
    inner: Arc<Inner>,
}

struct Inner {
    source: String,
    program: Program,
    env: Arc<Env>,
    /// Which variables the expression refers to: only those are built for each change.
    uses: Uses,
}

#[derive(Debug, Clone)]
struct Uses {
    kind: bool,
    /// What is read of `object` (`None`: not referenced).
    object: Option<Reads>,
    /// What is read of `oldObject` (`None`: not referenced).
    old_object: Option<Reads>,
    patch: bool,
}

impl fmt::Debug for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Filter").field(&self.inner.source).finish()
    }
}

impl Filter {
    /// Compiles `source`.
    ///
    /// ```
    /// use crbridge::filter::{Filter, Input};
    /// use crbridge_sink_api::ChangeKind;
    ///
    /// let filter = Filter::new("object.spec.tier == 'prod'").unwrap();
    /// let object = serde_json::json!({"spec": {"tier": "prod"}});
    /// let input = Input { kind: ChangeKind::Created, object: &object, old_object: None, patch: None };
    /// assert_eq!(filter.matches(&input), Ok(true));
    /// assert!(Filter::new("object.spec.tier = 'prod'").is_err());
    /// ```
    pub fn new(source: &str) -> Result<Filter, FilterError> {
        let mut env = Env::stdlib();
        // Declaring the two extensions on a fresh environment cannot conflict; an error
        // here would be a bug of the CEL crate, reported like a compile error.
        for extension in [cel::extensions::strings, cel::extensions::lists] {
            env.add_extension(extension)
                .map_err(|e| FilterError::Compile {
                    line: None,
                    column: None,
                    message: e.to_string(),
                })?;
        }
        let program = env.compile(source).map_err(|errors| {
            let first = errors.errors.first();
            let position = |n: isize| usize::try_from(n).ok().filter(|n| *n > 0);
            FilterError::Compile {
                line: first.and_then(|e| position(e.pos.0)),
                column: first.and_then(|e| position(e.pos.1)),
                message: first.map_or_else(|| errors.to_string(), |e| e.msg.clone()),
            }
        })?;
        let references = program.references();
        // The parts of an object the expression reads; all of it should the walk find
        // nothing where the crate sees a reference (it never should).
        let reads = |var: &str| {
            references.has_variable(var).then(|| {
                let reads = Reads::of(&program.expression().expr, var);
                if reads.is_none() {
                    Reads::all()
                } else {
                    reads
                }
            })
        };
        let uses = Uses {
            kind: references.has_variable("type"),
            object: reads("object"),
            old_object: reads("oldObject"),
            patch: references.has_variable("patch"),
        };
        Ok(Filter {
            inner: Arc::new(Inner {
                source: source.to_owned(),
                program,
                env: Arc::new(env),
                uses,
            }),
        })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.inner.source
    }

    /// Whether the change `input` is to be published.
    pub fn matches(&self, input: &Input<'_>) -> Result<bool, FilterError> {
        self.evaluate(input, true)
    }

    /// The verdict on `input`, with `object` and `oldObject` converted only where the
    /// expression reads them (`prune`), or whole.
    fn evaluate(&self, input: &Input<'_>, prune: bool) -> Result<bool, FilterError> {
        let inner = &*self.inner;
        let all = Reads::all();
        // The patch is turned into JSON only when the expression reads it.
        let patch = match (inner.uses.patch, input.patch) {
            (true, Some(p)) => {
                serde_json::to_value(p).map_err(|e| FilterError::Evaluate(e.to_string()))?
            }
            _ => Value::Array(Vec::new()),
        };
        let null = Value::Null;
        let mut context = Context::with_env(inner.env.clone());
        if inner.uses.kind {
            context.add_variable_as_val("type", Box::new(CelString::from(input.kind.as_str())));
        }
        if let Some(r) = &inner.uses.object {
            context.add_variable_as_val(
                "object",
                value::to_val_reading(input.object, if prune { r } else { &all }),
            );
        }
        if let Some(r) = &inner.uses.old_object {
            let old = input.old_object.unwrap_or(&null);
            context.add_variable_as_val(
                "oldObject",
                value::to_val_reading(old, if prune { r } else { &all }),
            );
        }
        if inner.uses.patch {
            context.add_variable_as_val("patch", value::to_val(&patch));
        }
        match inner.program.execute(&context) {
            Ok(CelValue::Bool(b)) => Ok(b),
            Ok(other) => Err(FilterError::NotBool(other.type_of().to_string())),
            Err(e) => Err(FilterError::Evaluate(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests;
