//! Broker and topic configuration. Every limit is a named constant and a field, validated once.

use serde::{Deserialize, Serialize};

use crate::error::{BrokerError, Result};

/// Default most topics per broker.
pub const TOPICS_MAX_DEFAULT: u32 = 10_000;
/// Default most partitions per topic.
pub const PARTITIONS_PER_TOPIC_MAX_DEFAULT: u32 = 1024;
/// Default most consumer groups per broker.
pub const GROUPS_MAX_DEFAULT: u32 = 10_000;
/// Default most members per group.
pub const MEMBERS_PER_GROUP_MAX_DEFAULT: u32 = 1024;
/// Default most unacknowledged events per member.
pub const IN_FLIGHT_MAX_DEFAULT: u32 = 10_000;
/// Default most events waiting in one partition's write queue.
pub const WRITE_QUEUE_EVENTS_MAX_DEFAULT: usize = 100_000;
/// Default most events appended in one write (one log batch).
pub const WRITE_BATCH_EVENTS_MAX_DEFAULT: usize = 10_000;
/// Default dedupe window (2 minutes, like JetStream's duplicate window).
pub const DEDUPE_WINDOW_MS_DEFAULT: u64 = 120_000;
/// Default most remembered event ids per partition for dedupe.
pub const DEDUPE_ENTRIES_MAX_DEFAULT: usize = 1_000_000;
/// Default largest event, encoded (1 MiB).
pub const EVENT_BYTES_MAX_DEFAULT: u64 = 1024 * 1024;
/// Largest allowed `max_event_bytes` (64 MiB).
pub const EVENT_BYTES_MAX_MAX: u64 = 64 * 1024 * 1024;

/// Limits of one broker. In a config file every field is optional (the default applies) and an
/// unknown one is an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// Most topics (DLQ topics included).
    pub topics_max: u32,
    /// Most partitions per topic.
    pub partitions_per_topic_max: u32,
    /// Most consumer groups.
    pub groups_max: u32,
    /// Most members per group.
    pub members_per_group_max: u32,
    /// Most unacknowledged events a member may hold, whatever it asks for.
    pub in_flight_max: u32,
    /// Most events waiting in one partition's write queue; beyond, publishers get `busy`.
    pub write_queue_events_max: usize,
    /// Most events the partition writer appends in one batch.
    pub write_batch_events_max: usize,
    /// Most remembered event ids per partition for dedupe; beyond, the oldest are forgotten early.
    pub dedupe_entries_max: usize,
    /// How often retention runs over every partition.
    pub retention_check_ms: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            topics_max: TOPICS_MAX_DEFAULT,
            partitions_per_topic_max: PARTITIONS_PER_TOPIC_MAX_DEFAULT,
            groups_max: GROUPS_MAX_DEFAULT,
            members_per_group_max: MEMBERS_PER_GROUP_MAX_DEFAULT,
            in_flight_max: IN_FLIGHT_MAX_DEFAULT,
            write_queue_events_max: WRITE_QUEUE_EVENTS_MAX_DEFAULT,
            write_batch_events_max: WRITE_BATCH_EVENTS_MAX_DEFAULT,
            dedupe_entries_max: DEDUPE_ENTRIES_MAX_DEFAULT,
            retention_check_ms: 60_000,
        }
    }
}

fn positive(name: &str, value: u64) -> Result<()> {
    if value == 0 {
        return Err(BrokerError::InvalidConfig(format!("{name} is 0; it must be at least 1")));
    }
    Ok(())
}

impl BrokerConfig {
    /// Checks that every limit is at least 1.
    pub fn validate(&self) -> Result<()> {
        positive("topics_max", self.topics_max.into())?;
        positive("partitions_per_topic_max", self.partitions_per_topic_max.into())?;
        positive("groups_max", self.groups_max.into())?;
        positive("members_per_group_max", self.members_per_group_max.into())?;
        positive("in_flight_max", self.in_flight_max.into())?;
        positive("write_queue_events_max", self.write_queue_events_max as u64)?;
        positive("write_batch_events_max", self.write_batch_events_max as u64)?;
        positive("dedupe_entries_max", self.dedupe_entries_max as u64)?;
        positive("retention_check_ms", self.retention_check_ms)
    }
}

/// When a publish is acknowledged; see `docs/durability.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Durability {
    /// fsync before the publish is acknowledged (group commit across publishers).
    #[default]
    Always,
    /// fsync every `ms` milliseconds.
    Interval {
        /// Milliseconds between fsyncs.
        ms: u64,
    },
    /// Leave write-back to the operating system.
    Os,
}

impl From<Durability> for herald_log::Durability {
    fn from(d: Durability) -> Self {
        match d {
            Durability::Always => herald_log::Durability::Always,
            Durability::Interval { ms } => herald_log::Durability::Interval { ms },
            Durability::Os => herald_log::Durability::Os,
        }
    }
}

/// A topic's settings, stored with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// Number of partitions (at least 1).
    pub partitions: u32,
    /// Delete sealed segments older than this, if set.
    pub retention_ms: Option<u64>,
    /// Keep each partition near this many bytes, if set.
    pub retention_bytes: Option<u64>,
    /// When publishes are acknowledged.
    pub durability: Durability,
    /// Republishing an event `(source, id)` within this window stores it once.
    pub dedupe_window_ms: u64,
    /// Largest event accepted, encoded.
    pub max_event_bytes: u64,
    /// Segment size of each partition log (retention deletes whole segments).
    pub segment_bytes_max: u64,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            partitions: 1,
            retention_ms: None,
            retention_bytes: None,
            durability: Durability::Always,
            dedupe_window_ms: DEDUPE_WINDOW_MS_DEFAULT,
            max_event_bytes: EVENT_BYTES_MAX_DEFAULT,
            segment_bytes_max: herald_log::SEGMENT_BYTES_MAX_DEFAULT,
        }
    }
}

impl TopicConfig {
    /// A topic with `partitions` partitions and defaults otherwise.
    pub fn with_partitions(partitions: u32) -> Self {
        TopicConfig { partitions, ..Default::default() }
    }

    pub(crate) fn validate(&self, broker: &BrokerConfig) -> Result<()> {
        positive("partitions", self.partitions.into())?;
        if self.partitions > broker.partitions_per_topic_max {
            return Err(BrokerError::LimitExceeded {
                name: "partitions",
                value: self.partitions.into(),
                limit: broker.partitions_per_topic_max.into(),
                key: "partitions_per_topic_max",
            });
        }
        if self.max_event_bytes == 0 || self.max_event_bytes > EVENT_BYTES_MAX_MAX {
            return Err(BrokerError::InvalidConfig(format!(
                "max_event_bytes is {}; it must be between 1 and {EVENT_BYTES_MAX_MAX}",
                self.max_event_bytes
            )));
        }
        self.log_config().validate().map_err(|e| BrokerError::InvalidConfig(e.to_string()))?;
        Ok(())
    }

    pub(crate) fn log_config(&self) -> herald_log::LogConfig {
        let record = u32::try_from(self.max_event_bytes).unwrap_or(u32::MAX);
        let defaults = herald_log::LogConfig::default();
        herald_log::LogConfig {
            durability: self.durability.into(),
            retention: herald_log::Retention { age_ms: self.retention_ms, bytes: self.retention_bytes },
            record_bytes_max: record,
            segment_bytes_max: self.segment_bytes_max,
            batch_bytes_max: defaults.batch_bytes_max.max(record.saturating_add(64)),
            ..defaults
        }
    }
}

/// Checks a topic or group name: `[A-Za-z0-9._-]{1,200}`, not `.` or `..`.
pub(crate) fn valid_name(name: &str) -> bool {
    (1..=200).contains(&name.len())
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}
