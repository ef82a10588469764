//! Topics: create, list, describe, delete, add partitions, durability of metadata, names, limits.

use herald_broker::{Broker, BrokerConfig, BrokerError, TopicConfig};

use crate::common::{event, open};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_lifecycle_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let broker = open(dir.path());
        let info = broker.create_topic("orders", TopicConfig::with_partitions(3)).unwrap();
        assert_eq!(info.partitions.len(), 3);
        broker.create_topic("audit.log-v2_x", TopicConfig::default()).unwrap();
        assert_eq!(broker.list_topics(), vec!["audit.log-v2_x", "orders"]);
        broker.publish("orders", event(Some("k"), 1)).await.unwrap();
        let err = broker.create_topic("orders", TopicConfig::default()).unwrap_err();
        assert_eq!(err.code().as_str(), "topic_exists");
        broker.add_partitions("orders", 5).unwrap();
        broker.close().await.unwrap();
    }
    let broker = open(dir.path());
    assert_eq!(broker.list_topics(), vec!["audit.log-v2_x", "orders"]);
    let info = broker.describe_topic("orders").unwrap();
    assert_eq!(info.config.partitions, 5);
    assert_eq!(info.partitions.len(), 5);
    assert_eq!(info.partitions.iter().map(|p| p.latest_offset).sum::<u64>(), 1);
    assert!(info.partitions.iter().all(|p| p.segments == 1));
    broker.delete_topic("orders").unwrap();
    assert_eq!(broker.list_topics(), vec!["audit.log-v2_x"]);
    assert_eq!(broker.describe_topic("orders").unwrap_err().code().as_str(), "topic_not_found");
    assert_eq!(broker.publish("orders", event(None, 1)).await.unwrap_err().code().as_str(), "topic_not_found");
    drop(broker);
    let broker = open(dir.path());
    assert_eq!(broker.list_topics(), vec!["audit.log-v2_x"]);
    // A deleted name can be created again, empty.
    let info = broker.create_topic("orders", TopicConfig::with_partitions(1)).unwrap();
    assert_eq!(info.partitions[0].latest_offset, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_limits_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let config = BrokerConfig { topics_max: 2, partitions_per_topic_max: 4, ..BrokerConfig::default() };
    let broker = Broker::open(dir.path(), config).unwrap();
    let long = "x".repeat(201);
    for bad in ["", ".", "..", "a/b", "a b", "ü", long.as_str(), "../etc"] {
        let err = broker.create_topic(bad, TopicConfig::default()).unwrap_err();
        assert_eq!(err.code().as_str(), "invalid_topic_name", "{bad:?}");
        assert!(err.to_string().contains("A-Z a-z 0-9 . _ -"), "{err}");
    }
    broker.create_topic(&"x".repeat(200), TopicConfig::default()).unwrap();
    let err = broker.create_topic("p", TopicConfig::with_partitions(5)).unwrap_err();
    assert_eq!(err.to_string(), "partitions would be 5; the limit is 4 (partitions_per_topic_max)");
    let err = broker.create_topic("zero", TopicConfig::with_partitions(0)).unwrap_err();
    assert_eq!(err.code().as_str(), "invalid_config");
    broker.create_topic("second", TopicConfig::with_partitions(4)).unwrap();
    let err = broker.create_topic("third", TopicConfig::default()).unwrap_err();
    assert_eq!(err.to_string(), "topics would be 3; the limit is 2 (topics_max)");
    assert!(matches!(broker.add_partitions("second", 5), Err(BrokerError::LimitExceeded { .. })));
    assert_eq!(broker.add_partitions("second", 3).unwrap_err().code().as_str(), "invalid_config");
    let bad = TopicConfig { max_event_bytes: 0, ..TopicConfig::default() };
    drop(broker.delete_topic("second"));
    assert_eq!(broker.create_topic("bad", bad).unwrap_err().code().as_str(), "invalid_config");
}
