//! The `nats://host:port[,host:port…]` backend: NATS JetStream.

use std::sync::Arc;

use crate::backend::Backend;
use crate::error::{Error, ErrorKind, Result};

/// Connects to the NATS servers named by `url`.
pub(crate) async fn connect(url: &str) -> Result<Arc<dyn Backend>> {
    Err(Error::new(ErrorKind::Unsupported, "unsupported", format!("{url}: not built yet")))
}
