//! Topic and group settings as the API speaks them (Rust, HTTP admin JSON, config files). What is
//! written to disk is a separate, versioned form: [`crate::storage`].

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Default dedupe window (2 minutes, like JetStream's duplicate window).
pub const DEDUPE_WINDOW_MS_DEFAULT: u64 = 120_000;
/// Default largest event, encoded (1 MiB).
pub const EVENT_BYTES_MAX_DEFAULT: u64 = 1024 * 1024;
/// Largest allowed `max_event_bytes` (64 MiB, the event model's hard maximum).
pub const EVENT_BYTES_MAX_MAX: u64 = herald_core::Limits::EVENT_BYTES_HARD_MAX as u64;
/// Default segment size of a partition log (128 MiB; `herald-log`'s own default, checked there).
pub const SEGMENT_BYTES_MAX_DEFAULT: u64 = 128 * 1024 * 1024;
/// Longest group name: its DLQ and replay topics (`<group>.replay`) must still be valid topic
/// names (200).
pub const GROUP_NAME_BYTES_MAX: usize = 200 - ".replay".len();
/// Longest ack timeout (a day): a handler that runs longer should extend its work differently.
pub const ACK_TIMEOUT_MS_MAX: u64 = 24 * 3600 * 1000;
/// Longest session timeout (an hour, as Kafka's `group.max.session.timeout.ms` at most).
pub const SESSION_TIMEOUT_MS_MAX: u64 = 3600 * 1000;
/// Longest topic name.
pub const TOPIC_NAME_BYTES_MAX: usize = 200;

/// A setting out of range or inconsistent, with what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSettings(pub String);

fn bad<T>(message: String) -> Result<T, InvalidSettings> {
    Err(InvalidSettings(message))
}

/// Checks a topic or group name: `[A-Za-z0-9._-]{1,200}`, not `.` or `..`.
pub fn valid_name(name: &str) -> bool {
    (1..=TOPIC_NAME_BYTES_MAX).contains(&name.len())
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// Checks a group name: a valid name of at most [`GROUP_NAME_BYTES_MAX`] bytes.
pub fn valid_group_name(name: &str) -> bool {
    valid_name(name) && name.len() <= GROUP_NAME_BYTES_MAX
}

/// When a write is acknowledged; see `docs/durability.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Durability {
    /// fsync before the write is acknowledged (group commit across writers).
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

/// A topic's settings.
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

impl TopicConfig {
    /// The settings in which `self` (asked for) differs from `stored`, one line each; empty when
    /// they agree. Creating a topic "if it does not exist" is refused when they differ.
    pub fn differences(&self, stored: &TopicConfig) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |name: &str, a: String, b: String| {
            if a != b {
                out.push(format!("{name}: asked {a}, stored {b}"));
            }
        };
        check("partitions", self.partitions.to_string(), stored.partitions.to_string());
        check("retention_ms", format!("{:?}", self.retention_ms), format!("{:?}", stored.retention_ms));
        check("retention_bytes", format!("{:?}", self.retention_bytes), format!("{:?}", stored.retention_bytes));
        check("durability", format!("{:?}", self.durability), format!("{:?}", stored.durability));
        check("dedupe_window_ms", self.dedupe_window_ms.to_string(), stored.dedupe_window_ms.to_string());
        check("max_event_bytes", self.max_event_bytes.to_string(), stored.max_event_bytes.to_string());
        check("segment_bytes_max", self.segment_bytes_max.to_string(), stored.segment_bytes_max.to_string());
        out
    }
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
            segment_bytes_max: SEGMENT_BYTES_MAX_DEFAULT,
        }
    }
}

impl TopicConfig {
    /// A topic with `partitions` partitions and defaults otherwise.
    pub fn with_partitions(partitions: u32) -> Self {
        TopicConfig { partitions, ..Default::default() }
    }

    /// Checks what does not depend on a broker's limits.
    pub fn validate(&self) -> Result<(), InvalidSettings> {
        if self.partitions == 0 {
            return bad("partitions is 0; it must be at least 1".into());
        }
        if self.max_event_bytes == 0 || self.max_event_bytes > EVENT_BYTES_MAX_MAX {
            return bad(format!(
                "max_event_bytes is {}; it must be between 1 and {EVENT_BYTES_MAX_MAX}",
                self.max_event_bytes
            ));
        }
        Ok(())
    }

    /// The settings of a dead-letter or replay topic: one partition, no dedupe (an event
    /// dead-lettered again after a replay must be stored again), and the hard size maximum (a
    /// dead letter is its original plus headers).
    pub fn for_dead_letters() -> TopicConfig {
        TopicConfig {
            partitions: 1,
            dedupe_window_ms: 0,
            max_event_bytes: EVENT_BYTES_MAX_MAX,
            ..TopicConfig::default()
        }
    }
}

/// Where a new group starts reading (and where a reset moves it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    /// The earliest stored event.
    #[default]
    Earliest,
    /// Only events published after the group is created.
    Latest,
    /// The first event appended at or after this time (ms since the Unix epoch).
    Timestamp(i64),
}

/// What order a group's deliveries keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OrderingMode {
    /// Events of one key strictly in publish order, also across retries; different keys in
    /// parallel, also within a partition. Events without a key have no order.
    #[default]
    Key,
    /// One event in flight per partition.
    Partition,
    /// No order.
    None,
}

/// Retries of failed deliveries: exponential backoff with jitter, up to a number of attempts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Deliveries before an event goes to the DLQ (at least 1).
    pub max_attempts: u32,
    /// Backoff after the first failure.
    pub backoff_base_ms: u64,
    /// Growth per further failure.
    pub backoff_factor: f64,
    /// Largest backoff.
    pub backoff_max_ms: u64,
    /// Share of the backoff taken away at random, `0.0..=1.0`: the delay is uniform in
    /// `[d * (1 - jitter), d]`.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_attempts: 5, backoff_base_ms: 100, backoff_factor: 2.0, backoff_max_ms: 60_000, jitter: 0.2 }
    }
}

impl RetryPolicy {
    /// The backoff ceiling after `failures` failed attempts: `min(max, base * factor^(failures-1))`.
    pub fn backoff_ceiling(&self, failures: u32) -> Duration {
        let exp = self.backoff_factor.powi(failures.saturating_sub(1).min(1000) as i32);
        let ms = (self.backoff_base_ms as f64 * exp).min(self.backoff_max_ms as f64);
        Duration::from_millis(ms.max(0.0) as u64)
    }

    /// The backoff after `failures` failed attempts, with jitter drawn from `rng`.
    pub fn backoff_with(&self, failures: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.backoff_ceiling(failures);
        let cut = if self.jitter > 0.0 { rng.random_range(0.0..=self.jitter) } else { 0.0 };
        ceiling.mul_f64(1.0 - cut)
    }

    /// The backoff after `failures` failed attempts, with jitter.
    pub fn backoff(&self, failures: u32) -> Duration {
        self.backoff_with(failures, &mut rand::rng())
    }

    /// Whether an event delivered for the `attempt`-th time and failed again goes to the DLQ.
    pub fn exhausted(&self, attempt: u32) -> bool {
        attempt >= self.max_attempts
    }

    /// Checks the policy.
    pub fn validate(&self) -> Result<(), InvalidSettings> {
        if self.max_attempts == 0 {
            return bad("retry.max_attempts is 0; it must be at least 1".into());
        }
        if !(self.backoff_factor >= 1.0 && self.backoff_factor <= 100.0) {
            return bad(format!("retry.backoff_factor is {}; it must be between 1 and 100", self.backoff_factor));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return bad(format!("retry.jitter is {}; it must be between 0 and 1", self.jitter));
        }
        if self.backoff_base_ms > self.backoff_max_ms {
            return bad(format!(
                "retry.backoff_base_ms ({}) is above retry.backoff_max_ms ({})",
                self.backoff_base_ms, self.backoff_max_ms
            ));
        }
        Ok(())
    }
}

/// A consumer group's settings. They belong to the group, not to a member: the group's stored
/// settings decide backoff, attempts, dead letters and order on every backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Topics the group receives.
    pub topics: Vec<String>,
    /// Where a new group starts.
    pub start: StartFrom,
    /// What order deliveries keep.
    pub ordering: OrderingMode,
    /// An event not acked within this is redelivered (counted as a failed attempt).
    pub ack_timeout_ms: u64,
    /// A member silent for this long is removed and its partitions reassigned.
    pub session_timeout_ms: u64,
    /// Retries and backoff.
    pub retry: RetryPolicy,
    /// Most events the group's DLQ may hold; dead-lettering beyond fails and the event is
    /// retried later instead.
    pub dlq_events_max: u64,
    /// A dead letter replayed this many times is not replayed again.
    pub replays_max: u32,
    /// In `key` order: whether an event waiting for a retry holds back the later events of its
    /// key (blocking, the default: order kept) or lets them pass (non-blocking: the retry comes
    /// later, out of order; a key still has one event in flight at a time).
    pub blocking_retries: bool,
    /// Durability of the group's state (attempt counts, positions). `always` (the default)
    /// fsyncs each delivery's attempt record before the member sees the event; `interval`
    /// takes that fsync off the delivery path, at the price of attempt counts and positions
    /// that a machine crash (not a process crash) can set back by up to the interval.
    pub state_durability: Durability,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            topics: Vec::new(),
            start: StartFrom::Earliest,
            ordering: OrderingMode::Key,
            ack_timeout_ms: 30_000,
            session_timeout_ms: 10_000,
            retry: RetryPolicy::default(),
            dlq_events_max: 1_000_000,
            replays_max: 3,
            blocking_retries: true,
            state_durability: Durability::Always,
        }
    }
}

impl GroupConfig {
    /// A group receiving `topics`, with defaults otherwise.
    pub fn for_topics<S: Into<String>>(topics: impl IntoIterator<Item = S>) -> Self {
        GroupConfig { topics: topics.into_iter().map(Into::into).collect(), ..Default::default() }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), InvalidSettings> {
        if self.topics.is_empty() {
            return bad("a group must subscribe to at least one topic".into());
        }
        if !(1..=ACK_TIMEOUT_MS_MAX).contains(&self.ack_timeout_ms) {
            return bad(format!(
                "ack_timeout_ms is {}; it must be between 1 and {ACK_TIMEOUT_MS_MAX}",
                self.ack_timeout_ms
            ));
        }
        if !(1..=SESSION_TIMEOUT_MS_MAX).contains(&self.session_timeout_ms) {
            return bad(format!(
                "session_timeout_ms is {}; it must be between 1 and {SESSION_TIMEOUT_MS_MAX}",
                self.session_timeout_ms
            ));
        }
        if self.dlq_events_max == 0 {
            return bad("dlq_events_max is 0; it must be at least 1".into());
        }
        self.retry.validate()
    }

    /// The settings that differ between `self` (asked for) and `stored` (in effect), by name,
    /// for an error or warning that tells the user exactly what they will get.
    pub fn differences(&self, stored: &GroupConfig) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |name: &str, a: String, b: String| {
            if a != b {
                out.push(format!("{name}: asked {a}, stored {b}"));
            }
        };
        check("topics", format!("{:?}", self.topics), format!("{:?}", stored.topics));
        check("start", format!("{:?}", self.start), format!("{:?}", stored.start));
        check("ordering", format!("{:?}", self.ordering), format!("{:?}", stored.ordering));
        check("ack_timeout_ms", self.ack_timeout_ms.to_string(), stored.ack_timeout_ms.to_string());
        check("session_timeout_ms", self.session_timeout_ms.to_string(), stored.session_timeout_ms.to_string());
        check("retry", format!("{:?}", self.retry), format!("{:?}", stored.retry));
        check("dlq_events_max", self.dlq_events_max.to_string(), stored.dlq_events_max.to_string());
        check("replays_max", self.replays_max.to_string(), stored.replays_max.to_string());
        check("blocking_retries", self.blocking_retries.to_string(), stored.blocking_retries.to_string());
        check("state_durability", format!("{:?}", self.state_durability), format!("{:?}", stored.state_durability));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_follows_the_formula_within_its_jitter() {
        let p = RetryPolicy {
            max_attempts: 5,
            backoff_base_ms: 100,
            backoff_factor: 2.0,
            backoff_max_ms: 1000,
            jitter: 0.5,
        };
        assert_eq!(p.backoff_ceiling(1), Duration::from_millis(100));
        assert_eq!(p.backoff_ceiling(3), Duration::from_millis(400));
        assert_eq!(p.backoff_ceiling(10), Duration::from_millis(1000));
        for _ in 0..100 {
            let d = p.backoff(3);
            assert!(d >= Duration::from_millis(200) && d <= Duration::from_millis(400), "{d:?}");
        }
        assert!(!p.exhausted(4) && p.exhausted(5));
    }

    #[test]
    fn timeouts_have_a_ceiling() {
        let ok = GroupConfig::for_topics(["t"]);
        let long = GroupConfig { session_timeout_ms: u64::MAX, ..ok.clone() };
        assert!(long.validate().unwrap_err().0.contains("session_timeout_ms is 18446744073709551615"));
        let long = GroupConfig { ack_timeout_ms: ACK_TIMEOUT_MS_MAX + 1, ..ok.clone() };
        assert!(long.validate().unwrap_err().0.contains("ack_timeout_ms"));
        assert!(GroupConfig { session_timeout_ms: SESSION_TIMEOUT_MS_MAX, ..ok }.validate().is_ok());
    }

    #[test]
    fn differences_name_each_setting_that_differs() {
        let a = GroupConfig::for_topics(["t"]);
        let b = GroupConfig { retry: RetryPolicy { max_attempts: 9, ..RetryPolicy::default() }, ..a.clone() };
        assert!(a.differences(&a).is_empty());
        let d = a.differences(&b);
        assert_eq!(d.len(), 1);
        assert!(d[0].starts_with("retry:"), "{d:?}");
    }
}
