//! Herald's embedded broker: topics split into keyed partitions, each stored in a `herald-log`;
//! consumer groups with partition assignment and generations; per-event ack, nack with delay
//! and reject; redelivery on ack timeout with exponential backoff; dead-letter queues with
//! replay to the failed group only; idempotent publish; durable positions and attempt counts.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::time::Duration;
//! use herald_broker::{Broker, BrokerConfig, GroupConfig, MemberConfig, TopicConfig};
//! use herald_core::Event;
//!
//! let dir = tempfile::tempdir()?;
//! let broker = Broker::open(dir.path(), BrokerConfig::default())?;
//! broker.create_topic("orders", TopicConfig::with_partitions(2))?;
//! broker.publish("orders", Event::builder("order.created").key("c-1").build()?).await?;
//!
//! broker.create_group("billing", GroupConfig::for_topics(["orders"]))?;
//! let member = broker.join("billing", MemberConfig::default())?;
//! let deliveries = member.poll(10, Duration::from_secs(1)).await?;
//! assert_eq!(deliveries.len(), 1);
//! assert_eq!(deliveries[0].attempt, 1);
//! member.ack(&deliveries[0])?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! The exact promises (ordering, delivery, dedupe, the redelivery bound, DLQ, retention) are in
//! `docs/semantics.md`. This crate knows no HTTP or gRPC and does no network I/O.
#![deny(missing_docs)]

mod broker;
mod config;
mod error;
mod group;
mod partition;
mod schema;
mod store;
mod topic;

pub use broker::{Broker, Damage, Fenced, UNFENCE_CHECK_MS};
pub use config::*;
pub use error::{BrokerError, Result};
pub use group::{COMMIT_EVENTS_MAX, COMMIT_INTERVAL_MS, Delivery, Member, MemberConfig, dlq_headers};
/// Key → partition routing (Kafka's murmur2), shared with every backend.
pub use herald_model::routing as partitioner;
pub use herald_model::{
    Code, DeadLetter, DeliveryId, GROUP_NAME_BYTES_MAX, GroupConfig, GroupInfo, GroupPartitionInfo, OrderingMode,
    RetryPolicy, StartFrom,
};
pub use partition::{Receipt, StoredEvent};
pub use topic::{PartitionInfo, TopicInfo};

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Broker>();
    send_sync::<Member>();
    send_sync::<Delivery>();
    send_sync::<BrokerError>();
};

/// Fault injection for tests (`herald_log::failpoints`): a failing fsync, a full disk.
#[cfg(feature = "failpoints")]
pub use herald_log::failpoints;
