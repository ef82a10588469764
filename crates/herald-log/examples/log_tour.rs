//! A tour of Herald's durable log: events built with herald-core go into a partition log, are
//! read back, found by time, and survive a simulated crash with a torn tail.
//!
//! ```text
//! cargo run --release -p herald-log --example log_tour            # in a temporary directory
//! cargo run --release -p herald-log --example log_tour -- ./data  # or in ./data (kept)
//! ```

use std::io::Write;
use std::time::Instant;

use herald_core::codec::{binary, json};
use herald_core::{Event, Timestamp};
use herald_log::{Durability, Log, LogConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_target(false).with_writer(std::io::stderr).init();
    let tmp = tempfile::tempdir()?;
    let dir = std::env::args().nth(1).map(std::path::PathBuf::from).unwrap_or_else(|| tmp.path().join("orders-0"));
    let config = LogConfig { durability: Durability::Always, segment_bytes_max: 1 << 20, ..LogConfig::default() };

    println!("Herald log tour: one partition log in {}", dir.display());
    let (log, recovery) = Log::open_with_report(&dir, config.clone())?;
    println!("opened: {} events already stored, recovery {:?}", log.latest_offset(), recovery);

    // 1. Publish-side: build CloudEvents, encode them in the binary record format, append in
    //    batches. With `always`, each append returns once its batch is fsynced.
    let start = Instant::now();
    let first = log.latest_offset();
    let count = 20_000u64;
    let mut split_ts = 0;
    for batch in 0..count / 100 {
        let records: Vec<Vec<u8>> = (0..100)
            .map(|i| {
                let n = batch * 100 + i;
                let event = Event::builder("order.created")
                    .source("/shop/orders")
                    .key(format!("customer-{}", n % 97))
                    .json(&serde_json::json!({ "order": n, "total_cents": 1000 + n % 5000 }))
                    .build()
                    .expect("a valid event");
                binary::encode(&event)
            })
            .collect();
        let appended = log.append(&records)?;
        if batch == count / 200 {
            split_ts = appended.timestamp_ms;
        }
    }
    let elapsed = start.elapsed();
    println!(
        "appended {count} events in {:.0} ms ({:.0} events/s, fsync per batch of 100), {} segments, {} bytes",
        elapsed.as_secs_f64() * 1e3,
        count as f64 / elapsed.as_secs_f64(),
        log.segment_count(),
        log.size_bytes()
    );

    // 2. Consume-side: read back from an offset with a budget and decode.
    let records = log.read(first, 64 * 1024, 3)?;
    for r in &records {
        let event = binary::decode(&r.data)?;
        println!("offset {} @ {} ms: {}", r.offset, r.timestamp_ms, json::to_json(&event));
    }

    // 3. Time lookup: where does a consumer starting "from this timestamp" begin?
    let at = log.offset_for_timestamp(split_ts)?;
    println!("first offset at or after {} is {:?}", Timestamp::from_unix_nanos(split_ts * 1_000_000), at);

    // 4. A crash with a torn write: the process dies, half a batch is on disk.
    let latest = log.latest_offset();
    log.close_as_if_crashed();
    drop(log);
    let active = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .max()
        .expect("a segment");
    std::fs::OpenOptions::new().append(true).open(&active)?.write_all(&[0x42; 300])?;
    println!("simulated a crash: 300 bytes of torn batch appended to {}", active.display());

    let (log, recovery) = Log::open_with_report(&dir, config)?;
    println!(
        "reopened: recovery cut {} bytes, {} events readable (expected {latest})",
        recovery.truncated_bytes,
        log.latest_offset()
    );
    assert_eq!(log.latest_offset(), latest, "no acknowledged event lost");
    let last = log.read(latest - 1, 1 << 16, 1)?;
    let event = binary::decode(&last[0].data)?;
    println!("last event survived intact: id {} key {:?}", event.id(), event.key());
    log.close()?;
    println!("closed cleanly: the next open skips recovery");
    Ok(())
}
