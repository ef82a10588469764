//! Herald's event model: CloudEvents 1.0 [`Event`]s, their validation, and their encodings.
//!
//! ```
//! use herald_core::Event;
//! use herald_core::codec::{binary, json};
//!
//! let event = Event::builder("order.created")
//!     .source("/shop/orders")
//!     .key("customer-42")
//!     .json(&serde_json::json!({ "order": 1001, "total_cents": 4999 }))
//!     .header("tenant", "acme")
//!     .build()?;
//!
//! // The log's record format: compact, versioned, canonical.
//! let record = binary::encode(&event);
//! assert_eq!(binary::decode(&record)?, event);
//!
//! // CloudEvents structured JSON; JSON data is embedded as is.
//! let text = json::to_json(&event);
//! assert!(text.contains(r#""data":{"order":1001,"total_cents":4999}"#));
//! assert_eq!(json::from_json(text.as_bytes())?, event);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Every [`Event`] is valid: building and decoding both check the invariants listed on
//! [`EventError`], under [`Limits`]. Events are immutable; [`Event::to_builder`] starts a
//! changed copy.
//!
//! This crate does no I/O and knows nothing of topics, partitions, offsets or consumer groups.

#![deny(missing_docs)]

pub mod codec;
mod event;
mod limits;
#[cfg(feature = "testing")]
pub mod testing;
mod timestamp;
mod validate;

pub use bytes::Bytes;
pub use event::{DEFAULT_SOURCE, DataSchema, Event, EventBuilder, SPECVERSION};
pub use limits::{Limits, LimitsError};
pub use timestamp::{Timestamp, TimestampError};
pub use validate::{EventError, RESERVED_ATTRIBUTES, UriError};

/// Public types cross tasks and threads; keep them `Send + Sync`.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Event>();
    send_sync::<EventBuilder>();
    send_sync::<Timestamp>();
    send_sync::<Limits>();
    send_sync::<EventError>();
    send_sync::<UriError>();
    send_sync::<LimitsError>();
    send_sync::<TimestampError>();
    send_sync::<codec::binary::DecodeError>();
    send_sync::<codec::json::JsonError>();
};
