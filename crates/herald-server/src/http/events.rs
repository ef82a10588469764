//! `POST /v1/topics/{topic}/events`: the CloudEvents HTTP binding; `GET` of the same path:
//! browsing stored events.
//!
//! The mode follows `Content-Type`:
//! - `application/cloudevents+json`: structured mode, one event in the body;
//! - `application/cloudevents-batch+json`: batch mode, a JSON array of at most
//!   `max_batch_events` events;
//! - another `application/cloudevents…` format: 415;
//! - anything else (or none): binary mode. The attributes are `ce-*` headers (`ce-id`,
//!   `ce-source`, `ce-type` and `ce-specversion: 1.0` required; `ce-time`, `ce-subject`,
//!   `ce-dataschema`, `ce-partitionkey`, `ce-traceparent` or `traceparent`, `ce-tracestate` or
//!   `tracestate`, `ce-correlationid`, `ce-causationid`; every other `ce-x` is the header `x`),
//!   the body is `data` and `Content-Type` its `datacontenttype` (`application/octet-stream`
//!   when a body comes without one). Header values are read as the binding says: a quoted string
//!   is unquoted, then `%XX` escapes are decoded (a `%` not followed by two hex digits stays as
//!   it is), and the result must be UTF-8.
//!
//! Every event is checked under the server's limits (`max_event_bytes`) before anything is
//! stored. The answer lists one receipt per event, in order: 201 when anything was stored, 200
//! when every event was a duplicate.

use super::Caller;
use crate::auth::{Action, Resource};
use herald_model::Code;
use std::collections::BTreeMap;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use herald_broker::{Receipt, StoredEvent};
use herald_core::codec::json::{self, BATCH_CONTENT_TYPE, CONTENT_TYPE};
use herald_core::{Event, Limits, Timestamp};
use serde::Serialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use super::extract::{Params, Seg, media_type, read_body};
use super::{ApiError, Http, blocking};

/// Events a browse returns unless `limit` says otherwise.
const READ_LIMIT_DEFAULT: usize = 100;

enum Mode {
    Binary,
    Structured,
    Batch,
}

fn mode(headers: &HeaderMap) -> Result<Mode, ApiError> {
    match media_type(headers)?.as_deref() {
        Some(CONTENT_TYPE) => Ok(Mode::Structured),
        Some(BATCH_CONTENT_TYPE) => Ok(Mode::Batch),
        Some(m) if m.starts_with("application/cloudevents") => Err(ApiError::new(
            Code::UnsupportedMediaType,
            format!(
                "event format {m:?} is not supported; send {CONTENT_TYPE} (one event), {BATCH_CONTENT_TYPE} (a \
                 batch), or the event's data with ce-* headers (binary mode)"
            ),
        )),
        _ => Ok(Mode::Binary),
    }
}

#[derive(Serialize)]
struct ReceiptJson<'a> {
    topic: &'a str,
    partition: u32,
    offset: u64,
    duplicate: bool,
}

#[derive(Serialize)]
struct PublishJson<'a> {
    receipts: Vec<ReceiptJson<'a>>,
}

pub(super) async fn publish(
    State(h): State<Http>,
    caller: Caller,
    Seg(topic): Seg,
    params: Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    caller.may(Action::Publish, Resource::Topic(&topic))?;
    params.only(&[])?;
    let mode = mode(&headers)?;
    let bytes = read_body(&h, &headers, body).await?;
    let body_bytes = bytes.len();
    let limits = h.app.config.limits();
    let events = match mode {
        Mode::Binary => vec![binary_event(&headers, bytes, &limits)?],
        Mode::Structured => vec![json::from_json_with(&bytes, &limits).map_err(|e| ApiError::json(&e))?],
        Mode::Batch => batch(&bytes, &limits, h.app.config.max_batch_events)?,
    };
    h.app.guard.meter.publish(&caller.0, events.len(), body_bytes)?;
    let receipts = h.app.broker.publish_batch(&topic, events).await?;
    let duplicates = receipts.iter().filter(|r| r.duplicate).count();
    let stored = receipts.len() - duplicates;
    metrics::counter!("herald_server_published_events_total", "api" => "http").increment(stored as u64);
    if duplicates > 0 {
        metrics::counter!("herald_server_duplicate_events_total", "api" => "http").increment(duplicates as u64);
    }
    let status = if stored > 0 { StatusCode::CREATED } else { StatusCode::OK };
    let body = PublishJson { receipts: receipts.iter().map(receipt_json).collect() };
    Ok((status, Json(body)).into_response())
}

fn receipt_json(r: &Receipt) -> ReceiptJson<'_> {
    ReceiptJson { topic: &r.topic, partition: r.partition, offset: r.offset, duplicate: r.duplicate }
}

/// A batch: counted before anything is decoded (counting allocates nothing), so an oversized
/// batch is refused cheaply.
fn batch(bytes: &[u8], limits: &Limits, max: usize) -> Result<Vec<Event>, ApiError> {
    if let Ok(items) = serde_json::from_slice::<Vec<IgnoredAny>>(bytes) {
        let n = items.len();
        if n == 0 {
            return Err(ApiError::new(Code::InvalidArgument, "the batch is an empty array; send at least one event"));
        }
        if n > max {
            return Err(ApiError::new(
                Code::RequestTooLarge,
                format!(
                    "the batch holds {n} events; the limit is {max} (max_batch_events): split it into batches of at \
                     most {max}"
                ),
            ));
        }
    }
    // Not an array, or broken JSON: the decoder says exactly what is wrong.
    json::from_json_batch_with(bytes, limits).map_err(|e| ApiError::json(&e))
}

/// One attribute header's value, decoded as the HTTP binding says.
fn header_text(name: &str, raw: &[u8]) -> Result<String, ApiError> {
    let unquoted = match raw {
        [b'"', inner @ .., b'"'] => {
            let mut out = Vec::with_capacity(inner.len());
            let mut escaped = false;
            for &b in inner {
                if escaped || b != b'\\' {
                    out.push(b);
                    escaped = false;
                } else {
                    escaped = true;
                }
            }
            out
        }
        _ => raw.to_vec(),
    };
    let mut bytes = Vec::with_capacity(unquoted.len());
    let mut i = 0;
    while i < unquoted.len() {
        let b = unquoted[i];
        let hex = |j: usize| unquoted.get(j).and_then(|c| (*c as char).to_digit(16));
        if b == b'%'
            && let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2))
        {
            bytes.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        bytes.push(b);
        i += 1;
    }
    String::from_utf8(bytes).map_err(|_| {
        ApiError::new(
            Code::InvalidEvent,
            format!("header {name} is not UTF-8 once percent-decoded; percent-encode its value as UTF-8"),
        )
    })
}

fn missing(header: &str) -> ApiError {
    ApiError::new(
        Code::InvalidEvent,
        format!(
            "required attribute {header} is missing; binary mode needs the headers ce-id, ce-source, ce-type and \
             ce-specversion: 1.0 (or send the event as JSON with Content-Type: {CONTENT_TYPE})"
        ),
    )
}

fn bad_attribute(header: &str, message: String) -> ApiError {
    ApiError::new(Code::InvalidEvent, format!("header {header}: {message}"))
}

/// Builds the event of a binary-mode request.
fn binary_event(headers: &HeaderMap, data: Bytes, limits: &Limits) -> Result<Event, ApiError> {
    let mut attrs: BTreeMap<&str, String> = BTreeMap::new();
    for name in headers.keys() {
        let n = name.as_str();
        let attr = match n.strip_prefix("ce-") {
            Some(attr) => attr,
            None if n == "traceparent" || n == "tracestate" => n,
            None => continue,
        };
        let mut values = headers.get_all(name).iter();
        let Some(value) = values.next() else { continue };
        if values.next().is_some() {
            return Err(bad_attribute(n, "appears more than once; send it once".into()));
        }
        let text = header_text(n, value.as_bytes())?;
        // ce-traceparent wins over a plain traceparent.
        if n.starts_with("ce-") || !attrs.contains_key(attr) {
            attrs.insert(attr, text);
        }
    }
    let mut take = |attr: &str| attrs.remove(attr);
    let specversion = take("specversion").ok_or_else(|| missing("ce-specversion"))?;
    if specversion != "1.0" {
        return Err(bad_attribute(
            "ce-specversion",
            format!("{specversion:?} is not supported; Herald reads CloudEvents \"1.0\""),
        ));
    }
    let id = take("id").ok_or_else(|| missing("ce-id"))?;
    let source = take("source").ok_or_else(|| missing("ce-source"))?;
    let ty = take("type").ok_or_else(|| missing("ce-type"))?;
    let time = take("time")
        .map(|t| Timestamp::parse_rfc3339(&t).map_err(|e| bad_attribute("ce-time", e.to_string())))
        .transpose()?;
    let mut b = Event::builder(ty).id(id).source(source).time(time);
    if let Some(v) = take("subject") {
        b = b.subject(v);
    }
    if let Some(v) = take("dataschema") {
        b = b.dataschema(v);
    }
    if let Some(v) = take("partitionkey") {
        b = b.key(v);
    }
    if let Some(v) = take("traceparent") {
        b = b.traceparent(v);
    }
    if let Some(v) = take("tracestate") {
        b = b.tracestate(v);
    }
    if let Some(v) = take("correlationid") {
        b = b.correlationid(v);
    }
    if let Some(v) = take("causationid") {
        b = b.causationid(v);
    }
    if attrs.contains_key("datacontenttype") {
        return Err(bad_attribute(
            "ce-datacontenttype",
            "in binary mode the data's media type is the Content-Type header; drop ce-datacontenttype".into(),
        ));
    }
    for (name, value) in attrs {
        b = b.header(name, value);
    }
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .map(|v| {
            v.to_str().map(str::to_owned).map_err(|_| {
                ApiError::invalid("Content-Type holds characters outside visible ASCII; send a media type")
            })
        })
        .transpose()?;
    b = match (content_type, data.is_empty()) {
        (Some(ct), true) => b.datacontenttype(ct),
        (Some(ct), false) => b.data(data, ct),
        // RFC 9110: a body without a type may be taken as application/octet-stream.
        (None, false) => b.data(data, "application/octet-stream"),
        (None, true) => b,
    };
    b.build_with(limits).map_err(|e| ApiError::event(&e))
}

/// One stored event in an answer.
#[derive(Serialize)]
pub(super) struct StoredJson {
    topic: String,
    partition: u32,
    offset: u64,
    append_time_ms: i64,
    append_time: String,
    event: Box<RawValue>,
}

/// The event as CloudEvents JSON, embedded without re-parsing.
pub(super) fn event_json(e: &Event) -> Box<RawValue> {
    RawValue::from_string(json::to_json(e)).unwrap_or_else(|_| {
        // to_json writes valid JSON; this only keeps the code panic-free.
        RawValue::from_string("null".to_owned()).expect("null is JSON")
    })
}

pub(super) fn stored_json(s: &StoredEvent) -> StoredJson {
    StoredJson {
        topic: s.topic.to_string(),
        partition: s.partition,
        offset: s.offset,
        append_time_ms: s.append_time_ms,
        append_time: Timestamp::from_unix_nanos(s.append_time_ms.saturating_mul(1_000_000)).to_rfc3339(),
        event: event_json(&s.event),
    }
}

#[derive(Serialize)]
pub(super) struct ReadJson {
    events: Vec<StoredJson>,
    /// Where the next page starts.
    next_offset: u64,
}

/// `GET /v1/topics/{topic}/events?partition=&offset=&limit=`: stored events of one partition
/// from `offset` (default: the earliest stored), at most `limit` (1 to `max_read_events`,
/// default 100) and about 4 MiB. `time=` (RFC 3339, or ms since the Unix epoch) instead of
/// `offset` starts at the first event appended at or after it.
pub(super) async fn read(
    State(h): State<Http>,
    caller: Caller,
    Seg(topic): Seg,
    q: Params,
) -> Result<Json<ReadJson>, ApiError> {
    caller.may(Action::Consume, Resource::Topic(&topic))?;
    q.only(&["partition", "offset", "time", "limit"])?;
    let partition: u32 = q.parse("partition", "a partition number")?.unwrap_or(0);
    let offset: Option<u64> = q.parse("offset", "an offset")?;
    let time_ms = q.one("time")?.map(time_ms).transpose()?;
    if offset.is_some() && time_ms.is_some() {
        return Err(ApiError::invalid("give offset or time, not both"));
    }
    let max = h.app.config.max_read_events;
    let limit: usize = q.parse("limit", "a number of events")?.unwrap_or(READ_LIMIT_DEFAULT.min(max));
    if limit == 0 {
        return Err(ApiError::invalid(format!("limit is 0; ask for 1 to {max} events")));
    }
    if limit > max {
        return Err(ApiError::new(
            Code::LimitExceeded,
            format!("limit is {limit} events; the most is {max} (max_read_events): page with offset"),
        ));
    }
    let (stored, from) = blocking(&h, move |b| {
        let from = match (offset, time_ms) {
            (Some(o), _) => o,
            (None, Some(ms)) => b.offset_for_time(&topic, partition, ms)?,
            (None, None) => {
                b.describe_topic(&topic)?.partitions.get(partition as usize).map_or(0, |p| p.earliest_offset)
            }
        };
        Ok((b.read(&topic, partition, from, limit)?, from))
    })
    .await?;
    let next_offset = stored.last().map_or(from, |s| s.offset + 1);
    Ok(Json(ReadJson { events: stored.iter().map(stored_json).collect(), next_offset }))
}

/// A time given as RFC 3339 or as milliseconds since the Unix epoch.
fn time_ms(text: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    Timestamp::parse_rfc3339(text).map(Timestamp::as_unix_millis).map_err(|e| {
        ApiError::invalid(format!(
            "time={text:?} is neither RFC 3339 (2026-12-01T10:00:00Z) nor milliseconds since the Unix epoch: {e}"
        ))
    })
}

/// The history as served: the model's shape plus each group's state in one word.
#[derive(Serialize)]
pub(super) struct HistoryJson {
    #[serde(flatten)]
    history: herald_model::EventHistory,
    /// `group` → `pending`, `in_progress`, `dead_lettered` or `done`.
    states: BTreeMap<String, &'static str>,
}

/// Only the groups the caller may see (members, reasons and DLQ offsets are theirs).
fn history_json(caller: &Caller, mut history: herald_model::EventHistory) -> Json<HistoryJson> {
    history.groups.retain(|g| caller.0.sees(Resource::Group(&g.group)));
    let states = history.groups.iter().map(|g| (g.group.clone(), g.state())).collect();
    Json(HistoryJson { history, states })
}

/// `GET /v1/topics/{topic}/events/{offset}/history?partition=N`: what happened to one event in
/// each group reading the topic. `partition` may be left out on a topic of one partition.
pub(super) async fn history(
    State(h): State<Http>,
    caller: Caller,
    axum::extract::Path((topic, offset)): axum::extract::Path<(String, String)>,
    q: Params,
) -> Result<Json<HistoryJson>, ApiError> {
    caller.may(Action::Consume, Resource::Topic(&topic))?;
    q.only(&["partition"])?;
    let offset: u64 =
        offset.parse().map_err(|_| ApiError::invalid(format!("{offset:?} is not an offset (a whole number)")))?;
    let partition: Option<u32> = q.parse("partition", "a partition number")?;
    let partition = match partition {
        Some(p) => p,
        None => {
            let t = topic.clone();
            let partitions = blocking(&h, move |b| b.describe_topic(&t)).await?.partitions.len();
            if partitions > 1 {
                return Err(ApiError::invalid(format!(
                    "topic {topic:?} has {partitions} partitions: say which with ?partition=N"
                )));
            }
            0
        }
    };
    Ok(history_json(&caller, h.app.broker.event_history(&topic, partition, offset).await?))
}

/// `GET /v1/topics/{topic}/history?id=ID`: [`history`] of the event with that id, found among
/// the deliveries the groups recorded.
pub(super) async fn history_by_id(
    State(h): State<Http>,
    caller: Caller,
    Seg(topic): Seg,
    q: Params,
) -> Result<Json<HistoryJson>, ApiError> {
    caller.may(Action::Consume, Resource::Topic(&topic))?;
    q.only(&["id"])?;
    let Some(id) = q.one("id")? else {
        return Err(ApiError::invalid("say which event with ?id=ID (or ask /events/{offset}/history)"));
    };
    Ok(history_json(&caller, h.app.broker.event_history_by_id(&topic, id).await?))
}
