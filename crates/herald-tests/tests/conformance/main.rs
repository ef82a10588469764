//! The backend conformance suite: one set of tests, written once against the SDK, run against
//! every backend. Each backend instantiates the suite with `conformance!` and a harness that
//! connects to it (and restarts it, where it can). Tests a backend cannot pass are gated by its
//! declared [`herald::Capabilities`].

#[macro_use]
mod cases;
mod harness;
mod runtime;
mod suite;

conformance!(mem, crate::harness::Harness::memory());
conformance!(file, crate::harness::Harness::file());
conformance!(remote, crate::harness::Harness::remote());
