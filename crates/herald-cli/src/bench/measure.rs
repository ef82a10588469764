//! What every system under test shares: the clock, the schedule, the producer and consumer loops
//! (pacing, counting, latency histograms), the progress bar and the drain at the end.

use std::future::Future;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Plan;

/// Most events one consumer takes per fetch (`XREADGROUP COUNT` for Redis).
pub(super) const FETCH_MAX: usize = 1000;
/// How long one fetch waits for events, so that consumers notice the end of the run.
pub(super) const FETCH_WAIT: Duration = Duration::from_millis(100);
/// Largest latency a histogram holds (1 hour, in µs); larger values are clamped to it.
const LATENCY_US_MAX: u64 = 3_600_000_000;

/// Nanoseconds since a process-wide origin: producers stamp events with it and consumers read the
/// same clock (both run in this process, also with `--serve`).
pub(super) fn now_ns() -> u64 {
    origin().elapsed().as_nanos() as u64
}

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn at_ns(ns: u64) -> tokio::time::Instant {
    tokio::time::Instant::from_std(origin() + Duration::from_nanos(ns))
}

/// The event payload: `size` bytes whose first 8 are the intended send time (ns, little endian).
pub(super) fn payload(size: usize, stamp_ns: u64) -> Vec<u8> {
    super::data::DataFormat::Raw.payload(size, stamp_ns)
}

/// The send time carried by a payload, if it is one of ours.
pub(super) fn stamp(data: &[u8]) -> Option<u64> {
    super::data::DataFormat::Raw.stamp(data)
}

/// A latency histogram in µs, 3 significant digits.
pub(super) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("static histogram bounds are valid")
}

/// When the run starts, when measuring starts (after the warm-up) and when producing stops.
#[derive(Debug, Clone, Copy)]
pub(super) struct Schedule {
    pub start_ns: u64,
    pub measure_ns: u64,
    pub end_ns: u64,
}

impl Schedule {
    /// A schedule starting a little from now, so that every task is spawned before it begins.
    pub fn starting_soon(warmup: Duration, duration: Duration) -> Schedule {
        let start_ns = now_ns() + 50_000_000;
        let measure_ns = start_ns + warmup.as_nanos() as u64;
        Schedule { start_ns, measure_ns, end_ns: measure_ns + duration.as_nanos() as u64 }
    }

    /// Whether something that happened at `t` falls in the measured window.
    pub fn in_window(&self, t: u64) -> bool {
        (self.measure_ns..self.end_ns).contains(&t)
    }
}

/// Counters shared by the tasks of one run.
#[derive(Default)]
pub(super) struct Counters {
    /// Events whose publish call succeeded, whenever.
    pub published_total: AtomicU64,
    /// Of those, the ones whose receipt came inside the measured window.
    pub published_window: AtomicU64,
    /// Publish calls that failed.
    pub publish_errors: AtomicU64,
    /// Per group.
    pub groups: Vec<GroupCounters>,
    /// The first error seen, to print.
    pub first_error: Mutex<Option<String>>,
}

#[derive(Default)]
pub(super) struct GroupCounters {
    /// Events received for the first time, whenever.
    pub consumed_total: AtomicU64,
    /// Of those, the ones received inside the measured window.
    pub consumed_window: AtomicU64,
    /// Deliveries after the first of an event (ack timeouts, rebalances).
    pub redelivered: AtomicU64,
    /// Failed fetches and acks.
    pub errors: AtomicU64,
}

impl Counters {
    pub fn new(groups: usize) -> Counters {
        Counters { groups: (0..groups).map(|_| GroupCounters::default()).collect(), ..Counters::default() }
    }

    pub fn note_error(&self, what: &str, e: &dyn std::fmt::Display) {
        let mut first = self.first_error.lock().expect("error lock poisoned");
        if first.is_none() {
            *first = Some(format!("{what}: {e}"));
        }
    }

    /// Events the slowest group still has to consume.
    fn behind(&self) -> u64 {
        let published = self.published_total.load(Ordering::Acquire);
        self.groups
            .iter()
            .map(|g| published.saturating_sub(g.consumed_total.load(Ordering::Acquire)))
            .max()
            .unwrap_or(0)
    }
}

/// Sends one batch of `batch` events stamped with `stamp_ns`; returns how many were stored.
pub(super) trait BatchSender: Send + 'static {
    fn send(&mut self, seq: u64, stamp_ns: u64) -> impl Future<Output = Result<u64, String>> + Send;
}

/// What one fetch brought.
pub(super) struct Received {
    /// When the fetch returned (ns).
    pub at_ns: u64,
    /// Deliveries that were not the first of their event (not in `stamps`).
    pub redelivered: u64,
    /// Acks that failed, and the first such error.
    pub ack_errors: u64,
    pub ack_error: Option<String>,
}

/// One consumer: fetches, acks, pushes the send stamps of first deliveries into `stamps`.
pub(super) trait Receiver: Send + 'static {
    fn receive(&mut self, stamps: &mut Vec<u64>) -> impl Future<Output = Result<Received, String>> + Send;
    fn close(self) -> impl Future<Output = ()> + Send;
}

/// Runs one producer until the end of the schedule. With a rate, batch `k` of producer `index` is
/// due at `start + offset + k × interval` and its latency counts from then, however late it is
/// sent (so a stall shows in the figures instead of delaying what is measured). At the maximum
/// rate each batch goes as soon as the previous one is stored.
pub(super) fn spawn_producer<S: BatchSender>(
    mut sender: S,
    index: u32,
    plan: Arc<Plan>,
    schedule: Schedule,
    counters: Arc<Counters>,
) -> JoinHandle<Histogram<u64>> {
    tokio::spawn(async move {
        let mut latency = histogram();
        let interval_ns = plan.batch_interval_ns();
        let offset_ns = interval_ns.map(|i| i * f64::from(index) / f64::from(plan.producers));
        let mut seq = 0u64;
        tokio::time::sleep_until(at_ns(schedule.start_ns)).await;
        loop {
            let intended = match (interval_ns, offset_ns) {
                (Some(i), Some(o)) => schedule.start_ns + (o + seq as f64 * i) as u64,
                _ => now_ns(),
            };
            if intended >= schedule.end_ns {
                break;
            }
            if interval_ns.is_some() {
                tokio::time::sleep_until(at_ns(intended)).await;
            }
            match sender.send(seq, intended).await {
                Ok(stored) => {
                    let done = now_ns();
                    if schedule.in_window(intended) {
                        latency.saturating_record_n(done.saturating_sub(intended) / 1000, stored);
                    }
                    counters.published_total.fetch_add(stored, Ordering::AcqRel);
                    if schedule.in_window(done) {
                        counters.published_window.fetch_add(stored, Ordering::AcqRel);
                    }
                }
                Err(e) => {
                    counters.publish_errors.fetch_add(1, Ordering::AcqRel);
                    counters.note_error("publish", &e);
                    if interval_ns.is_none() {
                        // Do not spin on a refusing backend.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
            seq += 1;
        }
        latency
    })
}

/// Runs one consumer of group `group` until `stop`; returns its end-to-end latency histogram
/// (events sent inside the measured window, whenever they arrive).
pub(super) fn spawn_consumer<R: Receiver>(
    mut receiver: R,
    group: usize,
    schedule: Schedule,
    counters: Arc<Counters>,
    stop: CancellationToken,
) -> JoinHandle<Histogram<u64>> {
    tokio::spawn(async move {
        let mut latency = histogram();
        let mut stamps = Vec::with_capacity(FETCH_MAX);
        let c = &counters.groups[group];
        while !stop.is_cancelled() {
            stamps.clear();
            match receiver.receive(&mut stamps).await {
                Ok(r) => {
                    for &s in &stamps {
                        if schedule.in_window(s) {
                            latency.saturating_record(r.at_ns.saturating_sub(s) / 1000);
                        }
                    }
                    let n = stamps.len() as u64;
                    c.consumed_total.fetch_add(n, Ordering::AcqRel);
                    if schedule.in_window(r.at_ns) {
                        c.consumed_window.fetch_add(n, Ordering::AcqRel);
                    }
                    c.redelivered.fetch_add(r.redelivered, Ordering::AcqRel);
                    if r.ack_errors > 0 {
                        c.errors.fetch_add(r.ack_errors, Ordering::AcqRel);
                        counters.note_error("ack", &r.ack_error.unwrap_or_default());
                    }
                }
                Err(e) => {
                    c.errors.fetch_add(1, Ordering::AcqRel);
                    counters.note_error("fetch", &e);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        receiver.close().await;
        latency
    })
}

/// Percentiles of a latency histogram, in µs.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Percentiles {
    pub samples: u64,
    pub p50: u64,
    pub p99: u64,
    pub p99_9: u64,
    pub max: u64,
    pub mean: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Option<Percentiles> {
        (!h.is_empty()).then(|| Percentiles {
            samples: h.len(),
            p50: h.value_at_quantile(0.50),
            p99: h.value_at_quantile(0.99),
            p99_9: h.value_at_quantile(0.999),
            max: h.max(),
            mean: (h.mean() * 10.0).round() / 10.0,
        })
    }
}

/// What the tasks of one run measured.
pub(super) struct Measured {
    pub publish_latency: Histogram<u64>,
    pub e2e_latency: Histogram<u64>,
    pub drained: bool,
    pub drain: Duration,
}

/// Shows progress, waits for the producers, lets consumers catch up (at most `drain_timeout`),
/// stops them and merges their histograms.
pub(super) async fn finish(
    label: &str,
    plan: &Plan,
    schedule: Schedule,
    counters: &Arc<Counters>,
    producers: Vec<JoinHandle<Histogram<u64>>>,
    consumers: Vec<JoinHandle<Histogram<u64>>>,
    stop: CancellationToken,
) -> anyhow::Result<Measured> {
    let progress = Progress::start(label, plan, schedule, counters.clone());
    let mut publish_latency = histogram();
    for p in producers {
        publish_latency.add(p.await?).expect("histograms share their bounds");
    }
    progress.draining();
    let drain_start = Instant::now();
    let mut drained = true;
    while !plan.groups_empty() && counters.behind() > 0 {
        if drain_start.elapsed() >= plan.drain_timeout {
            drained = false;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let drain = drain_start.elapsed();
    stop.cancel();
    let mut e2e_latency = histogram();
    for c in consumers {
        e2e_latency.add(c.await?).expect("histograms share their bounds");
    }
    progress.finish();
    Ok(Measured { publish_latency, e2e_latency, drained, drain })
}

/// The progress bar on stderr: time through warm-up and measurement, current rates; hidden when
/// stderr is not a terminal or with `--json`.
struct Progress {
    bar: ProgressBar,
    phase: Arc<Mutex<&'static str>>,
    ticker: JoinHandle<()>,
}

impl Progress {
    fn start(label: &str, plan: &Plan, schedule: Schedule, counters: Arc<Counters>) -> Progress {
        let total_ms = (schedule.end_ns - schedule.start_ns) / 1_000_000;
        let bar = if plan.json || !std::io::stderr().is_terminal() {
            ProgressBar::hidden()
        } else {
            ProgressBar::with_draw_target(Some(total_ms), ProgressDrawTarget::stderr())
        };
        let template = format!("{label:>8} {{bar:30}} {{msg}}");
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style.progress_chars("=> "));
        }
        let phase = Arc::new(Mutex::new("warm-up"));
        let ticker = {
            let (bar, phase) = (bar.clone(), phase.clone());
            tokio::spawn(async move {
                let (mut last_pub, mut last_con, mut last_t) = (0, 0, now_ns());
                loop {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    let t = now_ns();
                    let published = counters.published_total.load(Ordering::Acquire);
                    let consumed =
                        counters.groups.iter().map(|g| g.consumed_total.load(Ordering::Acquire)).min().unwrap_or(0);
                    let secs = (t - last_t) as f64 / 1e9;
                    let errors = counters.publish_errors.load(Ordering::Acquire)
                        + counters.groups.iter().map(|g| g.errors.load(Ordering::Acquire)).sum::<u64>();
                    let mut phase_now = *phase.lock().expect("phase lock poisoned");
                    if phase_now == "warm-up" && t >= schedule.measure_ns {
                        phase_now = "measuring";
                        *phase.lock().expect("phase lock poisoned") = phase_now;
                    }
                    let mut parts = Vec::new();
                    if phase_now != "draining" {
                        parts.push(format!(
                            "published {}/s",
                            super::report::count((published - last_pub) as f64 / secs)
                        ));
                    }
                    if !counters.groups.is_empty() {
                        let rate = consumed.saturating_sub(last_con) as f64 / secs;
                        parts.push(format!("consumed {}/s (slowest group)", super::report::count(rate)));
                    }
                    if phase_now == "draining" {
                        parts.push(format!("{} behind", super::report::count(counters.behind() as f64)));
                    }
                    if errors > 0 {
                        parts.push(format!("{errors} errors"));
                    }
                    let msg = format!("{phase_now}: {}", parts.join(", "));
                    bar.set_position(t.saturating_sub(schedule.start_ns) / 1_000_000);
                    bar.set_message(msg);
                    (last_pub, last_con, last_t) = (published, consumed, t);
                }
            })
        };
        Progress { bar, phase, ticker }
    }

    fn draining(&self) {
        *self.phase.lock().expect("phase lock poisoned") = "draining";
    }

    fn finish(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}
