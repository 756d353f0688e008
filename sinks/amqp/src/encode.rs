//! Pure: routing keys and the CloudEvents attributes as AMQP message properties.

use crbridge_sink_api::template::{escape_token, Template};
use crbridge_sink_api::{Event, Route};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;

use crbridge_sink_api::ContentMode;

/// Persistent delivery: the broker writes the message to disk (for durable queues).
const PERSISTENT: u8 = 2;

/// The routing key of an event.
pub fn routing_key(template: &Template, route: &Route) -> String {
    template.render_route(route, escape_token)
}

/// Properties and body of the message for `event`.
pub fn message(event: &Event, mode: ContentMode, prefix: &str) -> (BasicProperties, Vec<u8>) {
    let props = BasicProperties::default()
        .with_message_id(ShortString::from(event.id.as_str()))
        .with_delivery_mode(PERSISTENT);
    match mode {
        ContentMode::Binary => {
            let mut headers = FieldTable::default();
            for (k, v) in event.attributes() {
                headers.insert(
                    ShortString::from(format!("{prefix}{k}").as_str()),
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
    }
}
