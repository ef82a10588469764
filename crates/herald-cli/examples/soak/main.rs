//! `herald serve` SIGKILLed again and again under mixed publish, consume, nack, dead-letter and
//! replay load; every event classified as lost, duplicated or unexpected (see `harness.rs`).
//! Prints one line of JSON and exits non-zero when anything was lost or unexpected.
//!
//! ```text
//! cargo build --release -p herald-cli --bin herald --example soak
//! target/release/examples/soak --cycles 50            # or: scripts/soak
//! ```
//!
//! Flags: `--herald PATH` (default `target/release/herald`), `--cycles N` (50), `--seed N` (1),
//! `--producers N` (4), `--rate N` (events/s per producer, 300), `--partitions N` (8),
//! `--load-ms MIN..MAX` (1000..3000), `--work-dir DIR` (kept; default a temporary directory kept
//! only on failure), `--server-log LEVEL` (the server's `HERALD_LOG`, `warn`),
//! `--drain-timeout-s N` (120), `--quiet` (no line per cycle).

mod harness;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

fn usage(why: &str) -> ExitCode {
    eprintln!(
        "soak: {why}\nusage: soak [--herald PATH] [--cycles N] [--seed N] [--producers N] [--rate N] [--partitions N] \
         [--load-ms MIN..MAX] [--work-dir DIR] [--server-log LEVEL] [--drain-timeout-s N] [--quiet]"
    );
    ExitCode::from(2)
}

fn parse_args() -> Result<harness::Options, String> {
    let mut opts = harness::Options::new(PathBuf::from("target/release/herald"));
    opts.verbose = true;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--quiet" {
            opts.verbose = false;
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |v: &str| v.parse::<u64>().map_err(|_| format!("{flag}: {v:?} is not a number"));
        match flag.as_str() {
            "--herald" => opts.herald = PathBuf::from(value),
            "--cycles" => opts.cycles = number(&value)? as usize,
            "--seed" => opts.seed = number(&value)?,
            "--producers" => opts.producers = number(&value)?.max(1) as usize,
            "--rate" => opts.rate = number(&value)?.max(1),
            "--partitions" => opts.partitions = number(&value)?.clamp(1, 1024) as u32,
            "--load-ms" => {
                let (lo, hi) = value.split_once("..").ok_or_else(|| format!("{flag}: expected MIN..MAX"))?;
                let (lo, hi) = (number(lo)?, number(hi)?);
                if lo > hi {
                    return Err(format!("{flag}: {lo} is above {hi}"));
                }
                opts.load_ms = (lo, hi);
            }
            "--work-dir" => opts.work_dir = Some(PathBuf::from(value)),
            "--server-log" => opts.server_log_level = value,
            "--drain-timeout-s" => opts.drain_timeout = Duration::from_secs(number(&value)?),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(opts)
}

#[tokio::main]
async fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(why) => return usage(&why),
    };
    match harness::run(opts).await {
        Ok(summary) => {
            eprint!("{}", summary.details);
            println!("{}", summary.json());
            if summary.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::from(3)
        }
    }
}
