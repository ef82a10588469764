//! `herald demo`: zero setup. A server on loopback ports, an in-process client over the same
//! broker, a topic `orders`, a steady stream of orders, two consumer groups (`billing` fails
//! some events transiently and a few for good; `shipping` never fails), a live table, and at the
//! end a summary, the dead letters and the command that replays them.

use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use herald::{CancellationToken, Client, Event, HandlerError, RetryPolicy, RunReport, TopicConfig};
use herald_model::dead_letter::headers as dlq_headers;

use crate::Global;

/// Longest demo run, in seconds.
pub const DURATION_SECS_MAX: u64 = 3_600;
/// Highest publish rate, in events per second.
pub const RATE_MAX: u64 = 100_000;
/// Publish batches in flight at once; the publisher waits beyond.
const PUBLISH_BATCHES_IN_FLIGHT_MAX: usize = 64;
/// How long the groups may take to catch up after publishing stops.
const DRAIN_MAX: Duration = Duration::from_secs(5);
/// A file marking a directory as the demo's, so that it may be wiped.
const MARKER: &str = ".herald-demo";
/// Partitions of `orders`.
const PARTITIONS: u32 = 8;
/// Distinct customers (keys): prime, so that every customer gets failing orders now and then.
const CUSTOMERS: u64 = 37;
/// Dead letters printed at the end.
const DLQ_SHOWN_MAX: usize = 20;
/// Dead letters counted at the end.
const DLQ_COUNTED_MAX: usize = 10_000;
/// Largest handler latency recorded, in microseconds (longer ones are clamped).
const LATENCY_US_MAX: u64 = 60_000_000;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// How long to publish, in seconds.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=DURATION_SECS_MAX))]
    pub duration: u64,
    /// Orders published per second.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=RATE_MAX))]
    pub rate: u64,
    /// Data directory; wiped at start (only if empty or made by an earlier demo).
    #[arg(long, default_value = "./herald-demo-data")]
    pub data_dir: PathBuf,
}

/// Figures of one group, updated by its handler.
struct GroupStats {
    processed: AtomicU64,
    retries: AtomicU64,
    dead: AtomicU64,
    /// Handler latency since the last refresh, and over the whole run (µs).
    window: Mutex<Histogram<u64>>,
    total: Mutex<Histogram<u64>>,
}

impl GroupStats {
    fn new() -> Result<GroupStats> {
        let h = || Histogram::<u64>::new_with_bounds(1, LATENCY_US_MAX, 3).context("creating a latency histogram");
        Ok(GroupStats {
            processed: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            dead: AtomicU64::new(0),
            window: Mutex::new(h()?),
            total: Mutex::new(h()?),
        })
    }

    fn record(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).clamp(1, LATENCY_US_MAX);
        self.window.lock().expect("histogram lock poisoned").saturating_record(us);
        self.total.lock().expect("histogram lock poisoned").saturating_record(us);
    }

    /// p99 of the window in ms, and resets the window.
    fn take_p99_ms(&self) -> Option<f64> {
        let mut h = self.window.lock().expect("histogram lock poisoned");
        let p99 = (!h.is_empty()).then(|| h.value_at_quantile(0.99) as f64 / 1e3);
        h.reset();
        p99
    }
}

struct Stats {
    published: AtomicU64,
    billing: GroupStats,
    shipping: GroupStats,
}

/// Empties `dir` if it is safe to: it does not exist, is empty, or carries the demo's marker.
fn prepare_data_dir(dir: &Path) -> Result<PathBuf> {
    if dir.exists() {
        let empty =
            std::fs::read_dir(dir).with_context(|| format!("reading --data-dir {}", dir.display()))?.next().is_none();
        if !empty && !dir.join(MARKER).exists() {
            bail!(
                "--data-dir {} is not empty and was not made by `herald demo`; it is wiped at start, \
                 so pick an empty or new directory",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir).with_context(|| format!("wiping --data-dir {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating --data-dir {}", dir.display()))?;
    std::fs::write(dir.join(MARKER), "made by `herald demo`; the demo wipes this directory at start\n")
        .with_context(|| format!("writing to --data-dir {}", dir.display()))?;
    dir.canonicalize().with_context(|| format!("resolving --data-dir {}", dir.display()))
}

/// An order: deterministic, so that every run shows retries and dead letters.
fn order(n: u64) -> (String, serde_json::Value) {
    let customer = format!("customer-{}", n % CUSTOMERS);
    // Every OVER_LIMIT_EVERY-th order (from the 8th) is over the card limit; the others are well under.
    let total_cents =
        if n % OVER_LIMIT_EVERY == 7 { CARD_LIMIT_CENTS + 1 + (n * 37) % 900 } else { 500 + (n * 37) % 4_800 };
    let value = serde_json::json!({
        "order": n,
        "customer": customer,
        "items": 1 + n % 4,
        "total_cents": total_cents,
    });
    (customer, value)
}

/// The card limit: orders over it are dead-lettered by `billing`.
const CARD_LIMIT_CENTS: u64 = 5_400;
/// One order in this many is over the card limit (2%).
const OVER_LIMIT_EVERY: u64 = 50;
/// Every this many orders, the first billing attempt fails transiently.
const TRANSIENT_EVERY: u64 = 13;

async fn simulated_work(max_us: u64) {
    let us = rand::random_range(200..=max_us);
    tokio::time::sleep(Duration::from_micros(us)).await;
}

fn spawn_billing(
    client: &Client,
    stats: Arc<Stats>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<herald::Result<RunReport>> {
    // Orders whose first attempt failed and whose retry has not succeeded yet: bounded by the
    // events in flight, since each is removed when its retry succeeds.
    let failed_once: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let consumer = client
        .consumer("billing")
        .subscribe(["orders"])
        .concurrency(32)
        .retry(RetryPolicy {
            max_attempts: 4,
            backoff_base_ms: 100,
            backoff_factor: 2.0,
            backoff_max_ms: 1_000,
            jitter: 0.2,
        })
        .shutdown_grace(Duration::from_secs(5))
        .handler(move |event: Event| {
            let (stats, failed_once) = (stats.clone(), failed_once.clone());
            async move {
                let started = Instant::now();
                let result = bill(&event, &failed_once).await;
                let s = &stats.billing;
                s.record(started.elapsed());
                match &result {
                    Ok(()) => s.processed.fetch_add(1, Ordering::Relaxed),
                    Err(e) if e.is_permanent() => s.dead.fetch_add(1, Ordering::Relaxed),
                    Err(_) => s.retries.fetch_add(1, Ordering::Relaxed),
                };
                result
            }
        });
    tokio::spawn(consumer.run(stop))
}

async fn bill(event: &Event, failed_once: &Mutex<HashSet<u64>>) -> Result<(), HandlerError> {
    let order: serde_json::Value =
        serde_json::from_slice(event.data()).map_err(|e| HandlerError::permanent(format!("bad JSON: {e}")))?;
    let n = order["order"].as_u64().ok_or_else(|| HandlerError::permanent("no order number"))?;
    simulated_work(4_000).await;
    if n.is_multiple_of(TRANSIENT_EVERY) {
        let mut failed = failed_once.lock().expect("lock poisoned");
        if failed.insert(n) {
            return Err(HandlerError::retryable("payment provider timed out"));
        }
        failed.remove(&n);
    }
    let total = order["total_cents"].as_u64().unwrap_or(0);
    if total > CARD_LIMIT_CENTS {
        return Err(HandlerError::permanent(format!("card limit exceeded: {total} cents > {CARD_LIMIT_CENTS}")));
    }
    Ok(())
}

fn spawn_shipping(
    client: &Client,
    stats: Arc<Stats>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<herald::Result<RunReport>> {
    let consumer = client
        .consumer("shipping")
        .subscribe(["orders"])
        .concurrency(16)
        .shutdown_grace(Duration::from_secs(5))
        .handler(move |_event: Event| {
            let stats = stats.clone();
            async move {
                let started = Instant::now();
                simulated_work(2_000).await;
                stats.shipping.record(started.elapsed());
                stats.shipping.processed.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        });
    tokio::spawn(consumer.run(stop))
}

/// Publishes `rate` orders per second until `stop`; returns how many were sent to the producer.
async fn publish_orders(client: Client, stats: Arc<Stats>, rate: u64, stop: CancellationToken) -> Result<u64> {
    let producer = client.producer();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(PUBLISH_BATCHES_IN_FLIGHT_MAX));
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent = 0u64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let due = (rate as f64 * started.elapsed().as_secs_f64()) as u64;
        if due <= sent {
            continue;
        }
        let mut batch = Vec::with_capacity((due - sent) as usize);
        for n in sent..due {
            let (customer, value) = order(n);
            batch.push(Event::builder("order.created").source("/demo/shop").key(customer).json(&value).build()?);
        }
        sent = due;
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            p = in_flight.clone().acquire_owned() => p.expect("never closed"),
        };
        let (producer, stats) = (producer.clone(), stats.clone());
        tasks.spawn(async move {
            let count = batch.len() as u64;
            let r = producer.publish_all("orders", batch).await;
            drop(permit);
            if r.is_ok() {
                stats.published.fetch_add(count, Ordering::Relaxed);
            }
            r
        });
        while let Some(done) = tasks.try_join_next() {
            done.context("publish task")?.context("publishing orders")?;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.context("publish task")?.context("publishing orders")?;
    }
    Ok(sent)
}

/// The live table: redrawn in place on a terminal, one line per refresh otherwise.
struct Live {
    tty: bool,
    drawn: usize,
    started: Instant,
    last_published: u64,
    last_at: Instant,
}

impl Live {
    fn new() -> Live {
        let now = Instant::now();
        Live { tty: std::io::stdout().is_terminal(), drawn: 0, started: now, last_published: 0, last_at: now }
    }

    async fn draw(&mut self, client: &Client, stats: &Stats, phase: &str) {
        let published = stats.published.load(Ordering::Relaxed);
        // The rate over the last refresh, when it was long enough to mean something.
        let secs = self.last_at.elapsed().as_secs_f64();
        let per_sec = if secs >= 0.5 {
            format!("{:.0}/s", (published - self.last_published) as f64 / secs)
        } else {
            "-/s".to_owned()
        };
        self.last_published = published;
        self.last_at = Instant::now();
        let lag_b = client.lag("billing").await.ok();
        let lag_s = client.lag("shipping").await.ok();
        let groups = [("billing", &stats.billing, lag_b), ("shipping", &stats.shipping, lag_s)];
        let fmt_lag = |l: Option<u64>| l.map_or("-".into(), |l| l.to_string());
        let fmt_p99 = |p: Option<f64>| p.map_or("-".into(), |p| format!("{p:.1} ms"));
        let elapsed = self.started.elapsed().as_secs();
        let mut out = std::io::stdout().lock();
        if self.tty {
            let mut lines = vec![
                format!("{elapsed:>4}s  {phase:<10} published {published:>8}  ({per_sec})"),
                format!(
                    "      {:<9} {:>10} {:>8} {:>6} {:>7} {:>10}",
                    "group", "processed", "retries", "dlq", "lag", "p99"
                ),
            ];
            for (name, g, lag) in groups {
                lines.push(format!(
                    "      {:<9} {:>10} {:>8} {:>6} {:>7} {:>10}",
                    name,
                    g.processed.load(Ordering::Relaxed),
                    g.retries.load(Ordering::Relaxed),
                    g.dead.load(Ordering::Relaxed),
                    fmt_lag(lag),
                    fmt_p99(g.take_p99_ms())
                ));
            }
            if self.drawn > 0 {
                let _ = write!(out, "\x1b[{}A", self.drawn);
            }
            for l in &lines {
                let _ = writeln!(out, "\x1b[2K{l}");
            }
            self.drawn = lines.len();
        } else {
            let mut line = format!("[{elapsed:>4}s] {phase} published {published} ({per_sec})");
            for (name, g, lag) in groups {
                line.push_str(&format!(
                    " | {name} processed {} retries {} dlq {} lag {} p99 {}",
                    g.processed.load(Ordering::Relaxed),
                    g.retries.load(Ordering::Relaxed),
                    g.dead.load(Ordering::Relaxed),
                    fmt_lag(lag),
                    fmt_p99(g.take_p99_ms()).replace(' ', "")
                ));
            }
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
    }
}

/// A shell word for `s`: as is when it is plain, single-quoted otherwise.
fn shell_word(s: &str) -> String {
    if s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-:+@=,".contains(&b)) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn quantile_ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() { 0.0 } else { h.value_at_quantile(q) as f64 / 1e3 }
}

pub async fn run(_g: &Global, a: DemoArgs) -> Result<()> {
    let data_dir = prepare_data_dir(&a.data_dir)?;
    let config = herald_server::ServerConfig {
        data_dir: data_dir.clone(),
        http: ([127, 0, 0, 1], 0).into(),
        grpc: ([127, 0, 0, 1], 0).into(),
        ..herald_server::ServerConfig::default()
    };
    let server = herald_server::Server::start(config).await.context("starting the demo server")?;
    let result = demo(&server, &data_dir, &a).await;
    let stopped = server.shutdown().await.context("stopping the demo server");
    result?;
    stopped?;
    Ok(())
}

async fn demo(server: &herald_server::Server, data_dir: &Path, a: &DemoArgs) -> Result<()> {
    let (http, grpc) = (server.http_addr(), server.grpc_addr());
    println!("Herald demo: topic `orders` ({PARTITIONS} partitions), groups `billing` and `shipping`");
    println!("  server   http://{http}  (metrics: http://{http}/metrics)");
    println!("           herald://{grpc}  (try: herald --url herald://{grpc} group describe billing)");
    println!("  data     {}", data_dir.display());
    println!(
        "  group `billing` fails every {TRANSIENT_EVERY}th order once (retried) and dead-letters orders over the card limit"
    );
    println!("  group `shipping` processes everything");
    println!("Publishing {} orders/s for {} s (Ctrl-C stops early)…\n", a.rate, a.duration);

    let client = Client::from_backend(Arc::new(herald::Embedded::from_broker(server.broker().clone())));
    client.ensure_topic("orders", TopicConfig::with_partitions(PARTITIONS)).await?;
    let stats =
        Arc::new(Stats { published: AtomicU64::new(0), billing: GroupStats::new()?, shipping: GroupStats::new()? });
    let stop_consumers = CancellationToken::new();
    let billing = spawn_billing(&client, stats.clone(), stop_consumers.clone());
    let shipping = spawn_shipping(&client, stats.clone(), stop_consumers.clone());
    let stop_publishing = CancellationToken::new();
    let publisher = tokio::spawn(publish_orders(client.clone(), stats.clone(), a.rate, stop_publishing.clone()));

    // Publish for --duration, drawing the table every second.
    let started = Instant::now();
    let mut live = Live::new();
    let mut refresh = tokio::time::interval(Duration::from_secs(1));
    refresh.tick().await;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let end = tokio::time::sleep(Duration::from_secs(a.duration));
    tokio::pin!(end);
    let mut interrupted = false;
    loop {
        tokio::select! {
            _ = &mut end => break,
            _ = &mut ctrl_c => { interrupted = true; break }
            _ = refresh.tick() => live.draw(&client, &stats, "publishing").await,
        }
        if publisher.is_finished() {
            break; // it failed; its error is reported below
        }
    }
    stop_publishing.cancel();
    let publish_result = publisher.await.context("publisher task");
    let published_secs = started.elapsed().as_secs_f64();

    // Let the groups catch up (retries included), then stop them gracefully.
    let drain_until = Instant::now() + DRAIN_MAX;
    while !interrupted && Instant::now() < drain_until {
        let lag_b = client.lag("billing").await.unwrap_or(1);
        let lag_s = client.lag("shipping").await.unwrap_or(1);
        if lag_b == 0 && lag_s == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        if refresh_due(&live) {
            live.draw(&client, &stats, "draining").await;
        }
    }
    live.draw(&client, &stats, "done").await;
    stop_consumers.cancel();
    let billing = billing.await.context("billing task")?.context("billing consumer")?;
    let shipping = shipping.await.context("shipping task")?.context("shipping consumer")?;
    publish_result??;

    let published = stats.published.load(Ordering::Relaxed);
    println!("\nSummary ({published_secs:.1} s of publishing)");
    println!("  published {published} orders ({:.0}/s)", published as f64 / published_secs.max(1e-3));
    for (name, report, g) in [("billing", &billing, &stats.billing), ("shipping", &shipping, &stats.shipping)] {
        let h = g.total.lock().expect("histogram lock poisoned");
        println!(
            "  {name:<9} processed {}  retried {}  dead-lettered {}  latency p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
            report.ok,
            report.retried,
            report.dead_lettered,
            quantile_ms(&h, 0.5),
            quantile_ms(&h, 0.99),
            h.max() as f64 / 1e3
        );
    }
    println!("  lag       billing {}  shipping {}", client.lag("billing").await?, client.lag("shipping").await?);

    let letters = client.backend().dead_letters("billing", DLQ_COUNTED_MAX).await?;
    let more = if letters.len() == DLQ_COUNTED_MAX { "+" } else { "" };
    println!("\nDead letters of `billing`: {}{more}", letters.len());
    if !letters.is_empty() {
        println!("  {:<36}  {:<12}  {:>8}  REASON", "ID", "KEY", "ATTEMPTS");
        for d in letters.iter().take(DLQ_SHOWN_MAX) {
            let e = &d.event;
            println!(
                "  {:<36}  {:<12}  {:>8}  {}",
                e.id(),
                e.key().unwrap_or("-"),
                e.header(dlq_headers::ATTEMPTS).unwrap_or("?"),
                e.header(dlq_headers::REASON).unwrap_or("?")
            );
        }
        if letters.len() > DLQ_SHOWN_MAX {
            println!("  … and {}{more} more (herald dlq list shows them all)", letters.len() - DLQ_SHOWN_MAX);
        }
        let url = shell_word(&format!("file://{}", data_dir.display()));
        println!("\nReplay them to `billing` only (works after the demo exits):");
        println!("  herald --url {url} dlq replay --group billing");
        // Run through `cargo run` from a checkout, `herald` is not on the PATH: say how.
        let from_checkout = std::env::current_exe().is_ok_and(|p| p.components().any(|c| c.as_os_str() == "target"));
        if from_checkout {
            println!(
                "  (from this checkout: cargo run --release -p herald-cli -- --url {url} dlq replay --group billing)"
            );
        }
    }
    if interrupted {
        println!("\n(stopped early by Ctrl-C)");
    }
    Ok(())
}

/// Whether a second has passed since the table was last drawn.
fn refresh_due(live: &Live) -> bool {
    live.last_at.elapsed() >= Duration::from_secs(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_fail_in_both_ways() {
        let permanent = (0..1000).filter(|&n| order(n).1["total_cents"].as_u64().unwrap() > CARD_LIMIT_CENTS).count();
        assert_eq!(permanent, 20, "2% of orders exceed the card limit");
        // Within the first 20 orders both kinds of failure occur.
        assert!((0..20).any(|n| order(n).1["total_cents"].as_u64().unwrap() > CARD_LIMIT_CENTS));
        assert!((1..20).any(|n| n % TRANSIENT_EVERY == 0));
        assert_eq!(order(7).0, "customer-7");
        let customers: HashSet<String> = (0..1000)
            .map(order)
            .filter(|(_, o)| o["total_cents"].as_u64().unwrap() > CARD_LIMIT_CENTS)
            .map(|(c, _)| c)
            .collect();
        assert!(customers.len() > 10, "dead letters spread over customers: {customers:?}");
    }

    #[test]
    fn data_dir_is_wiped_only_when_it_is_the_demos() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        let abs = prepare_data_dir(&dir).unwrap();
        assert!(abs.is_absolute());
        std::fs::write(dir.join("old"), "x").unwrap();
        prepare_data_dir(&dir).unwrap();
        assert!(!dir.join("old").exists(), "a demo directory is wiped");
        let foreign = tmp.path().join("mine");
        std::fs::create_dir(&foreign).unwrap();
        std::fs::write(foreign.join("precious"), "x").unwrap();
        let err = prepare_data_dir(&foreign).unwrap_err().to_string();
        assert!(err.contains("not made by `herald demo`"), "{err}");
        assert!(foreign.join("precious").exists());
    }

    #[test]
    fn shell_words_are_quoted_when_needed() {
        assert_eq!(shell_word("file:///tmp/x-1"), "file:///tmp/x-1");
        assert_eq!(shell_word("file:///tmp/my dir"), "'file:///tmp/my dir'");
        assert_eq!(shell_word("file:///it's"), r"'file:///it'\''s'");
    }
}
