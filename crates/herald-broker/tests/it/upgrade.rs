//! Data directories are forever: a data directory written by an earlier broker opens and behaves
//! exactly as it did then.
//!
//! `tests/fixtures/data-v1-2026-11-30` was written by main at df9ce75 (2026-11-30) with the
//! generator pasted in `tests/fixtures/README.md`, which also says what state it holds. Every
//! expected value below is what that broker reported, at close and after reopening a copy.
//! The test runs on a copy: the fixture itself is never opened in place.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use herald_broker::{Broker, BrokerConfig, Durability, GroupInfo, MemberConfig, OrderingMode, StartFrom, dlq_headers};
use herald_core::{Event, Timestamp};

use crate::common::drain;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/data-v1-2026-11-30");
/// The fixture's dedupe window: 100 years.
const DEDUPE_WINDOW_MS: u64 = 3_153_600_000_000;
/// 2026-11-30T12:00:00Z, the base of the fixture's event times.
const BASE_SECS: i64 = 1_796_040_000;
/// Where `order-{i}` is stored: (partition, offset). Keys k0, k1 are in partition 2, k2, k5 in
/// partition 0, k3, k4 in partition 1.
const ORDERS_AT: [(u32, u64); 30] = [
    (2, 0),
    (2, 1),
    (0, 0),
    (1, 0),
    (1, 1),
    (0, 1),
    (2, 2),
    (2, 3),
    (0, 2),
    (1, 2),
    (1, 3),
    (0, 3),
    (2, 4),
    (2, 5),
    (0, 4),
    (1, 4),
    (1, 5),
    (0, 5),
    (2, 6),
    (2, 7),
    (0, 6),
    (1, 6),
    (1, 7),
    (0, 7),
    (2, 8),
    (2, 9),
    (0, 8),
    (1, 8),
    (1, 9),
    (0, 9),
];

/// `order-{i}` exactly as the fixture's generator published it (to topic `orders`).
fn order(i: usize) -> Event {
    Event::builder("order.created")
        .id(format!("order-{i}"))
        .source("/fixture")
        .time(Timestamp::from_unix_nanos((BASE_SECS + i as i64) * 1_000_000_000))
        .key(format!("k{}", i % 6))
        .data(format!("{{\"n\":{i}}}").into_bytes(), "application/json")
        .build()
        .unwrap()
}

/// `audit-{i}` exactly as the fixture's generator published it (to topic `audit`, no key).
fn audit(i: usize) -> Event {
    Event::builder("audit.entry")
        .id(format!("audit-{i}"))
        .source("/fixture")
        .time(Timestamp::from_unix_nanos((BASE_SECS + 100 + i as i64) * 1_000_000_000))
        .data(format!("{{\"n\":{i}}}").into_bytes(), "application/json")
        .build()
        .unwrap()
}

/// An event published by this test, after the fixture was opened.
fn later(i: usize) -> Event {
    Event::builder("order.created")
        .id(format!("after-{i}"))
        .source("/fixture")
        .key(format!("k{i}"))
        .data(format!("{{\"after\":{i}}}").into_bytes(), "application/json")
        .build()
        .unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Per `(topic, partition)`: `(committed, latest)`; checks `lag` and that nothing is in flight.
fn positions(info: &GroupInfo) -> BTreeMap<(String, u32), (u64, u64)> {
    info.partitions
        .iter()
        .map(|p| {
            assert_eq!(p.lag, p.latest - p.committed, "{p:?}");
            assert_eq!(p.in_flight, 0, "{p:?}");
            ((p.topic.clone(), p.partition), (p.committed, p.latest))
        })
        .collect()
}

fn expect(entries: &[(&str, u32, u64, u64)]) -> BTreeMap<(String, u32), (u64, u64)> {
    entries.iter().map(|(t, p, c, l)| (((*t).to_owned(), *p), (*c, *l))).collect()
}

/// `(partition, earliest, latest, bytes, segments)` of each partition.
fn partitions(broker: &Broker, topic: &str) -> Vec<(u32, u64, u64, u64, usize)> {
    let info = broker.describe_topic(topic).unwrap();
    info.partitions.iter().map(|p| (p.partition, p.earliest_offset, p.latest_offset, p.bytes, p.segments)).collect()
}

fn number(d: &herald_broker::Delivery) -> usize {
    d.event().id().strip_prefix("order-").unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_written_by_main_of_2026_11_30_opens_and_behaves_identically() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(Path::new(FIXTURE), dir.path());
    let broker = Broker::open(dir.path(), BrokerConfig::default()).unwrap();

    // Topics: settings as created, every stored event still there.
    assert_eq!(broker.list_topics(), ["audit", "billing.dlq", "orders"]);
    let orders = broker.describe_topic("orders").unwrap();
    assert_eq!(orders.name, "orders");
    assert_eq!(orders.created_ms, 1_796_041_601_756);
    let c = &orders.config;
    assert_eq!(c.partitions, 3);
    assert_eq!(c.retention_ms, None);
    assert_eq!(c.retention_bytes, None);
    assert_eq!(c.durability, Durability::Always);
    assert_eq!(c.dedupe_window_ms, DEDUPE_WINDOW_MS);
    assert_eq!(c.max_event_bytes, 1_048_576);
    assert_eq!(c.segment_bytes_max, 134_217_728);
    let orders_files = vec![(0, 0, 10, 1054, 1), (1, 0, 10, 1054, 1), (2, 0, 10, 1052, 1)];
    assert_eq!(partitions(&broker, "orders"), orders_files);

    let audit_topic = broker.describe_topic("audit").unwrap();
    assert_eq!(audit_topic.created_ms, 1_796_041_601_759);
    let c = &audit_topic.config;
    assert_eq!(c.partitions, 1);
    assert_eq!(c.retention_ms, Some(86_400_000));
    assert_eq!(c.retention_bytes, None);
    assert_eq!(c.durability, Durability::Always);
    assert_eq!(c.dedupe_window_ms, DEDUPE_WINDOW_MS);
    assert_eq!(c.max_event_bytes, 1_048_576);
    assert_eq!(c.segment_bytes_max, 134_217_728);
    // The audit events are older than the retention, but they are in the active segment, which
    // retention never deletes (this test publishes nothing to `audit`, so it never rolls).
    assert_eq!(partitions(&broker, "audit"), vec![(0, 0, 5, 375, 1)]);

    let dlq_topic = broker.describe_topic("billing.dlq").unwrap();
    assert_eq!(dlq_topic.created_ms, 1_796_041_601_774);
    let c = &dlq_topic.config;
    assert_eq!(c.partitions, 1);
    assert_eq!(c.retention_ms, None);
    assert_eq!(c.dedupe_window_ms, 0);
    assert_eq!(c.max_event_bytes, 67_108_864);
    assert_eq!(partitions(&broker, "billing.dlq"), vec![(0, 0, 2, 589, 1)]);

    // Groups: settings as created, positions as left.
    assert_eq!(broker.list_groups(), ["billing", "shipping"]);
    let billing = broker.describe_group("billing").unwrap();
    assert!(billing.members.is_empty());
    let c = &billing.config;
    assert_eq!(c.topics, ["orders"]);
    assert_eq!(c.start, StartFrom::Earliest);
    assert_eq!(c.ordering, OrderingMode::Key);
    assert_eq!(c.ack_timeout_ms, 30_000);
    assert_eq!(c.session_timeout_ms, 10_000);
    assert_eq!(c.retry.max_attempts, 3);
    assert_eq!(c.retry.backoff_base_ms, 1);
    assert_eq!(c.retry.backoff_factor, 2.0);
    assert_eq!(c.retry.backoff_max_ms, 10);
    assert_eq!(c.retry.jitter, 0.0);
    assert_eq!(c.dlq_events_max, 1_000_000);
    assert_eq!(c.replays_max, 3);
    assert!(c.blocking_retries);
    assert_eq!(c.state_durability, Durability::Always);
    // orders/0: offset 0 (order-2) dead-lettered, 1 (order-5) waits, 2, 4, 6, 8 acked above it.
    // orders/1: offsets 0 (order-3) and 1 (order-4) were delivered, nothing acked.
    // orders/2: everything acked or dead-lettered (order-1, offset 1).
    assert_eq!(positions(&billing), expect(&[("orders", 0, 1, 10), ("orders", 1, 0, 10), ("orders", 2, 10, 10)]));

    let shipping = broker.describe_group("shipping").unwrap();
    assert!(shipping.members.is_empty());
    let c = &shipping.config;
    assert_eq!(c.topics, ["orders", "audit"]);
    assert_eq!(c.start, StartFrom::Latest);
    assert_eq!(c.ordering, OrderingMode::None);
    assert_eq!(c.ack_timeout_ms, 30_000);
    assert_eq!(c.session_timeout_ms, 10_000);
    assert_eq!(c.retry.max_attempts, 5);
    assert_eq!(c.retry.backoff_base_ms, 100);
    assert_eq!(c.retry.backoff_factor, 2.0);
    assert_eq!(c.retry.backoff_max_ms, 60_000);
    assert_eq!(c.retry.jitter, 0.2);
    assert_eq!(c.dlq_events_max, 1_000_000);
    assert_eq!(c.replays_max, 3);
    assert!(c.blocking_retries);
    assert_eq!(c.state_durability, Durability::Always);
    assert_eq!(
        positions(&shipping),
        expect(&[("audit", 0, 5, 5), ("orders", 0, 10, 10), ("orders", 1, 10, 10), ("orders", 2, 10, 10)])
    );

    // Dead letters: the originals, unchanged, plus every dlq header.
    let letter = |e: Event, reason: &str, attempts: &str, partition: &str, offset: &str, first: &str, last: &str| {
        e.to_builder()
            .header(dlq_headers::REASON, reason)
            .header(dlq_headers::ATTEMPTS, attempts)
            .header(dlq_headers::TOPIC, "orders")
            .header(dlq_headers::PARTITION, partition)
            .header(dlq_headers::OFFSET, offset)
            .header(dlq_headers::GROUP, "billing")
            .header(dlq_headers::FIRST_FAILURE, first)
            .header(dlq_headers::LAST_FAILURE, last)
            .build()
            .unwrap()
    };
    let letters = broker.dlq_list("billing", 100).unwrap();
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert_eq!(letters[0].dlq_offset, 0);
    assert_eq!(
        letters[0].event,
        letter(
            order(2),
            "fixture: malformed order",
            "1",
            "0",
            "0",
            "2026-11-30T12:26:41.774Z",
            "2026-11-30T12:26:41.774Z"
        )
    );
    assert_eq!(letters[1].dlq_offset, 1);
    assert_eq!(
        letters[1].event,
        letter(
            order(1),
            "fixture: payment declined",
            "3",
            "2",
            "1",
            "2026-11-30T12:26:41.776Z",
            "2026-11-30T12:26:41.782Z"
        )
    );
    assert!(broker.dlq_list("shipping", 100).unwrap().is_empty());

    // Dedupe survived: republishing any stored (source, id) stores nothing and answers with the
    // original's place.
    for (i, &(partition, offset)) in ORDERS_AT.iter().enumerate() {
        let r = broker.publish("orders", order(i)).await.unwrap();
        assert_eq!((&*r.topic, r.partition, r.offset, r.duplicate), ("orders", partition, offset, true), "order-{i}");
    }
    for i in 0..5 {
        let r = broker.publish("audit", audit(i)).await.unwrap();
        assert_eq!((&*r.topic, r.partition, r.offset, r.duplicate), ("audit", 0, i as u64, true), "audit-{i}");
    }
    assert_eq!(partitions(&broker, "orders"), orders_files);
    assert_eq!(partitions(&broker, "audit"), vec![(0, 0, 5, 375, 1)]);

    // billing: a member gets exactly what was not acked nor dead-lettered, each event once, keys
    // in order, and attempt counts continue: order-3 was delivered twice (now its 3rd attempt),
    // order-4 once (2nd), order-5 twice (3rd, its last); the blocked rest is new (1st).
    let member = broker.join("billing", MemberConfig::default()).unwrap();
    let got = drain(&member, 15, Duration::from_secs(10)).await;
    let mut attempts = BTreeMap::new();
    let mut per_key: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for d in &got {
        let n = number(d);
        assert_eq!(d.event(), &order(n));
        assert_eq!((&*d.stored.topic, d.stored.partition, d.stored.offset), ("orders", ORDERS_AT[n].0, ORDERS_AT[n].1));
        assert!(attempts.insert(n, d.attempt).is_none(), "order-{n} delivered twice");
        per_key.entry(format!("k{}", n % 6)).or_default().push(n);
    }
    let mut expected: BTreeMap<usize, u32> =
        [3, 4, 5, 9, 10, 11, 15, 16, 17, 21, 22, 23, 27, 28, 29].into_iter().map(|n| (n, 1)).collect();
    expected.insert(3, 3);
    expected.insert(4, 2);
    expected.insert(5, 3);
    assert_eq!(attempts, expected);
    for (key, ns) in &per_key {
        assert!(ns.is_sorted(), "{key} out of order: {ns:?}");
    }
    assert!(member.poll(64, Duration::from_millis(200)).await.unwrap().is_empty(), "nothing else is pending");
    assert_eq!(
        positions(&broker.describe_group("billing").unwrap()),
        expect(&[("orders", 0, 10, 10), ("orders", 1, 10, 10), ("orders", 2, 10, 10)])
    );
    drop(member);
    assert_eq!(broker.dlq_list("billing", 100).unwrap().len(), 2);

    // shipping: lag 0, so only what is published from now on.
    let member = broker.join("shipping", MemberConfig::default()).unwrap();
    assert!(member.poll(64, Duration::from_millis(200)).await.unwrap().is_empty(), "shipping had consumed everything");
    let mut placed = Vec::new();
    for i in 0..3 {
        let r = broker.publish("orders", later(i)).await.unwrap();
        assert!(!r.duplicate);
        placed.push((r.partition, r.offset));
    }
    // The partitioner still maps k0, k1, k2 where it did.
    assert_eq!(placed, [(2, 10), (2, 11), (0, 10)]);
    let got = drain(&member, 3, Duration::from_secs(10)).await;
    let mut ids: Vec<(&str, u32)> = got.iter().map(|d| (d.event().id(), d.attempt)).collect();
    ids.sort();
    assert_eq!(ids, [("after-0", 1), ("after-1", 1), ("after-2", 1)]);
    assert!(member.poll(64, Duration::from_millis(200)).await.unwrap().is_empty());
    let shipping_after =
        expect(&[("audit", 0, 5, 5), ("orders", 0, 11, 11), ("orders", 1, 10, 10), ("orders", 2, 12, 12)]);
    assert_eq!(positions(&broker.describe_group("shipping").unwrap()), shipping_after);
    drop(member);

    // Close and reopen: the positions reached here are durable.
    broker.close().await.unwrap();
    drop(broker);
    let broker = Broker::open(dir.path(), BrokerConfig::default()).unwrap();
    assert_eq!(broker.list_topics(), ["audit", "billing.dlq", "orders"]);
    assert_eq!(broker.list_groups(), ["billing", "shipping"]);
    assert_eq!(
        positions(&broker.describe_group("billing").unwrap()),
        expect(&[("orders", 0, 10, 11), ("orders", 1, 10, 10), ("orders", 2, 10, 12)])
    );
    assert_eq!(positions(&broker.describe_group("shipping").unwrap()), shipping_after);
    assert_eq!(broker.dlq_list("billing", 100).unwrap().len(), 2);
    let r = broker.publish("orders", order(0)).await.unwrap();
    assert_eq!((r.partition, r.offset, r.duplicate), (2, 0, true));
    let r = broker.publish("orders", later(1)).await.unwrap();
    assert_eq!((r.partition, r.offset, r.duplicate), (2, 11, true));
    // billing has exactly the three new events left; shipping nothing.
    let member = broker.join("billing", MemberConfig::default()).unwrap();
    let got = drain(&member, 3, Duration::from_secs(10)).await;
    let mut ids: Vec<(&str, u32)> = got.iter().map(|d| (d.event().id(), d.attempt)).collect();
    ids.sort();
    assert_eq!(ids, [("after-0", 1), ("after-1", 1), ("after-2", 1)]);
    assert!(member.poll(64, Duration::from_millis(200)).await.unwrap().is_empty());
    drop(member);
    let member = broker.join("shipping", MemberConfig::default()).unwrap();
    assert!(member.poll(64, Duration::from_millis(200)).await.unwrap().is_empty());
    drop(member);
    broker.close().await.unwrap();
}
