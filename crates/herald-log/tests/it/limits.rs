//! Every limit is validated at open and enforced at append, with an error naming it.

use herald_log::{ConfigError, Durability, Log, LogConfig, LogError};

fn open_err(config: LogConfig) -> String {
    let dir = tempfile::tempdir().unwrap();
    match Log::open(dir.path(), config) {
        Err(LogError::Config(e @ ConfigError::OutOfRange { .. })) => e.to_string(),
        Err(e) => panic!("expected a config error, got {e}"),
        Ok(_) => panic!("expected a config error"),
    }
}

#[test]
fn config_values_out_of_range_are_refused_with_their_name() {
    let d = LogConfig::default;
    let cases: Vec<(LogConfig, &str)> = vec![
        (
            LogConfig { segment_bytes_max: 100, ..d() },
            "segment_bytes_max is 100 bytes; it must be between 1024 and 1073741824 bytes",
        ),
        (LogConfig { segment_bytes_max: 2 << 30, ..d() }, "segment_bytes_max is 2147483648 bytes"),
        (LogConfig { record_bytes_max: 0, ..d() }, "record_bytes_max is 0 bytes"),
        (
            LogConfig { record_bytes_max: 128 << 20, ..d() },
            "record_bytes_max is 134217728 bytes; it must be between 1 and 67108864 bytes",
        ),
        (LogConfig { batch_bytes_max: 100, ..d() }, "batch_bytes_max is 100 bytes"),
        (
            LogConfig { batch_bytes_max: 1000, record_bytes_max: 1000, ..d() },
            "batch_bytes_max is 1000 bytes; it must be between 1034 and 268435456 bytes",
        ),
        (LogConfig { batch_records_max: 0, ..d() }, "batch_records_max is 0 records"),
        (
            LogConfig { index_interval_bytes: 8, ..d() },
            "index_interval_bytes is 8 bytes; it must be between 64 and 16777216 bytes",
        ),
        (LogConfig { durability: Durability::Interval { ms: 0 }, ..d() }, "durability.interval_ms is 0 ms"),
        (
            LogConfig { durability: Durability::Interval { ms: 61_000 }, ..d() },
            "durability.interval_ms is 61000 ms; it must be between 1 and 60000 ms",
        ),
        (LogConfig { segment_age_ms_max: 0, ..d() }, "segment_age_ms_max is 0 ms"),
    ];
    for (config, want) in cases {
        let got = open_err(config);
        assert!(got.starts_with(want), "got {got:?}, want {want:?}");
    }
    LogConfig::default().validate().unwrap();
}

#[test]
fn oversized_records_and_batches_are_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        LogConfig { record_bytes_max: 100, batch_bytes_max: 400, batch_records_max: 10, ..LogConfig::default() };
    let log = Log::open(dir.path(), config).unwrap();
    let cases: Vec<(Vec<Vec<u8>>, &str)> = vec![
        (vec![vec![0; 101]], "record 0 of the batch is 101 bytes; the limit is 100 (record_bytes_max)"),
        (vec![vec![0; 10], vec![0; 200]], "record 1 of the batch is 200 bytes; the limit is 100 (record_bytes_max)"),
        (vec![vec![0; 100]; 4], "batch is 446 bytes encoded; the limit is 400 (batch_bytes_max): split it"),
        (vec![vec![]; 11], "batch holds 11 records; the limit is 10 (batch_records_max): split it"),
        (vec![], "a batch must hold at least one record"),
    ];
    for (batch, want) in cases {
        assert_eq!(log.append(&batch).unwrap_err().to_string(), want);
    }
    assert_eq!(log.latest_offset(), 0);
    assert_eq!(log.size_bytes(), 0);
    // Exactly at the limits is fine.
    log.append(&[vec![7u8; 100]]).unwrap();
    log.append(&vec![vec![]; 10]).unwrap();
    assert_eq!(log.latest_offset(), 11);
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let err = Log::open(dir.path(), LogConfig::default()).err().expect("second open must fail");
    assert!(matches!(err, LogError::Locked { .. }), "{err}");
}

#[test]
fn a_closed_log_releases_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    log.append(&[b"x".as_slice()]).unwrap();
    log.close().unwrap();
    // The handle still exists, but the directory is free for a new open.
    let again = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(again.latest_offset(), 1);
    drop(log);
    assert_eq!(again.read(0, 10, 1).unwrap()[0].data.as_ref(), b"x");
}
