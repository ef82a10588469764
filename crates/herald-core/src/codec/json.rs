//! CloudEvents 1.0 JSON format, structured mode (`application/cloudevents+json`) and batches
//! (`application/cloudevents-batch+json`).
//!
//! Extensions are top-level members: `partitionkey`, `traceparent`, `tracestate`,
//! `correlationid`, `causationid` and every header.
//!
//! # How `data` is written
//!
//! The rule keeps `from_json(to_json(e)) == e` byte for byte:
//!
//! - empty data: neither `data` nor `data_base64`;
//! - a JSON content type ([`is_json_content_type`]; an absent `datacontenttype` counts as JSON,
//!   as the spec implies) and data that is one JSON text with no whitespace around it: `data`,
//!   embedding those bytes verbatim;
//! - any other content type and data that is UTF-8: `data` as a JSON string;
//! - otherwise: `data_base64` (standard alphabet, padded).
//!
//! Reading, `data` holding a JSON string under a non-JSON content type becomes the string's UTF-8
//! bytes; any other `data` value becomes its exact JSON text (so `"data": null` becomes the four
//! bytes `null`). `data_base64` is decoded. Both members present is an error.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::value::RawValue;

use crate::event::{Event, SPECVERSION};
use crate::limits::Limits;
use crate::timestamp::{Timestamp, TimestampError};
use crate::validate::{EventError, excerpt, validate};

/// Media type of one event in structured mode.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

/// Media type of a batch: a JSON array of structured events.
pub const BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json";

/// `data` nested deeper than this is written as `data_base64`: the reader must stay below
/// serde_json's recursion limit of 128 with the event object and batch array around it.
const DATA_DEPTH_MAX: usize = 100;

/// Why bytes are not a valid structured CloudEvent (or batch of them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JsonError {
    /// Not well-formed JSON.
    #[error("not valid JSON at line {line} column {column}: {reason}")]
    Syntax {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// The parser's message.
        reason: String,
    },
    /// A single event must be a JSON object.
    #[error("a structured CloudEvent is a JSON object, but the input is {found}")]
    NotAnObject {
        /// What the input is instead, e.g. `an array`.
        found: &'static str,
    },
    /// A batch must be a JSON array.
    #[error("a CloudEvents batch is a JSON array of events, but the input is {found}")]
    NotAnArray {
        /// What the input is instead, e.g. `an object`.
        found: &'static str,
    },
    /// A member appears more than once.
    #[error("attribute {attribute:?} appears more than once; send it once")]
    DuplicateAttribute {
        /// The member name.
        attribute: String,
    },
    /// A required attribute is missing.
    #[error("required attribute {attribute:?} is missing")]
    MissingAttribute {
        /// `specversion`, `id`, `source` or `type`.
        attribute: &'static str,
    },
    /// An attribute has the wrong JSON type.
    #[error("attribute {attribute:?} is {found}; it must be {expected}")]
    WrongType {
        /// The member name.
        attribute: String,
        /// The JSON type found, e.g. `an object`.
        found: &'static str,
        /// The JSON type(s) accepted.
        expected: &'static str,
    },
    /// `specversion` is not `1.0`.
    #[error("specversion is {value:?}; Herald reads CloudEvents \"1.0\" only")]
    UnsupportedSpecVersion {
        /// The specversion found.
        value: String,
    },
    /// Both `data` and `data_base64` are present.
    #[error("both data and data_base64 are present; send only one of them")]
    DataConflict,
    /// `data_base64` is not standard, padded base64.
    #[error("data_base64 is not standard padded base64: {reason}")]
    InvalidBase64 {
        /// The decoder's message.
        reason: String,
    },
    /// `time` is not an RFC 3339 timestamp in range.
    #[error(transparent)]
    InvalidTime(#[from] TimestampError),
    /// The attributes are well formed but the event breaks an invariant.
    #[error(transparent)]
    Invalid(#[from] EventError),
    /// One event of a batch is invalid.
    #[error("event {index} of the batch: {error}")]
    InBatch {
        /// 0-based position in the batch.
        index: usize,
        /// What is wrong with it.
        error: Box<JsonError>,
    },
}

impl From<serde_json::Error> for JsonError {
    fn from(e: serde_json::Error) -> JsonError {
        JsonError::Syntax { line: e.line(), column: e.column(), reason: e.to_string() }
    }
}

/// Whether a `datacontenttype` declares JSON: `application/json`, `text/json`, any `+json`
/// subtype, or none at all (the JSON format's default). Parameters and case are ignored.
pub fn is_json_content_type(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else {
        return true;
    };
    let essence = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

/// The event in structured mode.
pub fn to_json(event: &Event) -> String {
    // Serializing string keys and values (and data already checked to be valid JSON) cannot
    // fail; the empty fallback only keeps this panic-free.
    serde_json::to_string(&Structured(event)).unwrap_or_default()
}

/// The event in structured mode, as a [`serde_json::Value`] (`data` is parsed into the value).
pub fn to_json_value(event: &Event) -> serde_json::Value {
    serde_json::to_value(Structured(event)).unwrap_or_default()
}

/// The events as a batch (a JSON array).
pub fn to_json_batch(events: &[Event]) -> String {
    serde_json::to_string(&Batch(events)).unwrap_or_default()
}

/// Reads one structured event under the default [`Limits`].
pub fn from_json(input: &[u8]) -> Result<Event, JsonError> {
    from_json_with(input, &Limits::default())
}

/// Reads one structured event under `limits`; the event is validated exactly as a built one.
pub fn from_json_with(input: &[u8], limits: &Limits) -> Result<Event, JsonError> {
    limits.validate().map_err(EventError::from)?;
    expect_start(input, b'{').map_err(|found| JsonError::NotAnObject { found })?;
    let members: Members<'_> = serde_json::from_slice(input)?;
    event_from_members(members, limits)
}

/// Reads a batch under the default [`Limits`].
pub fn from_json_batch(input: &[u8]) -> Result<Vec<Event>, JsonError> {
    from_json_batch_with(input, &Limits::default())
}

/// Reads a batch under `limits`; every event is validated exactly as a built one.
pub fn from_json_batch_with(input: &[u8], limits: &Limits) -> Result<Vec<Event>, JsonError> {
    limits.validate().map_err(EventError::from)?;
    expect_start(input, b'[').map_err(|found| JsonError::NotAnArray { found })?;
    let items: Vec<&RawValue> = serde_json::from_slice(input)?;
    items
        .into_iter()
        .enumerate()
        .map(|(index, raw)| {
            let in_batch = |error| JsonError::InBatch { index, error: Box::new(error) };
            expect_start(raw.get().as_bytes(), b'{').map_err(|found| in_batch(JsonError::NotAnObject { found }))?;
            let members: Members<'_> = serde_json::from_str(raw.get()).map_err(|e| in_batch(e.into()))?;
            event_from_members(members, limits).map_err(in_batch)
        })
        .collect()
}

/// Checks the first non-whitespace byte, so that the common mistake gets a plain message.
/// Malformed input passes here and is reported by the parser.
fn expect_start(input: &[u8], open: u8) -> Result<(), &'static str> {
    match input.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(&b) if b == open => Ok(()),
        Some(b'{') => Err("an object"),
        Some(b'[') => Err("an array"),
        Some(b'"') => Err("a string"),
        Some(b'-' | b'0'..=b'9') => Err("a number"),
        Some(b't' | b'f') => Err("a boolean"),
        Some(b'n') => Err("null"),
        _ => Ok(()),
    }
}

struct Structured<'a>(&'a Event);

impl Serialize for Structured<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("specversion", SPECVERSION)?;
        map.serialize_entry("id", &e.id)?;
        map.serialize_entry("source", &e.source)?;
        map.serialize_entry("type", &e.ty)?;
        if let Some(time) = e.time {
            map.serialize_entry("time", &time.to_rfc3339())?;
        }
        let optional = [
            ("subject", &e.subject),
            ("datacontenttype", &e.datacontenttype),
            ("dataschema", &e.dataschema),
            ("partitionkey", &e.key),
            ("traceparent", &e.traceparent),
            ("tracestate", &e.tracestate),
            ("correlationid", &e.correlationid),
            ("causationid", &e.causationid),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                map.serialize_entry(name, value)?;
            }
        }
        for (name, value) in &e.headers {
            map.serialize_entry(name, value)?;
        }
        match data_form(e) {
            DataForm::Absent => {}
            DataForm::Json(raw) => map.serialize_entry("data", raw)?,
            DataForm::Text(text) => map.serialize_entry("data", text)?,
            DataForm::Base64 => map.serialize_entry("data_base64", &BASE64.encode(&e.data))?,
        }
        map.end()
    }
}

struct Batch<'a>(&'a [Event]);

impl Serialize for Batch<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for event in self.0 {
            seq.serialize_element(&Structured(event))?;
        }
        seq.end()
    }
}

enum DataForm<'a> {
    Absent,
    Json(&'a RawValue),
    Text(&'a str),
    Base64,
}

fn data_form(e: &Event) -> DataForm<'_> {
    if e.data.is_empty() {
        return DataForm::Absent;
    }
    if is_json_content_type(e.datacontenttype.as_deref()) {
        match embeddable_json(&e.data) {
            Some(raw) => DataForm::Json(raw),
            None => DataForm::Base64,
        }
    } else {
        match std::str::from_utf8(&e.data) {
            Ok(text) => DataForm::Text(text),
            Err(_) => DataForm::Base64,
        }
    }
}

/// `data` as a raw JSON value if writing it verbatim reads back the same bytes: one JSON text,
/// no surrounding whitespace (the reader would drop it), and shallow enough to nest.
fn embeddable_json(data: &[u8]) -> Option<&RawValue> {
    let is_ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    if data.first().is_none_or(is_ws) || data.last().is_none_or(is_ws) {
        return None;
    }
    if nesting_depth(data) > DATA_DEPTH_MAX {
        return None;
    }
    serde_json::from_slice::<&RawValue>(data).ok()
}

/// Deepest `[`/`{` nesting outside strings; only meaningful for input that is valid JSON.
pub(crate) fn nesting_depth(json: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in json {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// The members of a JSON object in order, values kept as raw text.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;

        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a CloudEvents JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    let value: &'de RawValue = map.next_value()?;
                    members.push((name, value));
                }
                Ok(Members(members))
            }
        }

        deserializer.deserialize_map(MembersVisitor)
    }
}

/// The JSON type of a raw value, for messages.
fn json_type(raw: &RawValue) -> &'static str {
    match raw.get().trim_start().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// A string attribute; `null` reads as absent.
fn string_attr(name: &str, raw: &RawValue) -> Result<Option<String>, JsonError> {
    match json_type(raw) {
        "a string" => Ok(Some(serde_json::from_str(raw.get())?)),
        "null" => Ok(None),
        found => Err(JsonError::WrongType { attribute: excerpt(name), found, expected: "a string" }),
    }
}

/// An extension attribute: a string, or a number or boolean in its JSON text (the spec lets
/// extensions carry those); `null` reads as absent.
fn extension_attr(name: &str, raw: &RawValue) -> Result<Option<String>, JsonError> {
    match json_type(raw) {
        "a number" | "a boolean" => Ok(Some(raw.get().trim().to_owned())),
        "an object" | "an array" => Err(JsonError::WrongType {
            attribute: excerpt(name),
            found: json_type(raw),
            expected: "a string, number or boolean",
        }),
        _ => string_attr(name, raw),
    }
}

fn required(name: &'static str, value: Option<String>) -> Result<String, JsonError> {
    value.ok_or(JsonError::MissingAttribute { attribute: name })
}

fn event_from_members(members: Members<'_>, limits: &Limits) -> Result<Event, JsonError> {
    let mut seen = BTreeSet::new();
    for (name, _) in &members.0 {
        if !seen.insert(name.as_str()) {
            return Err(JsonError::DuplicateAttribute { attribute: excerpt(name) });
        }
    }

    let mut specversion = None;
    let (mut id, mut source, mut ty, mut time) = (None, None, None, None);
    let (mut subject, mut datacontenttype, mut dataschema) = (None, None, None);
    let (mut key, mut traceparent, mut tracestate) = (None, None, None);
    let (mut correlationid, mut causationid) = (None, None);
    let (mut data, mut data_base64) = (None, None);
    let mut headers = BTreeMap::new();

    for (name, raw) in members.0 {
        match name.as_str() {
            "specversion" => specversion = string_attr(&name, raw)?,
            "id" => id = string_attr(&name, raw)?,
            "source" => source = string_attr(&name, raw)?,
            "type" => ty = string_attr(&name, raw)?,
            "time" => time = string_attr(&name, raw)?,
            "subject" => subject = string_attr(&name, raw)?,
            "datacontenttype" => datacontenttype = string_attr(&name, raw)?,
            "dataschema" => dataschema = string_attr(&name, raw)?,
            "partitionkey" => key = extension_attr(&name, raw)?,
            "traceparent" => traceparent = extension_attr(&name, raw)?,
            "tracestate" => tracestate = extension_attr(&name, raw)?,
            "correlationid" => correlationid = extension_attr(&name, raw)?,
            "causationid" => causationid = extension_attr(&name, raw)?,
            "data" => data = Some(raw),
            "data_base64" => data_base64 = Some(raw),
            _ => {
                if let Some(value) = extension_attr(&name, raw)? {
                    headers.insert(name, value);
                }
            }
        }
    }

    let specversion = required("specversion", specversion)?;
    if specversion != SPECVERSION {
        return Err(JsonError::UnsupportedSpecVersion { value: excerpt(&specversion) });
    }
    let id = required("id", id)?;
    let source = required("source", source)?;
    let ty = required("type", ty)?;
    let time = time.map(|t| Timestamp::parse_rfc3339(&t)).transpose()?;

    let data = match (data, data_base64) {
        (Some(_), Some(_)) => return Err(JsonError::DataConflict),
        (None, None) => Bytes::new(),
        (None, Some(raw)) => match string_attr("data_base64", raw)? {
            Some(text) => {
                BASE64.decode(text).map(Bytes::from).map_err(|e| JsonError::InvalidBase64 { reason: e.to_string() })?
            }
            None => Bytes::new(),
        },
        (Some(raw), None) => {
            let text = raw.get();
            if json_type(raw) == "a string" && !is_json_content_type(datacontenttype.as_deref()) {
                let s: String = serde_json::from_str(text)?;
                Bytes::from(s)
            } else {
                Bytes::copy_from_slice(text.as_bytes())
            }
        }
    };

    let event = Event {
        id,
        source,
        ty,
        time,
        subject,
        datacontenttype,
        dataschema,
        data,
        key,
        traceparent,
        tracestate,
        correlationid,
        causationid,
        headers,
    };
    validate(&event, limits)?;
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        let table = [
            (None, true),
            (Some("application/json"), true),
            (Some("Application/JSON; charset=utf-8"), true),
            (Some("text/json"), true),
            (Some("application/cloudevents+json"), true),
            (Some("text/plain"), false),
            (Some("application/jsonx"), false),
        ];
        for (ct, json) in table {
            assert_eq!(is_json_content_type(ct), json, "{ct:?}");
        }
    }

    #[test]
    fn embeddable_only_when_exact() {
        assert!(embeddable_json(b"{\"a\": [1, 2]}").is_some());
        assert!(embeddable_json(b"\"text\"").is_some());
        assert!(embeddable_json(b" 1").is_none());
        assert!(embeddable_json(b"1\n").is_none());
        assert!(embeddable_json(b"{").is_none());
        assert!(embeddable_json(b"1 2").is_none());
        assert!(embeddable_json(b"\xff").is_none());
        let deep = format!("{}{}", "[".repeat(101), "]".repeat(101));
        assert!(embeddable_json(deep.as_bytes()).is_none());
        let ok = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(embeddable_json(ok.as_bytes()).is_some());
    }

    #[test]
    fn nesting_ignores_brackets_in_strings() {
        assert_eq!(nesting_depth(br#"["[[[\"{"]"#), 1);
        assert_eq!(nesting_depth(br#"{"a":{"b":[]}}"#), 3);
    }
}
