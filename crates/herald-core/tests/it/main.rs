//! Integration tests of herald-core's public API, one module per area.

mod binary;
mod json;
mod validation;
