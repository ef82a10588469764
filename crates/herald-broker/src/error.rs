//! Broker errors. Each has a stable [`BrokerError::code`] for the wire and a message that names
//! the value, the limit and what to do.

use std::path::PathBuf;

use herald_log::LogError;
use herald_model::Code;

/// Everything the broker can refuse or fail at.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// A topic name outside `[A-Za-z0-9._-]{1,200}` (or `.`/`..`).
    #[error("invalid topic name {name:?}: use 1 to 200 characters from A-Z a-z 0-9 . _ - (not \".\" or \"..\")")]
    InvalidTopicName {
        /// The name given.
        name: String,
    },
    /// A group name outside `[A-Za-z0-9._-]{1,193}`.
    #[error("invalid group name {name:?}: use 1 to 193 characters from A-Z a-z 0-9 . _ - (not \".\" or \"..\")")]
    InvalidGroupName {
        /// The name given.
        name: String,
    },
    /// No such topic.
    #[error("topic {topic:?} does not exist: create it first")]
    TopicNotFound {
        /// The topic.
        topic: String,
    },
    /// The topic already exists.
    #[error("topic {topic:?} already exists")]
    TopicExists {
        /// The topic.
        topic: String,
    },
    /// No such group.
    #[error("consumer group {group:?} does not exist")]
    GroupNotFound {
        /// The group.
        group: String,
    },
    /// The group has members, so its positions cannot be moved.
    #[error("consumer group {group:?} has {members} member(s); stop its consumers before resetting it")]
    GroupActive {
        /// The group.
        group: String,
        /// How many members it has.
        members: usize,
    },
    /// A partition number outside the topic.
    #[error("topic {topic:?} has {partitions} partitions; partition {partition} does not exist")]
    PartitionNotFound {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// How many the topic has.
        partitions: u32,
    },
    /// A configuration value or count over its limit.
    #[error("{name} would be {value}; the limit is {limit} ({key})")]
    LimitExceeded {
        /// What is counted.
        name: &'static str,
        /// The value it would reach.
        value: u64,
        /// The limit.
        limit: u64,
        /// The configuration key that sets the limit.
        key: &'static str,
    },
    /// A configuration value out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// An event larger than the topic allows.
    #[error("event is {bytes} bytes encoded; topic {topic:?} accepts at most {limit} (max_event_bytes)")]
    EventTooLarge {
        /// The topic.
        topic: String,
        /// Encoded size.
        bytes: u64,
        /// The topic's limit.
        limit: u64,
    },
    /// A schema refused an event or a registration, or is not there (`schema_invalid`,
    /// `schema_incompatible`, `schema_not_found`): what and where, as `herald-schema` says it.
    #[error(transparent)]
    Schema(herald_schema::SchemaError),
    /// The partition's write queue is full: retry after a short backoff.
    #[error(
        "topic {topic:?} partition {partition} is busy: its write queue holds {queued} events (write_queue_events_max); retry with backoff"
    )]
    Busy {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// Events queued.
        queued: usize,
    },
    /// An ack, nack, reject or commit from a member whose assignment is gone.
    #[error(
        "member {member:?} of group {group:?} acted with generation {generation}, but the group is at generation {current}: the partition was reassigned; drop the event, it will be redelivered to its new owner"
    )]
    StaleGeneration {
        /// The group.
        group: String,
        /// The member.
        member: String,
        /// The generation it used.
        generation: u64,
        /// The group's current generation.
        current: u64,
    },
    /// The member is not (or no longer) in the group.
    #[error("member {member:?} is not in group {group:?} (it left or missed its session timeout): join again")]
    UnknownMember {
        /// The group.
        group: String,
        /// The member.
        member: String,
    },
    /// An ack for an event that is not in flight for this member.
    #[error(
        "{topic}/{partition}@{offset} is not in flight for member {member:?} of group {group:?} (already acked, timed out, or never delivered)"
    )]
    NotInFlight {
        /// The group.
        group: String,
        /// The member.
        member: String,
        /// Topic of the event.
        topic: String,
        /// Partition of the event.
        partition: u32,
        /// Offset of the event.
        offset: u64,
    },
    /// Retention deleted events the group had not consumed yet.
    #[error(
        "group {group:?} was at {topic}/{partition}@{position}, but retention deleted everything below {earliest}: {lost} events were never delivered; the group continues at {earliest}"
    )]
    RetentionOvertook {
        /// The group.
        group: String,
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The group's position.
        position: u64,
        /// The earliest offset still stored.
        earliest: u64,
        /// Events lost.
        lost: u64,
    },
    /// A topic or group of that name was found damaged at start and is not served.
    #[error("{kind} {name:?} exists but is damaged and not served ({problem}): repair or remove it first")]
    Damaged {
        /// `topic` or `group`.
        kind: &'static str,
        /// Its name.
        name: String,
        /// What was found.
        problem: String,
    },
    /// A group cannot step over damage at its position (none there, or events before it are
    /// still in flight).
    #[error("group {group:?} cannot step over damage in {topic}/{partition} at offset {position}: {why}")]
    SkipRefused {
        /// The group.
        group: String,
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The group's position there.
        position: u64,
        /// Why not, and what to do.
        why: String,
        /// Events before the damage are still in flight (retry once they are settled).
        in_flight: bool,
    },
    /// No event where one was asked for.
    #[error("no event {what} in topic {topic:?}{hint}")]
    EventNotFound {
        /// The topic.
        topic: String,
        /// `at partition 0 offset 9`, `with id "x"`.
        what: String,
        /// What to do.
        hint: &'static str,
    },
    /// The broker is shutting down or closed.
    #[error("the broker is closed")]
    Closed,
    /// Stored data could not be decoded.
    #[error("stored event at {topic}/{partition}@{offset} cannot be decoded: {reason}")]
    CorruptEvent {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The offset.
        offset: u64,
        /// Why.
        reason: String,
    },
    /// The partition's log failed to store a batch (the log may be fenced).
    #[error("storing to topic {topic:?} partition {partition} failed: {reason}")]
    WriteFailed {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The log's error.
        reason: String,
        /// The disk (or quota) is full: retry once there is space.
        storage_full: bool,
    },
    /// The event itself is invalid.
    #[error(transparent)]
    Event(#[from] herald_core::EventError),
    /// The log refused or failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A stored file was written in a format this build cannot read.
    #[error(transparent)]
    Format(#[from] herald_model::storage::StorageError),
    /// Metadata I/O failed.
    #[error("I/O error on {path} while {action}: {source}")]
    Io {
        /// File or directory.
        path: PathBuf,
        /// What the broker was doing.
        action: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl BrokerError {
    /// The stable code of this error (see [`Code`] for its kind, retryability and statuses).
    pub fn code(&self) -> Code {
        match self {
            BrokerError::InvalidTopicName { .. } => Code::InvalidTopicName,
            BrokerError::InvalidGroupName { .. } => Code::InvalidGroupName,
            BrokerError::TopicNotFound { .. } => Code::TopicNotFound,
            BrokerError::TopicExists { .. } => Code::TopicExists,
            BrokerError::GroupNotFound { .. } => Code::GroupNotFound,
            BrokerError::GroupActive { .. } => Code::GroupActive,
            BrokerError::PartitionNotFound { .. } => Code::PartitionNotFound,
            BrokerError::LimitExceeded { .. } => Code::LimitExceeded,
            BrokerError::InvalidConfig(_) => Code::InvalidConfig,
            BrokerError::EventTooLarge { .. } => Code::EventTooLarge,
            BrokerError::Schema(e) => e.code(),
            BrokerError::Busy { .. } => Code::Busy,
            BrokerError::StaleGeneration { .. } => Code::StaleGeneration,
            BrokerError::UnknownMember { .. } => Code::UnknownMember,
            BrokerError::NotInFlight { .. } => Code::NotInFlight,
            BrokerError::RetentionOvertook { .. } => Code::RetentionOvertook,
            BrokerError::Closed => Code::Closed,
            BrokerError::EventNotFound { .. } => Code::EventNotFound,
            BrokerError::SkipRefused { in_flight: true, .. } => Code::GroupActive,
            BrokerError::SkipRefused { .. } => Code::InvalidArgument,
            BrokerError::Damaged { .. } => Code::Damaged,
            BrokerError::CorruptEvent { .. } => Code::CorruptEvent,
            BrokerError::Event(herald_core::EventError::EventTooLarge { .. }) => Code::EventTooLarge,
            BrokerError::Event(_) => Code::InvalidEvent,
            BrokerError::WriteFailed { storage_full: true, .. } => Code::StorageFull,
            BrokerError::WriteFailed { .. } => Code::Storage,
            BrokerError::Log(e) if e.is_storage_full() => Code::StorageFull,
            BrokerError::Log(LogError::OffsetBelowEarliest { .. }) => Code::OffsetBelowEarliest,
            BrokerError::Log(LogError::OffsetBeyondLatest { .. }) => Code::OffsetBeyondLatest,
            BrokerError::Log(LogError::Corrupt { .. }) => Code::Corrupt,
            BrokerError::Log(_) => Code::Storage,
            BrokerError::Format(_) => Code::Storage,
            BrokerError::Io { .. } => Code::Storage,
        }
    }

    /// Whether the same request may succeed if retried later (the SDK retries these).
    pub fn is_retryable(&self) -> bool {
        self.code().is_retryable()
    }

    pub(crate) fn io(path: impl Into<PathBuf>, action: &'static str) -> impl FnOnce(std::io::Error) -> BrokerError {
        let path = path.into();
        move |source| BrokerError::Io { path, action, source }
    }
}

impl From<herald_model::InvalidSettings> for BrokerError {
    fn from(e: herald_model::InvalidSettings) -> Self {
        BrokerError::InvalidConfig(e.0)
    }
}

/// Result alias for the broker.
pub type Result<T, E = BrokerError> = std::result::Result<T, E>;
