//! `GET /v1/asyncapi.json`: an AsyncAPI 3.0 document of the live system, as the caller may see
//! it: each topic a channel (its address the topic's name), each event type with a schema a
//! message (its payload the latest JSON Schema), a `send` operation per topic and a `receive`
//! operation per consumer group and topic it reads. Topics that take events of unknown types
//! also carry the generic `cloudevent` message. Internal topics (DLQ, replay, audit) are left out.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use herald_model::schema::{SchemaFormat, SchemaVersion, UnknownTypes};
use serde_json::{Map, Value, json};

use super::extract::Params;
use super::{ApiError, Caller, Http, blocking};
use crate::auth::Resource;

/// A component or operation key as AsyncAPI allows them (`^[\w\d.\-_]+$`).
fn key(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' }).collect()
}

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
    {
        let groups = b.list_groups();
        let mut readers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for g in groups.iter().filter(|g| p.sees(Resource::Group(g))) {
            if let Ok(info) = b.describe_group(g) {
                for t in info.config.topics {
                    readers.entry(t).or_default().push(g.clone());
                }
            }
        }
        let (mut channels, mut operations, mut messages) = (Map::new(), Map::new(), Map::new());
        messages.insert(
            "cloudevent".into(),
            json!({
                "name": "cloudevent",
                "title": "A CloudEvent of a type without a schema",
                "contentType": "application/cloudevents+json",
                "payload": { "type": ["object", "array", "string", "number", "boolean", "null"] },
            }),
        );
        for topic in b.list_topics() {
            let internal = topic == crate::audit::AUDIT_TOPIC
                || topic
                    .strip_suffix(".dlq")
                    .or_else(|| topic.strip_suffix(".replay"))
                    .is_some_and(|g| groups.contains(&g.to_owned()));
            if internal || !p.sees(Resource::Topic(&topic)) {
                continue;
            }
            let Ok((policy, schemas)) = b.list_schemas(&topic) else { continue };
            let channel = key(&topic);
            let mut refs = Map::new();
            for s in &schemas {
                let k = key(&format!("{topic}.{}", s.ty));
                messages.insert(
                    k.clone(),
                    json!({
                        "name": s.ty,
                        "title": s.ty,
                        "summary": format!("version {}, compatibility {}", s.version, s.compatibility),
                        "contentType": content_type(s.format),
                        "payload": payload(s),
                        "externalDocs": { "url": s.dataschema },
                    }),
                );
                refs.insert(k.clone(), json!({ "$ref": format!("#/components/messages/{k}") }));
            }
            if policy.unknown_types == UnknownTypes::Allow {
                refs.insert("cloudevent".into(), json!({ "$ref": "#/components/messages/cloudevent" }));
            }
            channels.insert(
                channel.clone(),
                json!({
                    "address": topic,
                    "title": topic,
                    "description": format!("Herald topic {topic:?}: publish with POST /v1/topics/{topic}/events (CloudEvents HTTP binding) or gRPC"),
                    "messages": refs,
                }),
            );
            operations.insert(
                key(&format!("send.{topic}")),
                json!({ "action": "send", "channel": { "$ref": format!("#/channels/{channel}") }, "summary": format!("Publish to {topic}") }),
            );
            for g in readers.get(&topic).into_iter().flatten() {
                operations.insert(
                    key(&format!("receive.{g}.{topic}")),
                    json!({
                        "action": "receive",
                        "channel": { "$ref": format!("#/channels/{channel}") },
                        "summary": format!("Consumer group {g} receives {topic}"),
                    }),
                );
            }
        }
        json!({
            "asyncapi": "3.0.0",
            "info": {
                "title": "Herald",
                "version": env!("CARGO_PKG_VERSION"),
                "description": "The topics, event types and consumer groups of this Herald server, as they are now.",
            },
            "defaultContentType": "application/cloudevents+json",
            "servers": {
                "herald": { "host": host, "protocol": "http", "description": "Herald's HTTP API (CloudEvents HTTP binding, SSE)" },
            },
            "channels": channels,
            "operations": operations,
            "components": { "messages": messages },
        })
    }
}

fn content_type(format: SchemaFormat) -> &'static str {
    match format {
        SchemaFormat::JsonSchema => "application/json",
        SchemaFormat::Protobuf => "application/protobuf",
    }
}

/// A message's payload as an AsyncAPI multi-format schema: the JSON Schema itself, or the
/// Protobuf message as `.proto` text.
fn payload(s: &SchemaVersion) -> Value {
    match s.format {
        SchemaFormat::JsonSchema => {
            json!({ "schemaFormat": "application/schema+json;version=draft-2020-12", "schema": s.schema })
        }
        SchemaFormat::Protobuf => json!({
            "schemaFormat": "application/vnd.google.protobuf;version=3",
            "schema": herald_schema::document_text(s.format, &s.schema),
        }),
    }
}
