//! The history of one event: what happened to it in each consumer group, as the broker recorded
//! it (deliveries, how each attempt was settled, timeouts, dead letters, replays). The broker
//! writes it; every API shows it in this shape.

use serde::{Deserialize, Serialize};

/// One thing that happened to an event in one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When, ms since the Unix epoch (the broker's clock).
    pub at_ms: i64,
    /// What.
    #[serde(flatten)]
    pub what: Happened,
}

/// What happened. Serialized with a `kind` tag in snake case (`delivered`, `acked`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Happened {
    /// Handed to a member. A replayed event is delivered from the group's replay topic, so
    /// `topic` and `offset` say which copy.
    Delivered {
        /// Attempt number, from 1.
        attempt: u32,
        /// The member it went to.
        member: String,
        /// The topic of the copy delivered.
        topic: String,
        /// Its partition.
        partition: u32,
        /// Its offset.
        offset: u64,
    },
    /// The handler succeeded.
    Acked {
        /// How long the handler ran, as the consumer reported it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        handler_us: Option<u64>,
    },
    /// The handler failed; to be retried.
    Nacked {
        /// The error, as the consumer reported it.
        reason: String,
        /// The redelivery delay the consumer asked for (the group's backoff when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delay_ms: Option<u64>,
        /// How long the handler ran.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        handler_us: Option<u64>,
    },
    /// The handler failed for good: to the dead-letter queue.
    Rejected {
        /// The error, as the consumer reported it.
        reason: String,
        /// How long the handler ran.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        handler_us: Option<u64>,
    },
    /// Not settled within the group's ack timeout: to be redelivered.
    TimedOut {
        /// The attempt that timed out.
        attempt: u32,
    },
    /// Stored in the group's dead-letter queue.
    DeadLettered {
        /// Why.
        reason: String,
        /// Attempts made.
        attempts: u32,
        /// Its offset in the DLQ topic.
        dlq_offset: u64,
    },
    /// Sent back to the group from its DLQ, as a copy in the group's replay topic.
    Replayed {
        /// The replay topic.
        topic: String,
        /// The copy's partition.
        partition: u32,
        /// The copy's offset.
        offset: u64,
    },
    /// Finished: acknowledged, nothing more will happen in this group.
    Done,
}

impl Happened {
    /// The kind, as serialized (`delivered`, `acked`, …): the one list of kind names, for the
    /// wire (`HistoryEntry.kind`) and for anything that prints or compares timelines.
    pub fn kind(&self) -> &'static str {
        match self {
            Happened::Delivered { .. } => "delivered",
            Happened::Acked { .. } => "acked",
            Happened::Nacked { .. } => "nacked",
            Happened::Rejected { .. } => "rejected",
            Happened::TimedOut { .. } => "timed_out",
            Happened::DeadLettered { .. } => "dead_lettered",
            Happened::Replayed { .. } => "replayed",
            Happened::Done => "done",
        }
    }
}

/// The history of an event in one group, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupHistory {
    /// The group.
    pub group: String,
    /// What happened, oldest first (empty: the group has not delivered it yet).
    pub entries: Vec<HistoryEntry>,
}

/// An event's story: where and when it was published, and what happened to it in each group
/// that reads its topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventHistory {
    /// The topic it was published to.
    pub topic: String,
    /// Its partition.
    pub partition: u32,
    /// Its offset.
    pub offset: u64,
    /// The event's id.
    pub id: String,
    /// The event's source.
    pub source: String,
    /// The event's type.
    #[serde(rename = "type")]
    pub ty: String,
    /// When the broker stored it, ms since the Unix epoch.
    pub published_ms: i64,
    /// One entry per group reading the topic.
    pub groups: Vec<GroupHistory>,
    /// Part of the history may be missing: it is older than the history's retention, or the
    /// search stopped at its limit.
    pub truncated: bool,
}

impl GroupHistory {
    /// The event's state in this group, in one word: `pending` (not delivered yet),
    /// `in_progress`, `dead_lettered` or `done`.
    pub fn state(&self) -> &'static str {
        match self.entries.iter().rev().find(|e| !matches!(e.what, Happened::TimedOut { .. })) {
            None => "pending",
            Some(e) => match e.what {
                Happened::Done => "done",
                Happened::DeadLettered { .. } => "dead_lettered",
                _ => "in_progress",
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_is_the_serialized_tag() {
        let all = [
            Happened::Delivered { attempt: 1, member: "m".into(), topic: "t".into(), partition: 0, offset: 0 },
            Happened::Acked { handler_us: None },
            Happened::Nacked { reason: "r".into(), delay_ms: None, handler_us: None },
            Happened::Rejected { reason: "r".into(), handler_us: None },
            Happened::TimedOut { attempt: 1 },
            Happened::DeadLettered { reason: "r".into(), attempts: 1, dlq_offset: 0 },
            Happened::Replayed { topic: "t".into(), partition: 0, offset: 0 },
            Happened::Done,
        ];
        for h in all {
            assert_eq!(serde_json::to_value(&h).unwrap()["kind"], h.kind());
        }
    }
}
