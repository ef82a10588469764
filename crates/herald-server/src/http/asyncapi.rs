//! `GET /v1/asyncapi.json` (and `Admin.AsyncApi`): the AsyncAPI 3.0 document of the live system
//! as the caller may see it — topics and groups it may see, internal topics (DLQ, replay, audit)
//! left out, the server as the host the caller reached. The document's shape is
//! `herald_schema::asyncapi`'s.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::Value;

use super::extract::Params;
use super::{ApiError, Caller, Http, blocking};
use crate::auth::Resource;

pub(super) async fn document(
    State(h): State<Http>,
    caller: Caller,
    headers: HeaderMap,
    q: Params,
) -> Result<Json<Value>, ApiError> {
    q.only(&[])?;
    let p = caller.0;
    // The host the caller reached the server by (what it will publish to), else the listener's.
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| h.app.config.http.to_string());
    Ok(Json(blocking(&h, move |b| Ok(build(b, &p, &host))).await?))
}

/// The document of what `p` may see on `b`, its server's HTTP address given as `host`: what
/// HTTP and gRPC (`Admin.AsyncApi`) answer.
pub(crate) fn build(b: &herald_broker::Broker, p: &crate::auth::Principal, host: &str) -> Value {
    let groups = b.list_groups();
    let mut readers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for g in groups.iter().filter(|g| p.sees(Resource::Group(g))) {
        if let Ok(info) = b.describe_group(g) {
            for t in info.config.topics {
                readers.entry(t).or_default().push(g.clone());
            }
        }
    }
    let mut channels = Vec::new();
    for topic in b.list_topics() {
        // `list_groups` is sorted.
        if super::console::internal(&topic, &groups) || !p.sees(Resource::Topic(&topic)) {
            continue;
        }
        let Ok((policy, schemas)) = b.list_schemas(&topic) else { continue };
        let readers = readers.remove(&topic).unwrap_or_default();
        channels.push(herald_schema::asyncapi::Channel { topic, policy, schemas, readers });
    }
    let server = herald_schema::asyncapi::Server {
        host: host.to_owned(),
        protocol: "http".into(),
        description: "Herald's HTTP API (CloudEvents HTTP binding, SSE)".into(),
    };
    herald_schema::asyncapi::document(&channels, Some(&server), |topic| {
        format!(
            "Herald topic {topic:?}: publish with POST /v1/topics/{topic}/events (CloudEvents HTTP binding) or gRPC"
        )
    })
}
