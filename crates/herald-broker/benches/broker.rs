//! Broker benchmark, in process: publish → consume throughput at the maximum rate, and end-to-end
//! latency (publish to delivery) at fixed publish rates, over a topic of 8 partitions with 1 or 4
//! consumer groups of 2 members each. Throughput figures are medians of several runs, printed
//! next to a peer measured in the same run: the bare `herald_log::Log` appending the same encoded
//! events in batches of 1000 to 8 logs and reading them back once per group, which is what the
//! storage alone can do. Latency figures are per-run HDR histograms; each percentile printed is
//! the median over runs.
//!
//! ```text
//! cargo bench -p herald-broker --bench broker                # everything
//! cargo bench -p herald-broker --bench broker -- --quick     # fewer events, shorter runs
//! cargo bench -p herald-broker --bench broker -- latency     # one section: throughput or latency
//! HERALD_BENCH_DIR=/path cargo bench ...                     # where data is written (default: target/)
//! ```
//!
//! Events carry no partition key (they spread over the partitions by id) and `data` of the stated
//! size whose first 8 bytes are the publish time in ns since a process-wide `Instant`, so that
//! publisher and consumer read the same clock. Consumers poll up to 1000 events, ack each one
//! and go on; the default group settings (key ordering, which does not hold back keyless events)
//! are used.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use herald_broker::{Broker, BrokerConfig, Durability, GroupConfig, Member, MemberConfig, TopicConfig};
use herald_core::Event;
use herald_core::codec::binary;
use herald_log::{Log, LogConfig};

const TOPIC: &str = "bench";
const PARTITIONS: u32 = 8;
const MEMBERS_PER_GROUP: usize = 2;
const POLL_MAX: usize = 1000;
const PUBLISH_BATCH: usize = 1000;
/// Concurrent publishers in the throughput runs (each awaits its batch before the next).
const PUBLISHERS: usize = 4;
/// Publish tick in the fixed-rate runs.
const TICK: Duration = Duration::from_millis(1);
/// Longest a run may take to drain before the bench gives up.
const DRAIN_MAX: Duration = Duration::from_secs(120);

struct Opts {
    runs: usize,
    /// Events per throughput run, by event size.
    events_small: u64,
    events_large: u64,
    warmup: Duration,
    measure: Duration,
    dir: PathBuf,
}

fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
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

fn durability_name(d: Durability) -> String {
    match d {
        Durability::Always => "always".into(),
        Durability::Interval { ms } => format!("interval({ms} ms)"),
        Durability::Os => "os".into(),
    }
}

/// An event with `size` bytes of data, stamped with the publish time `ts` (ns).
fn event(size: usize, ts: u64) -> Event {
    let mut data = vec![0x5a; size.max(8)];
    data[..8].copy_from_slice(&ts.to_le_bytes());
    Event::builder("bench.event").data(data, "application/octet-stream").build().unwrap()
}

fn stamp(d: &herald_broker::Delivery) -> u64 {
    u64::from_le_bytes(d.event().data()[..8].try_into().unwrap())
}

fn with_commas(v: f64) -> String {
    let s = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A broker with the bench topic and `groups` groups of `MEMBERS_PER_GROUP` members.
fn setup(dir: &PathBuf, durability: Durability, groups: usize) -> (Broker, Vec<Vec<Member>>) {
    let broker = Broker::open(dir, BrokerConfig::default()).unwrap();
    let mut topic = TopicConfig::with_partitions(PARTITIONS);
    topic.durability = durability;
    broker.create_topic(TOPIC, topic).unwrap();
    let members = (0..groups)
        .map(|g| {
            let name = format!("g{g}");
            // The group's state takes the topic's durability: `interval` end to end.
            let group = GroupConfig { state_durability: durability, ..GroupConfig::for_topics([TOPIC]) };
            broker.create_group(&name, group).unwrap();
            (0..MEMBERS_PER_GROUP)
                .map(|_| {
                    let config = MemberConfig { max_in_flight: POLL_MAX as u32, ..MemberConfig::default() };
                    broker.join(&name, config).unwrap()
                })
                .collect()
        })
        .collect();
    (broker, members)
}

/// Waits until every counter reaches `target`, or panics after `DRAIN_MAX`.
async fn drain(acked: &[Arc<AtomicU64>], target: impl Fn() -> u64) {
    let start = Instant::now();
    while acked.iter().any(|a| a.load(Ordering::Acquire) < target()) {
        assert!(start.elapsed() < DRAIN_MAX, "consumers did not catch up within {DRAIN_MAX:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn teardown(broker: Broker, members: Vec<Member>, dir: &PathBuf) {
    drop(members);
    broker.close().await.unwrap();
    drop(broker);
    let _ = std::fs::remove_dir_all(dir);
}

struct Throughput {
    /// Events per second published (first publish to last receipt).
    publish: f64,
    /// Events per second delivered and acked per group (first publish to the last ack of the
    /// slowest group).
    per_group: f64,
}

/// Publishes `n` events of `size` bytes from `PUBLISHERS` tasks in batches of `PUBLISH_BATCH`;
/// every group consumes and acks all of them.
async fn throughput_run(opts: &Opts, durability: Durability, size: usize, groups: usize, n: u64) -> Throughput {
    let dir = fresh_dir(opts, "throughput");
    let (broker, members) = setup(&dir, durability, groups);
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Vec<Arc<AtomicU64>> = (0..groups).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let finished: Vec<Arc<AtomicU64>> = (0..groups).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let mut consumers = Vec::new();
    for (g, group) in members.into_iter().enumerate() {
        for m in group {
            let (stop, acked, finished) = (stop.clone(), acked[g].clone(), finished[g].clone());
            consumers.push(tokio::spawn(async move {
                while !stop.load(Ordering::Acquire) {
                    let got = m.poll(POLL_MAX, Duration::from_millis(50)).await.unwrap();
                    for d in &got {
                        m.ack(d).unwrap();
                    }
                    let k = got.len() as u64;
                    let before = acked.fetch_add(k, Ordering::AcqRel);
                    if before < n && before + k >= n {
                        finished.store(now_ns(), Ordering::Release);
                    }
                }
                m
            }));
        }
    }
    let start = now_ns();
    let per_publisher = n / PUBLISHERS as u64;
    let publishers: Vec<_> = (0..PUBLISHERS as u64)
        .map(|i| {
            let broker = broker.clone();
            let mine = if i == 0 { n - per_publisher * (PUBLISHERS as u64 - 1) } else { per_publisher };
            tokio::spawn(async move {
                let mut left = mine;
                while left > 0 {
                    let k = left.min(PUBLISH_BATCH as u64);
                    let events = (0..k).map(|_| event(size, now_ns())).collect();
                    broker.publish_batch(TOPIC, events).await.unwrap();
                    left -= k;
                }
            })
        })
        .collect();
    for p in publishers {
        p.await.unwrap();
    }
    let published = now_ns();
    drain(&acked, || n).await;
    stop.store(true, Ordering::Release);
    let mut kept = Vec::new();
    for c in consumers {
        kept.push(c.await.unwrap());
    }
    let end = finished.iter().map(|f| f.load(Ordering::Acquire)).max().unwrap();
    teardown(broker, kept, &dir).await;
    Throughput {
        publish: n as f64 / ((published - start) as f64 / 1e9),
        per_group: n as f64 / ((end - start) as f64 / 1e9),
    }
}

/// The peer: `n` copies of `record` appended in batches of `PUBLISH_BATCH` to `PARTITIONS` logs
/// (one thread each), then read back `readers` times; events per second, end to end.
fn log_peer(opts: &Opts, durability: Durability, record: &[u8], n: u64, readers: usize) -> f64 {
    let dir = fresh_dir(opts, "peer");
    let durability = match durability {
        Durability::Always => herald_log::Durability::Always,
        Durability::Interval { ms } => herald_log::Durability::Interval { ms },
        Durability::Os => herald_log::Durability::Os,
    };
    let config = LogConfig { durability, ..LogConfig::default() };
    let per_log = n / u64::from(PARTITIONS);
    let batch: Arc<Vec<Vec<u8>>> = Arc::new(vec![record.to_vec(); PUBLISH_BATCH]);
    let start = Instant::now();
    let threads: Vec<_> = (0..PARTITIONS)
        .map(|p| {
            let (dir, config, batch) = (dir.join(p.to_string()), config.clone(), batch.clone());
            std::thread::spawn(move || {
                let log = Log::open(&dir, config).unwrap();
                let mut left = per_log;
                while left > 0 {
                    let k = left.min(PUBLISH_BATCH as u64) as usize;
                    log.append(&batch[..k]).unwrap();
                    left -= k as u64;
                }
                for _ in 0..readers {
                    let mut next = 0;
                    while next < per_log {
                        let records = log.read(next, 1 << 20, POLL_MAX).unwrap();
                        next = records.last().unwrap().offset + 1;
                    }
                }
                log.close().unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let rate = (per_log * u64::from(PARTITIONS)) as f64 / start.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    rate
}

struct Latency {
    /// Events per second actually published in the measured window.
    achieved: f64,
    /// Latencies (ns) of the events published in the measured window, all groups together.
    hist: Histogram<u64>,
}

/// Publishes `rate` events per second of `size` bytes, a batch every `TICK` (each batch its own
/// task, so a slow publish does not delay the next), for `warmup + measure`; records publish →
/// delivery latency of the events published during `measure`.
async fn latency_run(opts: &Opts, size: usize, groups: usize, rate: u64) -> Latency {
    let dir = fresh_dir(opts, "latency");
    let (broker, members) = setup(&dir, Durability::Interval { ms: 100 }, groups);
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Vec<Arc<AtomicU64>> = (0..groups).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let start = now_ns();
    let from = start + opts.warmup.as_nanos() as u64;
    let to = from + opts.measure.as_nanos() as u64;
    let mut consumers = Vec::new();
    for (g, group) in members.into_iter().enumerate() {
        for m in group {
            let (stop, acked) = (stop.clone(), acked[g].clone());
            consumers.push(tokio::spawn(async move {
                let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
                while !stop.load(Ordering::Acquire) {
                    let got = m.poll(POLL_MAX, Duration::from_millis(20)).await.unwrap();
                    let now = now_ns();
                    for d in &got {
                        let ts = stamp(d);
                        if (from..to).contains(&ts) {
                            hist.saturating_record(now.saturating_sub(ts).max(1));
                        }
                        m.ack(d).unwrap();
                    }
                    acked.fetch_add(got.len() as u64, Ordering::AcqRel);
                }
                (m, hist)
            }));
        }
    }
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (mut published, mut in_window) = (0u64, 0u64);
    let mut pending = Vec::new();
    loop {
        ticker.tick().await;
        let now = now_ns();
        if now >= to {
            break;
        }
        let due = ((now - start) as u128 * u128::from(rate) / 1_000_000_000) as u64;
        let k = due - published;
        if k == 0 {
            continue;
        }
        let events: Vec<Event> = (0..k).map(|_| event(size, now_ns())).collect();
        if now >= from {
            in_window += k;
        }
        published += k;
        let broker = broker.clone();
        pending.push(tokio::spawn(async move { broker.publish_batch(TOPIC, events).await.unwrap() }));
    }
    for p in pending {
        p.await.unwrap();
    }
    drain(&acked, || published).await;
    stop.store(true, Ordering::Release);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
    let mut kept = Vec::new();
    for c in consumers {
        let (m, h) = c.await.unwrap();
        hist.add(&h).unwrap();
        kept.push(m);
    }
    teardown(broker, kept, &dir).await;
    Latency { achieved: in_window as f64 / opts.measure.as_secs_f64(), hist }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only: Vec<&str> = args.iter().skip(1).filter(|a| !a.starts_with('-')).map(String::as_str).collect();
    let run = |section: &str| only.is_empty() || only.contains(&section);
    let dir = std::env::var_os("HERALD_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/herald-bench"))
        .join("broker");
    std::fs::create_dir_all(&dir).unwrap();
    let opts = Opts {
        runs: if quick { 3 } else { 5 },
        events_small: if quick { 200_000 } else { 1_000_000 },
        events_large: if quick { 100_000 } else { 400_000 },
        warmup: Duration::from_millis(if quick { 500 } else { 1000 }),
        measure: Duration::from_millis(if quick { 1500 } else { 4000 }),
        dir,
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    now_ns();
    println!(
        "# herald-broker benchmark ({} runs each, median; {PARTITIONS} partitions, {MEMBERS_PER_GROUP} members per group)\n",
        opts.runs
    );

    if run("throughput") {
        throughput_section(&opts, &rt);
    }
    if run("latency") {
        latency_section(&opts, &rt);
    }
}

fn throughput_section(opts: &Opts, rt: &tokio::runtime::Runtime) {
    println!(
        "## Throughput at the maximum rate: publish batches of {PUBLISH_BATCH} from {PUBLISHERS} publishers, polls of up to {POLL_MAX}, every event acked\n"
    );
    println!(
        "| durability | event (encoded) | groups | events | publish events/s | end-to-end events/s per group | deliveries/s, all groups | log peer events/s | broker / peer |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for durability in [Durability::Interval { ms: 100 }, Durability::Always] {
        for size in [100usize, 1024] {
            let n = if size <= 100 { opts.events_small } else { opts.events_large };
            let record = binary::encode(&event(size, 0));
            for groups in [1usize, 4] {
                let mut publish = Vec::new();
                let mut per_group = Vec::new();
                let mut peer = Vec::new();
                for _ in 0..opts.runs {
                    let t = rt.block_on(throughput_run(opts, durability, size, groups, n));
                    publish.push(t.publish);
                    per_group.push(t.per_group);
                    peer.push(log_peer(opts, durability, &record, n, groups));
                }
                let (publish, per_group, peer) = (median(publish), median(per_group), median(peer));
                println!(
                    "| {} | {size} B ({} B) | {groups} | {} | {} | {} | {} | {} | {:.2} |",
                    durability_name(durability),
                    record.len(),
                    with_commas(n as f64),
                    with_commas(publish),
                    with_commas(per_group),
                    with_commas(per_group * groups as f64),
                    with_commas(peer),
                    per_group / peer
                );
            }
        }
    }
}

/// The latency peer: one `always` append of a small record to a bare log, back to back for
/// `measure` — the fsync every poll waits for, since the group records each delivery durably
/// before handing it out. Returns (p50, p99) in µs.
fn fsync_peer(opts: &Opts) -> (f64, f64) {
    let dir = fresh_dir(opts, "fsync");
    let log =
        Log::open(&dir, LogConfig { durability: herald_log::Durability::Always, ..LogConfig::default() }).unwrap();
    let record = [7u8; 100];
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
    let start = Instant::now();
    while start.elapsed() < opts.measure {
        let t = Instant::now();
        log.append(&[record]).unwrap();
        hist.saturating_record(t.elapsed().as_nanos() as u64);
    }
    log.close().unwrap();
    drop(log);
    let _ = std::fs::remove_dir_all(&dir);
    (hist.value_at_quantile(0.5) as f64 / 1e3, hist.value_at_quantile(0.99) as f64 / 1e3)
}

fn latency_section(opts: &Opts, rt: &tokio::runtime::Runtime) {
    println!(
        "\n## Latency, publish → delivery, at fixed rates (`interval(100 ms)`, a batch every {} ms; warm-up {} ms, measured {} ms)\n",
        TICK.as_millis(),
        opts.warmup.as_millis(),
        opts.measure.as_millis()
    );
    println!("| rate | event | groups | achieved events/s | samples | p50 µs | p99 µs | p99.9 µs | max µs |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for rate in [10_000u64, 100_000] {
        for size in [100usize, 1024] {
            for groups in [1usize, 4] {
                let runs: Vec<Latency> =
                    (0..opts.runs).map(|_| rt.block_on(latency_run(opts, size, groups, rate))).collect();
                let stat = |f: &dyn Fn(&Latency) -> f64| median(runs.iter().map(f).collect());
                let q = |q: f64| stat(&|l: &Latency| l.hist.value_at_quantile(q) as f64 / 1e3);
                println!(
                    "| {} | {size} B | {groups} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} |",
                    with_commas(rate as f64),
                    with_commas(stat(&|l: &Latency| l.achieved)),
                    with_commas(stat(&|l: &Latency| l.hist.len() as f64)),
                    q(0.5),
                    q(0.99),
                    q(0.999),
                    stat(&|l: &Latency| l.hist.max() as f64 / 1e3),
                );
            }
        }
    }
    let (p50, p99) = fsync_peer(opts);
    println!(
        "\nPeer, same run: one `always` append of a 100 B record to a bare log (the fsync each poll waits for): p50 {p50:.0} µs, p99 {p99:.0} µs"
    );
}
