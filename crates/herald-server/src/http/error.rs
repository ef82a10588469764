//! The one error type of the HTTP API: a stable code, a message saying what to do, and the
//! status of the code's class.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use herald_broker::BrokerError;
use herald_core::EventError;
use herald_core::codec::json::JsonError;
use serde::Serialize;

/// An error answer: `{"code": …, "message": …}` with `status`.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

/// The code of an error answer, left in the response's extensions for the request counter.
#[derive(Clone, Copy)]
pub(crate) struct Code(pub &'static str);

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into() }
    }

    /// 400 `invalid_argument`.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_argument", message)
    }

    /// 500 `internal`.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// 503 `shutting_down`.
    pub fn shutting_down() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down; retry once it is back (or on another server)",
        )
    }

    /// An invalid event: 413 `event_too_large` for its size, 400 `invalid_event` otherwise.
    pub fn event(e: &EventError) -> ApiError {
        match e {
            EventError::EventTooLarge { event_bytes, limit } => too_large(*event_bytes, *limit, ""),
            _ => ApiError::new(StatusCode::BAD_REQUEST, "invalid_event", e.to_string()),
        }
    }

    /// A structured event or batch that could not be read.
    pub fn json(e: &JsonError) -> ApiError {
        match e {
            JsonError::Invalid(EventError::EventTooLarge { event_bytes, limit }) => too_large(*event_bytes, *limit, ""),
            JsonError::InBatch { index, error } => match **error {
                JsonError::Invalid(EventError::EventTooLarge { event_bytes, limit }) => {
                    too_large(event_bytes, limit, &format!("event {index} of the batch: "))
                }
                _ => ApiError::new(StatusCode::BAD_REQUEST, "invalid_event", e.to_string()),
            },
            _ => ApiError::new(StatusCode::BAD_REQUEST, "invalid_event", e.to_string()),
        }
    }

    /// The body as a string (for SSE `end` events).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&Body { code: self.code, message: &self.message }).unwrap_or_default()
    }
}

/// 413 `event_too_large`, naming the server's setting (core's message names its own field).
fn too_large(bytes: usize, limit: usize, prefix: &str) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "event_too_large",
        format!(
            "{prefix}event is {bytes} bytes encoded; this server accepts events of at most {limit} bytes \
             (max_event_bytes): store large payloads elsewhere and send a reference"
        ),
    )
}

/// The status of each code the broker (and this API) answers with.
fn status_of(code: &str) -> StatusCode {
    match code {
        "topic_not_found" | "group_not_found" | "partition_not_found" | "unknown_member" | "not_found" => {
            StatusCode::NOT_FOUND
        }
        "topic_exists" | "group_active" | "member_active" | "stale_generation" | "not_in_flight"
        | "retention_overtook" => StatusCode::CONFLICT,
        "event_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
        "offset_below_earliest" | "offset_beyond_latest" => StatusCode::RANGE_NOT_SATISFIABLE,
        "limit_exceeded" => StatusCode::TOO_MANY_REQUESTS,
        "busy" | "closed" | "shutting_down" => StatusCode::SERVICE_UNAVAILABLE,
        "corrupt_event" | "corrupt" | "storage" | "internal" => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> ApiError {
        let code = e.code();
        ApiError { status: status_of(code), code, message: e.to_string() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() && self.code != "busy" && self.code != "shutting_down" {
            tracing::error!(code = self.code, message = %self.message, "http request failed");
        }
        let retry = matches!(self.status, StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS);
        let mut res = (self.status, axum::Json(Body { code: self.code, message: &self.message })).into_response();
        res.extensions_mut().insert(Code(self.code));
        if retry {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        res
    }
}
