//! The binary record: round trips, canonical form, and hostile input.

use std::time::{Duration, Instant};

use herald_core::codec::binary::{self, DecodeError, VERSION};
use herald_core::testing::arb_event;
use herald_core::{Event, EventError, Limits, Timestamp};
use proptest::prelude::*;

proptest! {
    #[test]
    fn encode_decode_is_identity(event in arb_event()) {
        let bytes = binary::encode(&event);
        prop_assert_eq!(bytes.len(), binary::encoded_len(&event));
        prop_assert_eq!(binary::decode(&bytes), Ok(event));
    }

    #[test]
    fn encode_into_appends(event in arb_event(), prefix in prop::collection::vec(any::<u8>(), 0..8)) {
        let mut out = prefix.clone();
        binary::encode_into(&event, &mut out);
        prop_assert_eq!(&out[..prefix.len()], &prefix[..]);
        prop_assert_eq!(&out[prefix.len()..], &binary::encode(&event)[..]);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        // Whatever decodes must re-encode to the same bytes: the format is canonical.
        if let Ok(event) = binary::decode(&bytes) {
            prop_assert_eq!(binary::encode(&event), bytes);
        }
    }

    #[test]
    fn corrupted_records_never_panic(
        event in arb_event(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let clean = binary::encode(&event);
        // A strict prefix of a record always lacks part of its last field.
        prop_assert!(binary::decode(&clean[..cut.index(clean.len())]).is_err());
        let mut bytes = clean;
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if let Ok(decoded) = binary::decode(&bytes) {
            prop_assert_eq!(binary::encode(&decoded), bytes);
        }
    }
}

fn sample() -> Event {
    Event::builder("order.created")
        .id("0190b6a3-7c4e-7a1b-8c2d-3e4f5a6b7c8d")
        .time(Timestamp::from_unix_nanos(1_700_000_000_123_456_789))
        .traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .data("hi", "text/plain")
        .header("tenant", "acme")
        .build()
        .expect("valid")
}

#[test]
fn layout_is_stable() {
    let bytes = binary::encode(&sample());
    let mut expected = vec![VERSION];
    expected.extend_from_slice(&[0xa5, 0x04]); // flags: time, content type, traceparent, ID_UUID
    expected.extend_from_slice(&[
        0x01, 0x90, 0xb6, 0xa3, 0x7c, 0x4e, 0x7a, 0x1b, 0x8c, 0x2d, 0x3e, 0x4f, 0x5a, 0x6b, 0x7c, 0x8d,
    ]);
    expected.extend_from_slice(b"\x07/herald\x0dorder.created");
    expected.extend_from_slice(&1_700_000_000_123_456_789i64.to_le_bytes());
    expected.extend_from_slice(b"\x0atext/plain");
    expected.extend_from_slice(&[
        0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36, 0x00, 0xf0,
        0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7, 0x01,
    ]);
    expected.extend_from_slice(b"\x01\x06tenant\x04acme\x02hi");
    assert_eq!(bytes, expected);
}

/// Decodes `bytes` and compares the error with `expected`.
fn check(name: &str, bytes: &[u8], expected: DecodeError) {
    assert_eq!(binary::decode(bytes), Err(expected), "{name}");
}

#[test]
fn malformed_records_have_precise_errors() {
    let good = binary::encode(&sample());
    let with = |i: usize, b: u8| {
        let mut v = good.clone();
        v[i] = b;
        v
    };
    let mut trailing = good.clone();
    trailing.push(0);
    let mut unsorted = vec![VERSION, 0x00, 0x01, b'i', 0x01, b's', 0x01, b't', 0x02];
    unsorted.extend_from_slice(b"\x01b\x00\x01a\x00\x00");
    let mut duplicate = vec![VERSION, 0x00, 0x01, b'i', 0x01, b's', 0x01, b't', 0x02];
    duplicate.extend_from_slice(b"\x01a\x00\x01a\x00\x00");
    let uuid_as_text = {
        let mut v = vec![VERSION, 0x00, 36];
        v.extend_from_slice(b"0190b6a3-7c4e-7a1b-8c2d-3e4f5a6b7c8d");
        v.extend_from_slice(b"\x01s\x01t\x00\x00");
        v
    };

    let table: Vec<(&str, Vec<u8>, DecodeError)> = vec![
        ("empty", vec![], DecodeError::Empty),
        ("version 2", with(0, 2), DecodeError::UnsupportedVersion { version: 2 }),
        ("version 0", vec![0], DecodeError::UnsupportedVersion { version: 0 }),
        ("no flags", vec![VERSION], DecodeError::Truncated { field: "flags", position: 1, needed: 1, remaining: 0 }),
        ("unknown flag", vec![VERSION, 0x80, 0x08], DecodeError::UnknownFlags { flags: 1 << 10, position: 1 }),
        ("overlong flags", vec![VERSION, 0x80, 0x00], DecodeError::InvalidVarint { field: "flags", position: 1 }),
        (
            "truncated uuid",
            good[..10].to_vec(),
            DecodeError::Truncated { field: "id", position: 3, needed: 16, remaining: 7 },
        ),
        (
            "source length past end",
            with(19, 0x7f),
            DecodeError::Truncated { field: "source", position: 19, needed: 0x7f, remaining: good.len() - 20 },
        ),
        ("invalid utf-8 in source", with(21, 0xff), DecodeError::InvalidUtf8 { field: "source", position: 21 }),
        ("trailing byte", trailing, DecodeError::TrailingBytes { position: good.len(), count: 1 }),
        ("headers out of order", unsorted, DecodeError::HeaderOrder { name: "a".into(), position: 12 }),
        ("duplicate header", duplicate, DecodeError::HeaderOrder { name: "a".into(), position: 12 }),
        (
            "too many headers",
            vec![VERSION, 0x00, 0x01, b'i', 0x01, b's', 0x01, b't', 65],
            DecodeError::TooManyHeaders { count: 65, limit: 64, position: 8 },
        ),
        (
            "uuid stored as text",
            uuid_as_text,
            DecodeError::NonCanonical {
                field: "id",
                position: 2,
                reason: "a lowercase hyphenated UUID is stored as 16 bytes (flag ID_UUID)",
            },
        ),
        (
            "empty id",
            vec![VERSION, 0x00, 0x00, 0x01, b's', 0x01, b't', 0x00, 0x00],
            DecodeError::Invalid(EventError::EmptyId),
        ),
        (
            "invalid header name",
            b"\x01\x00\x01i\x01s\x01t\x01\x01A\x00\x00".to_vec(),
            DecodeError::Invalid(EventError::InvalidHeaderName { name: "A".into() }),
        ),
    ];
    for (name, bytes, expected) in table {
        check(name, &bytes, expected);
    }
}

#[test]
fn zero_traceparent_is_rejected_after_decoding() {
    let mut bytes = binary::encode(&sample());
    // The trace id starts after version, flags, id, source, type, time and content type.
    let at = 1 + 2 + 16 + 8 + 14 + 8 + 11;
    bytes[at..at + 16].fill(0);
    assert!(matches!(binary::decode(&bytes), Err(DecodeError::Invalid(EventError::InvalidTraceparent { .. }))));
}

#[test]
fn huge_claimed_lengths_fail_fast() {
    // Lengths near 2^60 and u64::MAX for the source, a header value and the data.
    let huge: [&[u8]; 2] = [
        &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10],
        &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
    ];
    let started = Instant::now();
    for len in huge {
        let mut in_source = vec![VERSION, 0x00, 0x01, b'i'];
        in_source.extend_from_slice(len);
        let mut in_header = vec![VERSION, 0x00, 0x01, b'i', 0x01, b's', 0x01, b't', 0x01, 0x01, b'a'];
        in_header.extend_from_slice(len);
        let mut in_data = vec![VERSION, 0x00, 0x01, b'i', 0x01, b's', 0x01, b't', 0x00];
        in_data.extend_from_slice(len);
        for bytes in [in_source, in_header, in_data] {
            match binary::decode(&bytes) {
                Err(DecodeError::Truncated { needed, remaining, .. }) => {
                    assert!(needed >= 1 << 60, "{needed}");
                    assert_eq!(remaining, 0);
                }
                other => panic!("expected Truncated, got {other:?}"),
            }
        }
    }
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn input_over_the_limit_is_rejected_before_parsing() {
    let limits = Limits { event_bytes_max: 16, ..Limits::default() };
    let bytes = vec![0xffu8; 17];
    assert_eq!(binary::decode_with(&bytes, &limits), Err(DecodeError::TooLarge { input_bytes: 17, limit: 16 }));
}

#[test]
fn decode_applies_the_given_limits() {
    let event = Event::builder("t").key("abcdef").build().expect("valid");
    let bytes = binary::encode(&event);
    let limits = Limits { key_bytes_max: 5, ..Limits::default() };
    assert_eq!(
        binary::decode_with(&bytes, &limits),
        Err(DecodeError::Invalid(EventError::KeyTooLarge { key_bytes: 6, limit: 5 }))
    );
}
