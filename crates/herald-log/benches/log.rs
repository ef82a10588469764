//! Log benchmark: append throughput per record size, batch size and durability policy; group
//! commit with concurrent appenders; sequential reads; open time against log size. Each figure
//! is the median of several runs, printed next to a raw-file peer measured in the same run
//! (`pwrite` of the same bytes, and `fdatasync` alone), since these machines are noisy.
//!
//! ```text
//! cargo bench -p herald-log --bench log                # everything, opens of 1 GB and 8 GB logs
//! cargo bench -p herald-log --bench log -- --quick     # shorter runs, 1 GB open only
//! HERALD_BENCH_DIR=/path cargo bench ...               # where the logs are written (default: target/)
//! ```

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_log::{Durability, Log, LogConfig};

struct Opts {
    runs: usize,
    run_time: Duration,
    open_gb: Vec<u64>,
    dir: PathBuf,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn fresh_dir(opts: &Opts, name: &str) -> PathBuf {
    let d = opts.dir.join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn policy_name(d: Durability) -> String {
    match d {
        Durability::Always => "always".into(),
        Durability::Interval { ms } => format!("interval({ms} ms)"),
        Durability::Os => "os".into(),
    }
}

fn bench_config(durability: Durability) -> LogConfig {
    LogConfig { durability, ..LogConfig::default() }
}

/// Appends batches of `batch` records of `size` bytes for about `run_time` from `threads`
/// threads; returns records per second.
fn append_rate(opts: &Opts, durability: Durability, size: usize, batch: usize, threads: usize) -> f64 {
    let dir = fresh_dir(opts, "append");
    let log = Arc::new(Log::open(&dir, bench_config(durability)).unwrap());
    let records: Vec<Vec<u8>> = (0..batch).map(|i| vec![i as u8; size]).collect();
    let records = Arc::new(records);
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (log, records, run_time) = (log.clone(), records.clone(), opts.run_time);
            std::thread::spawn(move || {
                let mut n = 0u64;
                while start.elapsed() < run_time {
                    log.append(&records).unwrap();
                    n += records.len() as u64;
                }
                n
            })
        })
        .collect();
    let n: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let rate = n as f64 / start.elapsed().as_secs_f64();
    drop(log);
    let _ = std::fs::remove_dir_all(&dir);
    rate
}

/// The peer: `pwrite` of the same bytes per batch into a plain file (plus `fdatasync` per batch
/// for `always`); records per second.
fn raw_rate(opts: &Opts, durability: Durability, size: usize, batch: usize) -> f64 {
    let dir = fresh_dir(opts, "raw");
    std::fs::create_dir_all(&dir).unwrap();
    let f = OpenOptions::new().create(true).write(true).truncate(true).open(dir.join("raw")).unwrap();
    let buf = vec![7u8; batch * (size + 4) + 30];
    let start = Instant::now();
    let (mut n, mut pos) = (0u64, 0u64);
    while start.elapsed() < opts.run_time {
        f.write_all_at(&buf, pos).unwrap();
        if durability == Durability::Always {
            f.sync_data().unwrap();
        }
        pos += buf.len() as u64;
        n += batch as u64;
        if pos > 1 << 30 {
            f.set_len(0).unwrap();
            pos = 0;
        }
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    rate
}

/// Fills a log with at least `bytes` of 1 KiB records and, when `full_active`, goes on until
/// the active segment is nearly full, the worst case for recovery.
fn fill(dir: &Path, bytes: u64, durability: Durability, full_active: bool) -> u64 {
    let log = Log::open(dir, bench_config(durability)).unwrap();
    let records: Vec<Vec<u8>> = (0..1000).map(|i| vec![i as u8; 1024]).collect();
    let mut n = 0;
    let segment_bytes_max = log.config().segment_bytes_max;
    while log.size_bytes() < bytes || (full_active && log.active_segment_bytes() < segment_bytes_max - (4 << 20)) {
        log.append(&records).unwrap();
        n += 1000;
    }
    log.close().unwrap();
    n
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let dir = std::env::var_os("HERALD_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/herald-bench"));
    std::fs::create_dir_all(&dir).unwrap();
    let opts = Opts {
        runs: if quick { 3 } else { 5 },
        run_time: Duration::from_millis(if quick { 400 } else { 1000 }),
        open_gb: if quick { vec![1] } else { vec![1, 8] },
        dir,
    };
    println!("# herald-log benchmark ({} runs each, median; {} ms per run)\n", opts.runs, opts.run_time.as_millis());

    println!("## Append, one appender\n");
    println!("| policy | record | batch | events/s | MB/s | raw pwrite peer events/s | log / peer |");
    println!("|---|---|---|---|---|---|---|");
    let policies = [Durability::Interval { ms: 100 }, Durability::Os, Durability::Always];
    for durability in policies {
        for size in [100usize, 1024] {
            for batch in [1usize, 100, 1000] {
                let log = median((0..opts.runs).map(|_| append_rate(&opts, durability, size, batch, 1)).collect());
                let raw = median((0..opts.runs).map(|_| raw_rate(&opts, durability, size, batch)).collect());
                println!(
                    "| {} | {size} B | {batch} | {:.0} | {:.1} | {:.0} | {:.2} |",
                    policy_name(durability),
                    log,
                    log * size as f64 / 1e6,
                    raw,
                    log / raw
                );
            }
        }
    }

    println!("\n## Group commit: `always`, concurrent appenders, 100 B records\n");
    println!("| appenders | batch | events/s | fsyncs alone per s (peer) |");
    println!("|---|---|---|---|");
    let fsync_rate = median((0..opts.runs).map(|_| raw_rate(&opts, Durability::Always, 0, 1)).collect());
    for batch in [1usize, 100] {
        for threads in [1usize, 8] {
            let r =
                median((0..opts.runs).map(|_| append_rate(&opts, Durability::Always, 100, batch, threads)).collect());
            println!("| {threads} | {batch} | {r:.0} | {fsync_rate:.0} |");
        }
    }

    println!("\n## Sequential read, 1 KiB records, from the page cache\n");
    let rdir = fresh_dir(&opts, "read");
    let n = fill(&rdir, 512 << 20, Durability::Os, false);
    let log = Log::open(&rdir, LogConfig::default()).unwrap();
    let rates: Vec<f64> = (0..opts.runs)
        .map(|_| {
            let start = Instant::now();
            let (mut next, mut bytes) = (0u64, 0u64);
            while next < n {
                let recs = log.read(next, 1 << 20, 10_000).unwrap();
                next = recs.last().unwrap().offset + 1;
                bytes += recs.iter().map(|r| r.data.len() as u64).sum::<u64>();
            }
            assert_eq!(bytes, n * 1024);
            n as f64 / start.elapsed().as_secs_f64()
        })
        .collect();
    let r = median(rates);
    println!("| events | events/s | MB/s |\n|---|---|---|\n| {n} | {r:.0} | {:.0} |", r * 1024.0 / 1e6);
    drop(log);
    let _ = std::fs::remove_dir_all(&rdir);

    println!("\n## Open time against log size (1 KiB records, 128 MiB segments)\n");
    println!(
        "| log size | segments | active segment | open after clean close | open after crash (scans the active segment) |"
    );
    println!("|---|---|---|---|---|");
    for gb in &opts.open_gb {
        let odir = fresh_dir(&opts, "open");
        fill(&odir, gb << 30, Durability::Os, true);
        let mut clean = Vec::new();
        let mut crash = Vec::new();
        let (mut segments, mut active, mut size) = (0, 0, 0);
        for _ in 0..opts.runs {
            let start = Instant::now();
            let log = Log::open(&odir, LogConfig::default()).unwrap();
            clean.push(start.elapsed().as_secs_f64() * 1e3);
            (segments, active, size) = (log.segment_count(), log.active_segment_bytes(), log.size_bytes());
            log.close_as_if_crashed();
            drop(log);
            let start = Instant::now();
            let log = Log::open(&odir, LogConfig::default()).unwrap();
            crash.push(start.elapsed().as_secs_f64() * 1e3);
            log.close().unwrap();
        }
        println!(
            "| {:.2} GiB | {segments} | {:.0} MiB | {:.1} ms | {:.1} ms |",
            size as f64 / (1u64 << 30) as f64,
            active as f64 / (1u64 << 20) as f64,
            median(clean),
            median(crash)
        );
        let _ = std::fs::remove_dir_all(&odir);
    }
}
