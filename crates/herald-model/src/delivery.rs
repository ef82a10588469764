//! What crosses between a broker and its clients: where an event was stored, a delivery's id, and
//! the descriptions of topics, groups and dead letters.

use std::sync::Arc;

use herald_core::Event;

use crate::settings::{GroupConfig, TopicConfig};

/// An event as stored: the event plus where and when the broker put it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// The event, exactly as published.
    pub event: Event,
    /// Its topic.
    pub topic: Arc<str>,
    /// Its partition.
    pub partition: u32,
    /// Its offset in the partition.
    pub offset: u64,
    /// When the broker appended it (ms since the Unix epoch).
    pub append_time_ms: i64,
}

/// Where a published event is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: u32,
    /// The offset: for a duplicate, the offset of the first copy.
    pub offset: u64,
    /// The event `(source, id)` was already stored within the dedupe window; nothing was written.
    pub duplicate: bool,
}

/// Identifies a delivery for ack, nack or reject without holding its event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeliveryId {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// The generation it was delivered under.
    pub generation: u64,
    /// The attempt it was: a late answer to an earlier attempt does not settle a redelivery.
    pub attempt: u32,
}

/// A dead letter as listed: its offset in the DLQ and the event with the `dlq*` headers.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Offset in the DLQ topic.
    pub dlq_offset: u64,
    /// The event as dead-lettered: the original plus the `dlq*` headers.
    pub event: Event,
}

/// Per-partition figures of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Partition number.
    pub partition: u32,
    /// Earliest offset still stored.
    pub earliest_offset: u64,
    /// Offset the next event will get.
    pub latest_offset: u64,
    /// Bytes on disk.
    pub bytes: u64,
    /// Segment files.
    pub segments: usize,
    /// What is wrong with it, if anything: damage found (reads of it fail with `corrupt`), or
    /// why it accepts no appends (fenced, e.g. by a full disk). `None` when healthy.
    pub problem: Option<String>,
}

/// A topic as described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Its name.
    pub name: String,
    /// Its settings.
    pub config: TopicConfig,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: i64,
    /// Each partition.
    pub partitions: Vec<PartitionInfo>,
}

/// Per-partition figures of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPartitionInfo {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Owning member, if any.
    pub owner: Option<String>,
    /// First offset not yet acked or dead-lettered.
    pub committed: u64,
    /// Latest offset of the partition.
    pub latest: u64,
    /// `latest - committed`.
    pub lag: u64,
    /// Events in flight.
    pub in_flight: usize,
}

/// A group as described.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupInfo {
    /// Name.
    pub name: String,
    /// Settings.
    pub config: GroupConfig,
    /// Current generation.
    pub generation: u64,
    /// Member ids.
    pub members: Vec<String>,
    /// Each partition.
    pub partitions: Vec<GroupPartitionInfo>,
}

/// What a group stepped over when told to pass damage in one of its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamageSkipped {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// First offset stepped over.
    pub from: u64,
    /// The group's position now: the first readable offset after the damage (or the end).
    pub to: u64,
    /// What was wrong there.
    pub reason: String,
    /// Offset in the group's DLQ of the dead letter (reason `corrupt`) that holds the stored
    /// bytes as evidence.
    pub dlq_offset: u64,
    /// Stored bytes kept in that dead letter (at most 64 KiB from where the damage starts).
    pub bytes_kept: usize,
}
