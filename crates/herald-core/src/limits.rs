//! [`Limits`]: how large an event and its parts may grow.

use serde::{Deserialize, Serialize};

/// Size limits checked whenever an event is built or decoded.
///
/// Every field is also a config key of the same name. [`Limits::default`] holds the documented
/// defaults; [`Limits::validate`] rejects values outside `1..=<hard maximum>`.
///
/// ```
/// use herald_core::Limits;
///
/// let limits = Limits { event_bytes_max: 64 * 1024, ..Limits::default() };
/// assert!(limits.validate().is_ok());
/// assert!(Limits { key_bytes_max: 0, ..limits }.validate().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest partition key (`partitionkey`), in bytes of UTF-8.
    pub key_bytes_max: usize,
    /// Largest value of a single header (extension attribute), in bytes of UTF-8.
    pub header_value_bytes_max: usize,
    /// Most headers (extension attributes other than Herald's own) on one event.
    pub headers_count_max: usize,
    /// Largest event, measured as its binary encoding ([`crate::codec::binary::encoded_len`]).
    pub event_bytes_max: usize,
    /// Largest string attribute other than the key and headers (`id`, `source`, `type`,
    /// `subject`, `datacontenttype`, `dataschema`, `tracestate`, `correlationid`,
    /// `causationid`), in bytes of UTF-8.
    pub attribute_bytes_max: usize,
    /// Deepest nesting of arrays and objects in JSON `data` (a JSON `datacontenttype`): deeper
    /// documents overflow the stacks of many JSON parsers consumers use.
    pub data_depth_max: usize,
}

impl Limits {
    /// Default for [`Limits::key_bytes_max`]: 1 KiB.
    pub const KEY_BYTES_MAX: usize = 1024;
    /// Default for [`Limits::header_value_bytes_max`]: 4 KiB.
    pub const HEADER_VALUE_BYTES_MAX: usize = 4096;
    /// Default for [`Limits::headers_count_max`].
    pub const HEADERS_COUNT_MAX: usize = 64;
    /// Default for [`Limits::event_bytes_max`]: 1 MiB.
    pub const EVENT_BYTES_MAX: usize = 1_048_576;
    /// Default for [`Limits::attribute_bytes_max`]: 1 KiB.
    pub const ATTRIBUTE_BYTES_MAX: usize = 1024;
    /// Default for [`Limits::data_depth_max`]: 64 levels (serde_json's own limit is 128).
    pub const DATA_DEPTH_MAX: usize = 64;

    /// Highest accepted [`Limits::key_bytes_max`]: 64 KiB.
    pub const KEY_BYTES_HARD_MAX: usize = 65_536;
    /// Highest accepted [`Limits::header_value_bytes_max`]: 1 MiB.
    pub const HEADER_VALUE_BYTES_HARD_MAX: usize = 1_048_576;
    /// Highest accepted [`Limits::headers_count_max`].
    pub const HEADERS_COUNT_HARD_MAX: usize = 1024;
    /// Highest accepted [`Limits::event_bytes_max`]: 64 MiB.
    pub const EVENT_BYTES_HARD_MAX: usize = 67_108_864;
    /// Highest accepted [`Limits::attribute_bytes_max`]: the largest event, so that events stored
    /// before this limit existed stay readable under [`Limits::HARD`].
    pub const ATTRIBUTE_BYTES_HARD_MAX: usize = Self::EVENT_BYTES_HARD_MAX;
    /// Highest accepted [`Limits::data_depth_max`]: the largest event (no limit), for the same
    /// reason.
    pub const DATA_DEPTH_HARD_MAX: usize = Self::EVENT_BYTES_HARD_MAX;

    /// Every limit at its hard maximum: what an event that was validated where it was stored is
    /// checked against when it is read back (a dead letter carries headers its original did not,
    /// and a stored event must always be readable).
    pub const HARD: Limits = Limits {
        key_bytes_max: Self::KEY_BYTES_HARD_MAX,
        header_value_bytes_max: Self::HEADER_VALUE_BYTES_HARD_MAX,
        headers_count_max: Self::HEADERS_COUNT_HARD_MAX,
        event_bytes_max: Self::EVENT_BYTES_HARD_MAX,
        attribute_bytes_max: Self::ATTRIBUTE_BYTES_HARD_MAX,
        data_depth_max: Self::DATA_DEPTH_HARD_MAX,
    };

    /// Checks that every limit lies in `1..=` its hard maximum.
    pub fn validate(&self) -> Result<(), LimitsError> {
        let checks = [
            ("key_bytes_max", self.key_bytes_max, Self::KEY_BYTES_HARD_MAX),
            ("header_value_bytes_max", self.header_value_bytes_max, Self::HEADER_VALUE_BYTES_HARD_MAX),
            ("headers_count_max", self.headers_count_max, Self::HEADERS_COUNT_HARD_MAX),
            ("event_bytes_max", self.event_bytes_max, Self::EVENT_BYTES_HARD_MAX),
            ("attribute_bytes_max", self.attribute_bytes_max, Self::ATTRIBUTE_BYTES_HARD_MAX),
            ("data_depth_max", self.data_depth_max, Self::DATA_DEPTH_HARD_MAX),
        ];
        for (name, value, max) in checks {
            if value == 0 || value > max {
                return Err(LimitsError::OutOfRange { name, value, min: 1, max });
            }
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            key_bytes_max: Self::KEY_BYTES_MAX,
            header_value_bytes_max: Self::HEADER_VALUE_BYTES_MAX,
            headers_count_max: Self::HEADERS_COUNT_MAX,
            event_bytes_max: Self::EVENT_BYTES_MAX,
            attribute_bytes_max: Self::ATTRIBUTE_BYTES_MAX,
            data_depth_max: Self::DATA_DEPTH_MAX,
        }
    }
}

/// A [`Limits`] value that makes no sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// A limit is zero or above its hard maximum.
    #[error("{name} is {value}; set it between {min} and {max}")]
    OutOfRange {
        /// The config key, e.g. `event_bytes_max`.
        name: &'static str,
        /// The value given.
        value: usize,
        /// Smallest accepted value.
        min: usize,
        /// Largest accepted value (the hard maximum).
        max: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Limits::default().validate(), Ok(()));
    }

    #[test]
    fn rejects_zero_and_above_hard_max() {
        let d = Limits::default();
        let table = [
            (Limits { key_bytes_max: 0, ..d }, "key_bytes_max is 0; set it between 1 and 65536"),
            (
                Limits { event_bytes_max: Limits::EVENT_BYTES_HARD_MAX + 1, ..d },
                "event_bytes_max is 67108865; set it between 1 and 67108864",
            ),
            (Limits { headers_count_max: 5000, ..d }, "headers_count_max is 5000; set it between 1 and 1024"),
            (Limits { header_value_bytes_max: 0, ..d }, "header_value_bytes_max is 0; set it between 1 and 1048576"),
        ];
        for (limits, message) in table {
            let err = limits.validate().expect_err(message);
            assert_eq!(err.to_string(), message);
        }
    }

    #[test]
    fn config_rejects_unknown_keys() {
        let ok: Limits = serde_json::from_str(r#"{"key_bytes_max": 10}"#).expect("valid");
        assert_eq!(ok.key_bytes_max, 10);
        assert_eq!(ok.event_bytes_max, Limits::EVENT_BYTES_MAX);
        assert!(serde_json::from_str::<Limits>(r#"{"key_bytes": 10}"#).is_err());
    }
}
