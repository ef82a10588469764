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
