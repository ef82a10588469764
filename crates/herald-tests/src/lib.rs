//! End-to-end tests and benches of the SDK live in `tests/` and `benches/`; this crate has no code of its own.
