//! Herald's shared vocabulary, used by the broker, the server, the wire API and every SDK backend
//! alike, so that they cannot disagree:
//!
//! - [`Code`]: every stable error code with its kind, retryability, gRPC and HTTP status;
//! - topic and group settings ([`TopicConfig`], [`GroupConfig`], [`RetryPolicy`], …) and their
//!   versioned stored forms ([`storage`]);
//! - what crosses between a broker and its clients ([`StoredEvent`], [`Receipt`], [`DeliveryId`],
//!   [`TopicInfo`], [`GroupInfo`], [`DeadLetter`]);
//! - routing of events to partitions ([`routing`]) and the dead-letter envelope ([`dead_letter`]).
//!
//! ```
//! use herald_model::{Code, ErrorKind, GroupConfig};
//!
//! assert_eq!(Code::TopicNotFound.as_str(), "topic_not_found");
//! assert_eq!(Code::from_wire("busy").kind(), ErrorKind::Busy);
//! assert!(Code::Busy.is_retryable() && !Code::LimitExceeded.is_retryable());
//! assert!(GroupConfig::for_topics(["orders"]).validate().is_ok());
//! ```
//!
//! This crate does no I/O and knows no broker, no wire library and no backend.
#![deny(missing_docs)]

mod code;
pub mod dead_letter;
mod delivery;
pub mod history;
pub mod routing;
pub mod schema;
mod settings;
pub mod storage;

pub use code::{Code, ErrorKind, GrpcStatus, UnknownCode};
pub use delivery::{
    DamageSkipped, DeadLetter, DeliveryId, GroupInfo, GroupPartitionInfo, PartitionInfo, Receipt, StoredEvent,
    TopicInfo,
};
pub use history::{EventHistory, GroupHistory, Happened, HistoryEntry};
pub use settings::*;
