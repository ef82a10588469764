//! Herald's durable log: one append-only, segmented, checksummed log per partition.
//!
//! ```
//! use herald_log::{Log, LogConfig};
//!
//! let dir = tempfile::tempdir()?;
//! let log = Log::open(dir.path(), LogConfig::default())?;
//! let appended = log.append(&[b"first".as_slice(), b"second"])?;
//! assert_eq!((appended.base_offset, appended.next_offset), (0, 2));
//!
//! let records = log.read(0, 1 << 20, 100)?;
//! assert_eq!(records[1].data.as_ref(), b"second");
//! assert_eq!(log.latest_offset(), 2);
//! log.close()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout
//! A log is a directory of segments. Segment `N.log` holds batches whose first offset is `N`;
//! `N.index` (sparse offset index) and `N.timeindex` (time index) are written when the segment is
//! sealed and rebuilt whenever they are missing or fail their checksum. Every batch carries a
//! CRC32C over all its bytes. See [`batch`] for the byte layout.
//!
//! # Durability
//! [`Durability`] says when an append counts as acknowledged; `docs/durability.md` in the
//! repository spells out what each policy survives. In every policy an fsync failure fences the
//! log: later appends fail with [`LogError::Fenced`] until it is reopened.
//!
//! # Recovery
//! Opening after a crash scans only the active segment and cuts a torn tail back to the last
//! complete batch (logged with the number of bytes cut). After a clean close nothing is scanned.
//! Damage in a sealed segment is found when it is read: the read fails with
//! [`LogError::Corrupt`] naming the file and the offset, and a damaged record is never served.
//!
//! # What this crate does not do
//! No network I/O, no async runtime, no knowledge of events, topics or consumer groups: records
//! are opaque bytes.
#![deny(missing_docs)]

pub mod batch;
mod config;
mod error;
pub mod failpoints;
mod index;
mod log;
mod segment;

pub use config::*;
pub use error::{ConfigError, LogError, Result};
pub use log::{Appended, Log, Record, Recovery, RetentionReport, SPACE_PROBE_BYTES};

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Log>();
    is::<LogError>();
    is::<Record>();
}
