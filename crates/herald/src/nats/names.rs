//! How Herald names map to JetStream names. Topic and group names may hold `.`, which separates
//! subject tokens and is not allowed in stream, consumer or bucket names, so they are escaped
//! injectively: `_` → `__`, `.` → `_d`. The escape never yields `_` followed by an upper-case
//! letter, so the `HERALD__DLQ_` and `HERALD__REPLAY_` prefixes never collide with a topic.

#[cfg(test)]
use crate::error::ErrorKind;
use crate::error::{Code, Error, Result};

/// Longest stream or bucket name produced (the server stores each under a directory of that name).
const NAME_BYTES_MAX: usize = 240;

/// The reserved escape of a Herald name.
pub(crate) fn esc(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        match c {
            '_' => out.push_str("__"),
            '.' => out.push_str("_d"),
            c => out.push(c),
        }
    }
    out
}

fn valid_name(kind: &str, name: &str, max: usize) -> Result<()> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= max
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        return Err(Error::new(
            if kind == "topic" { Code::InvalidTopicName } else { Code::InvalidGroupName },
            format!(
                "invalid {kind} name {name:?}: use 1-{max} characters from A-Z a-z 0-9 . _ - (on NATS the escaped \
                 name must fit in {NAME_BYTES_MAX} bytes)"
            ),
        ));
    }
    if esc(name).len() + 20 > NAME_BYTES_MAX {
        return Err(Error::new(
            if kind == "topic" { Code::InvalidTopicName } else { Code::InvalidGroupName },
            format!("{kind} name {name:?} is too long for NATS: its escaped form must fit in {NAME_BYTES_MAX} bytes"),
        ));
    }
    Ok(())
}

pub(crate) fn check_topic(name: &str) -> Result<()> {
    valid_name("topic", name, 200)
}

pub(crate) fn check_group(name: &str) -> Result<()> {
    valid_name("group", name, 193)
}

pub(crate) fn topic_stream(topic: &str) -> String {
    format!("HERALD_{}", esc(topic))
}

pub(crate) fn topic_subject(topic: &str, partition: u32) -> String {
    format!("herald.{}.{partition}", esc(topic))
}

pub(crate) fn topic_subjects(topic: &str) -> String {
    format!("herald.{}.*", esc(topic))
}

pub(crate) fn dlq_stream(group: &str) -> String {
    format!("HERALD__DLQ_{}", esc(group))
}

pub(crate) fn dlq_subject(group: &str) -> String {
    format!("herald-dlq.{}", esc(group))
}

pub(crate) fn replay_stream(group: &str) -> String {
    format!("HERALD__REPLAY_{}", esc(group))
}

pub(crate) fn replay_subject(group: &str) -> String {
    format!("herald-replay.{}", esc(group))
}

/// The topic name a replayed event is delivered under (as on the embedded broker).
pub(crate) fn replay_topic(group: &str) -> String {
    format!("{group}.replay")
}

/// The durable pull consumer of a group on one partition of a topic stream.
pub(crate) fn consumer(group: &str, partition: u32) -> String {
    format!("{}__P{partition}", esc(group))
}

/// The KV bucket holding every group's settings.
pub(crate) const GROUPS_BUCKET: &str = "HERALD_GROUPS";

/// The KV bucket of one group's members and partition leases (entries expire after the
/// session timeout unless renewed).
pub(crate) fn lease_bucket(group: &str) -> String {
    format!("HERALD_L_{}", esc(group))
}

/// The lease key of a partition in the lease bucket.
pub(crate) fn lease_key(topic: &str, partition: u32) -> String {
    format!("p.{}.{partition}", esc(topic))
}

pub(crate) fn member_key(member: &str) -> String {
    format!("m.{member}")
}

/// `Nats-Msg-Id` of an event: its `(source, id)`, length-prefixed so that the pair is
/// unambiguous, with control characters and `%` percent-escaped (header values are one line).
pub(crate) fn msg_id(source: &str, id: &str) -> String {
    let raw = format!("{}:{source}{id}", source.len());
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        if c.is_control() || c == '%' {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_is_injective_on_tricky_names() {
        let names = ["a.b", "a_b", "a_db", "a__b", "a.d", "a_d", "_", ".", "__", "a-b"];
        let mut seen = std::collections::HashSet::new();
        for n in names {
            assert!(seen.insert(esc(n)), "{n}");
        }
        assert_eq!(esc("a.b_c"), "a_db__c");
        assert!(!topic_stream("_DLQ_x").starts_with("HERALD__DLQ_"));
        assert!(!topic_stream("REPLAY_x").starts_with("HERALD__REPLAY_"));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_topic("orders.v1-eu_x").is_ok());
        assert_eq!(check_topic("").unwrap_err().kind(), ErrorKind::Invalid);
        assert_eq!(check_topic("a b").unwrap_err().kind(), ErrorKind::Invalid);
        assert_eq!(check_topic(&"_".repeat(150)).unwrap_err().kind(), ErrorKind::Invalid);
        assert_eq!(check_group("g*").unwrap_err().code(), Code::InvalidGroupName);
    }

    #[test]
    fn msg_ids_are_one_line_and_unambiguous() {
        assert_ne!(msg_id("ab", "c"), msg_id("a", "bc"));
        assert_eq!(msg_id("s", "a\nb%"), "1:sa%0Ab%25");
    }
}
