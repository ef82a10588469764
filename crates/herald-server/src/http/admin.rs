//! Admin over HTTP: topics, groups, resets and dead letters.
//!
//! - `POST /v1/topics` `{"name", "partitions", "retention_ms"?, "retention_bytes"?,
//!   "durability"?, "dedupe_window_ms"?, "max_event_bytes"?, "segment_bytes_max"?,
//!   "if_not_exists"?}` → 201 and the topic (200 when `if_not_exists` found it with the same
//!   settings; 400 `invalid_config` naming the differences when its settings differ);
//! - `GET /v1/topics` → `{"topics": [names]}`; `GET /v1/topics/{t}` → the topic with its
//!   partitions; `DELETE /v1/topics/{t}` → `{"deleted": t}`;
//! - `GET /v1/groups` → `{"groups": [names]}`; `GET /v1/groups/{g}` → settings, members, and per
//!   partition the committed and latest offsets and the lag;
//! - `POST /v1/groups/{g}/reset` `{"to": "earliest" | "latest" | "<RFC 3339 time>"}` → the group
//!   (409 `group_active` while it has members);
//! - `POST /v1/groups/{g}/skip-damaged` `{"topic", "partition"}` → what the group stepped
//!   over (`from`, `to`, `reason`, `dlq_offset`, `bytes_kept`): the stored bytes go to its DLQ
//!   first (400 `invalid_argument` when nothing is damaged at its position, 409 `group_active`
//!   while events before the damage are unsettled);
//! - `GET /v1/groups/{g}/dlq?max=&reason=` → `{"dead_letters": [{"dlq_offset", "event"}],
//!   "truncated"}`, the events as CloudEvents JSON with their `dlq*` headers (only those with
//!   exactly `reason` when given);
//! - `GET /v1/groups/{g}/dlq/reasons` → `{"total", "reasons": [{"reason", "count",
//!   "first_failure_ms", "last_failure_ms"}], "other"}`, the most frequent first;
//! - `POST /v1/groups/{g}/dlq/replay` → `{"replayed": n}`; `DELETE /v1/groups/{g}/dlq` →
//!   `{"purged": n}`; both act on every letter, or with `?reason=R` on those of one reason, or
//!   with `?offsets=3,5,9` on those letters (at most 10,000).

use super::Caller;
use crate::auth::{Action, Resource};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use herald_broker::{Durability, GroupConfig, GroupInfo, TopicConfig, TopicInfo};
use herald_core::Timestamp;
use herald_model::Code;
use herald_model::dead_letter::{Reasons, SELECTED_OFFSETS_MAX, Selection};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::events::event_json;
use super::extract::{JsonBody, Params, Seg};
use super::subscribe::start_from;
use super::{ApiError, Http, blocking};

/// Dead letters a listing returns unless `max` says otherwise.
const DLQ_LIST_DEFAULT: usize = 100;
/// A DLQ listing stops growing once its events pass this many bytes (at least one is listed).
const RESPONSE_BYTES_TARGET: usize = 4 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateTopic {
    name: String,
    partitions: u32,
    retention_ms: Option<u64>,
    retention_bytes: Option<u64>,
    durability: Option<Durability>,
    dedupe_window_ms: Option<u64>,
    max_event_bytes: Option<u64>,
    segment_bytes_max: Option<u64>,
    #[serde(default)]
    if_not_exists: bool,
}

#[derive(Serialize)]
struct PartitionJson {
    partition: u32,
    earliest_offset: u64,
    latest_offset: u64,
    bytes: u64,
    segments: usize,
    /// Damaged, or fenced and why; absent when healthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
}

#[derive(Serialize)]
pub(super) struct TopicJson {
    name: String,
    config: TopicConfig,
    created_ms: i64,
    created: String,
    partitions: Vec<PartitionJson>,
}

fn topic_json(t: TopicInfo) -> TopicJson {
    TopicJson {
        created: Timestamp::from_unix_nanos(t.created_ms.saturating_mul(1_000_000)).to_rfc3339(),
        name: t.name,
        config: t.config,
        created_ms: t.created_ms,
        partitions: t
            .partitions
            .into_iter()
            .map(|p| PartitionJson {
                partition: p.partition,
                earliest_offset: p.earliest_offset,
                latest_offset: p.latest_offset,
                bytes: p.bytes,
                segments: p.segments,
                problem: p.problem,
            })
            .collect(),
    }
}

pub(super) async fn create_topic(
    State(h): State<Http>,
    caller: Caller,
    q: Params,
    JsonBody(req): JsonBody<CreateTopic>,
) -> Result<Response, ApiError> {
    caller.may(Action::Admin, Resource::Topic(&req.name))?;
    q.only(&[])?;
    let d = TopicConfig::default();
    let config = TopicConfig {
        partitions: req.partitions,
        retention_ms: req.retention_ms,
        retention_bytes: req.retention_bytes,
        durability: req.durability.unwrap_or(d.durability),
        dedupe_window_ms: req.dedupe_window_ms.unwrap_or(d.dedupe_window_ms),
        max_event_bytes: req.max_event_bytes.unwrap_or(d.max_event_bytes),
        segment_bytes_max: req.segment_bytes_max.unwrap_or(d.segment_bytes_max),
    };
    let (name, if_not_exists) = (req.name, req.if_not_exists);
    let place = h.app.guard.owners.reserve(&caller.0, &name, config.partitions)?;
    let (info, created) =
        blocking(&h, move |b| crate::auth::owners::create_topic(b, place, &name, config, if_not_exists)).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    let target = super::AuditTarget(format!("topic/{}", info.name));
    Ok((status, axum::Extension(target), Json(topic_json(info))).into_response())
}

pub(super) async fn list_topics(State(h): State<Http>, caller: Caller, q: Params) -> Result<Response, ApiError> {
    q.only(&[])?;
    let mut topics = blocking(&h, |b| Ok(b.list_topics())).await?;
    topics.retain(|t| caller.0.sees(Resource::Topic(t)));
    Ok(Json(serde_json::json!({ "topics": topics })).into_response())
}

pub(super) async fn describe_topic(
    State(h): State<Http>,
    caller: Caller,
    Seg(topic): Seg,
    q: Params,
) -> Result<Json<TopicJson>, ApiError> {
    caller.0.check_any(Resource::Topic(&topic))?;
    q.only(&[])?;
    Ok(Json(topic_json(blocking(&h, move |b| b.describe_topic(&topic)).await?)))
}

pub(super) async fn delete_topic(
    State(h): State<Http>,
    caller: Caller,
    Seg(topic): Seg,
    q: Params,
) -> Result<Response, ApiError> {
    caller.may(Action::Admin, Resource::Topic(&topic))?;
    q.only(&[])?;
    let name = topic.clone();
    let owners = h.app.guard.owners.clone();
    blocking(&h, move |b| crate::auth::owners::delete_topic(b, &owners, &name)).await?;
    Ok(Json(serde_json::json!({ "deleted": topic })).into_response())
}

pub(super) async fn list_groups(State(h): State<Http>, caller: Caller, q: Params) -> Result<Response, ApiError> {
    q.only(&[])?;
    let mut groups = blocking(&h, |b| Ok(b.list_groups())).await?;
    groups.retain(|g| caller.0.sees(Resource::Group(g)));
    Ok(Json(serde_json::json!({ "groups": groups })).into_response())
}

#[derive(Serialize)]
struct GroupPartitionJson {
    topic: String,
    partition: u32,
    owner: Option<String>,
    committed: u64,
    latest: u64,
    lag: u64,
    in_flight: usize,
}

#[derive(Serialize)]
pub(super) struct GroupJson {
    name: String,
    config: GroupConfig,
    generation: u64,
    members: Vec<String>,
    /// Sum of the partitions' lag.
    lag: u64,
    partitions: Vec<GroupPartitionJson>,
}

fn group_json(g: GroupInfo) -> GroupJson {
    GroupJson {
        lag: g.partitions.iter().map(|p| p.lag).sum(),
        name: g.name,
        config: g.config,
        generation: g.generation,
        members: g.members,
        partitions: g
            .partitions
            .into_iter()
            .map(|p| GroupPartitionJson {
                topic: p.topic,
                partition: p.partition,
                owner: p.owner,
                committed: p.committed,
                latest: p.latest,
                lag: p.lag,
                in_flight: p.in_flight,
            })
            .collect(),
    }
}

pub(super) async fn describe_group(
    State(h): State<Http>,
    caller: Caller,
    Seg(group): Seg,
    q: Params,
) -> Result<Json<GroupJson>, ApiError> {
    caller.0.check_any(Resource::Group(&group))?;
    q.only(&[])?;
    Ok(Json(group_json(blocking(&h, move |b| b.describe_group(&group)).await?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Reset {
    to: String,
}

pub(super) async fn reset_group(
    State(h): State<Http>,
    caller: Caller,
    Seg(group): Seg,
    q: Params,
    JsonBody(req): JsonBody<Reset>,
) -> Result<Json<GroupJson>, ApiError> {
    caller.may(Action::Admin, Resource::Group(&group))?;
    q.only(&[])?;
    let to = start_from(&req.to)?;
    Ok(Json(group_json(blocking(&h, move |b| b.reset_group(&group, to)).await?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SkipDamaged {
    topic: String,
    partition: u32,
}

#[derive(Serialize)]
pub(super) struct DamageSkippedJson {
    topic: String,
    partition: u32,
    from: u64,
    to: u64,
    reason: String,
    dlq_offset: u64,
    bytes_kept: usize,
}

pub(super) async fn skip_damaged(
    State(h): State<Http>,
    caller: Caller,
    Seg(group): Seg,
    q: Params,
    JsonBody(req): JsonBody<SkipDamaged>,
) -> Result<Json<DamageSkippedJson>, ApiError> {
    caller.may(Action::Admin, Resource::Group(&group))?;
    q.only(&[])?;
    let s = h.app.broker.skip_damaged(&group, &req.topic, req.partition).await?;
    Ok(Json(DamageSkippedJson {
        topic: s.topic,
        partition: s.partition,
        from: s.from,
        to: s.to,
        reason: s.reason,
        dlq_offset: s.dlq_offset,
        bytes_kept: s.bytes_kept,
    }))
}

#[derive(Serialize)]
struct DeadLetterJson {
    dlq_offset: u64,
    event: Box<RawValue>,
}

#[derive(Serialize)]
pub(super) struct DlqJson {
    dead_letters: Vec<DeadLetterJson>,
    /// More dead letters were listed than fit in one answer: ask again with a smaller `max`
    /// after replaying or purging.
    truncated: bool,
}

/// `GET /v1/groups/{g}/dlq?max=`: oldest first, at most `max` (1 to `max_read_events`, default
/// 100).
pub(super) async fn dlq_list(
    State(h): State<Http>,
    caller: Caller,
    Seg(group): Seg,
    q: Params,
) -> Result<Json<DlqJson>, ApiError> {
    caller.may(Action::Dlq, Resource::Group(&group))?;
    q.only(&["max", "reason"])?;
    let cap = h.app.config.max_read_events;
    let max: usize = q.parse("max", "a number of dead letters")?.unwrap_or(DLQ_LIST_DEFAULT.min(cap));
    if max == 0 {
        return Err(ApiError::invalid(format!("max is 0; ask for 1 to {cap} dead letters")));
    }
    if max > cap {
        return Err(ApiError::new(
            Code::LimitExceeded,
            format!("max is {max} dead letters; the most is {cap} (max_read_events)"),
        ));
    }
    let reason = q.one("reason")?.map(str::to_owned);
    let letters = blocking(&h, move |b| match reason {
        Some(r) => b.dlq_list_reason(&group, &r, max),
        None => b.dlq_list(&group, max),
    })
    .await?;
    let mut dead_letters = Vec::with_capacity(letters.len());
    let mut bytes = 0;
    let mut truncated = false;
    for l in letters {
        let event = event_json(&l.event);
        if !dead_letters.is_empty() && bytes + event.get().len() > RESPONSE_BYTES_TARGET {
            truncated = true;
            break;
        }
        bytes += event.get().len();
        dead_letters.push(DeadLetterJson { dlq_offset: l.dlq_offset, event });
    }
    Ok(Json(DlqJson { dead_letters, truncated }))
}

/// `GET /v1/groups/{g}/dlq/reasons`: the dead letters counted by reason.
pub(super) async fn dlq_reasons(
    State(h): State<Http>,
    caller: Caller,
    Seg(group): Seg,
    q: Params,
) -> Result<Json<Reasons>, ApiError> {
    caller.may(Action::Dlq, Resource::Group(&group))?;
    q.only(&[])?;
    Ok(Json(blocking(&h, move |b| b.dlq_reasons(&group)).await?))
}

/// Which letters a replay or purge acts on: `?reason=R`, `?offsets=3,5,9`, or (neither) all.
fn selection(q: &Params) -> Result<Selection, ApiError> {
    match (q.one("reason")?, q.one("offsets")?) {
        (Some(_), Some(_)) => Err(ApiError::invalid("give reason or offsets, not both")),
        (Some(r), None) => Ok(Selection::Reason(r.to_owned())),
        (None, Some(list)) => {
            let offsets = list
                .split(',')
                .map(|o| {
                    o.trim().parse::<u64>().map_err(|_| {
                        ApiError::invalid(format!("offsets={list:?}: {o:?} is not a DLQ offset; write offsets=3,5,9"))
                    })
                })
                .collect::<Result<std::collections::BTreeSet<u64>, ApiError>>()?;
            if offsets.len() > SELECTED_OFFSETS_MAX {
                return Err(ApiError::new(
                    Code::LimitExceeded,
                    format!("{} offsets selected; the most is {SELECTED_OFFSETS_MAX}: act in parts", offsets.len()),
                ));
            }
            Ok(Selection::Offsets(offsets))
        }
        (None, None) => Ok(Selection::All),
    }
}

/// What the audit trail records a replay or purge acted on: the group, and which letters.
fn audit_target(group: &str, selection: &Selection) -> super::AuditTarget {
    super::AuditTarget(match selection {
        Selection::All => format!("group/{group}"),
        Selection::Reason(r) => format!("group/{group} reason={r:?}"),
        Selection::Offsets(o) => format!("group/{group} offsets={}", o.len()),
    })
}

/// `POST /v1/groups/{g}/dlq/replay[?reason=R | ?offsets=…]`.
pub(super) async fn dlq_replay(
    State(h): State<Http>,
    caller: Caller,
    Seg(group): Seg,
    q: Params,
) -> Result<Response, ApiError> {
    caller.may(Action::Dlq, Resource::Group(&group))?;
    q.only(&["reason", "offsets"])?;
    let selection = selection(&q)?;
    let target = audit_target(&group, &selection);
    let replayed = h.app.broker.dlq_replay_selected(&group, &selection).await?;
    Ok((axum::Extension(target), Json(serde_json::json!({ "replayed": replayed }))).into_response())
}

/// `DELETE /v1/groups/{g}/dlq[?reason=R | ?offsets=…]`.
pub(super) async fn dlq_purge(
    State(h): State<Http>,
    caller: Caller,
    Seg(group): Seg,
    q: Params,
) -> Result<Response, ApiError> {
    caller.may(Action::Dlq, Resource::Group(&group))?;
    q.only(&["reason", "offsets"])?;
    let selection = selection(&q)?;
    let target = audit_target(&group, &selection);
    let purged = h.app.broker.dlq_purge_selected(&group, &selection).await?;
    Ok((axum::Extension(target), Json(serde_json::json!({ "purged": purged }))).into_response())
}
