//! The sparse offset index and the time index of one segment.
//!
//! Both live in memory while a segment is active and are written to `<base>.index` and
//! `<base>.timeindex` when it is sealed (and when the log closes cleanly). A file that is missing,
//! fails its CRC, or describes a different segment size is ignored and the index is rebuilt from
//! the segment, so an index file can never make the log serve wrong data.
//!
//! ```text
//! .index      "HLIX" ver u8 pad[3] | segment_bytes u64 | next_offset u64 | count u32 | crc u32
//!             | count x { relative_offset u32, position u32 }
//! .timeindex  "HLTX" ver u8 pad[3] | segment_bytes u64 | first_ts i64 | max_ts i64 | count u32
//!             | crc u32 | count x { timestamp_ms i64, relative_offset u32, position u32 }
//! ```
//! CRC32C covers the header (crc field excluded) and every entry.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::error::{LogError, Result};

const OFFSET_MAGIC: &[u8; 4] = b"HLIX";
const TIME_MAGIC: &[u8; 4] = b"HLTX";
const VERSION: u8 = 1;
const OFFSET_HEADER_BYTES: usize = 32;
const TIME_HEADER_BYTES: usize = 40;
const OFFSET_ENTRY_BYTES: usize = 8;
const TIME_ENTRY_BYTES: usize = 16;

/// One sparse offset index entry: the batch holding `relative_offset` starts at `position`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

/// One time index entry: the batch at `position` has timestamp `timestamp_ms`; every batch before
/// it has a timestamp at or below it (timestamps never decrease inside a log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp_ms: i64,
    pub relative_offset: u32,
    pub position: u32,
}

/// The indexes of one segment plus the facts about it that they imply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentIndex {
    pub base_offset: u64,
    pub offsets: Vec<OffsetEntry>,
    pub times: Vec<TimeEntry>,
    /// Bytes of segment covered (the valid length of the segment file).
    pub segment_bytes: u64,
    /// Offset after the last record covered.
    pub next_offset: u64,
    /// Timestamp of the first batch, if any.
    pub first_timestamp_ms: Option<i64>,
    /// Timestamp of the last batch, if any.
    pub max_timestamp_ms: Option<i64>,
    last_offset_entry_position: u64,
    last_time_entry_position: u64,
}

impl SegmentIndex {
    /// An empty index for a segment starting at `base_offset`.
    pub fn new(base_offset: u64) -> SegmentIndex {
        SegmentIndex {
            base_offset,
            offsets: Vec::new(),
            times: Vec::new(),
            segment_bytes: 0,
            next_offset: base_offset,
            first_timestamp_ms: None,
            max_timestamp_ms: None,
            last_offset_entry_position: 0,
            last_time_entry_position: 0,
        }
    }

    /// Records a batch appended at `position`.
    pub fn on_batch(&mut self, base: u64, next: u64, position: u64, batch_len: u64, timestamp_ms: i64, interval: u64) {
        debug_assert_eq!(base, self.next_offset, "batches are indexed in order");
        debug_assert_eq!(position, self.segment_bytes);
        let relative_offset = (base - self.base_offset) as u32;
        // Position 0 is the implicit first entry of both indexes.
        if position > 0 && position - self.last_offset_entry_position >= interval {
            self.offsets.push(OffsetEntry { relative_offset, position: position as u32 });
            self.last_offset_entry_position = position;
        }
        let newer = self.times.last().is_none_or(|t| timestamp_ms > t.timestamp_ms);
        if position > 0 && newer && position - self.last_time_entry_position >= interval {
            self.times.push(TimeEntry { timestamp_ms, relative_offset, position: position as u32 });
            self.last_time_entry_position = position;
        }
        self.first_timestamp_ms.get_or_insert(timestamp_ms);
        self.max_timestamp_ms = Some(self.max_timestamp_ms.map_or(timestamp_ms, |m| m.max(timestamp_ms)));
        self.segment_bytes = position + batch_len;
        self.next_offset = next;
    }

    /// Skips damaged bytes: the next intact batch starts at `position` with offset `next_offset`.
    /// An index entry is forced there, so reads of later offsets never parse the damage.
    pub fn skip_to(&mut self, position: u64, next_offset: u64) {
        debug_assert!(position > self.segment_bytes && next_offset > self.next_offset);
        self.offsets
            .push(OffsetEntry { relative_offset: (next_offset - self.base_offset) as u32, position: position as u32 });
        self.last_offset_entry_position = position;
        self.segment_bytes = position;
        self.next_offset = next_offset;
    }

    /// Position and base offset of the last indexed batch starting at or before `offset`.
    pub fn lookup_offset(&self, offset: u64) -> (u64, u64) {
        let rel = offset.saturating_sub(self.base_offset);
        let i = self.offsets.partition_point(|e| u64::from(e.relative_offset) <= rel);
        match i {
            0 => (0, self.base_offset),
            _ => {
                let e = self.offsets[i - 1];
                (e.position.into(), self.base_offset + u64::from(e.relative_offset))
            }
        }
    }

    /// Position and base offset from which a scan finds the first batch with a timestamp at or
    /// after `timestamp_ms`: every batch before it is older.
    pub fn lookup_time(&self, timestamp_ms: i64) -> (u64, u64) {
        let i = self.times.partition_point(|e| e.timestamp_ms < timestamp_ms);
        match i {
            0 => (0, self.base_offset),
            _ => {
                let e = self.times[i - 1];
                (e.position.into(), self.base_offset + u64::from(e.relative_offset))
            }
        }
    }

    /// Writes both index files atomically (temp file, fsync, rename). The caller fsyncs the
    /// directory.
    pub fn write_files(&self, offset_path: &Path, time_path: &Path) -> Result<()> {
        let mut buf = Vec::with_capacity(OFFSET_HEADER_BYTES + self.offsets.len() * OFFSET_ENTRY_BYTES);
        buf.extend_from_slice(OFFSET_MAGIC);
        buf.extend_from_slice(&[VERSION, 0, 0, 0]);
        buf.extend_from_slice(&self.segment_bytes.to_le_bytes());
        buf.extend_from_slice(&self.next_offset.to_le_bytes());
        buf.extend_from_slice(&(self.offsets.len() as u32).to_le_bytes());
        buf.extend_from_slice(&[0; 4]);
        for e in &self.offsets {
            buf.extend_from_slice(&e.relative_offset.to_le_bytes());
            buf.extend_from_slice(&e.position.to_le_bytes());
        }
        put_crc(&mut buf, OFFSET_HEADER_BYTES);
        write_atomic(offset_path, &buf)?;

        let mut buf = Vec::with_capacity(TIME_HEADER_BYTES + self.times.len() * TIME_ENTRY_BYTES);
        buf.extend_from_slice(TIME_MAGIC);
        buf.extend_from_slice(&[VERSION, 0, 0, 0]);
        buf.extend_from_slice(&self.segment_bytes.to_le_bytes());
        buf.extend_from_slice(&self.first_timestamp_ms.unwrap_or(i64::MIN).to_le_bytes());
        buf.extend_from_slice(&self.max_timestamp_ms.unwrap_or(i64::MIN).to_le_bytes());
        buf.extend_from_slice(&(self.times.len() as u32).to_le_bytes());
        buf.extend_from_slice(&[0; 4]);
        for e in &self.times {
            buf.extend_from_slice(&e.timestamp_ms.to_le_bytes());
            buf.extend_from_slice(&e.relative_offset.to_le_bytes());
            buf.extend_from_slice(&e.position.to_le_bytes());
        }
        put_crc(&mut buf, TIME_HEADER_BYTES);
        write_atomic(time_path, &buf)
    }

    /// Loads both index files for a segment of `segment_bytes` bytes starting at `base_offset`.
    /// Returns `None` when either is missing, damaged, or describes another segment length:
    /// the caller then rebuilds from the segment.
    pub fn load_files(
        offset_path: &Path,
        time_path: &Path,
        base_offset: u64,
        segment_bytes: u64,
    ) -> Option<SegmentIndex> {
        // An index holds at most one entry per 64 bytes of segment; anything larger is damage,
        // and is never read into memory.
        let entries_max = segment_bytes / 64 + 1;
        let obuf = read_bounded(offset_path, OFFSET_HEADER_BYTES as u64 + entries_max * OFFSET_ENTRY_BYTES as u64)?;
        let tbuf = read_bounded(time_path, TIME_HEADER_BYTES as u64 + entries_max * TIME_ENTRY_BYTES as u64)?;
        if !check_file(&obuf, OFFSET_MAGIC, OFFSET_HEADER_BYTES, OFFSET_ENTRY_BYTES, 24)
            || !check_file(&tbuf, TIME_MAGIC, TIME_HEADER_BYTES, TIME_ENTRY_BYTES, 32)
        {
            return None;
        }
        let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        if u64_at(&obuf, 8) != segment_bytes || u64_at(&tbuf, 8) != segment_bytes {
            return None;
        }
        let next_offset = u64_at(&obuf, 16);
        let first_ts = u64_at(&tbuf, 16) as i64;
        let max_ts = u64_at(&tbuf, 24) as i64;
        if next_offset < base_offset || (next_offset == base_offset) != (segment_bytes == 0) {
            return None;
        }
        let span = next_offset - base_offset;
        let offsets: Vec<OffsetEntry> = obuf[OFFSET_HEADER_BYTES..]
            .chunks_exact(OFFSET_ENTRY_BYTES)
            .map(|c| OffsetEntry { relative_offset: u32_at(c, 0), position: u32_at(c, 4) })
            .collect();
        let times: Vec<TimeEntry> = tbuf[TIME_HEADER_BYTES..]
            .chunks_exact(TIME_ENTRY_BYTES)
            .map(|c| TimeEntry {
                timestamp_ms: u64_at(c, 0) as i64,
                relative_offset: u32_at(c, 8),
                position: u32_at(c, 12),
            })
            .collect();
        // Entries must be strictly increasing and inside the segment.
        let offsets_ok =
            offsets.windows(2).all(|w| w[0].relative_offset < w[1].relative_offset && w[0].position < w[1].position)
                && offsets.iter().all(|e| {
                    u64::from(e.relative_offset) < span && u64::from(e.position) < segment_bytes && e.position > 0
                });
        let times_ok = times.windows(2).all(|w| w[0].timestamp_ms < w[1].timestamp_ms && w[0].position < w[1].position)
            && times.iter().all(|e| {
                u64::from(e.relative_offset) < span
                    && u64::from(e.position) < segment_bytes
                    && e.position > 0
                    && e.timestamp_ms <= max_ts
            });
        if !offsets_ok || !times_ok {
            return None;
        }
        let empty = segment_bytes == 0;
        Some(SegmentIndex {
            base_offset,
            last_offset_entry_position: offsets.last().map_or(0, |e| e.position.into()),
            last_time_entry_position: times.last().map_or(0, |e| e.position.into()),
            offsets,
            times,
            segment_bytes,
            next_offset,
            first_timestamp_ms: (!empty).then_some(first_ts),
            max_timestamp_ms: (!empty).then_some(max_ts),
        })
    }
}

fn put_crc(buf: &mut [u8], header_bytes: usize) {
    let crc_at = header_bytes - 4;
    let crc = crc32c::crc32c_append(crc32c::crc32c(&buf[..crc_at]), &buf[header_bytes..]);
    buf[crc_at..header_bytes].copy_from_slice(&crc.to_le_bytes());
}

fn check_file(buf: &[u8], magic: &[u8; 4], header_bytes: usize, entry_bytes: usize, count_at: usize) -> bool {
    if buf.len() < header_bytes || &buf[0..4] != magic || buf[4] != VERSION {
        return false;
    }
    let count = u32::from_le_bytes(buf[count_at..count_at + 4].try_into().expect("4 bytes")) as usize;
    if buf.len() != header_bytes + count * entry_bytes {
        return false;
    }
    let crc_at = header_bytes - 4;
    let stored = u32::from_le_bytes(buf[crc_at..header_bytes].try_into().expect("4 bytes"));
    stored == crc32c::crc32c_append(crc32c::crc32c(&buf[..crc_at]), &buf[header_bytes..])
}

fn read_bounded(path: &Path, bytes_max: u64) -> Option<Vec<u8>> {
    let len = fs::metadata(path).ok()?.len();
    if len > bytes_max {
        return None;
    }
    fs::read(path).ok()
}

/// Writes `data` to `path` through a temporary file: write, fsync, rename. The caller fsyncs the
/// directory afterwards.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(LogError::io(&tmp, "creating a temporary index file"))?;
    f.write_all(data).map_err(LogError::io(&tmp, "writing a temporary index file"))?;
    f.sync_all().map_err(LogError::io(&tmp, "fsyncing a temporary index file"))?;
    drop(f);
    fs::rename(&tmp, path).map_err(LogError::io(path, "renaming an index file into place"))
}

/// Fsyncs a directory so that creations, renames and deletions inside it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(LogError::io(dir, "fsyncing the log directory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SegmentIndex {
        let mut idx = SegmentIndex::new(100);
        let mut pos = 0;
        for i in 0..50u64 {
            idx.on_batch(100 + i * 2, 100 + i * 2 + 2, pos, 100, 1000 + (i as i64 / 3), 250);
            pos += 100;
        }
        idx
    }

    #[test]
    fn lookups_floor_to_an_indexed_batch() {
        let idx = sample();
        assert!(!idx.offsets.is_empty());
        assert_eq!(idx.lookup_offset(100), (0, 100));
        for target in 100..200 {
            let (pos, base) = idx.lookup_offset(target);
            assert!(base <= target);
            assert_eq!(pos, (base - 100) / 2 * 100);
        }
        let (pos, base) = idx.lookup_time(1010);
        assert!(pos > 0);
        // Every batch before the returned one is older than the target.
        assert!(1000 + ((base - 100) / 2 - 1) as i64 / 3 < 1010);
    }

    #[test]
    fn files_roundtrip_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (o, t) = (dir.path().join("a.index"), dir.path().join("a.timeindex"));
        let idx = sample();
        idx.write_files(&o, &t).unwrap();
        assert_eq!(SegmentIndex::load_files(&o, &t, 100, idx.segment_bytes), Some(idx.clone()));
        // A different segment length means the files are stale.
        assert_eq!(SegmentIndex::load_files(&o, &t, 100, idx.segment_bytes + 1), None);
        // Any flipped byte is caught.
        let good = fs::read(&o).unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            fs::write(&o, &bad).unwrap();
            assert_eq!(SegmentIndex::load_files(&o, &t, 100, idx.segment_bytes), None, "byte {i}");
        }
        fs::remove_file(&o).unwrap();
        assert_eq!(SegmentIndex::load_files(&o, &t, 100, idx.segment_bytes), None);
    }
}
