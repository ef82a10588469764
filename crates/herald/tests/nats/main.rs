//! The NATS JetStream backend against real `nats-server` processes the tests start themselves.
