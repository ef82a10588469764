//! Schemas over HTTP, per topic and CloudEvents type (see `herald_model::schema`):
//!
//! - `GET /v1/topics/{t}/schemas` → `{"policy": {"unknown_types", "compatibility"}, "schemas":
//!   [the latest version of each type]}`;
//! - `POST /v1/topics/{t}/schemas` `{"type", "format"?, "schema", "compatibility"?}` → the
//!   version registered (the same document as the latest answers that version); `format` is
//!   `json_schema` (the default: `schema` is the JSON Schema) or `protobuf` (`schema` is
//!   `{"message": "pkg.Name", "descriptor_set": "<base64 FileDescriptorSet>"}`); 409
//!   `schema_incompatible` naming each change and the rule it breaks; 400 `invalid_config` for a
//!   document that is no schema of its format;
//! - `POST /v1/topics/{t}/schemas/check` (same body) → `{"compatible", "problems": [{"rule",
//!   "version", "path", "message"}]}`, registering nothing;
//! - `GET /v1/topics/{t}/schemas/{type}` (latest), `…/{type}/versions/{n}`, and
//!   `…/versions/{n}/text` (the document as text: JSON pretty-printed, Protobuf as `.proto`); `DELETE
//!   /v1/topics/{t}/schemas/{type}` → `{"deleted": versions}`;
//! - `GET`/`PUT /v1/topics/{t}/schema-policy` `{"unknown_types": "allow" | "refuse",
//!   "compatibility": "BACKWARD" | …}`.
//!
//! A version is `{"topic", "type", "version", "format", "schema", "registered_ms",
//! "compatibility", "dataschema"}`; `dataschema` is what valid events are stamped with.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use herald_model::schema::{NewSchema, SchemaPolicy, SchemaVersion};
use serde_json::json;

use super::extract::{JsonBody, Params, Seg};
use super::{ApiError, Caller, Http, blocking};
use crate::auth::{Action, Resource};

pub(super) async fn list(
    State(h): State<Http>,
    caller: Caller,
    Seg(topic): Seg,
    q: Params,
) -> Result<Response, ApiError> {
    caller.0.check_any(Resource::Topic(&topic))?;
    q.only(&[])?;
    let (policy, schemas) = blocking(&h, move |b| b.list_schemas(&topic)).await?;
    Ok(Json(json!({ "policy": policy, "schemas": schemas })).into_response())
}

pub(super) async fn register(
    State(h): State<Http>,
    caller: Caller,
    Seg(topic): Seg,
    q: Params,
    JsonBody(req): JsonBody<NewSchema>,
) -> Result<Json<SchemaVersion>, ApiError> {
    caller.may(Action::Admin, Resource::Topic(&topic))?;
    q.only(&[])?;
    Ok(Json(blocking(&h, move |b| b.register_schema(&topic, req)).await?))
}

pub(super) async fn check(
    State(h): State<Http>,
    caller: Caller,
    Seg(topic): Seg,
    q: Params,
    JsonBody(req): JsonBody<NewSchema>,
) -> Result<Response, ApiError> {
    caller.0.check_any(Resource::Topic(&topic))?;
    q.only(&[])?;
    let problems = blocking(&h, move |b| b.check_schema(&topic, &req)).await?;
    Ok(Json(json!({ "compatible": problems.is_empty(), "problems": problems })).into_response())
}

pub(super) async fn latest(
    State(h): State<Http>,
    caller: Caller,
    Path((topic, ty)): Path<(String, String)>,
    q: Params,
) -> Result<Json<SchemaVersion>, ApiError> {
    caller.0.check_any(Resource::Topic(&topic))?;
    q.only(&[])?;
    Ok(Json(blocking(&h, move |b| b.schema(&topic, &ty, None)).await?))
}

pub(super) async fn version(
    State(h): State<Http>,
    caller: Caller,
    Path((topic, ty, version)): Path<(String, String, String)>,
    q: Params,
) -> Result<Json<SchemaVersion>, ApiError> {
    caller.0.check_any(Resource::Topic(&topic))?;
    q.only(&[])?;
    let v: u32 = version.parse().map_err(|_| ApiError::invalid(format!("version {version:?} is not a number")))?;
    Ok(Json(blocking(&h, move |b| b.schema(&topic, &ty, Some(v))).await?))
}

/// The version's document as text (`text/plain`): a JSON Schema pretty-printed, a Protobuf
/// message as `.proto` text.
pub(super) async fn version_text(
    State(h): State<Http>,
    caller: Caller,
    Path((topic, ty, version)): Path<(String, String, String)>,
    q: Params,
) -> Result<Response, ApiError> {
    caller.0.check_any(Resource::Topic(&topic))?;
    q.only(&[])?;
    let v: u32 = version.parse().map_err(|_| ApiError::invalid(format!("version {version:?} is not a number")))?;
    let s = blocking(&h, move |b| b.schema(&topic, &ty, Some(v))).await?;
    let text = herald_schema::document_text(s.format, &s.schema);
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

pub(super) async fn delete(
    State(h): State<Http>,
    caller: Caller,
    Path((topic, ty)): Path<(String, String)>,
    q: Params,
) -> Result<Response, ApiError> {
    caller.may(Action::Admin, Resource::Topic(&topic))?;
    q.only(&[])?;
    let deleted = blocking(&h, move |b| b.delete_schema(&topic, &ty)).await?;
    Ok(Json(json!({ "deleted": deleted })).into_response())
}

pub(super) async fn policy(
    State(h): State<Http>,
    caller: Caller,
    Seg(topic): Seg,
    q: Params,
) -> Result<Json<SchemaPolicy>, ApiError> {
    caller.0.check_any(Resource::Topic(&topic))?;
    q.only(&[])?;
    Ok(Json(blocking(&h, move |b| b.list_schemas(&topic)).await?.0))
}

pub(super) async fn set_policy(
    State(h): State<Http>,
    caller: Caller,
    Seg(topic): Seg,
    q: Params,
    JsonBody(policy): JsonBody<SchemaPolicy>,
) -> Result<Json<SchemaPolicy>, ApiError> {
    caller.may(Action::Admin, Resource::Topic(&topic))?;
    q.only(&[])?;
    Ok(Json(blocking(&h, move |b| b.set_schema_policy(&topic, policy)).await?))
}
