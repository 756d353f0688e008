//! JSON Schema (draft 2020-12) of an event's `data` for a watched kind: pure, no I/O.
//!
//! [`object_schema`] translates a CRD version's `openAPIV3Schema` (a *structural* schema,
//! the OpenAPI v3.0 subset Kubernetes accepts) into JSON Schema 2020-12; [`data_schema`]
//! wraps it in the schema of `data` (`object`, `patch`, `previousResourceVersion`) for the
//! watch's payload mode. `crbridge schema` prints the result and every event names it in
//! its `dataschema` attribute.
//!
//! The translation (structural-schema rules from the Kubernetes docs, "Specifying a
//! structural schema"; JSON Schema 2020-12 core and validation vocabularies):
//!
//! | OpenAPI / Kubernetes | JSON Schema 2020-12 |
//! |---|---|
//! | `nullable: true` | `"null"` added to `type` (and to `enum`) |
//! | `x-kubernetes-int-or-string: true` | `type: [integer, string]` |
//! | `x-kubernetes-preserve-unknown-fields: true` | no constraint on unknown members (an untyped node accepts any value) |
//! | `x-kubernetes-embedded-resource: true` | `apiVersion`, `kind` strings and `metadata` object added to `properties` |
//! | `exclusiveMinimum: true` + `minimum: n` | `exclusiveMinimum: n` (likewise maximum) |
//! | `default`, `example`, `externalDocs`, other `x-kubernetes-*` | dropped (defaults are applied by the API server, so objects carry them already) |
//!
//! Unknown members of an object are never forbidden (`additionalProperties` is only kept
//! where the CRD sets it to a schema): the API server prunes them anyway, and a consumer
//! validating with an older schema should not reject an object of a newer CRD version
//! that only adds fields.

mod convert;
mod data;

pub use convert::object_schema;
pub use data::{data_schema, permissive_object_schema, DataSchemaInfo};

/// The `$schema` of every document this module produces.
pub const DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

/// A CRD that cannot give a schema for the watched version.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SchemaError {
    /// The CRD does not define the watched version.
    #[error("the CRD has no version {version:?} (it has: {available})")]
    NoSuchVersion {
        /// The watched version.
        version: String,
        /// The versions the CRD lists, comma separated.
        available: String,
    },
    /// The version has no `schema.openAPIV3Schema` (only possible for old, non-structural
    /// `apiextensions.k8s.io/v1beta1` CRDs).
    #[error("version {0:?} of the CRD has no schema.openAPIV3Schema")]
    NoSchema(String),
}

/// The `openAPIV3Schema` of `version` in a CRD (`apiextensions.k8s.io/v1`, as JSON).
pub fn crd_version_schema<'a>(
    crd: &'a serde_json::Value,
    version: &str,
) -> Result<&'a serde_json::Value, SchemaError> {
    let versions = crd
        .pointer("/spec/versions")
        .and_then(serde_json::Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let found = versions
        .iter()
        .find(|v| v.get("name").and_then(serde_json::Value::as_str) == Some(version))
        .ok_or_else(|| SchemaError::NoSuchVersion {
            version: version.to_owned(),
            available: versions
                .iter()
                .filter_map(|v| v.get("name").and_then(serde_json::Value::as_str))
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    found
        .pointer("/schema/openAPIV3Schema")
        .ok_or_else(|| SchemaError::NoSchema(version.to_owned()))
}
