//! How crbridge knows a sink: a [`SinkFactory`] in its registry (one line in the root's
//! `src/sinks.rs`) turns a config section into a validated [`SinkConfig`], which connects
//! sinks (for dispatchers, `replay`, `check`) and opens consumers (for `tail`).

use std::sync::Arc;

use crate::{BoxFuture, ConsumeError, Consumer, Section, SectionError, Sink, SinkError};

/// The entry point of a sink crate: its `type` name and how to read its section.
pub trait SinkFactory: Send + Sync + 'static {
    /// The value of `type` that selects this sink, e.g. `kafka`.
    fn kind(&self) -> &'static str;

    /// Parses and validates the sink's own keys (pure: no I/O, no secrets read), so a bad
    /// section fails when the config is loaded.
    fn configure(&self, section: &Section<'_>) -> Result<Arc<dyn SinkConfig>, SectionError>;
}

/// A sink's validated config: everything that talks to the broker starts here.
pub trait SinkConfig: Send + Sync + 'static {
    /// Connects a sink and prepares its destination (stream, topic, exchange). `check`
    /// follows it with [`Sink::healthcheck`]. Resolves `env:` / `file:` secrets.
    fn connect(&self) -> BoxFuture<'static, Result<Arc<dyn Sink>, SinkError>>;

    /// Subscribes to what the sink publishes, as a downstream service would: from the
    /// oldest retained event when `from_start` and the broker keeps history, else from now.
    fn consume(
        &self,
        from_start: bool,
    ) -> BoxFuture<'static, Result<Box<dyn Consumer>, ConsumeError>>;
}
