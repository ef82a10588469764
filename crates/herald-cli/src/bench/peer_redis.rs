//! The Redis Streams peer: the same workload, measured the same way. One stream per partition
//! (`herald-bench:<run>:t<topic>:p<partition>`, no MAXLEN), a key's events always in the same
//! stream; producers pipeline `--batch` XADDs per round trip, each on its own connection;
//! consumers are `XREADGROUP` members of one Redis consumer group per bench group (the group is
//! created on every stream) that read up to `FETCH_MAX` entries per stream (`READ_ENTRIES_MAX` in
//! all) from every stream at once and XACK them in one pipelined round trip.
//!
//! Without `--redis-url` a `redis-server` of its own is started on a free loopback port with
//! snapshots and the append-only file off (so it never fsyncs), or with the append-only file on
//! and `--redis-appendfsync`'s policy; it is stopped at the end.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Value};
use tokio_util::sync::CancellationToken;

use super::measure::{self, BatchSender, Counters, FETCH_MAX, FETCH_WAIT, Received, Receiver, Schedule};
use super::report::{self, RunResult};
use super::{AppendFsync, Plan};

/// How long a spawned redis-server may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for one reply (a pipeline of `BATCH_MAX` XADDs on a loaded machine included).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Ports tried when a free port is taken before redis-server binds it.
const START_ATTEMPTS: usize = 3;
/// Most entries one XREADGROUP returns over all streams. Its COUNT applies per stream: it is
/// `FETCH_MAX` while the streams are few, and never below 1 (so with more than this many streams a
/// read may return one entry per stream).
const READ_ENTRIES_MAX: usize = 8 * FETCH_MAX;

/// The `redis-server` on PATH.
pub(super) fn find_server() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|d| d.join("redis-server")).find(|p| p.is_file()).ok_or_else(|| {
        anyhow!(
            "redis-server is not on PATH: install it (Debian: apt-get install redis-server) or point --redis-url at \
             a running Redis"
        )
    })
}

/// Runs the workload against Redis at `url`, or against a redis-server of its own.
pub(super) async fn run(url: Option<&str>, appendfsync: Option<AppendFsync>, plan: Arc<Plan>) -> Result<RunResult> {
    let spawned = match url {
        Some(_) => None,
        None => Some(SpawnedRedis::start(appendfsync).await?),
    };
    let url = match (&spawned, url) {
        (Some(s), _) => s.url(),
        (None, Some(u)) => u.to_owned(),
        (None, None) => unreachable!("a URL or a spawned server"),
    };
    let client = Client::open(url.as_str()).with_context(|| format!("invalid --redis-url {url:?}"))?;
    let mut admin = connect(&client).await.with_context(|| format!("cannot connect to Redis at {url}"))?;
    let (durability, note) = durability(&mut admin, spawned.is_some()).await;
    // streams[topic][partition]
    let streams: Vec<Vec<String>> = (0..plan.topics)
        .map(|t| (0..plan.partitions).map(|p| format!("herald-bench:{}:t{t}:p{p}", plan.run_id)).collect())
        .collect();
    let result = workload(&client, &mut admin, &streams, &plan).await;
    if spawned.is_none() {
        // A Redis of the user's keeps no bench data (a spawned one goes away whole).
        let all: Vec<&String> = streams.iter().flatten().collect();
        if let Err(e) = redis::cmd("UNLINK").arg(&all).query_async::<()>(&mut admin).await {
            eprintln!("warning: could not delete the bench streams: {e}");
        }
    }
    let (peak, peak_of) = match &spawned {
        Some(s) => (report::peak_memory(Some(s.child.id())), "the redis-server process's"),
        None => (used_memory_peak(&mut admin).await, "Redis's used_memory_peak (its allocator's, not the process's)"),
    };
    let target = if spawned.is_some() { format!("{url} (spawned)") } else { url };
    drop(spawned);
    let mut result = result?;
    result.target = target;
    result.durability = durability;
    result.durability_note = note;
    // A consumer group of Streams hands entries out with no order per key.
    result.ordering = "none".to_owned();
    result.peak_memory_bytes = peak;
    result.peak_memory_of = peak_of.to_owned();
    Ok(result)
}

async fn connect(client: &Client) -> redis::RedisResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(Duration::from_secs(5)));
    client.get_multiplexed_async_connection_with_config(&config).await
}

/// `used_memory_peak` from `INFO memory`.
async fn used_memory_peak(admin: &mut MultiplexedConnection) -> Option<u64> {
    let info: String = redis::cmd("INFO").arg("memory").query_async(admin).await.ok()?;
    info.lines().find_map(|l| l.strip_prefix("used_memory_peak:")).and_then(|v| v.trim().parse().ok())
}

/// What this Redis does to keep data, and a remark to print.
async fn durability(admin: &mut MultiplexedConnection, spawned: bool) -> (String, Option<String>) {
    let get = |name: &'static str| {
        let admin = admin.clone();
        async move {
            let mut admin = admin;
            redis::cmd("CONFIG")
                .arg("GET")
                .arg(name)
                .query_async::<HashMap<String, String>>(&mut admin)
                .await
                .ok()
                .and_then(|m| m.get(name).cloned())
        }
    };
    let appendonly = get("appendonly").await;
    let appendfsync = get("appendfsync").await;
    let whose = if spawned { "this redis-server (started by bench)" } else { "this Redis" };
    match (appendonly.as_deref(), appendfsync.as_deref()) {
        (Some("no"), _) => (
            "none (appendonly no)".into(),
            Some(format!(
                "{whose} does no fsync (appendonly no, snapshots {}): what it acknowledges lives in memory only. \
                 To match a durability, run with --redis-appendfsync always|everysec|no (the append-only file with \
                 that fsync policy).",
                if spawned { "off" } else { "as configured" }
            )),
        ),
        (Some("yes"), Some(policy)) => {
            let meaning = match policy {
                "always" => "fsync after each write, before replying (comparable to --durability always)",
                "everysec" => {
                    "fsync once a second: a crash can lose the last second (comparable to --durability interval)"
                }
                _ => "no fsync of its own, the OS writes back (comparable to --durability os)",
            };
            (
                format!("appendfsync {policy}"),
                Some(format!("{whose} runs with the append-only file, appendfsync {policy}: {meaning}.")),
            )
        }
        _ => ("unknown".into(), Some(format!("{whose} refused CONFIG GET; its durability is unknown."))),
    }
}

async fn workload(
    client: &Client,
    admin: &mut MultiplexedConnection,
    streams: &[Vec<String>],
    plan: &Arc<Plan>,
) -> Result<RunResult> {
    let all: Arc<[String]> = streams.iter().flatten().cloned().collect();
    let groups: Vec<String> = (0..plan.groups).map(|g| format!("bench-{}-g{g}", plan.run_id)).collect();
    for group in &groups {
        let mut pipe = redis::pipe();
        for s in all.iter() {
            pipe.cmd("XGROUP").arg("CREATE").arg(s).arg(group).arg("0").arg("MKSTREAM").ignore();
        }
        pipe.query_async::<()>(admin).await.with_context(|| format!("creating the consumer group {group}"))?;
    }
    let mut receivers = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        for c in 0..plan.consumers_per_group {
            let con = connect(client).await.context("connecting a consumer")?;
            receivers
                .push((g, RedisReceiver { con, group: group.clone(), name: format!("c{c}"), streams: all.clone() }));
        }
    }
    let mut senders = Vec::new();
    for i in 0..plan.producers {
        let con = connect(client).await.context("connecting a producer")?;
        senders.push(RedisSender {
            con,
            streams: streams.to_vec().into(),
            plan: plan.clone(),
            next_key: u64::from(i) * plan.keys / u64::from(plan.producers),
        });
    }
    let schedule = Schedule::starting_soon(plan.warmup, plan.duration);
    let counters = Arc::new(Counters::new(plan.groups as usize));
    let stop = CancellationToken::new();
    let consumers = receivers
        .into_iter()
        .map(|(g, r)| measure::spawn_consumer(r, g, schedule, counters.clone(), stop.clone()))
        .collect();
    let producers = senders
        .into_iter()
        .enumerate()
        .map(|(i, s)| measure::spawn_producer(s, i as u32, plan.clone(), schedule, counters.clone()))
        .collect();
    let measured = measure::finish("redis", plan, schedule, &counters, producers, consumers, stop).await?;
    Ok(RunResult::new("redis", String::new(), String::new(), None, plan, &counters, measured))
}

/// XREADGROUP's COUNT (per stream) when reading `streams` streams at once.
fn read_count(streams: usize) -> usize {
    (READ_ENTRIES_MAX / streams.max(1)).clamp(1, FETCH_MAX)
}

/// FNV-1a: which stream a key's events go to.
fn partition_of(key: &str, partitions: u32) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(partitions)) as usize
}

struct RedisSender {
    con: MultiplexedConnection,
    streams: Arc<[Vec<String>]>,
    plan: Arc<Plan>,
    next_key: u64,
}

impl BatchSender for RedisSender {
    async fn send(&mut self, seq: u64, stamp_ns: u64) -> Result<u64, String> {
        let topic = &self.streams[(seq % self.streams.len() as u64) as usize];
        let data = measure::payload(self.plan.payload_bytes, stamp_ns);
        let mut pipe = redis::pipe();
        for _ in 0..self.plan.batch {
            let n = self.next_key;
            self.next_key += 1;
            if self.plan.keys > 0 {
                let key = self.plan.key(n);
                let stream = &topic[partition_of(&key, self.plan.partitions)];
                pipe.cmd("XADD").arg(stream).arg("*").arg("k").arg(key).arg("d").arg(&data[..]);
            } else {
                let stream = &topic[(n % u64::from(self.plan.partitions)) as usize];
                pipe.cmd("XADD").arg(stream).arg("*").arg("d").arg(&data[..]);
            }
        }
        let ids: Vec<Value> = pipe.query_async(&mut self.con).await.map_err(|e| e.to_string())?;
        Ok(ids.len() as u64)
    }
}

struct RedisReceiver {
    con: MultiplexedConnection,
    group: String,
    name: String,
    streams: Arc<[String]>,
}

impl Receiver for RedisReceiver {
    async fn receive(&mut self, stamps: &mut Vec<u64>) -> Result<Received, String> {
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&self.group)
            .arg(&self.name)
            .arg("COUNT")
            .arg(read_count(self.streams.len()))
            .arg("BLOCK")
            .arg(FETCH_WAIT.as_millis() as u64)
            .arg("STREAMS")
            .arg(&*self.streams)
            .arg(vec![">"; self.streams.len()])
            .query_async(&mut self.con)
            .await
            .map_err(|e| e.to_string())?;
        let mut r = Received { at_ns: measure::now_ns(), redelivered: 0, ack_errors: 0, ack_error: None };
        let read = parse_read(reply, stamps).map_err(|e| format!("XREADGROUP reply: {e}"))?;
        r.ack_errors += read.foreign;
        if read.foreign > 0 {
            r.ack_error = Some(format!("{} entries without a send time", read.foreign));
        }
        if !read.ids.is_empty() {
            let mut pipe = redis::pipe();
            for (stream, ids) in &read.ids {
                pipe.cmd("XACK").arg(stream).arg(&self.group).arg(ids).ignore();
            }
            if let Err(e) = pipe.query_async::<()>(&mut self.con).await {
                r.ack_errors += 1;
                r.ack_error = Some(format!("XACK: {e}"));
            }
        }
        Ok(r)
    }

    async fn close(self) {}
}

/// What one XREADGROUP returned: entry ids per stream, and entries that were not ours.
#[derive(Debug, Default)]
struct Read {
    ids: Vec<(Vec<u8>, Vec<Vec<u8>>)>,
    foreign: u64,
}

fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// `[[key, value], …]` (RESP2) or a map (RESP3) as pairs.
fn pairs(v: Value) -> Result<Vec<(Value, Value)>, String> {
    match v {
        Value::Nil => Ok(Vec::new()),
        Value::Map(m) => Ok(m),
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::Array(kv) if kv.len() == 2 => {
                    let mut kv = kv.into_iter();
                    Ok((kv.next().unwrap_or(Value::Nil), kv.next().unwrap_or(Value::Nil)))
                }
                other => Err(format!("expected a [name, value] pair, got {other:?}")),
            })
            .collect(),
        other => Err(format!("expected an array or a map, got {other:?}")),
    }
}

/// Parses an XREADGROUP reply: pushes the send stamp of every entry into `stamps`.
fn parse_read(reply: Value, stamps: &mut Vec<u64>) -> Result<Read, String> {
    let mut read = Read::default();
    for (stream, entries) in pairs(reply)? {
        let stream = bytes(&stream).ok_or("a stream name is not a string")?.to_vec();
        let mut ids = Vec::new();
        for (id, fields) in pairs(entries)? {
            ids.push(bytes(&id).ok_or("an entry id is not a string")?.to_vec());
            let fields = match fields {
                Value::Array(f) => f,
                Value::Map(m) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
                _ => Vec::new(),
            };
            let data = fields.chunks(2).find(|kv| bytes(&kv[0]) == Some(b"d")).and_then(|kv| kv.get(1));
            match data.and_then(bytes).and_then(measure::stamp) {
                Some(s) => stamps.push(s),
                None => read.foreign += 1,
            }
        }
        if !ids.is_empty() {
            read.ids.push((stream, ids));
        }
    }
    Ok(read)
}

/// A redis-server started for the run; killed when dropped.
struct SpawnedRedis {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl SpawnedRedis {
    async fn start(appendfsync: Option<AppendFsync>) -> Result<SpawnedRedis> {
        let exe = find_server()?;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix("herald-bench-redis-")
                .tempdir()
                .context("creating a directory for redis-server")?;
            // The port is free now; if another process takes it first, redis-server exits and
            // the next attempt picks another.
            let port =
                TcpListener::bind(("127.0.0.1", 0)).and_then(|l| l.local_addr()).context("finding a free port")?.port();
            let mut cmd = Command::new(&exe);
            cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--daemonize", "no"])
                .arg("--dir")
                .arg(dir.path())
                .arg("--logfile")
                .arg(dir.path().join("redis.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            match appendfsync {
                None => cmd.args(["--appendonly", "no"]),
                Some(policy) => cmd.args(["--appendonly", "yes", "--appendfsync", policy.as_str()]),
            };
            let child = cmd.spawn().with_context(|| format!("starting {}", exe.display()))?;
            let mut server = SpawnedRedis { child, port, dir };
            match server.wait_ready().await {
                Ok(()) => return Ok(server),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("redis-server did not start")))
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let client = Client::open(self.url())?;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("redis-server exited ({status}) before answering; its log: {}", self.log_tail());
            }
            if let Ok(mut con) = connect(&client).await
                && redis::cmd("PING").query_async::<String>(&mut con).await.is_ok()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "redis-server did not answer on port {} within {START_TIMEOUT:?}; its log: {}",
                    self.port,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().rev().take(5).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }
}

impl Drop for SpawnedRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    #[test]
    fn reads_parse_in_resp2_and_resp3() {
        let entry = |id: &[u8], stamp: u64| {
            Value::Array(vec![
                bulk(id),
                Value::Array(vec![bulk(b"k"), bulk(b"k1"), bulk(b"d"), bulk(&measure::payload(16, stamp))]),
            ])
        };
        let resp2 = Value::Array(vec![
            Value::Array(vec![bulk(b"s0"), Value::Array(vec![entry(b"1-0", 7), entry(b"1-1", 8)])]),
            Value::Array(vec![bulk(b"s1"), Value::Array(vec![entry(b"2-0", 9)])]),
        ]);
        let mut stamps = Vec::new();
        let read = parse_read(resp2, &mut stamps).unwrap();
        assert_eq!(stamps, [7, 8, 9]);
        assert_eq!(
            read.ids,
            [(b"s0".to_vec(), vec![b"1-0".to_vec(), b"1-1".to_vec()]), (b"s1".to_vec(), vec![b"2-0".to_vec()])]
        );
        assert_eq!(read.foreign, 0);

        let resp3 = Value::Map(vec![(bulk(b"s0"), Value::Array(vec![entry(b"3-0", 10)]))]);
        stamps.clear();
        assert_eq!(parse_read(resp3, &mut stamps).unwrap().ids.len(), 1);
        assert_eq!(stamps, [10]);

        stamps.clear();
        let nothing = parse_read(Value::Nil, &mut stamps).unwrap();
        assert!(nothing.ids.is_empty() && stamps.is_empty());
    }

    #[test]
    fn entries_that_are_not_ours_are_counted_and_acked() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk(b"s0"),
            Value::Array(vec![Value::Array(vec![bulk(b"1-0"), Value::Array(vec![bulk(b"d"), bulk(b"short")])])]),
        ])]);
        let mut stamps = Vec::new();
        let read = parse_read(reply, &mut stamps).unwrap();
        assert_eq!((read.foreign, read.ids.len()), (1, 1));
        assert!(parse_read(Value::Int(3), &mut stamps).is_err());
    }

    #[test]
    fn one_read_returns_at_most_read_entries_max() {
        for (streams, count) in [(1, 1000), (8, 1000), (9, 888), (100, 80), (8000, 1), (102_400, 1)] {
            assert_eq!(read_count(streams), count, "{streams} streams");
            assert!(streams * count <= READ_ENTRIES_MAX || count == 1);
        }
    }

    #[test]
    fn a_key_always_goes_to_the_same_stream() {
        let spread: std::collections::HashSet<usize> = (0..1000).map(|i| partition_of(&format!("k{i}"), 8)).collect();
        assert_eq!(spread.len(), 8);
        assert_eq!(partition_of("k42", 8), partition_of("k42", 8));
    }
}
