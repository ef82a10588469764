//! The forms in which settings are written to disk (the embedded broker's `topic.json` and
//! `group.json`) and into NATS metadata. They are separate from the API types
//! ([`crate::TopicConfig`], [`crate::GroupConfig`]), so either can change without breaking the
//! other, and they are versioned:
//!
//! - every stored form carries `format` (absent in what main wrote before formats existed:
//!   that is format 1);
//! - a reader accepts every format up to [`SETTINGS_FORMAT`]; a field missing from an older
//!   file takes its default, and a field it does not know (written by a newer Herald of the same
//!   format) is ignored, so a rollback within a format opens too;
//! - a format above [`SETTINGS_FORMAT`] is refused with an error that says to upgrade.
//!
//! The promise is stated in `docs/durability.md` ("Upgrades and rollbacks").

use serde::{Deserialize, Serialize};

use crate::settings::{Durability, GroupConfig, OrderingMode, RetryPolicy, StartFrom, TopicConfig};

/// The newest settings format this build writes and reads.
pub const SETTINGS_FORMAT: u32 = 1;

fn format_1() -> u32 {
    1
}

/// A stored form this build cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// Written by a newer Herald.
    #[error(
        "{what} has format {found}; this build of Herald reads formats up to {supported}: upgrade Herald to open it"
    )]
    TooNew {
        /// What was read.
        what: String,
        /// Its format.
        found: u32,
        /// The newest this build reads.
        supported: u32,
    },
    /// Not valid JSON of the stored form.
    #[error("{what} cannot be read: {reason}")]
    Malformed {
        /// What was read.
        what: String,
        /// The parser's reason.
        reason: String,
    },
}

/// Reads a stored form from JSON, checking its format.
pub fn read<T: Stored>(what: &str, json: &[u8]) -> Result<T, StorageError> {
    let value: T = serde_json::from_slice(json)
        .map_err(|e| StorageError::Malformed { what: what.to_owned(), reason: e.to_string() })?;
    if value.format() > SETTINGS_FORMAT {
        return Err(StorageError::TooNew { what: what.to_owned(), found: value.format(), supported: SETTINGS_FORMAT });
    }
    Ok(value)
}

/// Writes a stored form as JSON.
pub fn write<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec_pretty(value).expect("stored forms serialize")
}

/// A versioned stored form.
pub trait Stored: for<'de> Deserialize<'de> + Serialize {
    /// Its format version.
    fn format(&self) -> u32;
}

/// [`Durability`] as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoredDurability {
    /// fsync per write.
    Always,
    /// fsync every `ms`.
    Interval {
        /// Milliseconds.
        ms: u64,
    },
    /// OS write-back.
    Os,
}

impl From<Durability> for StoredDurability {
    fn from(d: Durability) -> Self {
        match d {
            Durability::Always => StoredDurability::Always,
            Durability::Interval { ms } => StoredDurability::Interval { ms },
            Durability::Os => StoredDurability::Os,
        }
    }
}

impl From<StoredDurability> for Durability {
    fn from(d: StoredDurability) -> Self {
        match d {
            StoredDurability::Always => Durability::Always,
            StoredDurability::Interval { ms } => Durability::Interval { ms },
            StoredDurability::Os => Durability::Os,
        }
    }
}

/// [`TopicConfig`] as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[allow(missing_docs)]
pub struct StoredTopicConfig {
    #[serde(default = "format_1")]
    pub format: u32,
    pub partitions: u32,
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    pub durability: StoredDurability,
    pub dedupe_window_ms: u64,
    pub max_event_bytes: u64,
    pub segment_bytes_max: u64,
}

impl Default for StoredTopicConfig {
    fn default() -> Self {
        let mut s = StoredTopicConfig::from(&TopicConfig::default());
        s.format = 1;
        s
    }
}

impl Stored for StoredTopicConfig {
    fn format(&self) -> u32 {
        self.format
    }
}

impl From<&TopicConfig> for StoredTopicConfig {
    fn from(c: &TopicConfig) -> Self {
        StoredTopicConfig {
            format: SETTINGS_FORMAT,
            partitions: c.partitions,
            retention_ms: c.retention_ms,
            retention_bytes: c.retention_bytes,
            durability: c.durability.into(),
            dedupe_window_ms: c.dedupe_window_ms,
            max_event_bytes: c.max_event_bytes,
            segment_bytes_max: c.segment_bytes_max,
        }
    }
}

impl From<StoredTopicConfig> for TopicConfig {
    fn from(s: StoredTopicConfig) -> Self {
        TopicConfig {
            partitions: s.partitions,
            retention_ms: s.retention_ms,
            retention_bytes: s.retention_bytes,
            durability: s.durability.into(),
            dedupe_window_ms: s.dedupe_window_ms,
            max_event_bytes: s.max_event_bytes,
            segment_bytes_max: s.segment_bytes_max,
        }
    }
}

/// [`StartFrom`] as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum StoredStart {
    Earliest,
    Latest,
    Timestamp(i64),
}

/// [`OrderingMode`] as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum StoredOrdering {
    Key,
    Partition,
    None,
}

/// [`RetryPolicy`] as stored.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[allow(missing_docs)]
pub struct StoredRetry {
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_factor: f64,
    pub backoff_max_ms: u64,
    pub jitter: f64,
}

impl Default for StoredRetry {
    fn default() -> Self {
        StoredRetry::from(&RetryPolicy::default())
    }
}

impl From<&RetryPolicy> for StoredRetry {
    fn from(r: &RetryPolicy) -> Self {
        StoredRetry {
            max_attempts: r.max_attempts,
            backoff_base_ms: r.backoff_base_ms,
            backoff_factor: r.backoff_factor,
            backoff_max_ms: r.backoff_max_ms,
            jitter: r.jitter,
        }
    }
}

/// [`GroupConfig`] as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[allow(missing_docs)]
pub struct StoredGroupConfig {
    #[serde(default = "format_1")]
    pub format: u32,
    pub topics: Vec<String>,
    pub start: StoredStart,
    pub ordering: StoredOrdering,
    pub ack_timeout_ms: u64,
    pub session_timeout_ms: u64,
    pub retry: StoredRetry,
    pub dlq_events_max: u64,
    pub replays_max: u32,
    pub blocking_retries: bool,
    pub state_durability: StoredDurability,
}

impl Default for StoredGroupConfig {
    fn default() -> Self {
        let mut s = StoredGroupConfig::from(&GroupConfig::default());
        s.format = 1;
        s
    }
}

impl Stored for StoredGroupConfig {
    fn format(&self) -> u32 {
        self.format
    }
}

impl From<&GroupConfig> for StoredGroupConfig {
    fn from(c: &GroupConfig) -> Self {
        StoredGroupConfig {
            format: SETTINGS_FORMAT,
            topics: c.topics.clone(),
            start: match c.start {
                StartFrom::Earliest => StoredStart::Earliest,
                StartFrom::Latest => StoredStart::Latest,
                StartFrom::Timestamp(t) => StoredStart::Timestamp(t),
            },
            ordering: match c.ordering {
                OrderingMode::Key => StoredOrdering::Key,
                OrderingMode::Partition => StoredOrdering::Partition,
                OrderingMode::None => StoredOrdering::None,
            },
            ack_timeout_ms: c.ack_timeout_ms,
            session_timeout_ms: c.session_timeout_ms,
            retry: StoredRetry::from(&c.retry),
            dlq_events_max: c.dlq_events_max,
            replays_max: c.replays_max,
            blocking_retries: c.blocking_retries,
            state_durability: c.state_durability.into(),
        }
    }
}

impl From<StoredGroupConfig> for GroupConfig {
    fn from(s: StoredGroupConfig) -> Self {
        GroupConfig {
            topics: s.topics,
            start: match s.start {
                StoredStart::Earliest => StartFrom::Earliest,
                StoredStart::Latest => StartFrom::Latest,
                StoredStart::Timestamp(t) => StartFrom::Timestamp(t),
            },
            ordering: match s.ordering {
                StoredOrdering::Key => OrderingMode::Key,
                StoredOrdering::Partition => OrderingMode::Partition,
                StoredOrdering::None => OrderingMode::None,
            },
            ack_timeout_ms: s.ack_timeout_ms,
            session_timeout_ms: s.session_timeout_ms,
            retry: RetryPolicy {
                max_attempts: s.retry.max_attempts,
                backoff_base_ms: s.retry.backoff_base_ms,
                backoff_factor: s.retry.backoff_factor,
                backoff_max_ms: s.retry.backoff_max_ms,
                jitter: s.retry.jitter,
            },
            dlq_events_max: s.dlq_events_max,
            replays_max: s.replays_max,
            blocking_retries: s.blocking_retries,
            state_durability: s.state_durability.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `group.json` exactly as main wrote it on 2026-11-30 (no `format`).
    const GROUP_JSON_BEFORE_FORMATS: &str = r#"{
  "topics": ["orders"],
  "start": "earliest",
  "ordering": "key",
  "ack_timeout_ms": 30000,
  "session_timeout_ms": 10000,
  "retry": {"max_attempts": 3, "backoff_base_ms": 1, "backoff_factor": 2.0, "backoff_max_ms": 10, "jitter": 0.0},
  "dlq_events_max": 1000000,
  "replays_max": 3,
  "blocking_retries": true,
  "state_durability": {"interval": {"ms": 50}}
}"#;

    #[test]
    fn settings_written_before_formats_existed_read_as_format_1() {
        let s: StoredGroupConfig = read("group.json", GROUP_JSON_BEFORE_FORMATS.as_bytes()).unwrap();
        assert_eq!(s.format, 1);
        let c = GroupConfig::from(s);
        assert_eq!(c.retry.max_attempts, 3);
        assert_eq!(c.state_durability, Durability::Interval { ms: 50 });
        let t: StoredTopicConfig = read(
            "topic",
            br#"{"partitions": 3, "retention_ms": null, "retention_bytes": null,
            "durability": "always", "dedupe_window_ms": 5, "max_event_bytes": 10, "segment_bytes_max": 1048576}"#,
        )
        .unwrap();
        assert_eq!(TopicConfig::from(t).partitions, 3);
    }

    #[test]
    fn missing_fields_take_defaults_and_unknown_ones_are_ignored() {
        let s: StoredGroupConfig = read("group.json", br#"{"topics": ["t"], "a_field_from_the_future": 1}"#).unwrap();
        let c = GroupConfig::from(s);
        assert_eq!(c, GroupConfig::for_topics(["t"]));
    }

    #[test]
    fn a_newer_format_is_refused_with_what_to_do() {
        let e = read::<StoredGroupConfig>("group.json", br#"{"format": 2, "topics": ["t"]}"#).unwrap_err();
        assert!(matches!(e, StorageError::TooNew { found: 2, supported: 1, .. }));
        assert!(e.to_string().contains("upgrade"), "{e}");
    }

    #[test]
    fn stored_forms_round_trip() {
        let c = GroupConfig {
            start: StartFrom::Timestamp(5),
            ordering: OrderingMode::None,
            state_durability: Durability::Os,
            ..GroupConfig::for_topics(["a", "b"])
        };
        let back: StoredGroupConfig = read("g", &write(&StoredGroupConfig::from(&c))).unwrap();
        assert_eq!(GroupConfig::from(back), c);
        let t =
            TopicConfig { retention_ms: Some(9), durability: Durability::Interval { ms: 3 }, ..TopicConfig::default() };
        let back: StoredTopicConfig = read("t", &write(&StoredTopicConfig::from(&t))).unwrap();
        assert_eq!(TopicConfig::from(back), t);
    }
}
