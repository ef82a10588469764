//! Consumer groups: fan-out, sharing, key order under retries, redelivery and backoff,
//! rebalance with generations, positions across restarts, lag, limits.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_broker::{
    Broker, BrokerConfig, Durability, GroupConfig, MemberConfig, OrderingMode, RetryPolicy, StartFrom, TopicConfig,
};
use rand::Rng;

use crate::common::{drain, event, number, open};

fn fast_topic(partitions: u32) -> TopicConfig {
    TopicConfig { partitions, durability: Durability::Interval { ms: 50 }, ..TopicConfig::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_group_gets_every_event_and_members_share_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    broker.create_topic("orders", fast_topic(6)).unwrap();
    broker.create_group("billing", GroupConfig::for_topics(["orders"])).unwrap();
    broker.create_group("shipping", GroupConfig::for_topics(["orders"])).unwrap();
    let n = 600u64;
    let events: Vec<_> = (0..n).map(|i| event(Some(&format!("c{}", i % 50)), i)).collect();
    broker.publish_batch("orders", events).await.unwrap();

    let shipping = broker.join("shipping", MemberConfig::default()).unwrap();
    let got = drain(&shipping, n as usize, Duration::from_secs(10)).await;
    let mut seen: Vec<u64> = got.iter().map(number).collect();
    seen.sort();
    assert_eq!(seen, (0..n).collect::<Vec<_>>(), "shipping receives every event once");

    let members: Vec<_> = (0..3).map(|_| broker.join("billing", MemberConfig::default()).unwrap()).collect();
    let assignments: Vec<_> = members.iter().map(|m| m.assignment()).collect();
    for a in &assignments {
        assert_eq!(a.len(), 2, "6 partitions over 3 members: {assignments:?}");
    }
    let all: HashSet<_> = assignments.iter().flatten().collect();
    assert_eq!(all.len(), 6, "no partition owned twice");
    let mut handled = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while handled.len() < n as usize && Instant::now() < deadline {
        for m in &members {
            for d in m.poll(100, Duration::from_millis(20)).await.unwrap() {
                assert!(m.assignment().contains(&(d.stored.topic.to_string(), d.stored.partition)));
                m.ack(&d).unwrap();
                handled.push(number(&d));
            }
        }
    }
    handled.sort();
    assert_eq!(handled, (0..n).collect::<Vec<_>>(), "without failures each event is handled once");
    // Lag falls to 0 once the acks are in.
    let info = broker.describe_group("billing").unwrap();
    assert_eq!(info.members.len(), 3);
    assert!(info.partitions.iter().all(|p| p.lag == 0), "{:?}", info.partitions);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_order_holds_under_random_nacks_and_ack_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    broker.create_topic("t", fast_topic(2)).unwrap();
    let retry = RetryPolicy { max_attempts: 1000, backoff_base_ms: 1, backoff_max_ms: 20, ..RetryPolicy::default() };
    let config = GroupConfig { ack_timeout_ms: 150, retry, ..GroupConfig::for_topics(["t"]) };
    broker.create_group("g", config).unwrap();
    let keys = 16u64;
    let per_key = 25u64;
    let events: Vec<_> = (0..keys * per_key).map(|i| event(Some(&format!("k{}", i % keys)), i)).collect();
    broker.publish_batch("t", events).await.unwrap();

    let member = Arc::new(broker.join("g", MemberConfig { id: None, max_in_flight: 64 }).unwrap());
    // Per key: the numbers handled successfully, in order; and intervals of handling.
    let done: Arc<Mutex<HashMap<u64, Vec<u64>>>> = Arc::default();
    let spans: Arc<Mutex<Vec<(u64, Instant, Instant)>>> = Arc::default();
    let mut timeouts = 0;
    let mut nacks = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut tasks = Vec::new();
    while done.lock().unwrap().values().map(Vec::len).sum::<usize>() < (keys * per_key) as usize {
        assert!(Instant::now() < deadline, "did not finish: {:?}", done.lock().unwrap());
        for d in member.poll(64, Duration::from_millis(50)).await.unwrap() {
            let roll: u32 = rand::rng().random_range(0..100);
            if roll < 10 {
                nacks += 1;
                member.nack(&d, None, "random failure").unwrap();
            } else if roll < 13 {
                timeouts += 1; // never answered: the ack timeout redelivers it
            } else {
                let (m, done, spans) = (member.clone(), done.clone(), spans.clone());
                tasks.push(tokio::spawn(async move {
                    let start = Instant::now();
                    let pause = rand::rng().random_range(0..3);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                    let n = number(&d);
                    let key = n % keys;
                    // Handled once acked. Under load an ack may come after the 150 ms ack
                    // timeout: the broker then refuses it as stale and redelivers the event,
                    // which counts as a timeout, not as handled.
                    match m.ack(&d) {
                        Ok(()) => {
                            done.lock().unwrap().entry(key).or_default().push(n);
                            spans.lock().unwrap().push((key, start, Instant::now()));
                        }
                        Err(e) => assert!(matches!(e.code().as_str(), "not_in_flight" | "stale_generation"), "{e}"),
                    }
                }));
            }
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(nacks > 10 && timeouts > 3, "the test must exercise retries: {nacks} nacks, {timeouts} timeouts");
    for (key, seen) in done.lock().unwrap().iter() {
        let want: Vec<u64> = (0..per_key).map(|j| key + j * keys).collect();
        assert_eq!(seen, &want, "key {key} handled out of order or not exactly once");
    }
    // Different keys were handled concurrently.
    let spans = spans.lock().unwrap();
    let overlap = spans.iter().any(|a| spans.iter().any(|b| a.0 != b.0 && a.1 < b.2 && b.1 < a.2));
    assert!(overlap, "different keys never overlapped in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_timeouts_redeliver_with_growing_attempts_and_bounded_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    broker.create_topic("t", fast_topic(1)).unwrap();
    // A steep factor: from attempt 5 on, an unbounded backoff (2.56 s, 10.24 s) would be far beyond
    // the ceiling plus the slack a loaded machine needs, so the upper bound can be checked safely.
    let retry =
        RetryPolicy { max_attempts: 10, backoff_base_ms: 40, backoff_factor: 4.0, backoff_max_ms: 200, jitter: 0.25 };
    broker.create_group("g", GroupConfig { ack_timeout_ms: 100, retry, ..GroupConfig::for_topics(["t"]) }).unwrap();
    broker.publish("t", event(Some("k"), 1)).await.unwrap();
    let member = broker.join("g", MemberConfig::default()).unwrap();

    // Attempt 1..=3 by ack timeout, 4..=6 by nack without delay; measure the gaps.
    // When the last failure happened lies between these two instants (a delivery is made at
    // some moment during the poll that returns it; its ack deadline runs from then).
    let (mut failed_at_least, mut failed_at_most) = (Instant::now(), Instant::now());
    let mut attempts = Vec::new();
    for attempt in 1..=6u32 {
        let (d, polled) = loop {
            let polled = Instant::now();
            let got = member.poll(1, Duration::from_secs(5)).await.unwrap();
            if let Some(d) = got.into_iter().next() {
                break (d, polled);
            }
        };
        let arrived = Instant::now();
        assert_eq!(d.attempt, attempt);
        if attempt > 1 {
            let failures = attempt - 1;
            let ceiling = retry.backoff_ceiling(failures);
            let floor = ceiling.mul_f64(1.0 - retry.jitter);
            let (longest, shortest) = (arrived - failed_at_least, arrived.saturating_duration_since(failed_at_most));
            attempts.push((attempt, shortest, floor, ceiling));
            assert!(
                longest + Duration::from_millis(2) >= floor,
                "attempt {attempt}: gap at most {longest:?}, below the backoff floor {floor:?}"
            );
            // The slack covers a loaded CI machine (a 400 ms stall was seen); attempts 2..=4 are
            // below it even unbounded, so only their floors say something.
            assert!(
                shortest <= ceiling + Duration::from_millis(1_000),
                "attempt {attempt}: gap at least {shortest:?}, far above {ceiling:?}"
            );
        }
        if attempt <= 3 {
            // Let it time out: the failure happens at the ack deadline.
            tokio::time::sleep(Duration::from_millis(100)).await;
            (failed_at_least, failed_at_most) =
                (polled + Duration::from_millis(100), arrived + Duration::from_millis(100));
        } else {
            let before = Instant::now();
            member.nack(&d, None, "try again").unwrap();
            (failed_at_least, failed_at_most) = (before, Instant::now());
        }
    }
    // An explicit delay overrides the policy.
    let d = member.poll(1, Duration::from_secs(5)).await.unwrap().pop().unwrap();
    assert_eq!(d.attempt, 7);
    let t = Instant::now();
    member.nack(&d, Some(Duration::from_millis(300)), "later").unwrap();
    let d = member.poll(1, Duration::from_secs(5)).await.unwrap().pop().unwrap();
    assert!(t.elapsed() >= Duration::from_millis(295), "nack delay not honoured: {:?}", t.elapsed());
    assert_eq!(d.attempt, 8);
    member.ack(&d).unwrap();
    eprintln!("{attempts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_member_loses_its_partitions_and_its_old_acks_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    broker.create_topic("t", fast_topic(4)).unwrap();
    broker.create_group("g", GroupConfig { session_timeout_ms: 300, ..GroupConfig::for_topics(["t"]) }).unwrap();
    let n = 400u64;
    broker.publish_batch("t", (0..n).map(|i| event(Some(&format!("k{i}")), i)).collect()).await.unwrap();
    let a = broker.join("g", MemberConfig::default()).unwrap();
    let b = broker.join("g", MemberConfig::default()).unwrap();
    assert_eq!(a.assignment().len(), 2);
    let gen_before = a.generation();
    // b takes some events, acks a few, then goes silent holding the rest.
    let held = b.poll(50, Duration::from_secs(2)).await.unwrap();
    assert!(!held.is_empty());
    let mut handled: Vec<u64> = Vec::new();
    for d in &held[..5] {
        b.ack(d).unwrap();
        handled.push(number(d));
    }
    let stale = held[5].clone();
    // From here on b is silent: no poll, no ack, no heartbeat.
    // a keeps going; after the session timeout it owns everything.
    let deadline = Instant::now() + Duration::from_secs(15);
    while handled.len() < n as usize && Instant::now() < deadline {
        for d in a.poll(200, Duration::from_millis(100)).await.unwrap() {
            a.ack(&d).unwrap();
            handled.push(number(&d));
        }
    }
    assert_eq!(a.assignment().len(), 4);
    assert!(a.generation() > gen_before);
    handled.sort();
    handled.dedup();
    assert_eq!(handled, (0..n).collect::<Vec<_>>(), "nothing lost when a member dies");
    // The dead member's late ack is refused: its generation is gone.
    let group = broker.describe_group("g").unwrap();
    assert_eq!(group.members.len(), 1);
    let err = b.ack(&stale).unwrap_err();
    assert_eq!(err.code().as_str(), "unknown_member", "{err}");
    assert!(err.to_string().contains("missed its session timeout"), "{err}");
    // Nor can the new owner ack b's old delivery: it carries b's generation.
    let err = a.ack(&stale).unwrap_err();
    assert!(matches!(err.code().as_str(), "stale_generation" | "not_in_flight"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_from_an_old_generation_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    broker.create_topic("t", fast_topic(2)).unwrap();
    broker.create_group("g", GroupConfig::for_topics(["t"])).unwrap();
    broker.publish_batch("t", (0..20).map(|i| event(Some(&format!("k{i}")), i)).collect()).await.unwrap();
    let a = broker.join("g", MemberConfig { id: Some("a".into()), max_in_flight: 100 }).unwrap();
    let first = a.poll(100, Duration::from_secs(2)).await.unwrap();
    assert_eq!(first.len(), 20);
    // b joins: one partition moves from a to b, with a new generation.
    let b = broker.join("g", MemberConfig { id: Some("b".into()), max_in_flight: 100 }).unwrap();
    let moved: Vec<_> =
        first.iter().filter(|d| !a.assignment().contains(&(d.stored.topic.to_string(), d.stored.partition))).collect();
    assert!(!moved.is_empty());
    let err = a.ack(moved[0]).unwrap_err();
    assert_eq!(err.code().as_str(), "stale_generation", "{err}");
    assert!(err.to_string().contains("reassigned"), "{err}");
    // The moved events are redelivered to b, attempt 2.
    let got = b.poll(100, Duration::from_secs(2)).await.unwrap();
    assert_eq!(got.len(), moved.len());
    assert!(got.iter().all(|d| d.attempt == 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_and_attempts_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let broker = open(dir.path());
        broker.create_topic("t", fast_topic(1)).unwrap();
        broker.create_group("g", GroupConfig::for_topics(["t"])).unwrap();
        broker.publish_batch("t", (0..10).map(|i| event(Some("k"), i)).collect()).await.unwrap();
        let m = broker.join("g", MemberConfig::default()).unwrap();
        let got = drain(&m, 6, Duration::from_secs(5)).await;
        assert_eq!(got.len(), 6);
        // The 7th is delivered but never acked: a crash now redelivers it with attempt 2.
        let d = m.poll(1, Duration::from_secs(2)).await.unwrap();
        assert_eq!((number(&d[0]), d[0].attempt), (6, 1));
        tokio::time::sleep(Duration::from_millis(herald_broker::COMMIT_INTERVAL_MS * 3)).await;
    } // no close: the logs recover on open (the crash test kills a real process)
    let broker = open(dir.path());
    let m = broker.join("g", MemberConfig::default()).unwrap();
    // One key: 6 first (attempt 2, counted durably), and 7.. only once 6 is acked.
    let d = m.poll(10, Duration::from_secs(2)).await.unwrap();
    let got: Vec<(u64, u32)> = d.iter().map(|d| (number(d), d.attempt)).collect();
    assert_eq!(got, vec![(6, 2)]);
    m.ack(&d[0]).unwrap();
    let d = m.poll(10, Duration::from_secs(2)).await.unwrap();
    let got: Vec<(u64, u32)> = d.iter().map(|d| (number(d), d.attempt)).collect();
    assert_eq!(got, vec![(7, 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_groups_start_where_told_and_modes_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    broker.create_topic("t", fast_topic(1)).unwrap();
    broker.publish_batch("t", (0..5).map(|i| event(None, i)).collect()).await.unwrap();
    broker.create_group("late", GroupConfig { start: StartFrom::Latest, ..GroupConfig::for_topics(["t"]) }).unwrap();
    broker.create_group("early", GroupConfig::for_topics(["t"])).unwrap();
    broker.publish("t", event(None, 5)).await.unwrap();
    let late = broker.join("late", MemberConfig::default()).unwrap();
    let got: Vec<u64> = drain(&late, 1, Duration::from_secs(2)).await.iter().map(number).collect();
    assert_eq!(got, vec![5]);
    let early = broker.join("early", MemberConfig::default()).unwrap();
    assert_eq!(drain(&early, 6, Duration::from_secs(2)).await.len(), 6);

    // Partition mode: one in flight per partition, whatever the budget.
    let config = GroupConfig { ordering: OrderingMode::Partition, ..GroupConfig::for_topics(["t"]) };
    broker.create_group("strict", config).unwrap();
    let m = broker.join("strict", MemberConfig::default()).unwrap();
    let first = m.poll(100, Duration::from_secs(1)).await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(m.poll(100, Duration::from_millis(50)).await.unwrap().is_empty());
    m.ack(&first[0]).unwrap();
    assert_eq!(m.poll(100, Duration::from_secs(1)).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_and_member_limits() {
    let dir = tempfile::tempdir().unwrap();
    let config = BrokerConfig { in_flight_max: 10, members_per_group_max: 2, groups_max: 1, ..BrokerConfig::default() };
    let broker = Broker::open(dir.path(), config).unwrap();
    broker.create_topic("t", fast_topic(1)).unwrap();
    broker.create_group("g", GroupConfig::for_topics(["t"])).unwrap();
    let err = broker.create_group("h", GroupConfig::for_topics(["t"])).unwrap_err();
    assert_eq!(err.to_string(), "groups would be 2; the limit is 1 (groups_max)");
    let err = broker.join("g", MemberConfig { id: None, max_in_flight: 11 }).unwrap_err();
    assert_eq!(err.to_string(), "max_in_flight would be 11; the limit is 10 (in_flight_max)");
    broker.publish_batch("t", (0..30).map(|i| event(Some(&format!("k{i}")), i)).collect()).await.unwrap();
    let a = broker.join("g", MemberConfig { id: None, max_in_flight: 7 }).unwrap();
    let five = || MemberConfig { id: None, max_in_flight: 5 };
    let _b = broker.join("g", five()).unwrap();
    let err = broker.join("g", five()).unwrap_err();
    assert_eq!(err.to_string(), "members would be 3; the limit is 2 (members_per_group_max)");
    // Backpressure: never more than max_in_flight unacked. The sticky assignment keeps the one
    // partition with a.
    assert_eq!(a.assignment().len(), 1);
    let first = a.poll(100, Duration::from_millis(200)).await.unwrap();
    assert_eq!(first.len(), 7);
    assert!(a.poll(100, Duration::from_millis(50)).await.unwrap().is_empty(), "budget used up");
    a.ack(&first[0]).unwrap();
    assert_eq!(a.poll(100, Duration::from_millis(200)).await.unwrap().len(), 1, "one ack frees one slot");
    assert_eq!(
        broker.create_group("bad name", GroupConfig::for_topics(["t"])).unwrap_err().code().as_str(),
        "invalid_group_name"
    );
    assert_eq!(
        broker.create_group("g2", GroupConfig::for_topics(["nope"])).unwrap_err().code().as_str(),
        "topic_not_found"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_overtaking_a_group_is_reported_not_silent() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    let topic = TopicConfig {
        segment_bytes_max: 1024,
        retention_bytes: Some(2048),
        durability: Durability::Os,
        ..TopicConfig::default()
    };
    broker.create_topic("t", topic).unwrap();
    broker.create_group("slow", GroupConfig::for_topics(["t"])).unwrap();
    for i in 0..200u64 {
        broker.publish("t", event(Some("k"), i)).await.unwrap();
    }
    assert!(broker.enforce_retention().unwrap() > 0);
    let earliest = broker.describe_topic("t").unwrap().partitions[0].earliest_offset;
    assert!(earliest > 0);
    let m = broker.join("slow", MemberConfig::default()).unwrap();
    let err = m.poll(10, Duration::from_secs(1)).await.unwrap_err();
    assert_eq!(err.code().as_str(), "retention_overtook");
    assert_eq!(
        err.to_string(),
        format!(
            "group \"slow\" was at t/0@0, but retention deleted everything below {earliest}: {earliest} events were never delivered; the group continues at {earliest}"
        )
    );
    // Then it goes on from the earliest retained event.
    let got = drain(&m, (200 - earliest) as usize, Duration::from_secs(5)).await;
    assert_eq!(number(&got[0]), earliest);
    assert_eq!(got.len() as u64, 200 - earliest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_moves_positions_durably_and_is_refused_while_members_exist() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    broker.create_topic("t", fast_topic(2)).unwrap();
    broker.create_group("g", GroupConfig::for_topics(["t"])).unwrap();
    let n = 40u64;
    broker.publish_batch("t", (0..n).map(|i| event(Some(&format!("k{}", i % 4)), i)).collect()).await.unwrap();
    let m = broker.join("g", MemberConfig::default()).unwrap();
    let got = drain(&m, n as usize, Duration::from_secs(10)).await;
    assert_eq!(got.len(), n as usize);
    let e = broker.reset_group("g", StartFrom::Earliest).unwrap_err();
    assert_eq!(e.code().as_str(), "group_active", "{e}");
    assert!(e.to_string().contains("stop its consumers"), "{e}");
    drop(m);
    let info = broker.reset_group("g", StartFrom::Earliest).unwrap();
    assert!(info.partitions.iter().all(|p| p.committed == 0), "{:?}", info.partitions);
    assert_eq!(info.partitions.iter().map(|p| p.lag).sum::<u64>(), n);
    // Durable: the reset position survives a restart.
    broker.close().await.unwrap();
    drop(broker);
    let broker = open(dir.path());
    let info = broker.describe_group("g").unwrap();
    assert_eq!(info.partitions.iter().map(|p| p.lag).sum::<u64>(), n, "{:?}", info.partitions);
    let m = broker.join("g", MemberConfig::default()).unwrap();
    let again = drain(&m, n as usize, Duration::from_secs(10)).await;
    let mut seen: Vec<u64> = again.iter().map(number).collect();
    seen.sort();
    assert_eq!(seen, (0..n).collect::<Vec<_>>(), "everything is delivered again after a reset to earliest");
    assert!(again.iter().all(|d| d.attempt == 1), "attempt counts start over after a reset");
    drop(m);
    let info = broker.reset_group("g", StartFrom::Latest).unwrap();
    assert!(info.partitions.iter().all(|p| p.lag == 0), "{:?}", info.partitions);
    let e = broker.reset_group("nope", StartFrom::Latest).unwrap_err();
    assert_eq!(e.code().as_str(), "group_not_found");
}

/// Was a bug: a poll read the partitions one by one under the group lock and returned the first
/// read error after it had picked events of earlier partitions: those stayed in flight though
/// never handed out, the member's in-flight count drifted, and one damaged partition made every
/// poll of the member fail, stalling all its partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_partition_does_not_stall_the_member_s_other_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let (k0, k1) = (key_for_partition(0, 2), key_for_partition(1, 2));
    {
        let broker = open(dir.path());
        // No dedupe: its memory is rebuilt from the log at open, which the damage would stop
        // (that is #8's to fix; this test is about delivery).
        broker.create_topic("t", TopicConfig { dedupe_window_ms: 0, ..TopicConfig::with_partitions(2) }).unwrap();
        broker.create_group("g", GroupConfig::for_topics(["t"])).unwrap();
        broker.publish_batch("t", (0..10).map(|i| event(Some(&k0), i)).collect()).await.unwrap();
        broker.publish_batch("t", (100..110).map(|i| event(Some(&k1), i)).collect()).await.unwrap();
        broker.close().await.unwrap();
    }
    // One flipped byte in the middle of partition 1's only batch: its CRC fails on every read.
    let seg = crate::common::segment_file(dir.path(), "t", 1);
    let mut bytes = std::fs::read(&seg).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&seg, bytes).unwrap();

    let broker = open(dir.path());
    let m = broker.join("g", MemberConfig::default()).unwrap();
    assert_eq!(m.assignment().len(), 2, "one member owns both partitions");
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while got.len() < 10 && std::time::Instant::now() < deadline {
        match m.poll(64, Duration::from_millis(100)).await {
            // Key order: one at a time; each acked at once.
            Ok(ds) => {
                for d in ds {
                    m.ack(&d).unwrap();
                    got.push(number(&d));
                }
            }
            Err(e) => assert_eq!(e.code().as_str(), "corrupt", "{e}"),
        }
    }
    assert_eq!(got, (0..10).collect::<Vec<_>>(), "partition 0 was stalled by partition 1's damage");
    // The damage is still reported once nothing else can be delivered, and nothing is in flight.
    let e = m.poll(64, Duration::from_millis(100)).await.unwrap_err();
    assert_eq!(e.code().as_str(), "corrupt", "{e}");
    let info = broker.describe_group("g").unwrap();
    assert!(info.partitions.iter().all(|p| p.in_flight == 0), "{info:?}");
    assert_eq!(info.partitions.iter().find(|p| p.partition == 0).unwrap().lag, 0);
}

/// A key that routes to `partition` of `partitions`.
fn key_for_partition(partition: u32, partitions: u32) -> String {
    (0..)
        .map(|i| format!("key-{i}"))
        .find(|k| herald_broker::partitioner::partition_for_key(k.as_bytes(), partitions) == partition)
        .unwrap()
}
