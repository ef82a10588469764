//! Regression tests from review.

use std::time::{Duration, Instant};

use herald_broker::partitioner::partition_for_key;
use herald_broker::{Broker, Delivery, Durability, GroupConfig, Member, MemberConfig, RetryPolicy, TopicConfig};
use herald_core::Event;

use crate::common::{drain, event, number, open};

fn fast_topic(partitions: u32) -> TopicConfig {
    TopicConfig { partitions, durability: Durability::Interval { ms: 20 }, ..TopicConfig::default() }
}

/// A key that routes to `partition` of `partitions`.
fn key_for(partition: u32, partitions: u32) -> String {
    (0..).map(|i| format!("k{i}")).find(|k| partition_for_key(k.as_bytes(), partitions) == partition).unwrap()
}

/// Polls until at least one delivery arrives or `timeout` passes.
async fn poll_some(m: &Member, max: usize, timeout: Duration) -> Vec<Delivery> {
    let deadline = Instant::now() + timeout;
    loop {
        let got = m.poll(max, Duration::from_millis(50)).await.unwrap();
        if !got.is_empty() || Instant::now() >= deadline {
            return got;
        }
    }
}

/// `nack` with a caller-chosen delay: a very long delay (meaning "much later") overflows
/// `Instant + delay` while the group lock is held, panicking and poisoning the whole group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_nack_with_a_huge_delay_does_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    broker.create_topic("t", fast_topic(1)).unwrap();
    broker.create_group("g", GroupConfig::for_topics(["t"])).unwrap();
    broker.publish_batch("t", vec![event(Some("a"), 0), event(Some("b"), 1)]).await.unwrap();
    let m = broker.join("g", MemberConfig::default()).unwrap();
    let got = poll_some(&m, 2, Duration::from_secs(2)).await;
    assert_eq!(got.len(), 2);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        m.nack(&got[0], Some(Duration::MAX), "later").unwrap();
    }));
    let after = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| m.ack(&got[1]).is_ok()));
    std::mem::forget(m); // dropping it would panic on the poisoned lock (and abort the run)
    assert!(r.is_ok(), "nack with a long delay panicked");
    assert!(matches!(after, Ok(true)), "the group is unusable after the nack");
}

/// `poll(max, Duration::MAX)` ("wait as long as it takes") panics on `Instant + wait`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_poll_with_an_unbounded_wait_does_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    broker.create_topic("t", fast_topic(1)).unwrap();
    broker.create_group("g", GroupConfig::for_topics(["t"])).unwrap();
    broker.publish("t", event(Some("a"), 0)).await.unwrap();
    let m = broker.join("g", MemberConfig::default()).unwrap();
    let got = tokio::spawn(async move { m.poll(1, Duration::MAX).await.map(|v| v.len()) }).await;
    assert!(matches!(got, Ok(Ok(1))), "{got:?}");
}

/// Deleting a subscribed topic drops its partitions' in-flight events without giving the
/// members their in-flight budget back: a member with `max_in_flight` 1 never receives again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_deleting_a_topic_returns_the_in_flight_budget() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    broker.create_topic("a", fast_topic(1)).unwrap();
    broker.create_topic("b", fast_topic(1)).unwrap();
    broker.create_group("g", GroupConfig::for_topics(["a", "b"])).unwrap();
    broker.publish("a", event(Some("x"), 0)).await.unwrap();
    let m = broker.join("g", MemberConfig { id: None, max_in_flight: 1 }).unwrap();
    let got = poll_some(&m, 1, Duration::from_secs(2)).await;
    assert_eq!(&*got[0].stored.topic, "a");
    broker.delete_topic("a").unwrap();
    broker.publish("b", event(Some("y"), 1)).await.unwrap();
    let got = poll_some(&m, 1, Duration::from_secs(2)).await;
    assert_eq!(got.len(), 1, "the event of topic b is never delivered");
    assert_eq!(number(&got[0]), 1);
}

/// A topic deleted and created again is read from its earliest event (`sync_topology` writes a
/// `Start` at 0), but store replay keeps the old partition's position (`Start` is ignored for a
/// known partition): after a restart the group skips the new topic's first events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_a_recreated_topic_is_read_from_its_start_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let broker = open(dir.path());
        broker.create_topic("t", fast_topic(1)).unwrap();
        broker.create_group("g", GroupConfig::for_topics(["t"])).unwrap();
        broker.publish_batch("t", (0..5).map(|i| event(Some("k"), i)).collect()).await.unwrap();
        let m = broker.join("g", MemberConfig::default()).unwrap();
        assert_eq!(drain(&m, 5, Duration::from_secs(2)).await.len(), 5);
        tokio::time::sleep(Duration::from_millis(herald_broker::COMMIT_INTERVAL_MS * 3)).await;
        drop(m);
        broker.delete_topic("t").unwrap();
        broker.create_topic("t", fast_topic(1)).unwrap();
        broker.publish_batch("t", (100..103).map(|i| event(Some("k"), i)).collect()).await.unwrap();
        // The group picks the new topic up from offset 0 (its timer syncs the topology).
        tokio::time::sleep(Duration::from_millis(herald_broker::COMMIT_INTERVAL_MS * 3)).await;
        let info = broker.describe_group("g").unwrap();
        assert_eq!(info.partitions.iter().find(|p| p.topic == "t").unwrap().committed, 0);
        broker.close().await.unwrap();
    }
    let broker = open(dir.path());
    let committed = broker.describe_group("g").unwrap().partitions.iter().find(|p| p.topic == "t").unwrap().committed;
    let m = broker.join("g", MemberConfig::default()).unwrap();
    assert_eq!(committed, 0, "the old topic's position came back");
    let got: Vec<u64> = drain(&m, 3, Duration::from_secs(2)).await.iter().map(number).collect();
    assert_eq!(got, vec![100, 101, 102], "events of the recreated topic were skipped");
}

/// When one partition was overtaken by retention, `deliver` returns the `retention_overtook`
/// error from the middle of its loop, after it already picked events of an earlier partition:
/// those are in flight (attempt counted) but never handed to the member. With `max_attempts` 1
/// the ack timeout then dead-letters an event that was never delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_retention_overtook_error_does_not_swallow_picked_events() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    let topic = TopicConfig {
        partitions: 2,
        segment_bytes_max: 1024,
        retention_bytes: Some(2048),
        durability: Durability::Os,
        ..TopicConfig::default()
    };
    broker.create_topic("t", topic).unwrap();
    let retry = RetryPolicy { max_attempts: 1, ..RetryPolicy::default() };
    broker.create_group("g", GroupConfig { retry, ack_timeout_ms: 300, ..GroupConfig::for_topics(["t"]) }).unwrap();
    let (k0, k1) = (key_for(0, 2), key_for(1, 2));
    for i in 0..200u64 {
        broker.publish("t", event(Some(&k1), 1000 + i)).await.unwrap();
    }
    assert!(broker.enforce_retention().unwrap() > 0);
    // Two events of one key on partition 0: the second is delivered after the first is acked.
    broker.publish_batch("t", vec![event(Some(&k0), 0), event(Some(&k0), 1)]).await.unwrap();
    let m = broker.join("g", MemberConfig::default()).unwrap();
    // A poll reports the overtaken partition 1 (before it picks anything)...
    let mut reported = false;
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while (!reported || seen.len() < 2) && Instant::now() < deadline {
        match m.poll(10, Duration::from_millis(50)).await {
            Ok(got) => {
                for d in got {
                    if number(&d) < 2 {
                        seen.push((number(&d), d.attempt));
                    }
                    m.ack(&d).unwrap();
                }
            }
            Err(e) => {
                assert_eq!(e.code().as_str(), "retention_overtook", "{e}");
                assert!(!reported, "the overtaken partition was reported twice");
                reported = true;
            }
        }
    }
    assert!(reported, "the overtaken partition was never reported");
    // ...and events 0 and 1 still come, in order, each as a first attempt.
    assert_eq!(seen, vec![(0, 1), (1, 1)], "events picked around the report were lost or counted twice");
    assert!(broker.dlq_list("g", 10).unwrap().is_empty(), "an event was dead-lettered without ever being delivered");
}

/// A valid event near the header limit cannot get the 8 `dlq*` headers: building the dead
/// letter fails, the whole batch fails every tick, and every other dead letter of the group is
/// stuck behind it forever (their keys stay blocked, the position never moves).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_one_unwritable_dead_letter_does_not_block_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    broker.create_topic("t", fast_topic(1)).unwrap();
    broker.create_group("g", GroupConfig::for_topics(["t"])).unwrap();
    let mut b = Event::builder("test.event").key("a").data(b"0".to_vec(), "text/plain");
    for i in 0..60 {
        b = b.header(format!("h{i}"), "v");
    }
    let heavy = b.build().unwrap();
    broker.publish_batch("t", vec![heavy, event(Some("b"), 1)]).await.unwrap();
    let m = broker.join("g", MemberConfig::default()).unwrap();
    let got = poll_some(&m, 2, Duration::from_secs(2)).await;
    assert_eq!(got.len(), 2);
    let _ = m.reject(&got[0], "bad").await;
    let _ = m.reject(&got[1], "bad").await;
    let deadline = Instant::now() + Duration::from_secs(2);
    while broker.dlq_list("g", 10).unwrap().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let letters = broker.dlq_list("g", 10).unwrap();
    assert!(letters.iter().any(|l| &l.event.data()[..] == b"1"), "the plain event never reached the DLQ");
}

/// A group name is valid up to 200 characters, but its DLQ topic `<group>.dlq` is then an
/// invalid topic name: nothing can ever be dead-lettered and the events stay pending forever.
/// Fixed by limiting group names to what leaves room for `.replay`: the longest allowed name
/// dead-letters, one more character is refused up front.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_a_long_group_name_can_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    broker.create_topic("t", fast_topic(1)).unwrap();
    let too_long = "g".repeat(herald_broker::GROUP_NAME_BYTES_MAX + 1);
    let err = broker.create_group(&too_long, GroupConfig::for_topics(["t"])).unwrap_err();
    assert_eq!(err.code().as_str(), "invalid_group_name");
    assert!(err.to_string().contains("1 to 193 characters"), "{err}");
    let name = "g".repeat(herald_broker::GROUP_NAME_BYTES_MAX);
    broker.create_group(&name, GroupConfig::for_topics(["t"])).unwrap();
    broker.publish("t", event(Some("a"), 0)).await.unwrap();
    let m = broker.join(&name, MemberConfig::default()).unwrap();
    let got = poll_some(&m, 1, Duration::from_secs(2)).await;
    let r = m.reject(&got[0], "bad").await;
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(broker.dlq_list(&name, 10).unwrap().len(), 1);
}

/// `dlq_replay` lists the dead letters, publishes them to the replay topic (an `.await`), then
/// deletes the DLQ. A dead letter written in between (the timer or a `reject` writes them at
/// any time) is deleted without being replayed: the event is lost for the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_dlq_replay_does_not_delete_letters_written_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    broker.create_topic("t", fast_topic(1)).unwrap();
    broker.create_group("g", GroupConfig::for_topics(["t"])).unwrap();
    broker.publish_batch("t", vec![event(Some("a"), 0), event(Some("b"), 1)]).await.unwrap();
    let m = broker.join("g", MemberConfig::default()).unwrap();
    let got = poll_some(&m, 2, Duration::from_secs(2)).await;
    assert_eq!(got.len(), 2);
    m.reject(&got[0], "bad").await.unwrap();
    assert_eq!(broker.dlq_list("g", 10).unwrap().len(), 1);

    // The operator starts a replay while another event is dead-lettered (fixed by serialising
    // DLQ writes with replays: whichever goes first, no dead letter is deleted unreplayed).
    let b2 = broker.clone();
    let replay = tokio::spawn(async move { b2.dlq_replay("g").await });
    m.reject(&got[1], "bad too").await.unwrap();
    let replayed_count = replay.await.unwrap().unwrap();
    assert!((1..=2).contains(&replayed_count));

    // Event 1 must be somewhere: still in the DLQ, or replayed to the group.
    let in_dlq = broker.dlq_list("g", 10).unwrap().iter().any(|l| &l.event.data()[..] == b"1");
    let replayed: Vec<u64> = drain(&m, 2, Duration::from_secs(1)).await.iter().map(number).collect();
    assert!(in_dlq || replayed.contains(&1), "dead letter of event 1 lost (replayed {replayed:?})");
}

/// Joining again with the same stable id resets the member's in-flight count while its
/// deliveries are still in flight: it then holds more than `max_in_flight`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_rejoining_with_the_same_id_keeps_the_in_flight_limit() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    broker.create_topic("t", fast_topic(1)).unwrap();
    broker.create_group("g", GroupConfig::for_topics(["t"])).unwrap();
    broker.publish_batch("t", (0..4).map(|i| event(Some(&format!("k{i}")), i)).collect()).await.unwrap();
    let cfg = || MemberConfig { id: Some("a".into()), max_in_flight: 2 };
    let m1 = broker.join("g", cfg()).unwrap();
    let first = poll_some(&m1, 10, Duration::from_secs(2)).await;
    assert_eq!(first.len(), 2);
    let m2 = broker.join("g", cfg()).unwrap();
    let second = m2.poll(10, Duration::from_millis(300)).await.unwrap();
    let held = broker.describe_group("g").unwrap().partitions[0].in_flight;
    assert!(held <= 2, "member a holds {held} unacked events with max_in_flight 2 ({} more)", second.len());
    std::mem::forget(m1);
}

/// Every event is within `max_event_bytes`, but one partition's share of a batch goes to the
/// log as one append, which the log refuses above its 16 MiB batch limit: a valid
/// `publish_batch` fails every time it is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_a_batch_of_valid_events_can_be_published() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path(), herald_broker::BrokerConfig::default()).unwrap();
    broker.create_topic("t", TopicConfig { durability: Durability::Os, ..TopicConfig::default() }).unwrap();
    let events: Vec<Event> = (0..17)
        .map(|_| Event::builder("big").data(vec![7u8; 1_000_000], "application/octet-stream").build().unwrap())
        .collect();
    let r = broker.publish_batch("t", events).await;
    assert!(r.is_ok(), "{:?}", r.err());
}

/// An ack that answers an attempt which already timed out must not settle its redelivery to the
/// same member (same generation): the redelivered attempt is still in flight afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_a_late_ack_of_a_timed_out_attempt_does_not_settle_the_redelivery() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    broker.create_topic("t", fast_topic(1)).unwrap();
    let retry = herald_broker::RetryPolicy { backoff_base_ms: 1, backoff_max_ms: 1, ..Default::default() };
    broker.create_group("g", GroupConfig { ack_timeout_ms: 100, retry, ..GroupConfig::for_topics(["t"]) }).unwrap();
    broker.publish("t", event(Some("a"), 0)).await.unwrap();
    let m = broker.join("g", MemberConfig::default()).unwrap();
    let first = poll_some(&m, 1, Duration::from_secs(2)).await.pop().unwrap();
    assert_eq!(first.attempt, 1);
    // Let it time out and come back.
    let second = poll_some(&m, 1, Duration::from_secs(3)).await.pop().unwrap();
    assert_eq!(second.attempt, 2);
    let err = m.ack(&first).unwrap_err();
    assert_eq!(err.code().as_str(), "not_in_flight", "{err}");
    assert_eq!(broker.describe_group("g").unwrap().partitions[0].in_flight, 1);
    m.ack(&second).unwrap();
}
