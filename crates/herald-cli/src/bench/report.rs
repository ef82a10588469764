//! The result of one run, as one JSON line (`--json`) or a table with a column per system.

use std::sync::atomic::Ordering;

use serde::Serialize;

use super::Plan;
use super::measure::{Counters, Measured, Percentiles};

/// One system's figures for one workload. Latencies are in µs.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// `herald` or `redis`.
    pub system: &'static str,
    /// What was measured: the URL (and how it was started).
    pub target: String,
    /// The durability it ran with.
    pub durability: String,
    /// A remark about the durability, e.g. that a Redis does no fsync.
    pub durability_note: Option<String>,
    /// The order the groups' deliveries kept.
    pub ordering: String,
    pub workload: Workload,
    /// Length of the measured window, s.
    pub window_s: f64,
    pub published: Published,
    /// Per event: from the batch's intended send time to its publish call's receipt.
    pub publish_latency_us: Option<Percentiles>,
    pub groups: Vec<Consumed>,
    /// Per event, all groups together: from the intended send time to the consumer's fetch.
    pub e2e_latency_us: Option<Percentiles>,
    /// Failed publish calls + failed fetches and acks.
    pub errors: u64,
    pub first_error: Option<String>,
    /// Peak resident memory (VmHWM on Linux) of what `peak_memory_of` says, bytes.
    pub peak_memory_bytes: Option<u64>,
    pub peak_memory_of: String,
    /// Whether every group consumed everything published before `--drain-timeout`.
    pub drained: bool,
    /// How long draining took after producing stopped, s.
    pub drain_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Workload {
    pub topics: u32,
    pub partitions: u32,
    pub payload_bytes: usize,
    /// Target events/s; 0 = as fast as possible.
    pub rate: u64,
    pub producers: u32,
    pub batch: u32,
    pub groups: u32,
    pub consumers_per_group: u32,
    pub keys: u64,
    pub warmup_s: f64,
    pub duration_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Published {
    /// Events stored with their receipt inside the window.
    pub events: u64,
    pub events_per_s: f64,
    /// Payload MB (10^6 bytes) per second.
    pub mb_per_s: f64,
    /// Events stored over the whole run, warm-up included.
    pub total: u64,
    /// Failed publish calls.
    pub errors: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Consumed {
    pub group: usize,
    /// Events first delivered inside the window.
    pub events: u64,
    pub events_per_s: f64,
    pub mb_per_s: f64,
    /// Events first delivered over the whole run and the drain.
    pub total: u64,
    /// Deliveries after an event's first.
    pub redelivered: u64,
    /// Failed fetches and acks.
    pub errors: u64,
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

impl RunResult {
    pub(super) fn new(
        system: &'static str,
        target: String,
        durability: String,
        durability_note: Option<String>,
        plan: &Plan,
        counters: &Counters,
        measured: Measured,
    ) -> RunResult {
        let window = plan.duration.as_secs_f64();
        let mb = |events: u64| round(events as f64 * plan.payload_bytes as f64 / 1e6 / window, 3);
        let published_events = counters.published_window.load(Ordering::Acquire);
        let published = Published {
            events: published_events,
            events_per_s: round(published_events as f64 / window, 1),
            mb_per_s: mb(published_events),
            total: counters.published_total.load(Ordering::Acquire),
            errors: counters.publish_errors.load(Ordering::Acquire),
        };
        let groups: Vec<Consumed> = counters
            .groups
            .iter()
            .enumerate()
            .map(|(group, g)| {
                let events = g.consumed_window.load(Ordering::Acquire);
                Consumed {
                    group,
                    events,
                    events_per_s: round(events as f64 / window, 1),
                    mb_per_s: mb(events),
                    total: g.consumed_total.load(Ordering::Acquire),
                    redelivered: g.redelivered.load(Ordering::Acquire),
                    errors: g.errors.load(Ordering::Acquire),
                }
            })
            .collect();
        let errors = published.errors + groups.iter().map(|g| g.errors).sum::<u64>();
        RunResult {
            system,
            target,
            durability,
            durability_note,
            ordering: plan.ordering_name().to_owned(),
            workload: Workload {
                topics: plan.topics,
                partitions: plan.partitions,
                payload_bytes: plan.payload_bytes,
                rate: plan.rate,
                producers: plan.producers,
                batch: plan.batch,
                groups: plan.groups,
                consumers_per_group: plan.consumers_per_group,
                keys: plan.keys,
                warmup_s: plan.warmup.as_secs_f64(),
                duration_s: window,
            },
            window_s: window,
            published,
            publish_latency_us: Percentiles::of(&measured.publish_latency),
            groups,
            e2e_latency_us: Percentiles::of(&measured.e2e_latency),
            errors,
            first_error: counters.first_error.lock().expect("error lock poisoned").clone(),
            peak_memory_bytes: None,
            peak_memory_of: String::new(),
            drained: measured.drained,
            drain_s: round(measured.drain.as_secs_f64(), 3),
        }
    }
}

/// Prints a result as one JSON line with `--json`; a table comes at the end otherwise.
pub(super) fn emit(result: &RunResult, json: bool) {
    if json {
        println!("{}", serde_json::to_string(result).expect("a result serializes"));
    }
}

/// `1234567.8` → `1,234,568`.
pub(super) fn count(v: f64) -> String {
    let s = format!("{:.0}", v.max(0.0));
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

/// The results side by side, a column per system, and what the figures mean.
pub(super) fn table(plan: &Plan, results: &[RunResult]) {
    let rate = if plan.rate == 0 { "max rate".to_owned() } else { format!("{} events/s", count(plan.rate as f64)) };
    let keys = if plan.keys == 0 { "no keys".to_owned() } else { format!("{} keys", count(plan.keys as f64)) };
    let header = format!(
        "herald bench: {} topic(s) × {} partitions, {} B payloads, {keys}; {} producer(s) × batches of {} at {rate}; \
         {} group(s) × {} consumer(s); {} warm-up, {} measured",
        plan.topics,
        plan.partitions,
        plan.payload_bytes,
        plan.producers,
        plan.batch,
        plan.groups,
        plan.consumers_per_group,
        human(plan.warmup),
        human(plan.duration),
    );
    println!("{}", wrap(&header, 100));
    println!();
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |name: &str, f: &dyn Fn(&RunResult) -> String| {
        rows.push((name.to_owned(), results.iter().map(f).collect()));
    };
    row("", &|r| r.system.to_owned());
    row("target", &|r| r.target.clone());
    row("durability", &|r| r.durability.clone());
    row("delivery order", &|r| r.ordering.clone());
    row("published events/s", &|r| count(r.published.events_per_s));
    row("published MB/s", &|r| format!("{:.1}", r.published.mb_per_s));
    for g in 0..plan.groups as usize {
        row(&format!("consumed events/s, group {g}"), &|r| count(r.groups[g].events_per_s));
        row(&format!("consumed MB/s, group {g}"), &|r| format!("{:.1}", r.groups[g].mb_per_s));
    }
    type Pick = fn(&Percentiles) -> u64;
    let quantiles: [(&str, Pick); 4] =
        [("p50", |p| p.p50), ("p99", |p| p.p99), ("p99.9", |p| p.p99_9), ("max", |p| p.max)];
    for (name, pick) in quantiles {
        row(&format!("publish latency {name} ms"), &|r| {
            r.publish_latency_us.as_ref().map_or("-".into(), |p| ms(pick(p)))
        });
    }
    if plan.groups > 0 {
        for (name, pick) in quantiles {
            row(&format!("end-to-end latency {name} ms"), &|r| {
                r.e2e_latency_us.as_ref().map_or("-".into(), |p| ms(pick(p)))
            });
        }
    }
    row("peak memory MiB", &|r| {
        r.peak_memory_bytes.map_or("-".into(), |b| format!("{:.1}", b as f64 / (1024.0 * 1024.0)))
    });
    row("errors", &|r| count(r.errors as f64));
    row("events published (whole run)", &|r| count(r.published.total as f64));
    for g in 0..plan.groups as usize {
        row(&format!("events consumed, group {g}"), &|r| {
            let c = &r.groups[g];
            if c.redelivered > 0 {
                format!("{} (+{} redelivered)", count(c.total as f64), count(c.redelivered as f64))
            } else {
                count(c.total as f64)
            }
        });
    }
    if plan.groups > 0 {
        row("drained", &|r| {
            if r.drained {
                format!("yes, in {:.2} s", r.drain_s)
            } else {
                format!("NO, gave up after {:.0} s", r.drain_s)
            }
        });
    }
    let name_width = rows.iter().map(|(n, _)| n.chars().count()).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..results.len()).map(|i| rows.iter().map(|(_, cells)| cells[i].chars().count()).max().unwrap_or(0)).collect();
    for (name, cells) in &rows {
        let mut line = format!("{name:<name_width$}");
        for (cell, w) in cells.iter().zip(&widths) {
            line += &format!("   {cell:>w$}");
        }
        println!("{}", line.trim_end());
    }
    println!();
    let mut notes = vec![
        "Rates count events stored (published) or first delivered (consumed) inside the measured window; MB/s is \
         payload bytes (10^6). Publish latency is per event: from its batch's intended send time to the publish \
         call's receipt. End-to-end latency is per event: from the intended send time, carried in the payload's \
         first 8 bytes, to the consumer's fetch returning it."
            .to_owned(),
    ];
    for r in results {
        notes.push(format!("{}: peak memory is {}.", r.system, r.peak_memory_of));
        if let Some(note) = &r.durability_note {
            notes.push(format!("{}: {note}", r.system));
        }
        if let Some(e) = &r.first_error {
            notes.push(format!("{}: {} errors; the first: {e}", r.system, r.errors));
        }
        if !r.drained {
            notes.push(format!(
                "{}: consumers had not caught up after --drain-timeout {}; consumed totals are short.",
                r.system,
                human(plan.drain_timeout)
            ));
        }
    }
    for note in notes {
        println!("{}", wrap(&note, 100));
    }
}

/// The peak resident memory of process `pid` (this one without), from /proc (Linux only).
pub(super) fn peak_memory(pid: Option<u32>) -> Option<u64> {
    let path = pid.map_or_else(|| "/proc/self/status".to_owned(), |p| format!("/proc/{p}/status"));
    let status = std::fs::read_to_string(path).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// `2s`, `500ms`.
fn human(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) { format!("{}s", ms / 1000) } else { format!("{ms}ms") }
}

/// Breaks `text` into lines of at most `width` characters at spaces.
fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = 0;
    for word in text.split_whitespace() {
        let n = word.chars().count();
        if line > 0 && line + 1 + n > width {
            out.push('\n');
            line = 0;
        } else if line > 0 {
            out.push(' ');
            line += 1;
        }
        out.push_str(word);
        line += n;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_get_thousands_separators() {
        for (v, s) in [(0.0, "0"), (999.4, "999"), (1000.0, "1,000"), (1234567.8, "1,234,568"), (-3.0, "0")] {
            assert_eq!(count(v), s);
        }
    }

    #[test]
    fn peak_memory_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            let own = peak_memory(None).expect("VmHWM of this process");
            assert!(own > 1024 * 1024, "{own}");
            assert_eq!(peak_memory(Some(std::process::id())).map(|b| b >= own), Some(true));
            assert_eq!(peak_memory(Some(u32::MAX)), None);
        }
    }

    #[test]
    fn durations_print_as_given() {
        use std::time::Duration;
        assert_eq!(human(Duration::ZERO), "0s");
        assert_eq!(human(Duration::from_secs(10)), "10s");
        assert_eq!(human(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn notes_wrap_at_spaces() {
        assert_eq!(wrap("aa bb cc dd", 5), "aa bb\ncc dd");
        assert_eq!(wrap("a  longword b", 4), "a\nlongword\nb");
        assert_eq!(wrap("", 10), "");
    }
}
