//! gRPC `herald.v1`: the `Events` and `Admin` services over the broker.
//!
//! Where the pieces are:
//! - this file: [`routes`] (both services with their message size limits), the blocking-call
//!   helper, response sizing ([`RESPONSE_BYTES_TARGET`]), and [`Coded`], which gives the statuses tonic makes itself (a message over
//!   `max_request_bytes`, bytes that are not protobuf) a `herald-code` like every other error;
//! - `events.rs`: `Publish` and `Read`, plus the `Events` trait impl that hands `Subscribe` on;
//! - `subscribe.rs`: one `Subscribe` stream, i.e. one group member: Join, then deliveries under
//!   the client's credit, settlements, heartbeats, and its end (client gone, error, shutdown);
//! - `admin.rs`: the `Admin` service (topics, groups, dead letters).
//!
//! Messages convert with `herald_proto` (`event_from_proto`, `group_config_from_proto`, …) and
//! every error leaves as `herald_proto::status` / `broker_status`: a gRPC status whose metadata
//! `herald-code` holds Herald's stable code.

use std::convert::Infallible;
use std::sync::Arc;

use herald_broker::{Broker, BrokerError};
use herald_model::Code;
use herald_proto::v1::admin_server::AdminServer;
use herald_proto::v1::events_server::EventsServer;
use herald_proto::{CODE_KEY, status};
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;

use crate::AppState;
use crate::auth::{Denied, Principal};

mod admin;
mod events;
mod subscribe;

/// Largest message the server sends: one stored event at the hard size limit plus room for its
/// envelope. Deliveries and listings are split or cut well below this (see
/// [`RESPONSE_BYTES_TARGET`]); only a single very large event comes near it.
pub const ENCODE_BYTES_MAX: usize = herald_core::Limits::EVENT_BYTES_HARD_MAX + (1 << 20);

/// Responses carrying many events (a `Deliveries` message, a `Read` answer, a DLQ listing) stop
/// growing before this many bytes; a single event larger than this still goes out alone. It stays
/// under the 4 MiB a gRPC client accepts by default, so clients need a higher limit only for
/// single events that large.
pub const RESPONSE_BYTES_TARGET: usize = (4 << 20) - (64 << 10);

/// Keeps the longest prefix of `items` whose encoding fits in [`RESPONSE_BYTES_TARGET`] (at
/// least one item), counting each as a length-delimited field of the enclosing message.
fn cut_to_size<T: prost::Message>(items: &mut Vec<T>) {
    let mut bytes = 0;
    let keep = items
        .iter()
        .position(|m| {
            bytes += field_len(m);
            bytes > RESPONSE_BYTES_TARGET
        })
        .map_or(items.len(), |i| i.max(1));
    items.truncate(keep);
}

/// Bytes `m` takes as a field of another message: tag, length, body.
fn field_len<T: prost::Message>(m: &T) -> usize {
    let len = m.encoded_len();
    1 + prost::length_delimiter_len(len) + len
}

/// The gRPC services, ready to serve.
pub fn routes(state: Arc<AppState>) -> tonic::service::Routes {
    let max_request_bytes = state.config.max_request_bytes;
    let events = EventsServer::new(events::EventsService { state: state.clone() })
        .max_decoding_message_size(max_request_bytes)
        .max_encoding_message_size(ENCODE_BYTES_MAX);
    let admin = AdminServer::new(admin::AdminService { state: state.clone() })
        .max_decoding_message_size(max_request_bytes)
        .max_encoding_message_size(ENCODE_BYTES_MAX);
    let coded = |state: &AppState| (state.guard.clone(), state.audit.clone());
    let (guard, audit) = coded(&state);
    tonic::service::Routes::new(Coded { inner: events, max_request_bytes, guard, audit }).add_service({
        let (guard, audit) = coded(&state);
        Coded { inner: admin, max_request_bytes, guard, audit }
    })
}

/// Who sent `request`: [`Coded`] authenticated it before any handler ran.
fn caller<T>(request: &tonic::Request<T>) -> Result<Principal, Status> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| status(Code::Internal, "the call was not authenticated (a service outside Coded)"))
}

/// Where `request` came from.
fn peer<T>(request: &tonic::Request<T>) -> Option<std::net::IpAddr> {
    request.extensions().get::<crate::conn::ConnInfo>().and_then(|c| c.remote).map(|a| a.ip())
}

/// A refusal as a status.
fn denied(d: Denied) -> Status {
    status(d.code, d.message)
}

/// Runs a broker call that may touch the disk (fsync, reads) off the async workers.
async fn blocking<T, F>(broker: &Broker, f: F) -> Result<T, Status>
where
    F: FnOnce(&Broker) -> Result<T, BrokerError> + Send + 'static,
    T: Send + 'static,
{
    let broker = broker.clone();
    match tokio::task::spawn_blocking(move || f(&broker)).await {
        Ok(r) => r.map_err(|e| broker_status(&e)),
        Err(e) => Err(status(Code::Internal, format!("broker call failed: {e}"))),
    }
}

/// A broker error as a status, with the server's code for it ([`crate::code_of`]).
pub(crate) fn broker_status(e: &BrokerError) -> Status {
    status(crate::code_of(e), e.to_string())
}

/// A status tonic produced itself (while decoding a request), given Herald's code and a message
/// that says what to do. Statuses that carry a code already pass unchanged.
fn wire_status(s: &Status, max_request_bytes: usize) -> Status {
    if s.metadata().contains_key(CODE_KEY) {
        return s.clone();
    }
    use tonic::Code as G;
    match s.code() {
        G::OutOfRange | G::ResourceExhausted => status(
            Code::RequestTooLarge,
            format!(
                "request message too large: {}; this server accepts messages up to {max_request_bytes} bytes \
                 (max_request_bytes): send fewer events per request",
                s.message()
            ),
        ),
        G::Internal | G::InvalidArgument => status(
            Code::InvalidArgument,
            format!("the request is not a valid herald.v1 message ({}); use the herald.v1 .proto", s.message()),
        ),
        G::Unimplemented => status(Code::Unsupported, s.message().to_owned()),
        G::Cancelled | G::Unavailable | G::DeadlineExceeded => status(Code::Unavailable, s.message().to_owned()),
        _ => status(Code::Internal, s.message().to_owned()),
    }
}

/// Wraps a generated service: authenticates every call first (the caller's [`Principal`] goes
/// into the request's extensions for the handlers to check), and gives an error response tonic
/// built without our handlers (a request that could not be decoded) a `herald-code`.
#[derive(Clone)]
pub struct Coded<S> {
    inner: S,
    max_request_bytes: usize,
    guard: Arc<crate::auth::Guard>,
    audit: Arc<crate::audit::Audit>,
}

impl<S: NamedService> NamedService for Coded<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tonic::codegen::Service<http::Request<Body>> for Coded<S>
where
    S: tonic::codegen::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let max_request_bytes = self.max_request_bytes;
        let conn = req.extensions().get::<crate::conn::ConnInfo>().cloned();
        let peer = conn.as_ref().and_then(|c| c.remote);
        let authorization = req.headers().get(http::header::AUTHORIZATION).map(|v| v.as_bytes());
        let authenticated = self.guard.authenticate(authorization, peer.map(|a| a.ip())).and_then(|p| match &conn {
            Some(c) => self.guard.meter.connection(&p, &c.cell).map(|()| p),
            None => Ok(p),
        });
        match authenticated {
            Ok(p) => {
                req.extensions_mut().insert(p);
            }
            Err(d) => {
                let code = d.code;
                if code == Code::Unauthenticated {
                    let method = req.uri().path().rsplit('/').next().unwrap_or_default().to_owned();
                    self.audit.record("-", peer.map(|a| a.ip()), "grpc", &method, "-", code.as_str());
                }
                let res = denied(d).into_http();
                metrics::counter!("herald_server_requests_total", "api" => "grpc", "method" => "unauthenticated",
                    "code" => code.as_str())
                .increment(1);
                return Box::pin(async move { Ok(res) });
            }
        }
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut res = fut.await?;
            let headers = res.headers_mut();
            // Only a "trailers-only" error response carries grpc-status in its headers; ours
            // carry the code already, tonic's own do not.
            let tonic_made = headers.get(Status::GRPC_STATUS).is_some_and(|v| v.as_bytes() != b"0")
                && !headers.contains_key(CODE_KEY);
            if tonic_made && let Some(original) = Status::from_header_map(headers) {
                let coded = wire_status(&Status::new(original.code(), original.message()), max_request_bytes);
                headers.remove(Status::GRPC_STATUS);
                headers.remove(Status::GRPC_MESSAGE);
                headers.remove(Status::GRPC_STATUS_DETAILS);
                if coded.add_header(headers).is_err() {
                    // Cannot happen for our messages; keep a status in any case.
                    headers.insert(Status::GRPC_STATUS, http::HeaderValue::from(original.code() as i32));
                }
            }
            Ok(res)
        })
    }
}
