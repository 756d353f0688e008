//! Pure: subject rendering and the CloudEvents NATS binding.
//!
//! What goes into a protocol field is made valid here, never left to the client (whose
//! header constructors panic on CR/LF):
//!
//! * Subject tokens: a NATS subject token may not contain `.`, `*`, `>`, whitespace or
//!   control characters, and may not be empty; every template value goes through
//!   [`escape_token`] (percent-encoding, `_` for an empty value).
//! * Subject length: at most [`MAX_SUBJECT_LEN`] bytes. A longer subject has its longest
//!   values shortened to a prefix plus `-` and a 16-hex-digit hash of the whole value
//!   ([`Template::render_bounded`]): deterministic, so every event of one object keeps one
//!   subject and its order.
//! * The template's literal text is checked at config time ([`check_subject_template`]):
//!   no wildcards, whitespace or empty tokens, and short enough to always fit.
//! * Header values: `%` and control characters (CR and LF included) are percent-encoded
//!   ([`header_value`]), e.g. a field manager `a\r\nb` is sent as `a%0D%0Ab`.
//! * Header names are crbridge's own (`ce-` + attribute name); one the protocol does not
//!   allow is a permanent error for the event, never a panic.

use std::borrow::Cow;

use async_nats::header::{HeaderName, HeaderValue};
use async_nats::HeaderMap;
use bytes::Bytes;
use crbridge_sink_api::template::{escape_token, Template};
use crbridge_sink_api::{Event, Route, SinkError};

use crbridge_sink_api::ContentMode;

/// Longest subject crbridge publishes to, in bytes. The server reads a publish's subject,
/// reply inbox and sizes as one control line of at most 4096 bytes (`max_control_line`'s
/// default); 1024 leaves room for the rest and is far above any subject a Kubernetes name
/// makes with a sensible template.
pub const MAX_SUBJECT_LEN: usize = 1024;

/// The subject of an event: valid tokens, at most [`MAX_SUBJECT_LEN`] bytes. Fails
/// (permanent) only for a template [`check_subject_template`] refuses.
pub fn subject(template: &Template, route: &Route) -> Result<String, SinkError> {
    template
        .render_bounded(route, escape_token, MAX_SUBJECT_LEN)
        .map_err(|e| SinkError::permanent("subject", format!("subject template {template} {e}")))
}

/// Config-time check of a subject template: its literal text holds no wildcard
/// (`*`, `>`), whitespace or control character, it makes no empty token (leading,
/// trailing or doubled `.`), and it always fits in [`MAX_SUBJECT_LEN`].
pub fn check_subject_template(template: &Template) -> Result<(), String> {
    for literal in template.literals() {
        if let Some(c) = literal
            .chars()
            .find(|c| matches!(c, '*' | '>') || c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "{template}: {c:?} is not allowed in a subject (expected literal text without wildcards, whitespace or control characters)"
            ));
        }
    }
    // Every value renders non-empty, so any non-empty stand-in shows the token structure.
    let shape = template.render(&|_| "x".to_owned());
    if shape.split('.').any(str::is_empty) {
        return Err(format!(
            "{template}: makes an empty subject token (expected no leading, trailing or doubled dots)"
        ));
    }
    if template.min_len() > MAX_SUBJECT_LEN {
        return Err(format!(
            "{template}: needs at least {} bytes even with every value shortened (expected at most {MAX_SUBJECT_LEN})",
            template.min_len()
        ));
    }
    Ok(())
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

/// A header value as sent: `%` and control characters percent-encoded (UTF-8 bytes as
/// `%XX`), everything else as is. Reversible with [`decode_header_value`].
pub fn header_value(value: &str) -> Cow<'_, str> {
    let escape = |c: char| c == '%' || c.is_control();
    if !value.chars().any(escape) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        if escape(c) {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The original of a [`header_value`]; text that is not a valid escape stays as is.
pub fn decode_header_value(value: &str) -> Cow<'_, str> {
    if !value.contains('%') {
        return Cow::Borrowed(value);
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(_) => Cow::Borrowed(value),
    }
}

/// Adds one header, its value encoded by [`header_value`]; a name NATS does not allow is a
/// permanent error.
fn insert(headers: &mut HeaderMap, name: &str, value: &str) -> Result<(), SinkError> {
    let name = HeaderName::try_from(name).map_err(|e| {
        SinkError::permanent("encode", format!("header name {name:?}: {e}")).with_source(e)
    })?;
    let value: HeaderValue = header_value(value)
        .parse()
        .map_err(|e| SinkError::permanent("encode", format!("header {name}")).with_source(e))?;
    headers.insert(name, value);
    Ok(())
}

/// Headers and body of the NATS message for `event`.
pub fn message(event: &Event, mode: ContentMode) -> Result<(HeaderMap, Bytes), SinkError> {
    let mut headers = HeaderMap::new();
    insert(&mut headers, "Nats-Msg-Id", &event.id)?;
    match mode {
        ContentMode::Binary => {
            for (name, value) in event.attributes() {
                insert(&mut headers, &format!("ce-{name}"), &value)?;
            }
            insert(&mut headers, "content-type", Event::DATA_CONTENT_TYPE)?;
            Ok((headers, Bytes::copy_from_slice(event.data.get().as_bytes())))
        }
        ContentMode::Structured => {
            insert(&mut headers, "content-type", Event::STRUCTURED_CONTENT_TYPE)?;
            Ok((headers, Bytes::from(event.to_structured_json())))
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
            subject(&t, &route()).unwrap(),
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
        assert!(covers(&f, &subject(&t, &route()).unwrap()));
        assert!(covers("crbridge.>", &f));
        assert!(!covers("crbridge.*", &f));
        assert!(!covers("other.>", &f));
        assert!(!covers("crbridge.x.*.*.*.*", &f));
    }

    fn event(route: Route, changed_by: &str, labels: &[(String, String)]) -> Event {
        let labels: serde_json::Map<_, _> = labels
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
            .collect();
        let data = serde_json::json!({"object": {"metadata": {"labels": labels}}});
        Event {
            id: "0123456789abcdef0123456789abcdef".into(),
            source: format!(
                "/clusters/{}/apis/{}/{}/{}",
                route.cluster, route.group, route.version, route.plural
            ),
            ty: format!("io.crbridge.resource.{}", route.change),
            subject: format!("{}/{}", route.namespace, route.name),
            time: "2026-01-01T00:00:00Z".into(),
            extensions: vec![
                (
                    "crbname".into(),
                    crbridge_sink_api::Extension::String(route.name.clone()),
                ),
                (
                    "crbnamespace".into(),
                    crbridge_sink_api::Extension::String(route.namespace.clone()),
                ),
                (
                    "crbchangedby".into(),
                    crbridge_sink_api::Extension::String(changed_by.into()),
                ),
            ],
            data: serde_json::value::RawValue::from_string(data.to_string()).unwrap(),
            route,
        }
    }

    #[test]
    fn header_values_with_line_breaks_are_encoded_not_a_panic() {
        let mut r = route();
        r.name = "w".into();
        let e = event(r, "evil\r\nPUB x 0\r\n%", &[]);
        let (headers, _) = message(&e, ContentMode::Binary).unwrap();
        let sent = headers.get("ce-crbchangedby").unwrap().as_str();
        assert_eq!(sent, "evil%0D%0APUB x 0%0D%0A%25");
        assert_eq!(decode_header_value(sent), "evil\r\nPUB x 0\r\n%");
        assert_eq!(header_value("kubectl-edit"), Cow::Borrowed("kubectl-edit"));
    }

    #[test]
    fn a_253_character_name_gives_a_valid_subject() {
        let t: Template = "crbridge.{cluster}.{group}.{kind}.{namespace}.{name}"
            .parse()
            .unwrap();
        let mut r = route();
        r.name = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61),
        ]
        .join(".");
        let s = subject(&t, &r).unwrap();
        assert!(s.ends_with(&format!("c%2E{}", "d".repeat(61))), "{s}");
        assert!(covers(&stream_filter(&t), &s));
    }

    #[test]
    fn subject_templates_are_checked_at_config_time() {
        let ok: Template = "crbridge.{cluster}.{name}".parse().unwrap();
        assert_eq!(check_subject_template(&ok), Ok(()));
        for bad in [
            "a.*.{name}",
            "a.>",
            "a b.{name}",
            ".a.{name}",
            "a..{name}",
            "{name}.",
        ] {
            let t: Template = bad.parse().unwrap();
            assert!(check_subject_template(&t).is_err(), "{bad}");
        }
        let long: Template = format!("{}.{{name}}", "x".repeat(MAX_SUBJECT_LEN))
            .parse()
            .unwrap();
        assert!(check_subject_template(&long)
            .unwrap_err()
            .contains("at most 1024"));
    }

    /// What the NATS server and async-nats accept as a publish subject.
    fn valid_subject(s: &str) -> bool {
        s.len() <= MAX_SUBJECT_LEN
            && s.split('.').all(|t| {
                !t.is_empty()
                    && t != "*"
                    && t != ">"
                    && !t.chars().any(|c| c.is_whitespace() || c.is_control())
            })
    }

    mod prop {
        use super::*;
        use crbridge_sink_api::test_support::{arb_route, arb_template};
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn encoding_never_panics_and_respects_every_limit(
                template in arb_template("[a-z.*> _-]{0,6}", "x{0,400}"),
                route in arb_route("c1"),
                changed_by in prop_oneof![any::<String>(), "[a-z%\\r\\n\\t\\x00-\\x1f\\x7f ]{0,40}"],
                labels in proptest::collection::vec((any::<String>(), any::<String>()), 0..4),
            ) {
                let checked = check_subject_template(&template).is_ok();
                let rendered = subject(&template, &route);
                if checked {
                    let s = rendered.unwrap();
                    prop_assert!(valid_subject(&s), "{s:?}");
                    prop_assert!(covers(&stream_filter(&template), &s), "{s:?}");
                } else if let Ok(s) = rendered {
                    prop_assert!(s.len() <= MAX_SUBJECT_LEN);
                }
                let e = event(route, &changed_by, &labels);
                for mode in [ContentMode::Binary, ContentMode::Structured] {
                    let (headers, _) = message(&e, mode).unwrap();
                    for (_, values) in headers.iter() {
                        for v in values {
                            prop_assert!(!v.as_str().contains(['\r', '\n']));
                        }
                    }
                }
                let (headers, _) = message(&e, ContentMode::Binary).unwrap();
                let sent = headers.get("ce-crbchangedby").unwrap().as_str();
                prop_assert_eq!(decode_header_value(sent), changed_by.as_str());
            }
        }
    }
}
