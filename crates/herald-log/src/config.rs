//! Log configuration: every limit is named with its unit, has a default and a hard range, and is
//! validated once, when the log opens.

use std::time::Duration;

use crate::error::ConfigError;

/// Default largest segment file before a new one is started (128 MiB).
///
/// Recovery after a crash scans the active segment only, so this also bounds recovery time.
pub const SEGMENT_BYTES_MAX_DEFAULT: u64 = 128 * 1024 * 1024;
/// Smallest allowed `segment_bytes_max` (1 KiB; small values exist for tests).
pub const SEGMENT_BYTES_MAX_MIN: u64 = 1024;
/// Largest allowed `segment_bytes_max` (1 GiB): index positions are 32-bit.
pub const SEGMENT_BYTES_MAX_MAX: u64 = 1024 * 1024 * 1024;

/// Default age after which the active segment is rolled on the next append (7 days).
pub const SEGMENT_AGE_MS_MAX_DEFAULT: u64 = 7 * 24 * 3600 * 1000;

/// Default largest single record (1 MiB).
pub const RECORD_BYTES_MAX_DEFAULT: u32 = 1024 * 1024;
/// Largest allowed `record_bytes_max` (64 MiB).
pub const RECORD_BYTES_MAX_MAX: u32 = 64 * 1024 * 1024;

/// Default largest batch, header and records included (16 MiB).
pub const BATCH_BYTES_MAX_DEFAULT: u32 = 16 * 1024 * 1024;
/// Largest allowed `batch_bytes_max` (256 MiB).
pub const BATCH_BYTES_MAX_MAX: u32 = 256 * 1024 * 1024;

/// Default most records in one batch.
pub const BATCH_RECORDS_MAX_DEFAULT: u32 = 100_000;
/// Largest allowed `batch_records_max`.
pub const BATCH_RECORDS_MAX_MAX: u32 = 10_000_000;

/// Default bytes of log between two sparse index entries (4 KiB).
pub const INDEX_INTERVAL_BYTES_DEFAULT: u32 = 4096;
/// Smallest allowed `index_interval_bytes`.
pub const INDEX_INTERVAL_BYTES_MIN: u32 = 64;
/// Largest allowed `index_interval_bytes` (16 MiB).
pub const INDEX_INTERVAL_BYTES_MAX: u32 = 16 * 1024 * 1024;

/// Largest allowed fsync interval for [`Durability::Interval`] (60 s).
pub const FSYNC_INTERVAL_MS_MAX: u64 = 60_000;

/// When an append counts as durable. See `docs/durability.md` for the full contract.
///
/// Every policy survives a crash of the *process* (kill -9) without losing an acknowledged append:
/// appends go straight to the kernel with `pwrite`, never through a user-space buffer. The policies
/// differ in what survives a crash of the *machine* (power loss, kernel panic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `append` returns only after the batch is on stable storage (`fdatasync`). Concurrent
    /// appenders share one fsync (group commit). A machine crash loses no acknowledged append.
    Always,
    /// A background thread fsyncs every `ms` milliseconds. A machine crash can lose the appends of
    /// the last interval (plus the time of one fsync).
    Interval {
        /// Milliseconds between two fsyncs, `1..=60_000`.
        ms: u64,
    },
    /// Herald never fsyncs on its own (except when a segment rolls or the log closes); the kernel
    /// writes back when it decides to (usually within 30 s on Linux). A machine crash can lose any
    /// amount of recent appends.
    Os,
}

/// Retention: which sealed segments may be deleted. The active segment is never deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Delete a sealed segment once its newest record is older than this many milliseconds.
    pub age_ms: Option<u64>,
    /// Delete the oldest sealed segments while the log stays at or above this many bytes without
    /// them (so the log keeps at least this many bytes, and exceeds it by less than one segment).
    pub bytes: Option<u64>,
}

/// Configuration of one partition's log. Build with [`LogConfig::default`] and adjust fields;
/// [`crate::Log::open`] validates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll to a new segment before a segment file would exceed this many bytes. A batch larger
    /// than this gets a segment of its own.
    pub segment_bytes_max: u64,
    /// Roll to a new segment on the next append once the active one's first record is older
    /// than this many milliseconds.
    pub segment_age_ms_max: u64,
    /// Largest record payload, in bytes.
    pub record_bytes_max: u32,
    /// Largest batch on disk, header and all records included, in bytes.
    pub batch_bytes_max: u32,
    /// Most records in one batch.
    pub batch_records_max: u32,
    /// Bytes of log between two entries of the sparse offset and time indexes.
    pub index_interval_bytes: u32,
    /// When appends become durable.
    pub durability: Durability,
    /// Which sealed segments are deleted by [`crate::Log::enforce_retention`].
    pub retention: Retention,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes_max: SEGMENT_BYTES_MAX_DEFAULT,
            segment_age_ms_max: SEGMENT_AGE_MS_MAX_DEFAULT,
            record_bytes_max: RECORD_BYTES_MAX_DEFAULT,
            batch_bytes_max: BATCH_BYTES_MAX_DEFAULT,
            batch_records_max: BATCH_RECORDS_MAX_DEFAULT,
            index_interval_bytes: INDEX_INTERVAL_BYTES_DEFAULT,
            durability: Durability::Always,
            retention: Retention::default(),
        }
    }
}

fn range(name: &'static str, value: u64, min: u64, max: u64, unit: &'static str) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::OutOfRange { name, value, min, max, unit });
    }
    Ok(())
}

impl LogConfig {
    /// Checks every limit against its hard range and against the others.
    pub fn validate(&self) -> Result<(), ConfigError> {
        range("segment_bytes_max", self.segment_bytes_max, SEGMENT_BYTES_MAX_MIN, SEGMENT_BYTES_MAX_MAX, "bytes")?;
        range("segment_age_ms_max", self.segment_age_ms_max, 1, u64::MAX / 2, "ms")?;
        range("record_bytes_max", self.record_bytes_max.into(), 1, RECORD_BYTES_MAX_MAX.into(), "bytes")?;
        // A batch must hold at least one maximal record.
        let batch_min = crate::batch::batch_len_for(1, u64::from(self.record_bytes_max));
        range("batch_bytes_max", self.batch_bytes_max.into(), batch_min, BATCH_BYTES_MAX_MAX.into(), "bytes")?;
        range("batch_records_max", self.batch_records_max.into(), 1, BATCH_RECORDS_MAX_MAX.into(), "records")?;
        range(
            "index_interval_bytes",
            self.index_interval_bytes.into(),
            INDEX_INTERVAL_BYTES_MIN.into(),
            INDEX_INTERVAL_BYTES_MAX.into(),
            "bytes",
        )?;
        if let Durability::Interval { ms } = self.durability {
            range("durability.interval_ms", ms, 1, FSYNC_INTERVAL_MS_MAX, "ms")?;
        }
        if let Some(age) = self.retention.age_ms {
            range("retention.age_ms", age, 1, u64::MAX / 2, "ms")?;
        }
        if let Some(bytes) = self.retention.bytes {
            range("retention.bytes", bytes, 1, u64::MAX / 2, "bytes")?;
        }
        Ok(())
    }

    pub(crate) fn fsync_interval(&self) -> Option<Duration> {
        match self.durability {
            Durability::Interval { ms } => Some(Duration::from_millis(ms)),
            _ => None,
        }
    }
}
