//! Crash test: a child process appends with `Durability::Always` from several threads and prints
//! every acknowledged batch; the parent kills it with SIGKILL at random moments, for many cycles,
//! and after each kill checks that every acknowledged record is present, in order, byte for byte.
//!
//! The child is this very test binary, re-executed on the `crash_child` test with an environment
//! variable set (sled's approach).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use herald_log::{Durability, Log, LogConfig};
use rand::Rng;

use crate::common::read_all;

const DIR_VAR: &str = "HERALD_LOG_CRASH_DIR";
const CYCLE_VAR: &str = "HERALD_LOG_CRASH_CYCLE";
const THREADS: u64 = 4;

fn config() -> LogConfig {
    // Small segments so that kills also land around rolls and index writes.
    LogConfig {
        segment_bytes_max: 64 * 1024,
        batch_bytes_max: 64 * 1024,
        record_bytes_max: 1024,
        durability: Durability::Always,
        ..LogConfig::default()
    }
}

fn content(cycle: u64, thread: u64, seq: u64) -> Vec<u8> {
    let mut v = format!("c{cycle}-t{thread}-s{seq}-").into_bytes();
    let len = ((cycle * 31 + thread * 17 + seq * 13) % 200) as usize;
    v.extend((0..len).map(|i| (i as u64 ^ seq ^ thread) as u8));
    v
}

fn parse_content(data: &[u8]) -> Option<(u64, u64, u64)> {
    let text = String::from_utf8_lossy(&data[..data.len().min(64)]);
    let mut it = text.split('-');
    let c = it.next()?.strip_prefix('c')?.parse().ok()?;
    let t = it.next()?.strip_prefix('t')?.parse().ok()?;
    let s = it.next()?.strip_prefix('s')?.parse().ok()?;
    Some((c, t, s))
}

/// The child: runs only when re-executed by `kill_9_loses_no_acknowledged_append`.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(DIR_VAR) else { return };
    let cycle: u64 = std::env::var(CYCLE_VAR).unwrap().parse().unwrap();
    let log = std::sync::Arc::new(Log::open(&dir, config()).unwrap());
    let out = std::sync::Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (log, out) = (log.clone(), out.clone());
            std::thread::spawn(move || {
                let mut rng = rand::rng();
                let mut seq = 0u64;
                loop {
                    let n = rng.random_range(1..=5u64);
                    let batch: Vec<Vec<u8>> = (seq..seq + n).map(|s| content(cycle, t, s)).collect();
                    let a = log.append(&batch).unwrap();
                    let mut o = out.lock().unwrap();
                    writeln!(o, "ACK {t} {seq} {n} {}", a.base_offset).unwrap();
                    o.flush().unwrap();
                    seq += n;
                }
            })
        })
        .collect();
    // The appenders loop until the parent kills this process.
    drop(threads);
    loop {
        std::thread::park();
    }
}

#[test]
fn kill_9_loses_no_acknowledged_append() {
    if std::env::var(DIR_VAR).is_ok() {
        return;
    }
    let cycles: u64 = std::env::var("HERALD_CRASH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(30);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rng();
    // offset -> (cycle, thread, seq) of every acknowledged record so far.
    let mut acked: HashMap<u64, (u64, u64, u64)> = HashMap::new();
    let mut cycles_with_acks = 0;
    for cycle in 0..cycles {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash::crash_child", "--nocapture", "--test-threads", "1"])
            .env(DIR_VAR, dir.path())
            .env(CYCLE_VAR, cycle.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                // A line cut by the kill has no newline: it was never a complete acknowledgement.
                if line.ends_with('\n') && line.starts_with("ACK ") {
                    lines.push(line.clone());
                }
                line.clear();
            }
            lines
        });
        std::thread::sleep(Duration::from_millis(rng.random_range(30..250)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        if !lines.is_empty() {
            cycles_with_acks += 1;
        }
        for line in lines {
            let f: Vec<u64> = line.split_whitespace().skip(1).map(|x| x.parse().unwrap()).collect();
            let (t, seq, n, base) = (f[0], f[1], f[2], f[3]);
            for i in 0..n {
                assert!(
                    acked.insert(base + i, (cycle, t, seq + i)).is_none(),
                    "offset {} acknowledged twice",
                    base + i
                );
            }
        }

        // Reopen as the next user would, and check.
        let (log, report) = Log::open_with_report(dir.path(), config()).unwrap();
        assert!(!report.clean, "a killed writer cannot have closed cleanly");
        let records = read_all(&log, 0, 1000);
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.offset, i as u64, "offsets are dense");
        }
        for (&offset, &(c, t, s)) in &acked {
            let r = records.get(offset as usize).unwrap_or_else(|| {
                panic!("cycle {cycle}: acknowledged offset {offset} lost; log ends at {}", records.len())
            });
            assert_eq!(r.data.as_ref(), content(c, t, s).as_slice(), "cycle {cycle}: offset {offset} differs");
        }
        // Unacknowledged records may be there (written, not yet confirmed) but never garbage, and
        // each writer's records appear in the order it wrote them.
        let mut last: HashMap<(u64, u64), u64> = HashMap::new();
        for r in &records {
            let (c, t, s) = parse_content(&r.data).unwrap_or_else(|| panic!("garbage at offset {}", r.offset));
            assert_eq!(r.data.as_ref(), content(c, t, s).as_slice(), "offset {} damaged", r.offset);
            if let Some(prev) = last.insert((c, t), s) {
                assert!(s > prev, "offset {}: writer ({c},{t}) out of order", r.offset);
            }
        }
        // Alternate how the parent leaves the log, so the child sees both recovery paths.
        if cycle % 2 == 0 {
            log.close().unwrap();
        } else {
            log.close_as_if_crashed();
        }
    }
    assert!(cycles_with_acks >= cycles / 2, "only {cycles_with_acks} of {cycles} cycles acknowledged anything");
    assert!(acked.len() > 100, "only {} acknowledged records: the test proves little", acked.len());
}
