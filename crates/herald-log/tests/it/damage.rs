//! Damaged files: torn tails, garbage tails, bit flips in sealed and active segments, lost or
//! damaged index files.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use herald_log::batch::BATCH_HEADER_BYTES;
use herald_log::{Durability, Log, LogConfig, LogError};

use crate::common::{files, payload, read_all, small_config};

fn copy_dir(from: &Path, to: &Path) {
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// A log of `batches` batches of 3 records in one segment, left as after a crash.
fn one_segment_log(dir: &Path, batches: u64) -> Vec<u64> {
    let log = Log::open(dir, LogConfig { durability: Durability::Os, ..LogConfig::default() }).unwrap();
    let mut ends = Vec::new();
    for b in 0..batches {
        let recs: Vec<Vec<u8>> = (b * 3..b * 3 + 3).map(payload).collect();
        log.append(&recs).unwrap();
        ends.push(log.size_bytes());
    }
    log.close_as_if_crashed();
    ends
}

#[test]
fn torn_tail_at_every_byte_of_the_last_batch() {
    let src = tempfile::tempdir().unwrap();
    let ends = one_segment_log(src.path(), 5);
    let seg = files(src.path(), "log").pop().unwrap();
    let (last_start, last_end) = (ends[3], ends[4]);
    for cut in last_start..last_end {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(src.path(), dir.path());
        let seg = dir.path().join(seg.file_name().unwrap());
        OpenOptions::new().write(true).open(&seg).unwrap().set_len(cut).unwrap();
        let (log, report) = Log::open_with_report(dir.path(), LogConfig::default()).unwrap();
        assert_eq!(report.truncated_bytes, cut - last_start, "cut at {cut}");
        assert_eq!(fs::metadata(&seg).unwrap().len(), last_start, "file cut back to the last whole batch");
        // Exactly the four complete batches survive, byte for byte.
        let recs = read_all(&log, 0, 5);
        assert_eq!(recs.len(), 12, "cut at {cut}");
        for r in &recs {
            assert_eq!(r.data.as_ref(), payload(r.offset).as_slice());
        }
        let a = log.append(&[b"after".as_slice()]).unwrap();
        assert_eq!(a.base_offset, 12, "the next append reuses the torn batch's offsets");
        assert_eq!(log.read(12, 100, 1).unwrap()[0].data.as_ref(), b"after");
    }
}

#[test]
fn garbage_tails_are_cut() {
    let src = tempfile::tempdir().unwrap();
    let ends = one_segment_log(src.path(), 4);
    let seg_name = files(src.path(), "log").pop().unwrap().file_name().unwrap().to_owned();
    let good_len = *ends.last().unwrap();
    // A header that claims the next offset and a plausible length, but whose CRC is wrong.
    let mut fake = vec![0u8; 64];
    fake[0..8].copy_from_slice(&12u64.to_le_bytes());
    fake[8..12].copy_from_slice(&64u32.to_le_bytes());
    fake[16] = 1;
    fake[18..22].copy_from_slice(&1u32.to_le_bytes());
    let tails: Vec<(&str, Vec<u8>)> = vec![
        ("zeros", vec![0; 4096]),
        ("random", (0..3000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect()),
        ("short", vec![0xff; BATCH_HEADER_BYTES - 1]),
        ("bad crc", fake),
    ];
    for (name, tail) in tails {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(src.path(), dir.path());
        let mut f = OpenOptions::new().append(true).open(dir.path().join(&seg_name)).unwrap();
        f.write_all(&tail).unwrap();
        drop(f);
        let (log, report) = Log::open_with_report(dir.path(), LogConfig::default()).unwrap();
        assert_eq!(report.truncated_bytes, tail.len() as u64, "{name}");
        assert_eq!(log.size_bytes(), good_len, "{name}");
        assert_eq!(read_all(&log, 0, 100).len(), 12, "{name}");
        assert_eq!(log.append(&[b"x".as_slice()]).unwrap().base_offset, 12, "{name}");
    }
}

/// Fills a log with small segments; returns it closed cleanly.
fn multi_segment_log(dir: &Path, records: u64) {
    let log = Log::open(dir, small_config()).unwrap();
    for i in (0..records).step_by(2) {
        log.append_at(&[payload(i), payload(i + 1)], 1_000 + i as i64).unwrap();
    }
    log.close().unwrap();
}

#[test]
fn bit_flip_in_a_sealed_segment_is_reported_not_served() {
    let dir = tempfile::tempdir().unwrap();
    multi_segment_log(dir.path(), 200);
    let segs = files(dir.path(), "log");
    assert!(segs.len() >= 4, "need several segments, got {}", segs.len());
    let victim = &segs[1];
    let victim_base: u64 = victim.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    let next_base: u64 = segs[2].file_stem().unwrap().to_str().unwrap().parse().unwrap();
    // Flip one bit inside the payload of the segment's second batch.
    let mut bytes = fs::read(victim).unwrap();
    let first_len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    let flip_at = first_len + BATCH_HEADER_BYTES + 6;
    bytes[flip_at] ^= 0x04;
    fs::write(victim, &bytes).unwrap();

    let (log, report) = Log::open_with_report(dir.path(), small_config()).unwrap();
    assert!(report.clean, "sealed segments are not scanned at open");
    let damaged = victim_base + 2;
    let err = log.read(damaged, 1 << 20, 100).unwrap_err();
    match &err {
        LogError::Corrupt { path, offset, position, .. } => {
            assert_eq!(path, victim);
            assert_eq!(*offset, damaged);
            assert_eq!(*position, first_len as u64);
        }
        e => panic!("expected a corruption error, got {e}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(victim.file_name().unwrap().to_str().unwrap()) && msg.contains(&damaged.to_string()), "{msg}");
    // Reading up to the damage returns what is before it and stops there: nothing skipped.
    let before = log.read(victim_base, 1 << 20, 100).unwrap();
    assert_eq!(before.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![victim_base, victim_base + 1]);
    assert!(log.read(victim_base + 3, 1 << 20, 100).is_err(), "the rest of the damaged batch is not served");
    // Records after the damaged batch and the other segments still read.
    let after = log.read(damaged + 2, 1 << 20, 1000).unwrap();
    assert_eq!(after[0].offset, damaged + 2);
    assert_eq!(after[0].data.as_ref(), payload(damaged + 2).as_slice());
    let (first, err) = read_all_until_error(&log, 0);
    assert!(matches!(err, Some(LogError::Corrupt { .. })));
    assert_eq!(first.len() as u64, victim_base + 2, "reading from 0 stops right before the damage");
    let rest = read_all(&log, next_base, 1000);
    assert_eq!(rest.len() as u64, 200 - next_base);
    for r in first.iter().chain(&rest) {
        assert_eq!(r.data.as_ref(), payload(r.offset).as_slice());
    }
    // A time lookup through the damaged segment does not panic either.
    let _ = log.offset_for_timestamp(0);
}

#[test]
fn damage_inside_the_active_segment_is_kept_and_reported_not_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let ends = one_segment_log(dir.path(), 6);
    let seg = files(dir.path(), "log").pop().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    // Flip a payload bit in batch 2 of 6 (records 6..9); batches after it are intact.
    bytes[ends[1] as usize + BATCH_HEADER_BYTES + 8] ^= 0x80;
    fs::write(&seg, &bytes).unwrap();
    let (log, report) = Log::open_with_report(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(report.truncated_bytes, 0, "acknowledged batches after the damage must not be cut");
    assert_eq!(report.corrupt_batches, 1);
    assert_eq!(log.latest_offset(), 18);
    assert!(matches!(log.read(6, 1 << 20, 10), Err(LogError::Corrupt { offset: 6, .. })));
    assert_eq!(log.read(0, 1 << 20, 100).unwrap().len(), 6);
    let tail = read_all(&log, 9, 100);
    assert_eq!(tail.len(), 9);
    assert_eq!(log.append(&[b"x".as_slice()]).unwrap().base_offset, 18);
}

#[test]
fn missing_or_damaged_index_files_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    multi_segment_log(dir.path(), 300);
    let expected = {
        let log = Log::open(dir.path(), small_config()).unwrap();
        let all = read_all(&log, 0, 7);
        let times: Vec<_> = (990..1310).step_by(7).map(|t| log.offset_for_timestamp(t).unwrap()).collect();
        (all, times)
    };
    let indexes = files(dir.path(), "index");
    let timeindexes = files(dir.path(), "timeindex");
    assert!(indexes.len() >= 4);
    fs::remove_file(&indexes[0]).unwrap();
    fs::write(&indexes[1], b"garbage").unwrap();
    let mut t = fs::read(&timeindexes[2]).unwrap();
    let n = t.len();
    t[n - 1] ^= 1;
    fs::write(&timeindexes[2], &t).unwrap();
    // The active segment's index too: then the clean marker cannot be trusted and it is scanned.
    fs::remove_file(indexes.last().unwrap()).unwrap();

    let (log, report) = Log::open_with_report(dir.path(), small_config()).unwrap();
    assert!(!report.clean);
    let all = read_all(&log, 0, 7);
    assert_eq!(all, expected.0);
    let times: Vec<_> = (990..1310).step_by(7).map(|t| log.offset_for_timestamp(t).unwrap()).collect();
    assert_eq!(times, expected.1);
    // And they are right: the first offset stamped at or after t (offset i is stamped 1000 + i
    // rounded down to even).
    for (k, t) in (990..1310).step_by(7).enumerate() {
        let want = (t - 1000).max(0) as u64;
        let want = want + want % 2;
        assert_eq!(times[k], (want < 300).then_some(want), "t={t}");
    }
    // Rebuilt files are written back.
    assert!(indexes[0].exists());
    assert_ne!(fs::read(&indexes[1]).unwrap(), b"garbage");
}

#[test]
fn truncated_sealed_segment_is_reported_as_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    multi_segment_log(dir.path(), 200);
    let segs = files(dir.path(), "log");
    let len = fs::metadata(&segs[1]).unwrap().len();
    OpenOptions::new().write(true).open(&segs[1]).unwrap().set_len(len / 2).unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    let base1: u64 = segs[1].file_stem().unwrap().to_str().unwrap().parse().unwrap();
    let base2: u64 = segs[2].file_stem().unwrap().to_str().unwrap().parse().unwrap();
    // Reading through the hole never jumps silently to the next segment.
    let got = read_all_until_error(&log, base1);
    assert!(got.0.last().is_none_or(|r| r.offset < base2 - 1));
    assert!(matches!(got.1, Some(LogError::Corrupt { .. })), "{:?}", got.1);
}

fn read_all_until_error(log: &Log, from: u64) -> (Vec<herald_log::Record>, Option<LogError>) {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        match log.read(next, 1 << 20, 1000) {
            Ok(b) if b.is_empty() => return (out, None),
            Ok(b) => {
                next = b.last().unwrap().offset + 1;
                out.extend(b);
            }
            Err(e) => return (out, Some(e)),
        }
    }
}

/// Repro 3 of #8: 600 records, a clean close, then the active segment cut to half. The offsets
/// the close recorded are never reused: the log continues after them, reports them lost, and
/// reads of them fail as damaged instead of returning the new records under old offsets.
#[test]
fn a_tail_lost_after_a_clean_close_is_reported_and_its_offsets_are_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    for b in 0..60u64 {
        let recs: Vec<Vec<u8>> = (b * 10..b * 10 + 10).map(payload).collect();
        log.append(&recs).unwrap();
    }
    log.close().unwrap();
    drop(log);
    let seg = files(dir.path(), "log").pop().unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    OpenOptions::new().write(true).open(&seg).unwrap().set_len(len / 2).unwrap();

    let (log, report) = Log::open_with_report(dir.path(), LogConfig::default()).unwrap();
    let (from, to) = report.lost.expect("the lost tail is reported");
    assert!(from < 600 && from > 200, "lost from {from}");
    assert_eq!(to, 600);
    assert!(report.truncated_bytes > 0);
    assert_eq!(log.latest_offset(), 600, "the log continues where the clean close left it");
    let a = log.append(&[b"after".as_slice()]).unwrap();
    assert_eq!(a.base_offset, 600, "no offset is reused");
    // What survived reads back; the lost range is damage, never silently skipped.
    let (got, err) = read_all_until_error(&log, 0);
    assert_eq!(got.len() as u64, from);
    assert!(got.iter().all(|r| r.data.as_ref() == payload(r.offset).as_slice()));
    assert!(matches!(err, Some(LogError::Corrupt { offset, .. }) if offset == from), "{err:?}");
    assert_eq!(log.read(600, 100, 10).unwrap()[0].data.as_ref(), b"after");

    // Reopened cleanly, and after a crash, it stays that way.
    log.close().unwrap();
    drop(log);
    let (log, report) = Log::open_with_report(dir.path(), LogConfig::default()).unwrap();
    assert!(report.clean && report.lost.is_none(), "{report:?}");
    assert_eq!(log.latest_offset(), 601);
    log.close_as_if_crashed();
    drop(log);
    let (log, report) = Log::open_with_report(dir.path(), LogConfig::default()).unwrap();
    assert!(report.lost.is_none() && report.truncated_bytes == 0, "{report:?}");
    assert_eq!(log.latest_offset(), 601);
    assert!(matches!(log.read(from, 100, 10), Err(LogError::Corrupt { .. })));
}

/// A marker written before format 2 (no `next_offset`) still means a clean close.
#[test]
fn a_format_1_clean_shutdown_marker_is_still_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    log.append(&[b"a".as_slice(), b"b".as_slice()]).unwrap();
    log.close().unwrap();
    drop(log);
    let marker = dir.path().join("clean-shutdown");
    let text = fs::read_to_string(&marker).unwrap();
    assert!(text.starts_with("herald-log clean-shutdown v2\n") && text.contains("next_offset=2\n"), "{text}");
    let v1: String = text
        .replace("clean-shutdown v2", "clean-shutdown v1")
        .lines()
        .filter(|l| !l.starts_with("next_offset="))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&marker, v1).unwrap();
    let (log, report) = Log::open_with_report(dir.path(), LogConfig::default()).unwrap();
    assert!(report.clean, "{report:?}");
    assert_eq!(log.latest_offset(), 2);
}

/// Oldest segments deleted by hand after a clean close (not by retention) are reported with
/// the offsets they held, where before the log silently started later.
#[test]
fn lost_head_segments_after_a_clean_close_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    multi_segment_log(dir.path(), 200);
    let log = Log::open(dir.path(), small_config()).unwrap();
    log.close().unwrap();
    drop(log);
    let segs = files(dir.path(), "log");
    assert!(segs.len() >= 3);
    fs::remove_file(&segs[0]).unwrap();
    let base1: u64 = segs[1].file_stem().unwrap().to_str().unwrap().parse().unwrap();
    let (log, report) = Log::open_with_report(dir.path(), small_config()).unwrap();
    assert_eq!(report.lost_head, Some((0, base1)), "{report:?}");
    assert_eq!(log.earliest_offset(), base1);
    // Retention is not damage: deleting through the log reports nothing at the next open.
    log.delete_before(log.latest_offset()).unwrap();
    log.close().unwrap();
    drop(log);
    let (_, report) = Log::open_with_report(dir.path(), small_config()).unwrap();
    assert_eq!(report.lost_head, None, "{report:?}");
}
