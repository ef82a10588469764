//! HTTP/JSON: the CloudEvents HTTP binding, SSE subscriptions, admin, metrics and health.

use std::sync::Arc;

use crate::AppState;

/// The HTTP API.
pub fn router(state: Arc<AppState>) -> axum::Router {
    let _ = state;
    axum::Router::new()
}
