//! Concurrent appenders (group commit) and readers running beside the writer.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use herald_log::{Durability, Log, LogConfig};

use crate::common::payload;

#[test]
fn concurrent_appenders_get_dense_unique_offsets_under_always() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        durability: Durability::Always,
        segment_bytes_max: 16 * 1024,
        batch_bytes_max: 16 * 1024,
        record_bytes_max: 1024,
        ..LogConfig::default()
    };
    let log = Arc::new(Log::open(dir.path(), config.clone()).unwrap());
    let handles: Vec<_> = (0..8u64)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                (0..100u64)
                    .map(|i| {
                        let a = log.append(&[format!("{t}:{i}").into_bytes()]).unwrap();
                        // Acknowledged means readable: the high watermark already covers it.
                        assert!(log.latest_offset() >= a.next_offset);
                        (a.base_offset, t, i)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<_> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    all.sort();
    assert_eq!(all.iter().map(|a| a.0).collect::<Vec<_>>(), (0..800).collect::<Vec<_>>());
    drop(log);
    let log = Log::open(dir.path(), config).unwrap();
    for (offset, t, i) in all {
        assert_eq!(log.read(offset, 100, 1).unwrap()[0].data.as_ref(), format!("{t}:{i}").as_bytes());
    }
}

#[test]
fn readers_see_a_consistent_prefix_while_the_writer_appends() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes_max: 8 * 1024,
        batch_bytes_max: 8 * 1024,
        record_bytes_max: 1024,
        index_interval_bytes: 256,
        durability: Durability::Os,
        ..LogConfig::default()
    };
    let log = Arc::new(Log::open(dir.path(), config).unwrap());
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (log, done) = (log.clone(), done.clone());
            std::thread::spawn(move || {
                let mut next = 0u64;
                let mut seen = HashSet::new();
                while !done.load(Ordering::Acquire) || next < log.latest_offset() {
                    for r in log.read(next, 4096, 64).unwrap() {
                        assert_eq!(r.offset, next, "no gaps, no repeats");
                        assert_eq!(r.data.as_ref(), payload(r.offset).as_slice(), "never a partial record");
                        seen.insert(r.offset);
                        next += 1;
                    }
                }
                seen.len()
            })
        })
        .collect();
    for i in (0..3000u64).step_by(3) {
        log.append(&[payload(i), payload(i + 1), payload(i + 2)]).unwrap();
    }
    done.store(true, Ordering::Release);
    for r in readers {
        assert_eq!(r.join().unwrap(), 3000);
    }
}

/// An fsync failure fences the log: the waiting append fails, later appends fail with a clear
/// error, nothing unsynced becomes readable, and a reopen recovers.
#[cfg(feature = "failpoints")]
#[test]
fn an_fsync_failure_fences_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    log.append(&[b"durable".as_slice()]).unwrap();
    herald_log::failpoints::fail_next_fsyncs(dir.path(), 1);
    let err = log.append(&[b"lost?".as_slice()]).unwrap_err();
    assert!(err.to_string().contains("injected fsync failure"), "{err}");
    assert_eq!(log.latest_offset(), 1, "an append whose fsync failed is never readable");
    let err = log.append(&[b"later".as_slice()]).unwrap_err();
    assert!(matches!(err, herald_log::LogError::Fenced { .. }), "{err}");
    assert!(err.to_string().contains("reopen the log"), "{err}");
    // It is not retried as if all were well: even a successful fsync later does not unfence.
    assert!(log.flush().is_err());
    drop(log);
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(log.read(0, 100, 10).unwrap()[0].data.as_ref(), b"durable");
    log.append(&[b"after reopen".as_slice()]).unwrap();
}

/// A full disk (repro 5 of #8): appends fail as `storage_full`, nothing unacknowledged becomes
/// readable, and once there is space again `try_unfence` makes the log writable without a
/// reopen, under every durability policy. Any other failure is not unfenced.
#[cfg(feature = "failpoints")]
#[test]
fn a_full_disk_fences_the_log_until_there_is_space_again() {
    use herald_log::failpoints::{fail_next_fsyncs, set_disk_full};
    for durability in [Durability::Always, Durability::Os, Durability::Interval { ms: 10_000 }] {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig { durability, ..LogConfig::default() };
        let log = Log::open(dir.path(), config.clone()).unwrap();
        log.append(&[b"a".as_slice(), b"b".as_slice()]).unwrap();
        log.flush().unwrap();
        set_disk_full(dir.path(), true);
        let err = log.append(&[b"c".as_slice()]).unwrap_err();
        assert!(err.is_storage_full(), "{durability:?}: {err}");
        let err = log.append(&[b"d".as_slice()]).unwrap_err();
        assert!(matches!(err, herald_log::LogError::Fenced { storage_full: true, .. }), "{err}");
        assert!(err.to_string().contains("free disk space"), "{err}");
        assert!(log.fenced().is_some_and(|(_, full)| full));
        assert_eq!(log.latest_offset(), 2, "{durability:?}");
        // Still full: the probe fails and the log stays fenced.
        assert!(!log.try_unfence().unwrap());
        assert!(log.append(&[b"e".as_slice()]).unwrap_err().is_storage_full());

        set_disk_full(dir.path(), false);
        assert!(log.try_unfence().unwrap(), "{durability:?}");
        assert!(log.fenced().is_none());
        let a = log.append(&[b"f".as_slice()]).unwrap();
        assert_eq!(a.base_offset, 2, "{durability:?}: the failed appends left nothing behind");
        log.flush().unwrap();
        let got: Vec<Vec<u8>> = log.read(0, 1 << 20, 100).unwrap().into_iter().map(|r| r.data.to_vec()).collect();
        assert_eq!(got, [b"a".to_vec(), b"b".to_vec(), b"f".to_vec()], "{durability:?}");
        // And it all survives a crash and a reopen.
        log.close_as_if_crashed();
        drop(log);
        let log = Log::open(dir.path(), config).unwrap();
        assert_eq!(log.read(0, 1 << 20, 100).unwrap().len(), 3, "{durability:?}");
        drop(log);
    }
    // An fsync failure that is not a full disk is never unfenced in place.
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    fail_next_fsyncs(dir.path(), 1);
    assert!(log.append(&[b"x".as_slice()]).is_err());
    assert!(!log.try_unfence().unwrap());
    assert!(log.append(&[b"y".as_slice()]).is_err());
}
