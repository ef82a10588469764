//! The log of one partition: segments, the single writer, group commit, readers, retention.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::batch;
use crate::config::{Durability, LogConfig};
use crate::error::{LogError, Result};
use crate::index::{SegmentIndex, sync_dir, write_atomic};
use crate::segment::{self, Budget, Segment};

const LOCK_FILE: &str = ".lock";
const CLEAN_FILE: &str = "clean-shutdown";
/// How long `open` waits for the directory lock before reporting it held.
const LOCK_WAIT: Duration = Duration::from_millis(500);
/// Bytes [`Log::try_unfence`] writes to see whether a full disk has space again.
pub const SPACE_PROBE_BYTES: usize = 64 * 1024;
/// Per-thread encode buffers above this capacity are freed after use.
const SCRATCH_BYTES_MAX: usize = 4 << 20;

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One stored record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its offset in the log.
    pub offset: u64,
    /// Append time in milliseconds since the Unix epoch (shared by its batch).
    pub timestamp_ms: i64,
    /// The payload, exactly as appended.
    pub data: Bytes,
}

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the first record.
    pub base_offset: u64,
    /// Offset after the last record (`base_offset + count`).
    pub next_offset: u64,
    /// Timestamp stored with the batch (never below an earlier batch's).
    pub timestamp_ms: i64,
}

/// What [`Log::open`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// The log was closed cleanly: the active segment was not scanned.
    pub clean: bool,
    /// Bytes cut from the tail of the active segment (a torn or garbage tail).
    pub truncated_bytes: u64,
    /// Damaged batches found inside the active segment and kept (reads of them fail).
    pub corrupt_batches: usize,
    /// Offsets `start..end` the last clean close recorded as written but which the log no
    /// longer holds (its tail was cut or lost after the close). They are never reused: the log
    /// continues at `end`, and reads of them fail as damaged.
    pub lost: Option<(u64, u64)>,
    /// Offsets `start..end` at the head of the log that the last clean close recorded as
    /// stored (its earliest offset was `start`) but whose segments are gone (deleted by hand, not
    /// by retention). Reads of them fail as below the earliest offset.
    pub lost_head: Option<(u64, u64)>,
}

/// What [`Log::enforce_retention`] deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Segments deleted.
    pub segments: usize,
    /// Bytes freed.
    pub bytes: u64,
    /// Earliest offset after deletion.
    pub earliest_offset: u64,
}

struct Writer {
    active: Arc<Segment>,
    position: u64,
    next_offset: u64,
    last_timestamp_ms: i64,
    closed: bool,
}

#[derive(Default)]
struct SyncState {
    /// Every offset below this is on stable storage.
    durable: u64,
    /// Where `durable` ends: (base offset of the segment, byte position in it).
    durable_at: (u64, u64),
    /// A thread is inside fsync; others wait for it rather than issue their own.
    syncing: bool,
}

/// Why a log accepts no appends.
#[derive(Debug, Clone)]
struct Fence {
    cause: String,
    storage_full: bool,
}

struct Inner {
    dir: PathBuf,
    config: LogConfig,
    /// The directory lock, released when the log closes.
    lock: Mutex<Option<File>>,
    /// Readers clone this snapshot and never hold the lock across I/O.
    segments: RwLock<Arc<Vec<Arc<Segment>>>>,
    writer: Mutex<Writer>,
    /// Offsets below it may be read: written, and durable when the policy is `always`.
    high_watermark: AtomicU64,
    sync: Mutex<SyncState>,
    synced: Condvar,
    /// The first write or fsync failure; while set, every append fails.
    fence: Mutex<Option<Fence>>,
    closed: AtomicBool,
    stop_flusher: Mutex<bool>,
    flusher_wake: Condvar,
}

/// The durable log of one partition. `Send + Sync`: share it behind an `Arc`; one writer at a time
/// is serialised inside, readers run concurrently and never block the writer on I/O.
///
/// See the crate documentation for an example and `docs/durability.md` for the contract.
pub struct Log {
    inner: Arc<Inner>,
    flusher: Mutex<Option<JoinHandle<()>>>,
}

/// A fraction in [0, 1) without a random-number crate: the clock's nanoseconds and the address
/// of a local, mixed.
fn rand_fraction() -> f64 {
    let local = 0u8;
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos() as u64);
    let x = (nanos ^ (&local as *const u8 as u64)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Log {
    /// Opens (or creates) the log in `dir`, recovering from a crash if needed. Recovery reads only
    /// the active segment, and not even that after a clean close.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Log> {
        Self::open_with_report(dir, config).map(|(log, _)| log)
    }

    /// Like [`Log::open`], also telling what recovery did.
    pub fn open_with_report(dir: impl AsRef<Path>, config: LogConfig) -> Result<(Log, Recovery)> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        if !dir.exists() {
            fs::create_dir_all(&dir).map_err(LogError::io(&dir, "creating the log directory"))?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(LogError::io(&lock_path, "opening the lock file"))?;
        // A process that forks (to spawn a program) shares the lock's open file until the child
        // execs, so a lock just released can look held for a moment: retry briefly.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(fs::TryLockError::WouldBlock) => return Err(LogError::Locked { path: dir.clone() }),
                Err(fs::TryLockError::Error(e)) => {
                    return Err(LogError::io(&lock_path, "locking the log directory")(e));
                }
            }
        }

        let interval = u64::from(config.index_interval_bytes);
        let mut bases = Vec::new();
        let entries = fs::read_dir(&dir).map_err(LogError::io(&dir, "listing the log directory"))?;
        for entry in entries {
            let entry = entry.map_err(LogError::io(&dir, "listing the log directory"))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(base) = segment::parse_base(&name, "log") {
                bases.push(base);
            } else if name.ends_with(".tmp") {
                // A temp file is an interrupted index write: never trusted, safe to drop.
                let _ = fs::remove_file(entry.path());
            }
        }
        bases.sort_unstable();
        if let Some(&bad) = bases.iter().find(|&&b| b > batch::OFFSET_MAX) {
            let path = dir.join(segment::file_name(bad, "log"));
            return Err(LogError::Corrupt {
                path,
                position: 0,
                offset: bad,
                reason: format!("segment base offset is above the largest offset {}", batch::OFFSET_MAX),
            });
        }
        remove_orphan_indexes(&dir, &bases)?;

        // Consume the clean-shutdown marker before anything else: once we may append, a crash
        // must lead to a scan.
        let clean_path = dir.join(CLEAN_FILE);
        let marker = fs::read_to_string(&clean_path).ok();
        if marker.is_some() {
            fs::remove_file(&clean_path).map_err(LogError::io(&clean_path, "removing the clean-shutdown marker"))?;
            sync_dir(&dir)?;
        }

        let mut report = Recovery::default();
        let mut segments = Vec::with_capacity(bases.len() + 1);
        if bases.is_empty() {
            bases.push(0);
            let path = dir.join(segment::file_name(0, "log"));
            OpenOptions::new()
                .create_new(true)
                .write(true)
                .open(&path)
                .map_err(LogError::io(&path, "creating the first segment"))?;
            sync_dir(&dir)?;
        }
        let active_base = *bases.last().expect("at least one segment");
        for &base in &bases[..bases.len() - 1] {
            let path = dir.join(segment::file_name(base, "log"));
            let file = File::open(&path).map_err(LogError::io(&path, "opening a sealed segment"))?;
            let len = file.metadata().map_err(LogError::io(&path, "reading segment metadata"))?.len();
            segments.push(Arc::new(Segment::new(base, path, file, len, None, interval)));
        }
        for w in segments.windows(2) {
            w[0].set_next_base(w[1].base_offset);
        }
        if let Some(last) = segments.last() {
            last.set_next_base(active_base);
        }

        let path = dir.join(segment::file_name(active_base, "log"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(LogError::io(&path, "opening the active segment"))?;
        let len = file.metadata().map_err(LogError::io(&path, "reading segment metadata"))?.len();
        let active = Segment::new(active_base, path.clone(), file, len, None, interval);
        let (op, tp) = active.index_paths();
        let marker = marker.as_deref().map(CleanMarker::parse);
        let clean_index = marker
            .filter(|m| m.active_base == Some(active_base) && m.active_bytes == Some(len))
            .and_then(|_| SegmentIndex::load_files(&op, &tp, active_base, len));
        let index = match clean_index {
            Some(index) => {
                report.clean = true;
                index
            }
            None => {
                let scan = active.scan(len)?;
                for (position, offset, why) in &scan.corrupt {
                    tracing::error!(segment = %path.display(), position, offset, reason = %why,
                        "damaged batch inside the active segment: kept, reads of it will fail");
                }
                report.corrupt_batches = scan.corrupt.len();
                if scan.valid_bytes < len {
                    let cut = len - scan.valid_bytes;
                    tracing::warn!(segment = %path.display(), cut_bytes = cut, valid_bytes = scan.valid_bytes,
                        reason = scan.stopped.as_deref().unwrap_or(""), "recovery cut a torn or damaged tail");
                    active.file.set_len(scan.valid_bytes).map_err(LogError::io(&path, "truncating a torn tail"))?;
                    report.truncated_bytes = cut;
                }
                // What survived the crash is in the page cache; make it durable before it counts.
                active.file.sync_all().map_err(LogError::io(&path, "fsyncing the recovered segment"))?;
                active.written_bytes.store(scan.valid_bytes, Ordering::Release);
                scan.index
            }
        };
        let mut next_offset = index.next_offset;
        let mut position = index.segment_bytes;
        let remembered = marker.and_then(|m| m.next_offset).filter(|&n| n > next_offset && n <= batch::OFFSET_MAX);
        let earliest_now = bases[0];
        if let Some(was) = marker.and_then(|m| m.earliest_offset).filter(|&e| e < earliest_now) {
            tracing::error!(dir = %dir.display(), lost_from = was, lost_to = earliest_now,
                "the oldest segments recorded by the last clean shutdown are missing (not deleted by retention)");
            report.lost_head = Some((was, earliest_now));
        }
        // An empty active segment (a crash right after a roll) takes the previous segment's
        // newest timestamp, so that timestamps never go backwards across segments.
        let last_timestamp_ms = match (index.max_timestamp_ms, segments.last()) {
            (Some(ts), _) => ts,
            (None, Some(prev)) => prev.with_index(|i| i.max_timestamp_ms)?.unwrap_or(i64::MIN),
            (None, None) => i64::MIN,
        };
        active.set_index(index);
        let mut active = Arc::new(active);
        if let Some(end) = remembered {
            // The last clean close wrote up to `end`, and the log now ends before it: its tail
            // was cut or lost since. Offsets are never reused (a consumer that had read them
            // would skip the new events that took them): seal what is left and continue at
            // `end`. Reads of the lost offsets fail as damaged.
            tracing::error!(dir = %dir.display(), lost_from = next_offset, lost_to = end,
                "offsets recorded by the last clean shutdown are missing; they are reported as damaged and not reused");
            report.lost = Some((next_offset, end));
            active.file.sync_all().map_err(LogError::io(&path, "fsyncing a segment before sealing it"))?;
            active.with_index(|i| i.write_files(&op, &tp))??;
            active.set_next_base(end);
            segments.push(active);
            let seg = new_segment(&dir, end, interval)?;
            sync_dir(&dir)?;
            active = Arc::new(seg);
            next_offset = end;
            position = 0;
        }
        segments.push(active.clone());
        let active_base_now = active.base_offset;

        let inner = Arc::new(Inner {
            dir,
            lock: Mutex::new(Some(lock)),
            segments: RwLock::new(Arc::new(segments)),
            writer: Mutex::new(Writer { active, position, next_offset, last_timestamp_ms, closed: false }),
            high_watermark: AtomicU64::new(next_offset),
            sync: Mutex::new(SyncState {
                durable: next_offset,
                durable_at: (active_base_now, position),
                syncing: false,
            }),
            synced: Condvar::new(),
            fence: Mutex::new(None),
            closed: AtomicBool::new(false),
            stop_flusher: Mutex::new(false),
            flusher_wake: Condvar::new(),
            config,
        });
        let flusher = inner.config.fsync_interval().map(|every| {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("herald-log-fsync".into())
                .spawn(move || inner.flush_every(every))
                .expect("spawning the fsync thread")
        });
        Ok((Log { inner, flusher: Mutex::new(flusher) }, report))
    }

    /// Appends a batch stamped with the current time. Returns once it is durable per the policy.
    pub fn append<R: AsRef<[u8]>>(&self, records: &[R]) -> Result<Appended> {
        self.append_at(records, now_ms())
    }

    /// Appends a batch stamped `timestamp_ms` (raised to the previous batch's timestamp if lower,
    /// so that timestamps never decrease). Returns once it is durable per the policy.
    pub fn append_at<R: AsRef<[u8]>>(&self, records: &[R], timestamp_ms: i64) -> Result<Appended> {
        let inner = &*self.inner;
        let cfg = &inner.config;
        if records.is_empty() {
            return Err(LogError::EmptyBatch);
        }
        if records.len() > cfg.batch_records_max as usize {
            return Err(LogError::TooManyRecords { count: records.len(), limit: cfg.batch_records_max });
        }
        let mut payload = 0u64;
        for (index, r) in records.iter().enumerate() {
            let bytes = r.as_ref().len() as u64;
            if bytes > u64::from(cfg.record_bytes_max) {
                return Err(LogError::RecordTooLarge { index, bytes, limit: cfg.record_bytes_max });
            }
            payload += bytes;
        }
        let batch_len = batch::batch_len_for(records.len() as u64, payload);
        if batch_len > u64::from(cfg.batch_bytes_max) {
            return Err(LogError::BatchTooLarge { bytes: batch_len, limit: cfg.batch_bytes_max });
        }
        // Encoding happens outside the writer lock so that concurrent appenders overlap; the
        // buffer is reused per thread so that large batches do not fault in fresh pages.
        let appended = SCRATCH.with_borrow_mut(|buf| {
            batch::encode(records, buf);
            let appended = inner.write_batch(buf, records.len() as u64, batch_len, timestamp_ms);
            if buf.capacity() > SCRATCH_BYTES_MAX {
                *buf = Vec::new();
            }
            appended
        })?;
        if cfg.durability == Durability::Always {
            inner.wait_durable(appended.next_offset)?;
        }
        Ok(appended)
    }

    /// Reads records from `offset` on: at most `max_records` and about `max_bytes` of payload
    /// (at least one record whenever one exists at `offset`, however large). An empty result
    /// means `offset` is the latest offset. Stops before a damaged batch if it has records to
    /// return; the next read from there returns the [`LogError::Corrupt`] error.
    pub fn read(&self, offset: u64, max_bytes: usize, max_records: usize) -> Result<Vec<Record>> {
        let inner = &*self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed { path: inner.dir.clone() });
        }
        // The high watermark first: every segment holding an offset below it is in the snapshot
        // taken after.
        let hw = inner.high_watermark.load(Ordering::Acquire);
        let segments = inner.snapshot();
        let earliest = segments[0].base_offset;
        if offset < earliest {
            return Err(LogError::OffsetBelowEarliest { offset, earliest });
        }
        if offset > hw {
            return Err(LogError::OffsetBeyondLatest { offset, latest: hw });
        }
        let mut out = Vec::new();
        let mut budget = Budget { bytes: max_bytes, records: max_records.max(1) };
        let first = segments.partition_point(|s| s.base_offset <= offset) - 1;
        let mut from = offset;
        for seg in &segments[first..] {
            match seg.read(from.max(seg.base_offset), hw, &mut budget, &mut out) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) if out.is_empty() => return Err(e),
                Err(_) => break,
            }
            if let Some(last) = out.last() {
                from = last.offset + 1;
            }
            if budget.records == 0 || budget.bytes == 0 || from >= hw {
                break;
            }
        }
        Ok(out)
    }

    /// The first offset at or after `offset` that a read can start from: `offset` itself when a
    /// read from it succeeds; after damage, the first intact batch behind it (found by the same
    /// resynchronisation recovery uses), or the next segment, or the end of the log.
    pub fn next_readable(&self, offset: u64) -> Result<u64> {
        let (path, position, at) = match self.read(offset, 1, 1) {
            Err(LogError::Corrupt { path, position, offset: at, .. }) => (path, position, at),
            Err(e) => return Err(e),
            Ok(_) => return Ok(offset),
        };
        let end = self.latest_offset();
        let segments = self.inner.snapshot();
        let Some(seg) = segments.iter().find(|s| s.path == path) else { return Ok(end) };
        let next_base = segments.iter().map(|s| s.base_offset).find(|&b| b > seg.base_offset).unwrap_or(end);
        Ok(seg.intact_after(position, at).unwrap_or(next_base).min(end))
    }

    /// The stored bytes of the damaged batch a read from `offset` fails on, as evidence for
    /// whoever steps over it: its file, byte position and up to `max_bytes` from there (empty
    /// when the damage is a gap between segments). `None` when a read from `offset` does not
    /// fail as damaged.
    pub fn damaged_bytes(&self, offset: u64, max_bytes: usize) -> Result<Option<(PathBuf, u64, Vec<u8>)>> {
        let (path, position) = match self.read(offset, 1, 1) {
            Err(LogError::Corrupt { path, position, .. }) => (path, position),
            _ => return Ok(None),
        };
        let file = File::open(&path).map_err(LogError::io(&path, "opening a damaged segment"))?;
        let len = file.metadata().map_err(LogError::io(&path, "reading segment metadata"))?.len();
        let n = len.saturating_sub(position).min(max_bytes as u64) as usize;
        let mut bytes = vec![0u8; n];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut bytes, position)
            .map_err(LogError::io(&path, "reading a damaged batch"))?;
        Ok(Some((path, position, bytes)))
    }

    /// The first offset whose timestamp is at or after `timestamp_ms`, or `None` when every
    /// stored record is older (a consumer starting there begins at [`Log::latest_offset`]).
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<u64>> {
        let hw = self.inner.high_watermark.load(Ordering::Acquire);
        for seg in self.inner.snapshot().iter() {
            if let Some(offset) = seg.find_time(timestamp_ms)? {
                return Ok((offset < hw).then_some(offset));
            }
        }
        Ok(None)
    }

    /// The earliest offset still stored (retention moves it forward).
    pub fn earliest_offset(&self) -> u64 {
        self.inner.snapshot()[0].base_offset
    }

    /// The offset the next append will get: one past the last readable record. Lag of a reader
    /// at position `p` is `latest_offset() - p`.
    pub fn latest_offset(&self) -> u64 {
        self.inner.high_watermark.load(Ordering::Acquire)
    }

    /// Bytes of all segment files.
    pub fn size_bytes(&self) -> u64 {
        self.inner.snapshot().iter().map(|s| s.written_bytes.load(Ordering::Acquire)).sum()
    }

    /// Bytes of the active segment (what a recovery after a crash would scan).
    pub fn active_segment_bytes(&self) -> u64 {
        self.inner.snapshot().last().expect("a log always has a segment").written_bytes.load(Ordering::Acquire)
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.inner.snapshot().len()
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The configuration the log was opened with.
    pub fn config(&self) -> &LogConfig {
        &self.inner.config
    }

    /// Forces everything appended so far to stable storage, whatever the policy.
    pub fn flush(&self) -> Result<()> {
        let next = self.inner.writer.lock().expect("writer lock poisoned").next_offset;
        self.inner.wait_durable(next)
    }

    /// Deletes sealed segments past the retention limits, as of `now_ms`. The active segment is
    /// never deleted. Readers already inside a deleted segment finish their read.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<RetentionReport> {
        let inner = &*self.inner;
        let retention = inner.config.retention;
        let segments = inner.snapshot();
        let sealed = &segments[..segments.len() - 1];
        let mut total: u64 = segments.iter().map(|s| s.written_bytes.load(Ordering::Acquire)).sum();
        let mut victims = 0;
        for seg in sealed {
            let size = seg.written_bytes.load(Ordering::Acquire);
            let expired = match retention.age_ms {
                Some(age) => {
                    seg.with_index(|i| i.max_timestamp_ms)?.is_none_or(|m| now_ms.saturating_sub(m) > age as i64)
                }
                None => false,
            };
            let oversize = retention.bytes.is_some_and(|limit| total - size >= limit);
            if !(expired || oversize) {
                break;
            }
            total -= size;
            victims += 1;
        }
        // Segments before this base go; computed from the snapshot, applied to the live list.
        self.delete_segments_before_base(segments[victims].base_offset)
    }

    /// Deletes every sealed segment that holds only offsets below `offset` (a compaction point:
    /// the caller no longer needs them). The active segment is never deleted; the earliest offset
    /// becomes the base of the first remaining segment, at or below `offset`.
    pub fn delete_before(&self, offset: u64) -> Result<RetentionReport> {
        let segments = self.inner.snapshot();
        // The first segment to keep is the last one whose base is at or below `offset`.
        let keep = segments.partition_point(|s| s.base_offset <= offset).max(1) - 1;
        self.delete_segments_before_base(segments[keep].base_offset)
    }

    fn delete_segments_before_base(&self, keep_base: u64) -> Result<RetentionReport> {
        let inner = &*self.inner;
        // The writer lock serialises changes of the segment list (roll pushes, retention pops).
        let removed: Vec<Arc<Segment>> = {
            let _w = inner.writer.lock().expect("writer lock poisoned");
            let mut list = inner.segments.write().expect("segments lock poisoned");
            let victims = list[..list.len() - 1].iter().take_while(|s| s.base_offset < keep_base).count();
            let mut next = (**list).clone();
            let removed = next.drain(..victims).collect();
            *list = Arc::new(next);
            removed
        };
        let mut report = RetentionReport { segments: removed.len(), bytes: 0, earliest_offset: self.earliest_offset() };
        if removed.is_empty() {
            return Ok(report);
        }
        for seg in &removed {
            report.bytes += seg.written_bytes.load(Ordering::Acquire);
            let (op, tp) = seg.index_paths();
            for p in [&seg.path, &op, &tp] {
                match fs::remove_file(p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(LogError::Io { path: p.clone(), action: "deleting a segment", source: e });
                    }
                }
            }
            tracing::info!(segment = %seg.path.display(), "deleted a segment");
        }
        sync_dir(&inner.dir)?;
        Ok(report)
    }

    /// Why the log accepts no appends, if it does not: the first failure, and whether it was a
    /// full disk (which [`Log::try_unfence`] recovers from).
    pub fn fenced(&self) -> Option<(String, bool)> {
        self.inner.fenced().map(|f| (f.cause, f.storage_full))
    }

    /// Accepts appends again after a full disk, once there is space: if the log is fenced by a
    /// full disk (`ENOSPC`, `EDQUOT`) and a probe write of [`SPACE_PROBE_BYTES`] succeeds, cuts
    /// from the active segment whatever was written after the last acknowledged append (under
    /// `always`, after the last successful fsync; otherwise after the last whole write), fsyncs
    /// it and clears the fence. Returns whether the log is writable again. A log fenced by any
    /// other failure stays fenced until it is reopened (after a failed fsync the kernel may have
    /// dropped the data; only a re-read at open tells what is really there).
    pub fn try_unfence(&self) -> Result<bool> {
        let inner = &*self.inner;
        let mut w = inner.writer.lock().expect("writer lock poisoned");
        match inner.fenced() {
            Some(f) if f.storage_full && !w.closed => {}
            _ => return Ok(false),
        }
        if !inner.has_space()? {
            return Ok(false);
        }
        let keep = if inner.config.durability == Durability::Always {
            let s = inner.sync.lock().expect("sync lock poisoned");
            if s.durable_at.0 == w.active.base_offset { s.durable_at.1.min(w.position) } else { 0 }
        } else {
            w.position
        };
        let active = w.active.clone();
        active.file.set_len(keep).map_err(LogError::io(&active.path, "cutting an unacknowledged tail"))?;
        match crate::failpoints::fsync(&active.file, &active.path) {
            Ok(()) => {}
            Err(e) if crate::error::is_storage_full(&e) => return Ok(false),
            Err(e) => return Err(LogError::io(&active.path, "fsyncing the active segment")(e)),
        }
        let scan = active.scan(keep)?;
        let (next, bytes) = (scan.index.next_offset, scan.index.segment_bytes);
        active.set_index(scan.index);
        active.written_bytes.store(bytes, Ordering::Release);
        // A roll cut short may have left the next segment's file behind: it holds nothing.
        let stray = inner.dir.join(segment::file_name(next, "log"));
        if next != active.base_offset && stray.exists() {
            fs::remove_file(&stray).map_err(LogError::io(&stray, "removing an unused segment"))?;
        }
        let cut = w.position.saturating_sub(bytes);
        w.position = bytes;
        w.next_offset = next;
        {
            let mut s = inner.sync.lock().expect("sync lock poisoned");
            s.durable = next;
            s.durable_at = (active.base_offset, bytes);
        }
        inner.high_watermark.store(next, Ordering::Release);
        *inner.fence.lock().expect("fence lock poisoned") = None;
        tracing::info!(dir = %inner.dir.display(), next_offset = next, cut_bytes = cut,
            "there is disk space again: the log accepts appends");
        Ok(true)
    }

    /// Closes the log cleanly: fsync, write the active segment's indexes and the clean-shutdown
    /// marker so that the next open skips recovery. Later calls on this log fail with
    /// [`LogError::Closed`]. Closing twice is harmless.
    pub fn close(&self) -> Result<()> {
        self.stop_flusher();
        let inner = &*self.inner;
        let mut w = inner.writer.lock().expect("writer lock poisoned");
        if w.closed {
            return Ok(());
        }
        w.closed = true;
        inner.closed.store(true, Ordering::Release);
        if inner.fenced().is_some() {
            // Nothing written after the failure can be trusted to be complete: the next open scans.
            inner.release_lock();
            return Ok(());
        }
        let path = &w.active.path;
        w.active.file.sync_all().map_err(LogError::io(path, "fsyncing the active segment"))?;
        let (op, tp) = w.active.index_paths();
        w.active.with_index(|i| i.write_files(&op, &tp))??;
        sync_dir(&inner.dir)?;
        let earliest = inner.snapshot()[0].base_offset;
        let marker = clean_marker(w.active.base_offset, w.position, w.next_offset, earliest);
        write_atomic(&inner.dir.join(CLEAN_FILE), marker.as_bytes())?;
        sync_dir(&inner.dir)?;
        inner.release_lock();
        Ok(())
    }

    /// Closes without the clean-shutdown marker, as a crash would leave things (after the
    /// kernel has every write): the next open scans the active segment. For tests.
    #[doc(hidden)]
    pub fn close_as_if_crashed(&self) {
        self.stop_flusher();
        let mut w = self.inner.writer.lock().expect("writer lock poisoned");
        w.closed = true;
        self.inner.closed.store(true, Ordering::Release);
        self.inner.release_lock();
    }

    fn stop_flusher(&self) {
        *self.inner.stop_flusher.lock().expect("flusher lock poisoned") = true;
        self.inner.flusher_wake.notify_all();
        if let Some(handle) = self.flusher.lock().expect("flusher lock poisoned").take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(dir = %self.inner.dir.display(), error = %e, "closing the log failed; the next open will recover");
        }
    }
}

impl Inner {
    /// Lets another `Log::open` of the directory proceed; this log accepts nothing any more.
    fn release_lock(&self) {
        self.lock.lock().expect("lock slot poisoned").take();
    }

    /// Under the writer lock: rolls if needed, assigns offsets, writes the encoded batch.
    fn write_batch(&self, buf: &mut [u8], count: u64, batch_len: u64, timestamp_ms: i64) -> Result<Appended> {
        let cfg = &self.config;
        let mut w = self.writer.lock().expect("writer lock poisoned");
        self.check_writable(&w)?;
        let age_ms =
            w.active.with_index(|i| i.first_timestamp_ms)?.map_or(0, |first| timestamp_ms.saturating_sub(first));
        let full = w.position + batch_len > cfg.segment_bytes_max;
        let old = age_ms >= cfg.segment_age_ms_max as i64;
        if w.position > 0 && (full || old) {
            self.roll(&mut w)?;
        }
        let base = w.next_offset;
        let ts = timestamp_ms.max(w.last_timestamp_ms);
        batch::seal(buf, base, ts);
        let pos = w.position;
        if let Err(e) = crate::failpoints::write_all_at(&w.active.file, &w.active.path, buf, pos) {
            let err = LogError::Io { path: w.active.path.clone(), action: "appending a batch", source: e };
            return Err(self.fence_with(err));
        }
        let next = base + count;
        w.active.update_index(|i| i.on_batch(base, next, pos, batch_len, ts, cfg.index_interval_bytes.into()));
        w.position = pos + batch_len;
        w.next_offset = next;
        w.last_timestamp_ms = ts;
        w.active.written_bytes.store(w.position, Ordering::Release);
        if cfg.durability != Durability::Always {
            self.high_watermark.store(next, Ordering::Release);
        }
        Ok(Appended { base_offset: base, next_offset: next, timestamp_ms: ts })
    }
    fn snapshot(&self) -> Arc<Vec<Arc<Segment>>> {
        self.segments.read().expect("segments lock poisoned").clone()
    }

    fn check_writable(&self, w: &Writer) -> Result<()> {
        if w.closed {
            return Err(LogError::Closed { path: self.dir.clone() });
        }
        if let Some(f) = self.fenced() {
            return Err(self.fenced_error(f));
        }
        Ok(())
    }

    /// Whether [`SPACE_PROBE_BYTES`] can be written and fsynced in the log's directory.
    fn has_space(&self) -> Result<bool> {
        let path = self.dir.join(".space-probe");
        let file = File::create(&path).map_err(LogError::io(&path, "creating the space probe"))?;
        let written = crate::failpoints::write_all_at(&file, &path, &[0u8; SPACE_PROBE_BYTES], 0)
            .and_then(|()| crate::failpoints::fsync(&file, &path));
        drop(file);
        fs::remove_file(&path).map_err(LogError::io(&path, "removing the space probe"))?;
        match written {
            Ok(()) => Ok(true),
            Err(e) if crate::error::is_storage_full(&e) => Ok(false),
            Err(e) => Err(LogError::io(&path, "writing the space probe")(e)),
        }
    }

    fn fenced(&self) -> Option<Fence> {
        self.fence.lock().expect("fence lock poisoned").clone()
    }

    fn fenced_error(&self, f: Fence) -> LogError {
        LogError::Fenced { path: self.dir.clone(), cause: f.cause, storage_full: f.storage_full }
    }

    /// Records the first I/O failure; from now on every append fails. Returns the error.
    fn fence_with(&self, err: LogError) -> LogError {
        let mut fence = self.fence.lock().expect("fence lock poisoned");
        if fence.is_none() {
            let storage_full = err.is_storage_full();
            if storage_full {
                tracing::error!(dir = %self.dir.display(), error = %err,
                    "log fenced by a full disk: no appends until there is space again");
            } else {
                tracing::error!(dir = %self.dir.display(), error = %err, "log fenced: no more appends until it is reopened");
            }
            *fence = Some(Fence { cause: err.to_string(), storage_full });
        }
        err
    }

    /// Seals the active segment and starts a new one at the writer's next offset.
    fn roll(&self, w: &mut Writer) -> Result<()> {
        let old = w.active.clone();
        // Everything in a sealed segment is durable, so durability tracking only ever concerns
        // the active segment.
        crate::failpoints::fsync(&old.file, &old.path).map_err(|e| {
            self.fence_with(LogError::Io {
                path: old.path.clone(),
                action: "fsyncing a segment before sealing it",
                source: e,
            })
        })?;
        let (op, tp) = old.index_paths();
        old.with_index(|i| i.write_files(&op, &tp))??;
        let base = w.next_offset;
        let seg = Arc::new(new_segment(&self.dir, base, self.config.index_interval_bytes.into())?);
        sync_dir(&self.dir).map_err(|e| self.fence_with(e))?;
        old.set_next_base(base);
        {
            let mut list = self.segments.write().expect("segments lock poisoned");
            let mut next = (**list).clone();
            next.push(seg.clone());
            *list = Arc::new(next);
        }
        w.active = seg;
        w.position = 0;
        Ok(())
    }

    /// Blocks until every offset below `target` is durable. Group commit: one thread fsyncs on
    /// behalf of all that wait; whoever arrives while it runs waits for the next round.
    fn wait_durable(&self, target: u64) -> Result<()> {
        let mut s = self.sync.lock().expect("sync lock poisoned");
        loop {
            // Durable first: an append that an earlier fsync covered is acknowledged even if a
            // later fsync failed (it is visible to readers already).
            if s.durable >= target {
                return Ok(());
            }
            if let Some(f) = self.fenced() {
                return Err(self.fenced_error(f));
            }
            if s.syncing {
                s = self.synced.wait(s).expect("sync lock poisoned");
                continue;
            }
            s.syncing = true;
            drop(s);
            let result = self.sync_once();
            s = self.sync.lock().expect("sync lock poisoned");
            s.syncing = false;
            if let Ok((durable, at)) = result {
                if durable > s.durable {
                    s.durable = durable;
                    s.durable_at = at;
                }
                self.high_watermark.fetch_max(s.durable, Ordering::AcqRel);
            }
            self.synced.notify_all();
            result?;
        }
    }

    /// One fsync of the active segment; returns the offset below which everything is durable and
    /// where it ends (segment base, byte position).
    fn sync_once(&self) -> Result<(u64, (u64, u64))> {
        let (segment, next, position) = {
            let w = self.writer.lock().expect("writer lock poisoned");
            (w.active.clone(), w.next_offset, w.position)
        };
        match crate::failpoints::fsync(&segment.file, &segment.path) {
            Ok(()) => Ok((next, (segment.base_offset, position))),
            Err(e) => Err(self.fence_with(LogError::Io {
                path: segment.path.clone(),
                action: "fsyncing appended data",
                source: e,
            })),
        }
    }

    fn flush_every(&self, every: Duration) {
        let mut stop = self.stop_flusher.lock().expect("flusher lock poisoned");
        // Logs opened together (a topic's partitions) would otherwise fsync in lockstep and make
        // every other fsync on the disk wait behind all of them: start at a random phase.
        let phase = every.mul_f64(rand_fraction());
        let mut wait = phase.max(Duration::from_millis(1));
        while !*stop {
            stop = self.flusher_wake.wait_timeout(stop, wait).expect("flusher lock poisoned").0;
            wait = every;
            if *stop || self.fenced().is_some() {
                break;
            }
            let next = self.writer.lock().expect("writer lock poisoned").next_offset;
            if let Err(e) = self.wait_durable(next) {
                tracing::error!(error = %e, "periodic fsync failed");
                break;
            }
        }
    }
}

/// The clean-shutdown marker, format 2: format 1's lines plus `next_offset`, how far the log got
/// (so that a tail lost after the close is noticed and its offsets are not reused), and
/// `earliest_offset` (so that lost head segments are noticed). Format 1 markers (written before
/// 2026-12) are still read; a reader of format 1 that meets format 2 does not recognise it and
/// scans the active segment, which is always safe.
fn clean_marker(base: u64, bytes: u64, next_offset: u64, earliest_offset: u64) -> String {
    format!(
        "herald-log clean-shutdown v2\nactive_base_offset={base}\nactive_segment_bytes={bytes}\n\
         next_offset={next_offset}\nearliest_offset={earliest_offset}\n"
    )
}

/// What a clean-shutdown marker says; fields it lacks or that do not parse are `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct CleanMarker {
    active_base: Option<u64>,
    active_bytes: Option<u64>,
    next_offset: Option<u64>,
    earliest_offset: Option<u64>,
}

impl CleanMarker {
    fn parse(text: &str) -> CleanMarker {
        let mut lines = text.lines();
        let mut m = CleanMarker::default();
        if !matches!(lines.next(), Some("herald-log clean-shutdown v1" | "herald-log clean-shutdown v2")) {
            return m;
        }
        for line in lines {
            let Some((key, value)) = line.split_once('=') else { continue };
            let value = value.parse().ok();
            match key {
                "active_base_offset" => m.active_base = value,
                "active_segment_bytes" => m.active_bytes = value,
                "next_offset" => m.next_offset = value,
                "earliest_offset" => m.earliest_offset = value,
                _ => {}
            }
        }
        m
    }
}

/// A new, empty segment file at `base` in `dir` (created exclusively; the caller fsyncs the
/// directory).
fn new_segment(dir: &Path, base: u64, interval: u64) -> Result<Segment> {
    let path = dir.join(segment::file_name(base, "log"));
    let file = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(LogError::io(&path, "creating a segment"))?;
    Ok(Segment::new(base, path, file, 0, Some(SegmentIndex::new(base)), interval))
}

/// Index files whose segment is gone (retention interrupted by a crash) are removed.
fn remove_orphan_indexes(dir: &Path, bases: &[u64]) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(LogError::io(dir, "listing the log directory"))?;
    for entry in entries {
        let entry = entry.map_err(LogError::io(dir, "listing the log directory"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let base = segment::parse_base(&name, "index").or_else(|| segment::parse_base(&name, "timeindex"));
        if base.is_some_and(|b| bases.binary_search(&b).is_err()) {
            fs::remove_file(entry.path()).map_err(LogError::io(entry.path(), "removing an orphan index file"))?;
        }
    }
    Ok(())
}
