//! Shared by the example services: where the example broker lives.

/// The examples share one durable broker directory. The embedded broker is in-process, so the
/// services take turns (run one after the other); `herald serve` lets them run side by side.
pub fn url() -> String {
    let dir = std::env::var("HERALD_EXAMPLE_DIR").unwrap_or_else(|_| "/tmp/herald-example".into());
    format!("file://{dir}")
}

/// The topic the services share.
pub const TOPIC: &str = "orders";

/// Logs as JSON lines (event_id, type, topic, partition, offset, group, attempt, latency_ms,
/// outcome, correlation_id on every handled event).
pub fn init_logging() {
    tracing_subscriber::fmt().json().with_current_span(false).with_target(false).init();
}
