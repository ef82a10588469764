//! What the bench's events carry, and where their send time is. `raw` (the default): bytes
//! whose first 8 are the send time. With `--schema`, a typical 5-field record — an order: its
//! send time (`stamp`), `id`, `amount`, `currency` and a `note` that pads it to
//! `--payload-bytes` — as JSON or as a Protobuf message, and the schema registered for it.

use anyhow::{Context, Result, bail};
use herald::schema::{NewSchema, SchemaFormat};
use prost::Message as _;
use serde_json::json;

/// The events' data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum DataFormat {
    /// Bytes; the first 8 carry the send time.
    Raw,
    /// `{"stamp":"…","id":…,"amount":…,"currency":…,"note":…}`, with a JSON Schema.
    Json,
    /// The same record as a Protobuf message (`herald.bench.Order`).
    Protobuf,
}

/// `{"stamp":"` then the stamp as 20 digits (a string: JSON numbers have no leading zeros).
const JSON_STAMP_AT: usize = 10;
const JSON_STAMP_DIGITS: usize = 20;

/// The Protobuf message, field by field as [`DataFormat::payload`] writes it.
const PROTO: &str = r#"syntax = "proto3";
package herald.bench;
message Order {
  fixed64 stamp = 1;
  string id = 2;
  int64 amount = 3;
  string currency = 4;
  string note = 5;
}
"#;

impl DataFormat {
    /// The smallest payload of this format.
    pub fn min_bytes(self) -> usize {
        self.record(0, 0).len()
    }

    /// The record with a `note` of `note` bytes.
    fn record(self, stamp_ns: u64, note: usize) -> Vec<u8> {
        let pad = "x".repeat(note);
        match self {
            DataFormat::Raw => {
                let mut d = vec![0x5a; 8 + note];
                d[..8].copy_from_slice(&stamp_ns.to_le_bytes());
                d
            }
            DataFormat::Json => format!(
                r#"{{"stamp":"{stamp_ns:0width$}","id":"o-1234567","amount":12345,"currency":"EUR","note":"{pad}"}}"#,
                width = JSON_STAMP_DIGITS
            )
            .into_bytes(),
            DataFormat::Protobuf => {
                let mut d = Vec::with_capacity(40 + note);
                d.push(0x09);
                d.extend_from_slice(&stamp_ns.to_le_bytes());
                d.extend_from_slice(&[0x12, 9]);
                d.extend_from_slice(b"o-1234567");
                d.push(0x18);
                prost::encoding::encode_varint(12345, &mut d);
                d.extend_from_slice(&[0x22, 3]);
                d.extend_from_slice(b"EUR");
                d.push(0x2a);
                prost::encoding::encode_varint(note as u64, &mut d);
                d.extend_from_slice(pad.as_bytes());
                d
            }
        }
    }

    /// A payload of `size` bytes (at least [`DataFormat::min_bytes`]) carrying `stamp_ns`.
    pub fn payload(self, size: usize, stamp_ns: u64) -> Vec<u8> {
        let mut note = size.saturating_sub(self.min_bytes());
        let mut d = self.record(stamp_ns, note);
        // A longer note may need a longer length prefix (Protobuf): trim to the size asked for.
        while d.len() > size && note > 0 {
            note -= 1;
            d = self.record(stamp_ns, note);
        }
        d
    }

    /// The send time a payload of this format carries.
    pub fn stamp(self, data: &[u8]) -> Option<u64> {
        match self {
            DataFormat::Raw => Some(u64::from_le_bytes(data.get(..8)?.try_into().ok()?)),
            DataFormat::Json => {
                std::str::from_utf8(data.get(JSON_STAMP_AT..JSON_STAMP_AT + JSON_STAMP_DIGITS)?).ok()?.parse().ok()
            }
            DataFormat::Protobuf => {
                (data.first() == Some(&0x09)).then_some(())?;
                Some(u64::from_le_bytes(data.get(1..9)?.try_into().ok()?))
            }
        }
    }

    /// The schema of this format's record for events of type `ty` (none for raw bytes).
    pub fn schema(self, ty: &str) -> Result<Option<NewSchema>> {
        let (format, schema) = match self {
            DataFormat::Raw => return Ok(None),
            DataFormat::Json => (
                SchemaFormat::JsonSchema,
                json!({
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "type": "object",
                    "properties": {
                        "stamp": { "type": "string", "minLength": 20, "maxLength": 20 },
                        "id": { "type": "string", "maxLength": 64 },
                        "amount": { "type": "integer" },
                        "currency": { "enum": ["EUR", "USD", "GBP"] },
                        "note": { "type": "string" }
                    },
                    "required": ["stamp", "id", "amount", "currency"],
                    "additionalProperties": false
                }),
            ),
            DataFormat::Protobuf => {
                let dir = tempfile::tempdir().context("a directory for the bench's .proto")?;
                std::fs::write(dir.path().join("bench.proto"), PROTO).context("writing the bench's .proto")?;
                let set = match protox::compile(["bench.proto"], [dir.path()]) {
                    Ok(s) => s.encode_to_vec(),
                    Err(e) => bail!("compiling the bench's .proto: {e}"),
                };
                (SchemaFormat::Protobuf, herald_schema::protobuf::document("herald.bench.Order", &set))
            }
        };
        Ok(Some(NewSchema { ty: ty.to_owned(), format, schema, compatibility: None }))
    }

    /// Its content type.
    pub fn content_type(self) -> &'static str {
        match self {
            DataFormat::Raw => "application/octet-stream",
            DataFormat::Json => "application/json",
            DataFormat::Protobuf => "application/protobuf",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DataFormat::Raw => "raw",
            DataFormat::Json => "json",
            DataFormat::Protobuf => "protobuf",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_have_the_size_asked_for_carry_the_stamp_and_match_their_schema() {
        for f in [DataFormat::Raw, DataFormat::Json, DataFormat::Protobuf] {
            for size in [f.min_bytes(), 100, 127, 128, 129, 1000, 100_000] {
                let stamp = 123_456_789_012_345;
                let d = f.payload(size, stamp);
                assert!(
                    d.len() == size || (f == DataFormat::Protobuf && d.len() + 1 == size),
                    "{f:?} {size}: {}",
                    d.len()
                );
                assert_eq!(f.stamp(&d), Some(stamp), "{f:?} {size}");
                if let Some(s) = f.schema("bench.event").unwrap() {
                    let v = herald_schema::compile(s.format, &s.schema).unwrap();
                    v.validate(&d).unwrap_or_else(|e| panic!("{f:?} {size}: {e:?}"));
                }
            }
        }
        // A wrong record is refused by the schema: the check is real.
        let s = DataFormat::Json.schema("t").unwrap().unwrap();
        let v = herald_schema::compile(s.format, &s.schema).unwrap();
        assert!(v.validate(br#"{"stamp": 1, "id": "x", "amount": 1, "currency": "XXX"}"#).is_err());
        // Valid records take the common path (no `serde_json::Value` built), as typical ones do.
        assert!(matches!(&v, herald_schema::Validator::Json(c) if c.has_fast_path()));
    }
}
