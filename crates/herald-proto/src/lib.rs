//! Herald's wire API, `herald.v1` (the `.proto` lives in `proto/herald/v1/herald.proto` at the
//! repository root), generated with protox + tonic at build time, and the conversions between it
//! and Herald's own types. The server (`herald-server`) and the SDK's `herald://` backend both
//! use these, so the two ends cannot disagree.
//!
//! Errors cross the wire as a gRPC status whose metadata key [`CODE_KEY`] carries Herald's stable
//! error code; see [`status`] and [`code_of`].

#![allow(missing_docs)]

/// Generated messages and services of `herald.v1`.
pub mod v1 {
    tonic::include_proto!("herald.v1");
}

mod convert;

pub use convert::*;
