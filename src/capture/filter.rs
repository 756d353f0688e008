//! The watch's `filter` applied to a change capture would publish: the verdict, the
//! `filterErrors` policy for an expression that fails, and its log line, once per object.
//!
//! What a verdict means is decided by the callers: a change that does not pass writes no
//! state (the stored state stays the last *published* one, so the next published patch
//! goes from what consumers last saw), while the checkpoint still moves past it.

use std::collections::HashSet;
use std::sync::Mutex;

use tracing::warn;

use super::Capture;
use crate::config::FilterErrors;
use crate::filter::Input;
use crate::metrics;
use crate::watch::ScopeId;

/// How many (watch, uid) pairs are remembered as already logged. An object whose filter
/// keeps failing is logged once, not on every change; past this many, the memory starts
/// over (a line may repeat) rather than grow with the object count.
const MAX_WARNED: usize = 10_000;

/// The objects whose filter failure was logged already.
#[derive(Debug, Default)]
pub(super) struct Warned(Mutex<HashSet<(String, String)>>);

impl Warned {
    /// True the first time for (`watch`, `uid`): the caller logs.
    pub(super) fn first(&self, watch: &str, uid: &str) -> bool {
        let Ok(mut set) = self.0.lock() else {
            return true;
        };
        if set.len() >= MAX_WARNED {
            set.clear();
        }
        set.insert((watch.to_owned(), uid.to_owned()))
    }

    /// Forgets an object (deleted): a new object with the same uid cannot exist, but the
    /// memory is freed.
    pub(super) fn forget(&self, watch: &str, uid: &str) {
        if let Ok(mut set) = self.0.lock() {
            if !set.is_empty() {
                set.remove(&(watch.to_owned(), uid.to_owned()));
            }
        }
    }
}

impl Capture {
    /// Whether `input`, a change of object `uid` in `scope`, is to be published: true
    /// without a filter; the filter's answer; on an evaluation error, the `filterErrors`
    /// policy (counted, and logged once per object).
    pub(super) fn passes(&self, scope: ScopeId, uid: &str, input: &Input<'_>) -> bool {
        let s = &self.scopes[scope];
        let Some(filter) = &s.filter else {
            return true;
        };
        match filter.matches(input) {
            Ok(true) => true,
            Ok(false) => {
                self.metrics
                    .filtered
                    .get_or_create(&metrics::watch(&s.identity.cluster, &s.watch))
                    .inc();
                false
            }
            Err(e) => {
                self.metrics
                    .filter_errors
                    .get_or_create(&metrics::watch(&s.identity.cluster, &s.watch))
                    .inc();
                let publish = s.filter_errors == FilterErrors::Publish;
                if self.warned.first(&s.watch, uid) {
                    let meta = input.object.get("metadata");
                    let field = |k: &str| {
                        meta.and_then(|m| m.get(k))
                            .and_then(serde_json::Value::as_str)
                            .unwrap_or_default()
                    };
                    let object = match field("namespace") {
                        "" => field("name").to_owned(),
                        ns => format!("{ns}/{}", field("name")),
                    };
                    warn!(
                        watch = %s.watch,
                        object = %object,
                        uid = %uid,
                        expression = %filter.source(),
                        error = %e,
                        filter_errors = s.filter_errors.as_str(),
                        "filter failed on this object; {} (logged once per object)",
                        if publish { "its changes are published" } else { "its changes are dropped" }
                    );
                }
                if !publish {
                    self.metrics
                        .filtered
                        .get_or_create(&metrics::watch(&s.identity.cluster, &s.watch))
                        .inc();
                }
                publish
            }
        }
    }
}
