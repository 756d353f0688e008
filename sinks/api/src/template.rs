//! Routing templates: Kafka topics, NATS subjects and AMQP routing keys such as
//! `crbridge.{cluster}.{group}.{kind}.{namespace}.{name}`.
//!
//! A template is literal text with variables in braces. Sinks keep the template text in
//! their own config section, parse it once at start-up ([`Template::parse`], or by using
//! [`Template`] as a field type: it deserializes from a string) and render it per event.
//! Escaping values for the protocol (dots in NATS subjects, ...) is the caller's job, in the
//! closure given to [`Template::render`].

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
/// key): the separator, the wildcards of both protocols, `%` (the escape itself) and
/// whitespace.
fn needs_escape(c: char) -> bool {
    matches!(c, '.' | '*' | '>' | '#' | '%') || c.is_whitespace()
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
