//! One segment: a file of batches starting at `base_offset`, plus its indexes.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};

use crate::batch::{self, BATCH_HEADER_BYTES, BatchHeader};
use crate::error::{LogError, Result};
use crate::index::SegmentIndex;

/// Bytes read from disk at once by sequential scans and reads.
const CHUNK_BYTES: usize = 256 * 1024;

/// File name of the segment starting at `base`.
pub fn file_name(base: u64, ext: &str) -> String {
    format!("{base:020}.{ext}")
}

/// Parses a segment base offset out of a file name like `00000000000000000042.log`.
pub fn parse_base(name: &str, ext: &str) -> Option<u64> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit())).then(|| stem.parse().ok())?
}

pub struct Segment {
    pub base_offset: u64,
    pub path: PathBuf,
    pub file: File,
    /// Bytes of whole batches written to the file. Readers never parse past it.
    pub written_bytes: AtomicU64,
    /// `None` until first needed for a sealed segment opened from disk (loading is lazy so that
    /// opening a log does not depend on how many segments it has). The writer updates the active
    /// segment's index in place; readers hold the lock only for a lookup, never across I/O.
    index: RwLock<Option<SegmentIndex>>,
    /// Base offset of the next segment once this one is sealed, `u64::MAX` while it is active.
    next_base: AtomicU64,
    /// Bytes between index entries, for rebuilding.
    index_interval_bytes: u64,
}

/// What a scan of a segment found.
pub struct Scan {
    pub index: SegmentIndex,
    /// Length of the prefix made of well-framed batches with a continuous offset chain.
    pub valid_bytes: u64,
    /// Batches whose frame is intact but whose CRC failed, followed by valid data.
    pub corrupt: Vec<(u64, u64, String)>,
    /// Why the scan stopped before the end of the file, if it did.
    pub stopped: Option<String>,
}

impl Segment {
    pub fn new(
        base_offset: u64,
        path: PathBuf,
        file: File,
        written_bytes: u64,
        index: Option<SegmentIndex>,
        index_interval_bytes: u64,
    ) -> Segment {
        Segment {
            base_offset,
            path,
            file,
            written_bytes: AtomicU64::new(written_bytes),
            index: RwLock::new(index),
            next_base: AtomicU64::new(u64::MAX),
            index_interval_bytes,
        }
    }

    pub fn index_paths(&self) -> (PathBuf, PathBuf) {
        (self.path.with_extension("index"), self.path.with_extension("timeindex"))
    }

    /// Sets the base offset of the segment after this one: a sealed segment must end there.
    pub fn set_next_base(&self, next: u64) {
        self.next_base.store(next, Ordering::Release);
    }

    /// Installs an index built by a scan or loaded from files.
    pub fn set_index(&self, index: SegmentIndex) {
        *self.index.write().expect("index lock poisoned") = Some(index);
    }

    /// Updates the index of the active segment (the writer, after every batch).
    pub fn update_index<R>(&self, f: impl FnOnce(&mut SegmentIndex) -> R) -> R {
        let mut slot = self.index.write().expect("index lock poisoned");
        f(slot.as_mut().expect("the active segment's index is always loaded"))
    }

    /// Runs `f` on the index, loading it from its files (or rebuilding it from the segment) on
    /// first use.
    pub fn with_index<R>(&self, f: impl FnOnce(&SegmentIndex) -> R) -> Result<R> {
        if let Some(idx) = self.index.read().expect("index lock poisoned").as_ref() {
            return Ok(f(idx));
        }
        let mut slot = self.index.write().expect("index lock poisoned");
        if let Some(idx) = slot.as_ref() {
            return Ok(f(idx));
        }
        let bytes = self.written_bytes.load(Ordering::Acquire);
        let (op, tp) = self.index_paths();
        let idx = match SegmentIndex::load_files(&op, &tp, self.base_offset, bytes) {
            Some(idx) => idx,
            None => {
                let scan = self.scan(bytes)?;
                tracing::info!(segment = %self.path.display(), "index files missing or damaged: rebuilt from the segment");
                if scan.stopped.is_none() {
                    // Best effort: a failure to persist only means rebuilding again next time.
                    let written = scan.index.write_files(&op, &tp);
                    let synced = written.and_then(|()| self.path.parent().map_or(Ok(()), crate::index::sync_dir));
                    if let Err(e) = synced {
                        tracing::warn!(error = %e, "could not write rebuilt index files");
                    }
                }
                scan.index
            }
        };
        Ok(f(slot.insert(idx)))
    }

    /// Scans the batches of the first `len` bytes, verifying each CRC, and builds the index.
    /// Stops at the first batch whose frame is unusable (the torn or damaged tail). A batch with
    /// an intact frame but a bad CRC that is followed by a good batch is mid-file damage: it is
    /// kept (reads of it fail) and the scan goes on.
    pub fn scan(&self, len: u64) -> Result<Scan> {
        let interval = self.index_interval_bytes;
        let mut index = SegmentIndex::new(self.base_offset);
        let mut reader = ChunkReader::new(&self.file, &self.path, len);
        let mut pos = 0u64;
        let mut corrupt = Vec::new();
        let mut expected = self.base_offset;
        let stopped = loop {
            if pos == len {
                break None;
            }
            let damage = match reader.batch_at(pos, expected) {
                Ok((header, body)) => match batch::verify(&header, &body) {
                    Ok(()) => {
                        let (next, bytes) = (header.next_offset(), header.batch_len.into());
                        index.on_batch(expected, next, pos, bytes, header.timestamp_ms, interval);
                        expected = next;
                        pos += bytes;
                        continue;
                    }
                    Err(why) => why,
                },
                Err(why) => why,
            };
            if reader.io_error.is_some() {
                break Some(damage);
            }
            // Damage in the middle, or a torn tail? Only intact batches after it tell them apart:
            // acknowledged batches after damage are kept, never cut.
            match resync(&mut reader, pos, expected) {
                Some((at, base)) => {
                    corrupt.push((pos, expected, damage));
                    index.skip_to(at, base);
                    pos = at;
                    expected = base;
                }
                None => break Some(damage),
            }
        };
        if let Some(e) = reader.io_error {
            return Err(LogError::Io { path: self.path.clone(), action: "scanning a segment", source: e });
        }
        Ok(Scan { index, valid_bytes: pos, corrupt, stopped })
    }

    pub fn corrupt(&self, position: u64, offset: u64, reason: impl Into<String>) -> LogError {
        LogError::Corrupt { path: self.path.clone(), position, offset, reason: reason.into() }
    }

    /// Reads records from `offset` (inside this segment) that are below `high_watermark`,
    /// appending them to `out` until `budget` runs out. Returns `true` when the segment has no
    /// more records to give (the caller moves to the next segment).
    pub fn read(
        &self,
        offset: u64,
        high_watermark: u64,
        budget: &mut Budget,
        out: &mut Vec<crate::Record>,
    ) -> Result<bool> {
        let (mut pos, mut expected) = self.with_index(|i| i.lookup_offset(offset))?;
        let limit = self.written_bytes.load(Ordering::Acquire);
        let next_base = self.next_base.load(Ordering::Acquire);
        let mut reader = ChunkReader::new(&self.file, &self.path, limit);
        reader.chunk = reader.chunk.max(budget.bytes.min(8 << 20));
        loop {
            if expected >= high_watermark || expected >= next_base {
                return Ok(true);
            }
            if pos >= limit {
                // A sealed segment must end exactly where the next begins; a gap means lost data
                // and is reported, never skipped.
                if next_base != u64::MAX && expected < next_base {
                    return Err(self.corrupt(
                        pos,
                        expected,
                        format!("segment ends at offset {expected} but the next segment starts at {next_base}"),
                    ));
                }
                return Ok(true);
            }
            let batch =
                reader.batch_at(pos, expected).and_then(|(h, body)| batch::verify(&h, &body).map(|()| (h, body)));
            let (header, body) = match batch {
                Ok(b) => b,
                Err(why) => match resync(&mut reader, pos, expected) {
                    // Damage before `offset` (found on the way from the last index entry) hides
                    // nothing after it: the read goes on from the next intact batch, as the
                    // recovery scan does. Only the damaged offsets themselves fail.
                    Some((at, base)) if base <= offset => {
                        (pos, expected) = (at, base);
                        continue;
                    }
                    _ => return Err(self.corrupt(pos, expected, why)),
                },
            };
            if header.next_offset() <= offset {
                pos += u64::from(header.batch_len);
                expected = header.next_offset();
                continue;
            }
            for (o, data) in batch::records(header, body) {
                if o < offset {
                    continue;
                }
                if o >= high_watermark {
                    return Ok(true);
                }
                if budget.exhausted(out.is_empty(), data.len()) {
                    budget.records = 0;
                    return Ok(false);
                }
                budget.take(data.len());
                out.push(crate::Record { offset: o, timestamp_ms: header.timestamp_ms, data });
            }
            pos += u64::from(header.batch_len);
            expected = header.next_offset();
        }
    }

    /// The base offset of the first intact batch after the damage at byte `position` (where
    /// offset `expected` should have started), or `None` if nothing intact follows in this
    /// segment.
    pub fn intact_after(&self, position: u64, expected: u64) -> Option<u64> {
        let limit = self.written_bytes.load(Ordering::Acquire);
        if position >= limit {
            return None;
        }
        let mut reader = ChunkReader::new(&self.file, &self.path, limit);
        resync(&mut reader, position, expected).map(|(_, base)| base)
    }

    /// First offset of a batch in this segment with a timestamp at or after `timestamp_ms`.
    pub fn find_time(&self, timestamp_ms: i64) -> Result<Option<u64>> {
        let (max_ts, (mut pos, mut expected), next_offset, indexed_bytes) =
            self.with_index(|i| (i.max_timestamp_ms, i.lookup_time(timestamp_ms), i.next_offset, i.segment_bytes))?;
        let next_base = self.next_base.load(Ordering::Acquire);
        if next_base != u64::MAX && next_offset < next_base {
            // Records next_offset..next_base are lost or unreadable; their times are unknown, so
            // an answer past them could skip over them.
            return Err(self.corrupt(
                indexed_bytes,
                next_offset,
                format!("segment is damaged or cut short: offsets {next_offset}..{next_base} cannot be read"),
            ));
        }
        if max_ts.is_none_or(|m| m < timestamp_ms) {
            return Ok(None);
        }
        let limit = self.written_bytes.load(Ordering::Acquire);
        let mut reader = ChunkReader::new(&self.file, &self.path, limit);
        while pos < limit {
            let (header, body) = reader.batch_at(pos, expected).map_err(|why| self.corrupt(pos, expected, why))?;
            if header.timestamp_ms >= timestamp_ms {
                // Never answer from an unverified timestamp.
                batch::verify(&header, &body).map_err(|why| self.corrupt(pos, expected, why))?;
                return Ok(Some(header.base_offset));
            }
            pos += u64::from(header.batch_len);
            expected = header.next_offset();
        }
        Ok(None)
    }
}

/// The first intact batch after damage at `from` (where offset `expected` should have started):
/// a well-framed batch with a base offset above `expected` whose CRC verifies. When the damaged
/// batch's own frame is intact, the position right after it is tried first.
fn resync(reader: &mut ChunkReader<'_>, from: u64, expected: u64) -> Option<(u64, u64)> {
    let header_bytes = BATCH_HEADER_BYTES as u64;
    let limit = reader.limit;
    let framed_end = (limit - from >= header_bytes)
        .then(|| reader.get(from, BATCH_HEADER_BYTES).ok())
        .flatten()
        .map(|b| BatchHeader::parse(&b))
        .filter(|h| h.check_frame(limit - from).is_ok())
        .map(|h| from + u64::from(h.batch_len));
    let intact = |reader: &mut ChunkReader<'_>, at: u64| -> Option<(u64, u64)> {
        if limit - at < header_bytes {
            return None;
        }
        let h = BatchHeader::parse(&reader.get(at, BATCH_HEADER_BYTES).ok()?);
        if h.base_offset <= expected || h.check_frame(limit - at).is_err() {
            return None;
        }
        let (h, body) = reader.batch_at(at, h.base_offset).ok()?;
        batch::verify(&h, &body).is_ok().then_some((at, h.base_offset))
    };
    if let Some(found) = framed_end.and_then(|at| intact(reader, at)) {
        return Some(found);
    }
    // Byte by byte would cost a header parse per byte of damage; a batch header has the format
    // version then a zero flags byte at +16, so only positions showing those two are tried.
    let mut at = from + 1;
    while limit - at >= header_bytes && reader.io_error.is_none() {
        let window = (limit - (at + 16)).min(CHUNK_BYTES as u64) as usize;
        let Ok(bytes) = reader.get(at + 16, window) else { return None };
        match bytes.windows(2).position(|w| w[0] == batch::MAGIC && w[1] == 0) {
            Some(i) => {
                let candidate = at + i as u64;
                if let Some(found) = intact(reader, candidate) {
                    return Some(found);
                }
                at = candidate + 1;
            }
            None => at += window.saturating_sub(1).max(1) as u64,
        }
    }
    None
}

/// How much a read may still return.
pub struct Budget {
    pub bytes: usize,
    pub records: usize,
}

impl Budget {
    /// Whether a record of `bytes` no longer fits. A read always returns at least one record
    /// when one exists, whatever the budget.
    fn exhausted(&self, first: bool, bytes: usize) -> bool {
        !first && (self.records == 0 || bytes > self.bytes)
    }
    fn take(&mut self, bytes: usize) {
        self.records = self.records.saturating_sub(1);
        if bytes > self.bytes {
            // Only a first record can exceed the budget; nothing may follow it.
            self.records = 0;
        }
        self.bytes = self.bytes.saturating_sub(bytes);
    }
}

/// Reads a segment file sequentially in large chunks with `pread`; batches are sliced out of
/// the chunk without copying.
pub struct ChunkReader<'a> {
    file: &'a File,
    path: &'a Path,
    limit: u64,
    buf: Bytes,
    buf_start: u64,
    chunk: usize,
    /// A real I/O failure (as opposed to damaged data), kept so that a scan never mistakes an
    /// unreadable disk for a torn tail and truncates.
    io_error: Option<std::io::Error>,
}

impl<'a> ChunkReader<'a> {
    pub fn new(file: &'a File, path: &'a Path, limit: u64) -> Self {
        ChunkReader { file, path, limit, buf: Bytes::new(), buf_start: 0, chunk: CHUNK_BYTES, io_error: None }
    }

    /// `len` bytes at `pos`, or an error string if they are not all there.
    fn get(&mut self, pos: u64, len: usize) -> std::result::Result<Bytes, String> {
        let end = pos + len as u64;
        if end > self.limit {
            return Err(format!("{len} bytes at {pos} run past the end of the data ({} bytes)", self.limit));
        }
        let buf_end = self.buf_start + self.buf.len() as u64;
        if pos < self.buf_start || end > buf_end {
            let want = (len.max(self.chunk) as u64).min(self.limit - pos) as usize;
            let mut b = BytesMut::zeroed(want);
            if let Err(e) = self.file.read_exact_at(&mut b, pos) {
                let msg = format!("read of {want} bytes at {pos} in {} failed: {e}", self.path.display());
                self.io_error = Some(e);
                return Err(msg);
            }
            self.buf = b.freeze();
            self.buf_start = pos;
        }
        let start = (pos - self.buf_start) as usize;
        Ok(self.buf.slice(start..start + len))
    }

    /// The batch at `pos`, which must start at offset `expected`: framing and offset checked,
    /// CRC not yet.
    pub fn batch_at(&mut self, pos: u64, expected: u64) -> std::result::Result<(BatchHeader, Bytes), String> {
        if self.limit - pos < BATCH_HEADER_BYTES as u64 {
            return Err(format!("{} bytes left, less than a batch header", self.limit - pos));
        }
        let header = BatchHeader::parse(&self.get(pos, BATCH_HEADER_BYTES)?);
        header.check_frame(self.limit - pos)?;
        if header.base_offset != expected {
            return Err(format!("batch claims base offset {}, expected {expected}", header.base_offset));
        }
        let body = self.get(pos, header.batch_len as usize)?;
        Ok((header, body))
    }
}
