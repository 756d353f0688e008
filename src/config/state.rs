//! `state`: the state directory, the sled tuning and the outbox bounds, with their
//! defaults and rules.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::Duration;

use crbridge_sink_api::units;
use serde::Deserialize;

use super::resolve::expand_home;

/// `state`: where and how crbridge keeps its durable state.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StateConfig {
    /// State directory (`~/` expanded); one crbridge process per directory.
    pub path: PathBuf,
    /// Outbox retention for `crbridge replay`.
    #[serde(default)]
    pub outbox: OutboxConfig,
    /// sled page cache size (key `cacheBytes`).
    // 64 MiB: object state lives in sled, not RAM (README, "Sizing"), and sled's own 1 GiB
    // default is too much for a 2-core pod; 64 MiB keeps the hot index of 100k objects.
    #[serde(
        default = "default_cache_bytes",
        deserialize_with = "units::deserialize_bytes"
    )]
    pub cache_bytes: u64,
    /// How often sled flushes to disk (key `flushEvery`).
    // 200 ms: state, outbox and checkpoint are one transaction, so the cadence only bounds
    // how much work repeats after a crash, never correctness; sled's own default is 500 ms.
    #[serde(
        default = "default_flush_every",
        deserialize_with = "units::deserialize_duration"
    )]
    pub flush_every: Duration,
}

/// `state.outbox`: how long and how much acknowledged history is kept for replay.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OutboxConfig {
    /// Keep acknowledged events at least this long, and dead letters this long.
    // 24h: a consumer that lost a day can still be replayed.
    #[serde(
        default = "default_retention",
        deserialize_with = "units::deserialize_duration"
    )]
    pub retention: Duration,
    /// Outbox size cap (key `max_bytes` as in the README's configuration reference,
    /// `maxBytes` also accepted); when full, watches pause and later recover by relist.
    // 2 GiB: fits a small PVC next to the object state.
    #[serde(
        rename = "max_bytes",
        alias = "maxBytes",
        default = "default_max_bytes",
        deserialize_with = "units::deserialize_bytes"
    )]
    pub max_bytes: u64,
}

fn default_cache_bytes() -> u64 {
    64 << 20
}

fn default_flush_every() -> Duration {
    Duration::from_millis(200)
}

fn default_retention() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_max_bytes() -> u64 {
    2 << 30
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            retention: default_retention(),
            max_bytes: default_max_bytes(),
        }
    }
}

/// Expands `~` in `state.path` and checks what serde cannot: no empty path, no zero size
/// or period. Errors carry (key path, message).
pub(super) fn validate_state(
    state: &mut StateConfig,
    home: Option<&OsStr>,
) -> Result<(), (&'static str, String)> {
    if state.path.as_os_str().is_empty() {
        return Err((
            "state.path",
            "empty (expected the state directory, e.g. /var/lib/crbridge)".into(),
        ));
    }
    state.path = expand_home(&state.path, home).map_err(|m| ("state.path", m))?;
    if state.cache_bytes == 0 {
        return Err((
            "state.cacheBytes",
            "must be greater than 0 (expected e.g. 64MiB)".into(),
        ));
    }
    if state.flush_every.is_zero() {
        return Err((
            "state.flushEvery",
            "must be greater than 0 (expected e.g. 200ms)".into(),
        ));
    }
    if state.outbox.max_bytes == 0 {
        return Err((
            "state.outbox.max_bytes",
            "must be greater than 0 (expected e.g. 2GiB)".into(),
        ));
    }
    Ok(())
}
