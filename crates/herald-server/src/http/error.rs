//! The one error type of the HTTP API: a stable [`Code`], a message saying what to do, and the
//! code's HTTP status (from [`Code::http_status`], the one table of statuses).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use herald_broker::BrokerError;
use herald_core::EventError;
use herald_core::codec::json::JsonError;
pub(crate) use herald_model::Code;
use serde::Serialize;

/// An error answer: `{"code": …, "message": …}` with `status`.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub code: Code,
    pub message: String,
    /// Seconds for `Retry-After` when the code is retryable (1 when not said).
    pub retry_after_s: Option<u64>,
}

/// The code of an error answer, left in the response's extensions for the request counter.
#[derive(Clone, Copy)]
pub(crate) struct AnsweredCode(pub Code);

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> ApiError {
        ApiError { code, message: message.into(), retry_after_s: None }
    }

    /// The HTTP status of its code.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.http_status()).expect("codes map to valid statuses")
    }

    /// 400 `invalid_argument`.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(Code::InvalidArgument, message)
    }

    /// 500 `internal`.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(Code::Internal, message)
    }

    /// 503 `shutting_down`.
    pub fn shutting_down() -> ApiError {
        ApiError::new(Code::ShuttingDown, "the server is shutting down; retry once it is back (or on another server)")
    }

    /// An invalid event: 413 `event_too_large` for its size, 400 `invalid_event` otherwise.
    pub fn event(e: &EventError) -> ApiError {
        match e {
            EventError::EventTooLarge { event_bytes, limit } => too_large(*event_bytes, *limit, ""),
            _ => ApiError::new(Code::InvalidEvent, e.to_string()),
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
                _ => ApiError::new(Code::InvalidEvent, e.to_string()),
            },
            _ => ApiError::new(Code::InvalidEvent, e.to_string()),
        }
    }

    /// The body as a string (for SSE `end` events).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&Body { code: self.code.as_str(), message: &self.message }).unwrap_or_default()
    }
}

/// 413 `event_too_large`, naming the server's setting (core's message names its own field).
fn too_large(bytes: usize, limit: usize, prefix: &str) -> ApiError {
    ApiError::new(
        Code::EventTooLarge,
        format!(
            "{prefix}event is {bytes} bytes encoded; this server accepts events of at most {limit} bytes \
             (max_event_bytes): store large payloads elsewhere and send a reference"
        ),
    )
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> ApiError {
        ApiError::new(crate::code_of(&e), e.to_string())
    }
}

impl From<crate::auth::Denied> for ApiError {
    fn from(d: crate::auth::Denied) -> ApiError {
        ApiError { code: d.code, message: d.message, retry_after_s: d.retry_after_s }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() && !self.code.is_retryable() {
            tracing::error!(code = %self.code, message = %self.message, "http request failed");
        }
        // Retry-After only where retrying can help.
        let retry = self.code.is_retryable();
        let mut res = (status, axum::Json(Body { code: self.code.as_str(), message: &self.message })).into_response();
        res.extensions_mut().insert(AnsweredCode(self.code));
        if retry {
            let after = HeaderValue::from(self.retry_after_s.unwrap_or(1));
            res.headers_mut().insert(header::RETRY_AFTER, after);
        }
        if self.code == Code::Unauthenticated {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"herald\""));
        }
        res
    }
}
