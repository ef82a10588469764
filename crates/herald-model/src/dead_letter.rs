//! The dead-letter envelope: the original event unchanged plus the `dlq*` headers (CloudEvents
//! extension attributes) every backend writes the same way, and the names of a group's DLQ and
//! replay topics.

use herald_core::{Event, Limits, Timestamp};

/// Header names added to dead letters.
pub mod headers {
    /// Why the event was dead-lettered.
    pub const REASON: &str = "dlqreason";
    /// Delivery attempts made.
    pub const ATTEMPTS: &str = "dlqattempts";
    /// Topic the event came from.
    pub const TOPIC: &str = "dlqtopic";
    /// Partition the event came from.
    pub const PARTITION: &str = "dlqpartition";
    /// Offset the event had there.
    pub const OFFSET: &str = "dlqoffset";
    /// Group that failed it.
    pub const GROUP: &str = "dlqgroup";
    /// First failure, RFC 3339.
    pub const FIRST_FAILURE: &str = "dlqfirstfailure";
    /// Last failure, RFC 3339.
    pub const LAST_FAILURE: &str = "dlqlastfailure";
    /// How many times it was replayed from the DLQ.
    pub const REPLAYS: &str = "dlqreplays";
    /// On a [`super::DAMAGED_TYPE`] letter: the first offset after the damaged stretch (which
    /// starts at [`OFFSET`]).
    pub const DAMAGED_TO: &str = "dlqdamagedto";
}

/// Type of the dead letter that keeps the stored bytes of a damaged stretch a group stepped
/// over (its reason starts with `corrupt`). It is never replayed: there is no event in it.
pub const DAMAGED_TYPE: &str = "herald.damaged";

/// Where a damaged stretch was and what it held. See [`damaged_letter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damaged<'a> {
    /// The group that stepped over it.
    pub group: &'a str,
    /// Its topic.
    pub topic: &'a str,
    /// Its partition.
    pub partition: u32,
    /// First offset of the stretch.
    pub from: u64,
    /// First offset after it.
    pub to: u64,
    /// What was wrong.
    pub reason: &'a str,
    /// The stored bytes from where it starts.
    pub bytes: &'a [u8],
    /// When the group stepped over it, ms since the Unix epoch.
    pub at_ms: i64,
}

/// The event id of the dead letter recording damaged offsets `from..to` of a partition.
pub fn damaged_letter_id(topic: &str, partition: u32, from: u64, to: u64) -> String {
    format!("damaged-{topic}-{partition}-{from}-{to}")
}

/// The dead letter recording a damaged stretch a group stepped over: type [`DAMAGED_TYPE`],
/// the stored bytes as data (`application/octet-stream`), reason `corrupt: …`, and the usual
/// `dlq*` headers with [`headers::DAMAGED_TO`]. Its id is the same for the same stretch, so
/// that writing it again is deduplicated.
pub fn damaged_letter(d: &Damaged<'_>) -> Event {
    let original = Event::builder(DAMAGED_TYPE)
        .id(damaged_letter_id(d.topic, d.partition, d.from, d.to))
        .source("/herald/broker")
        .data(d.bytes.to_vec(), "application/octet-stream")
        .header(headers::DAMAGED_TO, d.to.to_string())
        .build_with(&Limits::HARD)
        .expect("a damaged letter is a valid event");
    let reason = format!("corrupt: offsets {}..{} cannot be read: {}", d.from, d.to, d.reason);
    Envelope {
        reason: &reason,
        attempts: 0,
        topic: d.topic,
        partition: d.partition,
        offset: d.from,
        group: d.group,
        first_failure_ms: d.at_ms,
        last_failure_ms: d.at_ms,
    }
    .letter(&original)
}

/// Longest reason kept with a dead letter, in bytes (cut at a character boundary).
pub const REASON_BYTES_MAX: usize = 1024;

/// `s` cut to at most `max` bytes at a character boundary: the one truncation rule for reasons
/// and echoed input on every path.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The DLQ topic of a group.
pub fn dlq_topic(group: &str) -> String {
    format!("{group}.dlq")
}

/// The private topic a group's replayed dead letters go through.
pub fn replay_topic(group: &str) -> String {
    format!("{group}.replay")
}

/// The group whose dead-letter (`G.dlq`) or replay (`G.replay`) topic `topic` would be, by its
/// name (whether that group exists is the caller's to know).
pub fn dead_letter_group(topic: &str) -> Option<&str> {
    topic.strip_suffix(".dlq").or_else(|| topic.strip_suffix(".replay"))
}

/// Why and where an event failed: what a dead letter records about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The handler's or broker's reason (cut to [`REASON_BYTES_MAX`]).
    pub reason: &'a str,
    /// Delivery attempts made.
    pub attempts: u32,
    /// Where the event was.
    pub topic: &'a str,
    /// Its partition.
    pub partition: u32,
    /// Its offset (on NATS, the stream sequence).
    pub offset: u64,
    /// The group that failed it.
    pub group: &'a str,
    /// First failure, ms since the Unix epoch.
    pub first_failure_ms: i64,
    /// Last failure, ms since the Unix epoch.
    pub last_failure_ms: i64,
}

impl Envelope<'_> {
    /// The dead letter: `original` with the `dlq*` headers, built under the hard limits. If even
    /// those refuse it, the original goes alone rather than blocking every other dead letter.
    pub fn letter(&self, original: &Event) -> Event {
        let ts = |ms: i64| Timestamp::from_unix_nanos(ms.saturating_mul(1_000_000)).to_rfc3339();
        let mut b = original.to_builder();
        for (k, v) in [
            (headers::REASON, truncate_utf8(self.reason, REASON_BYTES_MAX).to_owned()),
            (headers::ATTEMPTS, self.attempts.to_string()),
            (headers::TOPIC, self.topic.to_owned()),
            (headers::PARTITION, self.partition.to_string()),
            (headers::OFFSET, self.offset.to_string()),
            (headers::GROUP, self.group.to_owned()),
            (headers::FIRST_FAILURE, ts(self.first_failure_ms)),
            (headers::LAST_FAILURE, ts(self.last_failure_ms)),
        ] {
            b = b.header(k, v);
        }
        b.build_with(&Limits::HARD).unwrap_or_else(|_| original.clone())
    }
}

/// Which dead letters a replay or purge acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every letter in view.
    All,
    /// Letters whose reason (`dlqreason`) is exactly this.
    Reason(String),
    /// Letters at these DLQ offsets (at most [`SELECTED_OFFSETS_MAX`]).
    Offsets(std::collections::BTreeSet<u64>),
}

/// Most DLQ offsets one selection may name.
pub const SELECTED_OFFSETS_MAX: usize = 10_000;

impl Selection {
    /// Whether the letter at `dlq_offset` is selected.
    pub fn selects(&self, dlq_offset: u64, letter: &Event) -> bool {
        match self {
            Selection::All => true,
            Selection::Reason(r) => reason(letter) == r,
            Selection::Offsets(o) => o.contains(&dlq_offset),
        }
    }
}

/// A letter's reason (`""` when it has none).
pub fn reason(letter: &Event) -> &str {
    letter.header(headers::REASON).unwrap_or_default()
}

/// Dead letters of one reason: how many, and their first and last failures.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReasonCount {
    /// The reason, as recorded (cut to [`REASON_BYTES_MAX`]).
    pub reason: String,
    /// Letters with it.
    pub count: u64,
    /// Earliest first failure among them, ms since the Unix epoch (0 when none recorded).
    pub first_failure_ms: i64,
    /// Latest last failure among them, ms since the Unix epoch.
    pub last_failure_ms: i64,
}

/// Dead letters grouped by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Reasons {
    /// Letters in view.
    pub total: u64,
    /// Per reason, the most frequent first (ties: the reason's text), at most
    /// [`REASONS_MAX`].
    pub reasons: Vec<ReasonCount>,
    /// Letters whose reason did not fit in the first [`REASONS_MAX`] distinct ones.
    pub other: u64,
    /// Where each reason is in `reasons`.
    #[serde(skip)]
    index: std::collections::HashMap<String, usize>,
}

/// Most distinct reasons a summary keeps (about 1 MiB of reasons at most).
pub const REASONS_MAX: usize = 1_000;

impl Reasons {
    /// Counts `letter`.
    pub fn add(&mut self, letter: &Event) {
        let ms = |h: &str| {
            letter.header(h).and_then(|t| Timestamp::parse_rfc3339(t).ok()).map(|t| t.as_unix_millis()).unwrap_or(0)
        };
        let (first, last) = (ms(headers::FIRST_FAILURE), ms(headers::LAST_FAILURE));
        self.total += 1;
        let r = reason(letter);
        match self.index.get(r).copied() {
            Some(i) => {
                let c = &mut self.reasons[i];
                c.count += 1;
                if first != 0 && (c.first_failure_ms == 0 || first < c.first_failure_ms) {
                    c.first_failure_ms = first;
                }
                c.last_failure_ms = c.last_failure_ms.max(last);
            }
            None if self.reasons.len() < REASONS_MAX => {
                self.index.insert(r.to_owned(), self.reasons.len());
                self.reasons.push(ReasonCount {
                    reason: r.to_owned(),
                    count: 1,
                    first_failure_ms: first,
                    last_failure_ms: last,
                });
            }
            None => self.other += 1,
        }
    }

    /// Sorts the reasons, the most frequent first.
    pub fn finish(mut self) -> Reasons {
        self.index.clear();
        self.reasons.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
        self
    }
}

/// How many times a dead letter was replayed already.
pub fn replays(letter: &Event) -> u32 {
    letter.header(headers::REPLAYS).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Where a dead letter's event was when it failed: `(topic, partition, offset)` from its
/// `dlq*` headers, if they are all there.
pub fn origin(letter: &Event) -> Option<(String, u32, u64)> {
    let topic = letter.header(headers::TOPIC)?;
    let partition = letter.header(headers::PARTITION)?.parse().ok()?;
    let offset = letter.header(headers::OFFSET)?.parse().ok()?;
    Some((topic.to_owned(), partition, offset))
}

/// The dead letter as it is replayed: its replay count raised by one.
pub fn for_replay(letter: &Event) -> Event {
    let b = letter.to_builder().header(headers::REPLAYS, (replays(letter) + 1).to_string());
    b.build_with(&Limits::HARD).unwrap_or_else(|_| letter.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_letter_keeps_the_original_and_cuts_the_reason_by_bytes_at_a_character_boundary() {
        let original = Event::builder("t").key("k").build().unwrap();
        let reason = "é".repeat(600); // 1,200 bytes
        let env = Envelope {
            reason: &reason,
            attempts: 3,
            topic: "orders",
            partition: 2,
            offset: 7,
            group: "billing",
            first_failure_ms: 0,
            last_failure_ms: 1000,
        };
        let letter = env.letter(&original);
        assert_eq!(letter.id(), original.id());
        assert_eq!(letter.key(), Some("k"));
        let kept = letter.header(headers::REASON).unwrap();
        assert_eq!(kept.len(), 1024);
        assert_eq!(letter.header(headers::ATTEMPTS), Some("3"));
        assert_eq!(replays(&letter), 0);
        assert_eq!(replays(&for_replay(&for_replay(&letter))), 2);
        assert_eq!(truncate_utf8("aé", 2), "a");
    }
}
