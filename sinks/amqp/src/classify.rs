//! Pure: the error class of a failed AMQP operation, from lapin's error and the broker's
//! reply code and text.
//!
//! | broker answer | class | why |
//! |---|---|---|
//! | 403 ACCESS_REFUSED (channel close on publish or declare) | retriable | the operator grants the permission; until then the sink waits at the event, nothing is dead-lettered |
//! | 406 PRECONDITION_FAILED "message size N is larger than ... max size M", for a message over M bytes | too large | RabbitMQ's `max_message_size`: the `oversize` policy applies |
//! | the same close, for a message that fits | retriable | it was in flight on the channel the oversized one closed |
//! | 311 CONTENT_TOO_LARGE | too large | the AMQP spec's code for the same refusal |
//! | anything else on publish or confirm | retriable | connection and channel losses, resent from the cursor |
//!
//! Declaring or checking the exchange is different only in its default: a missing exchange
//! or one of another type is permanent (configuration), access refused is still retriable.

use crbridge_sink_api::SinkError;
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::ErrorKind;

/// A failed publish or confirm of a message whose body is `body_len` bytes.
pub(crate) fn publish(step: &'static str, e: lapin::Error, body_len: usize) -> SinkError {
    let err = match soft_error(&e) {
        Some((AMQPSoftError::ACCESSREFUSED, text)) => SinkError::retriable(
            step,
            format!("access refused ({text}): grant the user write permission on the exchange; the sink waits until then"),
        ),
        Some((AMQPSoftError::CONTENTTOOLARGE, text)) => SinkError::too_large(step, text),
        Some((AMQPSoftError::PRECONDITIONFAILED, text)) => match max_size_in(&text) {
            Some(max) if body_len as u64 > max => SinkError::too_large(
                step,
                format!("{body_len} bytes refused by the broker's max_message_size ({text})"),
            ),
            _ => SinkError::retriable(step, e.to_string()),
        },
        _ => SinkError::retriable(step, e.to_string()),
    };
    err.with_source(e)
}

/// A failed declare (or passive check) of the exchange.
pub(crate) fn declare(step: &'static str, exchange: &str, e: lapin::Error) -> SinkError {
    let err = match soft_error(&e) {
        Some((AMQPSoftError::ACCESSREFUSED, _)) => SinkError::retriable(
            step,
            format!("exchange {exchange}: access refused; grant the user permission on it"),
        ),
        _ => SinkError::permanent(step, format!("exchange {exchange}")),
    };
    err.with_source(e)
}

/// The channel-level (soft) error the broker closed the channel with, and its reply text.
fn soft_error(e: &lapin::Error) -> Option<(AMQPSoftError, String)> {
    match e.kind() {
        ErrorKind::ProtocolError(amqp) => match amqp.kind() {
            AMQPErrorKind::Soft(soft) => Some((soft.clone(), amqp.get_message().to_string())),
            AMQPErrorKind::Hard(_) => None,
        },
        _ => None,
    }
}

/// The limit in RabbitMQ's size refusal, "message size 5000 is larger than configured max
/// size 4096" (without "configured" when the limit is the built-in one): the number at
/// the end. `None` for any other precondition failure.
fn max_size_in(text: &str) -> Option<u64> {
    if !(text.contains("message size") && text.contains("larger than")) {
        return None;
    }
    text.rsplit(|c: char| !c.is_ascii_digit())
        .find(|word| !word.is_empty())?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crbridge_sink_api::ErrorClass;
    use lapin::protocol::{AMQPError, AMQPHardError};

    /// The error lapin hands back when the broker closes the channel with `code` / `text`.
    fn closed(code: u16, text: &str) -> lapin::Error {
        let amqp = AMQPError::from_id(code, text.into()).expect("a known reply code");
        ErrorKind::ProtocolError(amqp).into()
    }

    #[test]
    fn access_refused_is_retriable_on_publish_and_declare() {
        let text = "ACCESS_REFUSED - access to exchange 'x' in vhost '/' refused for user 'u'";
        let e = publish("confirm", closed(403, text), 10);
        assert_eq!(e.class, ErrorClass::Retriable);
        assert!(e.message.contains("grant the user write permission"), "{e}");
        let e = declare("declare exchange", "x", closed(403, text));
        assert_eq!(e.class, ErrorClass::Retriable);
    }

    #[test]
    fn rabbitmq_max_message_size_is_too_large_for_the_message_over_it() {
        let text =
            "PRECONDITION_FAILED - message size 5000 is larger than configured max size 4096";
        assert_eq!(
            publish("confirm", closed(406, text), 5000).class,
            ErrorClass::TooLarge
        );
        // A message that fits, in flight on the channel the big one closed: resend it.
        assert_eq!(
            publish("confirm", closed(406, text), 100).class,
            ErrorClass::Retriable
        );
        let builtin =
            "PRECONDITION_FAILED - message size 600000000 is larger than max size 536870912";
        assert_eq!(
            publish("confirm", closed(406, builtin), 600_000_000).class,
            ErrorClass::TooLarge
        );
        assert_eq!(
            publish("confirm", closed(311, "too big"), 1).class,
            ErrorClass::TooLarge
        );
    }

    #[test]
    fn other_failures_keep_their_class() {
        let e = publish(
            "confirm",
            closed(406, "PRECONDITION_FAILED - invalid expiration"),
            5000,
        );
        assert_eq!(e.class, ErrorClass::Retriable);
        let hard: lapin::Error = ErrorKind::ProtocolError(AMQPError::new(
            AMQPHardError::CONNECTIONFORCED.into(),
            "shutdown".into(),
        ))
        .into();
        assert_eq!(publish("confirm", hard, 1).class, ErrorClass::Retriable);
        let io: lapin::Error = std::io::Error::other("reset").into();
        assert_eq!(publish("publish", io, 1).class, ErrorClass::Retriable);
        let e = declare(
            "declare exchange",
            "x",
            closed(406, "PRECONDITION_FAILED - inequivalent arg 'type'"),
        );
        assert_eq!(e.class, ErrorClass::Permanent);
        assert_eq!(
            declare("check exchange", "x", closed(404, "NOT_FOUND")).class,
            ErrorClass::Permanent
        );
    }

    #[test]
    fn the_limit_is_read_from_the_reply_text() {
        assert_eq!(
            max_size_in("message size 5000 is larger than configured max size 4096"),
            Some(4096)
        );
        assert_eq!(
            max_size_in("PRECONDITION_FAILED - unknown delivery mode 3"),
            None
        );
    }
}
