//! Conversions between `herald.v1` messages and Herald's types, and error mapping.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use herald_core::{Event, EventError, Limits, Timestamp};
use herald_model as broker;
use herald_model::Code;
use herald_model::schema::{
    Compatibility, Incompatibility, NewSchema, ProtobufSchema, SchemaFormat, SchemaPolicy, SchemaVersion, UnknownTypes,
};

use crate::v1;

/// Metadata key of a status that holds Herald's stable error code.
pub const CODE_KEY: &str = "herald-code";

pub use herald_model::dead_letter::truncate_utf8;

/// Encodes an event for the wire.
pub fn event_to_proto(e: &Event) -> v1::Event {
    v1::Event {
        id: e.id().to_owned(),
        source: e.source().to_owned(),
        r#type: e.ty().to_owned(),
        time_unix_nano: e.time().map(Timestamp::as_unix_nanos),
        subject: e.subject().map(str::to_owned),
        datacontenttype: e.datacontenttype().map(str::to_owned),
        dataschema: e.dataschema().map(str::to_owned),
        data: e.data().clone(),
        partitionkey: e.key().map(str::to_owned),
        traceparent: e.traceparent().map(str::to_owned),
        tracestate: e.tracestate().map(str::to_owned),
        correlationid: e.correlationid().map(str::to_owned),
        causationid: e.causationid().map(str::to_owned),
        headers: e.headers().iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

/// Decodes and validates an event from the wire under `limits`.
pub fn event_from_proto(p: v1::Event, limits: &Limits) -> Result<Event, EventError> {
    builder_from_proto(p).build_with(limits)
}

fn builder_from_proto(p: v1::Event) -> herald_core::EventBuilder {
    let mut b =
        Event::builder(p.r#type).id(p.id).source(p.source).time(p.time_unix_nano.map(Timestamp::from_unix_nanos));
    if let Some(s) = p.subject {
        b = b.subject(s);
    }
    b = match p.datacontenttype {
        Some(ct) => b.data(p.data, ct),
        None if p.data.is_empty() => b,
        None => b.data(p.data, "application/octet-stream"),
    };
    if let Some(s) = p.dataschema {
        b = b.dataschema(s);
    }
    if let Some(s) = p.partitionkey {
        b = b.key(s);
    }
    if let Some(s) = p.traceparent {
        b = b.traceparent(s);
    }
    if let Some(s) = p.tracestate {
        b = b.tracestate(s);
    }
    if let Some(s) = p.correlationid {
        b = b.correlationid(s);
    }
    if let Some(s) = p.causationid {
        b = b.causationid(s);
    }
    for (k, v) in p.headers {
        b = b.header(k, v);
    }
    b
}

pub fn receipt_to_proto(r: &broker::Receipt) -> v1::Receipt {
    v1::Receipt { topic: r.topic.to_string(), partition: r.partition, offset: r.offset, duplicate: r.duplicate }
}

pub fn receipt_from_proto(r: v1::Receipt) -> broker::Receipt {
    broker::Receipt { topic: r.topic.into(), partition: r.partition, offset: r.offset, duplicate: r.duplicate }
}

pub fn stored_to_proto(s: &broker::StoredEvent) -> v1::StoredEvent {
    v1::StoredEvent {
        event: Some(event_to_proto(&s.event)),
        topic: s.topic.to_string(),
        partition: s.partition,
        offset: s.offset,
        append_time_ms: s.append_time_ms,
    }
}

/// Decodes a stored event. The server validated it before storing it, so it is not validated
/// again ([`herald_core::EventBuilder::build_stored`]): only its id, source and type must be set.
pub fn stored_from_proto(s: v1::StoredEvent) -> Result<broker::StoredEvent, EventError> {
    let event = builder_from_proto(s.event.unwrap_or_default()).build_stored()?;
    Ok(broker::StoredEvent {
        event,
        topic: s.topic.into(),
        partition: s.partition,
        offset: s.offset,
        append_time_ms: s.append_time_ms,
    })
}

fn durability_to_proto(d: broker::Durability) -> (i32, Option<u64>) {
    match d {
        broker::Durability::Always => (v1::Durability::Always as i32, None),
        broker::Durability::Interval { ms } => (v1::Durability::Interval as i32, Some(ms)),
        broker::Durability::Os => (v1::Durability::Os as i32, None),
    }
}

fn durability_from_proto(d: i32, ms: Option<u64>, default: broker::Durability) -> broker::Durability {
    match v1::Durability::try_from(d).unwrap_or(v1::Durability::Default) {
        v1::Durability::Default => default,
        v1::Durability::Always => broker::Durability::Always,
        v1::Durability::Interval => broker::Durability::Interval { ms: ms.unwrap_or(50) },
        v1::Durability::Os => broker::Durability::Os,
    }
}

pub fn topic_config_to_proto(c: &broker::TopicConfig) -> v1::TopicConfig {
    let (durability, durability_interval_ms) = durability_to_proto(c.durability);
    v1::TopicConfig {
        partitions: Some(c.partitions),
        retention_ms: c.retention_ms,
        retention_bytes: c.retention_bytes,
        durability,
        durability_interval_ms,
        dedupe_window_ms: Some(c.dedupe_window_ms),
        max_event_bytes: Some(c.max_event_bytes),
        segment_bytes_max: Some(c.segment_bytes_max),
    }
}

/// Fields left out take [`broker::TopicConfig::default`].
pub fn topic_config_from_proto(c: v1::TopicConfig) -> broker::TopicConfig {
    let d = broker::TopicConfig::default();
    broker::TopicConfig {
        partitions: c.partitions.unwrap_or(d.partitions),
        retention_ms: c.retention_ms,
        retention_bytes: c.retention_bytes,
        durability: durability_from_proto(c.durability, c.durability_interval_ms, d.durability),
        dedupe_window_ms: c.dedupe_window_ms.unwrap_or(d.dedupe_window_ms),
        max_event_bytes: c.max_event_bytes.unwrap_or(d.max_event_bytes),
        segment_bytes_max: c.segment_bytes_max.unwrap_or(d.segment_bytes_max),
    }
}

pub fn topic_info_to_proto(t: &broker::TopicInfo) -> v1::TopicInfo {
    v1::TopicInfo {
        name: t.name.clone(),
        config: Some(topic_config_to_proto(&t.config)),
        created_ms: t.created_ms,
        partitions: t
            .partitions
            .iter()
            .map(|p| v1::PartitionInfo {
                partition: p.partition,
                earliest_offset: p.earliest_offset,
                latest_offset: p.latest_offset,
                bytes: p.bytes,
                segments: p.segments as u64,
                problem: p.problem.clone().unwrap_or_default(),
            })
            .collect(),
    }
}

pub fn topic_info_from_proto(t: v1::TopicInfo) -> broker::TopicInfo {
    broker::TopicInfo {
        name: t.name,
        config: topic_config_from_proto(t.config.unwrap_or_default()),
        created_ms: t.created_ms,
        partitions: t
            .partitions
            .into_iter()
            .map(|p| broker::PartitionInfo {
                partition: p.partition,
                earliest_offset: p.earliest_offset,
                latest_offset: p.latest_offset,
                bytes: p.bytes,
                segments: usize::try_from(p.segments).unwrap_or(usize::MAX),
                problem: Some(p.problem).filter(|s| !s.is_empty()),
            })
            .collect(),
    }
}

pub fn position_to_proto(s: broker::StartFrom) -> v1::Position {
    let at = match s {
        broker::StartFrom::Earliest => v1::position::At::Earliest(true),
        broker::StartFrom::Latest => v1::position::At::Latest(true),
        broker::StartFrom::Timestamp(ms) => v1::position::At::TimestampMs(ms),
    };
    v1::Position { at: Some(at) }
}

/// A missing position means earliest.
pub fn position_from_proto(p: Option<v1::Position>) -> broker::StartFrom {
    match p.and_then(|p| p.at) {
        None | Some(v1::position::At::Earliest(_)) => broker::StartFrom::Earliest,
        Some(v1::position::At::Latest(_)) => broker::StartFrom::Latest,
        Some(v1::position::At::TimestampMs(ms)) => broker::StartFrom::Timestamp(ms),
    }
}

pub fn retry_to_proto(r: &broker::RetryPolicy) -> v1::RetryPolicy {
    v1::RetryPolicy {
        max_attempts: Some(r.max_attempts),
        backoff_base_ms: Some(r.backoff_base_ms),
        backoff_factor: Some(r.backoff_factor),
        backoff_max_ms: Some(r.backoff_max_ms),
        jitter: Some(r.jitter),
    }
}

/// A retry policy from the wire: every field left out takes its default.
pub fn retry_from_proto(r: Option<v1::RetryPolicy>) -> broker::RetryPolicy {
    let d = broker::RetryPolicy::default();
    let Some(r) = r else { return d };
    broker::RetryPolicy {
        max_attempts: r.max_attempts.unwrap_or(d.max_attempts),
        backoff_base_ms: r.backoff_base_ms.unwrap_or(d.backoff_base_ms),
        backoff_factor: r.backoff_factor.unwrap_or(d.backoff_factor),
        backoff_max_ms: r.backoff_max_ms.unwrap_or(d.backoff_max_ms),
        jitter: r.jitter.unwrap_or(d.jitter),
    }
}

pub fn group_config_to_proto(c: &broker::GroupConfig) -> v1::GroupSettings {
    let (state_durability, state_durability_interval_ms) = durability_to_proto(c.state_durability);
    v1::GroupSettings {
        topics: c.topics.clone(),
        start: Some(position_to_proto(c.start)),
        ordering: match c.ordering {
            broker::OrderingMode::Key => v1::Ordering::Key,
            broker::OrderingMode::Partition => v1::Ordering::Partition,
            broker::OrderingMode::None => v1::Ordering::None,
        } as i32,
        ack_timeout_ms: Some(c.ack_timeout_ms),
        session_timeout_ms: Some(c.session_timeout_ms),
        retry: Some(retry_to_proto(&c.retry)),
        blocking_retries: Some(c.blocking_retries),
        dlq_events_max: Some(c.dlq_events_max),
        replays_max: Some(c.replays_max),
        state_durability,
        state_durability_interval_ms,
    }
}

/// Fields left out take [`broker::GroupConfig::default`].
pub fn group_config_from_proto(s: v1::GroupSettings) -> broker::GroupConfig {
    let d = broker::GroupConfig::default();
    broker::GroupConfig {
        topics: s.topics,
        start: position_from_proto(s.start),
        ordering: match v1::Ordering::try_from(s.ordering).unwrap_or(v1::Ordering::Key) {
            v1::Ordering::Key => broker::OrderingMode::Key,
            v1::Ordering::Partition => broker::OrderingMode::Partition,
            v1::Ordering::None => broker::OrderingMode::None,
        },
        ack_timeout_ms: s.ack_timeout_ms.unwrap_or(d.ack_timeout_ms),
        session_timeout_ms: s.session_timeout_ms.unwrap_or(d.session_timeout_ms),
        retry: retry_from_proto(s.retry),
        dlq_events_max: s.dlq_events_max.unwrap_or(d.dlq_events_max),
        replays_max: s.replays_max.unwrap_or(d.replays_max),
        blocking_retries: s.blocking_retries.unwrap_or(d.blocking_retries),
        state_durability: durability_from_proto(s.state_durability, s.state_durability_interval_ms, d.state_durability),
    }
}

pub fn group_info_to_proto(g: &broker::GroupInfo) -> v1::GroupInfo {
    v1::GroupInfo {
        name: g.name.clone(),
        settings: Some(group_config_to_proto(&g.config)),
        generation: g.generation,
        members: g.members.clone(),
        partitions: g
            .partitions
            .iter()
            .map(|p| v1::GroupPartitionInfo {
                topic: p.topic.clone(),
                partition: p.partition,
                owner: p.owner.clone(),
                committed: p.committed,
                latest: p.latest,
                lag: p.lag,
                in_flight: p.in_flight as u64,
            })
            .collect(),
    }
}

pub fn group_info_from_proto(g: v1::GroupInfo) -> broker::GroupInfo {
    broker::GroupInfo {
        name: g.name,
        config: group_config_from_proto(g.settings.unwrap_or_default()),
        generation: g.generation,
        members: g.members,
        partitions: g
            .partitions
            .into_iter()
            .map(|p| broker::GroupPartitionInfo {
                topic: p.topic,
                partition: p.partition,
                owner: p.owner,
                committed: p.committed,
                latest: p.latest,
                lag: p.lag,
                in_flight: usize::try_from(p.in_flight).unwrap_or(usize::MAX),
            })
            .collect(),
    }
}

pub fn delivery_id_to_proto(d: &broker::DeliveryId) -> v1::DeliveryId {
    v1::DeliveryId {
        topic: d.topic.to_string(),
        partition: d.partition,
        offset: d.offset,
        generation: d.generation,
        attempt: d.attempt,
    }
}

pub fn delivery_id_from_proto(d: v1::DeliveryId) -> broker::DeliveryId {
    broker::DeliveryId {
        topic: d.topic.into(),
        partition: d.partition,
        offset: d.offset,
        generation: d.generation,
        attempt: d.attempt,
    }
}

/// The gRPC status code of one of Herald's stable error codes.
pub fn grpc_code(code: Code) -> tonic::Code {
    tonic::Code::from_i32(code.grpc_status() as i32)
}

/// A status carrying Herald's stable `code` in its metadata and `message` as its text.
pub fn status(code: Code, message: impl Into<String>) -> tonic::Status {
    let mut s = tonic::Status::new(grpc_code(code), message);
    s.metadata_mut().insert(CODE_KEY, tonic::metadata::MetadataValue::from_static(code.as_str()));
    s
}

/// Herald's stable code of a status: from its metadata, or — for a status that did not come from
/// a Herald server (a transport failure, tonic's own limits, a proxy) — from its gRPC code, by the
/// one rule every client uses: a failure to reach or keep the server is `unavailable`
/// (retryable); tonic's message-size limits are `request_too_large`.
pub fn code_of(s: &tonic::Status) -> Code {
    if let Some(v) = s.metadata().get(CODE_KEY).and_then(|v| v.to_str().ok()) {
        return Code::from_wire(v);
    }
    use tonic::Code as G;
    match s.code() {
        G::InvalidArgument => Code::InvalidArgument,
        G::NotFound => Code::NotFound,
        G::Unimplemented => Code::Unsupported,
        G::OutOfRange | G::ResourceExhausted => Code::RequestTooLarge,
        G::Unavailable | G::DeadlineExceeded | G::Aborted | G::Cancelled | G::Unknown | G::Internal => {
            Code::Unavailable
        }
        _ => Code::Internal,
    }
}

#[cfg(test)]
mod code_tests {
    use super::*;

    #[test]
    fn every_code_crosses_a_status_unchanged_with_its_grpc_status() {
        for &c in Code::ALL {
            let s = status(c, "m");
            assert_eq!(code_of(&s), c);
            assert_eq!(s.code() as i32, c.grpc_status() as i32, "{c}");
            assert_ne!(s.code(), tonic::Code::Unknown, "{c}");
        }
        let _: herald_model::GrpcStatus = Code::Busy.grpc_status();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn truncation_keeps_characters_whole() {
        use super::truncate_utf8;
        assert_eq!(truncate_utf8("abc", 10), "abc");
        assert_eq!(truncate_utf8("abcdef", 3), "abc");
        assert_eq!(truncate_utf8("aé", 2), "a");
    }
}

/// What a group stepped over, for the wire.
pub fn damage_skipped_to_proto(d: &broker::DamageSkipped) -> v1::DamageSkipped {
    v1::DamageSkipped {
        topic: d.topic.clone(),
        partition: d.partition,
        from: d.from,
        to: d.to,
        reason: d.reason.clone(),
        dlq_offset: d.dlq_offset,
        bytes_kept: d.bytes_kept as u64,
    }
}

/// What a group stepped over, from the wire.
pub fn damage_skipped_from_proto(d: v1::DamageSkipped) -> broker::DamageSkipped {
    broker::DamageSkipped {
        topic: d.topic,
        partition: d.partition,
        from: d.from,
        to: d.to,
        reason: d.reason,
        dlq_offset: d.dlq_offset,
        bytes_kept: usize::try_from(d.bytes_kept).unwrap_or(usize::MAX),
    }
}

/// An event's history on the wire.
pub fn event_history_to_proto(h: &herald_model::EventHistory) -> v1::EventHistoryResponse {
    v1::EventHistoryResponse {
        topic: h.topic.clone(),
        partition: h.partition,
        offset: h.offset,
        id: h.id.clone(),
        source: h.source.clone(),
        r#type: h.ty.clone(),
        published_ms: h.published_ms,
        groups: h
            .groups
            .iter()
            .map(|g| v1::GroupHistory {
                group: g.group.clone(),
                entries: g.entries.iter().map(history_entry_to_proto).collect(),
                state: g.state().to_owned(),
            })
            .collect(),
        truncated: h.truncated,
    }
}

fn history_entry_to_proto(e: &herald_model::HistoryEntry) -> v1::HistoryEntry {
    use herald_model::Happened as H;
    let mut p = v1::HistoryEntry { at_ms: e.at_ms, kind: e.what.kind().to_owned(), ..Default::default() };
    match &e.what {
        H::Delivered { attempt, member, topic, partition, offset } => {
            p.attempt = *attempt;
            p.member = member.clone();
            p.topic = topic.clone();
            p.partition = *partition;
            p.offset = *offset;
        }
        H::Acked { handler_us } => {
            p.handler_micros = *handler_us;
        }
        H::Nacked { reason, delay_ms, handler_us } => {
            p.reason = reason.clone();
            p.delay_ms = *delay_ms;
            p.handler_micros = *handler_us;
        }
        H::Rejected { reason, handler_us } => {
            p.reason = reason.clone();
            p.handler_micros = *handler_us;
        }
        H::TimedOut { attempt } => {
            p.attempt = *attempt;
        }
        H::DeadLettered { reason, attempts, dlq_offset } => {
            p.reason = reason.clone();
            p.attempts = *attempts;
            p.dlq_offset = *dlq_offset;
        }
        H::Replayed { topic, partition, offset } => {
            p.topic = topic.clone();
            p.partition = *partition;
            p.offset = *offset;
        }
        H::Done => {}
    }
    p
}

fn history_entry_from_proto(p: v1::HistoryEntry) -> Option<herald_model::HistoryEntry> {
    use herald_model::Happened as H;
    let what = match p.kind.as_str() {
        "delivered" => H::Delivered {
            attempt: p.attempt,
            member: p.member,
            topic: p.topic,
            partition: p.partition,
            offset: p.offset,
        },
        "acked" => H::Acked { handler_us: p.handler_micros },
        "nacked" => H::Nacked { reason: p.reason, delay_ms: p.delay_ms, handler_us: p.handler_micros },
        "rejected" => H::Rejected { reason: p.reason, handler_us: p.handler_micros },
        "timed_out" => H::TimedOut { attempt: p.attempt },
        "dead_lettered" => H::DeadLettered { reason: p.reason, attempts: p.attempts, dlq_offset: p.dlq_offset },
        "replayed" => H::Replayed { topic: p.topic, partition: p.partition, offset: p.offset },
        "done" => H::Done,
        // A kind a newer server knows: left out rather than guessed.
        _ => return None,
    };
    Some(herald_model::HistoryEntry { at_ms: p.at_ms, what })
}

/// An event's history from the wire (entries of kinds this build does not know are left out).
pub fn event_history_from_proto(h: v1::EventHistoryResponse) -> herald_model::EventHistory {
    herald_model::EventHistory {
        topic: h.topic,
        partition: h.partition,
        offset: h.offset,
        id: h.id,
        source: h.source,
        ty: h.r#type,
        published_ms: h.published_ms,
        groups: h
            .groups
            .into_iter()
            .map(|g| herald_model::GroupHistory {
                group: g.group,
                entries: g.entries.into_iter().filter_map(history_entry_from_proto).collect(),
            })
            .collect(),
        truncated: h.truncated,
    }
}

/// A schema format for the wire.
pub fn schema_format_to_proto(f: SchemaFormat) -> v1::SchemaFormat {
    match f {
        SchemaFormat::JsonSchema => v1::SchemaFormat::JsonSchema,
        SchemaFormat::Protobuf => v1::SchemaFormat::Protobuf,
    }
}

fn schema_format_from_proto(f: i32) -> Result<SchemaFormat, String> {
    match v1::SchemaFormat::try_from(f) {
        Ok(v1::SchemaFormat::JsonSchema) => Ok(SchemaFormat::JsonSchema),
        Ok(v1::SchemaFormat::Protobuf) => Ok(SchemaFormat::Protobuf),
        Err(_) => Err(format!("schema format {f} is not JSON_SCHEMA (0) or PROTOBUF (1)")),
    }
}

/// (json_schema, descriptor_set, message) of a schema document of `format`.
fn document_to_proto(format: SchemaFormat, doc: &serde_json::Value) -> Result<(String, Vec<u8>, String), String> {
    match format {
        SchemaFormat::JsonSchema => Ok((doc.to_string(), Vec::new(), String::new())),
        SchemaFormat::Protobuf => {
            let p: ProtobufSchema =
                serde_json::from_value(doc.clone()).map_err(|e| format!("not a Protobuf schema: {e}"))?;
            let set = STANDARD.decode(p.descriptor_set.as_bytes()).map_err(|e| format!("descriptor_set: {e}"))?;
            Ok((String::new(), set, p.message))
        }
    }
}

/// The document of `format` from its wire fields.
fn document_from_proto(
    format: SchemaFormat,
    json_schema: &str,
    descriptor_set: &[u8],
    message: String,
) -> Result<serde_json::Value, String> {
    match format {
        SchemaFormat::JsonSchema => {
            serde_json::from_str(json_schema).map_err(|e| format!("json_schema is not JSON text: {e}"))
        }
        SchemaFormat::Protobuf => {
            serde_json::to_value(ProtobufSchema { message, descriptor_set: STANDARD.encode(descriptor_set) })
                .map_err(|e| e.to_string())
        }
    }
}

fn compatibility_from_proto(s: &str) -> Result<Option<Compatibility>, String> {
    if s.is_empty() { Ok(None) } else { s.parse().map(Some) }
}

/// A registration for the wire (`Err` when the document is no schema of its format).
pub fn new_schema_to_proto(topic: &str, s: &NewSchema) -> Result<v1::SchemaRegistration, String> {
    let (json_schema, descriptor_set, message) = document_to_proto(s.format, &s.schema)?;
    Ok(v1::SchemaRegistration {
        topic: topic.to_owned(),
        r#type: s.ty.clone(),
        format: schema_format_to_proto(s.format) as i32,
        json_schema,
        descriptor_set,
        message,
        compatibility: s.compatibility.map(|c| c.as_str().to_owned()).unwrap_or_default(),
    })
}

/// A registration from the wire: (topic, what to register).
pub fn new_schema_from_proto(r: v1::SchemaRegistration) -> Result<(String, NewSchema), String> {
    let format = schema_format_from_proto(r.format)?;
    let schema = document_from_proto(format, &r.json_schema, &r.descriptor_set, r.message)?;
    let compatibility = compatibility_from_proto(&r.compatibility)?;
    Ok((r.topic, NewSchema { ty: r.r#type, format, schema, compatibility }))
}

/// A registered version for the wire.
pub fn schema_version_to_proto(v: &SchemaVersion) -> v1::SchemaVersion {
    // A stored document always converts: it was checked when it was registered.
    let (json_schema, descriptor_set, message) = document_to_proto(v.format, &v.schema).unwrap_or_default();
    v1::SchemaVersion {
        topic: v.topic.clone(),
        r#type: v.ty.clone(),
        version: v.version,
        format: schema_format_to_proto(v.format) as i32,
        json_schema,
        descriptor_set,
        message,
        registered_ms: v.registered_ms.max(0) as u64,
        compatibility: v.compatibility.as_str().to_owned(),
        dataschema: v.dataschema.clone(),
    }
}

/// A registered version from the wire.
pub fn schema_version_from_proto(v: v1::SchemaVersion) -> Result<SchemaVersion, String> {
    let format = schema_format_from_proto(v.format)?;
    Ok(SchemaVersion {
        schema: document_from_proto(format, &v.json_schema, &v.descriptor_set, v.message)?,
        topic: v.topic,
        ty: v.r#type,
        version: v.version,
        format,
        registered_ms: v.registered_ms as i64,
        compatibility: v.compatibility.parse()?,
        dataschema: v.dataschema,
    })
}

/// A compatibility problem for the wire.
pub fn schema_problem_to_proto(p: &Incompatibility) -> v1::SchemaProblem {
    v1::SchemaProblem { rule: p.rule.to_owned(), version: p.version, path: p.path.clone(), message: p.message.clone() }
}

/// A compatibility problem from the wire.
pub fn schema_problem_from_proto(p: v1::SchemaProblem) -> Incompatibility {
    let rule = if p.rule == "FORWARD" { "FORWARD" } else { "BACKWARD" };
    Incompatibility { rule, version: p.version, path: p.path, message: p.message }
}

/// A topic's schema policy for the wire.
pub fn schema_policy_to_proto(p: &SchemaPolicy) -> v1::SchemaPolicy {
    let unknown = match p.unknown_types {
        UnknownTypes::Allow => "allow",
        UnknownTypes::Refuse => "refuse",
    };
    v1::SchemaPolicy { unknown_types: unknown.to_owned(), compatibility: p.compatibility.as_str().to_owned() }
}

/// A topic's schema policy from the wire (empty fields take their defaults).
pub fn schema_policy_from_proto(p: v1::SchemaPolicy) -> Result<SchemaPolicy, String> {
    let unknown_types = match p.unknown_types.as_str() {
        "" | "allow" => UnknownTypes::Allow,
        "refuse" => UnknownTypes::Refuse,
        other => return Err(format!("unknown_types {other:?} is not allow or refuse")),
    };
    Ok(SchemaPolicy { unknown_types, compatibility: compatibility_from_proto(&p.compatibility)?.unwrap_or_default() })
}
