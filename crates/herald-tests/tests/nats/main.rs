//! The NATS JetStream backend against real `nats-server` processes the tests start themselves:
//! the whole conformance suite on `nats://`, NATS-specific cases, and a 3-node cluster whose
//! stream leader is killed under load.

#[macro_use]
#[path = "../conformance/cases.rs"]
mod cases;
#[path = "../conformance/suite.rs"]
mod suite;

mod backend;
mod cluster;
mod harness;
mod parity;
mod server;

conformance!(conformance, crate::harness::Harness::nats());
