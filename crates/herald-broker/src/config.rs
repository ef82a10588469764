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
/// Default most remembered event ids per partition for dedupe.
pub const DEDUPE_ENTRIES_MAX_DEFAULT: usize = 1_000_000;

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
    /// Most bytes of event history kept per group (deliveries, settles, dead letters, replays;
    /// `herald event history`); 0 keeps none.
    pub history_bytes_max: u64,
    /// Event history older than this is deleted (per group, whole segments at a time).
    pub history_retention_ms: u64,
}

/// Default most bytes of event history per group.
pub const HISTORY_BYTES_MAX_DEFAULT: u64 = 64 << 20;
/// Longest `history_retention_ms`: 10 years.
pub const HISTORY_RETENTION_MS_MAX: u64 = 3650 * 24 * 3600 * 1000;
/// Largest `history_bytes_max`: 1 TiB.
pub const HISTORY_BYTES_MAX_MAX: u64 = 1 << 40;
/// Default age of the oldest event history kept: 7 days.
pub const HISTORY_RETENTION_MS_DEFAULT: u64 = 7 * 24 * 3600 * 1000;

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
            history_bytes_max: HISTORY_BYTES_MAX_DEFAULT,
            history_retention_ms: HISTORY_RETENTION_MS_DEFAULT,
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
        positive("retention_check_ms", self.retention_check_ms)?;
        positive("history_retention_ms", self.history_retention_ms)?;
        if self.history_retention_ms > HISTORY_RETENTION_MS_MAX {
            return Err(BrokerError::InvalidConfig(format!(
                "history_retention_ms is {}; the most is {HISTORY_RETENTION_MS_MAX} (10 years)",
                self.history_retention_ms
            )));
        }
        if self.history_bytes_max > HISTORY_BYTES_MAX_MAX {
            return Err(BrokerError::InvalidConfig(format!(
                "history_bytes_max is {}; the most is {HISTORY_BYTES_MAX_MAX} (1 TiB per group)",
                self.history_bytes_max
            )));
        }
        Ok(())
    }
}

pub use herald_model::{
    DEDUPE_WINDOW_MS_DEFAULT, Durability, EVENT_BYTES_MAX_DEFAULT, EVENT_BYTES_MAX_MAX, TopicConfig,
};

// The model's default segment size is the log's.
const _: () = assert!(herald_model::SEGMENT_BYTES_MAX_DEFAULT == herald_log::SEGMENT_BYTES_MAX_DEFAULT);

/// The log's durability for a setting.
pub(crate) fn log_durability(d: Durability) -> herald_log::Durability {
    match d {
        Durability::Always => herald_log::Durability::Always,
        Durability::Interval { ms } => herald_log::Durability::Interval { ms },
        Durability::Os => herald_log::Durability::Os,
    }
}

/// Checks a topic's settings against the model's rules, this broker's limits and the log's.
pub(crate) fn validate_topic(config: &TopicConfig, broker: &BrokerConfig) -> Result<()> {
    config.validate()?;
    if config.partitions > broker.partitions_per_topic_max {
        return Err(BrokerError::LimitExceeded {
            name: "partitions",
            value: config.partitions.into(),
            limit: broker.partitions_per_topic_max.into(),
            key: "partitions_per_topic_max",
        });
    }
    log_config(config).validate().map_err(|e| BrokerError::InvalidConfig(e.to_string()))?;
    Ok(())
}

/// The log settings of a topic's partitions.
pub(crate) fn log_config(config: &TopicConfig) -> herald_log::LogConfig {
    let record = u32::try_from(config.max_event_bytes).unwrap_or(u32::MAX);
    let defaults = herald_log::LogConfig::default();
    herald_log::LogConfig {
        durability: log_durability(config.durability),
        retention: herald_log::Retention { age_ms: config.retention_ms, bytes: config.retention_bytes },
        record_bytes_max: record,
        segment_bytes_max: config.segment_bytes_max,
        batch_bytes_max: defaults.batch_bytes_max.max(record.saturating_add(64)),
        ..defaults
    }
}

pub(crate) use herald_model::valid_name;
