//! Publish: keyed routing, batches, dedupe (also across restarts), size limits, backpressure.

use std::collections::HashMap;

use herald_broker::partitioner::partition_for_key;
use herald_broker::{Broker, BrokerConfig, Durability, TopicConfig};
use herald_core::Event;

use crate::common::{event, open};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_route_stably_and_unkeyed_events_spread() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    broker.create_topic("t", TopicConfig::with_partitions(8)).unwrap();
    let mut events = Vec::new();
    for i in 0..400u64 {
        events.push(event(Some(&format!("key-{}", i % 40)), i));
    }
    for i in 400..2000u64 {
        events.push(event(None, i));
    }
    let receipts = broker.publish_batch("t", events.clone()).await.unwrap();
    assert_eq!(receipts.len(), 2000);
    for (e, r) in events.iter().zip(&receipts) {
        if let Some(k) = e.key() {
            assert_eq!(r.partition, partition_for_key(k.as_bytes(), 8), "documented hash");
        }
        assert!(!r.duplicate);
    }
    // Per partition, offsets are dense and in publish order.
    let mut per: HashMap<u32, Vec<u64>> = HashMap::new();
    for r in &receipts {
        per.entry(r.partition).or_default().push(r.offset);
    }
    for offsets in per.values() {
        assert_eq!(*offsets, (0..offsets.len() as u64).collect::<Vec<_>>());
    }
    let unkeyed: Vec<u32> = receipts[400..].iter().map(|r| r.partition).collect();
    for p in 0..8 {
        let n = unkeyed.iter().filter(|&&x| x == p).count();
        assert!((120..280).contains(&n), "partition {p} got {n} of 1600 unkeyed events");
    }
    // Stored byte for byte.
    let r = &receipts[7];
    let stored = broker.read("t", r.partition, r.offset, 1).unwrap();
    assert_eq!(stored[0].event, events[7]);
    assert_eq!(&*stored[0].topic, "t");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn republished_event_ids_are_stored_once_also_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let e1 = event(Some("a"), 1);
    let e2 = event(None, 2);
    let first = {
        let broker = open(dir.path());
        broker.create_topic("t", TopicConfig::with_partitions(4)).unwrap();
        let first = broker.publish_batch("t", vec![e1.clone(), e2.clone()]).await.unwrap();
        let again = broker.publish_batch("t", vec![e1.clone(), e2.clone(), e1.clone()]).await.unwrap();
        for (a, f) in again.iter().zip(first.iter().chain(std::iter::once(&first[0]))) {
            assert!(a.duplicate);
            assert_eq!((a.partition, a.offset), (f.partition, f.offset));
        }
        // Same id from another source is another event.
        let other = e1.to_builder().source("/elsewhere").build().unwrap();
        assert!(!broker.publish("t", other).await.unwrap().duplicate);
        first
    }; // dropped without close: as after a crash, the logs recover
    let broker = open(dir.path());
    let again = broker.publish("t", e1.clone()).await.unwrap();
    assert!(again.duplicate, "dedupe must survive a restart");
    assert_eq!((again.partition, again.offset), (first[0].partition, first[0].offset));
    let total: u64 = broker.describe_topic("t").unwrap().partitions.iter().map(|p| p.latest_offset).sum();
    assert_eq!(total, 3);
    // Duplicates inside one batch are stored once.
    let e3 = event(Some("b"), 3);
    let r = broker.publish_batch("t", vec![e3.clone(), e3.clone()]).await.unwrap();
    assert_eq!(r[0].offset, r[1].offset);
    assert!(!r[0].duplicate && r[1].duplicate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_dedupe_window_stores_every_copy() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    broker.create_topic("t", TopicConfig { dedupe_window_ms: 0, ..TopicConfig::default() }).unwrap();
    let e = event(None, 1);
    broker.publish("t", e.clone()).await.unwrap();
    assert!(!broker.publish("t", e).await.unwrap().duplicate);
    assert_eq!(broker.describe_topic("t").unwrap().partitions[0].latest_offset, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_events_are_refused_with_the_topic_limit() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    broker.create_topic("small", TopicConfig { max_event_bytes: 1000, ..TopicConfig::default() }).unwrap();
    let big = Event::builder("x").data(vec![7u8; 2000], "application/octet-stream").build().unwrap();
    let err = broker.publish("small", big).await.unwrap_err();
    assert_eq!(err.code().as_str(), "event_too_large");
    assert!(err.to_string().contains("accepts at most 1000 (max_event_bytes)"), "{err}");
    assert_eq!(broker.describe_topic("small").unwrap().partitions[0].latest_offset, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_write_queue_answers_busy_and_stores_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let config = BrokerConfig { write_queue_events_max: 50, ..BrokerConfig::default() };
    let broker = Broker::open(dir.path(), config).unwrap();
    broker.create_topic("t", TopicConfig { durability: Durability::Always, ..TopicConfig::default() }).unwrap();
    let mut tasks = Vec::new();
    for i in 0..40u64 {
        let b = broker.clone();
        tasks.push(tokio::spawn(async move {
            let events: Vec<Event> = (0..10).map(|j| event(None, i * 10 + j)).collect();
            b.publish_batch("t", events).await
        }));
    }
    let mut busy = 0;
    let mut stored = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(r) => stored += r.len() as u64,
            Err(e) => {
                assert_eq!(e.code().as_str(), "busy");
                assert!(e.is_retryable());
                assert!(e.to_string().contains("write_queue_events_max"), "{e}");
                busy += 1;
            }
        }
    }
    assert!(busy > 0, "40 concurrent batches of 10 against a queue of 50 must meet backpressure");
    assert_eq!(broker.describe_topic("t").unwrap().partitions[0].latest_offset, stored);
}
