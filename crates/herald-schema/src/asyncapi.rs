//! The AsyncAPI 3.0 document of a live system, whichever backend describes it: each topic a
//! channel (its address the topic's name), each event type with a schema a message (its payload
//! the latest schema: a JSON Schema as it is, a Protobuf message as `.proto` text), a `send`
//! operation per topic and a `receive` operation per consumer group and topic it reads. Topics
//! that take events of unknown types also carry the generic `cloudevent` message.
//!
//! What goes in (which topics, which groups: internal ones and those the caller may not see
//! left out) is the caller's to decide: `herald serve` (`GET /v1/asyncapi.json`,
//! `Admin.AsyncApi`) and the SDK's other backends.

use herald_model::schema::{SchemaFormat, SchemaPolicy, SchemaVersion, UnknownTypes};
use serde_json::{Map, Value, json};

/// A topic as the document shows it.
#[derive(Debug, Clone)]
pub struct Channel {
    pub topic: String,
    /// What the topic does with types without a schema.
    pub policy: SchemaPolicy,
    /// The latest version of each type's schema.
    pub schemas: Vec<SchemaVersion>,
    /// The consumer groups that read it.
    pub readers: Vec<String>,
}

/// Where the system is reached (AsyncAPI `servers.herald`).
#[derive(Debug, Clone)]
pub struct Server {
    pub host: String,
    /// `http`, `nats`, …
    pub protocol: String,
    pub description: String,
}

/// A component or operation key as AsyncAPI allows them (`^[\w\d.\-_]+$`).
fn key(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' }).collect()
}

/// The document of `channels`, reached at `server` (none for a system in this process), each
/// channel's description from `how_to_publish(topic)`.
pub fn document(channels: &[Channel], server: Option<&Server>, how_to_publish: impl Fn(&str) -> String) -> Value {
    let (mut out_channels, mut operations, mut messages) = (Map::new(), Map::new(), Map::new());
    messages.insert(
        "cloudevent".into(),
        json!({
            "name": "cloudevent",
            "title": "A CloudEvent of a type without a schema",
            "contentType": "application/cloudevents+json",
            "payload": { "type": ["object", "array", "string", "number", "boolean", "null"] },
        }),
    );
    for c in channels {
        let (topic, channel) = (&c.topic, key(&c.topic));
        let mut refs = Map::new();
        for s in &c.schemas {
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
        if c.policy.unknown_types == UnknownTypes::Allow {
            refs.insert("cloudevent".into(), json!({ "$ref": "#/components/messages/cloudevent" }));
        }
        out_channels.insert(
            channel.clone(),
            json!({
                "address": topic,
                "title": topic,
                "description": how_to_publish(topic),
                "messages": refs,
            }),
        );
        operations.insert(
            key(&format!("send.{topic}")),
            json!({ "action": "send", "channel": { "$ref": format!("#/channels/{channel}") }, "summary": format!("Publish to {topic}") }),
        );
        for g in &c.readers {
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
    let mut doc = json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Herald",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The topics, event types and consumer groups of this Herald system, as they are now.",
        },
        "defaultContentType": "application/cloudevents+json",
        "channels": out_channels,
        "operations": operations,
        "components": { "messages": messages },
    });
    if let Some(s) = server {
        doc["servers"] = json!({ "herald": { "host": s.host, "protocol": s.protocol, "description": s.description } });
    }
    doc
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
            "schema": crate::document_text(s.format, &s.schema),
        }),
    }
}
