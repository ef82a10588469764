//! The SDK's error: a [`ErrorKind`] to branch on, and a message that says what happened.

use herald_broker::BrokerError;

/// What kind of failure, for code that branches on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The URL, a setting or an argument is invalid.
    Invalid,
    /// A topic, group or member does not exist.
    NotFound,
    /// It exists already with other settings.
    Conflict,
    /// The backend is busy or unreachable for now: retry with backoff (the SDK does).
    Unavailable,
    /// A limit was exceeded.
    Limit,
    /// The event is invalid or too large.
    InvalidEvent,
    /// The delivery cannot be settled any more (reassigned, timed out, already settled).
    Stale,
    /// The client or consumer was closed.
    Closed,
    /// Stored data is damaged, or the storage failed.
    Storage,
    /// The backend does not offer this operation.
    Unsupported,
    /// A group is busy (e.g. has members while being reset).
    Busy,
}

/// An SDK error.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    code: &'static str,
    message: String,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        Error { kind, code, message: message.into() }
    }

    /// What kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The backend's stable code (`topic_not_found`, `busy`, …).
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// Whether retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind == ErrorKind::Unavailable
    }
}

impl From<BrokerError> for Error {
    fn from(e: BrokerError) -> Self {
        let code = e.code();
        let kind = match &e {
            BrokerError::InvalidTopicName { .. }
            | BrokerError::InvalidGroupName { .. }
            | BrokerError::InvalidConfig(_) => ErrorKind::Invalid,
            BrokerError::TopicNotFound { .. }
            | BrokerError::GroupNotFound { .. }
            | BrokerError::PartitionNotFound { .. }
            | BrokerError::UnknownMember { .. } => ErrorKind::NotFound,
            BrokerError::TopicExists { .. } => ErrorKind::Conflict,
            BrokerError::LimitExceeded { .. } => ErrorKind::Limit,
            BrokerError::EventTooLarge { .. } | BrokerError::Event(_) => ErrorKind::InvalidEvent,
            BrokerError::Busy { .. } => ErrorKind::Unavailable,
            BrokerError::StaleGeneration { .. } | BrokerError::NotInFlight { .. } => ErrorKind::Stale,
            BrokerError::Closed => ErrorKind::Closed,
            _ => ErrorKind::Storage,
        };
        Error::new(kind, code, e.to_string())
    }
}

impl From<herald_core::EventError> for Error {
    fn from(e: herald_core::EventError) -> Self {
        Error::new(ErrorKind::InvalidEvent, "invalid_event", e.to_string())
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
