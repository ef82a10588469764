use herald_log::{Durability, Log, LogConfig, Record};

/// A configuration with tiny segments and indexes so that rolls and index lookups happen often.
pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 1024,
        index_interval_bytes: 64,
        batch_bytes_max: 1024,
        record_bytes_max: 512,
        durability: Durability::Os,
        ..LogConfig::default()
    }
}

/// Reads every record from `from` to the end, in pieces of `step` records.
pub fn read_all(log: &Log, from: u64, step: usize) -> Vec<Record> {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let batch = log.read(next, 1 << 20, step).expect("read");
        let Some(last) = batch.last() else { break };
        next = last.offset + 1;
        out.extend(batch);
    }
    out
}

/// Deterministic payload for record `i`, of varying length.
pub fn payload(i: u64) -> Vec<u8> {
    let len = (i * 7919 % 61) as usize + 1;
    let mut v = format!("record-{i}-").into_bytes();
    v.extend((0..len).map(|j| (i as usize + j) as u8));
    v
}

/// Files of the log directory with the given extension, sorted.
pub fn files(dir: &std::path::Path, ext: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}
