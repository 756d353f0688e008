//! Pure: topic rendering and the CloudEvents Kafka protocol binding.
//!
//! Topic names may hold only `[a-zA-Z0-9._-]` and at most 249 characters: every other
//! character of a template value becomes `_` (a value with a `/` or `:` cannot split or
//! redirect the topic), and an empty value becomes `_`.

use std::borrow::Cow;

use crbridge_sink_api::template::Template;
use crbridge_sink_api::{Event, Route};

use crbridge_sink_api::ContentMode;

/// Maximum topic name length Kafka accepts.
pub const MAX_TOPIC_LEN: usize = 249;

/// One value made safe for a topic name.
pub fn escape_topic_value(value: &str) -> Cow<'_, str> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if value.is_empty() {
        Cow::Borrowed("_")
    } else if value.chars().all(ok) {
        Cow::Borrowed(value)
    } else {
        Cow::Owned(value.chars().map(|c| if ok(c) { c } else { '_' }).collect())
    }
}

/// The topic of an event.
pub fn topic(template: &Template, route: &Route) -> String {
    template.render_route(route, escape_topic_value)
}

/// Headers (name, value) and value of the record for `event`.
pub fn record(event: &Event, mode: ContentMode) -> (Vec<(String, String)>, Vec<u8>) {
    match mode {
        ContentMode::Binary => {
            let mut headers: Vec<(String, String)> = event
                .attributes()
                .map(|(k, v)| (format!("ce_{k}"), v.into_owned()))
                .collect();
            headers.push(("content-type".into(), Event::DATA_CONTENT_TYPE.into()));
            (headers, event.data.get().as_bytes().to_vec())
        }
        ContentMode::Structured => (
            vec![("content-type".into(), Event::STRUCTURED_CONTENT_TYPE.into())],
            event.to_structured_json(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crbridge_sink_api::ChangeKind;

    #[test]
    fn topic_values_are_made_legal() {
        let route = Route {
            cluster: "c".into(),
            group: "example.com".into(),
            version: "v1".into(),
            kind: "Widget".into(),
            plural: "widgets".into(),
            namespace: String::new(),
            name: "a/b:c".into(),
            change: ChangeKind::Created,
            uid: "u".into(),
        };
        let t: Template = "crbridge.{group}.{plural}.{namespace}.{name}"
            .parse()
            .unwrap();
        assert_eq!(topic(&t, &route), "crbridge.example.com.widgets._.a_b_c");
    }
}
