//! Typed errors of the log. Each message names the value, the limit and what to do.

use std::io;
use std::path::PathBuf;

/// A configuration value outside its allowed range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `name` is `value`, outside `min..=max`.
    #[error("{name} is {value} {unit}; it must be between {min} and {max} {unit}")]
    OutOfRange {
        /// The configuration key.
        name: &'static str,
        /// The value given.
        value: u64,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
        /// Unit of the three numbers.
        unit: &'static str,
    },
}

/// Everything that can go wrong in the log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The configuration is invalid; nothing was opened.
    #[error("invalid log configuration: {0}")]
    Config(#[from] ConfigError),

    /// Another process (or another `Log` in this one) holds the directory.
    #[error("log directory {path} is locked by another open log; close it first")]
    Locked {
        /// The log directory.
        path: PathBuf,
    },

    /// An append with no records.
    #[error("a batch must hold at least one record")]
    EmptyBatch,

    /// A record over `record_bytes_max`.
    #[error("record {index} of the batch is {bytes} bytes; the limit is {limit} (record_bytes_max)")]
    RecordTooLarge {
        /// Position of the record in the batch.
        index: usize,
        /// Its size.
        bytes: u64,
        /// The limit.
        limit: u32,
    },

    /// A batch over `batch_bytes_max` once encoded.
    #[error("batch is {bytes} bytes encoded; the limit is {limit} (batch_bytes_max): split it")]
    BatchTooLarge {
        /// Encoded size.
        bytes: u64,
        /// The limit.
        limit: u32,
    },

    /// A batch with more records than `batch_records_max`.
    #[error("batch holds {count} records; the limit is {limit} (batch_records_max): split it")]
    TooManyRecords {
        /// Records in the batch.
        count: usize,
        /// The limit.
        limit: u32,
    },

    /// A read below what retention kept.
    #[error("offset {offset} is below the earliest retained offset {earliest}")]
    OffsetBelowEarliest {
        /// Requested offset.
        offset: u64,
        /// Earliest offset still stored.
        earliest: u64,
    },

    /// A read past the end of the log.
    #[error("offset {offset} is beyond the latest offset {latest}; the next append gets {latest}")]
    OffsetBeyondLatest {
        /// Requested offset.
        offset: u64,
        /// Offset the next append will get.
        latest: u64,
    },

    /// Stored data failed its checks (CRC, framing, offsets). The data is not served.
    #[error("corrupt data in {path} at byte {position} (offset {offset}): {reason}")]
    Corrupt {
        /// Segment file holding the damage.
        path: PathBuf,
        /// Byte position of the damaged batch inside the file.
        position: u64,
        /// First offset the damaged batch should hold.
        offset: u64,
        /// What check failed.
        reason: String,
    },

    /// An earlier fsync or write failed; the log accepts no more appends. Reopen it to recover,
    /// or, when the failure was a full disk, [`crate::Log::try_unfence`] once there is space.
    #[error("log {path} is fenced after an I/O failure ({cause}); no append is accepted: {}",
        if *storage_full { "free disk space; it recovers by itself" } else { "reopen the log" })]
    Fenced {
        /// The log directory.
        path: PathBuf,
        /// The first failure.
        cause: String,
        /// The failure was a full disk or quota.
        storage_full: bool,
    },

    /// The log was closed.
    #[error("log {path} is closed")]
    Closed {
        /// The log directory.
        path: PathBuf,
    },

    /// An I/O error, with the file it concerned.
    #[error("I/O error on {path} while {action}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the log was doing.
        action: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl LogError {
    /// The error (or the failure that fenced the log) is a full disk or quota (`ENOSPC`,
    /// `EDQUOT`): nothing was stored, and appends succeed again once there is space.
    pub fn is_storage_full(&self) -> bool {
        match self {
            LogError::Fenced { storage_full, .. } => *storage_full,
            LogError::Io { source, .. } => is_storage_full(source),
            _ => false,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, action: &'static str) -> impl FnOnce(io::Error) -> LogError {
        let path = path.into();
        move |source| LogError::Io { path, action, source }
    }
}

/// Result alias for the log.
pub type Result<T, E = LogError> = std::result::Result<T, E>;

/// `ENOSPC` or `EDQUOT`.
pub(crate) fn is_storage_full(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
}
