//! Reading requests under the limits, every failure a JSON [`ApiError`].

use herald_model::Code;
use std::str::FromStr;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use bytes::BytesMut;
use futures::StreamExt;
use serde::de::DeserializeOwned;

use super::{ApiError, Http};

/// Longest a client may take to send a request body: a declared length that never arrives
/// must not hold a request permit forever.
pub(crate) const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

fn too_large(what: String, max: usize) -> ApiError {
    ApiError::new(
        Code::RequestTooLarge,
        format!(
            "the request body is {what}; this server accepts at most {max} bytes (max_request_bytes): send fewer \
             or smaller events per request"
        ),
    )
}

/// Reads a whole body, refusing it as soon as it is known to exceed `max_request_bytes`: a
/// declared `Content-Length` is checked before anything is read, and a body without one is
/// counted as it arrives.
pub(crate) async fn read_body(h: &Http, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let max = h.app.config.max_request_bytes;
    if let Some(v) = headers.get(header::CONTENT_LENGTH) {
        let declared = v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| ApiError::invalid(format!("Content-Length {v:?} is not a number of bytes")))?;
        if declared > max as u64 {
            return Err(too_large(format!("{declared} bytes (Content-Length)"), max));
        }
    }
    let read = async {
        let mut stream = body.into_data_stream();
        let mut buf = BytesMut::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ApiError::invalid(format!("reading the request body failed: {e}")))?;
            if buf.len() + chunk.len() > max {
                return Err(too_large(format!("more than {max} bytes"), max));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    };
    tokio::time::timeout(BODY_READ_TIMEOUT, read).await.unwrap_or_else(|_| {
        Err(ApiError::new(
            Code::RequestTimeout,
            format!("the request body did not arrive within {} s", BODY_READ_TIMEOUT.as_secs()),
        ))
    })
}

/// The media type of a request without its parameters, lowercased; `None` when absent.
pub(crate) fn media_type(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get(header::CONTENT_TYPE) else { return Ok(None) };
    let text = v
        .to_str()
        .map_err(|_| ApiError::invalid("Content-Type holds characters outside visible ASCII; send a media type"))?;
    Ok(Some(text.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()))
}

/// A JSON request body (`Content-Type: application/json`), read under the limits.
pub(crate) struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Http> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, h: &Http) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let json = media_type(&parts.headers)?.is_some_and(|m| m == "application/json" || m.ends_with("+json"));
        if !json {
            return Err(ApiError::new(
                Code::UnsupportedMediaType,
                "this request takes a JSON body: send it with Content-Type: application/json",
            ));
        }
        let bytes = read_body(h, &parts.headers, body).await?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::invalid(format!("the JSON body does not fit this request: {e}")))
    }
}

/// The query string as name/value pairs, in order (repeated names kept: `?topic=a&topic=b`).
pub(crate) struct Params(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map(|Query(pairs)| Params(pairs))
            .map_err(|e| ApiError::invalid(format!("the query string cannot be read: {e}")))
    }
}

impl Params {
    /// Refuses parameters this route does not take, so that a typo is not silently ignored.
    pub fn only(&self, known: &[&str]) -> Result<(), ApiError> {
        match self.0.iter().find(|(k, _)| !known.contains(&k.as_str())) {
            Some((k, _)) => Err(ApiError::invalid(format!(
                "unknown query parameter {k:?}; this route takes {}",
                if known.is_empty() { "none".to_owned() } else { known.join(", ") }
            ))),
            None => Ok(()),
        }
    }

    /// Every value of `name`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }

    /// The value of `name`, which may appear at most once.
    pub fn one(&self, name: &str) -> Result<Option<&str>, ApiError> {
        match self.all(name).as_slice() {
            [] => Ok(None),
            [v] => Ok(Some(v)),
            _ => Err(ApiError::invalid(format!("query parameter {name:?} appears more than once; give it once"))),
        }
    }

    /// The value of `name` parsed as `what` (e.g. "a partition number").
    pub fn parse<T: FromStr>(&self, name: &str, what: &str) -> Result<Option<T>, ApiError> {
        self.one(name)?
            .map(|v| v.parse().map_err(|_| ApiError::invalid(format!("query parameter {name}={v:?} is not {what}"))))
            .transpose()
    }
}

/// The one path segment of a route (`{topic}` or `{group}`), percent-decoded.
pub(crate) struct Seg(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Seg {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(s)| Seg(s))
            .map_err(|e| ApiError::invalid(format!("the path cannot be read: {e}")))
    }
}
