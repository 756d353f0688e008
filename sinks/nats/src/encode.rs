//! Pure: subject rendering and the CloudEvents NATS binding.
//!
//! Escaping: a NATS subject token may not contain `.`, `*`, `>` or whitespace, and may not
//! be empty; every template value goes through [`escape_token`].

use async_nats::HeaderMap;
use bytes::Bytes;
use crbridge_sink_api::template::{escape_token, Template};
use crbridge_sink_api::{Event, Route};

use crbridge_sink_api::ContentMode;

/// The subject of an event.
pub fn subject(template: &Template, route: &Route) -> String {
    template.render_route(route, escape_token)
}

/// The stream filter that captures every subject `template` can render: each token that
/// holds a variable becomes `*`.
pub fn stream_filter(template: &Template) -> String {
    template
        .as_str()
        .split('.')
        .map(|t| if t.contains('{') { "*" } else { t })
        .collect::<Vec<_>>()
        .join(".")
}

/// True when the stream subject `filter` (may hold `*` and `>`) matches every subject that
/// `pattern` (may hold `*`) matches.
pub fn covers(filter: &str, pattern: &str) -> bool {
    let mut f = filter.split('.');
    let mut p = pattern.split('.');
    loop {
        match (f.next(), p.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b && b != "*" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Headers and body of the NATS message for `event`.
pub fn message(event: &Event, mode: ContentMode) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", event.id.as_str());
    match mode {
        ContentMode::Binary => {
            for (name, value) in event.attributes() {
                headers.insert(format!("ce-{name}"), value.as_ref());
            }
            headers.insert("content-type", Event::DATA_CONTENT_TYPE);
            (headers, Bytes::copy_from_slice(event.data.get().as_bytes()))
        }
        ContentMode::Structured => {
            headers.insert("content-type", Event::STRUCTURED_CONTENT_TYPE);
            (headers, Bytes::from(event.to_structured_json()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crbridge_sink_api::ChangeKind;

    fn route() -> Route {
        Route {
            cluster: "prod-eu-1".into(),
            group: "example.com".into(),
            version: "v1".into(),
            kind: "Widget".into(),
            plural: "widgets".into(),
            namespace: String::new(),
            name: "a b*c>d%".into(),
            change: ChangeKind::Updated,
            uid: "u".into(),
        }
    }

    #[test]
    fn values_stay_one_token_and_escape_reversibly() {
        let t: Template = "crbridge.{cluster}.{group}.{kind}.{namespace}.{name}.{type}"
            .parse()
            .unwrap();
        assert_eq!(
            subject(&t, &route()),
            "crbridge.prod-eu-1.example%2Ecom.Widget._.a%20b%2Ac%3Ed%25.updated"
        );
        assert_eq!(escape_token("plain"), std::borrow::Cow::Borrowed("plain"));
    }

    #[test]
    fn stream_filter_covers_rendered_subjects() {
        let t: Template = "crbridge.{cluster}.{group}.{kind}.{namespace}.{name}"
            .parse()
            .unwrap();
        let f = stream_filter(&t);
        assert_eq!(f, "crbridge.*.*.*.*.*");
        assert!(covers(&f, &subject(&t, &route())));
        assert!(covers("crbridge.>", &f));
        assert!(!covers("crbridge.*", &f));
        assert!(!covers("other.>", &f));
        assert!(!covers("crbridge.x.*.*.*.*", &f));
    }
}
