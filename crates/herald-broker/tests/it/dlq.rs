//! Dead letters: after max attempts with every header, at once on reject, replay to the failed
//! group only, purge, and the DLQ size limit.

use std::time::Duration;

use herald_broker::{Durability, GroupConfig, MemberConfig, RetryPolicy, TopicConfig, dlq_headers};

use crate::common::{drain, event, number, open};

fn config(max_attempts: u32) -> GroupConfig {
    let retry = RetryPolicy { max_attempts, backoff_base_ms: 5, backoff_max_ms: 10, ..RetryPolicy::default() };
    GroupConfig { retry, ..GroupConfig::for_topics(["orders"]) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_events_reach_the_dlq_and_replay_goes_to_the_failed_group_only() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    let topic = TopicConfig { partitions: 2, durability: Durability::Interval { ms: 20 }, ..TopicConfig::default() };
    broker.create_topic("orders", topic).unwrap();
    broker.create_group("billing", config(3)).unwrap();
    broker.create_group("shipping", config(3)).unwrap();
    let events: Vec<_> = (0..10).map(|i| event(Some(&format!("k{i}")), i)).collect();
    let poison = events[4].clone();
    let rejected = events[7].clone();
    let receipts = broker.publish_batch("orders", events).await.unwrap();

    // shipping succeeds with everything.
    let shipping = broker.join("shipping", MemberConfig::default()).unwrap();
    assert_eq!(drain(&shipping, 10, Duration::from_secs(5)).await.len(), 10);

    // billing: event 4 always fails, event 7 is rejected, the rest succeed.
    let billing = broker.join("billing", MemberConfig::default()).unwrap();
    let mut attempts_of_poison = Vec::new();
    let mut ok = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while (ok < 8 || broker.dlq_list("billing", 10).unwrap().len() < 2) && std::time::Instant::now() < deadline {
        for d in billing.poll(10, Duration::from_millis(50)).await.unwrap() {
            match number(&d) {
                4 => {
                    attempts_of_poison.push(d.attempt);
                    billing.nack(&d, None, "payment service said no").unwrap();
                }
                7 => billing.reject(&d, "malformed order").await.unwrap(),
                _ => {
                    billing.ack(&d).unwrap();
                    ok += 1;
                }
            }
        }
    }
    assert_eq!(attempts_of_poison, vec![1, 2, 3], "exactly max attempts, then the DLQ");
    let letters = broker.dlq_list("billing", 10).unwrap();
    assert_eq!(letters.len(), 2);
    let by_id = |id: &str| letters.iter().find(|l| l.event.id() == id).unwrap().event.clone();
    let p = by_id(poison.id());
    // The original event unchanged...
    assert_eq!(p.data(), poison.data());
    assert_eq!(p.key(), poison.key());
    assert_eq!(p.ty(), poison.ty());
    assert_eq!(p.time(), poison.time());
    // ...plus every header.
    let r = &receipts[4];
    assert_eq!(p.header(dlq_headers::REASON), Some("payment service said no"));
    assert_eq!(p.header(dlq_headers::ATTEMPTS), Some("3"));
    assert_eq!(p.header(dlq_headers::TOPIC), Some("orders"));
    assert_eq!(p.header(dlq_headers::PARTITION), Some(r.partition.to_string().as_str()));
    assert_eq!(p.header(dlq_headers::OFFSET), Some(r.offset.to_string().as_str()));
    assert_eq!(p.header(dlq_headers::GROUP), Some("billing"));
    let first = p.header(dlq_headers::FIRST_FAILURE).unwrap();
    let last = p.header(dlq_headers::LAST_FAILURE).unwrap();
    assert!(first < last, "{first} < {last}");
    let rj = by_id(rejected.id());
    assert_eq!(rj.header(dlq_headers::ATTEMPTS), Some("1"), "reject goes to the DLQ at once");
    assert_eq!(rj.header(dlq_headers::REASON), Some("malformed order"));
    // Dead-lettered events count as done: billing's lag is 0.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let lag: u64 = broker
        .describe_group("billing")
        .unwrap()
        .partitions
        .iter()
        .filter(|p| p.topic == "orders")
        .map(|p| p.lag)
        .sum();
    assert_eq!(lag, 0);

    // Replay: billing sees both again; shipping sees nothing new.
    assert_eq!(broker.dlq_replay("billing").await.unwrap(), 2);
    assert!(broker.dlq_list("billing", 10).unwrap().is_empty());
    let replayed = drain(&billing, 2, Duration::from_secs(5)).await;
    let mut ids: Vec<&str> = replayed.iter().map(|d| d.event().id()).collect();
    ids.sort();
    let mut want = vec![poison.id(), rejected.id()];
    want.sort();
    assert_eq!(ids, want);
    assert!(replayed.iter().all(|d| d.event().header(dlq_headers::REPLAYS) == Some("1")));
    assert!(shipping.poll(10, Duration::from_millis(300)).await.unwrap().is_empty(), "other groups never see replays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_stops_after_replays_max_and_purge_empties() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    broker.create_topic("orders", TopicConfig::default()).unwrap();
    broker.create_group("g", GroupConfig { replays_max: 1, ..config(1) }).unwrap();
    broker.publish("orders", event(Some("k"), 1)).await.unwrap();
    let m = broker.join("g", MemberConfig::default()).unwrap();
    for round in 0..2 {
        let d = loop {
            if let Some(d) = m.poll(1, Duration::from_secs(2)).await.unwrap().pop() {
                break d;
            }
        };
        m.reject(&d, "still bad").await.unwrap();
        assert_eq!(broker.dlq_list("g", 10).unwrap().len(), 1, "round {round}");
        let replayed = broker.dlq_replay("g").await.unwrap();
        assert_eq!(replayed, if round == 0 { 1 } else { 0 }, "round {round}");
    }
    // The twice-failed event stays in the DLQ: the replay counter stopped the loop.
    assert_eq!(broker.dlq_list("g", 10).unwrap().len(), 1);
    broker.dlq_purge("g").await.unwrap();
    assert!(broker.dlq_list("g", 10).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_dlq_refuses_more_and_keeps_the_event_pending() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    broker.create_topic("orders", TopicConfig::default()).unwrap();
    broker.create_group("g", GroupConfig { dlq_events_max: 1, ..config(1) }).unwrap();
    broker.publish_batch("orders", vec![event(Some("a"), 1), event(Some("b"), 2)]).await.unwrap();
    let m = broker.join("g", MemberConfig::default()).unwrap();
    let ds = m.poll(2, Duration::from_secs(2)).await.unwrap();
    assert_eq!(ds.len(), 2);
    m.reject(&ds[0], "bad").await.unwrap();
    let err = m.reject(&ds[1], "bad too").await.unwrap_err();
    assert_eq!(err.to_string(), "dead letters would be 2; the limit is 1 (dlq_events_max)");
    assert_eq!(broker.dlq_list("g", 10).unwrap().len(), 1);
    // Not lost: the group's position stays before it.
    let info = broker.describe_group("g").unwrap();
    assert_eq!(info.partitions.iter().find(|p| p.topic == "orders").unwrap().lag, 1);
}

const REPLAY_DIR_VAR: &str = "HERALD_BROKER_REPLAY_CRASH_DIR";
const REPLAY_LETTERS: u64 = 200;

/// The child of `a_replay_killed_at_any_moment_loses_no_dead_letter`: replays the DLQ in a loop
/// until it is killed. Every letter is kept (`replays_max` 0), so each replay writes them all
/// back to the DLQ and drops the old copies.
#[test]
fn replay_crash_child() {
    let Ok(dir) = std::env::var(REPLAY_DIR_VAR) else { return };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let broker = open(std::path::Path::new(&dir));
        loop {
            broker.dlq_replay("g").await.unwrap();
        }
    });
}

/// Was a bug: `dlq_replay` emptied the DLQ and then wrote back the letters it keeps, so a crash
/// (or an error) in between lost them. A replay now writes first and drops old copies after:
/// a SIGKILL at any moment leaves every dead letter in the DLQ (some perhaps twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_killed_at_any_moment_loses_no_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    let mut ids = std::collections::BTreeSet::new();
    {
        let broker = open(dir.path());
        broker.create_topic("orders", TopicConfig::default()).unwrap();
        broker.create_group("g", GroupConfig { replays_max: 0, ..config(1) }).unwrap();
        let events: Vec<_> = (0..REPLAY_LETTERS).map(|i| event(Some(&format!("k{i}")), i)).collect();
        ids.extend(events.iter().map(|e| e.id().to_owned()));
        broker.publish_batch("orders", events).await.unwrap();
        let m = broker.join("g", MemberConfig::default()).unwrap();
        let mut rejected = 0;
        while rejected < REPLAY_LETTERS {
            for d in m.poll(256, Duration::from_millis(100)).await.unwrap() {
                m.reject(&d, "poison").await.unwrap();
                rejected += 1;
            }
        }
        drop(m);
        assert_eq!(broker.dlq_list("g", usize::MAX).unwrap().len() as u64, REPLAY_LETTERS);
        broker.close().await.unwrap();
    }
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rng();
    for cycle in 0..6 {
        let mut child = std::process::Command::new(&exe)
            .args(["--exact", "dlq::replay_crash_child", "--test-threads", "1"])
            .env(REPLAY_DIR_VAR, dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pause = Duration::from_millis(rand::Rng::random_range(&mut rng, 150..600));
        tokio::time::sleep(pause).await;
        child.kill().unwrap();
        child.wait().unwrap();
        let broker = open(dir.path());
        let letters: std::collections::BTreeSet<String> =
            broker.dlq_list("g", usize::MAX).unwrap().into_iter().map(|l| l.event.id().to_owned()).collect();
        let lost: Vec<&String> = ids.difference(&letters).collect();
        assert!(lost.is_empty(), "cycle {cycle}: {} dead letters lost by a killed replay", lost.len());
        broker.close().await.unwrap();
    }
}
