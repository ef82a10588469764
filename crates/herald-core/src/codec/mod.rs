//! Encodings of an [`Event`](crate::Event): [`binary`] for storage and the wire, [`json`] for
//! CloudEvents' structured JSON format.

pub mod binary;
pub mod json;
