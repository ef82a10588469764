#![allow(dead_code)]

use std::time::Duration;

use herald_broker::{Broker, BrokerConfig, Delivery, Member};
use herald_core::Event;

pub fn open(dir: &std::path::Path) -> Broker {
    Broker::open(dir, BrokerConfig::default()).unwrap()
}

/// An event of type `t` with key `key` whose data is `n` as text.
pub fn event(key: Option<&str>, n: u64) -> Event {
    let mut b = Event::builder("test.event").data(n.to_string().into_bytes(), "text/plain");
    if let Some(k) = key {
        b = b.key(k);
    }
    b.build().unwrap()
}

pub fn number(d: &Delivery) -> u64 {
    std::str::from_utf8(d.event().data()).unwrap().parse().unwrap()
}

/// Polls until `n` deliveries were acked or `timeout` passes; returns them.
pub async fn drain(member: &Member, n: usize, timeout: Duration) -> Vec<Delivery> {
    let deadline = std::time::Instant::now() + timeout;
    let mut got = Vec::new();
    while got.len() < n && std::time::Instant::now() < deadline {
        for d in member.poll(256, Duration::from_millis(100)).await.unwrap() {
            member.ack(&d).unwrap();
            got.push(d);
        }
    }
    got
}

/// The (first) segment file of a topic's partition in a broker's data directory.
pub fn segment_file(dir: &std::path::Path, topic: &str, partition: u32) -> std::path::PathBuf {
    std::fs::read_dir(dir.join("topics").join(topic).join("partitions").join(partition.to_string()))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "log"))
        .unwrap()
}
