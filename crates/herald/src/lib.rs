//! Herald's SDK: publish events and consume them with a runtime that retries, dead-letters,
//! keeps order per key and logs every event — on any backend, chosen by a URL.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use herald::{Event, HandlerError, TopicConfig};
//! use tokio_util::sync::CancellationToken;
//!
//! let client = herald::connect("mem://").await?;
//! client.ensure_topic("orders", TopicConfig::with_partitions(4)).await?;
//!
//! let producer = client.producer();
//! producer.publish_json("orders", "order.created", Some("customer-7"), &serde_json::json!({"total": 42})).await?;
//!
//! let stop = CancellationToken::new();
//! let done = stop.clone();
//! let report = client
//!     .consumer("billing")
//!     .subscribe(["orders"])
//!     .concurrency(16)
//!     .handler(move |event: Event| {
//!         let done = done.clone();
//!         async move {
//!             assert_eq!(event.ty(), "order.created");
//!             done.cancel(); // one event is enough for this example
//!             Ok::<(), HandlerError>(())
//!         }
//!     })
//!     .run(stop)
//!     .await?;
//! assert_eq!(report.ok, 1);
//! # Ok::<(), herald::Error>(())
//! # }).unwrap();
//! ```
//!
//! Backends, each behind a cargo feature: `mem://` (in-process, ephemeral) and
//! `file:///path/to/dir` (in-process, durable) with `embedded` (on by default); a Herald server
//! (`herald://`) with `remote`, which compiles no broker; NATS JetStream (`nats://`) with `nats`.
//! All plug into the same [`Backend`] trait.
#![deny(missing_docs)]

mod backend;
mod client;
mod consumer;
#[cfg(feature = "embedded")]
mod embedded;
mod error;
pub mod idempotency;
#[cfg(feature = "nats")]
mod nats;
mod producer;
#[cfg(feature = "remote")]
mod remote;
pub mod schema;

pub use backend::{
    Backend, Capabilities, DamageSkipped, DeadLetter, EventHistory, GroupConfig, GroupHistory, GroupInfo,
    GroupPartitionInfo, Happened, HistoryEntry, Identity, Message, OrderingMode, PartitionInfo, Receipt, RetryPolicy,
    StartFrom, StoredEvent, SubscribeOptions, Subscription, TopicConfig, TopicInfo,
};
pub use client::{Client, ConnectOptions, connect, connect_with};
pub use consumer::{Consumer, Outcome, RunReport};
#[cfg(feature = "embedded")]
pub use embedded::Embedded;
pub use error::{Code, Error, ErrorKind, HandlerError, Result};
pub use herald_core::{Event, EventBuilder, Timestamp};
#[cfg(feature = "embedded")]
pub use idempotency::FileIdempotency;
pub use idempotency::{IdempotencyStore, MemoryIdempotency};
pub use producer::{Producer, ProducerConfig};
pub use tokio_util::sync::CancellationToken;

/// Traces: Herald's spans follow the OpenTelemetry messaging conventions, and each event carries
/// its trace context (`traceparent`). Off until a binary calls `telemetry::install` (feature
/// `otlp`, configured by the `OTEL_*` variables) or an application that installed its own
/// global tracer provider calls [`telemetry::enable`].
pub use herald_telemetry as telemetry;

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Client>();
    send_sync::<Producer>();
    send_sync::<Consumer>();
    send_sync::<Message>();
    send_sync::<Error>();
    send_sync::<HandlerError>();
    send_sync::<MemoryIdempotency>();
    #[cfg(feature = "embedded")]
    send_sync::<FileIdempotency>();
};
