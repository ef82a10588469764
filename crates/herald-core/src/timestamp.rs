//! [`Timestamp`]: an instant in UTC with nanosecond precision.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// An instant in UTC: nanoseconds since the Unix epoch.
///
/// A plain `i64` so that every encoding round-trips it exactly; it spans the years 1677 to 2262.
/// Text form is RFC 3339 (`2024-05-01T12:00:00.5Z`), see [`Timestamp::to_rfc3339`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// Why a text could not be read as a [`Timestamp`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// The text is not an RFC 3339 date-time.
    #[error(
        "time {value:?} is not an RFC 3339 date-time ({reason}); \
         write it like 2024-05-01T12:00:00.123Z or 2024-05-01T14:00:00+02:00"
    )]
    Syntax {
        /// The text that was read.
        value: String,
        /// What the parser disliked.
        reason: String,
    },
    /// The instant is valid but outside what `i64` nanoseconds can hold.
    #[error(
        "time {value:?} is outside the supported range \
         (1677-09-21T00:12:43.145224192Z to 2262-04-11T23:47:16.854775807Z)"
    )]
    OutOfRange {
        /// The text that was read.
        value: String,
    },
}

impl Timestamp {
    /// The Unix epoch, 1970-01-01T00:00:00Z.
    pub const UNIX_EPOCH: Timestamp = Timestamp(0);

    /// The current time from the system clock.
    ///
    /// A clock outside the representable range (before 1677 or after 2262) saturates.
    pub fn now() -> Timestamp {
        let nanos = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_nanos()).unwrap_or(i64::MAX),
            Err(before) => i64::try_from(before.duration().as_nanos()).map(|n| -n).unwrap_or(i64::MIN),
        };
        Timestamp(nanos)
    }

    /// The instant `nanos` nanoseconds after the Unix epoch (before it when negative).
    pub const fn from_unix_nanos(nanos: i64) -> Timestamp {
        Timestamp(nanos)
    }

    /// Nanoseconds since the Unix epoch.
    pub const fn as_unix_nanos(self) -> i64 {
        self.0
    }

    /// Milliseconds since the Unix epoch, rounded toward negative infinity.
    pub const fn as_unix_millis(self) -> i64 {
        self.0.div_euclid(1_000_000)
    }

    /// RFC 3339 text in UTC (`Z`), with as many fractional digits as needed (none for whole seconds).
    pub fn to_rfc3339(self) -> String {
        // Every i64 of nanoseconds lies in years 1677..=2262, which both `time` and RFC 3339
        // can represent, so neither step below can fail; the fallback only keeps this panic-free.
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0))
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_else(|| format!("@{}ns", self.0))
    }

    /// Reads RFC 3339 text with any UTC offset; the result is the same instant in UTC.
    pub fn parse_rfc3339(text: &str) -> Result<Timestamp, TimestampError> {
        let parsed = OffsetDateTime::parse(text, &Rfc3339)
            .map_err(|e| TimestampError::Syntax { value: text.to_owned(), reason: e.to_string() })?;
        i64::try_from(parsed.unix_timestamp_nanos())
            .map(Timestamp)
            .map_err(|_| TimestampError::OutOfRange { value: text.to_owned() })
    }
}

impl fmt::Display for Timestamp {
    /// Writes [`Timestamp::to_rfc3339`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl FromStr for Timestamp {
    type Err = TimestampError;

    /// Reads with [`Timestamp::parse_rfc3339`].
    fn from_str(text: &str) -> Result<Timestamp, TimestampError> {
        Timestamp::parse_rfc3339(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_with_trimmed_fraction() {
        let table = [
            (0, "1970-01-01T00:00:00Z"),
            (1, "1970-01-01T00:00:00.000000001Z"),
            (500_000_000, "1970-01-01T00:00:00.5Z"),
            (-1, "1969-12-31T23:59:59.999999999Z"),
            (i64::MAX, "2262-04-11T23:47:16.854775807Z"),
            (i64::MIN, "1677-09-21T00:12:43.145224192Z"),
        ];
        for (nanos, text) in table {
            let ts = Timestamp::from_unix_nanos(nanos);
            assert_eq!(ts.to_rfc3339(), text, "{nanos}");
            assert_eq!(Timestamp::parse_rfc3339(text), Ok(ts), "{text}");
        }
    }

    #[test]
    fn parse_converts_offsets_to_utc() {
        let a = Timestamp::parse_rfc3339("2024-05-01T14:00:00.25+02:00");
        let b = Timestamp::parse_rfc3339("2024-05-01T12:00:00.250Z");
        assert_eq!(a, b);
        assert!(a.is_ok());
    }

    #[test]
    fn parse_rejects_bad_text_and_range() {
        assert!(matches!(Timestamp::parse_rfc3339("yesterday"), Err(TimestampError::Syntax { .. })));
        assert!(matches!(Timestamp::parse_rfc3339("2024-05-01T12:00:00"), Err(TimestampError::Syntax { .. })));
        assert!(matches!(Timestamp::parse_rfc3339("3000-01-01T00:00:00Z"), Err(TimestampError::OutOfRange { .. })));
    }

    #[test]
    fn millis_round_down() {
        assert_eq!(Timestamp::from_unix_nanos(1_999_999).as_unix_millis(), 1);
        assert_eq!(Timestamp::from_unix_nanos(-1).as_unix_millis(), -1);
    }
}
