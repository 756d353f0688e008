//! [`ConfigError`] and the wording of its messages: serde's messages rewritten as
//! `{what is wrong} (expected ...)`, with a key path and a "did you mean" hint for typos.

use serde_json::Value;
use serde_path_to_error::Segment;

use super::de::{join_key, key_path, yaml_path};

/// Why a configuration could not be loaded. Every variant displays as one line starting
/// with the file name.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file as given.
        file: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not well-formed YAML (or holds more than one document).
    #[error("{}", syntax_line(file, *line, *column, message))]
    Syntax {
        /// The file as given.
        file: String,
        /// 1-based line of the problem, when the parser knows it.
        line: Option<usize>,
        /// 1-based column of the problem, when the parser knows it.
        column: Option<usize>,
        /// The parser's description.
        message: String,
    },
    /// The YAML does not have the expected shape: missing or unknown key, wrong type,
    /// unparsable value.
    #[error("{file}: {path}: {message}")]
    Schema {
        /// The file as given.
        file: String,
        /// Key path, e.g. `watches[0].kind`.
        path: String,
        /// What is wrong and what was expected.
        message: String,
    },
    /// The values are well-typed but break a rule (charset, uniqueness, reference to an
    /// undefined sink, ...).
    #[error("{file}: {path}: {message}")]
    Invalid {
        /// The file as given.
        file: String,
        /// Key path, e.g. `watches[1].sinks[0]`.
        path: String,
        /// What is wrong and what was expected.
        message: String,
    },
}

impl ConfigError {
    /// A validation error in the common format, for sink crates that check their own
    /// section after [`sink_config`](super::sink_config) (e.g.
    /// `invalid(file, "sinks.kafka.topic", "...")`).
    pub fn invalid(file: &str, path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            file: file.to_owned(),
            path: path.into(),
            message: message.into(),
        }
    }

    /// The file the error is about.
    pub fn file(&self) -> &str {
        match self {
            ConfigError::Read { file, .. }
            | ConfigError::Syntax { file, .. }
            | ConfigError::Schema { file, .. }
            | ConfigError::Invalid { file, .. } => file,
        }
    }

    /// The key path the error is about, when there is one.
    pub fn path(&self) -> Option<&str> {
        match self {
            ConfigError::Schema { path, .. } | ConfigError::Invalid { path, .. } => Some(path),
            ConfigError::Read { .. } | ConfigError::Syntax { .. } => None,
        }
    }
}

/// Formats [`ConfigError::Syntax`]: `{file}: line L, column C: invalid YAML: {message}`.
fn syntax_line(file: &str, line: Option<usize>, column: Option<usize>, message: &str) -> String {
    match (line, column) {
        (Some(line), Some(column)) => {
            format!("{file}: line {line}, column {column}: invalid YAML: {message}")
        }
        _ => format!("{file}: invalid YAML: {message}"),
    }
}

/// Shown as the key path of errors about the document as a whole.
pub(super) const TOP_LEVEL: &str = "(top level)";

/// What a missing required key of `crbridge.yaml` should hold.
pub(super) fn config_field_hint(field: &str) -> String {
    match field {
        "cluster" => "the cluster name used in event source and id, e.g. prod-eu-1",
        "state" => "a mapping with the state directory, e.g. { path: /var/lib/crbridge }",
        "path" => "the state directory, e.g. /var/lib/crbridge",
        "watches" => {
            "a list of resources to watch, e.g. [{ group: example.com, version: v1, kind: Widget }]"
        }
        "sinks" => "a mapping of sink names to settings, e.g. { kafka: { type: kafka, ... } }",
        "version" => "the API version, e.g. v1",
        "kind" => "the resource kind, e.g. Widget",
        _ => "a value: this key is required",
    }
    .to_owned()
}

/// A [`ConfigError::Syntax`] from a YAML parser error.
pub(super) fn syntax_error(file: &str, text: &str, err: &serde_saphyr::Error) -> ConfigError {
    // A second document is about the file as a whole; its position adds nothing.
    let location = match err.without_snippet() {
        serde_saphyr::Error::MultipleDocuments { .. } => None,
        other => other.location(),
    };
    ConfigError::Syntax {
        file: file.to_owned(),
        line: location.and_then(|l| usize::try_from(l.line()).ok().filter(|n| *n > 0)),
        column: location.and_then(|l| usize::try_from(l.column()).ok().filter(|n| *n > 0)),
        message: yaml_message(err, text),
    }
}

/// An empty value where a string is required; [`schema_error`] words it with the key's
/// hint, as `empty (expected …)`.
const NULL_INTO_STRING: &str = "invalid type: unit value, expected a string";

/// The message serde itself gives for `err` (the wording [`schema_error`] rewrites),
/// without the location serde-saphyr appends: serde-saphyr keeps serde's errors as
/// structured variants and reports a scalar of the wrong type in its own words, which
/// this turns back into serde's `invalid type: {found}, expected {what}`.
pub(super) fn yaml_message(err: &serde_saphyr::Error, text: &str) -> String {
    use serde_saphyr::Error as E;
    match err.without_snippet() {
        E::Message { msg, .. } => msg.clone(),
        E::SerdeInvalidType {
            unexpected,
            expected,
            ..
        } => format!("invalid type: {unexpected}, expected {expected}"),
        E::SerdeInvalidValue {
            unexpected,
            expected,
            ..
        } => format!("invalid value: {unexpected}, expected {expected}"),
        E::SerdeUnknownField {
            field, expected, ..
        } => format!("unknown field `{field}`, {}", one_of(expected, "fields")),
        E::SerdeUnknownVariant {
            variant, expected, ..
        } => format!(
            "unknown variant `{variant}`, {}",
            one_of(expected, "variants")
        ),
        E::SerdeMissingField { field, .. } => format!("missing field `{field}`"),
        E::InvalidBooleanStrict { location } => {
            format!(
                "invalid type: {}, expected a boolean",
                found(text, location)
            )
        }
        E::Unexpected { expected, location } => {
            let expected = match *expected {
                "sequence start" => "a sequence",
                "mapping start" => "a map",
                "string scalar" => "a string",
                "scalar" => "a plain value",
                other => other,
            };
            format!(
                "invalid type: {}, expected {expected}",
                found(text, location)
            )
        }
        E::NullIntoString { .. } => NULL_INTO_STRING.to_owned(),
        E::UnsupportedTag { tag, .. } => {
            format!("tag {tag} is not supported (expected a plain YAML value)")
        }
        E::MultipleDocuments { .. } => {
            "more than one document (expected a single YAML document)".to_owned()
        }
        E::InvalidScalar { ty, location } => {
            let ty = if *ty == "boolean" { "a boolean" } else { ty };
            format!("invalid type: {}, expected {ty}", found(text, location))
        }
        other => {
            let message = other.to_string();
            match other.location() {
                Some(l) => {
                    let mark = format!(" at line {}, column {}", l.line(), l.column());
                    message.replace(&mark, "")
                }
                None => message,
            }
        }
    }
}

/// serde's list of the allowed names: `expected one of `a`, `b``.
fn one_of(names: &[&str], what: &str) -> String {
    if names.is_empty() {
        return format!("there are no {what}");
    }
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    format!("expected one of {}", quoted.join(", "))
}

/// The scalar at `location` as serde names an unexpected value: ``integer `3` ``,
/// `string "x"`, ...
fn found(text: &str, location: &serde_saphyr::Location) -> String {
    let span = location.span();
    let scalar = span
        .byte_offset()
        .zip(span.byte_len())
        .and_then(|(at, len)| {
            let at = usize::try_from(at).ok()?;
            text.get(at..at.checked_add(usize::try_from(len).ok()?)?)
        })
        .unwrap_or_default()
        .trim();
    let at = span
        .byte_offset()
        .and_then(|at| usize::try_from(at).ok())
        .and_then(|at| text.get(at..))
        .unwrap_or_default();
    if at.starts_with('{') {
        return "map".to_owned();
    }
    if at.starts_with('[') || at.starts_with("- ") {
        return "sequence".to_owned();
    }
    if scalar.starts_with(['"', '\'']) {
        let inner = scalar
            .get(1..scalar.len().saturating_sub(1))
            .unwrap_or_default();
        return format!("string {inner:?}");
    }
    if scalar.parse::<i64>().is_ok() || scalar.parse::<u64>().is_ok() {
        format!("integer `{scalar}`")
    } else if scalar.parse::<f64>().is_ok() && scalar.contains(|c: char| c.is_ascii_digit()) {
        format!("floating point `{scalar}`")
    } else if scalar == "true" || scalar == "false" {
        format!("boolean `{scalar}`")
    } else if ["", "~", "null", "Null", "NULL"].contains(&scalar) {
        "unit value".to_owned()
    } else {
        format!("string {scalar:?}")
    }
}

/// A serde message without the `path: ` a YAML library may prepend (we print our own
/// path).
pub(super) fn strip_yaml_decorations(message: String, segments: &[&Segment]) -> String {
    for len in (1..=segments.len()).rev() {
        let prefix = format!("{}: ", yaml_path(&segments[..len]));
        if let Some(rest) = message.strip_prefix(&prefix) {
            return rest.to_owned();
        }
    }
    message
}

/// The strings between backticks in a serde message, in order.
fn backticked(message: &str) -> Vec<&str> {
    message.split('`').skip(1).step_by(2).collect()
}

/// Serde's name for an unexpected value, in YAML words.
fn friendly_found(found: &str) -> String {
    match found {
        "unit value" => "null (empty value)".to_owned(),
        "map" => "a mapping".to_owned(),
        "sequence" => "a list".to_owned(),
        other => other.to_owned(),
    }
}

/// Serde's description of an expected type, in YAML words.
fn friendly_expected(expected: &str) -> String {
    match expected {
        "a sequence" => "a list".to_owned(),
        "a map" => "a mapping".to_owned(),
        "u8" | "u16" | "u32" | "u64" | "usize" => "a non-negative integer".to_owned(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "an integer".to_owned(),
        "a borrowed string" => "a string".to_owned(),
        other if other.starts_with("struct ") => "a mapping".to_owned(),
        other if other.starts_with("a sequence") => other.replacen("a sequence", "a list", 1),
        other => other.to_owned(),
    }
}

/// How a JSON value's type reads in an error message.
pub(super) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null (empty value)",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Edit distance counting an adjacent transposition as one edit (optimal string
/// alignment), for "did you mean" hints: `kafak` is one edit from `kafka`.
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// `"; did you mean X?"` when a candidate is a likely typo of `word` (a few edits away,
/// or a prefix of at least three characters either way).
pub(super) fn suggestion<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    let word_lower = word.to_lowercase();
    let allowed = (word_lower.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter_map(|candidate| {
            let lower = candidate.to_lowercase();
            let distance = edit_distance(&word_lower, &lower);
            let (short, long) = if word_lower.len() <= lower.len() {
                (&word_lower, &lower)
            } else {
                (&lower, &word_lower)
            };
            let prefix = short.len() >= 3 && long.starts_with(short.as_str());
            (distance <= allowed || prefix).then_some((distance, candidate))
        })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| format!("; did you mean {candidate}?"))
        .unwrap_or_default()
}

/// Builds a [`ConfigError::Schema`] from a serde message and its path, rewriting serde's
/// standard messages into `{what is wrong} (expected ...)`.
pub(super) fn schema_error(
    file: &str,
    prefix: &str,
    path: &serde_path_to_error::Path,
    message: &str,
    hint: &dyn Fn(&str) -> String,
) -> ConfigError {
    let mut key = key_path(prefix, path);
    let last_key = match path.iter().next_back() {
        Some(Segment::Map { key }) => Some(key.as_str()),
        _ => None,
    };
    let empty_string = match last_key {
        Some(field) if message == NULL_INTO_STRING => Some(field),
        _ => None,
    };
    let text = if let Some(field) = empty_string {
        format!("empty (expected {})", hint(field))
    } else if message.starts_with("missing field `") {
        let field = backticked(message).first().copied().unwrap_or_default();
        key = join_key(&key, field);
        format!("missing field (expected {})", hint(field))
    } else if message.starts_with("unknown field `") {
        let names = backticked(message);
        let field = names.first().copied().unwrap_or_default();
        if last_key != Some(field) {
            key = join_key(&key, field);
        }
        let expected = names.get(1..).unwrap_or_default();
        if expected.is_empty() {
            "unknown key (no keys are allowed here)".to_owned()
        } else {
            format!(
                "unknown key (expected one of: {}){}",
                expected.join(", "),
                suggestion(field, expected.iter().copied())
            )
        }
    } else if message.starts_with("duplicate field `") {
        let field = backticked(message).first().copied().unwrap_or_default();
        key = join_key(&key, field);
        "duplicate key (each key may appear only once)".to_owned()
    } else if message.starts_with("unknown variant `") {
        let names = backticked(message);
        let value = names.first().copied().unwrap_or_default();
        let expected = names.get(1..).unwrap_or_default();
        format!(
            "unknown value {value:?} (expected one of: {}){}",
            expected.join(", "),
            suggestion(value, expected.iter().copied())
        )
    } else if let Some(rest) = message.strip_prefix("invalid type: ") {
        match rest.rsplit_once(", expected ") {
            Some((found, expected)) => format!(
                "wrong type: {} (expected {})",
                friendly_found(found),
                friendly_expected(expected)
            ),
            None => message.to_owned(),
        }
    } else if let Some(rest) = message.strip_prefix("invalid value: ") {
        match rest.rsplit_once(", expected ") {
            Some((found, expected)) => format!(
                "invalid value: {} (expected {})",
                friendly_found(found),
                friendly_expected(expected)
            ),
            None => message.to_owned(),
        }
    } else {
        message.to_owned()
    };
    ConfigError::Schema {
        file: file.to_owned(),
        path: if key.is_empty() {
            TOP_LEVEL.to_owned()
        } else {
            key
        },
        message: text,
    }
}
