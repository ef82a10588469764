//! `GET /v1/topics/{topic}/tail?type=&key=&q=`: a live tail. Server-Sent Events of the events
//! appended to the topic from now on, filtered by the server; no consumer group, no settles,
//! nothing recorded.
//!
//! - `ready`: `{"from": {"<partition>": offset}}`, first: where the tail starts;
//! - `event`: one stored event, as a browse answers it;
//! - `skipped`: `{"count": n}`: events not sent, because more arrived than
//!   `tail_events_per_s_max` allows in a second, or because the tail fell more than
//!   [`BEHIND_MAX`] events behind a partition (it jumps to the end);
//! - `end`: `{"code", "message"}` before the server ends it (the topic was deleted, the token
//!   expired, shutdown).
//!
//! Filters: `type` (the CloudEvents type, exactly), `key` (the partition key, exactly), `q` (text
//! found in the event's JSON: attributes, headers or data), each at most [`FILTER_BYTES_MAX`].
//! A tail holds one of the server's stream permits (`max_subscriptions`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::Response;
use axum::response::sse::Event as SseEvent;
use herald_broker::{Broker, BrokerError, StoredEvent};
use herald_model::Code;
use tokio::sync::{Notify, mpsc};

use super::extract::{Params, Seg};
use super::{ApiError, Caller, Http, blocking};
use crate::auth::{Action, Resource};

/// Longest filter value, in bytes.
pub const FILTER_BYTES_MAX: usize = 1024;
/// A tail further behind a partition than this jumps to its end.
pub const BEHIND_MAX: u64 = 10_000;
/// Events read from a partition at once.
const READ_EVENTS: usize = 500;
/// Longest wait for an append before looking again (a deleted topic, a new partition).
const IDLE_CHECK: Duration = Duration::from_secs(1);
/// SSE events queued for a slow viewer before the tail waits for it.
const OUTBOUND_MAX: usize = 256;

/// What a viewer asked to see.
#[derive(Debug, Default, Clone)]
struct Filter {
    ty: Option<String>,
    key: Option<String>,
    text: Option<String>,
}

impl Filter {
    fn parse(q: &Params) -> Result<Filter, ApiError> {
        let get = |name: &str| -> Result<Option<String>, ApiError> {
            let v = q.one(name)?.filter(|v| !v.is_empty());
            if let Some(v) = v
                && v.len() > FILTER_BYTES_MAX
            {
                return Err(ApiError::new(
                    Code::LimitExceeded,
                    format!("filter {name} is {} bytes; the most is {FILTER_BYTES_MAX}", v.len()),
                ));
            }
            Ok(v.map(str::to_owned))
        };
        Ok(Filter { ty: get("type")?, key: get("key")?, text: get("q")? })
    }

    /// Whether `s` passes, with its JSON (made once, only when a text filter asks for it).
    fn passes(&self, s: &StoredEvent, json: impl FnOnce() -> String) -> bool {
        self.ty.as_deref().is_none_or(|t| s.event.ty() == t)
            && self.key.as_deref().is_none_or(|k| s.event.key() == Some(k))
            && self.text.as_deref().is_none_or(|t| json().contains(t))
    }
}

/// `GET /v1/topics/{topic}/tail`.
pub(super) async fn tail(
    method: axum::http::Method,
    State(h): State<Http>,
    caller: Caller,
    Seg(topic): Seg,
    q: Params,
) -> Result<Response, ApiError> {
    caller.may(Action::Consume, Resource::Topic(&topic))?;
    if method == axum::http::Method::HEAD {
        return Err(ApiError::new(Code::MethodNotAllowed, "HEAD is not allowed on a live tail: GET it"));
    }
    q.only(&["type", "key", "q"])?;
    let filter = Filter::parse(&q)?;
    if h.app.shutdown.is_cancelled() {
        return Err(ApiError::shutting_down());
    }
    let quota = h.app.guard.meter.subscribe(&caller.0)?;
    let permit = super::subscribe::stream_permit(&h)?;
    let waker = Arc::new(Notify::new());
    let (t, w) = (topic.clone(), waker.clone());
    // Listening first: nothing appended between reading the ends and waiting is missed.
    let from = blocking(&h, move |b| {
        b.listen(&t, &w)?;
        Ok(b.describe_topic(&t)?.partitions.iter().map(|p| (p.partition, p.latest_offset)).collect::<BTreeMap<_, _>>())
    })
    .await?;
    let (tx, rx) = mpsc::channel(OUTBOUND_MAX);
    let ready = serde_json::json!({ "from": from.iter().map(|(p, o)| (p.to_string(), o)).collect::<BTreeMap<_, _>>() });
    tx.try_send(Ok(SseEvent::default().event("ready").data(ready.to_string()))).expect("a new channel has room");
    let tail = Tail {
        broker: h.app.broker.clone(),
        topic,
        filter,
        positions: from,
        waker,
        tx,
        per_s_max: h.app.config.tail_events_per_s_max,
        guard: h.app.guard.clone(),
        caller: caller.0,
        shutdown: h.app.shutdown.clone(),
    };
    tokio::spawn(async move {
        let _held = (quota, permit);
        let gauge = metrics::gauge!("herald_server_subscriptions", "api" => "tail");
        gauge.increment(1.0);
        tail.run().await;
        gauge.decrement(1.0);
    });
    Ok(super::subscribe::sse_response(rx, true))
}

struct Tail {
    broker: Broker,
    topic: String,
    filter: Filter,
    /// Next offset to look at, per partition.
    positions: BTreeMap<u32, u64>,
    waker: Arc<Notify>,
    tx: mpsc::Sender<Result<SseEvent, Infallible>>,
    per_s_max: u32,
    guard: Arc<crate::auth::Guard>,
    caller: crate::auth::Principal,
    shutdown: tokio_util::sync::CancellationToken,
}

/// What one look at the partitions found.
struct Found {
    events: Vec<StoredEvent>,
    /// Where to look next time, per partition.
    positions: BTreeMap<u32, u64>,
    /// Events stepped over (too far behind, or deleted by retention before they were read).
    jumped: u64,
    /// Whether a partition has more to read now.
    more: bool,
}

impl Tail {
    async fn run(mut self) {
        let mut window = (Instant::now(), 0u32);
        let mut skipped = 0u64;
        let waker = self.waker.clone();
        loop {
            let notified = waker.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Err(d) = self.guard.still_valid(&self.caller) {
                return self.end(ApiError::from(d)).await;
            }
            let (b, topic, positions) = (self.broker.clone(), self.topic.clone(), self.positions.clone());
            let found = match tokio::task::spawn_blocking(move || look(&b, &topic, positions)).await {
                Ok(Ok(f)) => f,
                Ok(Err(e)) => return self.end(ApiError::from(e)).await,
                Err(_) => return,
            };
            skipped += found.jumped;
            self.positions = found.positions;
            for s in found.events {
                let json = super::events::stored_json(&s);
                let Ok(data) = serde_json::to_string(&json) else { continue };
                if !self.filter.passes(&s, || data.clone()) {
                    continue;
                }
                if window.0.elapsed() >= Duration::from_secs(1) {
                    window = (Instant::now(), 0);
                }
                if window.1 >= self.per_s_max {
                    skipped += 1;
                    continue;
                }
                window.1 += 1;
                if !self.send(SseEvent::default().event("event").data(data)).await {
                    return;
                }
            }
            if skipped > 0 {
                let data = serde_json::json!({ "count": skipped }).to_string();
                if !self.send(SseEvent::default().event("skipped").data(data)).await {
                    return;
                }
                skipped = 0;
            }
            if self.shutdown.is_cancelled() {
                return self.end(ApiError::shutting_down()).await;
            }
            if found.more {
                continue;
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return self.end(ApiError::shutting_down()).await,
                _ = self.tx.closed() => return,
                _ = &mut notified => {}
                _ = tokio::time::sleep(IDLE_CHECK) => {}
            }
        }
    }

    /// Sends `event` unless the viewer left or the server is shutting down (then `false`): a
    /// viewer that does not read holds nothing up.
    async fn send(&self, event: SseEvent) -> bool {
        tokio::select! {
            sent = self.tx.send(Ok(event)) => sent.is_ok(),
            _ = self.shutdown.cancelled() => false,
        }
    }

    async fn end(&self, e: ApiError) {
        let _ = self.tx.try_send(Ok(SseEvent::default().event("end").data(e.to_json())));
    }
}

/// Reads what is new in each partition from `positions`, jumping ahead of a partition the tail is
/// more than [`BEHIND_MAX`] behind.
fn look(broker: &Broker, topic: &str, mut positions: BTreeMap<u32, u64>) -> Result<Found, BrokerError> {
    let info = broker.describe_topic(topic)?;
    let (mut events, mut jumped, mut more) = (Vec::new(), 0, false);
    for p in &info.partitions {
        // A partition added since the tail started is followed from its start.
        let pos = positions.entry(p.partition).or_insert(p.earliest_offset);
        // A topic deleted and made again under the same name starts over.
        if *pos > p.latest_offset {
            *pos = p.earliest_offset;
        }
        if *pos < p.earliest_offset {
            jumped += p.earliest_offset - *pos;
            *pos = p.earliest_offset;
        }
        if p.latest_offset.saturating_sub(*pos) > BEHIND_MAX {
            jumped += p.latest_offset - *pos;
            *pos = p.latest_offset;
        }
        if *pos >= p.latest_offset {
            continue;
        }
        let read = broker.read(topic, p.partition, *pos, READ_EVENTS)?;
        if let Some(last) = read.last() {
            debug_assert!(last.offset >= *pos, "a read went backwards");
            *pos = last.offset + 1;
            more |= *pos < p.latest_offset;
        }
        events.extend(read);
    }
    Ok(Found { events, positions, jumped, more })
}
