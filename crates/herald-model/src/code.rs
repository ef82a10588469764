//! [`Code`]: every stable error code Herald answers with, and what each one means on every path —
//! the kind an SDK user branches on, whether retrying can help, the gRPC status and the HTTP
//! status. Every mapping is an exhaustive `match`, so a new code cannot be forgotten anywhere.
//!
//! Codes are never renamed or reused: a retired code stays here, documented as retired.

use std::fmt;
use std::str::FromStr;

/// What kind of failure, for code that branches on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The URL, a setting or an argument is invalid.
    Invalid,
    /// A topic, group, member, route or stored offset does not exist.
    NotFound,
    /// The request conflicts with the current state (it exists already with other settings, a
    /// group has members while being reset, a member id is held by another stream).
    Conflict,
    /// The backend is unreachable or going away for now: retry with backoff (the SDK does).
    Unavailable,
    /// The backend is overloaded for now (a full write queue, too many requests): retry with
    /// backoff (the SDK does).
    Busy,
    /// A configured limit was exceeded: retrying the same request cannot help.
    Limit,
    /// The event is invalid or too large.
    InvalidEvent,
    /// The delivery cannot be settled any more (reassigned, timed out, already settled).
    Stale,
    /// The client, subscription or broker was closed.
    Closed,
    /// Stored data is damaged, or the storage failed.
    Storage,
    /// The backend does not offer this operation.
    Unsupported,
    /// The caller is not authenticated (no, a wrong, an expired or a revoked token), or may not
    /// do what it asked: retrying the same request cannot help.
    Denied,
}

/// A gRPC status code, by its number in the gRPC specification (so that this crate needs no gRPC
/// library; `herald-proto` turns it into `tonic::Code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
#[allow(missing_docs)]
pub enum GrpcStatus {
    Cancelled = 1,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

macro_rules! codes {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        /// A stable, machine-readable error code (`topic_not_found`, `busy`, …). Its string form is
        /// what crosses every wire: the `herald-code` gRPC metadata, the HTTP body's `code`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Code {
            $($(#[$doc])* $variant,)*
        }

        impl Code {
            /// Every code, in declaration order.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The stable snake_case string.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $name,)*
                }
            }
        }

        impl FromStr for Code {
            type Err = UnknownCode;

            fn from_str(s: &str) -> Result<Code, UnknownCode> {
                match s {
                    $($name => Ok(Code::$variant),)*
                    _ => Err(UnknownCode(s.to_owned())),
                }
            }
        }
    };
}

codes! {
    /// A topic name outside the allowed characters or length.
    InvalidTopicName = "invalid_topic_name",
    /// A group name outside the allowed characters or length.
    InvalidGroupName = "invalid_group_name",
    /// A setting is out of range or inconsistent (or differs from a group's stored settings).
    InvalidConfig = "invalid_config",
    /// A request argument is malformed.
    InvalidArgument = "invalid_argument",
    /// A backend URL cannot be used (bad syntax, or nothing Herald listens there).
    InvalidUrl = "invalid_url",
    /// The event is invalid (attributes, headers, encoding).
    InvalidEvent = "invalid_event",
    /// The event is larger than the topic or server accepts.
    EventTooLarge = "event_too_large",
    /// No such topic.
    TopicNotFound = "topic_not_found",
    /// No such consumer group.
    GroupNotFound = "group_not_found",
    /// No such partition.
    PartitionNotFound = "partition_not_found",
    /// No event at that offset, or with that id in the history kept.
    EventNotFound = "event_not_found",
    /// The member is not (or no longer) in the group.
    UnknownMember = "unknown_member",
    /// No such route or object (the HTTP API's catch-all).
    NotFound = "not_found",
    /// The topic exists already.
    TopicExists = "topic_exists",
    /// The member id is held by another open stream.
    MemberActive = "member_active",
    /// The group has members, so its positions cannot be moved.
    GroupActive = "group_active",
    /// A NATS stream of that name exists but was not created by Herald.
    NotAHeraldTopic = "not_a_herald_topic",
    /// A configured limit would be exceeded (topics, partitions, members, in-flight, DLQ size,
    /// events per read…). Retrying the same request cannot help.
    LimitExceeded = "limit_exceeded",
    /// One request is larger than the server accepts (body bytes, events per batch, acks per
    /// request): split it.
    RequestTooLarge = "request_too_large",
    /// A partition's write queue or the server's request slots are full: retry with backoff.
    Busy = "busy",
    /// The backend could not be reached: retry with backoff.
    Unavailable = "unavailable",
    /// The server is shutting down: retry once it is back (or on another server). A server
    /// answers this, not `closed`, when its broker closes under a request.
    ShuttingDown = "shutting_down",
    /// The client, subscription or broker is closed.
    Closed = "closed",
    /// The request body did not arrive in time.
    RequestTimeout = "request_timeout",
    /// The delivery was made under an older assignment generation.
    StaleGeneration = "stale_generation",
    /// The delivery is not in flight (already settled, timed out, or never delivered).
    NotInFlight = "not_in_flight",
    /// The operation is not offered by this backend or build.
    Unsupported = "unsupported",
    /// The HTTP method is not allowed on that route.
    MethodNotAllowed = "method_not_allowed",
    /// The request's content type is not accepted.
    UnsupportedMediaType = "unsupported_media_type",
    /// Retention deleted events a group had not consumed (reported once; the group continues).
    RetentionOvertook = "retention_overtook",
    /// A read below the earliest stored offset.
    OffsetBelowEarliest = "offset_below_earliest",
    /// A read beyond the latest offset.
    OffsetBeyondLatest = "offset_beyond_latest",
    /// A stored event could not be decoded.
    CorruptEvent = "corrupt_event",
    /// A topic or group found damaged at start is not served; the operator must repair or remove
    /// it (see `/readyz`).
    Damaged = "damaged",
    /// Stored data failed its checksum.
    Corrupt = "corrupt",
    /// The storage failed (I/O, a fenced log).
    Storage = "storage",
    /// The disk (or quota) is full: nothing of the request was acknowledged. The partition
    /// recovers by itself within seconds of space returning: retry with backoff.
    StorageFull = "storage_full",
    /// A bug or an unexpected failure inside the server.
    Internal = "internal",
    /// The request carries no credentials the server accepts: no token where one is required,
    /// or a wrong, expired or revoked one.
    Unauthenticated = "unauthenticated",
    /// The caller is authenticated but may not do this (to this topic or group). Said the same
    /// whether or not the topic or group exists.
    PermissionDenied = "permission_denied",
    /// A rate or count the server allows this caller (or its address) is used up for now: retry
    /// after the time the message names.
    QuotaExceeded = "quota_exceeded",
    /// The event does not match the schema registered for its type (or its type has none on a
    /// topic that requires one): nothing of its batch was stored.
    SchemaInvalid = "schema_invalid",
    /// A schema version breaks the compatibility rule of its type (which change, which rule).
    SchemaIncompatible = "schema_incompatible",
    /// No schema is registered for that topic and type (or no such version).
    SchemaNotFound = "schema_not_found",
    /// A code this build does not know (a newer peer sent it).
    Remote = "remote",
}

/// A code string this build does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown error code {0:?}")]
pub struct UnknownCode(pub String);

impl Code {
    /// The code of a string from the wire; codes this build does not know are [`Code::Remote`].
    pub fn from_wire(s: &str) -> Code {
        s.parse().unwrap_or(Code::Remote)
    }

    /// What kind of failure it is.
    pub const fn kind(self) -> ErrorKind {
        use Code::*;
        match self {
            InvalidTopicName | InvalidGroupName | InvalidConfig | InvalidArgument | InvalidUrl | MethodNotAllowed
            | UnsupportedMediaType => ErrorKind::Invalid,
            InvalidEvent | EventTooLarge | SchemaInvalid => ErrorKind::InvalidEvent,
            TopicNotFound | GroupNotFound | PartitionNotFound | EventNotFound | UnknownMember | NotFound
            | OffsetBelowEarliest | OffsetBeyondLatest | SchemaNotFound => ErrorKind::NotFound,
            TopicExists | MemberActive | GroupActive | NotAHeraldTopic | SchemaIncompatible => ErrorKind::Conflict,
            LimitExceeded | RequestTooLarge => ErrorKind::Limit,
            Busy | StorageFull | QuotaExceeded => ErrorKind::Busy,
            Unauthenticated | PermissionDenied => ErrorKind::Denied,
            Unavailable | ShuttingDown | RequestTimeout => ErrorKind::Unavailable,
            Closed => ErrorKind::Closed,
            StaleGeneration | NotInFlight => ErrorKind::Stale,
            Unsupported => ErrorKind::Unsupported,
            RetentionOvertook | CorruptEvent | Corrupt | Damaged | Storage | Internal | Remote => ErrorKind::Storage,
        }
    }

    /// Whether the same request may succeed if retried later (the SDK retries these).
    pub const fn is_retryable(self) -> bool {
        matches!(self.kind(), ErrorKind::Unavailable | ErrorKind::Busy)
    }

    /// The gRPC status a server answers with.
    pub const fn grpc_status(self) -> GrpcStatus {
        use Code::*;
        match self {
            InvalidTopicName | InvalidGroupName | InvalidConfig | InvalidArgument | InvalidUrl | InvalidEvent
            | EventTooLarge | MethodNotAllowed | UnsupportedMediaType | SchemaInvalid => GrpcStatus::InvalidArgument,
            TopicNotFound | GroupNotFound | PartitionNotFound | EventNotFound | UnknownMember | NotFound
            | SchemaNotFound => GrpcStatus::NotFound,
            TopicExists | MemberActive => GrpcStatus::AlreadyExists,
            GroupActive | NotAHeraldTopic | StaleGeneration | NotInFlight | Closed | SchemaIncompatible => {
                GrpcStatus::FailedPrecondition
            }
            LimitExceeded | RequestTooLarge | Busy | StorageFull | QuotaExceeded => GrpcStatus::ResourceExhausted,
            Unauthenticated => GrpcStatus::Unauthenticated,
            PermissionDenied => GrpcStatus::PermissionDenied,
            Unavailable | ShuttingDown => GrpcStatus::Unavailable,
            RequestTimeout => GrpcStatus::DeadlineExceeded,
            Unsupported => GrpcStatus::Unimplemented,
            RetentionOvertook | OffsetBelowEarliest | OffsetBeyondLatest => GrpcStatus::OutOfRange,
            CorruptEvent | Corrupt | Damaged => GrpcStatus::DataLoss,
            Storage | Internal | Remote => GrpcStatus::Internal,
        }
    }

    /// The HTTP status a server answers with.
    pub const fn http_status(self) -> u16 {
        use Code::*;
        match self {
            InvalidTopicName | InvalidGroupName | InvalidConfig | InvalidArgument | InvalidUrl | InvalidEvent
            | LimitExceeded | SchemaInvalid => 400,
            TopicNotFound | GroupNotFound | PartitionNotFound | EventNotFound | UnknownMember | NotFound
            | SchemaNotFound => 404,
            MethodNotAllowed => 405,
            RequestTimeout => 408,
            TopicExists | MemberActive | GroupActive | NotAHeraldTopic | StaleGeneration | NotInFlight
            | RetentionOvertook | SchemaIncompatible => 409,
            EventTooLarge | RequestTooLarge => 413,
            UnsupportedMediaType => 415,
            Unauthenticated => 401,
            PermissionDenied => 403,
            QuotaExceeded => 429,
            OffsetBelowEarliest | OffsetBeyondLatest => 416,
            CorruptEvent | Corrupt | Damaged | Storage | Internal | Remote => 500,
            Unsupported => 501,
            Busy | Unavailable | ShuttingDown | Closed => 503,
            StorageFull => 507,
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_string_and_strings_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for &c in Code::ALL {
            assert_eq!(c.as_str().parse::<Code>(), Ok(c));
            assert!(seen.insert(c.as_str()), "{c} twice");
            assert!(c.as_str().bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{c}");
        }
        assert_eq!(Code::from_wire("something_new"), Code::Remote);
    }

    #[test]
    fn retryable_codes_are_exactly_the_transient_ones() {
        let retryable: Vec<Code> = Code::ALL.iter().copied().filter(|c| c.is_retryable()).collect();
        assert_eq!(
            retryable,
            [
                Code::Busy,
                Code::Unavailable,
                Code::ShuttingDown,
                Code::RequestTimeout,
                Code::StorageFull,
                Code::QuotaExceeded
            ]
        );
        // A limit is not retryable, and over HTTP it is not "try again later" either.
        assert!(!Code::LimitExceeded.is_retryable());
        assert_ne!(Code::LimitExceeded.http_status(), 429);
        assert_ne!(Code::LimitExceeded.http_status(), 503);
    }

    #[test]
    fn server_errors_and_client_errors_agree_across_http_and_grpc() {
        for &c in Code::ALL {
            let http = c.http_status();
            // A server error is a storage failure (or a retryable/unsupported one), never a
            // client's mistake; a client's mistake is never a server error.
            if http >= 500 && !matches!(http, 501 | 503 | 507) {
                assert_eq!(c.kind(), ErrorKind::Storage, "{c}: http {http}");
            }
            if matches!(c.kind(), ErrorKind::Invalid | ErrorKind::InvalidEvent | ErrorKind::NotFound | ErrorKind::Limit)
            {
                assert!((400..500).contains(&http), "{c}: http {http}");
            }
            // Damaged data is data loss on gRPC and a server error on HTTP, never a client error.
            if matches!(c, Code::CorruptEvent | Code::Corrupt) {
                assert_eq!((c.grpc_status(), http), (GrpcStatus::DataLoss, 500), "{c}");
            }
        }
    }
}
