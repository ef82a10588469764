//! CloudEvents structured JSON: round trips, the data rule, and bad input.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use herald_core::codec::json::{
    self, JsonError, from_json, from_json_batch, from_json_with, to_json, to_json_batch, to_json_value,
};
use herald_core::testing::arb_event;
use herald_core::{Event, EventError, Limits, Timestamp};
use proptest::prelude::*;
use serde_json::json;

proptest! {
    #[test]
    fn to_json_from_json_is_identity(event in arb_event()) {
        let text = to_json(&event);
        prop_assert_eq!(from_json(text.as_bytes()), Ok(event));
    }

    #[test]
    fn batch_round_trips(events in prop::collection::vec(arb_event(), 0..5)) {
        let text = to_json_batch(&events);
        prop_assert_eq!(from_json_batch(text.as_bytes()), Ok(events));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = from_json(&bytes);
        let _ = from_json_batch(&bytes);
    }

    #[test]
    fn arbitrary_json_never_panics(text in "[\\[\\]{}\":,a-z0-9 .\\\\-]{0,64}") {
        let _ = from_json(text.as_bytes());
        let _ = from_json_batch(text.as_bytes());
    }

    #[test]
    fn arbitrary_members_never_panic(
        members in prop::collection::btree_map(
            prop_oneof![
                Just("specversion".to_owned()), Just("id".to_owned()), Just("source".to_owned()),
                Just("type".to_owned()), Just("time".to_owned()), Just("data".to_owned()),
                Just("data_base64".to_owned()), Just("datacontenttype".to_owned()),
                Just("traceparent".to_owned()), "[a-zA-Z_]{1,22}",
            ],
            prop_oneof![
                Just(json!("1.0")), Just(json!(null)), Just(json!(1.5)), Just(json!(true)),
                Just(json!([])), Just(json!({})), Just(json!("AAE=")), Just(json!("/x")),
                Just(json!("2024-05-01T12:00:00Z")), ".{0,8}".prop_map(|s| json!(s)),
            ],
            0..10,
        )
    ) {
        let text = serde_json::to_string(&members).unwrap_or_default();
        let _ = from_json(text.as_bytes());
    }
}

fn event(data: &[u8], content_type: Option<&str>) -> Event {
    match content_type {
        Some(ct) => Event::builder("t").id("1").time(None).data(data.to_vec(), ct).build().expect("valid"),
        // The builder always sets a content type with data; JSON can leave it out.
        None => {
            let text = json!({
                "specversion": "1.0", "id": "1", "source": "/herald", "type": "t",
                "data_base64": BASE64.encode(data),
            })
            .to_string();
            from_json(text.as_bytes()).expect("valid")
        }
    }
}

/// Writes an event with `data` under `content_type` and checks the data members produced.
fn check_data(data: &[u8], content_type: Option<&str>, expected: &str) {
    let e = event(data, content_type);
    let text = to_json(&e);
    assert!(text.ends_with(&format!("{expected}}}")), "{data:?} as {content_type:?}: {text}");
    assert_eq!(from_json(text.as_bytes()).as_ref(), Ok(&e));
}

#[test]
fn data_rule() {
    let table: [(&[u8], Option<&str>, &str); 12] = [
        (br#"{"a": [1, 2]}"#, Some("application/json"), r#""data":{"a": [1, 2]}"#),
        (b"42", Some("application/vnd.x+json"), r#""data":42"#),
        (br#""s""#, Some("text/json"), r#""data":"s""#),
        (b"null", None, r#""data":null"#),
        (b"[1,2]", None, r#""data":[1,2]"#),
        (b" 1", Some("application/json"), r#""data_base64":"IDE=""#),
        (b"{", Some("application/json"), r#""data_base64":"ew==""#),
        (b"plain", None, r#""data_base64":"cGxhaW4=""#),
        (b"hello \"you\"", Some("text/plain"), r#""data":"hello \"you\"""#),
        (b"{}", Some("text/plain"), r#""data":"{}""#),
        (b"\xff\x00", Some("application/octet-stream"), r#""data_base64":"/wA=""#),
        (b"", Some("application/json"), r#""datacontenttype":"application/json""#),
    ];
    for (data, content_type, expected) in table {
        check_data(data, content_type, expected);
    }
}

#[test]
fn reads_the_spec_example() {
    let text = br#"{
        "specversion" : "1.0",
        "type" : "com.github.pull_request.opened",
        "source" : "https://github.com/cloudevents/spec/pull",
        "subject" : "123",
        "id" : "A234-1234-1234",
        "time" : "2018-04-05T19:00:00+02:00",
        "comexampleextension1" : "value",
        "comexampleothervalue" : 5,
        "datacontenttype" : "text/xml",
        "data" : "<much wow=\"xml\"/>"
    }"#;
    let event = from_json(text).expect("valid");
    assert_eq!(event.id(), "A234-1234-1234");
    assert_eq!(event.ty(), "com.github.pull_request.opened");
    assert_eq!(event.time(), Timestamp::parse_rfc3339("2018-04-05T17:00:00Z").ok());
    assert_eq!(event.header("comexampleextension1"), Some("value"));
    assert_eq!(event.header("comexampleothervalue"), Some("5"));
    assert_eq!(&event.data()[..], br#"<much wow="xml"/>"#);
    assert!(to_json(&event).contains(r#""time":"2018-04-05T17:00:00Z""#));
}

#[test]
fn extensions_are_top_level() {
    let e = Event::builder("t")
        .key("k")
        .traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .tracestate("a=b")
        .correlationid("c")
        .causationid("d")
        .header("tenant", "acme")
        .build()
        .expect("valid");
    let v = to_json_value(&e);
    for (name, value) in [
        ("partitionkey", "k"),
        ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ("tracestate", "a=b"),
        ("correlationid", "c"),
        ("causationid", "d"),
        ("tenant", "acme"),
        ("specversion", "1.0"),
    ] {
        assert_eq!(v[name], json!(value), "{name}");
    }
}

#[test]
fn extension_numbers_and_bools_become_strings() {
    let text = br#"{"specversion":"1.0","id":"1","source":"/s","type":"t",
        "partitionkey":7,"big":12345678901234567890,"frac":-1.50e3,"flag":false,"gone":null}"#;
    let e = from_json(text).expect("valid");
    assert_eq!(e.key(), Some("7"));
    assert_eq!(e.header("big"), Some("12345678901234567890"));
    assert_eq!(e.header("frac"), Some("-1.50e3"));
    assert_eq!(e.header("flag"), Some("false"));
    assert_eq!(e.header("gone"), None);
}

/// Reads `input` and compares the error with `expected`.
fn check(name: &str, input: &str, expected: JsonError) {
    assert_eq!(from_json(input.as_bytes()), Err(expected), "{name}");
}

#[test]
fn bad_events_have_precise_errors() {
    const HEAD: &str = r#""specversion":"1.0","id":"1","source":"/s","type":"t""#;
    let with = |extra: &str| format!("{{{HEAD},{extra}}}");
    let wrong =
        |attribute: &str, found, expected| JsonError::WrongType { attribute: attribute.into(), found, expected };
    let table: Vec<(&str, String, JsonError)> = vec![
        ("array", "[]".into(), JsonError::NotAnObject { found: "an array" }),
        ("number", " 1".into(), JsonError::NotAnObject { found: "a number" }),
        (
            "missing specversion",
            r#"{"id":"1","source":"/s","type":"t"}"#.into(),
            JsonError::MissingAttribute { attribute: "specversion" },
        ),
        (
            "missing id",
            r#"{"specversion":"1.0","source":"/s","type":"t"}"#.into(),
            JsonError::MissingAttribute { attribute: "id" },
        ),
        (
            "missing type",
            r#"{"specversion":"1.0","id":"1","source":"/s"}"#.into(),
            JsonError::MissingAttribute { attribute: "type" },
        ),
        (
            "null source",
            r#"{"specversion":"1.0","id":"1","source":null,"type":"t"}"#.into(),
            JsonError::MissingAttribute { attribute: "source" },
        ),
        (
            "specversion 0.3",
            r#"{"specversion":"0.3","id":"1","source":"/s","type":"t"}"#.into(),
            JsonError::UnsupportedSpecVersion { value: "0.3".into() },
        ),
        (
            "numeric specversion",
            r#"{"specversion":1.0,"id":"1","source":"/s","type":"t"}"#.into(),
            wrong("specversion", "a number", "a string"),
        ),
        (
            "numeric id",
            r#"{"specversion":"1.0","id":1,"source":"/s","type":"t"}"#.into(),
            wrong("id", "a number", "a string"),
        ),
        ("object subject", with(r#""subject":{}"#), wrong("subject", "an object", "a string")),
        ("array extension", with(r#""tenant":["a"]"#), wrong("tenant", "an array", "a string, number or boolean")),
        ("duplicate", with(r#""id":"2""#), JsonError::DuplicateAttribute { attribute: "id".into() }),
        ("data and data_base64", with(r#""data":1,"data_base64":"AA==""#), JsonError::DataConflict),
        (
            "bad base64",
            with(r#""data_base64":"!!""#),
            JsonError::InvalidBase64 { reason: "Invalid symbol 33, offset 0.".into() },
        ),
        ("numeric data_base64", with(r#""data_base64":1"#), wrong("data_base64", "a number", "a string")),
        (
            "bad extension name",
            with(r#""Tenant":"acme""#),
            JsonError::Invalid(EventError::InvalidHeaderName { name: "Tenant".into() }),
        ),
        (
            "bad traceparent",
            with(r#""traceparent":"00-x""#),
            JsonError::Invalid(EventError::InvalidTraceparent {
                value: "00-x".into(),
                reason: "it must be 55 characters",
            }),
        ),
        (
            "empty id",
            r#"{"specversion":"1.0","id":"","source":"/s","type":"t"}"#.into(),
            JsonError::Invalid(EventError::EmptyId),
        ),
    ];
    for (name, input, expected) in table {
        check(name, &input, expected);
    }
}

#[test]
fn bad_time_and_syntax_errors() {
    let bad_time = br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","time":"yesterday"}"#;
    assert!(matches!(from_json(bad_time), Err(JsonError::InvalidTime(_))));
    assert!(matches!(from_json(b"{\"id\": }"), Err(JsonError::Syntax { line: 1, column: 8, .. })));
    assert!(matches!(from_json(b"{} {}"), Err(JsonError::Syntax { .. })));
}

#[test]
fn batches() {
    assert_eq!(from_json_batch(b"[]"), Ok(vec![]));
    assert_eq!(to_json_batch(&[]), "[]");
    assert_eq!(from_json_batch(b"{}"), Err(JsonError::NotAnArray { found: "an object" }));
    let good = to_json(&Event::builder("t").build().expect("valid"));
    let input = format!("[{good}, 5]");
    assert_eq!(
        from_json_batch(input.as_bytes()),
        Err(JsonError::InBatch { index: 1, error: Box::new(JsonError::NotAnObject { found: "a number" }) })
    );
    let input = format!("[{good},{{\"specversion\":\"1.0\"}}]");
    assert_eq!(
        from_json_batch(input.as_bytes()),
        Err(JsonError::InBatch { index: 1, error: Box::new(JsonError::MissingAttribute { attribute: "id" }) })
    );
}

#[test]
fn limits_apply_to_json_too() {
    let text = to_json(&Event::builder("t").key("abcdef").build().expect("valid"));
    let limits = Limits { key_bytes_max: 5, ..Limits::default() };
    assert_eq!(
        json::from_json_with(text.as_bytes(), &limits),
        Err(JsonError::Invalid(EventError::KeyTooLarge { key_bytes: 6, limit: 5 }))
    );
}

#[test]
fn deep_json_data_falls_back_to_base64_and_round_trips() {
    // Deeper than the default limit allows: an operator raised it.
    let limits = Limits { data_depth_max: 200, ..Limits::default() };
    let deep = format!("{}{}", "[".repeat(120), "]".repeat(120));
    let e = Event::builder("t").data(deep.clone(), "application/json").build_with(&limits).expect("valid");
    let text = to_json(&e);
    assert!(text.contains("data_base64"));
    assert_eq!(from_json_with(text.as_bytes(), &limits), Ok(e));
}

#[test]
fn json_data_is_kept_verbatim_without_surrounding_whitespace() {
    let text = br#"{"specversion":"1.0","id":"1","source":"/s","type":"t",
        "datacontenttype":"application/json",
        "data" :   { "b" : 1.10,  "a": "\u00e9" }   }"#;
    let e = from_json(text).expect("valid");
    assert_eq!(&e.data()[..], br#"{ "b" : 1.10,  "a": "\u00e9" }"#);
}

#[test]
fn json_value_parses_data() {
    let e = Event::builder("t").json(&json!({ "n": [1, 2] })).build().expect("valid");
    assert_eq!(to_json_value(&e)["data"], json!({ "n": [1, 2] }));
    let bin = Event::builder("t").data(vec![0xffu8], "application/octet-stream").build().expect("valid");
    assert_eq!(to_json_value(&bin)["data_base64"], json!("/w=="));
}
