//! Herald's compact binary record for one event, as stored in the log.
//!
//! Layout, version 1 (varint = unsigned LEB128, at most 10 bytes, shortest form; str = varint
//! byte length then UTF-8):
//!
//! | field | encoding | present |
//! | --- | --- | --- |
//! | version | 1 byte, `1` | always |
//! | flags | varint bitmap, see below | always |
//! | id | 16 bytes if flag `ID_UUID`, else str | always |
//! | source, type | str, str | always |
//! | time | 8 bytes, i64 little-endian nanoseconds since the Unix epoch | flag 0 |
//! | subject, datacontenttype, dataschema, partitionkey | str each | flags 1, 2, 3, 4 |
//! | traceparent | 25 bytes: trace id (16), parent id (8), flags (1); version `00` implied | flag 5 |
//! | tracestate, correlationid, causationid | str each | flags 6, 7, 8 |
//! | headers | varint count, then count × (str name, str value), names strictly ascending | always |
//! | data | varint byte length, then the bytes | always |
//!
//! Flag 9 (`ID_UUID`) says the id is a UUID in canonical lowercase hyphenated form, stored as its
//! 16 bytes. Unknown flag bits, trailing bytes and non-shortest forms are rejected, so every
//! event has exactly one encoding: `encode(decode(b)?) == b`.

use std::collections::BTreeMap;

use bytes::Bytes;
use uuid::Uuid;

use crate::event::Event;
use crate::limits::Limits;
use crate::timestamp::Timestamp;
use crate::validate::{EventError, parse_traceparent, validate};

/// The format version this build writes and reads (the record's first byte).
pub const VERSION: u8 = 1;

const FLAG_TIME: u64 = 1 << 0;
const FLAG_SUBJECT: u64 = 1 << 1;
const FLAG_DATACONTENTTYPE: u64 = 1 << 2;
const FLAG_DATASCHEMA: u64 = 1 << 3;
const FLAG_KEY: u64 = 1 << 4;
const FLAG_TRACEPARENT: u64 = 1 << 5;
const FLAG_TRACESTATE: u64 = 1 << 6;
const FLAG_CORRELATIONID: u64 = 1 << 7;
const FLAG_CAUSATIONID: u64 = 1 << 8;
const FLAG_ID_UUID: u64 = 1 << 9;
const FLAGS_KNOWN: u64 = (1 << 10) - 1;

const UUID_BYTES: usize = 16;
const UUID_TEXT_BYTES: usize = 36;
const TRACEPARENT_BYTES: usize = 25;
const VARINT_BYTES_MAX: usize = 10;

/// Why bytes are not a valid binary event record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input is empty.
    #[error("input is empty; a binary event starts with its format version byte")]
    Empty,
    /// The input is longer than [`Limits::event_bytes_max`].
    #[error("input is {input_bytes} bytes; the limit is {limit} (event_bytes_max)")]
    TooLarge {
        /// Length of the input.
        input_bytes: usize,
        /// The limit in force.
        limit: usize,
    },
    /// The first byte is a format version this build does not know.
    #[error("format version {version} at byte 0 is not supported; this build reads version {VERSION}")]
    UnsupportedVersion {
        /// The version byte found.
        version: u8,
    },
    /// A field claims more bytes than remain (a truncated record, or a corrupt length).
    #[error(
        "{field} at byte {position} needs {needed} bytes but only {remaining} remain; the record \
         is truncated or corrupt"
    )]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Byte offset where it starts.
        position: usize,
        /// Bytes it needs.
        needed: u64,
        /// Bytes left in the input.
        remaining: usize,
    },
    /// A varint is longer than its shortest form or does not fit 64 bits.
    #[error("{field} at byte {position} is not a shortest-form LEB128 varint of at most 64 bits")]
    InvalidVarint {
        /// The field being read.
        field: &'static str,
        /// Byte offset of the varint.
        position: usize,
    },
    /// A text field is not UTF-8.
    #[error("{field} at byte {position} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field being read.
        field: &'static str,
        /// Byte offset of the first invalid byte.
        position: usize,
    },
    /// The presence bitmap has bits this build does not know.
    #[error(
        "presence flags {flags:#x} at byte {position} set unknown bits; the record was written \
         by a newer format"
    )]
    UnknownFlags {
        /// The whole bitmap.
        flags: u64,
        /// Byte offset of the bitmap.
        position: usize,
    },
    /// The header count is over [`Limits::headers_count_max`].
    #[error("header count {count} at byte {position} is over the limit {limit} (headers_count_max)")]
    TooManyHeaders {
        /// The count read.
        count: u64,
        /// The limit in force.
        limit: usize,
        /// Byte offset of the count.
        position: usize,
    },
    /// Header names are not strictly ascending (out of order, or duplicated).
    #[error(
        "header {name:?} at byte {position} is out of order or repeated; names must be strictly \
         ascending"
    )]
    HeaderOrder {
        /// The header name.
        name: String,
        /// Byte offset of the name.
        position: usize,
    },
    /// A field is valid but not in the one form the encoder writes.
    #[error("{field} at byte {position} is not in canonical form: {reason}")]
    NonCanonical {
        /// The field.
        field: &'static str,
        /// Byte offset of the field.
        position: usize,
        /// What the canonical form would be.
        reason: &'static str,
    },
    /// Bytes follow the event.
    #[error("{count} bytes follow the event at byte {position}; a record holds exactly one event")]
    TrailingBytes {
        /// Byte offset where the event ended.
        position: usize,
        /// How many bytes follow.
        count: usize,
    },
    /// The record is well formed but the event breaks an invariant.
    #[error(transparent)]
    Invalid(#[from] EventError),
}

/// The encoding of `event`.
pub fn encode(event: &Event) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(event));
    write(event, &mut out);
    out
}

/// Appends the encoding of `event` to `out`.
pub fn encode_into(event: &Event, out: &mut Vec<u8>) {
    out.reserve(encoded_len(event));
    write(event, out);
}

fn write(event: &Event, out: &mut Vec<u8>) {
    let packed_id = packed_uuid(&event.id);
    out.push(VERSION);
    put_varint(out, flags(event, packed_id.is_some()));
    match packed_id {
        Some(uuid) => out.extend_from_slice(uuid.as_bytes()),
        None => put_str(out, &event.id),
    }
    put_str(out, &event.source);
    put_str(out, &event.ty);
    if let Some(time) = event.time {
        out.extend_from_slice(&time.as_unix_nanos().to_le_bytes());
    }
    for s in [&event.subject, &event.datacontenttype, &event.dataschema, &event.key].into_iter().flatten() {
        put_str(out, s);
    }
    if let Some(tp) = &event.traceparent {
        // Every Event's traceparent was validated, so parsing succeeds; the zero fallback only
        // keeps encoding panic-free and would fail validation on decode.
        let (trace_id, parent_id, trace_flags) = parse_traceparent(tp).unwrap_or_default();
        out.extend_from_slice(&trace_id);
        out.extend_from_slice(&parent_id);
        out.push(trace_flags);
    }
    for s in [&event.tracestate, &event.correlationid, &event.causationid].into_iter().flatten() {
        put_str(out, s);
    }
    put_varint(out, event.headers.len() as u64);
    for (name, value) in &event.headers {
        put_str(out, name);
        put_str(out, value);
    }
    put_bytes(out, &event.data);
}

/// Length of [`encode`]'s output, computed without encoding.
pub fn encoded_len(event: &Event) -> usize {
    let packed_id = packed_uuid(&event.id).is_some();
    let mut len = 1 + varint_len(flags(event, packed_id));
    len += if packed_id { UUID_BYTES } else { str_len(&event.id) };
    len += str_len(&event.source) + str_len(&event.ty);
    if event.time.is_some() {
        len += 8;
    }
    if event.traceparent.is_some() {
        len += TRACEPARENT_BYTES;
    }
    len += [
        &event.subject,
        &event.datacontenttype,
        &event.dataschema,
        &event.key,
        &event.tracestate,
        &event.correlationid,
        &event.causationid,
    ]
    .into_iter()
    .flatten()
    .map(|s| str_len(s))
    .sum::<usize>();
    len += varint_len(event.headers.len() as u64);
    len += event.headers.iter().map(|(name, value)| str_len(name) + str_len(value)).sum::<usize>();
    len + varint_len(event.data.len() as u64) + event.data.len()
}

/// Decodes one record under the default [`Limits`].
pub fn decode(input: &[u8]) -> Result<Event, DecodeError> {
    decode_with(input, &Limits::default())
}

/// Decodes one record under `limits`; the event is validated exactly as a built one.
pub fn decode_with(input: &[u8], limits: &Limits) -> Result<Event, DecodeError> {
    limits.validate().map_err(EventError::from)?;
    // The encoding is canonical, so a valid event's record is exactly its encoded_len: a longer
    // input breaks the limit whatever it holds.
    if input.len() > limits.event_bytes_max {
        return Err(DecodeError::TooLarge { input_bytes: input.len(), limit: limits.event_bytes_max });
    }
    let mut r = Reader { input, pos: 0 };
    let version = match input.first() {
        Some(&v) => v,
        None => return Err(DecodeError::Empty),
    };
    if version != VERSION {
        return Err(DecodeError::UnsupportedVersion { version });
    }
    r.pos = 1;

    let flags_at = r.pos;
    let flags = r.varint("flags")?;
    if flags & !FLAGS_KNOWN != 0 {
        return Err(DecodeError::UnknownFlags { flags, position: flags_at });
    }
    let has = |flag: u64| flags & flag != 0;

    let id_at = r.pos;
    let id = if has(FLAG_ID_UUID) {
        let raw = r.take(UUID_BYTES, "id")?;
        let mut bytes = [0u8; UUID_BYTES];
        bytes.copy_from_slice(raw);
        Uuid::from_bytes(bytes).hyphenated().to_string()
    } else {
        let id = r.str("id")?;
        if packed_uuid(id).is_some() {
            return Err(DecodeError::NonCanonical {
                field: "id",
                position: id_at,
                reason: "a lowercase hyphenated UUID is stored as 16 bytes (flag ID_UUID)",
            });
        }
        id.to_owned()
    };
    let source = r.str("source")?.to_owned();
    let ty = r.str("type")?.to_owned();
    let time = if has(FLAG_TIME) {
        let raw = r.take(8, "time")?;
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(raw);
        Some(Timestamp::from_unix_nanos(i64::from_le_bytes(bytes)))
    } else {
        None
    };
    let subject = r.opt_str(has(FLAG_SUBJECT), "subject")?;
    let datacontenttype = r.opt_str(has(FLAG_DATACONTENTTYPE), "datacontenttype")?;
    let dataschema = r.opt_str(has(FLAG_DATASCHEMA), "dataschema")?;
    let key = r.opt_str(has(FLAG_KEY), "partitionkey")?;
    let traceparent = if has(FLAG_TRACEPARENT) {
        let raw = r.take(TRACEPARENT_BYTES, "traceparent")?;
        Some(format_traceparent(raw))
    } else {
        None
    };
    let tracestate = r.opt_str(has(FLAG_TRACESTATE), "tracestate")?;
    let correlationid = r.opt_str(has(FLAG_CORRELATIONID), "correlationid")?;
    let causationid = r.opt_str(has(FLAG_CAUSATIONID), "causationid")?;

    let count_at = r.pos;
    let count = r.varint("header count")?;
    if count > limits.headers_count_max as u64 {
        return Err(DecodeError::TooManyHeaders { count, limit: limits.headers_count_max, position: count_at });
    }
    let mut headers = BTreeMap::new();
    let mut previous: Option<&str> = None;
    for _ in 0..count {
        let name_at = r.pos;
        let name = r.str("header name")?;
        if previous.is_some_and(|p| p >= name) {
            return Err(DecodeError::HeaderOrder { name: crate::validate::excerpt(name), position: name_at });
        }
        previous = Some(name);
        let value = r.str("header value")?;
        headers.insert(name.to_owned(), value.to_owned());
    }
    let data = Bytes::copy_from_slice(r.bytes("data")?);

    if r.pos != input.len() {
        return Err(DecodeError::TrailingBytes { position: r.pos, count: input.len() - r.pos });
    }

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

fn flags(event: &Event, packed_id: bool) -> u64 {
    let bit = |present: bool, flag: u64| if present { flag } else { 0 };
    bit(event.time.is_some(), FLAG_TIME)
        | bit(event.subject.is_some(), FLAG_SUBJECT)
        | bit(event.datacontenttype.is_some(), FLAG_DATACONTENTTYPE)
        | bit(event.dataschema.is_some(), FLAG_DATASCHEMA)
        | bit(event.key.is_some(), FLAG_KEY)
        | bit(event.traceparent.is_some(), FLAG_TRACEPARENT)
        | bit(event.tracestate.is_some(), FLAG_TRACESTATE)
        | bit(event.correlationid.is_some(), FLAG_CORRELATIONID)
        | bit(event.causationid.is_some(), FLAG_CAUSATIONID)
        | bit(packed_id, FLAG_ID_UUID)
}

/// The UUID in `id` if `id` is exactly its canonical text, so that unpacking restores `id`.
fn packed_uuid(id: &str) -> Option<Uuid> {
    if id.len() != UUID_TEXT_BYTES {
        return None;
    }
    let uuid = Uuid::try_parse(id).ok()?;
    let mut buf = [0u8; UUID_TEXT_BYTES];
    (uuid.hyphenated().encode_lower(&mut buf) == id).then_some(uuid)
}

fn format_traceparent(raw: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(55);
    text.push_str("00");
    for (i, &b) in raw.iter().enumerate() {
        if i == 0 || i == 16 || i == 24 {
            text.push('-');
        }
        text.push(char::from(HEX[usize::from(b >> 4)]));
        text.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    text
}

fn varint_len(value: u64) -> usize {
    // 7 payload bits per byte; zero still takes one byte.
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

fn str_len(s: &str) -> usize {
    varint_len(s.len() as u64) + s.len()
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

/// A cursor that checks every length against what remains before touching the input, and only
/// ever hands out sub-slices: no allocation is sized by an unchecked number.
struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.input.len() - self.pos
    }

    fn take(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        self.take_u64(len as u64, field, self.pos)
    }

    /// `len` bytes of `field`, whose encoding started at `position` (before its length prefix).
    fn take_u64(&mut self, len: u64, field: &'static str, position: usize) -> Result<&'a [u8], DecodeError> {
        let remaining = self.remaining();
        match usize::try_from(len) {
            Ok(n) if n <= remaining => {
                let slice = &self.input[self.pos..self.pos + n];
                self.pos += n;
                Ok(slice)
            }
            _ => Err(DecodeError::Truncated { field, position, needed: len, remaining }),
        }
    }

    fn varint(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let start = self.pos;
        let mut value = 0u64;
        for i in 0..VARINT_BYTES_MAX {
            let Some(&byte) = self.input.get(self.pos) else {
                return Err(DecodeError::Truncated {
                    field,
                    position: start,
                    needed: (i + 1) as u64,
                    remaining: self.input.len() - start,
                });
            };
            self.pos += 1;
            let payload = u64::from(byte & 0x7f);
            // The tenth byte holds bit 63 only.
            if i == VARINT_BYTES_MAX - 1 && payload > 1 {
                break;
            }
            value |= payload << (7 * i);
            if byte & 0x80 == 0 {
                // A zero last byte after others means a longer-than-needed form.
                if i > 0 && byte == 0 {
                    break;
                }
                return Ok(value);
            }
        }
        Err(DecodeError::InvalidVarint { field, position: start })
    }

    fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let start = self.pos;
        let len = self.varint(field)?;
        self.take_u64(len, field, start)
    }

    fn str(&mut self, field: &'static str) -> Result<&'a str, DecodeError> {
        let bytes = self.bytes(field)?;
        let start = self.pos - bytes.len();
        std::str::from_utf8(bytes).map_err(|e| DecodeError::InvalidUtf8 { field, position: start + e.valid_up_to() })
    }

    fn opt_str(&mut self, present: bool, field: &'static str) -> Result<Option<String>, DecodeError> {
        if present { Ok(Some(self.str(field)?.to_owned())) } else { Ok(None) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_varint(bytes: &[u8]) -> Result<u64, DecodeError> {
        let mut r = Reader { input: bytes, pos: 0 };
        let v = r.varint("v")?;
        assert_eq!(r.pos, bytes.len(), "consumed all of {bytes:?}");
        Ok(v)
    }

    #[test]
    fn varint_roundtrip_and_len() {
        for v in [0, 1, 127, 128, 300, 16_383, 16_384, u64::from(u32::MAX), u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
            assert_eq!(read_varint(&out), Ok(v));
        }
    }

    #[test]
    fn varint_rejects_overlong_and_overflow() {
        let invalid = DecodeError::InvalidVarint { field: "v", position: 0 };
        let table: [&[u8]; 4] = [
            &[0x80, 0x00],
            &[0xff, 0x80, 0x00],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
            &[0x80; 11],
        ];
        for bytes in table {
            let mut r = Reader { input: bytes, pos: 0 };
            assert_eq!(r.varint("v"), Err(invalid.clone()), "{bytes:?}");
        }
    }

    #[test]
    fn traceparent_packs_both_ways() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (t, p, f) = parse_traceparent(tp).expect("valid");
        let mut raw = Vec::new();
        raw.extend_from_slice(&t);
        raw.extend_from_slice(&p);
        raw.push(f);
        assert_eq!(format_traceparent(&raw), tp);
    }

    #[test]
    fn uuid_packs_only_canonical_text() {
        assert!(packed_uuid("0190b6a3-7c4e-7a1b-8c2d-3e4f5a6b7c8d").is_some());
        assert!(packed_uuid("0190B6A3-7C4E-7A1B-8C2D-3E4F5A6B7C8D").is_none());
        assert!(packed_uuid("0190b6a37c4e7a1b8c2d3e4f5a6b7c8d").is_none());
        assert!(packed_uuid("{0190b6a3-7c4e-7a1b-8c2d-3e4f5a6b7c8}").is_none());
    }
}
