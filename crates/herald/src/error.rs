//! The SDK's error: a stable [`Code`] (whose [`ErrorKind`] code branches on) and a message that
//! says what happened. Codes, kinds and retryability come from `herald_model::Code`, the same
//! table the broker and the server use, so every backend reports a failure alike.

pub use herald_model::{Code, ErrorKind};

/// An SDK error.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    code: Code,
    message: String,
}

impl Error {
    pub(crate) fn new(code: Code, message: impl Into<String>) -> Self {
        Error { code, message: message.into() }
    }

    /// What kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.code.kind()
    }

    /// The backend's stable code (`topic_not_found`, `busy`, …).
    pub fn code(&self) -> Code {
        self.code
    }

    /// Whether retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        self.code.is_retryable()
    }
}

#[cfg(feature = "embedded")]
impl From<herald_broker::BrokerError> for Error {
    fn from(e: herald_broker::BrokerError) -> Self {
        Error::new(e.code(), e.to_string())
    }
}

impl From<herald_core::EventError> for Error {
    fn from(e: herald_core::EventError) -> Self {
        let code = match e {
            herald_core::EventError::EventTooLarge { .. } => Code::EventTooLarge,
            _ => Code::InvalidEvent,
        };
        Error::new(code, e.to_string())
    }
}

/// Result alias for the SDK.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a handler returns on failure: retry later, or give up on this event at once.
#[derive(Debug)]
pub struct HandlerError {
    permanent: bool,
    message: String,
}

impl HandlerError {
    /// A failure worth retrying (a timeout, a busy dependency): the event is redelivered after
    /// the retry policy's backoff, until its attempts run out.
    pub fn retryable(message: impl std::fmt::Display) -> Self {
        HandlerError { permanent: false, message: message.to_string() }
    }

    /// A failure no retry will fix (a malformed event, a business rule): the event goes to the
    /// group's dead-letter queue at once.
    pub fn permanent(message: impl std::fmt::Display) -> Self {
        HandlerError { permanent: true, message: message.to_string() }
    }

    /// Whether it is permanent.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    /// The reason, stored with a dead letter.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.permanent { "permanent" } else { "retryable" };
        write!(f, "{kind}: {}", self.message)
    }
}

/// Any error converts into a retryable handler error, so `?` works inside handlers.
impl<E: std::error::Error> From<E> for HandlerError {
    fn from(e: E) -> Self {
        HandlerError::retryable(e)
    }
}
