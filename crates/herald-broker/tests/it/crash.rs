//! Crash test: a child process runs the broker under load (publishers with `Durability::Always`,
//! one consuming and acking member per group) and is killed with SIGKILL at a random moment,
//! then restarted, for many cycles. Afterwards the parent opens the broker itself and drains both
//! groups. Every publish the child saw acknowledged must have reached every group (lost = 0), and
//! redeliveries must stay within the documented bound: per crash, what was in flight plus the acks
//! not yet durable (at most `COMMIT_EVENTS_MAX`, flushed every `COMMIT_INTERVAL_MS`).
//!
//! The child is this very test binary, re-executed on `crash::broker_crash_child` with an
//! environment variable set. It reports on stdout, one flushed line each:
//! - `PUB <id>` once `publish` returned `Ok` for the event,
//! - `DLV <group> <id> <partition> <offset> <attempt>` for each delivery, before acking it,
//! - `ACK <group> <id>` once `ack` returned `Ok`,
//! - `ERR <what>` for any unexpected error (fails the test).
//!
//! A kill between an `ack` and its `ACK` line leaves a delivery whose ack may or may not have
//! happened ("ambiguous"): if the ack was made durable the broker rightly never redelivers it.
//! Such ids are reported, accepted only when a `DLV` line shows they reached the consumer, and the
//! group's final lag of 0 shows the broker counts them as consumed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use herald_broker::{
    Broker, BrokerConfig, COMMIT_EVENTS_MAX, Delivery, Durability, GroupConfig, Member, MemberConfig, RetryPolicy,
    TopicConfig,
};
use herald_core::Event;
use rand::{Rng, SeedableRng};

const DIR_VAR: &str = "HERALD_BROKER_CRASH_DIR";
const CYCLE_VAR: &str = "HERALD_BROKER_CRASH_CYCLE";
const CYCLES_VAR: &str = "HERALD_BROKER_CRASH_CYCLES";
const CYCLES_DEFAULT: u64 = 12;
const TOPIC: &str = "orders";
const GROUPS: [&str; 2] = ["g1", "g2"];
const PUBLISHERS: u64 = 3;
/// Keys drawn from a small set so per-key ordering (and key blocking) is exercised; a few events
/// have no key.
const KEYS: u64 = 12;
const MAX_IN_FLIGHT: u32 = 64;
/// The final drain stops once nothing new arrived for this long...
const DRAIN_IDLE: Duration = Duration::from_secs(2);
/// ...or after this long in all.
const DRAIN_MAX: Duration = Duration::from_secs(60);

fn topic_config() -> TopicConfig {
    TopicConfig { partitions: 4, durability: Durability::Always, ..TopicConfig::default() }
}

fn group_config() -> GroupConfig {
    GroupConfig {
        ack_timeout_ms: 2_000,
        session_timeout_ms: 2_000,
        // Crashes raise attempt counts; dead-lettering is not what this test is about (the DLQ is
        // checked empty at the end), so the attempts are never used up here.
        retry: RetryPolicy { max_attempts: 1_000, ..RetryPolicy::default() },
        ..GroupConfig::for_topics([TOPIC])
    }
}

/// Creates the topic and groups unless they exist (both calls are idempotent).
fn setup(broker: &Broker) {
    broker.ensure_topic(TOPIC, topic_config()).unwrap();
    for g in GROUPS {
        broker.create_group(g, group_config()).unwrap();
    }
}

fn member_config() -> MemberConfig {
    MemberConfig { id: None, max_in_flight: MAX_IN_FLIGHT }
}

/// Writes whole lines to stdout at once and flushes them.
fn emit(lines: &str) {
    let mut out = std::io::stdout().lock();
    out.write_all(lines.as_bytes()).unwrap();
    out.flush().unwrap();
}

fn make_event(id: &str, rng: &mut impl Rng) -> Event {
    let mut b = Event::builder("order.created").id(id).source("/crash").data(id.as_bytes().to_vec(), "text/plain");
    let k = rng.random_range(0..KEYS + 2);
    if k < KEYS {
        b = b.key(format!("k{k}"));
    }
    b.build().unwrap()
}

async fn publisher(broker: Broker, cycle: u64, p: u64) {
    // `ThreadRng` is not `Send`; this one may cross the awaits.
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let mut seq = 0u64;
    loop {
        // Publisher 0 publishes batches (spanning partitions), the others one event at a time.
        let n = if p == 0 { rng.random_range(1..=8u64) } else { 1 };
        let ids: Vec<String> = (seq..seq + n).map(|s| format!("c{cycle}-p{p}-s{s}")).collect();
        let events: Vec<Event> = ids.iter().map(|id| make_event(id, &mut rng)).collect();
        seq += n;
        let result = if p == 0 {
            broker.publish_batch(TOPIC, events).await
        } else {
            broker.publish(TOPIC, events.into_iter().next().unwrap()).await.map(|r| vec![r])
        };
        match result {
            Ok(receipts) => {
                let mut s = String::new();
                for (id, r) in ids.iter().zip(&receipts) {
                    if r.duplicate {
                        writeln!(s, "ERR publish of new id {id} reported as duplicate").unwrap();
                    }
                    writeln!(s, "PUB {id}").unwrap();
                }
                emit(&s);
            }
            Err(e) => {
                emit(&format!("ERR publish {ids:?}: {e}\n"));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn consumer(broker: Broker, group: &'static str) {
    let member = match broker.join(group, member_config()) {
        Ok(m) => m,
        Err(e) => {
            emit(&format!("ERR join {group}: {e}\n"));
            return;
        }
    };
    loop {
        let deliveries = match member.poll(MAX_IN_FLIGHT as usize, Duration::from_millis(100)).await {
            Ok(d) => d,
            Err(e) => {
                emit(&format!("ERR poll {group}: {e}\n"));
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if deliveries.is_empty() {
            continue;
        }
        let mut s = String::new();
        for d in &deliveries {
            let st = &d.stored;
            writeln!(s, "DLV {group} {} {} {} {}", d.event().id(), st.partition, st.offset, d.attempt).unwrap();
        }
        emit(&s);
        let mut s = String::new();
        for d in &deliveries {
            match member.ack(d) {
                Ok(()) => writeln!(s, "ACK {group} {}", d.event().id()).unwrap(),
                Err(e) => writeln!(s, "ERR ack {group} {}: {e}", d.event().id()).unwrap(),
            }
        }
        emit(&s);
    }
}

/// The child: runs only when re-executed by `kill_9_loses_no_acknowledged_publish`.
#[test]
fn broker_crash_child() {
    let Ok(dir) = std::env::var(DIR_VAR) else { return };
    let cycle: u64 = std::env::var(CYCLE_VAR).unwrap().parse().unwrap();
    // The harness has printed `test crash::broker_crash_child ... ` without a newline: end that
    // line so that the first report starts a line of its own.
    emit("\n");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let broker = Broker::open(&dir, BrokerConfig::default()).unwrap();
        setup(&broker);
        for g in GROUPS {
            tokio::spawn(consumer(broker.clone(), g));
        }
        for p in 0..PUBLISHERS {
            tokio::spawn(publisher(broker.clone(), cycle, p));
        }
        // Runs until the parent kills this process.
        std::future::pending::<()>().await;
    });
}

/// What the children reported for one group.
#[derive(Default)]
struct Seen {
    /// Deliveries per id (`DLV` lines), over all cycles.
    delivered: HashMap<String, u64>,
    /// Acks per id (`ACK` lines), over all cycles.
    acked: HashMap<String, u64>,
    /// Delivered in some cycle without an `ACK` line in that cycle: the kill came between the
    /// delivery and the end of its acking. id -> (cycle, partition, offset).
    unconfirmed: HashMap<String, (u64, u32, u64)>,
}

/// Polls until nothing new arrived for `DRAIN_IDLE` (or `DRAIN_MAX` passed), acking everything.
async fn final_drain(member: Member) -> (Member, Vec<Delivery>) {
    let start = Instant::now();
    let mut last = Instant::now();
    let mut got = Vec::new();
    while last.elapsed() < DRAIN_IDLE && start.elapsed() < DRAIN_MAX {
        let ds = member.poll(MAX_IN_FLIGHT as usize, Duration::from_millis(200)).await.unwrap();
        if !ds.is_empty() {
            last = Instant::now();
        }
        for d in ds {
            member.ack(&d).unwrap();
            got.push(d);
        }
    }
    (member, got)
}

fn stderr_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn kill_9_loses_no_acknowledged_publish() {
    if std::env::var(DIR_VAR).is_ok() {
        return;
    }
    let test_start = Instant::now();
    let cycles: u64 = std::env::var(CYCLES_VAR).ok().and_then(|v| v.parse().ok()).unwrap_or(CYCLES_DEFAULT);
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rng();

    // id -> cycle of every acknowledged publish.
    let mut published: HashMap<String, u64> = HashMap::new();
    let mut seen: BTreeMap<&str, Seen> = GROUPS.iter().map(|g| (*g, Seen::default())).collect();
    let mut errors: Vec<String> = Vec::new();
    let mut cycles_with_publishes = 0;

    for cycle in 0..cycles {
        let stderr_path = logs.path().join(format!("child-{cycle}.stderr"));
        let mut child = Command::new(&exe)
            .args(["--exact", "crash::broker_crash_child", "--nocapture", "--test-threads", "1"])
            .env(DIR_VAR, dir.path())
            .env(CYCLE_VAR, cycle.to_string())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                // A line cut by the kill has no newline: it reports nothing.
                if line.ends_with('\n') {
                    lines.push(line.trim_end().to_owned());
                }
                line.clear();
            }
            lines
        });
        let run = Duration::from_millis(rng.random_range(200..=700));
        std::thread::sleep(run);
        if let Some(status) = child.try_wait().unwrap() {
            panic!("cycle {cycle}: the child exited by itself ({status}); stderr:\n{}", stderr_of(&stderr_path));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let lines = reader.join().unwrap();

        let mut pubs = 0u64;
        let mut dlv_cycle: BTreeMap<&str, HashMap<String, (u32, u64)>> = BTreeMap::new();
        let mut ack_cycle: BTreeMap<&str, HashSet<String>> = BTreeMap::new();
        for line in &lines {
            let f: Vec<&str> = line.split_whitespace().collect();
            match f.first().copied() {
                Some("PUB") => {
                    pubs += 1;
                    let prev = published.insert(f[1].to_owned(), cycle);
                    assert!(prev.is_none(), "cycle {cycle}: id {} acknowledged twice", f[1]);
                }
                Some("DLV") => {
                    let g = GROUPS.iter().copied().find(|g| *g == f[1]).unwrap();
                    *seen.get_mut(g).unwrap().delivered.entry(f[2].to_owned()).or_default() += 1;
                    dlv_cycle
                        .entry(g)
                        .or_default()
                        .insert(f[2].to_owned(), (f[3].parse().unwrap(), f[4].parse().unwrap()));
                }
                Some("ACK") => {
                    let g = GROUPS.iter().copied().find(|g| *g == f[1]).unwrap();
                    *seen.get_mut(g).unwrap().acked.entry(f[2].to_owned()).or_default() += 1;
                    ack_cycle.entry(g).or_default().insert(f[2].to_owned());
                }
                Some("ERR") => errors.push(format!("cycle {cycle}: {line}")),
                _ => {}
            }
        }
        let mut summary = String::new();
        for g in GROUPS {
            let dlv = dlv_cycle.remove(g).unwrap_or_default();
            let acks = ack_cycle.remove(g).unwrap_or_default();
            let s = seen.get_mut(g).unwrap();
            // Ids this child received that an earlier child had already received.
            let again = dlv.keys().filter(|id| s.delivered[*id] > 1).count();
            let stray: Vec<&String> = acks.iter().filter(|id| !dlv.contains_key(*id)).collect();
            assert!(stray.is_empty(), "cycle {cycle}: group {g}: ACK lines without a DLV line: {stray:?}");
            let mut open = 0;
            for (id, (p, o)) in &dlv {
                if !acks.contains(id) {
                    open += 1;
                    s.unconfirmed.insert(id.clone(), (cycle, *p, *o));
                }
            }
            write!(summary, " {g}: {} delivered ({again} again), {} acked, {open} unconfirmed;", dlv.len(), acks.len())
                .unwrap();
        }
        if pubs > 0 {
            cycles_with_publishes += 1;
        }
        eprintln!("cycle {cycle}: killed after {run:?}: {pubs} publishes acknowledged;{summary}");
    }
    assert!(errors.is_empty(), "the children reported errors:\n{}", errors.join("\n"));
    assert!(
        published.len() > 200,
        "only {} acknowledged publishes over {cycles} cycles: the test proves little",
        published.len()
    );
    assert!(
        cycles_with_publishes >= cycles / 2,
        "only {cycles_with_publishes} of {cycles} cycles acknowledged a publish"
    );

    // The final restart, in this process: drain both groups.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (finals, stored) = rt.block_on(async {
        let broker = Broker::open(dir.path(), BrokerConfig::default()).unwrap();
        setup(&broker);
        let drain_start = Instant::now();
        let tasks: Vec<_> =
            GROUPS.iter().map(|g| tokio::spawn(final_drain(broker.join(g, member_config()).unwrap()))).collect();
        let mut finals: BTreeMap<&str, Vec<Delivery>> = BTreeMap::new();
        let mut members = Vec::new();
        for (g, t) in GROUPS.iter().zip(tasks) {
            let (m, got) = t.await.unwrap();
            members.push(m);
            finals.insert(*g, got);
        }
        eprintln!("final drain took {:?}", drain_start.elapsed());
        for g in GROUPS {
            let info = broker.describe_group(g).unwrap();
            for p in &info.partitions {
                assert_eq!(p.lag, 0, "group {g} after draining: {p:?}");
                assert_eq!(p.in_flight, 0, "group {g} after draining: {p:?}");
            }
            let dead = broker.dlq_list(g, 10).unwrap();
            assert!(dead.is_empty(), "group {g} dead-lettered events: {dead:?}");
        }
        // Everything stored in the topic: id -> (partition, offset).
        let mut stored: HashMap<String, (u32, u64)> = HashMap::new();
        for p in broker.describe_topic(TOPIC).unwrap().partitions {
            let mut next = p.earliest_offset;
            while next < p.latest_offset {
                let events = broker.read(TOPIC, p.partition, next, 1000).unwrap();
                let last = events.last().expect("a read below latest returns events").offset;
                for e in events {
                    if let Some(first) = stored.insert(e.event.id().to_owned(), (p.partition, e.offset)) {
                        panic!("id {} stored twice: at {first:?} and at ({}, {})", e.event.id(), p.partition, e.offset);
                    }
                }
                next = last + 1;
            }
        }
        drop(members);
        broker.close().await.unwrap();
        (finals, stored)
    });

    let not_stored: Vec<&String> = published.keys().filter(|id| !stored.contains_key(*id)).collect();
    eprintln!(
        "{} publishes acknowledged, {} events stored ({} stored without an acknowledgement), {} acknowledged but not stored",
        published.len(),
        stored.len(),
        stored.keys().filter(|id| !published.contains_key(*id)).count(),
        not_stored.len()
    );

    let bound = cycles * (u64::from(MAX_IN_FLIGHT) + COMMIT_EVENTS_MAX as u64);
    let mut failures = Vec::new();
    if !not_stored.is_empty() {
        let mut sample: Vec<_> = not_stored.iter().map(|id| (id.as_str(), published[*id])).collect();
        sample.sort();
        sample.truncate(20);
        failures
            .push(format!("{} acknowledged publishes are not stored, e.g. (id, cycle): {sample:?}", not_stored.len()));
    }
    for g in GROUPS {
        let s = &seen[g];
        let fin = &finals[g];
        let mut final_count: HashMap<&str, u64> = HashMap::new();
        for d in fin {
            *final_count.entry(d.event().id()).or_default() += 1;
        }
        let redelivered_finally = fin.iter().filter(|d| d.attempt > 1).count();

        // Lost: acknowledged publishes (and anything else stored) the group never received.
        let mut lost = Vec::new();
        let mut unconfirmed_only = Vec::new();
        let ids: HashSet<&String> = published.keys().chain(stored.keys()).collect();
        for id in ids {
            if s.acked.contains_key(id) || final_count.contains_key(id.as_str()) {
                continue;
            }
            match s.unconfirmed.get(id) {
                Some(at) => unconfirmed_only.push((id.clone(), *at)),
                None => lost.push((id.clone(), published.get(id).copied(), stored.get(id).copied())),
            }
        }
        lost.sort();

        // Duplicates: deliveries beyond the first per id, by the children and the final drain.
        let mut counts: HashMap<&str, u64> = s.delivered.iter().map(|(id, n)| (id.as_str(), *n)).collect();
        for (id, n) in &final_count {
            *counts.entry(id).or_default() += n;
        }
        let mut dups: Vec<(&str, u64)> = counts.iter().filter(|(_, n)| **n > 1).map(|(id, n)| (*id, *n)).collect();
        dups.sort();
        let duplicates: u64 = dups.iter().map(|(_, n)| n - 1).sum();
        let mut acks: HashMap<&str, u64> = s.acked.iter().map(|(id, n)| (id.as_str(), *n)).collect();
        for (id, n) in &final_count {
            *acks.entry(id).or_default() += n;
        }
        let acked_twice: u64 = acks.values().map(|n| n.saturating_sub(1)).sum();

        eprintln!(
            "group {g}: {} deliveries by the children ({} acked), {} in the final drain ({redelivered_finally} with attempt > 1); \
             lost {}; acked without an ACK line (kill mid-ack) {}; duplicate deliveries {duplicates} \
             (acked twice {acked_twice}), bound {bound}",
            s.delivered.values().sum::<u64>(),
            s.acked.values().sum::<u64>(),
            fin.len(),
            lost.len(),
            unconfirmed_only.len(),
        );
        if !unconfirmed_only.is_empty() {
            eprintln!(
                "group {g}: delivered, kill before its ACK line, never redelivered (cycle, partition, offset): {unconfirmed_only:?}"
            );
        }
        if !dups.is_empty() {
            let shown: Vec<_> = dups.iter().take(50).collect();
            eprintln!("group {g}: duplicates (id, deliveries), first {} of {}: {shown:?}", shown.len(), dups.len());
        }
        if !lost.is_empty() {
            let shown: Vec<_> = lost.iter().take(50).collect();
            failures.push(format!(
                "group {g}: {} events never delivered (id, acknowledged in cycle, stored at (partition, offset)), first {}: {shown:?}",
                lost.len(),
                shown.len()
            ));
        }
        if duplicates > bound {
            failures.push(format!("group {g}: {duplicates} duplicate deliveries, above the bound {bound}"));
        }
    }
    eprintln!("crash test took {:?}", test_start.elapsed());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
