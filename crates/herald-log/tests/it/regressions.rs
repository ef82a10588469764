//! Regression tests from a review of the log: each failed before its fix.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};

use herald_log::batch::{self, BATCH_HEADER_BYTES};
use herald_log::{Durability, Log, LogConfig, Retention};

use crate::common::{payload, small_config};

fn read_all(log: &Log, from: u64) -> Vec<herald_log::Record> {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let batch = log.read(next, 1 << 20, 1000).expect("read");
        let Some(last) = batch.last() else { break };
        next = last.offset + 1;
        out.extend(batch);
    }
    out
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

/// `batches` batches of 3 records stamped 1000 + b in one segment, left as after a crash.
/// Returns the end position of every batch.
fn one_segment_log(dir: &Path, batches: u64) -> Vec<u64> {
    let log = Log::open(dir, LogConfig { durability: Durability::Os, ..LogConfig::default() }).unwrap();
    let mut ends = Vec::new();
    for b in 0..batches {
        let recs: Vec<Vec<u8>> = (b * 3..b * 3 + 3).map(payload).collect();
        log.append_at(&recs, 1000 + b as i64).unwrap();
        ends.push(log.size_bytes());
    }
    log.close_as_if_crashed();
    ends
}

fn flip(path: &Path, at: u64, mask: u8) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at as usize] ^= mask;
    fs::write(path, &bytes).unwrap();
}

/// BUG: recovery cuts acknowledged batches that follow a batch whose *header* is damaged.
/// docs/durability.md: "A damaged batch in the middle of the active segment that is followed by
/// intact batches is *not* cut (those later batches were acknowledged)". The existing test only
/// flips a payload bit; a flip in the base offset (or length, count, magic, flags) makes
/// `ChunkReader::batch_at` fail, and `Segment::scan` stops there without the "followed by a good
/// batch" check, so `Log::open` truncates every later, acknowledged batch.
#[test]
fn header_damage_mid_active_segment_truncates_acknowledged_batches() {
    let dir = tempfile::tempdir().unwrap();
    let ends = one_segment_log(dir.path(), 6);
    let seg = segment_files(dir.path()).pop().unwrap();
    // Lowest bit of the base offset of batch 2 (records 6..9); batches 3..6 are intact.
    flip(&seg, ends[1], 0x01);
    let (log, report) = Log::open_with_report(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(
        report.truncated_bytes, 0,
        "recovery cut {} bytes: the acknowledged batches after the damaged one are gone",
        report.truncated_bytes
    );
    assert_eq!(log.latest_offset(), 18);
    assert_eq!(read_all(&log, 9).len(), 9);
}

/// BUG: `Segment::scan` feeds the *unverified* timestamp of a batch whose CRC failed (kept as
/// mid-file damage) into the index's `max_timestamp_ms`, and `Log::open` takes the writer's
/// `last_timestamp_ms` from it. One flipped bit in a stored timestamp then stamps every future
/// append (with a valid CRC, so forever) with a date centuries away; age retention and age rolls
/// stop working for those segments.
#[test]
fn timestamp_of_a_damaged_batch_poisons_every_later_append() {
    let dir = tempfile::tempdir().unwrap();
    let ends = one_segment_log(dir.path(), 6);
    let seg = segment_files(dir.path()).pop().unwrap();
    // Top byte of batch 2's timestamp (header bytes 22..30): 1002 becomes 1002 + 2^62.
    flip(&seg, ends[1] + 29, 0x40);
    let (log, report) = Log::open_with_report(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(report.corrupt_batches, 1);
    assert_eq!(report.truncated_bytes, 0);
    let a = log.append_at(&[b"after".as_slice()], 2000).unwrap();
    assert_eq!(a.timestamp_ms, 2000, "an append is stamped with the damaged batch's timestamp");
}

/// COVERAGE (regression): before 8ceba31, `Log::enforce_retention` computed a victim *count* from
/// a snapshot and drained that many segments from the *live* list, so two concurrent calls
/// deleted segments no rule allowed (or panicked in `drain` holding both locks). 8ceba31 applies
/// a base-offset cut instead; this keeps two concurrent calls honest.
#[test]
fn concurrent_retention_deletes_segments_no_rule_allows() {
    let config = LogConfig { retention: Retention { age_ms: Some(1000), bytes: None }, ..small_config() };
    for attempt in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let old_records = 120u64;
        {
            let log = Log::open(dir.path(), config.clone()).unwrap();
            // Old records (stamped 1000), then a roll-forcing stream of new ones (stamped 1e9).
            for i in 0..old_records {
                log.append_at(&[payload(i)], 1000).unwrap();
            }
            for i in old_records..400 {
                log.append_at(&[payload(i)], 1_000_000_000).unwrap();
            }
            log.close().unwrap();
        }
        // Which segments hold only old records: the earliest offset after retention must be the
        // base of the first segment holding a new record.
        let bases: Vec<u64> = segment_files(dir.path())
            .iter()
            .map(|p| p.file_stem().unwrap().to_str().unwrap().parse().unwrap())
            .collect();
        let want_earliest = *bases.iter().rev().find(|&&b| b <= old_records).unwrap();
        // Reopen so that sealed indexes load lazily, and without their files so that loading
        // rebuilds them (scan, write, fsync): this only widens the window of the race.
        for p in fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()) {
            if p.extension().is_some_and(|e| e == "index") {
                fs::remove_file(p).unwrap();
            }
        }
        let log = Arc::new(Log::open(dir.path(), config.clone()).unwrap());
        let barrier = Arc::new(Barrier::new(2));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (log, barrier) = (log.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    log.enforce_retention(1_000_000_000 + 10).map(|r| r.segments)
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
        assert!(results.iter().all(|r| r.is_ok()), "attempt {attempt}: enforce_retention panicked");
        let earliest = log.earliest_offset();
        assert_eq!(
            earliest, want_earliest,
            "attempt {attempt}: retention deleted segments holding new records ({results:?})"
        );
        assert_eq!(read_all(&log, earliest).len() as u64, 400 - earliest);
    }
}

/// BUG: `Inner::wait_durable` checks the fence *before* checking whether its target is already
/// durable. An appender whose batch an earlier group commit already made durable (and visible:
/// the high watermark covers it) gets `LogError::Fenced` if another appender's fsync fails before
/// it re-checks. The producer is told "failed" for a record consumers can already read, and
/// retries it: a duplicate.
#[cfg(feature = "failpoints")]
#[test]
fn an_append_reported_failed_is_never_visible() {
    use std::collections::HashMap;
    use std::sync::Mutex;
    for attempt in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Log::open(dir.path(), LogConfig::default()).unwrap());
        let failed = Arc::new(Mutex::new(HashMap::new()));
        let handles: Vec<_> = (0..6u64)
            .map(|t| {
                let (log, failed) = (log.clone(), failed.clone());
                std::thread::spawn(move || {
                    for i in 0.. {
                        let data = format!("{t}:{i}");
                        if let Err(e) = log.append(&[data.as_bytes()]) {
                            failed.lock().unwrap().insert(data, e.to_string());
                            break;
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(5 + attempt % 7));
        herald_log::failpoints::fail_next_fsyncs(dir.path(), 1);
        for h in handles {
            h.join().unwrap();
        }
        let failed = failed.lock().unwrap();
        for r in read_all(&log, 0) {
            let data = String::from_utf8(r.data.to_vec()).unwrap();
            assert!(
                !failed.contains_key(&data),
                "attempt {attempt}: append of {data:?} returned {:?}, yet offset {} is readable",
                failed[&data],
                r.offset
            );
        }
    }
}

/// Writes one sealed batch of `count` empty records at `base` into `path`.
fn write_batch_file(path: &Path, base: u64, count: usize) {
    let records = vec![Vec::<u8>::new(); count];
    let mut buf = Vec::new();
    batch::encode(&records, &mut buf);
    batch::seal(&mut buf, base, 1000);
    fs::write(path, &buf).unwrap();
}

/// Was a bug (adversarial files): a segment whose base offset is near `u64::MAX` makes
/// `BatchHeader::next_offset` (`base_offset + record_count`) overflow during recovery: a panic
/// in debug builds, a wrapped offset (next append at offset 0..) in release builds. Open should
/// refuse the file with an error instead.
#[test]
fn segment_base_near_u64_max_does_not_panic_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let base = u64::MAX - 2;
    write_batch_file(&dir.path().join(format!("{base:020}.log")), base, 10);
    let result = std::panic::catch_unwind(|| Log::open(dir.path(), LogConfig::default()).map(|l| l.latest_offset()));
    assert!(result.is_ok(), "Log::open panicked on a segment at base {base}");
    if let Ok(Ok(latest)) = result {
        assert!(latest >= base, "offsets wrapped around: latest offset {latest}");
    }
}

/// The process's peak resident set (`VmHWM` of /proc/self/status).
fn max_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM in /proc/self/status");
    let kb: u64 = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("VmHWM in kB");
    kb * 1024
}

/// Was a bug (unbounded allocation from an on-disk length): `BatchHeader::check_frame` only checks
/// `batch_len` against the bytes left in the file, never against `BATCH_BYTES_MAX_MAX` (256 MiB,
/// the largest batch the log can ever write). A garbage tail claiming a 1 GiB batch (in a sparse
/// file, cheap to make) makes recovery allocate and read 1 GiB (up to 4 GiB with a u32 length)
/// before the CRC rejects it.
#[test]
fn recovery_never_allocates_more_than_the_largest_possible_batch() {
    let dir = tempfile::tempdir().unwrap();
    let ends = one_segment_log(dir.path(), 2);
    let seg = segment_files(dir.path()).pop().unwrap();
    let claimed: u32 = 1 << 30;
    let mut header = vec![0u8; BATCH_HEADER_BYTES];
    header[0..8].copy_from_slice(&6u64.to_le_bytes());
    header[8..12].copy_from_slice(&claimed.to_le_bytes());
    header[16] = batch::MAGIC;
    header[18..22].copy_from_slice(&1u32.to_le_bytes());
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&header).unwrap();
    f.set_len(ends[1] + u64::from(claimed) + 4096).unwrap();
    drop(f);
    let before = max_rss_bytes();
    let (log, report) = Log::open_with_report(dir.path(), LogConfig::default()).unwrap();
    let grew = max_rss_bytes().saturating_sub(before);
    assert_eq!(log.latest_offset(), 6);
    assert!(report.truncated_bytes > 0);
    assert!(grew < 300 << 20, "recovery grew the resident set by {} MiB for one claimed batch", grew >> 20);
}

/// Was a bug (damage skipped silently by a time lookup): a sealed segment cut short (its index files
/// then no longer match its length and are rebuilt from the surviving prefix) has a
/// `max_timestamp_ms` covering only the prefix, so `Segment::find_time` answers `None` for a
/// timestamp that fell in the lost part and `Log::offset_for_timestamp` answers with the next
/// segment's first offset. A consumer seeking by time is moved past the damage silently, whereas
/// a read through the same place fails with `LogError::Corrupt` (docs/durability.md: "the reader
/// is never moved past it silently").
#[test]
fn time_lookup_never_jumps_over_a_truncated_sealed_segment() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), small_config()).unwrap();
        for i in 0..200u64 {
            log.append_at(&[payload(i)], 1_000 + i as i64).unwrap();
        }
        log.close().unwrap();
    }
    let segs = segment_files(dir.path());
    let base = |p: &PathBuf| -> u64 { p.file_stem().unwrap().to_str().unwrap().parse().unwrap() };
    let (base1, base2) = (base(&segs[1]), base(&segs[2]));
    let len = fs::metadata(&segs[1]).unwrap().len();
    OpenOptions::new().write(true).open(&segs[1]).unwrap().set_len(len / 2).unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    // Reading through the cut fails, as documented.
    assert!(log.read(base2 - 1, 1 << 20, 10).is_err());
    // The last record of segment 1 (lost) was stamped 1000 + base2 - 1.
    let target = 1_000 + base2 as i64 - 1;
    let found = log.offset_for_timestamp(target);
    assert!(
        !matches!(found, Ok(Some(o)) if o >= base2),
        "a time lookup inside the lost part of segment {base1} answered {found:?}: past the damage, silently"
    );
}
