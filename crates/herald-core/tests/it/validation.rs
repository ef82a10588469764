//! Every [`EventError`] a builder can return, table-driven.

use herald_core::{Event, EventBuilder, EventError, Limits, LimitsError, UriError};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn base() -> EventBuilder {
    Event::builder("order.created")
}

/// Builds under `limits` and compares the outcome with `expected`.
fn check_with(name: &str, builder: EventBuilder, limits: &Limits, expected: Option<EventError>) {
    match (builder.build_with(limits), expected) {
        (Ok(_), None) => {}
        (Err(actual), Some(expected)) => {
            assert_eq!(actual, expected, "{name}");
            // Every message is a sentence a person can act on, not a Debug dump.
            assert!(!actual.to_string().is_empty(), "{name}");
        }
        (Ok(event), Some(expected)) => panic!("{name}: built {event:?}, expected {expected}"),
        (Err(actual), None) => panic!("{name}: expected Ok, got {actual}"),
    }
}

fn check(name: &str, builder: EventBuilder, expected: Option<EventError>) {
    check_with(name, builder, &Limits::default(), expected);
}

#[test]
fn valid_events_build() {
    let table = [
        ("defaults", base()),
        ("urn source", base().source("urn:herald:billing")),
        ("relative source", base().source("orders/eu")),
        ("absolute source", base().source("https://shop.example:8443/orders?x=1#f")),
        ("ip literal", base().source("http://[2001:db8::1]/")),
        ("no time", base().time(None)),
        ("all attributes", {
            base()
                .id("A-234-1234-1234")
                .subject("order-1")
                .data("hello", "text/plain; charset=utf-8")
                .dataschema("https://schemas.example/order.json")
                .key("customer-42")
                .traceparent(TRACEPARENT)
                .tracestate("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
                .correlationid("flow-1")
                .causationid("evt-0")
                .header("tenant", "acme")
                .header("a1", "")
        }),
        ("unicode text", base().subject("Bestellung für Zoë 🚀").key("ключ")),
        ("20-char header", base().header("abcdefghij0123456789", "v")),
    ];
    for (name, builder) in table {
        check(name, builder, None);
    }
}

#[test]
fn each_invariant_has_its_error() {
    use EventError::*;
    let long = |n: usize| "x".repeat(n);
    let bad_tp = |value: &str, reason: &'static str| InvalidTraceparent { value: value.to_owned(), reason };
    let table: Vec<(&str, EventBuilder, EventError)> = vec![
        ("empty id", base().id(""), EmptyId),
        ("empty type", base().ty(""), EmptyType),
        ("empty source", base().source(""), EmptySource),
        (
            "source with space",
            base().source("/my orders"),
            InvalidSource {
                value: "/my orders".into(),
                reason: UriError::DisallowedCharacter { character: ' ', position: 3 },
            },
        ),
        (
            "source with bad escape",
            base().source("/a%g1"),
            InvalidSource { value: "/a%g1".into(), reason: UriError::BadPercentEncoding { position: 2 } },
        ),
        (
            "source with colon in first segment",
            base().source("9lives:x/y"),
            InvalidSource { value: "9lives:x/y".into(), reason: UriError::InvalidScheme { scheme: "9lives".into() } },
        ),
        (
            "source with newline",
            base().source("/a\nb"),
            InvalidSource {
                value: "/a\nb".into(),
                reason: UriError::DisallowedCharacter { character: '\n', position: 2 },
            },
        ),
        (
            "relative dataschema",
            base().dataschema("/schemas/order.json"),
            InvalidDataSchema { value: "/schemas/order.json".into(), reason: UriError::MissingScheme },
        ),
        ("content type without subtype", base().data("x", "json"), InvalidContentType { value: "json".into() }),
        ("empty subject", base().subject(""), EmptyAttribute { attribute: "subject" }),
        ("empty key", base().key(""), EmptyAttribute { attribute: "partitionkey" }),
        ("empty correlationid", base().correlationid(""), EmptyAttribute { attribute: "correlationid" }),
        (
            "control char in type",
            base().ty("order\u{7}created"),
            DisallowedCharacter { attribute: "type".into(), character: '\u{7}', position: 5 },
        ),
        (
            "noncharacter in header value",
            base().header("tenant", "a\u{fffe}"),
            DisallowedCharacter { attribute: "tenant".into(), character: '\u{fffe}', position: 1 },
        ),
        ("uppercase header name", base().header("Tenant", "acme"), InvalidHeaderName { name: "Tenant".into() }),
        ("header name with dash", base().header("x-tenant", "acme"), InvalidHeaderName { name: "x-tenant".into() }),
        ("empty header name", base().header("", "acme"), InvalidHeaderName { name: "".into() }),
        (
            "21-char header name",
            base().header("abcdefghij0123456789x", "v"),
            InvalidHeaderName { name: "abcdefghij0123456789x".into() },
        ),
        ("reserved header id", base().header("id", "1"), ReservedHeaderName { name: "id".into() }),
        (
            "reserved header partitionkey",
            base().header("partitionkey", "k"),
            ReservedHeaderName { name: "partitionkey".into() },
        ),
        (
            "reserved header data_base64",
            base().header("data_base64", "AA=="),
            ReservedHeaderName { name: "data_base64".into() },
        ),
        ("traceparent too short", base().traceparent("00-abc"), bad_tp("00-abc", "it must be 55 characters")),
        (
            "traceparent version 01",
            base().traceparent(TRACEPARENT.replacen("00", "01", 1)),
            bad_tp(&TRACEPARENT.replacen("00", "01", 1), "it must start with version \"00-\""),
        ),
        (
            "traceparent uppercase hex",
            base().traceparent(TRACEPARENT.replace('f', "F")),
            bad_tp(&TRACEPARENT.replace('f', "F"), "ids and flags must be lowercase hex"),
        ),
        (
            "traceparent zero trace id",
            base().traceparent(format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32))),
            bad_tp(&format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32)), "the trace id must not be all zeros"),
        ),
        (
            "traceparent zero parent id",
            base().traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
            bad_tp("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", "the parent id must not be all zeros"),
        ),
        (
            "traceparent bad separator",
            base().traceparent(TRACEPARENT.replace("-01", "_01")),
            bad_tp(&TRACEPARENT.replace("-01", "_01"), "fields must be separated by '-'"),
        ),
        ("tracestate non-ascii", base().tracestate("a=ü"), InvalidTracestate { value: "a=ü".into(), position: 2 }),
        ("key over limit", base().key(long(1025)), KeyTooLarge { key_bytes: 1025, limit: 1024 }),
        // Repro 8 of #8: a 64 KB id was accepted.
        (
            "id over limit",
            base().id(long(65_536)),
            AttributeTooLarge { attribute: "id", value_bytes: 65_536, limit: 1024 },
        ),
        (
            "source over limit",
            base().source(format!("/{}", long(1024))),
            AttributeTooLarge { attribute: "source", value_bytes: 1025, limit: 1024 },
        ),
        (
            "subject over limit",
            base().subject(long(2000)),
            AttributeTooLarge { attribute: "subject", value_bytes: 2000, limit: 1024 },
        ),
        // Repro 8 of #8: data nested 100,000 levels deep was accepted.
        (
            "json data too deep",
            base().data(format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)), "application/json"),
            DataTooDeep { depth: 100_000, limit: 64 },
        ),
        (
            "json data too deep, +json type",
            base().data(format!("{}1{}", "{\"a\":".repeat(65), "}".repeat(65)), "application/vnd.x+json"),
            DataTooDeep { depth: 65, limit: 64 },
        ),
        (
            "header value over limit",
            base().header("big", long(4097)),
            HeaderValueTooLarge { name: "big".into(), value_bytes: 4097, limit: 4096 },
        ),
        (
            "too many headers",
            (0..65).fold(base(), |b, i| b.header(format!("h{i}"), "v")),
            TooManyHeaders { count: 65, limit: 64 },
        ),
        (
            "event over limit",
            base().id("x").time(None).data(vec![0u8; 1_048_576], "application/octet-stream"),
            EventTooLarge {
                // version 1, flags 1, id 2, source 8, type 14, content type 25, header count 1,
                // data length 3.
                event_bytes: 1_048_576 + 55,
                limit: 1_048_576,
            },
        ),
    ];
    for (name, builder, expected) in table {
        check(name, builder, Some(expected));
    }
}

#[test]
fn limits_apply_as_given() {
    let small = Limits {
        key_bytes_max: 4,
        header_value_bytes_max: 2,
        headers_count_max: 1,
        event_bytes_max: 100,
        ..Limits::default()
    };
    check_with("key at limit", base().key("abcd"), &small, None);
    check_with("key over", base().key("abcde"), &small, Some(EventError::KeyTooLarge { key_bytes: 5, limit: 4 }));
    check_with(
        "value over",
        base().header("a", "abc"),
        &small,
        Some(EventError::HeaderValueTooLarge { name: "a".into(), value_bytes: 3, limit: 2 }),
    );
    check_with(
        "invalid limits",
        base(),
        &Limits { event_bytes_max: 0, ..small },
        Some(EventError::InvalidLimits(LimitsError::OutOfRange {
            name: "event_bytes_max",
            value: 0,
            min: 1,
            max: Limits::EVENT_BYTES_HARD_MAX,
        })),
    );
    let event = base().data(vec![1u8; 200], "application/octet-stream").build();
    let event = event.expect("fits the default limits");
    assert!(matches!(event.check_limits(&small), Err(EventError::EventTooLarge { limit: 100, .. })));
}

#[test]
fn messages_name_value_and_limit() {
    let err = base().key("k".repeat(2048)).build().expect_err("too large");
    assert_eq!(err.to_string(), "key is 2048 bytes; the limit is 1024 (key_bytes_max)");
    let err = base().source("x".repeat(300) + " ").build().expect_err("space");
    let message = err.to_string();
    assert!(message.contains('…'), "long values are shortened: {message}");
    assert!(message.len() < 400, "{message}");
}
