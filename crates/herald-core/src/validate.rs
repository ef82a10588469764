//! The invariants every [`Event`] holds, and [`EventError`] for each way to break one.
//!
//! Builders and decoders all end in [`validate`], so a decoded event is exactly as trustworthy as
//! a built one.

use crate::codec::binary;
use crate::event::{DEFAULT_SOURCE, Event};
use crate::limits::{Limits, LimitsError};

/// Attribute names that a header (extension attribute) may not take: the CloudEvents context
/// attributes, the JSON format's data members, and Herald's own extensions.
pub const RESERVED_ATTRIBUTES: [&str; 15] = [
    "id",
    "source",
    "specversion",
    "type",
    "datacontenttype",
    "dataschema",
    "subject",
    "time",
    "data",
    "data_base64",
    "partitionkey",
    "traceparent",
    "tracestate",
    "correlationid",
    "causationid",
];

/// Longest header name: CloudEvents recommends extension names of at most 20 characters.
const HEADER_NAME_CHARS_MAX: usize = 20;

/// Values quoted in error messages are cut to this many bytes, so that an error about a huge
/// input stays readable and cheap to log.
const EXCERPT_BYTES_MAX: usize = 128;

/// An event attribute broke one of the event invariants.
///
/// Values quoted in the variants are shortened to 128 bytes (then end in `…`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// A string attribute is longer than [`Limits::attribute_bytes_max`].
    #[error("{attribute} is {value_bytes} bytes, over the limit of {limit}; shorten it")]
    AttributeTooLarge {
        /// The attribute's CloudEvents name.
        attribute: &'static str,
        /// Its length in bytes.
        value_bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// JSON `data` nests arrays and objects deeper than [`Limits::data_depth_max`].
    #[error(
        "data nests arrays and objects {depth} levels deep, over the limit of {limit}; flatten it, \
         or send it with a non-JSON content type"
    )]
    DataTooDeep {
        /// The deepest nesting found (outside strings).
        depth: usize,
        /// The limit.
        limit: usize,
    },
    /// `id` is the empty string.
    #[error("id is empty; set a non-empty id, or leave it unset to get a UUIDv7")]
    EmptyId,
    /// `type` is the empty string.
    #[error("type is empty; set a type such as \"order.created\"")]
    EmptyType,
    /// `source` is the empty string.
    #[error(
        "source is empty; set a URI-reference such as \"/shop/orders\", or leave it unset to get \
         {DEFAULT_SOURCE:?}"
    )]
    EmptySource,
    /// `source` is not an RFC 3986 URI-reference.
    #[error("source {value:?} is not a URI-reference (RFC 3986): {reason}")]
    InvalidSource {
        /// The source given.
        value: String,
        /// What is wrong with it.
        reason: UriError,
    },
    /// `dataschema` is not an absolute RFC 3986 URI.
    #[error("dataschema {value:?} is not an absolute URI (RFC 3986): {reason}")]
    InvalidDataSchema {
        /// The dataschema given.
        value: String,
        /// What is wrong with it.
        reason: UriError,
    },
    /// `datacontenttype` is not a media type (`type/subtype` with optional parameters).
    #[error(
        "datacontenttype {value:?} is not a media type; write it like \"application/json\" or \
         \"text/plain; charset=utf-8\""
    )]
    InvalidContentType {
        /// The content type given.
        value: String,
    },
    /// An optional attribute is present but empty.
    #[error("{attribute} is empty; leave it unset instead")]
    EmptyAttribute {
        /// The attribute's CloudEvents name, e.g. `subject` or `partitionkey`.
        attribute: &'static str,
    },
    /// A string attribute holds a character CloudEvents does not allow in strings.
    #[error(
        "{attribute} has the character {character:?} at byte {position}; CloudEvents strings may \
         not hold control characters (U+0000-U+001F, U+007F-U+009F) or Unicode noncharacters"
    )]
    DisallowedCharacter {
        /// The attribute's CloudEvents name, or the header name.
        attribute: String,
        /// The offending character.
        character: char,
        /// Its byte offset in the value.
        position: usize,
    },
    /// A header name is not 1 to 20 characters of `a-z` and `0-9`.
    #[error(
        "header name {name:?} is not valid; extension attribute names are 1 to 20 characters of \
         a-z and 0-9"
    )]
    InvalidHeaderName {
        /// The name given.
        name: String,
    },
    /// A header name is a CloudEvents or Herald attribute name (see [`RESERVED_ATTRIBUTES`]).
    #[error(
        "header name {name:?} is reserved for the attribute of that name; use the builder's \
         setter for it, or pick another name"
    )]
    ReservedHeaderName {
        /// The name given.
        name: String,
    },
    /// `traceparent` is not a W3C Trace Context traceparent of version `00`.
    #[error(
        "traceparent {value:?} is not a W3C traceparent ({reason}); write it like \
         00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    )]
    InvalidTraceparent {
        /// The traceparent given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `tracestate` holds a character outside printable ASCII.
    #[error(
        "tracestate {value:?} has a character outside printable ASCII at byte {position}; W3C \
         tracestate is ASCII list-members like \"vendor=value\""
    )]
    InvalidTracestate {
        /// The tracestate given.
        value: String,
        /// Byte offset of the offending character.
        position: usize,
    },
    /// The partition key is longer than [`Limits::key_bytes_max`].
    #[error("key is {key_bytes} bytes; the limit is {limit} (key_bytes_max)")]
    KeyTooLarge {
        /// Length of the key.
        key_bytes: usize,
        /// The limit in force.
        limit: usize,
    },
    /// A header value is longer than [`Limits::header_value_bytes_max`].
    #[error("header {name:?} is {value_bytes} bytes; the limit is {limit} (header_value_bytes_max)")]
    HeaderValueTooLarge {
        /// The header's name.
        name: String,
        /// Length of its value.
        value_bytes: usize,
        /// The limit in force.
        limit: usize,
    },
    /// The event has more headers than [`Limits::headers_count_max`].
    #[error("event has {count} headers; the limit is {limit} (headers_count_max)")]
    TooManyHeaders {
        /// Number of headers.
        count: usize,
        /// The limit in force.
        limit: usize,
    },
    /// The event's binary encoding is longer than [`Limits::event_bytes_max`].
    #[error(
        "event is {event_bytes} bytes encoded; the limit is {limit} (event_bytes_max); store \
         large payloads elsewhere and send a reference"
    )]
    EventTooLarge {
        /// Length of the binary encoding.
        event_bytes: usize,
        /// The limit in force.
        limit: usize,
    },
    /// [`crate::EventBuilder::json`] could not serialize the value.
    #[error("data could not be serialized as JSON: {reason}")]
    JsonData {
        /// The serializer's message.
        reason: String,
    },
    /// The [`Limits`] passed in are themselves invalid.
    #[error(transparent)]
    InvalidLimits(#[from] LimitsError),
}

/// Why a text is not an RFC 3986 URI-reference (or, for `dataschema`, not an absolute URI).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    /// A character that may not appear in a URI at all.
    #[error("character {character:?} at byte {position} is not allowed; percent-encode it")]
    DisallowedCharacter {
        /// The character.
        character: char,
        /// Its byte offset.
        position: usize,
    },
    /// A `%` not followed by two hex digits.
    #[error("'%' at byte {position} is not followed by two hex digits")]
    BadPercentEncoding {
        /// Byte offset of the `%`.
        position: usize,
    },
    /// A character allowed in URIs but not where it stands (e.g. `[` outside a host, a second `#`).
    #[error("character {character:?} at byte {position} is not allowed there; percent-encode it")]
    MisplacedCharacter {
        /// The character.
        character: char,
        /// Its byte offset.
        position: usize,
    },
    /// The text before the first `:` is not a scheme.
    #[error(
        "{scheme:?} before the first ':' is not a scheme (a letter, then letters, digits, '+', \
         '-' or '.'); for a relative reference, write \"./\" before a first segment holding ':'"
    )]
    InvalidScheme {
        /// The text before the first `:`.
        scheme: String,
    },
    /// The port is not decimal digits.
    #[error("port {port:?} is not decimal digits")]
    InvalidPort {
        /// The text after the host's `:`.
        port: String,
    },
    /// An absolute URI was needed but there is no scheme.
    #[error("it has no scheme; an absolute URI starts with one, like \"https:\" or \"urn:\"")]
    MissingScheme,
}

/// Checks every invariant of `event` under `limits` (which must themselves be valid).
pub(crate) fn validate(event: &Event, limits: &Limits) -> Result<(), EventError> {
    limits.validate()?;

    // Sizes first: a huge attribute should be reported as huge, not for a character deep inside.
    let attributes = [
        ("id", Some(&event.id)),
        ("source", Some(&event.source)),
        ("type", Some(&event.ty)),
        ("subject", event.subject.as_ref()),
        ("datacontenttype", event.datacontenttype.as_ref()),
        ("dataschema", event.dataschema.as_ref()),
        ("tracestate", event.tracestate.as_ref()),
        ("correlationid", event.correlationid.as_ref()),
        ("causationid", event.causationid.as_ref()),
    ];
    for (attribute, value) in attributes {
        if let Some(value) = value.filter(|v| v.len() > limits.attribute_bytes_max) {
            let limit = limits.attribute_bytes_max;
            return Err(EventError::AttributeTooLarge { attribute, value_bytes: value.len(), limit });
        }
    }
    if event.id.is_empty() {
        return Err(EventError::EmptyId);
    }
    check_chars("id", &event.id)?;
    if event.ty.is_empty() {
        return Err(EventError::EmptyType);
    }
    check_chars("type", &event.ty)?;
    if event.source.is_empty() {
        return Err(EventError::EmptySource);
    }
    check_uri_reference(&event.source)
        .map_err(|reason| EventError::InvalidSource { value: excerpt(&event.source), reason })?;

    if let Some(subject) = &event.subject {
        check_present("subject", subject)?;
    }
    if let Some(ct) = &event.datacontenttype {
        check_present("datacontenttype", ct)?;
        if !is_media_type(ct) {
            return Err(EventError::InvalidContentType { value: excerpt(ct) });
        }
    }
    if let Some(schema) = &event.dataschema {
        check_dataschema(schema)?;
    }
    if let Some(key) = &event.key {
        // Size first: a huge key should be reported as huge, not for a character deep inside.
        if key.len() > limits.key_bytes_max {
            return Err(EventError::KeyTooLarge { key_bytes: key.len(), limit: limits.key_bytes_max });
        }
        check_present("partitionkey", key)?;
    }
    check_trace(event.traceparent.as_deref(), event.tracestate.as_deref())?;
    if let Some(id) = &event.correlationid {
        check_present("correlationid", id)?;
    }
    if let Some(id) = &event.causationid {
        check_present("causationid", id)?;
    }

    if event.headers.len() > limits.headers_count_max {
        return Err(EventError::TooManyHeaders { count: event.headers.len(), limit: limits.headers_count_max });
    }
    for (name, value) in &event.headers {
        check_header_name(name)?;
        if value.len() > limits.header_value_bytes_max {
            return Err(EventError::HeaderValueTooLarge {
                name: name.clone(),
                value_bytes: value.len(),
                limit: limits.header_value_bytes_max,
            });
        }
        check_chars(name, value)?;
    }

    // Depth can only exceed the limit in data longer than the limit (the scan is skipped for
    // stored events, read under the hard limits).
    if event.data.len() > limits.data_depth_max
        && crate::codec::json::is_json_content_type(event.datacontenttype.as_deref())
    {
        let depth = crate::codec::json::nesting_depth(&event.data);
        if depth > limits.data_depth_max {
            return Err(EventError::DataTooDeep { depth, limit: limits.data_depth_max });
        }
    }

    let event_bytes = binary::encoded_len(event);
    if event_bytes > limits.event_bytes_max {
        return Err(EventError::EventTooLarge { event_bytes, limit: limits.event_bytes_max });
    }
    Ok(())
}

/// Checks `traceparent` and `tracestate` (W3C Trace Context).
pub(crate) fn check_trace(traceparent: Option<&str>, tracestate: Option<&str>) -> Result<(), EventError> {
    if let Some(tp) = traceparent {
        parse_traceparent(tp).map_err(|reason| EventError::InvalidTraceparent { value: excerpt(tp), reason })?;
    }
    if let Some(ts) = tracestate {
        check_present("tracestate", ts)?;
        if let Some(position) = ts.bytes().position(|b| !(0x20..=0x7e).contains(&b)) {
            return Err(EventError::InvalidTracestate { value: excerpt(ts), position });
        }
    }
    Ok(())
}

/// Checks a header name: not reserved, then `[a-z0-9]{1,20}`.
pub(crate) fn check_header_name(name: &str) -> Result<(), EventError> {
    if RESERVED_ATTRIBUTES.contains(&name) {
        return Err(EventError::ReservedHeaderName { name: excerpt(name) });
    }
    let valid = !name.is_empty()
        && name.len() <= HEADER_NAME_CHARS_MAX
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if valid { Ok(()) } else { Err(EventError::InvalidHeaderName { name: excerpt(name) }) }
}

fn check_present(attribute: &'static str, value: &str) -> Result<(), EventError> {
    if value.is_empty() {
        return Err(EventError::EmptyAttribute { attribute });
    }
    check_chars(attribute, value)
}

fn check_chars(attribute: &str, value: &str) -> Result<(), EventError> {
    // Printable ASCII, by far the usual case, holds no disallowed character: one pass over the
    // bytes (which the compiler vectorises) instead of decoding every char.
    if value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Ok(());
    }
    match value.char_indices().find(|&(_, c)| is_disallowed_char(c)) {
        Some((position, character)) => {
            Err(EventError::DisallowedCharacter { attribute: excerpt(attribute), character, position })
        }
        None => Ok(()),
    }
}

/// CloudEvents 1.0 `String`: no control characters and no Unicode noncharacters.
fn is_disallowed_char(c: char) -> bool {
    let u = u32::from(c);
    matches!(u, 0x00..=0x1f | 0x7f..=0x9f) || (0xfdd0..=0xfdef).contains(&u) || u & 0xfffe == 0xfffe
}

/// `value`, cut at a char boundary to at most [`EXCERPT_BYTES_MAX`] bytes plus `…`.
pub(crate) fn excerpt(value: &str) -> String {
    if value.len() <= EXCERPT_BYTES_MAX {
        return value.to_owned();
    }
    let mut end = EXCERPT_BYTES_MAX;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &value[..end])
}

/// RFC 7231 media type: `token "/" token` then optional `;` parameters.
fn is_media_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or_default().trim_end();
    let is_token =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    match essence.split_once('/') {
        Some((ty, subtype)) => is_token(ty) && is_token(subtype),
        None => false,
    }
}

/// W3C Trace Context `traceparent`, version `00`: returns (trace id, parent id, flags).
pub(crate) fn parse_traceparent(value: &str) -> Result<([u8; 16], [u8; 8], u8), &'static str> {
    let b = value.as_bytes();
    if b.len() != 55 {
        return Err("it must be 55 characters");
    }
    if &b[..3] != b"00-" {
        return Err("it must start with version \"00-\"");
    }
    if b[35] != b'-' || b[52] != b'-' {
        return Err("fields must be separated by '-'");
    }
    let mut trace_id = [0u8; 16];
    let mut parent_id = [0u8; 8];
    let mut flags = [0u8; 1];
    if !decode_lower_hex(&b[3..35], &mut trace_id)
        || !decode_lower_hex(&b[36..52], &mut parent_id)
        || !decode_lower_hex(&b[53..55], &mut flags)
    {
        return Err("ids and flags must be lowercase hex");
    }
    if trace_id == [0; 16] {
        return Err("the trace id must not be all zeros");
    }
    if parent_id == [0; 8] {
        return Err("the parent id must not be all zeros");
    }
    Ok((trace_id, parent_id, flags[0]))
}

/// Fills `out` from lowercase hex digits; false if `hex` is not exactly that.
fn decode_lower_hex(hex: &[u8], out: &mut [u8]) -> bool {
    if hex.len() != out.len() * 2 {
        return false;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        match (digit(pair[0]), digit(pair[1])) {
            (Some(hi), Some(lo)) => *byte = hi << 4 | lo,
            _ => return false,
        }
    }
    true
}

/// Checks an RFC 3986 URI-reference; returns whether it has a scheme (is an absolute URI).
/// `dataschema`: present and an absolute URI.
pub(crate) fn check_dataschema(schema: &str) -> Result<(), EventError> {
    check_present("dataschema", schema)?;
    let invalid = |reason| EventError::InvalidDataSchema { value: excerpt(schema), reason };
    if !check_uri_reference(schema).map_err(invalid)? {
        return Err(invalid(UriError::MissingScheme));
    }
    Ok(())
}

pub(crate) fn check_uri_reference(value: &str) -> Result<bool, UriError> {
    let b = value.as_bytes();

    // Pass 1: every character is in RFC 3986's set, and every '%' starts an escape.
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            let hex = |j: usize| b.get(j).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return Err(UriError::BadPercentEncoding { position: i });
            }
            i += 3;
            continue;
        }
        if !(is_unreserved(c) || is_sub_delim(c) || b":/?#[]@".contains(&c)) {
            let character = value[i..].chars().next().unwrap_or(char::REPLACEMENT_CHARACTER);
            return Err(UriError::DisallowedCharacter { character, position: i });
        }
        i += 1;
    }

    // Pass 2: structure. Delimiters are ASCII, so byte offsets below are char boundaries.
    let misplaced = |position: usize| UriError::MisplacedCharacter { character: char::from(b[position]), position };
    let find_in =
        |from: usize, to: usize, set: &[u8]| b[from..to].iter().position(|c| set.contains(c)).map(|p| p + from);

    // Fragment and query may hold '/', '?', ':' and '@', but not '#', '[' or ']'.
    let fragment_start = find_in(0, b.len(), b"#").unwrap_or(b.len());
    if fragment_start < b.len()
        && let Some(p) = find_in(fragment_start + 1, b.len(), b"#[]")
    {
        return Err(misplaced(p));
    }
    let query_start = find_in(0, fragment_start, b"?").unwrap_or(fragment_start);
    if let Some(p) = find_in(query_start, fragment_start, b"[]") {
        return Err(misplaced(p));
    }

    // A ':' before any '/' ends a scheme; a relative reference cannot have one there.
    let hier_end = query_start;
    let mut pos = 0;
    let mut has_scheme = false;
    if let Some(colon) = find_in(0, hier_end, b":/").filter(|&p| b[p] == b':') {
        let scheme = &b[..colon];
        let valid = scheme.first().is_some_and(u8::is_ascii_alphabetic)
            && scheme.iter().all(|&c| c.is_ascii_alphanumeric() || b"+-.".contains(&c));
        if !valid {
            return Err(UriError::InvalidScheme { scheme: excerpt(&value[..colon]) });
        }
        has_scheme = true;
        pos = colon + 1;
    }

    if b[pos..hier_end].starts_with(b"//") {
        let authority_start = pos + 2;
        let authority_end = find_in(authority_start, hier_end, b"/").unwrap_or(hier_end);
        check_authority(value, authority_start, authority_end)?;
        pos = authority_end;
    }

    // Path: pchar and '/', which after pass 1 means anything but '[' and ']'.
    if let Some(p) = find_in(pos, hier_end, b"[]") {
        return Err(misplaced(p));
    }
    Ok(has_scheme)
}

/// `[ userinfo "@" ] host [ ":" port ]` in `value[start..end]`.
fn check_authority(value: &str, start: usize, end: usize) -> Result<(), UriError> {
    let b = value.as_bytes();
    let misplaced = |position: usize| UriError::MisplacedCharacter { character: char::from(b[position]), position };

    let mut host_start = start;
    if let Some(at) = b[start..end].iter().position(|&c| c == b'@') {
        let at = start + at;
        // userinfo: unreserved, escapes, sub-delims and ':'; no '@', '[' or ']'.
        if let Some(p) = (start..at).find(|&p| b"[]".contains(&b[p])) {
            return Err(misplaced(p));
        }
        host_start = at + 1;
    }

    let port_colon = if b.get(host_start) == Some(&b'[') {
        // IP-literal: "[" ( IPv6address / IPvFuture ) "]", then optionally ":" port.
        let close = (host_start + 1..end).find(|&p| b[p] == b']').ok_or_else(|| misplaced(host_start))?;
        if close == host_start + 1 {
            return Err(misplaced(close));
        }
        if let Some(p) = (host_start + 1..close).find(|&p| b"[@%".contains(&b[p])) {
            return Err(misplaced(p));
        }
        match b.get(close + 1) {
            _ if close + 1 == end => None,
            Some(b':') => Some(close + 1),
            _ => return Err(misplaced(close + 1)),
        }
    } else {
        // reg-name: unreserved, escapes and sub-delims; a ':' starts the port.
        let colon = (host_start..end).find(|&p| b[p] == b':');
        let host_end = colon.unwrap_or(end);
        if let Some(p) = (host_start..host_end).find(|&p| b"[]@".contains(&b[p])) {
            return Err(misplaced(p));
        }
        colon
    };

    if let Some(colon) = port_colon {
        let port = &value[colon + 1..end];
        if !port.bytes().all(|c| c.is_ascii_digit()) {
            return Err(UriError::InvalidPort { port: excerpt(port) });
        }
    }
    Ok(())
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-._~".contains(&c)
}

fn is_sub_delim(c: u8) -> bool {
    b"!$&'()*+,;=".contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_references() {
        let ok = [
            ("/herald", false),
            ("orders", false),
            ("./a:b", false),
            ("", false),
            ("#frag", false),
            ("?q=1", false),
            ("//host", false),
            ("https://example.com:8080/a/b?x=1&y=%20#top", true),
            ("urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66", true),
            ("mailto:a@b.example", true),
            ("http://[::1]:80/x", true),
            ("http://user:pw@host/", true),
            ("https://host:/", true),
            ("a+b.c-d:x", true),
        ];
        for (uri, absolute) in ok {
            assert_eq!(check_uri_reference(uri), Ok(absolute), "{uri}");
        }
        let bad = [
            ("a b", UriError::DisallowedCharacter { character: ' ', position: 1 }),
            ("/é", UriError::DisallowedCharacter { character: 'é', position: 1 }),
            ("/%4", UriError::BadPercentEncoding { position: 1 }),
            ("/%zz", UriError::BadPercentEncoding { position: 1 }),
            ("1a:b", UriError::InvalidScheme { scheme: "1a".into() }),
            (":b", UriError::InvalidScheme { scheme: "".into() }),
            ("/a#b#c", UriError::MisplacedCharacter { character: '#', position: 4 }),
            ("/a[b]", UriError::MisplacedCharacter { character: '[', position: 2 }),
            ("http://host:8x/", UriError::InvalidPort { port: "8x".into() }),
            ("http://a@b@c/", UriError::MisplacedCharacter { character: '@', position: 10 }),
            ("http://[::1/", UriError::MisplacedCharacter { character: '[', position: 7 }),
            ("http://[::1]x/", UriError::MisplacedCharacter { character: 'x', position: 12 }),
        ];
        for (uri, expected) in bad {
            assert_eq!(check_uri_reference(uri), Err(expected), "{uri}");
        }
    }

    #[test]
    fn media_types() {
        for ok in ["application/json", "text/plain; charset=utf-8", "application/vnd.herald+json"] {
            assert!(is_media_type(ok), "{ok}");
        }
        for bad in ["json", "/json", "application/", "a b/c", "text/plain x"] {
            assert!(!is_media_type(bad), "{bad}");
        }
    }

    #[test]
    fn excerpt_cuts_at_char_boundary() {
        let long = "é".repeat(100);
        let cut = excerpt(&long);
        assert!(cut.ends_with('…'));
        assert_eq!(cut.len(), 128 + '…'.len_utf8());
    }
}
