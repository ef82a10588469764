//! Schemas of event types: the vocabulary every crate shares — the compatibility modes, a
//! topic's schema policy, the formats, a registered version, the limits and what a refused
//! registration reports. Deciding compatibility and validating data is `herald-schema`'s.
//!
//! The compatibility modes are the schema registries' (Confluent's documented meaning):
//! - `BACKWARD`: consumers using the new schema can read data written with the previous one;
//! - `FORWARD`: consumers using the previous schema can read data written with the new one;
//! - `FULL`: both;
//! - each `_TRANSITIVE`: against every earlier version, not only the latest;
//! - `NONE`: no check.
//!
//! Pure: no I/O, no clock.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How a new schema version must relate to the earlier ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Compatibility {
    /// No check.
    None,
    /// New readers read the latest earlier version's data.
    #[default]
    Backward,
    /// New readers read every earlier version's data.
    BackwardTransitive,
    /// The latest earlier version's readers read new data.
    Forward,
    /// Every earlier version's readers read new data.
    ForwardTransitive,
    /// Backward and forward against the latest earlier version.
    Full,
    /// Backward and forward against every earlier version.
    FullTransitive,
}

impl Compatibility {
    /// Every mode, in the registries' order.
    pub const ALL: [Compatibility; 7] = [
        Compatibility::None,
        Compatibility::Backward,
        Compatibility::BackwardTransitive,
        Compatibility::Forward,
        Compatibility::ForwardTransitive,
        Compatibility::Full,
        Compatibility::FullTransitive,
    ];

    /// Its name: `BACKWARD_TRANSITIVE`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Compatibility::None => "NONE",
            Compatibility::Backward => "BACKWARD",
            Compatibility::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Compatibility::Forward => "FORWARD",
            Compatibility::ForwardTransitive => "FORWARD_TRANSITIVE",
            Compatibility::Full => "FULL",
            Compatibility::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    /// (new reads old, old reads new, against all earlier versions).
    pub const fn checks(self) -> (bool, bool, bool) {
        match self {
            Compatibility::None => (false, false, false),
            Compatibility::Backward => (true, false, false),
            Compatibility::BackwardTransitive => (true, false, true),
            Compatibility::Forward => (false, true, false),
            Compatibility::ForwardTransitive => (false, true, true),
            Compatibility::Full => (true, true, false),
            Compatibility::FullTransitive => (true, true, true),
        }
    }
}

impl fmt::Display for Compatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Compatibility {
    type Err = String;

    fn from_str(s: &str) -> Result<Compatibility, String> {
        Compatibility::ALL.into_iter().find(|c| c.as_str().eq_ignore_ascii_case(s)).ok_or_else(|| {
            format!("compatibility {s:?} is not one of {}", Compatibility::ALL.map(Compatibility::as_str).join(", "))
        })
    }
}

/// What a topic does with an event whose type has no schema registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownTypes {
    /// Stored unchecked (the default: a topic without schemas takes anything).
    #[default]
    Allow,
    /// Refused with `schema_invalid`.
    Refuse,
}

/// A topic's schema settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchemaPolicy {
    /// Events of a type without a schema.
    pub unknown_types: UnknownTypes,
    /// The compatibility rule of a type that does not set its own.
    pub compatibility: Compatibility,
}

/// The schema formats Herald validates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchemaFormat {
    /// JSON Schema, draft 2020-12: the event's data is JSON.
    #[default]
    JsonSchema,
    /// A Protobuf message: the schema names the message and carries the `FileDescriptorSet`
    /// (see [`ProtobufSchema`]); the event's data is the message's binary encoding.
    Protobuf,
}

impl SchemaFormat {
    /// Its name: `json_schema`, `protobuf`.
    pub const fn as_str(self) -> &'static str {
        match self {
            SchemaFormat::JsonSchema => "json_schema",
            SchemaFormat::Protobuf => "protobuf",
        }
    }
}

impl fmt::Display for SchemaFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SchemaFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<SchemaFormat, String> {
        [SchemaFormat::JsonSchema, SchemaFormat::Protobuf]
            .into_iter()
            .find(|f| f.as_str() == s || (s == "json" && *f == SchemaFormat::JsonSchema))
            .ok_or_else(|| format!("schema format {s:?} is not json_schema or protobuf"))
    }
}

/// The document of a Protobuf schema, as registered and stored (JSON): the message's full name
/// and the `FileDescriptorSet` that defines it and everything it uses, base64 (standard, padded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtobufSchema {
    /// `shop.v1.Order`.
    pub message: String,
    /// The serialized `google.protobuf.FileDescriptorSet`, base64 (`protoc --include_imports -o`).
    pub descriptor_set: String,
}

/// A schema to register (or check) for an event type: the body of `POST
/// /v1/topics/{t}/schemas`, and what the SDK and the CLI send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSchema {
    /// The CloudEvents `type` it describes.
    #[serde(rename = "type")]
    pub ty: String,
    /// Its format (JSON Schema when absent).
    #[serde(default)]
    pub format: SchemaFormat,
    /// The document: a JSON Schema, or a [`ProtobufSchema`] as JSON.
    pub schema: Value,
    /// The rule to check it with, and the type's rule from then on (absent: the type's, else
    /// the topic's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compatibility: Option<Compatibility>,
}

/// One registered version of an event type's schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaVersion {
    /// The topic.
    pub topic: String,
    /// The CloudEvents `type` it describes.
    #[serde(rename = "type")]
    pub ty: String,
    /// 1, 2, …
    pub version: u32,
    /// Its format.
    pub format: SchemaFormat,
    /// The schema document.
    pub schema: Value,
    /// When it was registered, ms since the Unix epoch.
    pub registered_ms: i64,
    /// The rule the type's next version must follow.
    pub compatibility: Compatibility,
    /// What valid events are stamped with as their `dataschema`.
    pub dataschema: String,
}

/// The `dataschema` of events validated against `version` of `ty`'s schema on `topic`: a
/// `herald:` URI whose path is that version's in the HTTP API (`herald:/v1/topics/orders/
/// schemas/order.placed/versions/2`).
pub fn dataschema(topic: &str, ty: &str, version: u32) -> String {
    format!("herald:/v1/topics/{topic}/schemas/{}/versions/{version}", percent_encode(ty))
}

/// Percent-encodes what is not unreserved in a URI path segment.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Most event types with a schema on one topic.
pub const TYPES_MAX: usize = 1_000;
/// Most versions of one type's schema.
pub const VERSIONS_MAX: usize = 1_000;
/// Largest schema document, in bytes of JSON.
pub const SCHEMA_BYTES_MAX: usize = 256 * 1024;

/// One reason a schema version may not follow another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Incompatibility {
    /// The rule broken: `BACKWARD` (new readers, old data) or `FORWARD` (old readers, new data).
    pub rule: &'static str,
    /// The earlier version compared with.
    pub version: u32,
    /// Where in the schema (a JSON pointer into the reader's schema: `/properties/total`).
    pub path: String,
    /// What changed, in words.
    pub message: String,
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} against version {}: at {}: {}", self.rule, self.version, self.path_or_root(), self.message)
    }
}

impl Incompatibility {
    fn path_or_root(&self) -> &str {
        if self.path.is_empty() { "the root" } else { &self.path }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn modes_and_formats_parse_and_print_as_the_registries_name_them() {
        for m in Compatibility::ALL {
            assert_eq!(m.as_str().parse::<Compatibility>(), Ok(m));
            assert_eq!(serde_json::to_value(m).unwrap(), json!(m.as_str()));
        }
        assert_eq!("full_transitive".parse::<Compatibility>(), Ok(Compatibility::FullTransitive));
        assert!("SIDEWAYS".parse::<Compatibility>().unwrap_err().contains("BACKWARD_TRANSITIVE"));
        for f in [SchemaFormat::JsonSchema, SchemaFormat::Protobuf] {
            assert_eq!(f.as_str().parse::<SchemaFormat>(), Ok(f));
            assert_eq!(serde_json::to_value(f).unwrap(), json!(f.as_str()));
        }
        assert!("avro".parse::<SchemaFormat>().unwrap_err().contains("protobuf"));
    }

    #[test]
    fn dataschema_names_the_version_in_the_http_api() {
        assert_eq!(
            dataschema("orders", "order placed/v1", 2),
            "herald:/v1/topics/orders/schemas/order%20placed%2Fv1/versions/2"
        );
    }
}
