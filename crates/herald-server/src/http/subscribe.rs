//! Consuming over HTTP: one Server-Sent Events connection is one member of a consumer group.
//!
//! `GET /v1/groups/{group}/subscribe?topic=a&topic=b&from=earliest&max_in_flight=N` takes one
//! of the server's subscription permits (`max_subscriptions`, shared with gRPC streams), creates
//! the group if needed (a group that exists with other settings is joined with its stored ones,
//! as the SDK does), joins a member and answers a stream of SSE events:
//! - `joined`: `{"member", "group", "generation", "max_in_flight"}`, first;
//! - `delivery`: `{"delivery": token, "topic", "partition", "offset", "attempt", "generation",
//!   "append_time_ms", "event": CloudEvent}`, one per delivered event; the member holds at most
//!   `max_in_flight` unsettled ones, so the stream pauses until some are settled;
//! - `warning`: `{"code", "message"}` when retention deleted events the group had not consumed;
//! - `end`: `{"code", "message"}` just before the server ends the stream (shutdown, an error).
//!
//! Comments (`:`) keep the connection alive every [`KEEP_ALIVE`]. Deliveries are settled with
//! `POST /v1/groups/{group}/acks` naming the member and the tokens: the live members are kept in
//! [`Live`]. The member leaves the group (its unsettled deliveries go to other members) when the
//! client disconnects, on a broker error, or when the server shuts down.
//!
//! A delivery token is `topic:partition:offset:generation:attempt` (topic names hold no `:`).

use super::Caller;
use crate::auth::{Action as Access, Resource};
use herald_model::Code;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use herald_broker::{
    BrokerError, Delivery, DeliveryId, GroupConfig, Member, MemberConfig, OrderingMode, RetryPolicy, StartFrom,
};
use herald_core::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::events::event_json;
use super::extract::{JsonBody, Params, Seg};
use super::{ApiError, Http, blocking};

/// How often an idle stream carries a keep-alive comment (which also reveals a client that is
/// gone).
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// Events queued towards one client before the session waits for it to read.
const OUTBOUND_EVENTS_MAX: usize = 16;
/// Most events one poll takes.
const POLL_EVENTS_MAX: usize = 256;
/// Longest single poll (a poll is also the member's heartbeat).
const POLL_WAIT_MAX: Duration = Duration::from_secs(1);
/// Most `topic` parameters of one subscription.
const TOPICS_MAX: usize = 64;
/// A nack or reject reason is cut to this many bytes (it is stored with the group's state and in
/// the dead letter).
const REASON_BYTES_MAX: usize = 1024;

/// The members of this server's open SSE subscriptions, by (group, member id).
#[derive(Default)]
pub(crate) struct Live {
    members: Mutex<HashMap<(String, String), Arc<Member>>>,
}

impl Live {
    fn insert(&self, member: Arc<Member>) {
        let key = (member.group().to_owned(), member.id().to_owned());
        self.members.lock().expect("live members lock poisoned").insert(key, member);
    }

    fn remove(&self, group: &str, member: &str) {
        self.members.lock().expect("live members lock poisoned").remove(&(group.to_owned(), member.to_owned()));
    }

    fn get(&self, group: &str, member: &str) -> Option<Arc<Member>> {
        self.members.lock().expect("live members lock poisoned").get(&(group.to_owned(), member.to_owned())).cloned()
    }
}

/// `earliest`, `latest` or an RFC 3339 time.
pub(super) fn start_from(v: &str) -> Result<StartFrom, ApiError> {
    match v {
        "earliest" => Ok(StartFrom::Earliest),
        "latest" => Ok(StartFrom::Latest),
        t => Timestamp::parse_rfc3339(t).map(|ts| StartFrom::Timestamp(ts.as_unix_millis())).map_err(|e| {
            ApiError::invalid(format!("position {t:?} is not \"earliest\", \"latest\" or an RFC 3339 time ({e})"))
        }),
    }
}

fn parse_ordering(v: &str) -> Result<OrderingMode, ApiError> {
    match v {
        "key" => Ok(OrderingMode::Key),
        "partition" => Ok(OrderingMode::Partition),
        "none" => Ok(OrderingMode::None),
        o => Err(ApiError::invalid(format!("ordering {o:?} is not \"key\", \"partition\" or \"none\""))),
    }
}

/// `GET /v1/groups/{group}/subscribe`.
pub(super) async fn subscribe(
    method: axum::http::Method,
    State(h): State<Http>,
    caller: Caller,
    Seg(group): Seg,
    q: Params,
) -> Result<Response, ApiError> {
    caller.may(Access::Consume, Resource::Group(&group))?;
    // axum routes HEAD to GET handlers; a HEAD must not join the group, even for a moment.
    if method == axum::http::Method::HEAD {
        return Err(ApiError::new(
            Code::MethodNotAllowed,
            "HEAD is not allowed on a subscription: GET it to receive events",
        ));
    }
    q.only(&["topic", "from", "max_in_flight", "ordering", "ack_timeout_ms", "session_timeout_ms", "max_attempts"])?;
    let topics: Vec<String> = q.all("topic").into_iter().map(str::to_owned).collect();
    for t in &topics {
        caller.may(Access::Consume, Resource::Topic(t))?;
    }
    if topics.is_empty() {
        return Err(ApiError::invalid("name the topics to receive: ?topic=orders (repeat it for more)"));
    }
    if topics.len() > TOPICS_MAX {
        return Err(ApiError::invalid(format!(
            "{} topic parameters; a subscription names at most {TOPICS_MAX}",
            topics.len()
        )));
    }
    let defaults = GroupConfig::default();
    let config = GroupConfig {
        topics,
        start: q.one("from")?.map(start_from).transpose()?.unwrap_or_default(),
        ordering: q.one("ordering")?.map(parse_ordering).transpose()?.unwrap_or_default(),
        ack_timeout_ms: q.parse("ack_timeout_ms", "milliseconds")?.unwrap_or(defaults.ack_timeout_ms),
        session_timeout_ms: q.parse("session_timeout_ms", "milliseconds")?.unwrap_or(defaults.session_timeout_ms),
        retry: RetryPolicy {
            max_attempts: q.parse("max_attempts", "a number of attempts")?.unwrap_or(defaults.retry.max_attempts),
            ..defaults.retry
        },
        ..defaults
    };
    let max_in_flight: u32 =
        q.parse("max_in_flight", "a number of events")?.unwrap_or(MemberConfig::default().max_in_flight);
    if max_in_flight == 0 {
        return Err(ApiError::invalid(
            "max_in_flight is 0; set it to the most unsettled deliveries the client will hold (at least 1)",
        ));
    }
    let in_flight_max = h.app.broker.config().in_flight_max;
    if max_in_flight > in_flight_max {
        // Checked before the group is created: a refused subscribe leaves nothing behind.
        return Err(ApiError::new(
            Code::LimitExceeded,
            format!("max_in_flight is {max_in_flight}; the most is {in_flight_max} (in_flight_max)"),
        ));
    }
    if h.app.shutdown.is_cancelled() {
        return Err(ApiError::shutting_down());
    }
    let quota = h.app.guard.meter.subscribe(&caller.0)?;
    let permit = stream_permit(&h)?;
    // Settings belong to the group: a member asking for other ones joins with the stored ones.
    let member = blocking(&h, move |b| b.subscribe(&group, config, MemberConfig { id: None, max_in_flight })).await?;
    // The group's stored topics are the ones delivered: the caller must be allowed them too
    // (dropping the member leaves the group).
    for t in &member.settings().topics {
        caller.may(Access::Consume, Resource::Topic(t))?;
    }
    let session_timeout_ms = member.settings().session_timeout_ms;
    let member = Arc::new(member);
    let (tx, rx) = mpsc::channel(OUTBOUND_EVENTS_MAX);
    let joined = serde_json::json!({
        "member": member.id(),
        "group": member.group(),
        "generation": member.generation(),
        "max_in_flight": max_in_flight,
    });
    tx.try_send(Ok(SseEvent::default().event("joined").data(joined.to_string()))).expect("a new channel has room");
    // The generated id is reserved, so that no gRPC stream can join under it.
    let claim = h.app.members.claim(member.group(), member.id());
    h.live.insert(member.clone());
    let third = (Duration::from_millis(session_timeout_ms) / 3).max(Duration::from_millis(1));
    let session = Session {
        member,
        tx,
        live: h.live.clone(),
        shutdown: h.app.shutdown.clone(),
        poll_wait: third.min(POLL_WAIT_MAX),
        heartbeat: third.min(POLL_WAIT_MAX),
        _claim: claim,
        _quota: quota,
        caller: caller.0.clone(),
        guard: h.app.guard.clone(),
    };
    tokio::spawn(session.run(permit));
    Ok(sse_response(rx, false))
}

/// A place under `max_subscriptions` for a stream (a subscription, a live tail, a Console
/// stream), refused at once when none is free.
pub(super) fn stream_permit(h: &Http) -> Result<OwnedSemaphorePermit, ApiError> {
    h.app.subscriptions.clone().try_acquire_owned().map_err(|_| {
        let max = h.app.config.max_subscriptions;
        ApiError::new(
            Code::LimitExceeded,
            format!(
                "the server has {max} streams open (subscriptions over SSE and gRPC, live tails and Console \
                 streams together), its limit (max_subscriptions): close one, or raise max_subscriptions"
            ),
        )
    })
}

/// The answer of an SSE stream (a subscription, a live tail, a Console stream): events from `rx`,
/// a comment every [`KEEP_ALIVE`], not cached, not buffered by proxies (nginx). `close`: the
/// connection is not kept for another request afterwards — for streams a browser opens: one that
/// leaves the page otherwise keeps the socket to drain an endless body, and six such sockets
/// (its HTTP/1.1 limit per server) stall the next page.
pub(super) fn sse_response(rx: mpsc::Receiver<Result<SseEvent, Infallible>>, close: bool) -> Response {
    let mut res = Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response();
    let headers = res.headers_mut();
    headers.insert(axum::http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if close {
        headers.insert(axum::http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    res
}

type Outbound = mpsc::Sender<Result<SseEvent, Infallible>>;

struct Session {
    member: Arc<Member>,
    tx: Outbound,
    live: Arc<Live>,
    shutdown: CancellationToken,
    poll_wait: Duration,
    heartbeat: Duration,
    /// The member id's reservation, released after the member (declared after it).
    _claim: Option<crate::MemberClaim>,
    /// The stream's place under its principal's subscription quota.
    _quota: crate::auth::quotas::SubscriptionSlot,
    /// Who opened the stream: its token is checked again on every poll (at most 200 ms apart).
    caller: crate::auth::Principal,
    guard: Arc<crate::auth::Guard>,
}

/// Why a session ends: an error for the client, or `None` when nobody is listening any more.
type End = Option<ApiError>;

impl Session {
    async fn run(self, permit: OwnedSemaphorePermit) {
        let group = self.member.group().to_owned();
        let member = self.member.id().to_owned();
        tracing::info!(%group, %member, "sse subscriber joined");
        let gauge = metrics::gauge!("herald_server_subscriptions", "api" => "sse");
        gauge.increment(1.0);
        let end = self.serve().await;
        match &end {
            Some(e) => {
                tracing::info!(%group, %member, code = %e.code, reason = %e.message, "sse subscriber ended");
                let _ = self.tx.try_send(Ok(SseEvent::default().event("end").data(e.to_json())));
            }
            None => tracing::info!(%group, %member, "sse subscriber left"),
        }
        gauge.decrement(1.0);
        self.live.remove(&group, &member);
        // Dropping the last handle of the member leaves the group (an acks request still using it
        // finishes first); the permit goes back last.
        drop(self);
        drop(permit);
    }

    async fn serve(&self) -> End {
        loop {
            if let Err(d) = self.guard.still_valid(&self.caller) {
                return Some(d.into());
            }
            let polled = tokio::select! {
                () = self.shutdown.cancelled() => return Some(ApiError::shutting_down()),
                () = self.tx.closed() => return None,
                r = self.member.poll(POLL_EVENTS_MAX, self.poll_wait) => r,
            };
            match polled {
                Ok(deliveries) => {
                    if !deliveries.is_empty() {
                        metrics::counter!("herald_server_delivered_events_total", "api" => "sse")
                            .increment(deliveries.len() as u64);
                    }
                    for d in &deliveries {
                        if let Err(end) = self.send(SseEvent::default().event("delivery").data(delivery_json(d))).await
                        {
                            return end;
                        }
                    }
                }
                // Reported once; the group goes on from the earliest stored event.
                Err(e @ BrokerError::RetentionOvertook { .. }) => {
                    let warning = SseEvent::default().event("warning").data(ApiError::from(e).to_json());
                    if let Err(end) = self.send(warning).await {
                        return end;
                    }
                }
                Err(e) => return Some(e.into()),
            }
        }
    }

    /// Queues one event, waiting while the client reads slowly (heartbeating the member
    /// meanwhile, so that a slow reader keeps its session) but not past a shutdown.
    async fn send(&self, event: SseEvent) -> Result<(), End> {
        let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + self.heartbeat, self.heartbeat);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let sending = self.tx.send(Ok(event));
        tokio::pin!(sending);
        loop {
            tokio::select! {
                r = &mut sending => return r.map_err(|_| None),
                () = self.shutdown.cancelled() => return Err(Some(ApiError::shutting_down())),
                _ = beat.tick() => {
                    if let Err(e) = self.member.heartbeat() {
                        return Err(Some(e.into()));
                    }
                }
            }
        }
    }
}

#[derive(Serialize)]
struct DeliveryJson<'a> {
    delivery: String,
    topic: &'a str,
    partition: u32,
    offset: u64,
    attempt: u32,
    generation: u64,
    append_time_ms: i64,
    event: Box<RawValue>,
}

fn delivery_json(d: &Delivery) -> String {
    let body = DeliveryJson {
        delivery: token(&d.id()),
        topic: &d.stored.topic,
        partition: d.stored.partition,
        offset: d.stored.offset,
        attempt: d.attempt,
        generation: d.generation,
        append_time_ms: d.stored.append_time_ms,
        event: event_json(d.event()),
    };
    serde_json::to_string(&body).unwrap_or_default()
}

/// `topic:partition:offset:generation:attempt`.
pub(crate) fn token(id: &DeliveryId) -> String {
    format!("{}:{}:{}:{}:{}", id.topic, id.partition, id.offset, id.generation, id.attempt)
}

/// Reads a token back; `None` when it is not one.
pub(crate) fn parse_token(t: &str) -> Option<DeliveryId> {
    let mut it = t.rsplitn(5, ':');
    let attempt = it.next()?.parse().ok()?;
    let generation = it.next()?.parse().ok()?;
    let offset = it.next()?.parse().ok()?;
    let partition = it.next()?.parse().ok()?;
    let topic = it.next().filter(|t| !t.is_empty())?;
    Some(DeliveryId { topic: topic.into(), partition, offset, generation, attempt })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AcksRequest {
    member: String,
    acks: Vec<AckEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckEntry {
    delivery: String,
    action: Action,
    delay_ms: Option<u64>,
    reason: Option<String>,
    /// How long the handler ran, in microseconds (kept in the event's history).
    handler_us: Option<u64>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Action {
    Ack,
    Nack,
    Reject,
}

#[derive(Serialize)]
struct AckResult {
    delivery: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

#[derive(Serialize)]
pub(super) struct AcksJson {
    results: Vec<AckResult>,
}

/// `POST /v1/groups/{group}/acks`: settles deliveries of a live SSE member; one result per
/// entry, in order (a failed entry does not stop the others).
pub(super) async fn acks(
    State(h): State<Http>,
    caller: Caller,
    Seg(group): Seg,
    q: Params,
    JsonBody(req): JsonBody<AcksRequest>,
) -> Result<Json<AcksJson>, ApiError> {
    caller.may(Access::Consume, Resource::Group(&group))?;
    q.only(&[])?;
    let max = h.app.config.max_batch_events;
    if req.acks.len() > max {
        return Err(ApiError::new(
            Code::RequestTooLarge,
            format!(
                "{} acks in one request; the limit is {max} (max_batch_events): send them in several requests",
                req.acks.len()
            ),
        ));
    }
    let member = h.live.get(&group, &req.member).ok_or_else(|| {
        ApiError::new(
            Code::UnknownMember,
            format!(
                "member {:?} has no open subscription to group {group:?} on this server (it disconnected, or the id \
                 is wrong): subscribe again and settle what the new stream delivers",
                req.member
            ),
        )
    })?;
    let mut results = Vec::with_capacity(req.acks.len());
    for entry in req.acks {
        let r = settle(&member, &entry).await;
        let kind = match entry.action {
            Action::Ack => "ack",
            Action::Nack => "nack",
            Action::Reject => "reject",
        };
        let code = r.as_ref().err().map_or("ok", |e| e.code.as_str());
        metrics::counter!("herald_server_settled_events_total", "api" => "http", "kind" => kind, "code" => code)
            .increment(1);
        results.push(match r {
            Ok(()) => AckResult { delivery: entry.delivery, ok: true, code: None, message: None },
            Err(e) => {
                AckResult { delivery: entry.delivery, ok: false, code: Some(e.code.as_str()), message: Some(e.message) }
            }
        });
    }
    Ok(Json(AcksJson { results }))
}

async fn settle(member: &Member, entry: &AckEntry) -> Result<(), ApiError> {
    let id = parse_token(&entry.delivery).ok_or_else(|| {
        ApiError::invalid(format!(
            "{:?} is not a delivery token; echo the \"delivery\" field of the SSE delivery event",
            herald_proto::truncate_utf8(&entry.delivery, 128)
        ))
    })?;
    let reason = herald_proto::truncate_utf8(entry.reason.as_deref().unwrap_or_default(), REASON_BYTES_MAX);
    let handled = entry.handler_us.map(Duration::from_micros);
    let r = match entry.action {
        Action::Ack | Action::Reject if entry.delay_ms.is_some() => {
            return Err(ApiError::invalid("delay_ms applies to nack only; drop it"));
        }
        Action::Ack => member.ack_id(&id, handled),
        Action::Nack => member.nack_id(&id, entry.delay_ms.map(Duration::from_millis), reason, handled),
        Action::Reject => member.reject_id(&id, reason, handled).await,
    };
    if let (Ok(()), Some(d)) = (&r, handled) {
        let kind = match entry.action {
            Action::Ack => "ack",
            Action::Nack => "nack",
            Action::Reject => "reject",
        };
        crate::metrics::handler_duration("http", kind, d);
    }
    r.map_err(ApiError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_garbage() {
        let id = DeliveryId { topic: "g.replay".into(), partition: 3, offset: 1042, generation: 7, attempt: 2 };
        assert_eq!(token(&id), "g.replay:3:1042:7:2");
        assert_eq!(parse_token(&token(&id)), Some(id));
        for bad in ["", "x", ":1:2:3:4", "t:1:2:3", "t:1:2:3:x", "t:-1:2:3:4", "t:1:2:3:4:"] {
            assert_eq!(parse_token(bad), None, "{bad:?}");
        }
    }
}
