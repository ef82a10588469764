//! Segment roll, retention, time lookups and reopening.

use herald_log::{Durability, Log, LogConfig, LogError, Retention};

use crate::common::{files, payload, read_all, small_config};

#[test]
fn segments_roll_by_size_and_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    for i in 0..100 {
        log.append_at(&[payload(i)], 1000).unwrap();
    }
    let by_size = log.segment_count();
    assert!(by_size > 3, "1 KiB segments must roll, got {by_size}");
    for seg in files(dir.path(), "log") {
        assert!(std::fs::metadata(&seg).unwrap().len() <= 1024, "{} over segment_bytes_max", seg.display());
    }
    // Every sealed segment has its index files.
    assert_eq!(files(dir.path(), "index").len(), by_size - 1);
    assert_eq!(files(dir.path(), "timeindex").len(), by_size - 1);
    drop(log);

    let config = LogConfig { segment_age_ms_max: 500, segment_bytes_max: 1 << 20, ..small_config() };
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config).unwrap();
    log.append_at(&[b"a".as_slice()], 1000).unwrap();
    log.append_at(&[b"b".as_slice()], 1499).unwrap();
    assert_eq!(log.segment_count(), 1);
    log.append_at(&[b"c".as_slice()], 1500).unwrap();
    assert_eq!(log.segment_count(), 2, "a segment whose first record is 500 ms old rolls");
    assert_eq!(read_all(&log, 0, 10).len(), 3);
}

#[test]
fn a_batch_larger_than_a_segment_gets_a_segment_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { segment_bytes_max: 1024, batch_bytes_max: 64 * 1024, ..small_config() };
    let log = Log::open(dir.path(), config.clone()).unwrap();
    log.append(&[payload(0)]).unwrap();
    let big: Vec<Vec<u8>> = (1..11).map(|i| vec![i as u8; 500]).collect();
    assert_eq!(log.append(&big).unwrap().base_offset, 1);
    log.append(&[payload(11)]).unwrap();
    assert_eq!(log.segment_count(), 3);
    drop(log);
    let log = Log::open(dir.path(), config).unwrap();
    let all = read_all(&log, 0, 100);
    assert_eq!(all.len(), 12);
    assert_eq!(all[5].data, vec![5u8; 500]);
}

#[test]
fn retention_by_bytes_deletes_whole_oldest_segments() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { retention: Retention { bytes: Some(3000), age_ms: None }, ..small_config() };
    let log = Log::open(dir.path(), config).unwrap();
    for i in 0..200 {
        log.append_at(&[payload(i)], 1000 + i as i64).unwrap();
    }
    let before = log.size_bytes();
    let segments_before = log.segment_count();
    let report = log.enforce_retention(i64::MAX / 4).unwrap();
    assert!(report.segments > 0 && report.segments < segments_before);
    assert_eq!(log.size_bytes(), before - report.bytes);
    // Keeps at least the retained bytes, and not a whole segment more.
    assert!(log.size_bytes() >= 3000 && log.size_bytes() < 3000 + 1024, "{} bytes left", log.size_bytes());
    let earliest = log.earliest_offset();
    assert_eq!(report.earliest_offset, earliest);
    assert!(earliest > 0);
    assert_eq!(files(dir.path(), "log").len(), segments_before - report.segments);
    let err = log.read(earliest - 1, 100, 1).unwrap_err();
    assert_eq!(err.to_string(), format!("offset {} is below the earliest retained offset {earliest}", earliest - 1));
    let rest = read_all(&log, earliest, 50);
    assert_eq!(rest.len() as u64, 200 - earliest);
    assert!(rest.iter().all(|r| r.data == payload(r.offset)));
    // Reopening keeps the new earliest offset.
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.earliest_offset(), earliest);
    assert_eq!(log.latest_offset(), 200);
}

#[test]
fn retention_by_age_never_deletes_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { retention: Retention { age_ms: Some(1000), bytes: None }, ..small_config() };
    let log = Log::open(dir.path(), config).unwrap();
    for i in 0..100 {
        log.append_at(&[payload(i)], 10_000 + i as i64 * 100).unwrap();
    }
    // Now = the newest record's time + 1 s + a bit: only segments entirely older than
    // now - 1000 ms go.
    let now = 10_000 + 99 * 100 + 1000 + 1;
    let report = log.enforce_retention(now).unwrap();
    let earliest = log.earliest_offset();
    assert!(report.segments > 0);
    let first_kept = log.read(earliest, 100, 1).unwrap()[0].timestamp_ms;
    assert!(first_kept >= 10_000);
    // Everything deleted was older than the limit.
    assert!(10_000 + (earliest as i64 - 1) * 100 < now - 1000);
    // Far in the future, all sealed segments go but the active one stays.
    log.enforce_retention(i64::MAX / 4).unwrap();
    assert_eq!(log.segment_count(), 1);
    assert!(!log.read(log.earliest_offset(), 100, 10).unwrap().is_empty());
    assert_eq!(log.latest_offset(), 100);
}

#[test]
fn time_lookups_find_the_first_offset_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    // Batch k holds offsets 2k, 2k+1, stamped 5000 + 10k; one stamp goes backwards and is raised.
    for k in 0..150u64 {
        let ts = if k == 70 { 100 } else { 5000 + 10 * k as i64 };
        log.append_at(&[payload(2 * k), payload(2 * k + 1)], ts).unwrap();
    }
    let check = |t: i64, want: Option<u64>| assert_eq!(log.offset_for_timestamp(t).unwrap(), want, "t={t}");
    check(i64::MIN, Some(0));
    check(5000, Some(0));
    check(5001, Some(2));
    check(5010, Some(2));
    check(5685, Some(138));
    check(5690, Some(138)); // batch 70 was stamped 5690 (raised to batch 69's 5690)
    check(5691, Some(142));
    check(5000 + 10 * 149, Some(298));
    check(5000 + 10 * 149 + 1, None);
    assert_eq!(log.read(140, 100, 1).unwrap()[0].timestamp_ms, 5690);
    // The same after a reopen, from the index files.
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.offset_for_timestamp(5691).unwrap(), Some(142));
}

#[test]
fn reopen_keeps_everything_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..4u64 {
        let (log, report) = Log::open_with_report(dir.path(), small_config()).unwrap();
        assert_eq!(report.clean, round > 0);
        assert_eq!(log.latest_offset(), round * 50);
        for i in round * 50..round * 50 + 50 {
            assert_eq!(log.append(&[payload(i)]).unwrap().base_offset, i);
        }
        let all = read_all(&log, 0, 13);
        assert_eq!(all.len() as u64, round * 50 + 50);
        assert!(all.iter().all(|r| r.data == payload(r.offset)));
    }
}

#[test]
fn reads_past_the_end_and_empty_reads() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig { durability: Durability::Interval { ms: 5 }, ..LogConfig::default() })
        .unwrap();
    assert!(log.read(0, 100, 10).unwrap().is_empty());
    assert!(matches!(log.read(1, 100, 10), Err(LogError::OffsetBeyondLatest { offset: 1, latest: 0 })));
    log.append(&[b"one".as_slice()]).unwrap();
    assert!(log.read(1, 100, 10).unwrap().is_empty());
    assert_eq!(
        log.read(5, 100, 10).unwrap_err().to_string(),
        "offset 5 is beyond the latest offset 1; the next append gets 1"
    );
    // A budget smaller than the first record still returns it.
    assert_eq!(log.read(0, 0, 0).unwrap().len(), 1);
    log.close().unwrap();
    assert!(matches!(log.append(&[b"x".as_slice()]), Err(LogError::Closed { .. })));
    assert!(matches!(log.read(0, 1, 1), Err(LogError::Closed { .. })));
}

#[test]
fn delete_before_drops_only_whole_segments_below_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    for i in 0..200 {
        log.append(&[payload(i)]).unwrap();
    }
    let segments = log.segment_count();
    assert_eq!(log.delete_before(0).unwrap().segments, 0);
    let report = log.delete_before(100).unwrap();
    assert!(report.segments > 0 && report.segments < segments);
    let earliest = log.earliest_offset();
    assert!(earliest <= 100 && earliest > 0, "earliest {earliest}");
    assert_eq!(log.read(100, 1 << 20, 1).unwrap()[0].data, payload(100));
    // Never the active segment, even when asked for everything.
    log.delete_before(u64::MAX).unwrap();
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.read(199, 100, 1).unwrap()[0].data, payload(199));
}
