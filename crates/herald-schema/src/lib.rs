//! The schema formats Herald validates events with, in one place for the broker (validation on
//! publish) and the SDK (validation in the producer, for backends that cannot validate):
//! - [`compile`] a registered document into a [`Validator`], once, and [`Validator::validate`]
//!   an event's data with it: the first error's path and what is wrong;
//! - [`check`] whether a new version may follow the earlier ones under a compatibility mode,
//!   naming each change that breaks the rule (rule, version, path, what);
//! - [`asyncapi::document`], the AsyncAPI 3.0 document of topics, their schemas and readers.
//!
//! Formats: JSON Schema draft 2020-12 ([`json`], with the `jsonschema` crate) and Protobuf
//! ([`protobuf`], a `FileDescriptorSet` and a message name, with `prost-reflect`). The
//! vocabulary (modes, formats, versions, limits) is `herald_model::schema`'s.
//!
//! No I/O, no clock.

pub mod asyncapi;
pub mod json;
pub mod protobuf;
pub mod registry;

pub use registry::{Registry, SchemaError};

use herald_model::schema::{Compatibility, Incompatibility, SchemaFormat};
use serde_json::Value;

/// A document as text people read: a JSON Schema pretty-printed, a Protobuf message as
/// `.proto` text (or why it cannot be read).
pub fn document_text(format: SchemaFormat, document: &Value) -> String {
    match format {
        SchemaFormat::JsonSchema => serde_json::to_string_pretty(document).unwrap_or_default(),
        SchemaFormat::Protobuf => {
            protobuf::Message::from_document(document).map_or_else(|e| format!("// {e}"), |m| m.proto_text())
        }
    }
}

/// What [`reader_accepts`] finds: where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where in the reader's schema: a JSON pointer (`/properties/total`) for JSON Schema, a
    /// field path (`Order.items.price`) for Protobuf.
    pub path: String,
    /// What the writer may produce that the reader refuses.
    pub message: String,
}

/// Why an event's data does not match its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Where: a JSON pointer into the data (`/total`), a field path for Protobuf
    /// (`items.price`); empty for the whole document.
    pub path: String,
    /// What is wrong, in words.
    pub message: String,
}

/// A compiled schema, what events are checked with.
pub enum Validator {
    /// A JSON Schema.
    Json(json::Compiled),
    /// A Protobuf message.
    Protobuf(protobuf::Message),
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Validator::Json(_) => f.write_str("Validator::Json"),
            Validator::Protobuf(m) => write!(f, "Validator::Protobuf({})", m.name()),
        }
    }
}

/// Compiles `document` of `format`: why it is no schema of that format when not.
pub fn compile(format: SchemaFormat, document: &Value) -> Result<Validator, String> {
    match format {
        SchemaFormat::JsonSchema => json::compile(document).map(Validator::Json),
        SchemaFormat::Protobuf => protobuf::Message::from_document(document).map(Validator::Protobuf),
    }
}

impl Validator {
    /// Checks an event's `data` bytes.
    pub fn validate(&self, data: &[u8]) -> Result<(), Invalid> {
        match self {
            Validator::Json(v) => json::validate(v, data),
            Validator::Protobuf(m) => m.validate(data),
        }
    }

    /// Its format.
    pub fn format(&self) -> SchemaFormat {
        match self {
            Validator::Json(_) => SchemaFormat::JsonSchema,
            Validator::Protobuf(_) => SchemaFormat::Protobuf,
        }
    }
}

/// What in `writer`'s data `reader` cannot read (empty: nothing, as far as the format's rules
/// can tell), both of `format`; `Err` when one of them is no schema of that format.
pub fn reader_accepts(format: SchemaFormat, reader: &Value, writer: &Value) -> Result<Vec<Problem>, String> {
    match format {
        SchemaFormat::JsonSchema => Ok(json::reader_accepts(reader, writer)),
        SchemaFormat::Protobuf => {
            let (r, w) = (protobuf::Message::from_document(reader)?, protobuf::Message::from_document(writer)?);
            Ok(protobuf::reader_accepts(&r, &w))
        }
    }
}

/// Whether `new` may follow `earlier` (oldest first, numbered from 1; each with its format)
/// under `mode`: every incompatibility found when not. A change of format is incompatible
/// under every mode but `NONE`.
pub fn check(
    format: SchemaFormat,
    mode: Compatibility,
    new: &Value,
    earlier: &[(SchemaFormat, Value)],
) -> Result<(), Vec<Incompatibility>> {
    let (backward, forward, transitive) = mode.checks();
    let Some(latest) = earlier.len().checked_sub(1) else { return Ok(()) };
    if !backward && !forward {
        return Ok(());
    }
    let against: Vec<usize> = if transitive { (0..earlier.len()).collect() } else { vec![latest] };
    let mut found = Vec::new();
    for i in against {
        let version = i as u32 + 1;
        let (old_format, old) = &earlier[i];
        if *old_format != format {
            found.push(Incompatibility {
                rule: if backward { "BACKWARD" } else { "FORWARD" },
                version,
                path: String::new(),
                message: format!("the format changed from {old_format} to {format}: no reader of one reads the other"),
            });
            continue;
        }
        let mut add = |rule: &'static str, reader: &Value, writer: &Value| {
            let problems = reader_accepts(format, reader, writer)
                .unwrap_or_else(|e| vec![Problem { path: String::new(), message: e }]);
            found.extend(problems.into_iter().map(|p| Incompatibility {
                rule,
                version,
                path: p.path,
                message: p.message,
            }));
        };
        if backward {
            add("BACKWARD", new, old);
        }
        if forward {
            add("FORWARD", old, new);
        }
    }
    if found.is_empty() { Ok(()) } else { Err(found) }
}

/// The compatibility table tests of both formats: each case is what changed, the new version,
/// whether it is backward and forward compatible with `old`, and where a problem is reported
/// (empty: anywhere). Checked by [`reader_accepts`] in both directions and by [`check`] in every
/// mode.
#[cfg(test)]
fn assert_compatibility_table(format: SchemaFormat, old: &Value, cases: Vec<(&str, Value, bool, bool, &str)>) {
    for (what, new, backward, forward, path) in cases {
        let b = reader_accepts(format, &new, old).unwrap();
        let f = reader_accepts(format, old, &new).unwrap();
        assert_eq!(b.is_empty(), backward, "{what}: backward: {b:?}");
        assert_eq!(f.is_empty(), forward, "{what}: forward: {f:?}");
        if !path.is_empty() {
            assert!(b.iter().chain(&f).any(|p| p.path == path), "{what}: no problem at {path}: {b:?} {f:?}");
        }
        for mode in Compatibility::ALL {
            let (bw, fw, _) = mode.checks();
            let ok = (!bw || backward) && (!fw || forward);
            let earlier = [(format, old.clone())];
            assert_eq!(check(format, mode, &new, &earlier).is_ok(), ok, "{what} under {mode}");
        }
    }
}
