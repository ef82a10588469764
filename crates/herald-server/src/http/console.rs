//! The Console: the web UI's files, and the few answers made for it.
//!
//! - `GET /` and `GET /console/{file}`: the files of `crates/herald-server/console` (plain ES
//!   modules, no build step), embedded in the binary, served without credentials (they hold no
//!   data; the UI asks for a token when the API answers 401) under a strict
//!   Content-Security-Policy: no inline script or style, nothing from another origin;
//! - `GET /v1/console/session`: who the caller is, or why its token was refused (always 200);
//! - `GET /v1/console/overview`: what the caller may see, in one answer: every topic and group
//!   with its figures and rates and the actions the caller may take on it (the UI shows no
//!   control the server would refuse), the totals and readiness;
//! - `GET /v1/console/stream`: Server-Sent Events, one `tick` a second from the sampler
//!   ([`crate::stats`]): totals, status and per topic and group figures (counted against
//!   `max_subscriptions`, the token checked again on each tick);
//! - `GET /v1/console/groups/{g}/lag`: the group's total lag over the last 15 minutes.
//!
//! With `console = false` none of these are served (404), and nothing is sampled.

use std::convert::Infallible;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use herald_model::Code;
use include_dir::{Dir, include_dir};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::extract::{Params, Seg};
use super::{ApiError, Caller, Http, blocking};
use crate::auth::{Action, Resource};

static ASSETS: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/console");

/// What the Console's pages may load and run: only this server's own files.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; \
                   frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Ticks a stream may fall behind by before the oldest are dropped (a viewer that does not read).
const STREAM_BUFFER: usize = 4;

fn off() -> ApiError {
    ApiError::new(Code::NotFound, "the Console is off on this server (console = false)")
}

/// `GET /`.
pub(super) async fn index(State(h): State<Http>) -> Response {
    asset(&h, "index.html")
}

/// `GET /console/{file}`.
pub(super) async fn file(State(h): State<Http>, Path(name): Path<String>) -> Response {
    asset(&h, &name)
}

fn asset(h: &Http, name: &str) -> Response {
    if !h.app.config.console {
        return off().into_response();
    }
    // The directory is flat: a name with a separator names nothing in it.
    let Some(f) = (!name.contains(['/', '\\'])).then(|| ASSETS.get_file(name)).flatten() else {
        return ApiError::new(Code::NotFound, format!("the Console has no file {name:?}")).into_response();
    };
    let kind = match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    };
    let mut res = (StatusCode::OK, f.contents()).into_response();
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // The files change with the binary: revalidate (cheap on the loopback) rather than serve stale code.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

/// Why `/v1/console/session` found no principal (put there by the auth layer).
#[derive(Clone)]
pub(crate) struct Refused(pub ApiError);

/// `GET /v1/console/session`: who the caller is, or why not — always 200, so that a login page
/// and a bad token make no error in the browser's console. `{"auth": "none" | "token",
/// "principal": {"name", "anonymous", "expires_ms"} | null, "error": {"code", "message"} | null}`.
pub(super) async fn session(
    State(h): State<Http>,
    caller: Option<Caller>,
    refused: Option<axum::Extension<Refused>>,
) -> Response {
    if !h.app.config.console {
        return off().into_response();
    }
    let auth = match h.app.guard.mode() {
        crate::auth::AuthMode::None => "none",
        crate::auth::AuthMode::Token => "token",
    };
    let principal =
        caller.map(|c| json!({ "name": &*c.0.name, "anonymous": c.0.anonymous, "expires_ms": c.0.expires_ms }));
    let error = refused.map(|r| json!({ "code": r.0.0.code.as_str(), "message": r.0.0.message }));
    Json(json!({ "auth": auth, "principal": principal, "error": error })).into_response()
}

/// Whether `topic` is the server's own: a group's (`<g>.dlq`, `<g>.replay`; `groups` sorted) or
/// the audit trail. The Console and the AsyncAPI document leave these out.
pub(crate) fn internal(topic: &str, groups: &[String]) -> bool {
    topic == crate::audit::AUDIT_TOPIC
        || herald_model::dead_letter::dead_letter_group(topic)
            .is_some_and(|g| groups.binary_search_by(|x| x.as_str().cmp(g)).is_ok())
}

/// The Console's totals: what the overview and every tick sum the same way (internal topics
/// count toward nothing).
#[derive(Default)]
struct Totals {
    topics: usize,
    groups: usize,
    in_per_s: f64,
    out_per_s: f64,
    lag: u64,
    dead_letters: u64,
}

impl Totals {
    fn topic(&mut self, internal: bool, in_per_s: f64) {
        if !internal {
            self.topics += 1;
            self.in_per_s += in_per_s;
        }
    }

    fn group(&mut self, lag: u64, dead_letters: u64, out_per_s: f64) {
        self.groups += 1;
        self.lag += lag;
        self.dead_letters += dead_letters;
        self.out_per_s += out_per_s;
    }

    fn json(&self) -> Value {
        json!({
            "topics": self.topics,
            "groups": self.groups,
            "events_in_per_s": self.in_per_s,
            "events_out_per_s": self.out_per_s,
            "lag": self.lag,
            "dead_letters": self.dead_letters,
        })
    }
}

/// `GET /v1/console/overview`.
pub(super) async fn overview(State(h): State<Http>, caller: Caller, q: Params) -> Result<Json<Value>, ApiError> {
    q.only(&[])?;
    let stats = h.stats.clone().ok_or_else(off)?;
    let p = caller.0.clone();
    let body = blocking(&h, move |b| {
        let rates = stats.latest();
        let groups_all = b.list_groups();
        let mut topics = Vec::new();
        let mut totals = Totals::default();
        for name in b.list_topics() {
            if !p.sees(Resource::Topic(&name)) {
                continue;
            }
            let Ok(t) = b.describe_topic(&name) else { continue };
            let rate = rates.topics.get(&name).map_or(0.0, |s| s.in_per_s);
            let internal = internal(&name, &groups_all);
            totals.topic(internal, rate);
            topics.push(json!({
                "name": name,
                "partitions": t.partitions.len(),
                "events": t.partitions.iter().map(|p| p.latest_offset.saturating_sub(p.earliest_offset)).sum::<u64>(),
                "bytes": t.partitions.iter().map(|p| p.bytes).sum::<u64>(),
                "retention_ms": t.config.retention_ms,
                "retention_bytes": t.config.retention_bytes,
                "in_per_s": rate,
                "internal": internal,
                "problems": t.partitions.iter().filter(|p| p.problem.is_some()).count(),
                "may": p.actions_on(Resource::Topic(&name)),
            }));
        }
        let mut groups = Vec::new();
        for name in groups_all.iter().filter(|g| p.sees(Resource::Group(g))) {
            let Ok(g) = b.describe_group(name) else { continue };
            let group_lag: u64 = g.partitions.iter().map(|p| p.lag).sum();
            let held = b.dlq_held(name);
            let rate = rates.groups.get(name).map_or(0.0, |s| s.out_per_s);
            totals.group(group_lag, held, rate);
            groups.push(json!({
                "name": name,
                "members": g.members.len(),
                "lag": group_lag,
                "dead_letters": held,
                "out_per_s": rate,
                "may": p.actions_on(Resource::Group(name)),
            }));
        }
        let mut ready = super::readiness(b, p.allows(Action::Admin, Resource::Server));
        let status = ready["status"].take();
        let list = |v: &mut Value, k: &str| v.get_mut(k).map(Value::take).unwrap_or_else(|| json!([]));
        Ok(json!({
            "principal": { "name": &*p.name, "anonymous": p.anonymous },
            "may": { "create_topics": p.may_create_topics(), "server_admin": p.allows(Action::Admin, Resource::Server) },
            "status": status,
            "damaged": list(&mut ready, "damaged"),
            "fenced": list(&mut ready, "fenced"),
            "totals": totals.json(),
            "topics": topics,
            "groups": groups,
            "interval_ms": crate::stats::INTERVAL.as_millis() as u64,
        }))
    })
    .await?;
    Ok(Json(body))
}

/// `GET /v1/console/groups/{g}/lag`.
pub(super) async fn lag(
    State(h): State<Http>,
    caller: Caller,
    Seg(group): Seg,
    q: Params,
) -> Result<Response, ApiError> {
    q.only(&[])?;
    caller.0.check_any(Resource::Group(&group))?;
    let stats = h.stats.clone().ok_or_else(off)?;
    let g = group.clone();
    blocking(&h, move |b| b.describe_group(&g).map(drop)).await?;
    let points: Vec<[i64; 2]> = stats.lag(&group).into_iter().map(|(t, l)| [t, l as i64]).collect();
    Ok(Json(json!({ "interval_ms": crate::stats::LAG_EVERY.as_millis() as u64, "points": points })).into_response())
}

/// One tick as `caller` may see it.
fn tick(sample: &crate::stats::Sample, p: &crate::auth::Principal, status: Value) -> Value {
    let groups_all: Vec<String> = {
        let mut v: Vec<String> = sample.groups.keys().cloned().collect();
        v.sort();
        v
    };
    let mut totals = Totals::default();
    let mut topics = serde_json::Map::new();
    for (name, t) in &sample.topics {
        if !p.sees(Resource::Topic(name)) {
            continue;
        }
        totals.topic(internal(name, &groups_all), t.in_per_s);
        topics.insert(name.clone(), serde_json::to_value(t).unwrap_or(Value::Null));
    }
    let mut groups = serde_json::Map::new();
    for (name, g) in &sample.groups {
        if !p.sees(Resource::Group(name)) {
            continue;
        }
        totals.group(g.lag, g.dead_letters, g.out_per_s);
        groups.insert(name.clone(), serde_json::to_value(g).unwrap_or(Value::Null));
    }
    json!({
        "t_ms": sample.t_ms,
        "status": status,
        "totals": totals.json(),
        "topics": topics,
        "groups": groups,
    })
}

/// `GET /v1/console/stream`.
pub(super) async fn stream(State(h): State<Http>, caller: Caller, q: Params) -> Result<Response, ApiError> {
    q.only(&[])?;
    let stats = h.stats.clone().ok_or_else(off)?;
    if h.app.shutdown.is_cancelled() {
        return Err(ApiError::shutting_down());
    }
    let quota = h.app.guard.meter.subscribe(&caller.0)?;
    let permit = super::subscribe::stream_permit(&h)?;
    let (tx, rx) = mpsc::channel::<Result<SseEvent, Infallible>>(STREAM_BUFFER);
    let mut watch = stats.watch();
    // The first tick is the next sample: the current one may be older than what the caller just
    // read from the overview.
    watch.borrow_and_update();
    let (guard, shutdown, broker) = (h.app.guard.clone(), h.app.shutdown.clone(), h.app.broker.clone());
    let p = caller.0;
    tokio::spawn(async move {
        let _held = (quota, permit);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tx.closed() => return,
                changed = watch.changed() => if changed.is_err() { return },
            }
            if let Err(d) = guard.still_valid(&p) {
                let _ = tx.try_send(Ok(SseEvent::default().event("end").data(ApiError::from(d).to_json())));
                return;
            }
            let sample = watch.borrow_and_update().clone();
            let status = super::readiness(&broker, false)["status"].take();
            let data = tick(&sample, &p, status).to_string();
            // A viewer that does not read loses ticks, never holds the sampler.
            if let Err(mpsc::error::TrySendError::Closed(_)) =
                tx.try_send(Ok(SseEvent::default().event("tick").data(data)))
            {
                return;
            }
        }
    });
    Ok(super::subscribe::sse_response(rx, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_topics_are_a_group_s_dlq_and_replay_topics() {
        let groups = vec!["billing".to_owned(), "orders".to_owned()];
        assert!(internal("billing.dlq", &groups));
        assert!(internal("orders.replay", &groups));
        assert!(!internal("audit.dlq", &groups), "no group audit");
        assert!(!internal("orders", &groups));
        assert!(internal(crate::audit::AUDIT_TOPIC, &groups));
    }

    #[test]
    fn every_console_file_has_a_known_type_and_the_shell_loads_only_local_modules() {
        let index = ASSETS.get_file("index.html").expect("index.html").contents_utf8().unwrap();
        assert!(index.contains("/console/app.js"), "{index}");
        assert!(!index.contains("http://") && !index.contains("https://"), "nothing from another origin");
        for f in ASSETS.files() {
            let name = f.path().to_str().unwrap();
            assert!(
                [".html", ".js", ".css", ".svg"].iter().any(|e| name.ends_with(e)),
                "{name}: the Console directory holds only html, js, css and svg files"
            );
        }
        assert!(ASSETS.dirs().next().is_none(), "the Console directory is flat");
    }
}
