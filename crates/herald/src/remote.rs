//! The `herald://host:port` backend: a Herald server over gRPC (`herald.v1`).

use std::sync::Arc;

use crate::backend::Backend;
use crate::error::{Error, ErrorKind, Result};

/// Connects to the server at `addr` (`host:port`).
pub(crate) async fn connect(addr: &str) -> Result<Arc<dyn Backend>> {
    Err(Error::new(ErrorKind::Unsupported, "unsupported", format!("herald://{addr}: not built yet")))
}
