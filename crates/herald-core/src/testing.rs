//! Proptest strategies for valid events, for this crate's tests and other crates' (feature
//! `testing`).

use proptest::prelude::*;

use crate::event::Event;
use crate::limits::Limits;
use crate::timestamp::Timestamp;
use crate::validate::{RESERVED_ATTRIBUTES, validate};

/// Any [`Timestamp`].
pub fn arb_timestamp() -> impl Strategy<Value = Timestamp> {
    any::<i64>().prop_map(Timestamp::from_unix_nanos)
}

/// A CloudEvents string: non-empty, no control characters, no noncharacters.
pub fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9._:/-]{1,24}",
        // \PC excludes control, format, private-use and unassigned characters (so noncharacters).
        "\\PC{1,16}",
    ]
}

/// A valid header (extension attribute) name that is not reserved.
pub fn arb_header_name() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,20}".prop_filter("reserved", |n| !RESERVED_ATTRIBUTES.contains(&n.as_str()))
}

/// A URI-reference usable as `source`.
pub fn arb_source() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/herald".to_owned()),
        "/[a-z0-9._~-]{1,12}(/([a-zA-Z0-9._~-]|%[0-9A-Fa-f]{2}){1,8}){0,3}",
        "urn:[a-z]{1,8}:[a-z0-9:.-]{1,16}",
        "https://[a-z]{1,10}\\.example(:[0-9]{1,5})?(/[a-z0-9]{0,8}){0,3}(\\?[a-z]=[0-9]{1,3})?",
        "[a-z]{1,10}",
    ]
}

/// A valid W3C traceparent.
pub fn arb_traceparent() -> impl Strategy<Value = String> {
    (1..=u128::MAX, 1..=u64::MAX, any::<u8>())
        .prop_map(|(trace, parent, flags)| format!("00-{trace:032x}-{parent:016x}-{flags:02x}"))
}

/// A JSON document as text: compact or pretty, so whitespace inside it varies.
pub fn arb_json_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
        "\\PC{0,12}".prop_map(serde_json::Value::String),
        ".{0,6}".prop_map(serde_json::Value::String),
    ];
    let value = leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map("[a-z\"\\\\]{0,6}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    });
    (value, any::<bool>()).prop_map(|(v, pretty)| {
        let text = if pretty { serde_json::to_string_pretty(&v) } else { serde_json::to_string(&v) };
        text.unwrap_or_default()
    })
}

/// `datacontenttype` (or none) and matching data: JSON texts, JSON with surrounding whitespace,
/// text, and arbitrary bytes, under JSON and non-JSON content types.
pub fn arb_data() -> impl Strategy<Value = (Option<String>, Vec<u8>)> {
    let content_type = prop_oneof![
        Just(None),
        Just(Some("application/json".to_owned())),
        Just(Some("application/cloudevents+json; charset=utf-8".to_owned())),
        Just(Some("text/json".to_owned())),
        Just(Some("text/plain; charset=utf-8".to_owned())),
        Just(Some("application/octet-stream".to_owned())),
        Just(Some("application/xml".to_owned())),
    ];
    let bytes = prop_oneof![
        Just(Vec::new()),
        arb_json_text().prop_map(String::into_bytes),
        arb_json_text().prop_map(|t| format!(" {t}\n").into_bytes()),
        ".{0,32}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..64),
    ];
    (content_type, bytes)
}

/// Any valid [`Event`] under the default limits, with every optional attribute sometimes set.
pub fn arb_event() -> impl Strategy<Value = Event> {
    let id = prop_oneof![
        any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string()),
        any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string().to_uppercase()),
        arb_text(),
    ];
    let required = (id, arb_source(), arb_text(), prop::option::of(arb_timestamp()));
    let context = (
        prop::option::of(arb_text()),
        prop::option::of(prop_oneof![
            Just("https://schemas.example/order/v1.json".to_owned()),
            Just("urn:herald:schema:order:1".to_owned()),
        ]),
        arb_data(),
    );
    let extensions = (
        prop::option::of(arb_text()),
        prop::option::of(arb_traceparent()),
        prop::option::of("[a-z0-9]{1,8}=[!-~]{1,16}(,[a-z0-9]{1,8}=[!-~]{1,8}){0,2}"),
        prop::option::of(arb_text()),
        prop::option::of(arb_text()),
        prop::collection::btree_map(arb_header_name(), prop_oneof!["", arb_text()], 0..8),
    );
    (required, context, extensions).prop_map(|(required, context, extensions)| {
        let (id, source, ty, time) = required;
        let (subject, dataschema, (datacontenttype, data)) = context;
        let (key, traceparent, tracestate, correlationid, causationid, headers) = extensions;
        let event = Event {
            id,
            source,
            ty,
            time,
            subject,
            datacontenttype,
            dataschema,
            data: data.into(),
            key,
            traceparent,
            tracestate,
            correlationid,
            causationid,
            headers,
        };
        if let Err(e) = validate(&event, &Limits::default()) {
            panic!("arb_event made an invalid event (a bug in the strategy): {e}\n{event:?}");
        }
        event
    })
}
