//! HTTP/JSON: the CloudEvents HTTP binding, SSE subscriptions, admin, metrics and health.
//!
//! Where the pieces are:
//! - this file: [`router`] (every route, the concurrent-request limit, the request counter),
//!   `/healthz`, `/readyz` and `/metrics` (the recorder's text plus gauges computed at scrape);
//! - `error.rs`: `ApiError`, the `{"code": …, "message": …}` body and the status of each code;
//! - `extract.rs`: reading requests under the limits: bodies (`max_request_bytes`, a declared
//!   `Content-Length` checked before reading, a read timeout), JSON bodies, query strings and
//!   path segments, every failure an `ApiError`;
//! - `events.rs`: `POST /v1/topics/{topic}/events` (binary, structured and batch modes) and
//!   `GET /v1/topics/{topic}/events` (browse);
//! - `subscribe.rs`: `GET /v1/groups/{group}/subscribe` (Server-Sent Events: one connection is one
//!   group member), the registry of live members, and `POST /v1/groups/{group}/acks`;
//! - `admin.rs`: topics, groups, resets and dead letters;
//! - `asyncapi.rs`: `GET /v1/asyncapi.json`, an AsyncAPI 3.0 document of the live system;
//! - `schemas.rs`: schemas per topic and event type, their compatibility checks and the policy;
//! - `tail.rs`: `GET /v1/topics/{topic}/tail` (SSE: a live tail, filtered by the server);
//! - `console.rs`: the Console's files at `/` and `/console/…`, and its overview, stream and
//!   lag-chart answers under `/v1/console/`.
//!
//! Every error is JSON: `{"code": "topic_not_found", "message": "…"}`, with the HTTP status of
//! its code (`herald_model::Code::http_status`: 400 bad input or a limit, 404 unknown, 409
//! conflict, 413 too large, 415 media type, 416 offsets, 503 busy or shutting down).
//!
//! Limits, each refused at once: a body over `max_request_bytes` (or declaring it) is 413
//! `limit_exceeded`, as is a batch over `max_batch_events` (and an acks request over it); an
//! event over `max_event_bytes` is 413 `event_too_large`; a browse or DLQ listing asking for more
//! than `max_read_events` is 400 `limit_exceeded`; a subscription beyond `max_subscriptions` is
//! 429 `limit_exceeded`; a request beyond `max_http_requests` in flight is 503 `busy` (health
//! probes are not counted); a body that does not arrive within 60 s is 408.

use herald_model::Code;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use herald_broker::{Broker, BrokerError};
use tokio::sync::Semaphore;

use crate::AppState;
use crate::auth::{Action, Principal, Resource};

mod admin;
pub(crate) mod asyncapi;
mod console;
mod error;
mod events;
mod extract;
mod schemas;
mod subscribe;
mod tail;

pub(crate) use error::ApiError;

/// What the handlers share: the server's state, the request permits and the live SSE members.
#[derive(Clone)]
pub(crate) struct Http {
    app: Arc<AppState>,
    /// Requests being handled, bounded by `max_http_requests` (health checks do not count).
    requests: Arc<Semaphore>,
    /// Members of open SSE subscriptions, for `POST …/acks`.
    live: Arc<subscribe::Live>,
    /// The figures the Console shows, sampled once a second (`None` with `console = false`).
    stats: Option<Arc<crate::stats::Stats>>,
}

/// The HTTP API and the Console. Must be called inside a Tokio runtime: with `console = true`
/// it starts the Console's sampler (stopped with the server's shutdown token).
pub fn router(state: Arc<AppState>) -> Router {
    let stats = state.config.console.then(|| crate::stats::Stats::start(state.broker.clone(), state.shutdown.clone()));
    let h = Http {
        requests: Arc::new(Semaphore::new(state.config.max_http_requests)),
        live: Arc::new(subscribe::Live::default()),
        stats,
        app: state,
    };
    let body_limit = h.app.config.max_request_bytes;
    let api = Router::new()
        .route("/v1/topics", post(admin::create_topic).get(admin::list_topics))
        .route("/v1/topics/{topic}", get(admin::describe_topic).delete(admin::delete_topic))
        .route("/v1/topics/{topic}/events", post(events::publish).get(events::read))
        .route("/v1/topics/{topic}/events/{offset}/history", get(events::history))
        .route("/v1/topics/{topic}/history", get(events::history_by_id))
        .route("/v1/topics/{topic}/tail", get(tail::tail))
        .route("/v1/topics/{topic}/schemas", get(schemas::list).post(schemas::register))
        .route("/v1/topics/{topic}/schemas/check", post(schemas::check))
        .route("/v1/topics/{topic}/schemas/{ty}", get(schemas::latest).delete(schemas::delete))
        .route("/v1/topics/{topic}/schemas/{ty}/versions/{version}", get(schemas::version))
        .route("/v1/topics/{topic}/schemas/{ty}/versions/{version}/text", get(schemas::version_text))
        .route("/v1/topics/{topic}/schema-policy", get(schemas::policy).put(schemas::set_policy))
        .route("/v1/groups", get(admin::list_groups))
        .route("/v1/groups/{group}", get(admin::describe_group))
        .route("/v1/groups/{group}/reset", post(admin::reset_group))
        .route("/v1/groups/{group}/skip-damaged", post(admin::skip_damaged))
        .route("/v1/groups/{group}/subscribe", get(subscribe::subscribe))
        .route("/v1/groups/{group}/acks", post(subscribe::acks))
        .route("/v1/groups/{group}/dlq", get(admin::dlq_list).delete(admin::dlq_purge))
        .route("/v1/groups/{group}/dlq/replay", post(admin::dlq_replay))
        .route("/v1/groups/{group}/dlq/reasons", get(admin::dlq_reasons))
        .route("/v1/whoami", get(whoami))
        .route("/v1/asyncapi.json", get(asyncapi::document))
        .route("/v1/console/session", get(console::session))
        .route("/v1/console/overview", get(console::overview))
        .route("/v1/console/stream", get(console::stream))
        .route("/v1/console/groups/{group}/lag", get(console::lag))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(h.clone(), limit_requests));
    Router::new()
        // Probes stay outside the request limit: a loaded server is alive, not dead.
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        // The Console's files hold no data: served to anyone who reaches the port.
        .route("/", get(console::index))
        .route("/console/{file}", get(console::file))
        .merge(api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(h.clone(), authenticate))
        .layer(middleware::from_fn(count_requests))
        // Bodies are read by `extract::read_body` under the same limit; this one covers any
        // extractor of axum's own.
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(h)
}

/// The source address of a request's connection (each connection's service puts it in).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub std::net::SocketAddr);

/// Who sent the request, as [`authenticate`] found; a handler takes it and checks what it asks
/// for with [`Principal::check`] before anything else.
pub(crate) struct Caller(pub Principal);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Caller, ApiError> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .map(Caller)
            .ok_or_else(|| ApiError::internal("the request was not authenticated (a route outside the auth layer)"))
    }
}

impl<S: Send + Sync> axum::extract::OptionalFromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Option<Caller>, std::convert::Infallible> {
        Ok(parts.extensions.get::<Principal>().cloned().map(Caller))
    }
}

impl Caller {
    /// `Ok` when the caller may do `action` to `resource`.
    pub(crate) fn may(&self, action: Action, resource: Resource<'_>) -> Result<(), ApiError> {
        self.0.check(action, resource).map_err(ApiError::from)
    }
}

/// Every request: the Host/Origin check (a loopback server answers only for itself), then who
/// is calling. The probes answer without credentials; `/readyz` then leaves out its details.
async fn authenticate(State(h): State<Http>, req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<Peer>().map(|p| p.0.ip());
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let mut principal = None;
    let res = authenticated(&h, req, next, &mut principal).await;
    audit(&h, &method, &path, principal.as_ref(), peer, &res);
    res
}

/// What is audited over HTTP: admin and dead-letter actions, whatever their outcome, and every
/// request refused for who sent it.
fn audit(
    h: &Http,
    method: &Method,
    path: &str,
    principal: Option<&Principal>,
    peer: Option<std::net::IpAddr>,
    res: &Response,
) {
    let code = res.extensions().get::<error::AnsweredCode>().map(|c| c.0);
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let action = match (method, segments.as_slice()) {
        (&Method::POST, ["v1", "topics"]) => Some("create_topic"),
        (&Method::DELETE, ["v1", "topics", _]) => Some("delete_topic"),
        (&Method::POST, ["v1", "topics", _, "schemas"]) => Some("register_schema"),
        (&Method::DELETE, ["v1", "topics", _, "schemas", _]) => Some("delete_schema"),
        (&Method::PUT, ["v1", "topics", _, "schema-policy"]) => Some("set_schema_policy"),
        (&Method::POST, ["v1", "groups", _, "reset"]) => Some("reset_group"),
        (&Method::POST, ["v1", "groups", _, "skip-damaged"]) => Some("skip_damaged"),
        (&Method::GET, ["v1", "groups", _, "dlq"]) => Some("dlq_list"),
        (&Method::DELETE, ["v1", "groups", _, "dlq"]) => Some("dlq_purge"),
        (&Method::POST, ["v1", "groups", _, "dlq", "replay"]) => Some("dlq_replay"),
        (&Method::GET, ["v1", "groups", _, "dlq", "reasons"]) => Some("dlq_reasons"),
        _ => None,
    };
    let refused = matches!(code, Some(Code::Unauthenticated | Code::PermissionDenied));
    if action.is_none() && !refused {
        return;
    }
    // Decoded as the handlers saw them: `%6Frders` is recorded as `orders`.
    let target = match (res.extensions().get::<AuditTarget>(), segments.as_slice()) {
        (Some(t), _) => t.0.clone(),
        (None, ["v1", "topics", t, ..]) => format!("topic/{}", percent_decoded(t)),
        (None, ["v1", "groups", g, ..]) => format!("group/{}", percent_decoded(g)),
        _ => path.to_owned(),
    };
    let action = action.map_or_else(|| format!("{method} {path}"), str::to_owned);
    let name = principal.map_or("-", |p| &p.name);
    h.app.audit.record(name, peer, "http", &action, &target, code.map_or("ok", Code::as_str));
}

/// `%XX` escapes decoded (invalid UTF-8 replaced).
fn percent_decoded(segment: &str) -> String {
    let b = segment.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a handler tells the audit it acted on, when the path does not say (a topic created).
#[derive(Clone)]
pub(crate) struct AuditTarget(pub String);

async fn authenticated(h: &Http, mut req: Request, next: Next, principal: &mut Option<Principal>) -> Response {
    let headers = req.headers();
    // HTTP/2 carries the host in the request's authority, not a Host header.
    let authority = req.uri().authority().map(|a| a.as_str().as_bytes());
    let host = headers.get(header::HOST).map(|v| v.as_bytes()).or(authority);
    if let Err(d) = h.app.guard.check_host(host, headers.get(header::ORIGIN).map(|v| v.as_bytes())) {
        return ApiError::from(d).into_response();
    }
    let authorization = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    let path = req.uri().path();
    if path == "/" || path.starts_with("/console/") {
        return next.run(req).await;
    }
    // The Console asks who it is before anything else: answered 200 either way (a browser logs
    // every 401 as an error), with the principal only when the credentials are good.
    if path == "/v1/console/session" {
        let peer = req.extensions().get::<Peer>().map(|p| p.0.ip());
        match h.app.guard.authenticate(authorization, peer) {
            Ok(p) => {
                *principal = Some(p.clone());
                req.extensions_mut().insert(p);
            }
            Err(d) => {
                req.extensions_mut().insert(console::Refused(ApiError::from(d)));
            }
        }
        return next.run(req).await;
    }
    let probe = matches!(path, "/healthz" | "/readyz");
    if probe && authorization.is_none() {
        if h.app.guard.mode() == crate::auth::AuthMode::None {
            req.extensions_mut().insert(Principal::anonymous());
        }
        return next.run(req).await;
    }
    let peer = req.extensions().get::<Peer>().map(|p| p.0.ip());
    let cell = req.extensions().get::<Arc<crate::auth::quotas::ConnectionCell>>().cloned();
    let authenticated = h.app.guard.authenticate(authorization, peer).and_then(|p| match &cell {
        Some(c) => h.app.guard.meter.connection(&p, c).map(|()| p),
        None => Ok(p),
    });
    match authenticated {
        Ok(p) => {
            *principal = Some(p.clone());
            req.extensions_mut().insert(p);
        }
        Err(d) => return ApiError::from(d).into_response(),
    }
    next.run(req).await
}

/// `GET /v1/whoami`: the caller and its permissions.
async fn whoami(caller: Caller) -> Response {
    let p = caller.0;
    axum::Json(serde_json::json!({
        "principal": &*p.name,
        "anonymous": p.anonymous,
        "permissions": p.permissions().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "expires_ms": p.expires_ms,
    }))
    .into_response()
}

/// Refuses a request at once when `max_http_requests` are being handled. The permit is held
/// until the handler returns its response: an SSE stream counts against `max_subscriptions`
/// instead.
async fn limit_requests(State(h): State<Http>, req: Request, next: Next) -> Response {
    let Ok(_permit) = h.requests.clone().try_acquire_owned() else {
        let max = h.app.config.max_http_requests;
        return ApiError::new(
            Code::Busy,
            format!(
                "the server is handling {max} HTTP requests, its limit (max_http_requests); retry with backoff, or \
                 raise max_http_requests"
            ),
        )
        .into_response();
    };
    next.run(req).await
}

/// Counts requests as the gRPC services do (`api`, `method`, `code`): the method is the verb and
/// route template (never the raw path, so labels stay bounded), the code `ok` or the error's.
async fn count_requests(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let verb = match *req.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        Method::HEAD => "HEAD",
        _ => "other",
    };
    let res = next.run(req).await;
    let code = res.extensions().get::<error::AnsweredCode>().map_or("ok", |c| c.0.as_str());
    metrics::counter!("herald_server_requests_total", "api" => "http", "method" => format!("{verb} {route}"), "code" => code)
        .increment(1);
    res
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        Code::NotFound,
        format!("no route {} {}; the API lives under /v1/topics and /v1/groups", req.method(), req.uri().path()),
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(Code::MethodNotAllowed, format!("{} is not allowed on {}", req.method(), req.uri().path()))
}

/// 200 while the process runs.
async fn healthz() -> Response {
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// 200 while serving (`"degraded"` with what is damaged and not served, and the partitions that
/// accept no appends — `fenced`, with why — while the rest serves); 503 once shutdown began.
async fn readyz(State(h): State<Http>, caller: Option<Caller>) -> Response {
    if h.app.shutdown.is_cancelled() {
        return ApiError::shutting_down().into_response();
    }
    // Names of damaged topics and groups are for those who administer the server.
    let details = caller.is_some_and(|c| c.0.allows(Action::Admin, Resource::Server));
    axum::Json(readiness(&h.app.broker, details)).into_response()
}

/// `{"status": "ready" | "degraded"}`, with the `damaged` and `fenced` lists when `details`.
pub(crate) fn readiness(broker: &Broker, details: bool) -> serde_json::Value {
    let damage: Vec<serde_json::Value> = broker
        .damage()
        .into_iter()
        .map(|d| serde_json::json!({ "kind": d.kind, "name": d.name, "problem": d.problem, "served": !d.not_served }))
        .collect();
    let fenced: Vec<serde_json::Value> = broker
        .fenced()
        .into_iter()
        .map(|f| {
            serde_json::json!({
                "kind": f.kind,
                "name": f.name,
                "reason": f.reason,
                "storage_full": f.storage_full,
            })
        })
        .collect();
    let status = if damage.is_empty() && fenced.is_empty() { "ready" } else { "degraded" };
    if !details {
        return serde_json::json!({ "status": status });
    }
    serde_json::json!({ "status": status, "damaged": damage, "fenced": fenced })
}

/// Prometheus text: what the process recorded, then gauges read from the broker now (so that a
/// deleted topic or group disappears from the next scrape).
async fn metrics(State(h): State<Http>, caller: Caller) -> Result<Response, ApiError> {
    caller.may(Action::Admin, Resource::Server)?;
    let mut text = h.app.metrics.render();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    let gauges = blocking(&h, |b| Ok(broker_gauges(b))).await?;
    text.push_str(&gauges);
    family(
        &mut text,
        "herald_server_connections",
        "Open connections, HTTP and gRPC (max_connections plus the reserve).",
    );
    let _ = writeln!(text, "herald_server_connections {}", h.app.gate.open());
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}

/// Topic and group figures in the Prometheus text format.
fn broker_gauges(broker: &Broker) -> String {
    let topics = broker.list_topics();
    let groups = broker.list_groups();
    let mut out = String::new();
    family(&mut out, "herald_topics", "Topics on this server (DLQ and replay topics included).");
    let _ = writeln!(out, "herald_topics {}", topics.len());
    family(&mut out, "herald_groups", "Consumer groups on this server.");
    let _ = writeln!(out, "herald_groups {}", groups.len());

    let infos: Vec<_> = topics.iter().filter_map(|t| broker.describe_topic(t).ok()).collect();
    family(&mut out, "herald_topic_latest_offset", "Offset the next event of the partition will get.");
    for t in &infos {
        for p in &t.partitions {
            let _ = writeln!(
                out,
                "herald_topic_latest_offset{{topic=\"{}\",partition=\"{}\"}} {}",
                escape(&t.name),
                p.partition,
                p.latest_offset
            );
        }
    }
    family(&mut out, "herald_topic_earliest_offset", "Earliest offset of the partition still stored.");
    for t in &infos {
        for p in &t.partitions {
            let _ = writeln!(
                out,
                "herald_topic_earliest_offset{{topic=\"{}\",partition=\"{}\"}} {}",
                escape(&t.name),
                p.partition,
                p.earliest_offset
            );
        }
    }

    family(
        &mut out,
        "herald_fenced",
        "Partitions and group state logs that accept no appends after a write failure (a full disk recovers by itself).",
    );
    let _ = writeln!(out, "herald_fenced {}", broker.fenced().len());
    family(&mut out, "herald_damaged", "Topics, groups and partitions found damaged and not (fully) served.");
    let _ = writeln!(out, "herald_damaged {}", broker.damage().len());

    let infos: Vec<_> = groups.iter().filter_map(|g| broker.describe_group(g).ok()).collect();
    family(&mut out, "herald_group_dead_letters", "Dead letters the group holds (listed, not yet replayed or purged).");
    for g in &groups {
        let _ = writeln!(out, "herald_group_dead_letters{{group=\"{}\"}} {}", escape(g), broker.dlq_held(g));
    }
    let _ = writeln!(
        out,
        "# HELP herald_history_dropped_total Event history records dropped because a group's history could not be written fast enough."
    );
    let _ = writeln!(out, "# TYPE herald_history_dropped_total counter");
    let _ = writeln!(out, "herald_history_dropped_total {}", broker.history_dropped());
    family(&mut out, "herald_group_members", "Members of the consumer group.");
    for g in &infos {
        let _ = writeln!(out, "herald_group_members{{group=\"{}\"}} {}", escape(&g.name), g.members.len());
    }
    family(
        &mut out,
        "herald_group_lag",
        "Events of the partition the group has not acked or dead-lettered yet (latest - committed).",
    );
    for g in &infos {
        for p in &g.partitions {
            let _ = writeln!(
                out,
                "herald_group_lag{{group=\"{}\",topic=\"{}\",partition=\"{}\"}} {}",
                escape(&g.name),
                escape(&p.topic),
                p.partition,
                p.lag
            );
        }
    }
    family(&mut out, "herald_group_committed_offset", "First offset of the partition the group has not settled.");
    for g in &infos {
        for p in &g.partitions {
            let _ = writeln!(
                out,
                "herald_group_committed_offset{{group=\"{}\",topic=\"{}\",partition=\"{}\"}} {}",
                escape(&g.name),
                escape(&p.topic),
                p.partition,
                p.committed
            );
        }
    }
    out
}

fn family(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
}

/// A Prometheus label value. Topic and group names cannot hold these characters today; this
/// keeps the output well formed if that ever changes.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Runs a broker call that may touch the disk (fsync, reads, directory listings) off the async
/// workers.
async fn blocking<T, F>(h: &Http, f: F) -> Result<T, ApiError>
where
    F: FnOnce(&Broker) -> Result<T, BrokerError> + Send + 'static,
    T: Send + 'static,
{
    let broker = h.app.broker.clone();
    match tokio::task::spawn_blocking(move || f(&broker)).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => Err(ApiError::internal(format!("broker call failed: {e}"))),
    }
}
