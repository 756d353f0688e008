//! Pure: routing keys and the CloudEvents attributes as AMQP message properties.
//!
//! Every AMQP short string (routing key, header name, message id, content type) is at
//! most [`SHORT_STRING_MAX`] bytes; lapin panics on a longer one, so nothing reaches it
//! unchecked:
//!
//! * Routing key: values escaped with [`escape_token`] (a value never adds a word or a
//!   wildcard); a key longer than 255 bytes has its longest values shortened to a prefix
//!   plus `-` and a 16-hex-digit hash of the whole value ([`Template::render_bounded`]), the
//!   same for every event of an object, so per-object order holds and the key keeps its
//!   words for the bindings. A template too long to ever fit is refused at config time
//!   ([`check_routing_key_template`]).
//! * Header names are `headerPrefix` + attribute name: the prefix is checked at config
//!   time to leave [`MAX_ATTRIBUTE_NAME`] bytes; a longer name is a permanent error for the
//!   event. Header values are long strings (no limit, any byte) and go as they are.

use crbridge_sink_api::template::{escape_token, Template};
use crbridge_sink_api::{Event, Route, SinkError};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;

use crbridge_sink_api::ContentMode;

/// Persistent delivery: the broker writes the message to disk (for durable queues).
const PERSISTENT: u8 = 2;

/// The longest AMQP short string (exchange, vhost, routing key, header name): a length byte.
pub const SHORT_STRING_MAX: usize = 255;

/// Room kept for an attribute name after `headerPrefix`: the CloudEvents spec says
/// attribute names SHOULD NOT exceed 20 characters.
pub const MAX_ATTRIBUTE_NAME: usize = 20;

/// The routing key of an event: at most [`SHORT_STRING_MAX`] bytes. Fails (permanent) only
/// for a template [`check_routing_key_template`] refuses.
pub fn routing_key(template: &Template, route: &Route) -> Result<String, SinkError> {
    template
        .render_bounded(route, escape_token, SHORT_STRING_MAX)
        .map_err(|e| SinkError::permanent("routing key", format!("template {template} {e}")))
}

/// Config-time check of a routing-key template: it always fits in a short string.
pub fn check_routing_key_template(template: &Template) -> Result<(), String> {
    if template.min_len() > SHORT_STRING_MAX {
        return Err(format!(
            "{template}: needs at least {} bytes even with every value shortened (expected at most {SHORT_STRING_MAX}: an AMQP short string)",
            template.min_len()
        ));
    }
    Ok(())
}

/// Config-time check of `headerPrefix`: it leaves room for the attribute names.
pub fn check_header_prefix(prefix: &str) -> Result<(), String> {
    let max = SHORT_STRING_MAX - MAX_ATTRIBUTE_NAME;
    if prefix.len() > max {
        return Err(format!(
            "{} bytes long (expected at most {max}, so that prefix and attribute name fit an AMQP short string)",
            prefix.len()
        ));
    }
    Ok(())
}

/// `value` as a short string, or a permanent error naming `what`.
fn short(what: &str, value: &str) -> Result<ShortString, SinkError> {
    if value.len() > SHORT_STRING_MAX {
        return Err(SinkError::permanent(
            "encode",
            format!(
                "{what} is {} bytes long (an AMQP short string holds at most {SHORT_STRING_MAX})",
                value.len()
            ),
        ));
    }
    Ok(ShortString::from(value))
}

/// Properties and body of the message for `event`.
pub fn message(
    event: &Event,
    mode: ContentMode,
    prefix: &str,
) -> Result<(BasicProperties, Vec<u8>), SinkError> {
    let props = BasicProperties::default()
        .with_message_id(short("message id", &event.id)?)
        .with_delivery_mode(PERSISTENT);
    Ok(match mode {
        ContentMode::Binary => {
            let mut headers = FieldTable::default();
            for (k, v) in event.attributes() {
                headers.insert(
                    short("header name", &format!("{prefix}{k}"))?,
                    AMQPValue::LongString(LongString::from(v.as_bytes().to_vec())),
                );
            }
            (
                props
                    .with_content_type(ShortString::from(Event::DATA_CONTENT_TYPE))
                    .with_headers(headers),
                event.data.get().as_bytes().to_vec(),
            )
        }
        ContentMode::Structured => (
            props.with_content_type(ShortString::from(Event::STRUCTURED_CONTENT_TYPE)),
            event.to_structured_json(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crbridge_sink_api::{ChangeKind, Extension};

    fn route(name: &str) -> Route {
        Route {
            cluster: "prod-eu-1".into(),
            group: "example.com".into(),
            version: "v1".into(),
            kind: "Widget".into(),
            plural: "widgets".into(),
            namespace: "team-a".into(),
            name: name.into(),
            change: ChangeKind::Created,
            uid: "u".into(),
        }
    }

    fn event(route: Route, changed_by: &str) -> Event {
        Event {
            id: "0123456789abcdef0123456789abcdef".into(),
            source: format!("/clusters/{}/apis/{}", route.cluster, route.group),
            ty: format!("io.crbridge.resource.{}", route.change),
            subject: format!("{}/{}", route.namespace, route.name),
            time: "2026-01-01T00:00:00Z".into(),
            extensions: vec![
                ("crbname".into(), Extension::String(route.name.clone())),
                ("crbchangedby".into(), Extension::String(changed_by.into())),
            ],
            data: serde_json::value::RawValue::from_string("{}".into()).unwrap(),
            route,
        }
    }

    /// The name the review found: 253 characters, dots escaped to `%2E` make it 259.
    fn long_name() -> String {
        [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61),
        ]
        .join(".")
    }

    #[test]
    fn a_253_character_name_makes_a_short_string_routing_key() {
        let t: Template = "crbridge.{cluster}.{group}.{kind}.{namespace}.{name}"
            .parse()
            .unwrap();
        let key = routing_key(&t, &route(&long_name())).unwrap();
        assert!(key.len() <= SHORT_STRING_MAX, "{} bytes", key.len());
        assert!(key.starts_with("crbridge.prod-eu-1.example%2Ecom.Widget.team-a.aaa"));
        assert_eq!(key.split('.').count(), 6, "{key}");
        assert_eq!(key, routing_key(&t, &route(&long_name())).unwrap());
        // A short name is as before.
        assert_eq!(
            routing_key(&t, &route("w1")).unwrap(),
            "crbridge.prod-eu-1.example%2Ecom.Widget.team-a.w1"
        );
    }

    #[test]
    fn an_overlong_header_name_is_a_permanent_error() {
        let e = event(route("w"), "m");
        assert!(message(&e, ContentMode::Binary, "cloudEvents:").is_ok());
        let err = message(&e, ContentMode::Binary, &"p".repeat(250)).unwrap_err();
        assert_eq!(err.class, crbridge_sink_api::ErrorClass::Permanent);
        assert!(err.message.contains("header name"), "{err}");
    }

    mod prop {
        use super::*;
        use crbridge_sink_api::test_support::{arb_route, arb_template};
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn encoding_never_panics_and_every_short_string_fits(
                template in arb_template("[a-z.*#_-]{0,6}", "x{0,200}"),
                route in arb_route("prod-eu-1"),
                changed_by in prop_oneof![any::<String>(), "[a-z%\\r\\n\\t\\x00-\\x1f ]{0,40}"],
                prefix in prop_oneof![Just("cloudEvents:".to_owned()), "\\PC{0,300}"],
            ) {
                match routing_key(&template, &route) {
                    Ok(key) => prop_assert!(key.len() <= SHORT_STRING_MAX),
                    Err(_) => prop_assert!(check_routing_key_template(&template).is_err()),
                }
                let e = event(route, &changed_by);
                match message(&e, ContentMode::Binary, &prefix) {
                    Ok((props, _)) => {
                        let headers = props.headers().as_ref().unwrap();
                        for name in headers.inner().keys() {
                            prop_assert!(name.as_str().len() <= SHORT_STRING_MAX);
                        }
                    }
                    Err(_) => prop_assert!(check_header_prefix(&prefix).is_err()),
                }
                prop_assert!(message(&e, ContentMode::Structured, &prefix).is_ok());
            }
        }
    }
}
