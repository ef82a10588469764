//! The soak: `herald serve` SIGKILLed again and again under mixed load, every event accounted for.
//!
//! Shared by the `soak` example (`scripts/soak`, ≥ 50 cycles) and the `soak` test (a few cycles
//! in CI), which includes this file with `#[path]`.
//!
//! - A real `herald serve` child on fixed ports and a data directory that outlive its restarts;
//!   a topic with several partitions.
//! - Load, all through the SDK over `herald://`: producers publish events with unique ids
//!   (`p<producer>-<n>`), keys and data derived from the id, and record every publish the server
//!   acknowledged (with its partition and offset); one consumer group runs through every crash
//!   with a handler that fails some events by a hash of their id — about 10 % fail once with a
//!   retryable error (nack, redelivered after the group's backoff), about 3 % fail permanently
//!   until replayed (dead-lettered, then accepted once their `dlqreplays` header says they came
//!   back through a replay); the group's DLQ is replayed every second or so.
//! - Each cycle: load for a random 1–3 s, SIGKILL, start again on the same port and directory,
//!   wait until publishing and consuming have resumed.
//! - After the last cycle: producers stop, the DLQ is replayed until the group has no lag and
//!   an empty DLQ, then a fresh group reads the topic from the earliest event.
//! - Every event id is classified: lost (acknowledged, never handled successfully by the group and
//!   not in its DLQ, or absent from what the fresh group read), duplicated (handled successfully
//!   more than once: allowed, at-least-once), unexpected (handled but never published by us, or
//!   with other data than we published).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald::{CancellationToken, Event, HandlerError, ProducerConfig, RetryPolicy, TopicConfig};
use herald_model::dead_letter;
use rand::{Rng, SeedableRng};

/// The topic under load.
pub const TOPIC: &str = "soak";
/// The group that lives through the crashes.
pub const GROUP: &str = "soak-live";
/// The group that reads everything once at the end.
pub const FRESH_GROUP: &str = "soak-fresh";
/// Events published per producer batch (published concurrently, acknowledged one by one).
const BATCH: u64 = 20;
/// Distinct keys per producer.
const KEYS: u64 = 64;
/// Out of 1000 (by a hash of the id): events that fail permanently until replayed…
const PERMANENT_PER_MILLE: u64 = 30;
/// …and events that fail once with a retryable error.
const RETRY_ONCE_PER_MILLE: u64 = 100;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `herald` binary.
    pub herald: PathBuf,
    /// SIGKILL cycles.
    pub cycles: usize,
    /// Seeds the load durations and the failure classes.
    pub seed: u64,
    /// Each cycle's load lasts a random time in this range (ms) before the kill.
    pub load_ms: (u64, u64),
    /// Producers, each with its own connection.
    pub producers: usize,
    /// Events per second each producer offers.
    pub rate: u64,
    /// Partitions of the topic.
    pub partitions: u32,
    /// Where the data directory and the server's log go (kept); a temporary directory if `None`,
    /// kept only when the run fails.
    pub work_dir: Option<PathBuf>,
    /// `HERALD_LOG` of the server.
    pub server_log_level: String,
    /// Longest wait for the group to drain (and for the fresh group to read everything).
    pub drain_timeout: Duration,
    /// A line per cycle on stderr.
    pub verbose: bool,
}

impl Options {
    /// Defaults for `herald` at `herald`.
    pub fn new(herald: PathBuf) -> Options {
        Options {
            herald,
            cycles: 50,
            seed: 1,
            load_ms: (1000, 3000),
            producers: 4,
            rate: 300,
            partitions: 8,
            work_dir: None,
            server_log_level: "warn".into(),
            drain_timeout: Duration::from_secs(120),
            verbose: false,
        }
    }
}

/// What a soak found.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// SIGKILL cycles run.
    pub cycles: usize,
    /// Events whose publish the server acknowledged.
    pub acknowledged: u64,
    /// Events handed to the producers (acknowledged or not).
    pub published: u64,
    /// Publishes that failed for good (retries ran out): not acknowledged.
    pub publish_failed: u64,
    /// Distinct events the group handled successfully.
    pub processed: u64,
    /// Acknowledged events never handled successfully by the group and not in its DLQ, or not read
    /// by the fresh group.
    pub lost: u64,
    /// …of those, not handled by the group.
    pub lost_by_group: u64,
    /// …of those, not read by the fresh group.
    pub lost_from_log: u64,
    /// Events handled successfully more than once.
    pub duplicated: u64,
    /// Successful handlings beyond the first, over all events.
    pub extra_handlings: u64,
    /// Events handled (by either group) that we never published, or with other data.
    pub unexpected: u64,
    /// Distinct events that came back through a replay (so were dead-lettered).
    pub dead_lettered: u64,
    /// Dead letters the server said it replayed.
    pub replayed: u64,
    /// Dead letters left in the DLQ at the end.
    pub in_dlq: u64,
    /// Events stored though their publish was not acknowledged (allowed).
    pub unacknowledged_stored: u64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Human-readable details of what went wrong (empty when nothing did).
    pub details: String,
}

impl Summary {
    /// Lost 0 and unexpected 0.
    pub fn ok(&self) -> bool {
        self.lost == 0 && self.unexpected == 0
    }

    /// One line of JSON.
    pub fn json(&self) -> String {
        format!(
            "{{\"cycles\":{},\"acknowledged\":{},\"processed\":{},\"lost\":{},\"duplicated\":{},\"unexpected\":{},\
             \"dead_lettered\":{},\"replayed\":{},\"seconds\":{:.1},\"published\":{},\"publish_failed\":{},\
             \"lost_by_group\":{},\"lost_from_log\":{},\"extra_handlings\":{},\"in_dlq\":{},\"unacknowledged_stored\":{}}}",
            self.cycles,
            self.acknowledged,
            self.processed,
            self.lost,
            self.duplicated,
            self.unexpected,
            self.dead_lettered,
            self.replayed,
            self.seconds,
            self.published,
            self.publish_failed,
            self.lost_by_group,
            self.lost_from_log,
            self.extra_handlings,
            self.in_dlq,
            self.unacknowledged_stored,
        )
    }
}

/// An event id `p<producer>-<n>` as one number.
type Id = u64;

fn id_of(producer: u64, n: u64) -> Id {
    (producer << 40) | n
}

fn id_text(id: Id) -> String {
    format!("p{}-{}", id >> 40, id & ((1 << 40) - 1))
}

fn parse_id(s: &str) -> Option<(u64, u64)> {
    let (p, n) = s.strip_prefix('p')?.split_once('-')?;
    let (p, n) = (p.parse().ok()?, n.parse().ok()?);
    (n < 1 << 40).then_some((p, n))
}

/// splitmix64: the one hash of ids and seeds.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// What the handler does with an event, by a hash of its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Ok,
    RetryOnce,
    /// Fails permanently unless it is a replay.
    Permanent,
}

fn class(seed: u64, id: Id) -> Class {
    match mix(id ^ mix(seed)) % 1000 {
        h if h < PERMANENT_PER_MILLE => Class::Permanent,
        h if h < PERMANENT_PER_MILLE + RETRY_ONCE_PER_MILLE => Class::RetryOnce,
        _ => Class::Ok,
    }
}

/// The event `p<producer>-<n>`: everything but the id derived from it, so a handler can check
/// what it received without a copy of what was sent.
fn event(producer: u64, n: u64) -> Event {
    let id = id_of(producer, n);
    let mut data = format!("{}|", id_text(id));
    // 0–255 bytes of padding, so events differ in size.
    for i in 0..mix(id) % 256 {
        data.push(char::from(b'a' + ((mix(id ^ i) % 26) as u8)));
    }
    Event::builder("soak.event")
        .source(format!("/soak/producer-{producer}"))
        .id(id_text(id))
        .key(format!("p{producer}-k{}", mix(id) % KEYS))
        .data(data.into_bytes(), "text/plain")
        .build()
        .expect("a valid event")
}

/// Every event handled, by id, and what was odd.
#[derive(Default)]
struct Ledger {
    /// Successful handlings.
    ok: HashMap<Id, u32>,
    /// Their sum.
    ok_total: u64,
    /// Failed handlings.
    failed: HashMap<Id, u32>,
    /// Delivered with a `dlqreplays` header (came back through a replay).
    replays: HashSet<Id>,
    /// What was handled and should not have been: one line each.
    unexpected: Vec<String>,
}

/// What the producers know: ids handed out per producer, and the acknowledged ones.
struct Published {
    /// Per producer: the next `n` (every `n` below was handed to the producer).
    next: Vec<AtomicU64>,
    acked: Mutex<HashMap<Id, Ack>>,
    failed: AtomicU64,
}

/// Where and when an acknowledged event was stored.
#[derive(Debug, Clone, Copy)]
struct Ack {
    partition: u32,
    offset: u64,
    duplicate: bool,
    cycle: usize,
    at_ms: u64,
}

/// Checks a handled event against what producer `p` published as `n`: `Err` says what differs.
fn check(published: &Published, e: &Event) -> Result<Id, String> {
    let Some((p, n)) = parse_id(e.id()) else { return Err(format!("unknown id {:?}", e.id())) };
    match published.next.get(p as usize) {
        Some(next) if n < next.load(Ordering::Acquire) => {}
        _ => return Err(format!("{} was never published", e.id())),
    }
    let want = event(p, n);
    if e.source() != want.source() || e.ty() != want.ty() || e.key() != want.key() || e.data() != want.data() {
        return Err(format!(
            "{} differs from what was published: source {:?}, type {:?}, key {:?}, {} bytes of data",
            e.id(),
            e.source(),
            e.ty(),
            e.key(),
            e.data().len()
        ));
    }
    Ok(id_of(p, n))
}

/// A `herald serve` child process; killed when dropped.
struct ServerProcess {
    child: Child,
}

impl ServerProcess {
    /// Starts the binary on the given ports and waits for its "herald listening" line.
    fn start(opts: &Options, data_dir: &Path, http: u16, grpc: u16, log: &Path) -> Result<ServerProcess, String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log_file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .map_err(|e| format!("{}: {e}", log.display()))?;
            let mut child = Command::new(&opts.herald)
                .args(["serve", "--data-dir"])
                .arg(data_dir)
                .args(["--http", &format!("127.0.0.1:{http}"), "--grpc", &format!("127.0.0.1:{grpc}")])
                .env("HERALD_LOG", &opts.server_log_level)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::from(log_file))
                .spawn()
                .map_err(|e| format!("spawning {}: {e}", opts.herald.display()))?;
            let stdout = child.stdout.take().expect("piped");
            let (tx, rx) = std::sync::mpsc::channel();
            // Reads the first line, then drains stdout until the process ends.
            std::thread::spawn(move || {
                let mut lines = BufReader::new(stdout).lines();
                let _ = tx.send(lines.next());
                for _ in lines {}
            });
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(Some(Ok(line))) if line.starts_with("herald listening:") => return Ok(ServerProcess { child }),
                other => {
                    // Most likely a port is not free again yet: try again shortly.
                    let _ = child.kill();
                    let _ = child.wait();
                    if Instant::now() >= deadline {
                        return Err(format!(
                            "herald serve did not start on ports {http}/{grpc}: {other:?}; its log is {}",
                            log.display()
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }

    /// SIGKILL: no shutdown, no flush.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two distinct free ports (both held while asked for, so they differ).
fn free_ports() -> (u16, u16) {
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let (a, b) = (bind(), bind());
    let port = |l: &std::net::TcpListener| l.local_addr().expect("bound").port();
    (port(&a), port(&b))
}

/// Waits until `done()` or the deadline; `Err(what)` at the deadline.
async fn until(what: &str, wait: Duration, mut done: impl AsyncFnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + wait;
    loop {
        if done().await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out after {wait:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the soak. `Err` when the harness itself could not run (the server would not start, no
/// progress after a restart, the group did not drain in time); what it finds is in the summary.
pub async fn run(opts: Options) -> Result<Summary, String> {
    let started = Instant::now();
    let temp = match &opts.work_dir {
        Some(_) => None,
        None => Some(tempfile::Builder::new().prefix("herald-soak-").tempdir().map_err(|e| e.to_string())?),
    };
    let work: PathBuf = opts.work_dir.clone().unwrap_or_else(|| temp.as_ref().expect("made above").path().into());
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let result = soak(&opts, &work, started).await;
    let failed = !matches!(&result, Ok(s) if s.ok());
    if failed && let Some(temp) = temp {
        // Kept for the investigation: the data directory and the server's log.
        let kept = temp.keep();
        eprintln!("soak: kept {} (data/, server.log)", kept.display());
    }
    result
}

async fn soak(opts: &Options, work: &Path, started: Instant) -> Result<Summary, String> {
    let data = work.join("data");
    let log = work.join("server.log");
    let (http, grpc) = free_ports();
    let url = format!("herald://127.0.0.1:{grpc}");
    let say = |line: String| {
        if opts.verbose {
            eprintln!("soak {:>6.1}s: {line}", started.elapsed().as_secs_f64());
        }
    };
    let err = |what: &str| {
        let what = what.to_owned();
        move |e: herald::Error| format!("{what}: {e}")
    };
    let mut server = Some(ServerProcess::start(opts, &data, http, grpc, &log)?);
    say(format!("herald serve on grpc 127.0.0.1:{grpc}, http 127.0.0.1:{http}, data {}", data.display()));

    let admin = herald::connect(&url).await.map_err(err("connect"))?;
    admin.ensure_topic(TOPIC, TopicConfig::with_partitions(opts.partitions)).await.map_err(err("create the topic"))?;

    let published = Arc::new(Published {
        next: (0..opts.producers).map(|_| AtomicU64::new(0)).collect(),
        acked: Mutex::default(),
        failed: AtomicU64::new(0),
    });
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let cycle_now = Arc::new(AtomicU64::new(0));

    // The group that runs through every crash.
    let consumer_client = herald::connect(&url).await.map_err(err("connect"))?;
    let stop_live = CancellationToken::new();
    let live = tokio::spawn(
        consumer_client
            .consumer(GROUP)
            .subscribe([TOPIC])
            .concurrency(16)
            .max_in_flight(64)
            .handler_timeout(Duration::from_secs(5))
            .ack_timeout(Duration::from_secs(10))
            .retry(RetryPolicy { max_attempts: 8, backoff_base_ms: 20, backoff_max_ms: 500, ..RetryPolicy::default() })
            .handler(live_handler(opts.seed, published.clone(), ledger.clone()))
            .run(stop_live.clone()),
    );

    // Producers, each with its own connection, at `rate` events/s each.
    let stop_producers = CancellationToken::new();
    let mut producers = Vec::new();
    for p in 0..opts.producers as u64 {
        let client = herald::connect(&url).await.map_err(err("connect"))?;
        let producer =
            client.producer_with(ProducerConfig { retry_for: Duration::from_secs(30), ..ProducerConfig::default() });
        let (published, stop, cycle_now) = (published.clone(), stop_producers.clone(), cycle_now.clone());
        let pause = Duration::from_secs_f64(BATCH as f64 / opts.rate.max(1) as f64);
        producers.push(tokio::spawn(async move {
            let mut next_batch = tokio::time::Instant::now();
            while !stop.is_cancelled() {
                let first = published.next[p as usize].fetch_add(BATCH, Ordering::AcqRel);
                let results =
                    futures::future::join_all((first..first + BATCH).map(|n| producer.publish(TOPIC, event(p, n))))
                        .await;
                let cycle = cycle_now.load(Ordering::Relaxed) as usize;
                let at_ms = started.elapsed().as_millis() as u64;
                for (n, r) in (first..first + BATCH).zip(results) {
                    match r {
                        Ok(r) => {
                            let ack =
                                Ack { partition: r.partition, offset: r.offset, duplicate: r.duplicate, cycle, at_ms };
                            published.acked.lock().expect("acked lock").insert(id_of(p, n), ack);
                        }
                        Err(e) => {
                            if !e.is_retryable() {
                                eprintln!("soak: publishing {} failed for good: {e}", id_text(id_of(p, n)));
                            }
                            published.failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                // Paced, without catching up after a stall (the server was down).
                next_batch = (next_batch + pause).max(tokio::time::Instant::now());
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = tokio::time::sleep_until(next_batch) => {}
                }
            }
        }));
    }

    // The group's DLQ replayed now and then, through the crashes (failures while the server is
    // down are expected: the next round replays what is left).
    let replayed = Arc::new(AtomicU64::new(0));
    let stop_replayer = CancellationToken::new();
    let replayer = {
        let (admin, replayed, stop) = (admin.clone(), replayed.clone(), stop_replayer.clone());
        let seed = opts.seed;
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(mix(seed ^ 0x5eed));
            loop {
                let pause = Duration::from_millis(rng.random_range(500..=1500));
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(pause) => {}
                }
                if let Ok(n) = admin.dlq_replay(GROUP).await {
                    replayed.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        })
    };

    let acked_count = || published.acked.lock().expect("acked lock").len();
    let ok_count = || ledger.lock().expect("ledger lock").ok_total;
    let mut rng = rand::rngs::StdRng::seed_from_u64(opts.seed);
    let mut cycles = 0;
    for cycle in 1..=opts.cycles {
        cycle_now.store(cycle as u64, Ordering::Relaxed);
        // Load resumed since the (re)start: both publishing and consuming made progress.
        let (acked0, ok0) = (acked_count(), ok_count());
        until(
            &format!("publishing and consuming to resume before kill {cycle}"),
            Duration::from_secs(60),
            async || acked_count() > acked0 && ok_count() > ok0,
        )
        .await?;
        let load = Duration::from_millis(rng.random_range(opts.load_ms.0..=opts.load_ms.1));
        tokio::time::sleep(load).await;
        let (acked_at_kill, ok_at_kill) = (acked_count(), ok_count());
        let killed = Instant::now();
        server.take().expect("running").kill();
        server = Some(ServerProcess::start(opts, &data, http, grpc, &log)?);
        cycles = cycle;
        say(format!(
            "cycle {cycle}/{}: load {load:.1?}, SIGKILL at {acked_at_kill} acknowledged / {ok_at_kill} handled ok, \
             restarted in {:.1?}",
            opts.cycles,
            killed.elapsed()
        ));
    }
    cycle_now.store(cycles as u64 + 1, Ordering::Relaxed);
    {
        let acked0 = acked_count();
        until("publishing to resume after the last restart", Duration::from_secs(60), async || acked_count() > acked0)
            .await?;
    }

    // The end: no more publishing, replays until the group has nothing left.
    stop_producers.cancel();
    for p in producers {
        p.await.map_err(|e| format!("a producer task failed: {e}"))?;
    }
    stop_replayer.cancel();
    let _ = replayer.await;
    say(format!("producers stopped at {} acknowledged; draining", acked_count()));
    let mut drained_twice = 0;
    until("the group to drain (lag 0, DLQ empty)", opts.drain_timeout, async || {
        let lag = admin.lag(GROUP).await;
        let dlq = admin.dlq_list(GROUP, 1).await;
        match (lag, dlq) {
            (Ok(0), Ok(letters)) if letters.is_empty() => drained_twice += 1,
            (Ok(_), Ok(letters)) => {
                drained_twice = 0;
                if !letters.is_empty()
                    && let Ok(n) = admin.dlq_replay(GROUP).await
                {
                    replayed.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
            _ => drained_twice = 0,
        }
        drained_twice >= 3
    })
    .await?;
    stop_live.cancel();
    let live_report = live.await.map_err(|e| format!("the consumer task failed: {e}"))?;
    if let Err(e) = live_report {
        return Err(format!("the consumer of {GROUP} failed: {e}"));
    }
    let in_dlq: Vec<Event> = admin.dlq_list(GROUP, 100_000).await.map_err(err("list the DLQ"))?;

    // A fresh group reads everything from the earliest event.
    let fresh: Arc<Mutex<HashMap<Id, u32>>> = Arc::default();
    let fresh_unexpected: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop_fresh = CancellationToken::new();
    let fresh_run = {
        let (fresh, unexpected, published) = (fresh.clone(), fresh_unexpected.clone(), published.clone());
        tokio::spawn(
            consumer_client
                .consumer(FRESH_GROUP)
                .subscribe([TOPIC])
                .concurrency(16)
                .handler(move |e: Event| {
                    match check(&published, &e) {
                        Ok(id) => *fresh.lock().expect("fresh lock").entry(id).or_default() += 1,
                        Err(why) => unexpected.lock().expect("unexpected lock").push(format!("{FRESH_GROUP}: {why}")),
                    }
                    async { Ok::<(), HandlerError>(()) }
                })
                .run(stop_fresh.clone()),
        )
    };
    let mut read_twice = 0;
    until("the fresh group to read everything (lag 0)", opts.drain_timeout, async || {
        match admin.lag(FRESH_GROUP).await {
            Ok(0) => read_twice += 1,
            _ => read_twice = 0,
        }
        read_twice >= 3
    })
    .await?;
    stop_fresh.cancel();
    match fresh_run.await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(format!("the consumer of {FRESH_GROUP} failed: {e}")),
        Err(e) => return Err(format!("the consumer task of {FRESH_GROUP} failed: {e}")),
    }
    drop(server);

    // Every event, classified.
    let acked = published.acked.lock().expect("acked lock").clone();
    let ledger = ledger.lock().expect("ledger lock");
    let fresh = fresh.lock().expect("fresh lock");
    let in_dlq_ids: HashSet<Id> = in_dlq.iter().filter_map(|e| parse_id(e.id())).map(|(p, n)| id_of(p, n)).collect();
    let lost_by_group: BTreeSet<Id> =
        acked.keys().filter(|id| !ledger.ok.contains_key(id) && !in_dlq_ids.contains(id)).copied().collect();
    let lost_from_log: BTreeSet<Id> = acked.keys().filter(|id| !fresh.contains_key(id)).copied().collect();
    let lost: BTreeSet<Id> = lost_by_group.union(&lost_from_log).copied().collect();
    let mut unexpected: Vec<String> = ledger.unexpected.clone();
    unexpected.extend(fresh_unexpected.lock().expect("unexpected lock").iter().cloned());

    let mut details = String::new();
    for id in lost.iter().take(20) {
        let a = &acked[id];
        let _ = writeln!(
            details,
            "lost {}: acknowledged at {}/{} (duplicate receipt: {}) in cycle {} at {:.3} s; handled ok by {GROUP}: {}, \
             failed there {} times, came back through a replay: {}, read by {FRESH_GROUP}: {}, class {:?}",
            id_text(*id),
            a.partition,
            a.offset,
            a.duplicate,
            a.cycle,
            a.at_ms as f64 / 1e3,
            ledger.ok.get(id).copied().unwrap_or(0),
            ledger.failed.get(id).copied().unwrap_or(0),
            ledger.replays.contains(id),
            fresh.get(id).copied().unwrap_or(0),
            class(opts.seed, *id),
        );
    }
    if lost.len() > 20 {
        let _ = writeln!(details, "… and {} more lost", lost.len() - 20);
    }
    for u in unexpected.iter().take(20) {
        let _ = writeln!(details, "unexpected: {u}");
    }
    if unexpected.len() > 20 {
        let _ = writeln!(details, "… and {} more unexpected", unexpected.len() - 20);
    }

    let published_total: u64 = published.next.iter().map(|n| n.load(Ordering::Acquire)).sum();
    let summary = Summary {
        cycles,
        acknowledged: acked.len() as u64,
        published: published_total,
        publish_failed: published.failed.load(Ordering::Relaxed),
        processed: ledger.ok.len() as u64,
        lost: lost.len() as u64,
        lost_by_group: lost_by_group.len() as u64,
        lost_from_log: lost_from_log.len() as u64,
        duplicated: ledger.ok.values().filter(|&&n| n > 1).count() as u64,
        extra_handlings: ledger.ok.values().map(|&n| u64::from(n - 1)).sum(),
        unexpected: unexpected.len() as u64,
        dead_lettered: ledger.replays.len() as u64,
        replayed: replayed.load(Ordering::Relaxed),
        in_dlq: in_dlq.len() as u64,
        unacknowledged_stored: fresh.keys().filter(|id| !acked.contains_key(id)).count() as u64,
        seconds: started.elapsed().as_secs_f64(),
        details,
    };
    Ok(summary)
}

/// The live group's handler: checks the event, fails it by its class, records the outcome. About
/// one event in ten takes a few milliseconds, so that some are always being handled at a kill.
fn live_handler(
    seed: u64,
    published: Arc<Published>,
    ledger: Arc<Mutex<Ledger>>,
) -> impl Fn(Event) -> std::pin::Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>> + Send + Sync + 'static
{
    move |e: Event| {
        let (published, ledger) = (published.clone(), ledger.clone());
        Box::pin(async move {
            let slow = parse_id(e.id()).map_or(1, |(p, n)| mix(id_of(p, n) ^ !seed));
            if slow.is_multiple_of(10) {
                tokio::time::sleep(Duration::from_millis(1 + slow / 10 % 5)).await;
            }
            let mut l = ledger.lock().expect("ledger lock");
            let id = match check(&published, &e) {
                Ok(id) => id,
                Err(why) => {
                    l.unexpected.push(format!("{GROUP}: {why}"));
                    // Acked: it must not hold its key.
                    return Ok(());
                }
            };
            let replay = dead_letter::replays(&e) > 0;
            if replay {
                l.replays.insert(id);
            }
            let failures = l.failed.get(&id).copied().unwrap_or(0);
            let fail = match class(seed, id) {
                Class::Permanent if !replay => Some(HandlerError::permanent("soak: fails until replayed")),
                Class::RetryOnce if failures == 0 => Some(HandlerError::retryable("soak: fails once")),
                _ => None,
            };
            match fail {
                Some(f) => {
                    *l.failed.entry(id).or_default() += 1;
                    Err(f)
                }
                None => {
                    *l.ok.entry(id).or_default() += 1;
                    l.ok_total += 1;
                    Ok(())
                }
            }
        })
    }
}
