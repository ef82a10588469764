//! The client commands: topic, publish, consume, group, dlq. Each connects with `--url`, does its
//! work through the SDK (`herald::Backend`), prints a table (or JSON with `--json`) and closes
//! the client, so that a `file://` broker is closed cleanly.

use std::future::Future;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use herald::{Client, Event, GroupInfo, StartFrom, SubscribeOptions, Timestamp, TopicConfig, TopicInfo};
use herald_core::codec::json::to_json_value;
use herald_model::Durability;
use herald_model::dead_letter::headers as dlq_headers;
use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

use crate::Global;

/// Lines `publish -` reads before handing them to the producer as one batch.
pub const STDIN_BATCH_LINES: usize = 500;
/// Longest stdin line `publish -` accepts, in bytes (the default largest event).
pub const STDIN_LINE_BYTES_MAX: usize = 1 << 20;
/// Most dead letters `dlq list` returns (the server's default `max_read_events`).
pub const DLQ_LIST_MAX: usize = 10_000;
/// Dead letters read per request while `dlq show` searches for an id.
const DLQ_SCAN_PAGE: usize = 1_000;
/// Most events `consume` holds unacknowledged (and so fetches at once).
pub const CONSUME_IN_FLIGHT_MAX: usize = 256;
/// fsync interval of `--durability interval` without `:MS`.
const DURABILITY_INTERVAL_MS_DEFAULT: u64 = 100;

// ---------------------------------------------------------------------------------------------
// Arguments

#[derive(Debug, clap::Subcommand)]
pub enum TopicCmd {
    /// Creates a topic (succeeds without change if it exists with the same settings).
    Create(TopicCreateArgs),
    /// Lists topics with their partitions and stored events.
    List,
    /// Shows a topic's settings and each partition's earliest and latest offsets and size.
    Describe {
        /// The topic.
        name: String,
    },
    /// Deletes a topic and every event in it.
    Delete {
        /// The topic.
        name: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct TopicCreateArgs {
    /// The topic: 1 to 200 characters from A-Z a-z 0-9 . _ -
    pub name: String,
    /// Number of partitions (events of one key always go to the same partition).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub partitions: u32,
    /// Delete whole segments older than this many milliseconds [default: keep forever].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub retention_ms: Option<u64>,
    /// When a publish is acknowledged: `always` (fsync first), `interval` or `interval:MS`
    /// (fsync every MS ms, 100 by default), `os` (leave it to the operating system).
    #[arg(long, default_value = "always", value_parser = parse_durability)]
    pub durability: Durability,
}

#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// The topic.
    pub topic: String,
    /// Partition key: events of one key are stored and delivered in order.
    #[arg(long)]
    pub key: Option<String>,
    /// The event type.
    #[arg(long = "type", value_name = "TYPE", default_value = "herald.cli")]
    pub ty: String,
    /// The event source (a URI-reference) [default: /herald].
    #[arg(long)]
    pub source: Option<String>,
    /// A header (extension attribute), NAME=VALUE with NAME of 1 to 20 characters a-z 0-9;
    /// repeat for several.
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// The data: JSON if it parses as JSON (application/json), text otherwise (text/plain).
    /// With `-`, one event per line of stdin (empty lines are skipped).
    pub data: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    /// Topics to receive.
    #[arg(required = true)]
    pub topics: Vec<String>,
    /// The consumer group (created if it does not exist).
    #[arg(long)]
    pub group: String,
    /// Where a new group starts; an existing group continues where it stands.
    #[arg(long, value_enum, default_value = "earliest")]
    pub from: From,
    /// Stop after this many events.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max: Option<u64>,
    /// Stop when nothing arrives for this many milliseconds [default: wait until Ctrl-C].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub wait_ms: Option<u64>,
}

/// Where a new group starts.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum From {
    /// The earliest stored event.
    Earliest,
    /// Only events published from now on.
    Latest,
}

#[derive(Debug, clap::Subcommand)]
pub enum GroupCmd {
    /// Lists consumer groups with their members and lag.
    List,
    /// Shows a group's members and, per partition, committed and latest offsets and lag.
    Describe {
        /// The group.
        group: String,
    },
    /// Moves every position of a group (which must have no members) to earliest, latest or a time.
    Reset {
        /// The group.
        group: String,
        /// `earliest`, `latest` or an RFC 3339 time such as 2025-01-31T12:00:00Z.
        #[arg(long, value_parser = parse_reset_to)]
        to: StartFrom,
    },
    /// Steps a group over damaged data at its position in one partition (its reads there fail
    /// with `corrupt`). The stored bytes are kept in the group's DLQ as a `herald.damaged` dead
    /// letter; the group continues at the first readable offset after the damage.
    SkipDamaged {
        /// The group.
        group: String,
        /// The topic.
        #[arg(long)]
        topic: String,
        /// The partition.
        #[arg(long)]
        partition: u32,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum DlqCmd {
    /// Lists a group's dead letters, oldest first.
    List {
        /// The group.
        #[arg(long)]
        group: String,
        /// Most dead letters shown.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=DLQ_LIST_MAX as u64))]
        max: u64,
    },
    /// Prints one dead letter as CloudEvents JSON, with its dlq* headers.
    Show {
        /// The group.
        #[arg(long)]
        group: String,
        /// The dead letter's event id.
        id: String,
    },
    /// Sends a group's dead letters back to that group only, then empties its DLQ.
    Replay {
        /// The group.
        #[arg(long)]
        group: String,
    },
    /// Deletes every dead letter of a group.
    Purge {
        /// The group.
        #[arg(long)]
        group: String,
    },
}

fn parse_durability(s: &str) -> Result<Durability, String> {
    match s {
        "always" => Ok(Durability::Always),
        "os" => Ok(Durability::Os),
        "interval" => Ok(Durability::Interval { ms: DURABILITY_INTERVAL_MS_DEFAULT }),
        _ => match s.strip_prefix("interval:").map(str::parse::<u64>) {
            Some(Ok(ms)) if ms > 0 => Ok(Durability::Interval { ms }),
            _ => Err(format!("{s:?} is not a durability; use always, interval, interval:MS (MS > 0) or os")),
        },
    }
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("{s:?} is not NAME=VALUE; e.g. --header tenant=acme")),
    }
}

fn parse_reset_to(s: &str) -> Result<StartFrom, String> {
    match s {
        "earliest" => Ok(StartFrom::Earliest),
        "latest" => Ok(StartFrom::Latest),
        _ => Timestamp::parse_rfc3339(s).map(|t| StartFrom::Timestamp(t.as_unix_millis())).map_err(|e| {
            format!("{s:?} is neither earliest, latest nor an RFC 3339 time like 2025-01-31T12:00:00Z ({e})")
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Plumbing

/// Connects, runs `body`, and closes the client whatever happened (a `file://` broker must be
/// closed to be reopened cleanly).
pub(crate) async fn with_client<T, F, Fut>(g: &Global, body: F) -> Result<T>
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let client = herald::connect_with(&g.url, g.connect_options()).await?;
    let result = body(client.clone()).await;
    let closed = client.close().await;
    let value = result?;
    closed.context("closing the connection")?;
    Ok(value)
}

/// Prints a JSON value on one line.
pub(crate) fn print_json(v: &Value) {
    println!("{v}");
}

/// Prints an aligned table; numeric columns are right-aligned.
pub(crate) fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let numeric: Vec<bool> = (0..headers.len())
        .map(|i| !rows.is_empty() && rows.iter().all(|r| r.get(i).is_some_and(|c| c.parse::<f64>().is_ok())))
        .collect();
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(
                |(i, c)| if numeric[i] { format!("{c:>w$}", w = widths[i]) } else { format!("{c:<w$}", w = widths[i]) },
            )
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// Cuts `s` to `max` characters for a table cell.
fn cell(s: &str, max: usize) -> String {
    if s.chars().count() <= max { s.to_owned() } else { format!("{}…", s.chars().take(max - 1).collect::<String>()) }
}

fn durability_text(d: Durability) -> String {
    match d {
        Durability::Always => "always".into(),
        Durability::Interval { ms } => format!("interval:{ms}"),
        Durability::Os => "os".into(),
    }
}

fn start_text(s: StartFrom) -> String {
    match s {
        StartFrom::Earliest => "earliest".into(),
        StartFrom::Latest => "latest".into(),
        StartFrom::Timestamp(ms) => Timestamp::from_unix_nanos(ms.saturating_mul(1_000_000)).to_rfc3339(),
    }
}

fn topic_json(t: &TopicInfo) -> Value {
    json!({
        "name": t.name,
        "config": t.config,
        "created": Timestamp::from_unix_nanos(t.created_ms.saturating_mul(1_000_000)).to_rfc3339(),
        "partitions": t.partitions.iter().map(|p| json!({
            "partition": p.partition,
            "earliest_offset": p.earliest_offset,
            "latest_offset": p.latest_offset,
            "events": p.latest_offset - p.earliest_offset.min(p.latest_offset),
            "bytes": p.bytes,
            "segments": p.segments,
            "problem": p.problem,
        })).collect::<Vec<_>>(),
    })
}

fn topic_events(t: &TopicInfo) -> u64 {
    t.partitions.iter().map(|p| p.latest_offset.saturating_sub(p.earliest_offset)).sum()
}

fn group_json(g: &GroupInfo) -> Value {
    json!({
        "name": g.name,
        "config": g.config,
        "generation": g.generation,
        "members": g.members,
        "lag": g.partitions.iter().map(|p| p.lag).sum::<u64>(),
        "partitions": g.partitions.iter().map(|p| json!({
            "topic": p.topic,
            "partition": p.partition,
            "owner": p.owner,
            "committed": p.committed,
            "latest": p.latest,
            "lag": p.lag,
            "in_flight": p.in_flight,
        })).collect::<Vec<_>>(),
    })
}

fn print_group(g: &GroupInfo) {
    println!(
        "group {}  generation {}  topics {}  start {}  ordering {}",
        g.name,
        g.generation,
        g.config.topics.join(","),
        start_text(g.config.start),
        serde_json::to_value(g.config.ordering).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
    );
    if g.members.is_empty() {
        println!("members (0)");
    } else {
        println!("members ({}): {}", g.members.len(), g.members.join(", "));
    }
    let rows: Vec<Vec<String>> = g
        .partitions
        .iter()
        .map(|p| {
            vec![
                p.topic.clone(),
                p.partition.to_string(),
                p.owner.clone().unwrap_or_else(|| "-".into()),
                p.committed.to_string(),
                p.latest.to_string(),
                p.lag.to_string(),
                p.in_flight.to_string(),
            ]
        })
        .collect();
    print_table(&["TOPIC", "PARTITION", "OWNER", "COMMITTED", "LATEST", "LAG", "IN_FLIGHT"], &rows);
    println!("total lag {}", g.partitions.iter().map(|p| p.lag).sum::<u64>());
}

// ---------------------------------------------------------------------------------------------
// topic

pub async fn topic(g: &Global, c: TopicCmd) -> Result<()> {
    let json = g.json;
    with_client(g, |client| async move {
        let b = client.backend();
        match c {
            TopicCmd::Create(a) => {
                let config = TopicConfig {
                    partitions: a.partitions,
                    retention_ms: a.retention_ms,
                    durability: a.durability,
                    ..TopicConfig::default()
                };
                if b.list_topics().await?.contains(&a.name) {
                    let existing = b.describe_topic(&a.name).await?;
                    let same = existing.config.partitions == config.partitions
                        && existing.config.retention_ms == config.retention_ms
                        && existing.config.durability == config.durability;
                    if !same {
                        bail!(
                            "topic {:?} exists already with {} partitions, retention_ms {:?}, durability {}; \
                             delete it first or use those settings",
                            a.name,
                            existing.config.partitions,
                            existing.config.retention_ms,
                            durability_text(existing.config.durability)
                        );
                    }
                }
                b.ensure_topic(&a.name, config).await?;
                let info = b.describe_topic(&a.name).await?;
                if json {
                    print_json(&topic_json(&info));
                } else {
                    println!(
                        "topic {}: {} partitions, durability {}, retention {}",
                        info.name,
                        info.partitions.len(),
                        durability_text(info.config.durability),
                        info.config.retention_ms.map_or("forever".into(), |ms| format!("{ms} ms"))
                    );
                }
            }
            TopicCmd::List => {
                let names = b.list_topics().await?;
                let mut infos = Vec::with_capacity(names.len());
                for n in &names {
                    // A topic deleted between the two calls is simply left out.
                    match b.describe_topic(n).await {
                        Ok(info) => infos.push(info),
                        Err(e) if e.kind() == herald::ErrorKind::NotFound => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                if json {
                    let list: Vec<Value> = infos
                        .iter()
                        .map(|t| json!({"name": t.name, "partitions": t.partitions.len(), "events": topic_events(t)}))
                        .collect();
                    print_json(&Value::Array(list));
                } else if infos.is_empty() {
                    println!("no topics; create one with `herald topic create NAME --partitions N`");
                } else {
                    let rows: Vec<Vec<String>> = infos
                        .iter()
                        .map(|t| vec![t.name.clone(), t.partitions.len().to_string(), topic_events(t).to_string()])
                        .collect();
                    print_table(&["TOPIC", "PARTITIONS", "EVENTS"], &rows);
                }
            }
            TopicCmd::Describe { name } => {
                let info = b.describe_topic(&name).await?;
                if json {
                    print_json(&topic_json(&info));
                } else {
                    let c = &info.config;
                    println!(
                        "topic {}  partitions {}  durability {}  retention_ms {}  retention_bytes {}  \
                         max_event_bytes {}  dedupe_window_ms {}",
                        info.name,
                        info.partitions.len(),
                        durability_text(c.durability),
                        c.retention_ms.map_or("-".into(), |v| v.to_string()),
                        c.retention_bytes.map_or("-".into(), |v| v.to_string()),
                        c.max_event_bytes,
                        c.dedupe_window_ms
                    );
                    let rows: Vec<Vec<String>> = info
                        .partitions
                        .iter()
                        .map(|p| {
                            vec![
                                p.partition.to_string(),
                                p.earliest_offset.to_string(),
                                p.latest_offset.to_string(),
                                p.latest_offset.saturating_sub(p.earliest_offset).to_string(),
                                p.bytes.to_string(),
                                p.segments.to_string(),
                                p.problem.clone().unwrap_or_else(|| "ok".into()),
                            ]
                        })
                        .collect();
                    print_table(&["PARTITION", "EARLIEST", "LATEST", "EVENTS", "BYTES", "SEGMENTS", "STATE"], &rows);
                }
            }
            TopicCmd::Delete { name } => {
                b.delete_topic(&name).await?;
                if json {
                    print_json(&json!({ "deleted": name }));
                } else {
                    println!("deleted topic {name}");
                }
            }
        }
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// publish

/// Builds one event of `data` with the command's attributes.
fn build_event(a: &PublishArgs, data: Option<&[u8]>) -> Result<Event> {
    let mut b = Event::builder(a.ty.clone());
    if let Some(s) = &a.source {
        b = b.source(s.clone());
    }
    if let Some(k) = &a.key {
        b = b.key(k.clone());
    }
    for (name, value) in &a.headers {
        b = b.header(name.clone(), value.clone());
    }
    if let Some(d) = data.filter(|d| !d.is_empty()) {
        let content_type = if serde_json::from_slice::<serde::de::IgnoredAny>(d).is_ok() {
            "application/json"
        } else if std::str::from_utf8(d).is_ok() {
            "text/plain"
        } else {
            "application/octet-stream"
        };
        b = b.data(d.to_vec(), content_type);
    }
    Ok(b.build()?)
}

fn receipt_json(r: &herald::Receipt, id: &str) -> Value {
    json!({"topic": &*r.topic, "partition": r.partition, "offset": r.offset, "duplicate": r.duplicate, "id": id})
}

/// What one call to [`read_line_limited`] found.
enum Line {
    Text(Vec<u8>),
    Eof,
}

/// Reads one line of at most `max` bytes (without its `\n` or `\r\n`); a longer line is an error
/// before it is held in memory in full.
async fn read_line_limited<R: AsyncBufRead + Unpin>(r: &mut R, max: usize, number: u64) -> Result<Line> {
    let mut buf = Vec::new();
    let n = (&mut *r).take(max as u64 + 2).read_until(b'\n', &mut buf).await.context("reading stdin")?;
    if n == 0 {
        return Ok(Line::Eof);
    }
    let complete = buf.last() == Some(&b'\n');
    if complete {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
    if buf.len() > max {
        bail!(
            "stdin line {number} is longer than {max} bytes (STDIN_LINE_BYTES_MAX); split it or publish it as a file"
        );
    }
    Ok(Line::Text(buf))
}

pub async fn publish(g: &Global, a: PublishArgs) -> Result<()> {
    let json = g.json;
    if a.data.as_deref() != Some("-") {
        // Fail on a bad event before connecting.
        let event = build_event(&a, a.data.as_deref().map(str::as_bytes))?;
        return with_client(g, |client| async move {
            let id = event.id().to_owned();
            let r = client.producer().publish(&a.topic, event).await?;
            if json {
                print_json(&receipt_json(&r, &id));
            } else {
                let dup = if r.duplicate { " (duplicate: stored before)" } else { "" };
                println!("published {id} to {} partition {} offset {}{dup}", r.topic, r.partition, r.offset);
            }
            Ok(())
        })
        .await;
    }
    build_event(&a, None)?; // check the attributes once before reading anything
    with_client(g, |client| async move {
        let producer = client.producer();
        let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
        let (mut line_no, mut published, mut duplicates) = (0u64, 0u64, 0u64);
        let mut eof = false;
        while !eof {
            let mut batch = Vec::with_capacity(STDIN_BATCH_LINES);
            while batch.len() < STDIN_BATCH_LINES {
                line_no += 1;
                match read_line_limited(&mut stdin, STDIN_LINE_BYTES_MAX, line_no).await? {
                    Line::Eof => {
                        eof = true;
                        break;
                    }
                    Line::Text(t) if t.is_empty() => {}
                    Line::Text(t) => {
                        batch.push(build_event(&a, Some(&t)).with_context(|| format!("stdin line {line_no}"))?)
                    }
                }
            }
            if batch.is_empty() {
                continue;
            }
            let ids: Vec<String> = batch.iter().map(|e| e.id().to_owned()).collect();
            let receipts = producer
                .publish_all(&a.topic, batch)
                .await
                .with_context(|| format!("publishing to {:?} after {published} events", a.topic))?;
            for (r, id) in receipts.iter().zip(&ids) {
                if json {
                    print_json(&receipt_json(r, id));
                }
                published += 1;
                duplicates += u64::from(r.duplicate);
            }
        }
        if !json {
            let dup = if duplicates > 0 { format!(" ({duplicates} duplicates, stored before)") } else { String::new() };
            println!("published {published} events to {}{dup}", a.topic);
        }
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// consume

/// The event as CloudEvents JSON plus where it was delivered from. (`topic`, `partition`,
/// `offset` and `attempt` shadow headers of those names.)
fn delivery_json(m: &herald::Message) -> Value {
    let mut v = to_json_value(&m.event);
    if let Some(o) = v.as_object_mut() {
        o.insert("topic".into(), json!(&*m.topic));
        o.insert("partition".into(), json!(m.partition));
        o.insert("offset".into(), json!(m.offset));
        o.insert("attempt".into(), json!(m.attempt));
    }
    v
}

/// A read that met damaged data says how to step over it.
fn damage_hint(e: herald::Error, group: &str) -> anyhow::Error {
    if matches!(e.code(), herald::Code::Corrupt | herald::Code::CorruptEvent) {
        anyhow::anyhow!(
            "{e}\nThe group cannot pass damaged data by itself. To step over it (its stored bytes are kept in the \
             group's DLQ): herald group skip-damaged {group} --topic TOPIC --partition N (the partition named above)"
        )
    } else {
        e.into()
    }
}

pub async fn consume(g: &Global, a: ConsumeArgs) -> Result<()> {
    let json = g.json;
    with_client(g, |client| async move {
        let max = a.max.unwrap_or(u64::MAX);
        let options = SubscribeOptions {
            topics: a.topics.clone(),
            start: match a.from {
                From::Earliest => StartFrom::Earliest,
                From::Latest => StartFrom::Latest,
            },
            max_in_flight: CONSUME_IN_FLIGHT_MAX.min(usize::try_from(max).unwrap_or(usize::MAX)) as u32,
            ..SubscribeOptions::default()
        };
        let sub = client.backend().subscribe(&a.group, options).await?;
        let idle_max = a.wait_ms.map(Duration::from_millis);
        let mut last_event = Instant::now();
        let mut consumed = 0u64;
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        let mut out = std::io::stdout();
        let result: Result<()> = async {
            'outer: while consumed < max {
                let mut wait = Duration::from_secs(1);
                if let Some(idle) = idle_max {
                    let left = idle.saturating_sub(last_event.elapsed());
                    if left.is_zero() {
                        break;
                    }
                    wait = wait.min(left);
                }
                let want = usize::try_from(max - consumed).unwrap_or(usize::MAX).min(CONSUME_IN_FLIGHT_MAX);
                let messages = tokio::select! {
                    _ = &mut ctrl_c => break,
                    r = sub.fetch(want, wait) => r.map_err(|e| damage_hint(e, &a.group))?,
                };
                if !messages.is_empty() {
                    last_event = Instant::now();
                }
                for m in &messages {
                    // Printing is this consumer's handler: its process span (tracing on).
                    let (t, e) = (&m.topic, &m.event);
                    let span = herald::telemetry::Spans::process(t, e, m.partition, m.offset, &a.group, m.attempt);
                    let line = delivery_json(m);
                    // Printed before acked: a failed write leaves the event unacked (redelivered).
                    match writeln!(out, "{line}").and_then(|()| out.flush()) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break 'outer,
                        Err(e) => return Err(e).context("writing to stdout"),
                    }
                    sub.ack(m).await.with_context(|| format!("acking {}/{}@{}", m.topic, m.partition, m.offset))?;
                    if let Some(span) = span {
                        span.end();
                    }
                    consumed += 1;
                }
            }
            Ok(())
        }
        .await;
        let closed = sub.close().await;
        result?;
        closed.context("leaving the group")?;
        if !json {
            eprintln!("consumed {consumed} events in group {}", a.group);
        }
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// group

pub async fn group(g: &Global, c: GroupCmd) -> Result<()> {
    let json = g.json;
    with_client(g, |client| async move {
        let b = client.backend();
        match c {
            GroupCmd::List => {
                let names = b.list_groups().await?;
                let mut infos = Vec::with_capacity(names.len());
                for n in &names {
                    match b.describe_group(n).await {
                        Ok(info) => infos.push(info),
                        Err(e) if e.kind() == herald::ErrorKind::NotFound => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                let lag = |g: &GroupInfo| g.partitions.iter().map(|p| p.lag).sum::<u64>();
                if json {
                    let list: Vec<Value> = infos
                        .iter()
                        .map(|g| {
                            json!({"name": g.name, "topics": g.config.topics, "members": g.members.len(), "lag": lag(g)})
                        })
                        .collect();
                    print_json(&Value::Array(list));
                } else if infos.is_empty() {
                    println!("no consumer groups; `herald consume TOPIC --group NAME` creates one");
                } else {
                    let rows: Vec<Vec<String>> = infos
                        .iter()
                        .map(|g| {
                            vec![g.name.clone(), g.config.topics.join(","), g.members.len().to_string(), lag(g).to_string()]
                        })
                        .collect();
                    print_table(&["GROUP", "TOPICS", "MEMBERS", "LAG"], &rows);
                }
            }
            GroupCmd::Describe { group } => {
                let info = b.describe_group(&group).await?;
                if json {
                    print_json(&group_json(&info));
                } else {
                    print_group(&info);
                }
            }
            GroupCmd::SkipDamaged { group, topic, partition } => {
                let s = b.skip_damaged(&group, &topic, partition).await?;
                if json {
                    print_json(&json!({
                        "topic": s.topic, "partition": s.partition, "from": s.from, "to": s.to,
                        "reason": s.reason, "dlq_offset": s.dlq_offset, "bytes_kept": s.bytes_kept,
                    }));
                } else {
                    let id = herald_model::dead_letter::damaged_letter_id(&s.topic, s.partition, s.from, s.to);
                    println!(
                        "group {group} stepped over damaged offsets {}..{} of {}/{} ({}); the {} stored bytes are \
                         kept in its DLQ: herald dlq show --group {group} {id}",
                        s.from, s.to, s.topic, s.partition, s.reason, s.bytes_kept
                    );
                }
            }
            GroupCmd::Reset { group, to } => {
                let info = b.reset_group(&group, to).await?;
                if json {
                    print_json(&group_json(&info));
                } else {
                    println!("reset group {group} to {}", start_text(to));
                    print_group(&info);
                }
            }
        }
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// dlq

fn letter_json(dlq_offset: u64, e: &Event) -> Value {
    let h = |name: &str| e.header(name).map(str::to_owned);
    json!({
        "dlq_offset": dlq_offset,
        "id": e.id(),
        "type": e.ty(),
        "key": e.key(),
        "reason": h(dlq_headers::REASON),
        "attempts": e.header(dlq_headers::ATTEMPTS).and_then(|a| a.parse::<u64>().ok()),
        "origin": {
            "topic": h(dlq_headers::TOPIC),
            "partition": e.header(dlq_headers::PARTITION).and_then(|a| a.parse::<u64>().ok()),
            "offset": e.header(dlq_headers::OFFSET).and_then(|a| a.parse::<u64>().ok()),
        },
    })
}

fn origin_text(e: &Event) -> String {
    let h = |name| e.header(name).unwrap_or("?");
    format!("{}/{}@{}", h(dlq_headers::TOPIC), h(dlq_headers::PARTITION), h(dlq_headers::OFFSET))
}

/// Finds a dead letter by event id, reading the group's DLQ topic (`<group>.dlq`, one partition)
/// `page` events at a time.
async fn find_dead_letter(client: &Client, group: &str, id: &str, page: usize) -> Result<Option<(u64, Event)>> {
    let b = client.backend();
    b.describe_group(group).await?;
    // The first dead letter in view says where the DLQ starts (replayed and purged letters
    // before it stay in the topic's log until their segment is deleted).
    let Some(first) = b.dead_letters(group, 1).await?.into_iter().next() else { return Ok(None) };
    let dlq_topic = herald_model::dead_letter::dlq_topic(group);
    let info = b.describe_topic(&dlq_topic).await?;
    let Some(p) = info.partitions.first() else { return Ok(None) };
    let mut next = first.dlq_offset;
    while next < p.latest_offset {
        let events = b.read(&dlq_topic, 0, next, page).await?;
        let Some(last) = events.last() else { break };
        next = last.offset + 1;
        if let Some(s) = events.into_iter().find(|s| s.event.id() == id) {
            return Ok(Some((s.offset, s.event)));
        }
    }
    Ok(None)
}

pub async fn dlq(g: &Global, c: DlqCmd) -> Result<()> {
    let json = g.json;
    with_client(g, |client| async move {
        let b = client.backend();
        match c {
            DlqCmd::List { group, max } => {
                let letters = b.dead_letters(&group, max as usize).await?;
                if json {
                    print_json(&Value::Array(letters.iter().map(|d| letter_json(d.dlq_offset, &d.event)).collect()));
                } else if letters.is_empty() {
                    println!("no dead letters in group {group}");
                } else {
                    let rows: Vec<Vec<String>> = letters
                        .iter()
                        .map(|d| {
                            let e = &d.event;
                            vec![
                                e.id().to_owned(),
                                cell(e.ty(), 30),
                                cell(e.header(dlq_headers::REASON).unwrap_or("?"), 60),
                                e.header(dlq_headers::ATTEMPTS).unwrap_or("?").to_owned(),
                                origin_text(e),
                            ]
                        })
                        .collect();
                    print_table(&["ID", "TYPE", "REASON", "ATTEMPTS", "ORIGIN"], &rows);
                    if letters.len() as u64 == max {
                        println!("(showing the first {max}; use --max for more)");
                    }
                }
            }
            DlqCmd::Show { group, id } => {
                let (offset, event) =
                    find_dead_letter(&client, &group, &id, DLQ_SCAN_PAGE).await?.ok_or_else(|| {
                        anyhow!(
                            "no dead letter with id {id:?} in group {group:?}; see `herald dlq list --group {group}`"
                        )
                    })?;
                let mut v = to_json_value(&event);
                if let Some(o) = v.as_object_mut() {
                    o.insert("dlq_offset".into(), json!(offset));
                }
                if json {
                    print_json(&v);
                } else {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                }
            }
            DlqCmd::Replay { group } => {
                let spinner = indicatif::ProgressBar::new_spinner();
                spinner.set_message(format!("replaying the dead letters of {group}…"));
                spinner.enable_steady_tick(Duration::from_millis(100));
                let replayed = b.dlq_replay(&group).await;
                spinner.finish_and_clear();
                let replayed = replayed?;
                if json {
                    print_json(&json!({"group": group, "replayed": replayed}));
                } else {
                    println!("replayed {replayed} dead letters to group {group} (other groups do not see them)");
                }
            }
            DlqCmd::Purge { group } => {
                let purged = b.dlq_purge(&group).await?;
                if json {
                    print_json(&json!({"group": group, "purged": purged}));
                } else {
                    println!("purged {purged} dead letters of group {group}");
                }
            }
        }
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durability() {
        assert_eq!(parse_durability("always"), Ok(Durability::Always));
        assert_eq!(parse_durability("os"), Ok(Durability::Os));
        assert_eq!(parse_durability("interval"), Ok(Durability::Interval { ms: DURABILITY_INTERVAL_MS_DEFAULT }));
        assert_eq!(parse_durability("interval:250"), Ok(Durability::Interval { ms: 250 }));
        for bad in ["interval:0", "interval:x", "sometimes", ""] {
            assert!(parse_durability(bad).unwrap_err().contains("always, interval"), "{bad}");
        }
    }

    #[test]
    fn parses_headers() {
        assert_eq!(parse_header("tenant=acme"), Ok(("tenant".into(), "acme".into())));
        assert_eq!(parse_header("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_header("a="), Ok(("a".into(), String::new())));
        assert!(parse_header("tenant").unwrap_err().contains("NAME=VALUE"));
        assert!(parse_header("=x").unwrap_err().contains("NAME=VALUE"));
    }

    #[test]
    fn parses_reset_targets() {
        assert_eq!(parse_reset_to("earliest"), Ok(StartFrom::Earliest));
        assert_eq!(parse_reset_to("latest"), Ok(StartFrom::Latest));
        assert_eq!(parse_reset_to("1970-01-01T00:00:01.5Z"), Ok(StartFrom::Timestamp(1500)));
        assert_eq!(parse_reset_to("2025-01-01T01:00:00+01:00"), Ok(StartFrom::Timestamp(1_735_689_600_000)));
        assert!(parse_reset_to("yesterday").unwrap_err().contains("RFC 3339"));
    }

    #[tokio::test]
    async fn stdin_lines_are_limited() {
        let input = b"short\r\n\nexactly10!\n12345678901\nlast".to_vec();
        let mut r = tokio::io::BufReader::new(&input[..]);
        assert!(matches!(read_line_limited(&mut r, 10, 1).await.unwrap(), Line::Text(t) if t == b"short"));
        assert!(matches!(read_line_limited(&mut r, 10, 2).await.unwrap(), Line::Text(t) if t.is_empty()));
        assert!(matches!(read_line_limited(&mut r, 10, 3).await.unwrap(), Line::Text(t) if t == b"exactly10!"));
        let err = read_line_limited(&mut r, 10, 4).await.err().expect("an 11-byte line is over the limit").to_string();
        assert!(err.contains("stdin line 4 is longer than 10 bytes"), "{err}");
    }

    #[tokio::test]
    async fn a_last_line_without_newline_counts() {
        let input = b"a\nlast".to_vec();
        let mut r = tokio::io::BufReader::new(&input[..]);
        assert!(matches!(read_line_limited(&mut r, 10, 1).await.unwrap(), Line::Text(t) if t == b"a"));
        assert!(matches!(read_line_limited(&mut r, 10, 2).await.unwrap(), Line::Text(t) if t == b"last"));
        assert!(matches!(read_line_limited(&mut r, 10, 3).await.unwrap(), Line::Eof));
    }

    #[tokio::test]
    async fn dead_letters_are_found_page_by_page() {
        let client = herald::connect("mem://").await.unwrap();
        client.ensure_topic("t", TopicConfig::default()).await.unwrap();
        let producer = client.producer();
        let mut ids = Vec::new();
        for i in 0..5 {
            let e = Event::builder("x").key(format!("k{i}")).build().unwrap();
            ids.push(e.id().to_owned());
            producer.publish("t", e).await.unwrap();
        }
        let options = SubscribeOptions { topics: vec!["t".into()], ..SubscribeOptions::default() };
        let sub = client.backend().subscribe("g", options).await.unwrap();
        let mut rejected = 0;
        while rejected < 5 {
            for m in sub.fetch(5, Duration::from_secs(1)).await.unwrap() {
                sub.reject(&m, "test").await.unwrap();
                rejected += 1;
            }
        }
        sub.close().await.unwrap();
        // Pages of 2: the last dead letter is on the third page.
        for (i, id) in ids.iter().enumerate() {
            let (offset, event) = find_dead_letter(&client, "g", id, 2).await.unwrap().expect("found");
            assert_eq!(event.id(), id);
            assert!(offset < 5, "dead letter {i} at {offset}");
        }
        assert!(find_dead_letter(&client, "g", "nope", 2).await.unwrap().is_none());
        let err = find_dead_letter(&client, "no-group", "x", 2).await.unwrap_err().to_string();
        assert!(err.contains("\"no-group\" does not exist"), "{err}");
        // Purged: the topic is there, the dead letters are not.
        client.backend().dlq_purge("g").await.unwrap();
        assert!(find_dead_letter(&client, "g", &ids[4], 2).await.unwrap().is_none());
        client.close().await.unwrap();
    }

    #[test]
    fn data_gets_its_content_type() {
        let args = |data: &str| PublishArgs {
            topic: "t".into(),
            key: Some("k".into()),
            ty: "herald.cli".into(),
            source: None,
            headers: vec![("tenant".into(), "acme".into())],
            data: Some(data.into()),
        };
        let e = build_event(&args("{\"a\":1}"), Some(b"{\"a\":1}")).unwrap();
        assert_eq!(e.datacontenttype(), Some("application/json"));
        assert_eq!(e.key(), Some("k"));
        assert_eq!(e.header("tenant"), Some("acme"));
        let e = build_event(&args("hello"), Some(b"hello")).unwrap();
        assert_eq!(e.datacontenttype(), Some("text/plain"));
        assert_eq!(&e.data()[..], b"hello");
        let e = build_event(&args("42"), Some(b"42")).unwrap();
        assert_eq!(e.datacontenttype(), Some("application/json"));
        let mut bad = args("x");
        bad.headers = vec![("Bad_Name".into(), "v".into())];
        assert!(build_event(&bad, Some(b"x")).unwrap_err().to_string().contains("Bad_Name"));
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum EventCmd {
    /// Shows what happened to one event in each group reading its topic: when it was published,
    /// each delivery (attempt, member), how each ended (handler duration, error), timeouts,
    /// dead letters, replays, done.
    History {
        /// The topic.
        topic: String,
        /// The event's offset (with --partition on a topic of several partitions).
        #[arg(required_unless_present = "id", conflicts_with = "id")]
        offset: Option<u64>,
        /// The event's partition.
        #[arg(long, default_value_t = 0)]
        partition: u32,
        /// Find the event by its id instead.
        #[arg(long)]
        id: Option<String>,
    },
}

fn ms_text(ms: i64) -> String {
    Timestamp::from_unix_nanos(ms.saturating_mul(1_000_000)).to_rfc3339()
}

fn handler_text(us: Option<u64>) -> String {
    us.map(|us| format!(" after {:.1} ms", us as f64 / 1e3)).unwrap_or_default()
}

/// One line of a timeline: what happened, in words.
fn happened_text(what: &herald::Happened) -> String {
    use herald::Happened as H;
    match what {
        H::Delivered { attempt, member, topic, partition, offset } => {
            format!("delivered  attempt {attempt} to {member} ({topic}/{partition}@{offset})")
        }
        H::Acked { handler_us } => format!("acked{}", handler_text(*handler_us)),
        H::Nacked { reason, delay_ms, handler_us } => format!(
            "failed{}: {reason}{}",
            handler_text(*handler_us),
            delay_ms.map(|d| format!(" (retry in {d} ms)")).unwrap_or_default()
        ),
        H::Rejected { reason, handler_us } => format!("rejected{}: {reason}", handler_text(*handler_us)),
        H::TimedOut { attempt } => format!("timed out  attempt {attempt} was not settled within the ack timeout"),
        H::DeadLettered { reason, attempts, dlq_offset } => {
            format!("dead-lettered after {attempts} attempts (DLQ offset {dlq_offset}): {reason}")
        }
        H::Replayed { topic, partition, offset } => format!("replayed   as {topic}/{partition}@{offset}"),
        H::Done => "done".to_owned(),
    }
}

/// `herald event …`.
pub async fn event(g: &Global, c: EventCmd) -> Result<()> {
    let json = g.json;
    with_client(g, |client| async move {
        let EventCmd::History { topic, offset, partition, id } = c;
        let h = match (id, offset) {
            (Some(id), _) => client.event_history_by_id(&topic, &id).await?,
            (None, Some(offset)) => client.event_history(&topic, partition, offset).await?,
            (None, None) => unreachable!("clap requires an offset or --id"),
        };
        if json {
            let mut v = serde_json::to_value(&h).expect("histories serialize");
            v["states"] = h.groups.iter().map(|g| (g.group.clone(), Value::from(g.state()))).collect();
            print_json(&v);
            return Ok(());
        }
        println!("{}/{}@{}  id {}  type {}  source {}", h.topic, h.partition, h.offset, h.id, h.ty, h.source);
        println!("{}  published", ms_text(h.published_ms));
        if h.groups.is_empty() {
            println!("(no consumer group reads {})", h.topic);
        }
        for group in &h.groups {
            println!();
            println!("group {}: {}", group.group, group.state().replace('_', " "));
            for e in &group.entries {
                println!("  {}  {}", ms_text(e.at_ms), happened_text(&e.what));
            }
        }
        if h.truncated {
            println!("\n(part of this history may be missing: older than the history kept)");
        }
        Ok(())
    })
    .await
}
