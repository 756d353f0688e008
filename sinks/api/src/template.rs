//! Routing templates: Kafka topics, NATS subjects and AMQP routing keys such as
//! `crbridge.{cluster}.{group}.{kind}.{namespace}.{name}`.
//!
//! A template is literal text with variables in braces. Sinks keep the template text in
//! their own config section, parse it once at start-up ([`Template::parse`], or by using
//! [`Template`] as a field type: it deserializes from a string) and render it per event.
//! Escaping values for the protocol (dots in NATS subjects, ...) is the caller's job, in the
//! closure given to [`Template::render`].
//!
//! Length limits (AMQP short strings, Kafka topic names, NATS control lines) are met with
//! [`Template::render_bounded`]: when the rendering is too long, the longest values are cut
//! to a prefix plus `-` and 16 hex digits of an FNV-1a 64 hash of the whole value
//! ([`shorten`]), the same for every event of an object; literals and the number of words
//! stay. [`Template::min_len`] tells a sink at config time whether a template can always fit.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserialize, Deserializer};

/// A variable that a template may reference, written `{name}` in the template text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Var {
    /// `{cluster}`: the configured cluster name.
    Cluster,
    /// `{group}`: the API group (empty for the core group).
    Group,
    /// `{version}`: the API version, e.g. `v1`.
    Version,
    /// `{kind}`: the resource kind, e.g. `Widget`.
    Kind,
    /// `{plural}`: the resource plural, e.g. `widgets`.
    Plural,
    /// `{namespace}`: the object's namespace (empty for cluster-scoped objects).
    Namespace,
    /// `{name}`: the object's name.
    Name,
    /// `{type}`: the change type: `created`, `updated`, `deleted` or `snapshot`.
    Type,
}

impl Var {
    /// Every variable, in the order the error messages list them.
    pub const ALL: [Var; 8] = [
        Var::Cluster,
        Var::Group,
        Var::Version,
        Var::Kind,
        Var::Plural,
        Var::Namespace,
        Var::Name,
        Var::Type,
    ];

    /// The name written between the braces, e.g. `"namespace"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Var::Cluster => "cluster",
            Var::Group => "group",
            Var::Version => "version",
            Var::Kind => "kind",
            Var::Plural => "plural",
            Var::Namespace => "namespace",
            Var::Name => "name",
            Var::Type => "type",
        }
    }

    /// The variable named `name` (exact, lowercase), if there is one.
    pub fn from_name(name: &str) -> Option<Var> {
        Var::ALL.into_iter().find(|var| var.as_str() == name)
    }
}

impl fmt::Display for Var {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The allowed variables as the error messages list them: `cluster, group, ...`.
struct Allowed;

impl fmt::Display for Allowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, var) in Var::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(var.as_str())?;
        }
        Ok(())
    }
}

/// Why a template could not be parsed. Positions are 1-based character columns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template text is empty.
    #[error("empty template (expected text with variables, e.g. crbridge.{{group}}.{{kind}}; allowed variables: {})", Allowed)]
    Empty,
    /// A `{` has no matching `}`.
    #[error(
        "unclosed brace at character {position} (expected {{variable}}; allowed variables: {})",
        Allowed
    )]
    Unclosed {
        /// Where the `{` is.
        position: usize,
    },
    /// A `}` has no matching `{`.
    #[error("unmatched }} at character {position} (braces only surround variables; allowed variables: {})", Allowed)]
    Unmatched {
        /// Where the `}` is.
        position: usize,
    },
    /// `{}` with nothing inside.
    #[error(
        "empty variable {{}} at character {position} (allowed variables: {})",
        Allowed
    )]
    EmptyVar {
        /// Where the `{` is.
        position: usize,
    },
    /// `{name}` where `name` is not one of [`Var::ALL`].
    #[error(
        "unknown variable {{{name}}} at character {position} (allowed variables: {})",
        Allowed
    )]
    UnknownVar {
        /// The text between the braces.
        name: String,
        /// Where the `{` is.
        position: usize,
    },
}

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// Text copied as is.
    Literal(String),
    /// A variable replaced at render time.
    Var(Var),
}

/// A parsed routing template such as `crbridge.{cluster}.{group}.{kind}.{namespace}.{name}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The text as written, for display and error messages.
    text: String,
    /// Literals and variables in order.
    parts: Vec<Part>,
}

impl Template {
    /// Parses template text. Fails on empty text, an unclosed or unmatched brace, `{}`, or
    /// a variable that is not one of [`Var::ALL`]; the error names the variable and lists
    /// the allowed ones.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        if text.is_empty() {
            return Err(TemplateError::Empty);
        }
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().enumerate();
        while let Some((index, c)) = chars.next() {
            let position = index + 1;
            match c {
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for (_, c) in chars.by_ref() {
                        match c {
                            '}' => {
                                closed = true;
                                break;
                            }
                            '{' => break,
                            c => name.push(c),
                        }
                    }
                    if !closed {
                        return Err(TemplateError::Unclosed { position });
                    }
                    if name.is_empty() {
                        return Err(TemplateError::EmptyVar { position });
                    }
                    let var = Var::from_name(&name)
                        .ok_or(TemplateError::UnknownVar { name, position })?;
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Var(var));
                }
                '}' => return Err(TemplateError::Unmatched { position }),
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Template {
            text: text.to_owned(),
            parts,
        })
    }

    /// Renders the template, asking `vars` for the value of each variable occurrence.
    /// Values are inserted as returned: the caller escapes them for its protocol.
    pub fn render(&self, vars: &dyn Fn(Var) -> String) -> String {
        let mut out = String::with_capacity(self.text.len() + 32);
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Var(var) => out.push_str(&vars(*var)),
            }
        }
        out
    }

    /// The variables the template uses, in order of appearance (repeats included).
    pub fn vars(&self) -> impl Iterator<Item = Var> + '_ {
        self.parts.iter().filter_map(|part| match part {
            Part::Var(var) => Some(*var),
            Part::Literal(_) => None,
        })
    }

    /// The template text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Template {
    type Err = TemplateError;

    fn from_str(text: &str) -> Result<Template, TemplateError> {
        Template::parse(text)
    }
}

/// Deserializes from a string and parses it, so a sink's config struct can hold a
/// `Template` field directly and get template errors reported with the key path.
impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Template, D::Error> {
        let text = String::deserialize(deserializer)?;
        Template::parse(&text).map_err(de::Error::custom)
    }
}

/// Characters a value must not bring into a dot-separated name (NATS subject, AMQP routing
/// key): the separator, the wildcards of both protocols, `%` (the escape itself),
/// whitespace and control characters (a NATS subject ends at CR/LF, tab or space).
fn needs_escape(c: char) -> bool {
    matches!(c, '.' | '*' | '>' | '#' | '%') || c.is_whitespace() || c.is_control()
}

/// One value as one token of a dot-separated name: the characters above are
/// percent-encoded (`example.com` → `example%2Ecom`), so the mapping is reversible and a
/// value can never add, remove or wildcard a token; an empty value (the namespace of a
/// cluster-scoped object) becomes `_`.
pub fn escape_token(value: &str) -> std::borrow::Cow<'_, str> {
    use std::borrow::Cow;
    if value.is_empty() {
        return Cow::Borrowed("_");
    }
    if !value.chars().any(needs_escape) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        if needs_escape(c) {
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

impl Template {
    /// Renders the template for an event's route, each value passed through `escape`.
    pub fn render_route<'r>(
        &self,
        route: &'r crate::Route,
        escape: impl Fn(&'r str) -> std::borrow::Cow<'r, str>,
    ) -> String {
        self.render(&|v| escape(route.value(v)).into_owned())
    }

    /// The literal text of the template, in order (the parts between variables).
    pub fn literals(&self) -> impl Iterator<Item = &str> + '_ {
        self.parts.iter().filter_map(|part| match part {
            Part::Literal(text) => Some(text.as_str()),
            Part::Var(_) => None,
        })
    }

    /// The shortest any rendering can be made by [`Template::render_bounded`]: the literal
    /// bytes plus [`SHORTENED_MIN`] bytes per variable. A template whose `min_len` exceeds a
    /// protocol's limit can not always be rendered within it: sinks refuse it at config time.
    pub fn min_len(&self) -> usize {
        self.parts
            .iter()
            .map(|part| match part {
                Part::Literal(text) => text.len(),
                Part::Var(_) => SHORTENED_MIN,
            })
            .sum()
    }

    /// Renders the template for `route` within `max` bytes, values passed through `escape`.
    ///
    /// When the plain rendering is longer than `max`, every escaped value longer than a
    /// common cap is replaced by [`shorten`]`(value, cap)`, with the largest cap that makes
    /// the whole fit. The literals and the number of values stay as they are, so a name
    /// keeps its words (NATS tokens, AMQP routing-key words) and the bindings that match
    /// them. The cap is computed as if `{type}` were its longest value (`snapshot`), so all
    /// the events of one object get the same rendering whatever their change: the same
    /// input always gives the same output, and per-object order holds.
    ///
    /// Fails only when even every value at [`SHORTENED_MIN`] bytes is too long, i.e. when
    /// [`Template::min_len`] exceeds `max`.
    pub fn render_bounded<'r>(
        &self,
        route: &'r crate::Route,
        escape: impl Fn(&'r str) -> std::borrow::Cow<'r, str>,
        max: usize,
    ) -> Result<String, TooLong> {
        let values: Vec<(Var, std::borrow::Cow<'r, str>)> =
            self.vars().map(|v| (v, escape(route.value(v)))).collect();
        let literal: usize = self.literals().map(str::len).sum();
        // `{type}` counted at its longest, so the cap does not depend on the change.
        let budget_len = |value: &str, var: Var, cap: usize| {
            let len = if value.len() > cap {
                shortened_len(value, cap)
            } else {
                value.len()
            };
            if var == Var::Type {
                len.max(TYPE_MAX_LEN)
            } else {
                len
            }
        };
        let total = |cap: usize| -> usize {
            literal
                + values
                    .iter()
                    .map(|(var, value)| budget_len(value, *var, cap))
                    .sum::<usize>()
        };
        let longest = values.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
        let cap = if total(longest) <= max {
            longest
        } else if total(SHORTENED_MIN) > max {
            return Err(TooLong {
                len: total(longest),
                min: total(SHORTENED_MIN),
                max,
            });
        } else {
            // total() is non-decreasing in the cap: the largest cap that fits.
            let (mut lo, mut hi) = (SHORTENED_MIN, longest);
            while lo < hi {
                let mid = lo + (hi - lo).div_ceil(2);
                if total(mid) <= max {
                    lo = mid;
                } else {
                    hi = mid - 1;
                }
            }
            lo
        };
        let mut next = values.into_iter();
        let mut out = String::with_capacity(max.min(literal + 64 * self.parts.len()));
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Var(_) => {
                    if let Some((_, value)) = next.next() {
                        out.push_str(&shorten(&value, cap));
                    }
                }
            }
        }
        Ok(out)
    }
}

/// The longest `{type}` value, `snapshot`.
const TYPE_MAX_LEN: usize = 8;

/// Bytes of the suffix [`shorten`] appends: `-` and 16 hex digits of the value's hash.
pub const HASH_SUFFIX_LEN: usize = 17;

/// The fewest bytes a value is shortened to: the hash suffix alone.
pub const SHORTENED_MIN: usize = HASH_SUFFIX_LEN;

/// A template that cannot be rendered within a protocol's limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("renders to {len} bytes, more than the limit of {max}; even with every value shortened it needs {min}")]
pub struct TooLong {
    /// Bytes of the plain rendering.
    pub len: usize,
    /// Bytes with every value at its shortest.
    pub min: usize,
    /// The limit.
    pub max: usize,
}

/// `value` within `max` bytes (at least [`SHORTENED_MIN`]): as is when it fits, else its
/// longest prefix (cut at a character boundary) that leaves room for `-` and 16 lowercase
/// hex digits of the FNV-1a 64 hash of the whole value. Deterministic across runs and
/// versions (FNV-1a is fixed, unlike std's hasher), and two values that differ only after
/// the cut still differ.
pub fn shorten(value: &str, max: usize) -> std::borrow::Cow<'_, str> {
    use std::borrow::Cow;
    if value.len() <= max {
        return Cow::Borrowed(value);
    }
    let keep = prefix_len(value, max.max(SHORTENED_MIN) - HASH_SUFFIX_LEN);
    let mut out = String::with_capacity(keep + HASH_SUFFIX_LEN);
    out.push_str(&value[..keep]);
    out.push('-');
    let hash = fnv1a64(value.as_bytes());
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..16).rev() {
        out.push(HEX[((hash >> (shift * 4)) & 15) as usize] as char);
    }
    Cow::Owned(out)
}

/// The length [`shorten`] gives a value longer than `max`.
fn shortened_len(value: &str, max: usize) -> usize {
    prefix_len(value, max.max(SHORTENED_MIN) - HASH_SUFFIX_LEN) + HASH_SUFFIX_LEN
}

/// The longest prefix of `value` of at most `max` bytes that ends at a character boundary.
fn prefix_len(value: &str, max: usize) -> usize {
    let mut keep = max.min(value.len());
    while !value.is_char_boundary(keep) {
        keep -= 1;
    }
    keep
}

/// FNV-1a, 64 bits: tiny, stable, and good enough to tell long names apart.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(var: Var) -> String {
        match var {
            Var::Cluster => "prod-eu-1",
            Var::Group => "example.com",
            Var::Version => "v1",
            Var::Kind => "Widget",
            Var::Plural => "widgets",
            Var::Namespace => "team-a",
            Var::Name => "w1",
            Var::Type => "created",
        }
        .to_owned()
    }

    #[test]
    fn parses_and_renders_the_design_examples() {
        let t = Template::parse("crbridge.{cluster}.{group}.{kind}.{namespace}.{name}").unwrap();
        assert_eq!(
            t.render(&sample),
            "crbridge.prod-eu-1.example.com.Widget.team-a.w1"
        );
        assert_eq!(
            t.vars().collect::<Vec<_>>(),
            [
                Var::Cluster,
                Var::Group,
                Var::Kind,
                Var::Namespace,
                Var::Name
            ]
        );
        let t = Template::parse("{group}.{kind}.{namespace}.{type}").unwrap();
        assert_eq!(t.render(&sample), "example.com.Widget.team-a.created");
        let t = Template::parse("crbridge.{group}.{plural}").unwrap();
        assert_eq!(t.render(&sample), "crbridge.example.com.widgets");
        assert_eq!(t.to_string(), "crbridge.{group}.{plural}");
    }

    #[test]
    fn literal_only_and_variable_only_templates() {
        let t = Template::parse("fixed-topic").unwrap();
        assert_eq!(t.render(&sample), "fixed-topic");
        assert_eq!(t.vars().count(), 0);
        let t = Template::parse("{version}{version}").unwrap();
        assert_eq!(t.render(&sample), "v1v1");
        assert_eq!(t.vars().collect::<Vec<_>>(), [Var::Version, Var::Version]);
    }

    #[test]
    fn every_var_round_trips_through_its_name() {
        for var in Var::ALL {
            assert_eq!(Var::from_name(var.as_str()), Some(var));
            let t = Template::parse(&format!("{{{var}}}")).unwrap();
            assert_eq!(t.vars().collect::<Vec<_>>(), [var]);
        }
        assert_eq!(Var::from_name("Kind"), None);
    }

    #[test]
    fn errors_name_the_problem_and_the_allowed_variables() {
        let err = Template::parse("crbridge.{grup}.{kind}").unwrap_err();
        assert_eq!(
            err,
            TemplateError::UnknownVar {
                name: "grup".into(),
                position: 10
            }
        );
        assert_eq!(
            err.to_string(),
            "unknown variable {grup} at character 10 (allowed variables: cluster, group, \
             version, kind, plural, namespace, name, type)"
        );
        assert_eq!(Template::parse(""), Err(TemplateError::Empty));
        assert!(Template::parse("")
            .unwrap_err()
            .to_string()
            .contains("allowed variables: cluster"));
        assert_eq!(
            Template::parse("a.{group"),
            Err(TemplateError::Unclosed { position: 3 })
        );
        assert_eq!(
            Template::parse("a.{gr{oup}"),
            Err(TemplateError::Unclosed { position: 3 })
        );
        assert_eq!(
            Template::parse("a}"),
            Err(TemplateError::Unmatched { position: 2 })
        );
        assert_eq!(
            Template::parse("a.{}"),
            Err(TemplateError::EmptyVar { position: 3 })
        );
        assert!(Template::parse("{ kind }")
            .unwrap_err()
            .to_string()
            .starts_with("unknown variable { kind }"));
    }

    fn route(namespace: &str, name: &str, change: crate::ChangeKind) -> crate::Route {
        crate::Route {
            cluster: "prod-eu-1".into(),
            group: "example.com".into(),
            version: "v1".into(),
            kind: "Widget".into(),
            plural: "widgets".into(),
            namespace: namespace.into(),
            name: name.into(),
            change,
            uid: "u".into(),
        }
    }

    #[test]
    fn shorten_keeps_short_values_and_hashes_long_ones() {
        assert_eq!(shorten("abc", 17), "abc");
        let long = "a".repeat(300);
        let short = shorten(&long, 40);
        assert_eq!(short.len(), 40);
        assert!(short.starts_with(&"a".repeat(23)), "{short}");
        assert_eq!(short, shorten(&long, 40), "deterministic");
        // Same prefix, different tails: different results.
        let other = format!("{}b", "a".repeat(299));
        assert_ne!(shorten(&other, 40), short);
        // Cut at a character boundary, never inside a multi-byte character.
        let wide = "é".repeat(100);
        let short = shorten(&wide, 30);
        assert!(short.len() <= 30);
        assert!(short.starts_with("éééééé"));
        // The fixed FNV-1a 64 test vector: the same on every platform and version.
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
    }

    #[test]
    fn a_long_name_is_shortened_to_fit_keeping_every_word() {
        let t =
            Template::parse("crbridge.{cluster}.{group}.{kind}.{namespace}.{name}.{type}").unwrap();
        let name = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61),
        ]
        .join(".");
        assert_eq!(name.len(), 253);
        let r = route("team-a", &name, crate::ChangeKind::Created);
        let key = t.render_bounded(&r, escape_token, 255).unwrap();
        assert!(key.len() <= 255, "{} bytes: {key}", key.len());
        assert!(key.starts_with("crbridge.prod-eu-1.example%2Ecom.Widget.team-a.aaaa"));
        assert!(key.ends_with(".created"), "{key}");
        assert_eq!(key.split('.').count(), 7, "{key}");
        // Every change of the object gets the same name part.
        for change in [
            crate::ChangeKind::Updated,
            crate::ChangeKind::Deleted,
            crate::ChangeKind::Snapshot,
        ] {
            let other = t
                .render_bounded(&route("team-a", &name, change), escape_token, 255)
                .unwrap();
            assert_eq!(
                other.rsplit_once('.').unwrap().0,
                key.rsplit_once('.').unwrap().0
            );
        }
        // Short enough: the plain rendering.
        let r = route("team-a", "w1", crate::ChangeKind::Created);
        assert_eq!(
            t.render_bounded(&r, escape_token, 255).unwrap(),
            t.render_route(&r, escape_token)
        );
    }

    #[test]
    fn a_template_that_cannot_fit_is_an_error_and_min_len_says_so() {
        let t = Template::parse("{name}.{name}.{name}").unwrap();
        assert_eq!(t.min_len(), 3 * SHORTENED_MIN + 2);
        let r = route("", &"x".repeat(253), crate::ChangeKind::Created);
        let err = t.render_bounded(&r, escape_token, 40).unwrap_err();
        assert_eq!(err.max, 40);
        assert!(t.render_bounded(&r, escape_token, t.min_len()).is_ok());
        assert_eq!(
            Template::parse("ab{kind}cd")
                .unwrap()
                .literals()
                .collect::<Vec<_>>(),
            ["ab", "cd"]
        );
    }

    #[test]
    fn control_characters_are_escaped_in_tokens() {
        assert_eq!(escape_token("a\r\nb\u{0}c"), "a%0D%0Ab%00c");
    }

    #[test]
    fn deserializes_from_a_string() {
        #[derive(serde::Deserialize)]
        struct Sink {
            topic: Template,
        }
        let sink: Sink = serde_json::from_str(r#"{"topic": "t.{kind}"}"#).unwrap();
        assert_eq!(sink.topic.render(&sample), "t.Widget");
        let err = serde_json::from_str::<Sink>(r#"{"topic": "t.{knd}"}"#)
            .err()
            .unwrap();
        assert!(err.to_string().contains("unknown variable {knd}"));
    }
}
