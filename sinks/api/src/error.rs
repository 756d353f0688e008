use std::fmt;

/// How the dispatcher must treat a failed publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Try again later with backoff: connection lost, timeout, broker unavailable, and
    /// not authorized (an operator grants the permission, then the events go through; none
    /// is dead-lettered meanwhile).
    Retriable,
    /// Trying again cannot succeed: rejected, invalid, unroutable when the sink is
    /// configured to refuse that. The sink's permanent-error policy applies (dead-letter or
    /// halt).
    Permanent,
    /// The event is larger than the broker accepts: permanent, but the sink's oversize
    /// policy may first try the event without its `object` (patch only).
    TooLarge,
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorClass::Retriable => "retriable",
            ErrorClass::Permanent => "permanent",
            ErrorClass::TooLarge => "too large",
        })
    }
}

/// A failure reported by a sink, classified from the client's own signals.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {message}")]
pub struct SinkError {
    /// Retriable or permanent.
    pub class: ErrorClass,
    /// The step that failed, e.g. `connect`, `publish`, `ack`.
    pub step: &'static str,
    /// What went wrong, for the operator.
    pub message: String,
    /// The client's error, when there is one.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl SinkError {
    /// A retriable failure of `step`.
    pub fn retriable(step: &'static str, message: impl Into<String>) -> Self {
        SinkError {
            class: ErrorClass::Retriable,
            step,
            message: message.into(),
            source: None,
        }
    }

    /// A permanent failure of `step`.
    pub fn permanent(step: &'static str, message: impl Into<String>) -> Self {
        SinkError {
            class: ErrorClass::Permanent,
            step,
            message: message.into(),
            source: None,
        }
    }

    /// The event is larger than the broker accepts.
    pub fn too_large(step: &'static str, message: impl Into<String>) -> Self {
        SinkError {
            class: ErrorClass::TooLarge,
            step,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the client's error as the cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// True when the dispatcher should back off and try again.
    pub fn is_retriable(&self) -> bool {
        self.class == ErrorClass::Retriable
    }
}
