//! Pure: topic rendering and the CloudEvents Kafka protocol binding.
//!
//! Topic names may hold only `[a-zA-Z0-9._-]` and at most [`MAX_TOPIC_LEN`] characters,
//! and may not be `.` or `..`; librdkafka never sees one that breaks these rules:
//!
//! * Every other character of a template value becomes `_` (a value with a `/` or `:`
//!   cannot split or redirect the topic), and an empty value becomes `_`.
//! * A topic longer than 249 characters has its longest values shortened to a prefix plus
//!   `-` and a 16-hex-digit hash of the whole value ([`Template::render_bounded`]); the same
//!   object always gets the same topic, so its records stay in one partition, in order.
//! * A topic rendered as `.` or `..` has its dots replaced by `_`.
//! * The template's literal text is checked at config time ([`check_topic_template`]):
//!   only allowed characters, and short enough to always fit.
//! * Header names are crbridge's own (`ce_` + attribute name) and header values are
//!   bytes: Kafka puts no limit on either beyond the message size.

use std::borrow::Cow;

use crbridge_sink_api::template::Template;
use crbridge_sink_api::{ChangeKind, Event, Route, SinkError};

use crbridge_sink_api::ContentMode;

/// Maximum topic name length Kafka accepts.
pub const MAX_TOPIC_LEN: usize = 249;

/// A character Kafka allows in a topic name.
fn topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// One value made safe for a topic name.
pub fn escape_topic_value(value: &str) -> Cow<'_, str> {
    if value.is_empty() {
        Cow::Borrowed("_")
    } else if value.chars().all(topic_char) {
        Cow::Borrowed(value)
    } else {
        Cow::Owned(
            value
                .chars()
                .map(|c| if topic_char(c) { c } else { '_' })
                .collect(),
        )
    }
}

/// The topic of an event: a legal Kafka topic name. Fails (permanent) only for a template
/// [`check_topic_template`] refuses.
pub fn topic(template: &Template, route: &Route) -> Result<String, SinkError> {
    let topic = template
        .render_bounded(route, escape_topic_value, MAX_TOPIC_LEN)
        .map_err(|e| SinkError::permanent("topic", format!("topic template {template} {e}")))?;
    if topic == "." || topic == ".." {
        return Ok(topic.replace('.', "_"));
    }
    Ok(topic)
}

/// Config-time check of a topic template: its literal text holds only `[a-zA-Z0-9._-]`,
/// it is not `.` or `..`, and it always fits in [`MAX_TOPIC_LEN`].
pub fn check_topic_template(template: &Template) -> Result<(), String> {
    for literal in template.literals() {
        if let Some(c) = literal.chars().find(|c| !topic_char(*c)) {
            return Err(format!(
                "{template}: {c:?} is not allowed in a topic name (expected [a-zA-Z0-9._-] around the variables)"
            ));
        }
    }
    if matches!(template.as_str(), "." | "..") {
        return Err(format!("{template}: not a legal topic name"));
    }
    if template.min_len() > MAX_TOPIC_LEN {
        return Err(format!(
            "{template}: needs at least {} characters even with every value shortened (expected at most {MAX_TOPIC_LEN})",
            template.min_len()
        ));
    }
    Ok(())
}

/// Whether `event` is followed by a tombstone: a record with the same key (the object uid)
/// and a null value, which log compaction reads as "remove this key". Only a `deleted`
/// event, watched or inferred by a relist, and only when the sink has `tombstones: true`.
pub fn wants_tombstone(event: &Event, tombstones: bool) -> bool {
    tombstones && event.route.change == ChangeKind::Deleted
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

    #[test]
    fn only_deleted_events_get_a_tombstone_and_only_when_asked() {
        let mut e = Event {
            id: "i".into(),
            source: "/s".into(),
            ty: "t".into(),
            subject: "n".into(),
            time: "2026-01-01T00:00:00Z".into(),
            extensions: vec![],
            data: serde_json::value::RawValue::from_string("{}".into()).unwrap(),
            route: route("n"),
        };
        for change in [
            ChangeKind::Created,
            ChangeKind::Updated,
            ChangeKind::Snapshot,
        ] {
            e.route.change = change;
            assert!(!wants_tombstone(&e, true), "{change}");
        }
        e.route.change = ChangeKind::Deleted;
        assert!(wants_tombstone(&e, true));
        assert!(!wants_tombstone(&e, false));
    }

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
        assert_eq!(
            topic(&t, &route).unwrap(),
            "crbridge.example.com.widgets._.a_b_c"
        );
    }

    fn route(name: &str) -> Route {
        Route {
            cluster: "c".into(),
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

    /// What Kafka accepts as a topic name.
    fn legal_topic(t: &str) -> bool {
        !t.is_empty()
            && t.len() <= MAX_TOPIC_LEN
            && t != "."
            && t != ".."
            && t.chars().all(topic_char)
    }

    #[test]
    fn a_253_character_name_makes_a_legal_topic() {
        let t: Template = "crbridge.{group}.{plural}.{namespace}.{name}"
            .parse()
            .unwrap();
        let name = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61),
        ]
        .join(".");
        let topic = topic(&t, &route(&name)).unwrap();
        assert!(legal_topic(&topic), "{} characters: {topic}", topic.len());
        assert!(
            topic.starts_with("crbridge.example.com.widgets.team-a.aaaa"),
            "{topic}"
        );
        assert_eq!(topic, super::topic(&t, &route(&name)).unwrap());
    }

    #[test]
    fn dot_topics_and_bad_templates() {
        let t: Template = "{name}".parse().unwrap();
        assert_eq!(topic(&t, &route(".")).unwrap(), "_");
        assert_eq!(topic(&t, &route("..")).unwrap(), "__");
        assert_eq!(topic(&t, &route("...")).unwrap(), "...");
        assert_eq!(check_topic_template(&t), Ok(()));
        for bad in ["a/{name}", "a b.{name}", "..", "crbridge:{kind}"] {
            let t: Template = bad.parse().unwrap();
            assert!(check_topic_template(&t).is_err(), "{bad}");
        }
        let long: Template = format!("{}{{name}}", "x".repeat(240)).parse().unwrap();
        assert!(check_topic_template(&long)
            .unwrap_err()
            .contains("at most 249"));
    }

    mod prop {
        use super::*;
        use crbridge_sink_api::test_support::{arb_route, arb_template};
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn every_topic_is_legal(
                template in arb_template("[a-z./:_-]{0,6}", "x{0,200}"),
                route in arb_route("c"),
            ) {
                let checked = check_topic_template(&template).is_ok();
                match topic(&template, &route) {
                    Ok(t) if checked => prop_assert!(legal_topic(&t), "{t:?}"),
                    Ok(t) => prop_assert!(t.len() <= MAX_TOPIC_LEN),
                    Err(_) => prop_assert!(!checked),
                }
            }

            #[test]
            fn records_never_panic(
                route in arb_route("c"),
                changed_by in prop_oneof![any::<String>(), "[a-z%\\r\\n\\x00-\\x1f ]{0,40}"],
            ) {
                let e = Event {
                    id: "i".into(),
                    source: "/s".into(),
                    ty: "t".into(),
                    subject: route.name.clone(),
                    time: "2026-01-01T00:00:00Z".into(),
                    extensions: vec![(
                        "crbchangedby".into(),
                        crbridge_sink_api::Extension::String(changed_by.clone()),
                    )],
                    data: serde_json::value::RawValue::from_string("{}".into()).unwrap(),
                    route,
                };
                let (headers, _) = record(&e, ContentMode::Binary);
                prop_assert!(headers.contains(&("ce_crbchangedby".to_owned(), changed_by)));
            }
        }
    }
}
