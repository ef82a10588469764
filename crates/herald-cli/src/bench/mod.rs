//! `herald bench`: throughput and latency in the OpenMessaging Benchmark style, against any SDK
//! URL (`mem://`, `file://`, `herald://`, `--serve` for a server in this process), with Redis
//! Streams as a peer measured by the same command (`--peer redis`).
//!
//! The workload: `--producers` tasks publish batches of `--batch` events (`--payload-bytes` of
//! data each, keyed by `--keys` keys in turn) over `--topics` topics of `--partitions` partitions,
//! at `--rate` events/s in total or as fast as each call returns; `--groups` consumer groups of
//! `--consumers-per-group` consumers each receive and ack every event. After `--warmup`, the
//! `--duration` window is measured; then consumers drain what is left.
//!
//! What is measured (see docs/benchmarks.md, "herald bench"):
//! - events/s and MB/s (payload bytes, 10^6) published and consumed per group: events whose
//!   receipt (published) or delivery (consumed) falls inside the window, divided by its length;
//! - publish latency, per event: from the batch's intended send time to the receipt of its publish
//!   call (every event of a batch counts its batch's latency), for batches due inside the window;
//! - end-to-end latency, per event: from the intended send time carried in the payload's first 8
//!   bytes to the moment the consumer's fetch returned it, for events sent inside the window,
//!   also when they arrive during the drain;
//! - errors: failed publish calls, failed fetches and acks.
//!
//! At a fixed rate a batch's latency counts from when it was due, not from when it was sent, so
//! a stall of the system under test shows in the percentiles (no coordinated omission).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use herald_model::{Durability, OrderingMode};

use crate::Global;

mod data;
mod measure;
mod peer_redis;
mod report;
mod sdk;

/// Most topics.
const TOPICS_MAX: u32 = 100;
/// Most partitions per topic (the broker's default limit).
const PARTITIONS_MAX: u32 = 1024;
/// Most bytes of data per event (the broker refuses events over 1 MiB encoded by default).
const PAYLOAD_BYTES_MAX: usize = 1_000_000;
/// Fewest bytes of data per event: the first 8 carry the send time.
const PAYLOAD_BYTES_MIN: usize = 8;
/// Most producer tasks.
const PRODUCERS_MAX: u32 = 1024;
/// Most events per publish call (a server's default `max_batch_events`).
const BATCH_MAX: u32 = 10_000;
/// Most consumer groups.
const GROUPS_MAX: u32 = 64;
/// Most consumers over all groups.
const CONSUMERS_MAX: u32 = 1024;
/// Most distinct keys.
const KEYS_MAX: u64 = 10_000_000;
/// Highest target rate, events/s.
const RATE_MAX: u64 = 100_000_000;
/// Longest warm-up, measurement or drain.
const DURATION_MAX: Duration = Duration::from_secs(24 * 3600);
/// Longest fsync interval for `--durability interval` (the log's own limit).
const FSYNC_INTERVAL_MS_MAX: u64 = 60_000;

#[derive(Debug, clap::Args)]
#[command(after_long_help = "Examples:
  herald bench --url mem://
  herald bench --serve --peer redis --payload-bytes 1024 --groups 4
  herald bench --url file:///tmp/herald-bench --rate 10000 --durability interval --json")]
pub struct BenchArgs {
    /// Topics; producers spread their batches over them and every group subscribes to all.
    #[arg(long, default_value_t = 1)]
    topics: u32,
    /// Partitions per topic (Redis: one stream per partition).
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    /// Bytes of data per event; the first 8 carry the send time.
    #[arg(long, default_value_t = 100)]
    payload_bytes: usize,
    /// Target events per second over all producers; 0 publishes as fast as calls return.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Producer tasks; each has one publish call in flight at a time.
    #[arg(long, default_value_t = 4)]
    producers: u32,
    /// Events per publish call (Redis: XADDs per pipeline).
    #[arg(long, default_value_t = 100)]
    batch: u32,
    /// Consumer groups, each consuming every event; 0 publishes only.
    #[arg(long, default_value_t = 1)]
    groups: u32,
    /// Consumers in each group.
    #[arg(long, default_value_t = 1)]
    consumers_per_group: u32,
    /// How long the measured window lasts, e.g. 10s, 500ms, 2m.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// How long the workload runs before measuring starts.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// How long consumers may take after the run to catch up before the bench stops waiting.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// The topics' durability: fsync before each publish is acknowledged (always), every
    /// --fsync-interval-ms (interval), or never on its own (os).
    #[arg(long, value_enum, default_value_t = DurabilityArg::Always)]
    durability: DurabilityArg,
    /// The fsync period of --durability interval.
    #[arg(long, default_value_t = 100)]
    fsync_interval_ms: u64,
    /// Distinct partition keys, used in turn; 0 sends events without a key.
    #[arg(long, default_value_t = 1000)]
    keys: u64,
    /// The groups' delivery order: one event of a key in flight at a time (key, the default),
    /// one per partition (partition), or none (none: what Redis Streams gives).
    #[arg(long, value_enum, default_value_t = OrderingArg::Key)]
    ordering: OrderingArg,
    /// Starts a server in this process (loopback, port 0, a temporary data directory) and
    /// benchmarks `herald://<its gRPC address>`; --url is ignored.
    #[arg(long)]
    serve: bool,
    /// Runs the same workload against a peer too, right after, in the same command.
    #[arg(long, value_enum)]
    peer: Option<Peer>,
    /// The Redis to use (e.g. redis://127.0.0.1:6379); without it bench starts its own
    /// redis-server on a free loopback port and stops it at the end.
    #[arg(long, requires = "peer")]
    redis_url: Option<String>,
    /// Turns on the spawned redis-server's append-only file with this fsync policy (by default it
    /// keeps everything in memory and never fsyncs).
    #[arg(long, value_enum, requires = "peer", conflicts_with = "redis_url")]
    redis_appendfsync: Option<AppendFsync>,
    /// Events carry a typical 5-field record in this format, and the run is made twice in this
    /// command: with no schema, then with the record's schema registered on the topics (JSON
    /// Schema, or the Protobuf message), so that every publish is validated; the table compares
    /// them. No peer is run.
    #[arg(long, value_enum, conflicts_with = "peer")]
    schema: Option<SchemaArg>,
    /// With --schema: makes the validated run first, then the one without schema (to alternate
    /// the order across commands on a machine whose speed drifts).
    #[arg(long, requires = "schema")]
    validated_first: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SchemaArg {
    Json,
    Protobuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DurabilityArg {
    Always,
    Interval,
    Os,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OrderingArg {
    Key,
    Partition,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Peer {
    /// Redis Streams: XADD, XREADGROUP, XACK.
    Redis,
}

/// Redis's `appendfsync` policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum AppendFsync {
    /// fsync after every write (Redis groups the writes of one event-loop turn).
    Always,
    /// fsync once a second.
    Everysec,
    /// Leave write-back to the operating system.
    No,
}

impl AppendFsync {
    fn as_str(self) -> &'static str {
        match self {
            AppendFsync::Always => "always",
            AppendFsync::Everysec => "everysec",
            AppendFsync::No => "no",
        }
    }
}

/// The validated workload, shared by every system under test.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub topics: u32,
    pub partitions: u32,
    pub payload_bytes: usize,
    pub rate: u64,
    pub producers: u32,
    pub batch: u32,
    pub groups: u32,
    pub consumers_per_group: u32,
    pub duration: Duration,
    pub warmup: Duration,
    pub drain_timeout: Duration,
    pub durability: Durability,
    pub keys: u64,
    pub ordering: OrderingMode,
    pub json: bool,
    /// Makes topic, stream and group names unique to this run.
    pub run_id: String,
    /// What the events carry.
    pub data: data::DataFormat,
    /// Whether the record's schema is registered on the topics (validated on every publish).
    pub validate: bool,
}

impl Plan {
    fn new(a: &BenchArgs, json: bool) -> Result<Plan> {
        fn range<T: PartialOrd + std::fmt::Display>(name: &str, v: T, min: T, max: T, why: &str) -> Result<()> {
            if v < min || v > max {
                bail!("--{name} is {v}; it must be between {min} and {max}{why}");
            }
            Ok(())
        }
        range("topics", a.topics, 1, TOPICS_MAX, "")?;
        range("partitions", a.partitions, 1, PARTITIONS_MAX, "")?;
        let data = match a.schema {
            None => data::DataFormat::Raw,
            Some(SchemaArg::Json) => data::DataFormat::Json,
            Some(SchemaArg::Protobuf) => data::DataFormat::Protobuf,
        };
        let why = if data == data::DataFormat::Raw {
            " (the first 8 bytes carry the send time)".to_owned()
        } else {
            format!(" (a {} record takes at least {} bytes)", data.name(), data.min_bytes())
        };
        range("payload-bytes", a.payload_bytes, PAYLOAD_BYTES_MIN.max(data.min_bytes()), PAYLOAD_BYTES_MAX, &why)?;
        range("rate", a.rate, 0, RATE_MAX, " (0 = as fast as possible)")?;
        range("producers", a.producers, 1, PRODUCERS_MAX, "")?;
        range("batch", a.batch, 1, BATCH_MAX, "")?;
        range("groups", a.groups, 0, GROUPS_MAX, " (0 = publish only)")?;
        range("consumers-per-group", a.consumers_per_group, 1, CONSUMERS_MAX, "")?;
        if a.groups * a.consumers_per_group > CONSUMERS_MAX {
            bail!(
                "--groups {} × --consumers-per-group {} is {} consumers; at most {CONSUMERS_MAX} are allowed",
                a.groups,
                a.consumers_per_group,
                a.groups * a.consumers_per_group
            );
        }
        range("keys", a.keys, 0, KEYS_MAX, " (0 = no key)")?;
        if a.duration.is_zero() {
            bail!("--duration is 0; measure for at least 1ms, e.g. --duration 10s");
        }
        for (name, d) in [("duration", a.duration), ("warmup", a.warmup), ("drain-timeout", a.drain_timeout)] {
            if d > DURATION_MAX {
                bail!("--{name} is {d:?}; it must be at most 24h");
            }
        }
        range("fsync-interval-ms", a.fsync_interval_ms, 1, FSYNC_INTERVAL_MS_MAX, "")?;
        let plan = Plan {
            topics: a.topics,
            partitions: a.partitions,
            payload_bytes: a.payload_bytes,
            rate: a.rate,
            producers: a.producers,
            batch: a.batch,
            groups: a.groups,
            consumers_per_group: a.consumers_per_group,
            duration: a.duration,
            warmup: a.warmup,
            drain_timeout: a.drain_timeout,
            durability: match a.durability {
                DurabilityArg::Always => Durability::Always,
                DurabilityArg::Interval => Durability::Interval { ms: a.fsync_interval_ms },
                DurabilityArg::Os => Durability::Os,
            },
            keys: a.keys,
            ordering: match a.ordering {
                OrderingArg::Key => OrderingMode::Key,
                OrderingArg::Partition => OrderingMode::Partition,
                OrderingArg::None => OrderingMode::None,
            },
            json,
            run_id: format!("{:08x}", rand::random::<u32>()),
            data,
            validate: false,
        };
        if let Some(interval) = plan.batch_interval_ns()
            && interval > (a.warmup + a.duration).as_nanos() as f64
        {
            bail!(
                "at --rate {} with --producers {} and --batch {}, each producer sends one batch every {:.1}s, \
                 longer than the whole run; lower --batch or --producers, or raise --rate",
                a.rate,
                a.producers,
                a.batch,
                interval / 1e9
            );
        }
        Ok(plan)
    }

    /// With a target rate, the time between two batches of one producer, in ns.
    pub fn batch_interval_ns(&self) -> Option<f64> {
        (self.rate > 0).then(|| f64::from(self.batch) * f64::from(self.producers) / self.rate as f64 * 1e9)
    }

    pub fn groups_empty(&self) -> bool {
        self.groups == 0
    }

    /// Key `i` of the run's keys.
    pub fn key(&self, i: u64) -> String {
        format!("k{}", i % self.keys.max(1))
    }

    pub fn ordering_name(&self) -> &'static str {
        match self.ordering {
            OrderingMode::Key => "key",
            OrderingMode::Partition => "partition",
            OrderingMode::None => "none",
        }
    }

    pub fn durability_name(&self) -> String {
        match self.durability {
            Durability::Always => "always".into(),
            Durability::Interval { ms } => format!("interval({ms} ms)"),
            Durability::Os => "os".into(),
        }
    }
}

/// Parses `10s`, `500ms`, `2m`, `1h`, `1.5s`; a bare number is seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("{s:?} is not a duration; use e.g. 10s, 500ms, 2m"))?;
    let secs = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit {other:?} in {s:?}; use ms, s, m or h")),
    };
    if !secs.is_finite() || secs > DURATION_MAX.as_secs_f64() {
        return Err(format!("{s:?} is too long; at most 24h"));
    }
    Ok(Duration::from_secs_f64(secs))
}

pub async fn run(g: &Global, a: BenchArgs) -> Result<()> {
    let plan = Arc::new(Plan::new(&a, g.json)?);
    if a.peer == Some(Peer::Redis) && a.redis_url.is_none() {
        // Fail before a run whose peer cannot follow.
        peer_redis::find_server()?;
    }
    let mut plans = vec![plan.clone()];
    if a.schema.is_some() {
        // The same workload, validated on every publish.
        let validated =
            Arc::new(Plan { validate: true, run_id: format!("{:08x}", rand::random::<u32>()), ..(*plan).clone() });
        plans.insert(usize::from(!a.validated_first), validated);
    }
    let mut results = Vec::new();
    for p in plans {
        let herald = sdk::run(&g.url, a.serve, p, g.connect_options()).await?;
        report::emit(&herald, g.json);
        results.push(herald);
    }
    let mut peer_error = None;
    if a.peer == Some(Peer::Redis) {
        match peer_redis::run(a.redis_url.as_deref(), a.redis_appendfsync, plan.clone()).await {
            Ok(redis) => {
                report::emit(&redis, g.json);
                results.push(redis);
            }
            Err(e) => peer_error = Some(e.context("the Redis peer")),
        }
    }
    if !g.json {
        report::table(&plan, &results);
    }
    peer_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn plan(args: &str) -> Result<Plan> {
        let cli = Cli::try_parse_from(std::iter::once("bench").chain(args.split_whitespace()))?;
        Plan::new(&cli.bench, true)
    }

    #[test]
    fn defaults_are_valid() {
        let p = plan("").unwrap();
        assert_eq!((p.topics, p.partitions, p.payload_bytes, p.producers, p.batch), (1, 8, 100, 4, 100));
        assert_eq!((p.groups, p.consumers_per_group, p.keys, p.rate), (1, 1, 1000, 0));
        assert_eq!((p.duration, p.warmup), (Duration::from_secs(10), Duration::from_secs(2)));
        assert_eq!(p.durability, Durability::Always);
        assert_eq!(p.batch_interval_ns(), None);
    }

    #[test]
    fn every_limit_is_checked_with_a_message_naming_the_option() {
        for (args, needle) in [
            ("--topics 0", "--topics is 0"),
            ("--topics 101", "--topics is 101"),
            ("--partitions 0", "--partitions is 0"),
            ("--partitions 1025", "--partitions is 1025"),
            ("--payload-bytes 0", "--payload-bytes is 0; it must be between 8 and 1000000 (the first 8 bytes"),
            ("--payload-bytes 7", "--payload-bytes is 7"),
            ("--payload-bytes 1000001", "--payload-bytes is 1000001"),
            ("--rate 100000001", "--rate is 100000001"),
            ("--producers 0", "--producers is 0"),
            ("--producers 1025", "--producers is 1025"),
            ("--batch 0", "--batch is 0"),
            ("--batch 10001", "--batch is 10001"),
            ("--groups 65", "--groups is 65"),
            ("--consumers-per-group 0", "--consumers-per-group is 0"),
            ("--groups 2 --consumers-per-group 600", "1200 consumers; at most 1024"),
            ("--keys 10000001", "--keys is 10000001"),
            ("--duration 0s", "--duration is 0"),
            ("--duration 25h", "at most 24h"),
            ("--warmup 90000", "at most 24h"),
            ("--fsync-interval-ms 0", "--fsync-interval-ms is 0"),
            ("--fsync-interval-ms 60001", "--fsync-interval-ms is 60001"),
            ("--rate 1 --batch 100", "each producer sends one batch every 400.0s"),
        ] {
            let e = plan(args).expect_err(args).to_string();
            assert!(e.contains(needle), "{args}: {e}");
        }
    }

    #[test]
    fn limits_themselves_are_accepted() {
        for args in [
            "--topics 100 --partitions 1024 --payload-bytes 8",
            "--payload-bytes 1000000 --batch 10000 --producers 1024",
            "--groups 0 --keys 0",
            "--groups 64 --consumers-per-group 16 --keys 10000000",
            "--durability interval --fsync-interval-ms 60000 --rate 100000000",
        ] {
            plan(args).unwrap_or_else(|e| panic!("{args}: {e}"));
        }
    }

    #[test]
    fn fixed_rate_paces_each_producer() {
        let p = plan("--rate 10000 --producers 4 --batch 100").unwrap();
        // 4 producers × 100 events per batch at 10,000 events/s: a batch every 40 ms each.
        assert_eq!(p.batch_interval_ns(), Some(40e6));
        assert_eq!(
            plan("--durability interval --fsync-interval-ms 250").unwrap().durability_name(),
            "interval(250 ms)"
        );
    }

    #[test]
    fn durations_parse() {
        for (s, d) in [
            ("10s", Duration::from_secs(10)),
            ("500ms", Duration::from_millis(500)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("1.5s", Duration::from_millis(1500)),
            ("3", Duration::from_secs(3)),
            ("0s", Duration::ZERO),
        ] {
            assert_eq!(parse_duration(s), Ok(d), "{s}");
        }
        for bad in ["", "s", "ten", "10 parsecs", "-1s", "1e9h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
