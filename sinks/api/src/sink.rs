use std::future::Future;
use std::pin::Pin;

use crate::{Event, SinkError};

/// A boxed, sendable future (what `futures::future::BoxFuture` is, without the dependency).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The broker's answer for one event, resolved after the client handed the event over.
pub type PendingAck = BoxFuture<'static, Result<(), SinkError>>;

/// A destination for events.
///
/// The dispatcher calls [`Sink::publish`] for events in outbox order, keeps up to a window of
/// the returned [`PendingAck`]s in flight, and advances the sink's cursor only over the
/// contiguous prefix of events whose ack resolved `Ok`. A sink must therefore never report
/// success before the broker has taken responsibility for the event.
///
/// There is no `flush`: on shutdown the dispatcher awaits every [`PendingAck`] still in
/// flight (up to its drain timeout), and an ack resolves only once the broker answered, so
/// nothing handed over is left to flush. A sink that buffers must make its acks wait for
/// that buffer too.
pub trait Sink: Send + Sync {
    /// Hands `event` to the client. Resolves once the client accepted it (possibly after
    /// waiting for room in its own buffer) with the future of the broker's ack. An error here
    /// means the event was not handed over.
    fn publish<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<PendingAck, SinkError>>;

    /// Does real work against the broker (e.g. reads stream / topic / exchange metadata) to
    /// tell whether publishing can succeed now.
    fn healthcheck(&self) -> BoxFuture<'_, Result<(), SinkError>>;

    /// False when the client's connection is gone for good and the dispatcher must connect
    /// a new sink (clients that reconnect on their own keep the default).
    fn is_connected(&self) -> bool {
        true
    }

    /// How many events the dispatcher may keep in flight (awaiting acks) at once.
    fn window(&self) -> usize {
        256
    }
}
