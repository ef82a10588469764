//! The backend traits: what the SDK needs from a broker. Designed for a remote, fallible broker
//! (every call is async and may fail with a retryable error); the embedded broker implements them
//! in-process, later backends over the network.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use herald_core::Event;

/// Where a published event was stored (the same type on every backend).
pub use herald_model::Receipt;
pub use herald_model::{
    DamageSkipped, DeadLetter, EventHistory, GroupConfig, GroupHistory, GroupInfo, GroupPartitionInfo, Happened,
    HistoryEntry, OrderingMode, PartitionInfo, RetryPolicy, StartFrom, StoredEvent, TopicConfig, TopicInfo,
};

use herald_model::schema::{Incompatibility, NewSchema, SchemaPolicy, SchemaVersion};

use crate::error::{Code, Error, Result};

fn unsupported(what: &str) -> Error {
    Error::new(Code::Unsupported, format!("this backend does not support {what}"))
}

/// What a backend can do, so that callers (and the conformance suite) adapt to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Survives a restart of the process (or of the server).
    pub durable: bool,
    /// Attempt counts survive restarts.
    pub durable_attempts: bool,
    /// Topics, groups and the DLQ can be administered through the client.
    pub admin: bool,
    /// Republishing an event id within the window stores it once.
    pub dedupe: bool,
    /// The broker itself delivers a key's events one at a time.
    pub key_ordering: bool,
    /// The broker keeps each event's history per group ([`Backend::event_history`]).
    pub event_history: bool,
    /// Schemas per topic and event type are kept, and events are validated against them before
    /// they are stored ([`Backend::register_schema`]; by the broker, or by this SDK on NATS).
    pub schemas: bool,
}

/// A delivered event with its metadata.
#[derive(Clone)]
pub struct Message {
    /// The event.
    pub event: Event,
    /// Topic it came from.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// Delivery attempt, from 1.
    pub attempt: u32,
    /// When the broker appended it (ms since the Unix epoch).
    pub append_time_ms: i64,
    /// How long the handler ran: the consumer runtime sets it before settling, and a backend
    /// that keeps event history reports it with the settle.
    pub handler_duration: Option<Duration>,
    /// The backend's handle for settling it.
    pub(crate) token: Arc<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("event", &self.event)
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .field("attempt", &self.attempt)
            .finish()
    }
}

/// How a group subscribes.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscribeOptions {
    /// Topics.
    pub topics: Vec<String>,
    /// Where a new group starts.
    pub start: StartFrom,
    /// Order the broker keeps.
    pub ordering: OrderingMode,
    /// Redeliver when not settled within this.
    pub ack_timeout: Duration,
    /// Leave the group when silent this long.
    pub session_timeout: Duration,
    /// Attempts and backoff.
    pub retry: RetryPolicy,
    /// Most unsettled messages held.
    pub max_in_flight: u32,
    /// Whether a failing event holds back the later events of its key until it succeeds or is
    /// dead-lettered (`true`, order kept) or lets them pass (`false`).
    pub blocking_retries: bool,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            topics: Vec::new(),
            start: StartFrom::Earliest,
            ordering: OrderingMode::Key,
            ack_timeout: Duration::from_secs(30),
            session_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            max_in_flight: 256,
            blocking_retries: true,
        }
    }
}

impl SubscribeOptions {
    /// The group settings these options ask for, on every backend (settings the options do not
    /// name take the broker's defaults).
    pub(crate) fn group_config(&self) -> herald_model::GroupConfig {
        herald_model::GroupConfig {
            topics: self.topics.clone(),
            start: self.start,
            ordering: self.ordering,
            ack_timeout_ms: self.ack_timeout.as_millis().max(1) as u64,
            session_timeout_ms: self.session_timeout.as_millis().max(1) as u64,
            retry: self.retry,
            blocking_retries: self.blocking_retries,
            ..herald_model::GroupConfig::default()
        }
    }
}

/// The caller as a backend authenticated it ([`Backend::whoami`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's name, or `anonymous`.
    pub principal: String,
    /// No credentials needed: the backend lets everyone do everything.
    pub anonymous: bool,
    /// `ACTION:PATTERN` permissions (`publish:orders.*`, `admin:*`).
    pub permissions: Vec<String>,
    /// When the credentials expire, ms since the Unix epoch.
    pub expires_ms: Option<u64>,
}

/// A broker the SDK talks to.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// What it can do.
    fn capabilities(&self) -> Capabilities;
    /// Publishes events to a topic; one receipt per event, in order.
    async fn publish(&self, topic: &str, events: Vec<Event>) -> Result<Vec<Receipt>>;
    /// Joins `group` (creating it if needed) as a new member.
    async fn subscribe(&self, group: &str, options: SubscribeOptions) -> Result<Box<dyn Subscription>>;
    /// Creates a topic unless it exists.
    async fn ensure_topic(&self, topic: &str, config: TopicConfig) -> Result<()>;
    /// Deletes a topic.
    async fn delete_topic(&self, topic: &str) -> Result<()>;
    /// Topic names.
    async fn list_topics(&self) -> Result<Vec<String>>;
    /// Lag per partition of a group's topics: `(topic, partition, lag)`.
    async fn group_lag(&self, group: &str) -> Result<Vec<(String, u32, u64)>>;
    /// The group's dead letters, oldest first.
    async fn dlq_list(&self, group: &str, max: usize) -> Result<Vec<Event>>;
    /// Sends the group's dead letters back to it only; returns how many.
    async fn dlq_replay(&self, group: &str) -> Result<usize>;
    /// Flushes and closes.
    async fn close(&self) -> Result<()>;

    /// A topic's settings and partitions.
    async fn describe_topic(&self, topic: &str) -> Result<TopicInfo> {
        let _ = topic;
        Err(unsupported("describing topics"))
    }
    /// Group names.
    async fn list_groups(&self) -> Result<Vec<String>> {
        Err(unsupported("listing groups"))
    }
    /// A group's settings, members, positions and lag per partition.
    async fn describe_group(&self, group: &str) -> Result<GroupInfo> {
        let _ = group;
        Err(unsupported("describing groups"))
    }
    /// Moves every position of a group that has no members to `to`.
    async fn reset_group(&self, group: &str, to: StartFrom) -> Result<GroupInfo> {
        let _ = (group, to);
        Err(unsupported("resetting groups"))
    }
    /// Steps a group over the damaged stretch at its position in one partition, keeping the
    /// stored bytes in its DLQ (see `herald_broker::Broker::skip_damaged`).
    async fn skip_damaged(&self, group: &str, topic: &str, partition: u32) -> Result<DamageSkipped> {
        let _ = (group, topic, partition);
        Err(unsupported("stepping over damaged data"))
    }
    /// The group's dead letters with their DLQ offsets, oldest first.
    async fn dead_letters(&self, group: &str, max: usize) -> Result<Vec<DeadLetter>> {
        let _ = (group, max);
        Err(unsupported("listing dead letters with offsets"))
    }
    /// Deletes the group's dead letters; returns how many there were.
    async fn dlq_purge(&self, group: &str) -> Result<u64> {
        let _ = group;
        Err(unsupported("purging dead letters"))
    }
    /// Who the backend takes the caller for, and what it may do.
    async fn whoami(&self) -> Result<Identity> {
        Err(unsupported("telling who the caller is"))
    }
    /// What happened to the event at `topic`/`partition`@`offset` in each group reading the
    /// topic ([`Capabilities::event_history`]).
    async fn event_history(&self, topic: &str, partition: u32, offset: u64) -> Result<EventHistory> {
        let _ = (topic, partition, offset);
        Err(unsupported("event history"))
    }
    /// [`Backend::event_history`] of the event with `id` on `topic`.
    async fn event_history_by_id(&self, topic: &str, id: &str) -> Result<EventHistory> {
        let _ = (topic, id);
        Err(unsupported("event history"))
    }
    /// Stored events of one partition from `offset`, at most `max`.
    async fn read(&self, topic: &str, partition: u32, offset: u64, max: usize) -> Result<Vec<StoredEvent>> {
        let _ = (topic, partition, offset, max);
        Err(unsupported("browsing stored events"))
    }
    /// Registers `schema` as the next version of its type's schema on `topic`, if it follows
    /// the type's compatibility rule (`schema_incompatible` names each change that breaks it).
    async fn register_schema(&self, topic: &str, schema: &NewSchema) -> Result<SchemaVersion> {
        let _ = (topic, schema);
        Err(unsupported("schemas"))
    }
    /// What registering `schema` would break (empty: nothing), registering nothing.
    async fn check_schema(&self, topic: &str, schema: &NewSchema) -> Result<Vec<Incompatibility>> {
        let _ = (topic, schema);
        Err(unsupported("schemas"))
    }
    /// `topic`'s schema policy and the latest version of each type's schema.
    async fn list_schemas(&self, topic: &str) -> Result<(SchemaPolicy, Vec<SchemaVersion>)> {
        let _ = topic;
        Err(unsupported("schemas"))
    }
    /// `ty`'s schema on `topic` at `version` (the latest when `None`).
    async fn schema(&self, topic: &str, ty: &str, version: Option<u32>) -> Result<SchemaVersion> {
        let _ = (topic, ty, version);
        Err(unsupported("schemas"))
    }
    /// Removes every version of `ty`'s schema on `topic`; returns how many there were.
    async fn delete_schema(&self, topic: &str, ty: &str) -> Result<usize> {
        let _ = (topic, ty);
        Err(unsupported("schemas"))
    }
    /// Sets what `topic` does with events of types without a schema, and its default rule.
    async fn set_schema_policy(&self, topic: &str, policy: SchemaPolicy) -> Result<SchemaPolicy> {
        let _ = (topic, policy);
        Err(unsupported("schemas"))
    }
    /// The AsyncAPI 3.0 document of the live system (topics, event types with their schemas,
    /// consumer groups). By default built from this backend's own listings (groups' `.dlq` and
    /// `.replay` topics left out); a server builds its own (with what the caller may see).
    async fn asyncapi(&self) -> Result<serde_json::Value> {
        let groups = match self.list_groups().await {
            Ok(g) => g,
            Err(e) if e.code() == Code::Unsupported => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut readers: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for g in &groups {
            // A group deleted since the listing is left out.
            if let Ok(info) = self.describe_group(g).await {
                for t in info.config.topics {
                    readers.entry(t).or_default().push(g.clone());
                }
            }
        }
        let mut channels = Vec::new();
        for topic in self.list_topics().await? {
            if herald_model::dead_letter::dead_letter_group(&topic).is_some_and(|g| groups.iter().any(|x| x == g)) {
                continue;
            }
            let (policy, schemas) = match self.list_schemas(&topic).await {
                Ok(s) => s,
                Err(e) if e.code() == Code::Unsupported => Default::default(),
                Err(e) if e.code() == Code::TopicNotFound => continue,
                Err(e) => return Err(e),
            };
            let readers = readers.remove(&topic).unwrap_or_default();
            channels.push(herald_schema::asyncapi::Channel { topic, policy, schemas, readers });
        }
        Ok(herald_schema::asyncapi::document(&channels, None, |topic| {
            format!("Herald topic {topic:?}: publish with the SDK or `herald publish {topic}`")
        }))
    }
}

/// One member of a consumer group.
#[async_trait]
pub trait Subscription: Send + Sync {
    /// The group's settings in effect: the stored ones, which may differ from what the
    /// subscription asked for (settings belong to the group). Backoff, attempts, dead letters
    /// and order follow these on every backend.
    fn settings(&self) -> &GroupConfig;
    /// Waits up to `wait` for messages; at most `max`.
    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Message>>;
    /// Done with it.
    async fn ack(&self, message: &Message) -> Result<()>;
    /// Failed: redeliver after `delay`, or after the backoff.
    async fn nack(&self, message: &Message, delay: Option<Duration>, reason: &str) -> Result<()>;
    /// Failed for good: to the DLQ now.
    async fn reject(&self, message: &Message, reason: &str) -> Result<()>;
    /// Keeps the membership alive while the consumer holds events and fetches nothing (slow
    /// handlers). Backends whose membership lives with their connection need nothing here.
    async fn heartbeat(&self) -> Result<()> {
        Ok(())
    }
    /// Leaves the group.
    async fn close(&self) -> Result<()>;
}
