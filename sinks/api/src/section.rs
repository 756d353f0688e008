//! A sink's section of the config, as its factory sees it.
//!
//! crbridge reads `sinks.{name}` itself only for the keys every sink has (`type`, `onError`,
//! `oversize`); the rest is the sink crate's typed config. Errors in it must read like every
//! other config error (`{file}: sinks.{name}.{path}: {what} (expected ...)`), so the wording
//! of serde's messages stays with crbridge's config module and reaches the sink as a function.

use serde::de::DeserializeOwned;

/// A problem in a sink's own keys. The key path is complete (`sinks.{name}.{path}`); crbridge
/// adds the file name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SectionError {
    /// The keys do not have the expected shape: missing or unknown key, wrong type,
    /// unparsable value.
    #[error("{path}: {message}")]
    Schema {
        /// Key path, e.g. `sinks.kafka.topic`.
        path: String,
        /// What is wrong and what was expected.
        message: String,
    },
    /// The values are well-typed but break a rule the sink checks itself.
    #[error("{path}: {message}")]
    Invalid {
        /// Key path, e.g. `sinks.kafka.topic`.
        path: String,
        /// What is wrong and what was expected.
        message: String,
    },
}

/// Words a serde error at `path` (inside the section) with serde's `message` as a
/// [`SectionError::Schema`] whose key path starts with `sinks.{name}`.
pub type WordSchemaError<'a> = &'a dyn Fn(&serde_path_to_error::Path, &str) -> SectionError;

/// One `sinks.{name}` section without the keys crbridge handles itself.
pub struct Section<'a> {
    name: &'a str,
    keys: serde_json::Value,
    word: WordSchemaError<'a>,
}

impl<'a> Section<'a> {
    /// The section of sink `name` holding the sink's own `keys`, with the config's wording of
    /// serde errors.
    pub fn new(name: &'a str, keys: serde_json::Value, word: WordSchemaError<'a>) -> Self {
        Section { name, keys, word }
    }

    /// The sink's name (its key under `sinks`).
    pub fn name(&self) -> &str {
        self.name
    }

    /// Deserializes the keys into the sink's config type (which should
    /// `#[serde(deny_unknown_fields)]`); errors name the key path.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, SectionError> {
        serde_path_to_error::deserialize(self.keys.clone())
            .map_err(|err| (self.word)(err.path(), &err.inner().to_string()))
    }

    /// A rule broken at `path` inside the section (e.g. `topic`), for checks serde cannot
    /// express.
    pub fn invalid(&self, path: &str, message: impl Into<String>) -> SectionError {
        SectionError::Invalid {
            path: format!("sinks.{}.{path}", self.name),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Conf {
        #[allow(dead_code)]
        url: String,
    }

    fn word(path: &serde_path_to_error::Path, message: &str) -> SectionError {
        SectionError::Schema {
            path: format!("sinks.n.{path}"),
            message: message.to_owned(),
        }
    }

    #[test]
    fn errors_go_through_the_wording_and_name_the_path() {
        let s = Section::new("n", serde_json::json!({"url": 1}), &word);
        let err = s.parse::<Conf>().unwrap_err();
        assert!(
            matches!(&err, SectionError::Schema { path, .. } if path == "sinks.n.url"),
            "{err}"
        );
        assert_eq!(
            s.invalid("url", "bad").to_string(),
            "sinks.n.url: bad",
            "{err}"
        );
        assert_eq!(s.name(), "n");
    }
}
