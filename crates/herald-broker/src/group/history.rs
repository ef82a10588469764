//! A group's event history: what happened to each event in the group (deliveries, settles with
//! the handler's duration and error, timeouts, dead letters, replays), kept for a bounded time
//! and size so that an operator can ask "what happened to this event?".
//!
//! The shell pushes records into a bounded buffer as things happen (no I/O); the group's timer
//! writes the buffer to `<group>/history/` (a `herald-log`) on each tick, together with the
//! group's state flush. The history log is never fsynced on its own (`Durability::Os`: the
//! kernel writes back, a segment roll or a clean close syncs), so it adds no fsync to the hot
//! path; a machine crash can lose its last seconds, never the group's state. When the buffer is
//! full (the disk cannot keep up), records are dropped and counted, never blocking delivery.
//!
//! Records are versioned like the state records: a JSON object whose `v` is its format, absent
//! for format 1. A newer format is refused with an error that says to upgrade.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use herald_log::{Durability, Log, LogConfig, Retention};
use herald_model::{DeliveryId, Happened, HistoryEntry};
use serde::{Deserialize, Serialize};

use crate::broker::now_ms;
use crate::config::BrokerConfig;
use crate::error::Result;
use crate::group::state::Delivery;

/// The newest history record format this build writes and reads.
const RECORD_FORMAT: u32 = 1;
/// Most records waiting for the next write; beyond, new records are dropped and counted.
pub(crate) const PENDING_MAX: usize = 100_000;
/// A search reads at most this many bytes of history, newest records last.
pub(crate) const SEARCH_BYTES_MAX: usize = 256 << 20;
/// Retention runs every this many writes, or sooner once this many bytes were written.
const RETENTION_EVERY: u64 = 256;
const RETENTION_BYTES: u64 = 4 << 20;
/// Most items in one record (a big poll makes several records), so that a record stays far
/// below the log's record limit.
const ITEMS_PER_RECORD_MAX: usize = 1000;
/// A reason is kept up to this many bytes.
const REASON_BYTES_MAX: usize = 1024;
/// One append carries at most this many bytes (the log's batch limit is 16 MiB).
const APPEND_BYTES_MAX: usize = 8 << 20;

fn format_1() -> u32 {
    1
}

#[derive(Deserialize)]
struct Version {
    #[serde(default = "format_1")]
    v: u32,
}

/// How a delivery was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Settled {
    Ack,
    Nack,
    Reject,
}

/// One stored history record. Field names are short: there is one per batch of deliveries or
/// settles, and a busy group writes many.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Record {
    /// Events handed to member `m`: `(offset, attempt, event id)`.
    Delivered { t: String, p: u32, m: String, at: i64, items: Vec<(u64, u32, String)> },
    /// Deliveries settled by member `m`: `(offset, handler duration in µs)`.
    Settled {
        t: String,
        p: u32,
        m: String,
        at: i64,
        how: Settled,
        items: Vec<(u64, Option<u64>)>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delay_ms: Option<u64>,
    },
    /// Deliveries not settled within the ack timeout: `(offset, attempt)`.
    TimedOut { t: String, p: u32, at: i64, items: Vec<(u64, u32)> },
    /// Stored in the DLQ at `dlq`.
    DeadLettered { t: String, p: u32, o: u64, at: i64, reason: String, attempts: u32, dlq: u64 },
    /// Sent back from the DLQ: `(t, p, o)` was the dead-lettered copy, `to` the replayed one.
    Replayed { t: String, p: u32, o: u64, at: i64, to: (String, u32, u64) },
}

fn encode(record: &Record) -> Vec<u8> {
    serde_json::to_vec(record).expect("history records serialize")
}

fn decode(bytes: &[u8]) -> std::result::Result<Record, String> {
    let Version { v } = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if v > RECORD_FORMAT {
        return Err(format!(
            "the history record has format {v}; this build of Herald reads formats up to {RECORD_FORMAT}: upgrade Herald"
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

/// Which event a search follows: where it was published and its id. Its copies in the group's
/// replay topic are followed too.
pub(crate) struct Wanted<'a> {
    pub topic: &'a str,
    pub partition: u32,
    pub offset: u64,
    pub id: &'a str,
    pub published_ms: i64,
    pub replay_topic: &'a str,
}

#[derive(Default)]
struct Pending {
    records: Vec<Record>,
    dropped: u64,
}

/// A group's history: the buffer and the log it is written to (`None`: history is off).
pub(crate) struct History {
    log: Option<Log>,
    pending: Mutex<Pending>,
    writes: AtomicU64,
    written_bytes: AtomicU64,
    dropped_total: AtomicU64,
}

fn log_config(config: &BrokerConfig) -> LogConfig {
    LogConfig {
        durability: Durability::Os,
        segment_bytes_max: (config.history_bytes_max / 8).clamp(64 << 10, 16 << 20),
        retention: Retention { age_ms: Some(config.history_retention_ms), bytes: Some(config.history_bytes_max) },
        ..LogConfig::default()
    }
}

impl History {
    /// Opens the history under `dir` (made when missing); off when `history_bytes_max` is 0.
    /// A history that cannot be opened never keeps its group from being served: it is set aside
    /// (renamed `history.damaged-<ms>`) and a new one started, or history stays off for the group.
    pub fn open(dir: &Path, config: &BrokerConfig) -> History {
        let log = if config.history_bytes_max == 0 {
            None
        } else {
            crate::group::assert_no_group_lock("opening a group's history");
            match Log::open(dir, log_config(config)) {
                Ok(log) => Some(log),
                // Not damage (descriptors, permissions): history stays off, the files stay.
                Err(e) if !matches!(e, herald_log::LogError::Corrupt { .. }) => {
                    tracing::error!(dir = %dir.display(), error = %e,
                        "the group's event history cannot be opened: no history for this group until a restart");
                    None
                }
                Err(e) => {
                    let aside = dir.with_file_name(format!("history.damaged-{}", now_ms()));
                    tracing::error!(dir = %dir.display(), error = %e, aside = %aside.display(),
                        "the group's event history cannot be opened: set aside, starting a new one");
                    std::fs::rename(dir, &aside).ok().and_then(|()| Log::open(dir, log_config(config)).ok())
                }
            }
        };
        History {
            log,
            pending: Mutex::new(Pending::default()),
            writes: AtomicU64::new(0),
            written_bytes: AtomicU64::new(0),
            dropped_total: AtomicU64::new(0),
        }
    }

    /// Whether history is kept.
    #[cfg(test)]
    pub fn enabled(&self) -> bool {
        self.log.is_some()
    }

    /// Records dropped since the group opened because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped_total.load(Ordering::Relaxed) + self.pending.lock().expect("history lock poisoned").dropped
    }

    fn push_all(&self, records: impl IntoIterator<Item = Record>) {
        if self.log.is_none() {
            return;
        }
        let mut p = self.pending.lock().expect("history lock poisoned");
        for r in records {
            if p.records.len() >= PENDING_MAX {
                p.dropped += 1;
            } else {
                p.records.push(r);
            }
        }
    }

    /// Deliveries handed to `member`.
    pub fn delivered(&self, member: &str, deliveries: &[Delivery]) {
        if self.log.is_none() || deliveries.is_empty() {
            return;
        }
        let at = now_ms();
        let mut records: Vec<Record> = Vec::new();
        for d in deliveries {
            let s = &d.stored;
            let item = (s.offset, d.attempt, s.event.id().to_owned());
            match records.last_mut() {
                Some(Record::Delivered { t, p, items, .. })
                    if **t == *s.topic && *p == s.partition && items.len() < ITEMS_PER_RECORD_MAX =>
                {
                    items.push(item)
                }
                _ => records.push(Record::Delivered {
                    t: s.topic.to_string(),
                    p: s.partition,
                    m: member.to_owned(),
                    at,
                    items: vec![item],
                }),
            }
        }
        self.push_all(records);
    }

    /// Deliveries settled by `member` (the ones the group accepted).
    pub fn settled<'a>(
        &self,
        member: &str,
        how: Settled,
        settled: impl IntoIterator<Item = (&'a DeliveryId, Option<u64>)>,
        reason: Option<&str>,
        delay_ms: Option<u64>,
    ) {
        if self.log.is_none() {
            return;
        }
        let at = now_ms();
        let mut records: Vec<Record> = Vec::new();
        for (id, handler_us) in settled {
            let item = (id.offset, handler_us);
            match records.last_mut() {
                Some(Record::Settled { t, p, items, .. })
                    if **t == *id.topic && *p == id.partition && items.len() < ITEMS_PER_RECORD_MAX =>
                {
                    items.push(item)
                }
                _ => records.push(Record::Settled {
                    t: id.topic.to_string(),
                    p: id.partition,
                    m: member.to_owned(),
                    at,
                    how,
                    items: vec![item],
                    reason: reason.map(|r| herald_model::dead_letter::truncate_utf8(r, REASON_BYTES_MAX).to_owned()),
                    delay_ms,
                }),
            }
        }
        self.push_all(records);
    }

    /// Deliveries whose ack timeout passed.
    pub fn timed_out(&self, expired: &[DeliveryId]) {
        let at = now_ms();
        self.push_all(expired.iter().map(|d| Record::TimedOut {
            t: d.topic.to_string(),
            p: d.partition,
            at,
            items: vec![(d.offset, d.attempt)],
        }));
    }

    /// An event stored in the DLQ.
    pub fn dead_lettered(&self, t: &str, p: u32, o: u64, reason: &str, attempts: u32, dlq: u64) {
        let at = now_ms();
        let reason = herald_model::dead_letter::truncate_utf8(reason, REASON_BYTES_MAX).to_owned();
        self.push_all([Record::DeadLettered { t: t.to_owned(), p, o, at, reason, attempts, dlq }]);
    }

    /// A dead letter (of `(t, p, o)`) sent back as `to`.
    pub fn replayed(&self, t: &str, p: u32, o: u64, to: (String, u32, u64)) {
        let at = now_ms();
        self.push_all([Record::Replayed { t: t.to_owned(), p, o, at, to }]);
    }

    /// Writes what is buffered (no fsync), and now and then drops history past its retention.
    /// Blocking: called from the group's timer off the async workers.
    pub fn write(&self) -> Result<()> {
        let Some(log) = &self.log else { return Ok(()) };
        let (records, dropped) = {
            let mut p = self.pending.lock().expect("history lock poisoned");
            (std::mem::take(&mut p.records), std::mem::take(&mut p.dropped))
        };
        if dropped > 0 {
            self.dropped_total.fetch_add(dropped, Ordering::Relaxed);
            tracing::warn!(dropped, "the event history fell behind: records were dropped (the history is incomplete)");
        }
        if records.is_empty() {
            return Ok(());
        }
        crate::group::assert_no_group_lock("writing a group's history");
        let encoded: Vec<Vec<u8>> = records.iter().map(encode).collect();
        let bytes: usize = encoded.iter().map(Vec::len).sum();
        // Appends of at most APPEND_BYTES_MAX (and 10,000 records); what fails is counted as
        // dropped, never lost silently.
        let mut start = 0;
        while start < encoded.len() {
            let mut end = start;
            let mut size = 0;
            while end < encoded.len()
                && end - start < 10_000
                && (end == start || size + encoded[end].len() <= APPEND_BYTES_MAX)
            {
                size += encoded[end].len();
                end += 1;
            }
            if let Err(e) = log.append(&encoded[start..end]) {
                self.dropped_total.fetch_add((encoded.len() - start) as u64, Ordering::Relaxed);
                return Err(e.into());
            }
            start = end;
        }
        let written = self.written_bytes.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64;
        if self.writes.fetch_add(1, Ordering::Relaxed).is_multiple_of(RETENTION_EVERY) || written >= RETENTION_BYTES {
            self.written_bytes.store(0, Ordering::Relaxed);
            log.enforce_retention(now_ms())?;
        }
        Ok(())
    }

    /// Makes the history log writable again after a full disk, if there is space now.
    pub fn try_unfence(&self) -> Result<bool> {
        match &self.log {
            Some(log) => {
                crate::group::assert_no_group_lock("unfencing a group's history");
                Ok(log.try_unfence()?)
            }
            None => Ok(false),
        }
    }

    /// Writes what is buffered and closes the log (synced).
    pub fn close(&self) -> Result<()> {
        self.write()?;
        if let Some(log) = &self.log {
            log.close()?;
        }
        Ok(())
    }

    /// What happened to `w` in this group, oldest first, and whether the search stopped at its
    /// limit or began after records it needed were deleted. Blocking.
    pub fn search(&self, w: &Wanted<'_>) -> Result<(Vec<HistoryEntry>, bool)> {
        let Some(log) = &self.log else { return Ok((Vec::new(), false)) };
        crate::group::assert_no_group_lock("searching a group's history");
        // Nothing about an event is written before it was published (the clock may step back a
        // little between the partition's and the history's appends).
        let from = log.offset_for_timestamp(w.published_ms.saturating_sub(60_000))?;
        let Some(mut next) = from else { return Ok((Vec::new(), false)) };
        // Retention deleted history written after the event was published.
        let mut truncated = log.earliest_offset() > 0 && w.published_ms < earliest_time(log)?;
        let mut wanted: HashSet<(String, u32, u64)> = HashSet::new();
        wanted.insert((w.topic.to_owned(), w.partition, w.offset));
        let mut out = Vec::new();
        let mut read = 0usize;
        let end = log.latest_offset();
        while next < end {
            // Damage in the history costs what it held, never the answer.
            let batch = match log.read(next, 4 << 20, 10_000) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(offset = next, error = %e, "a stretch of the event history cannot be read");
                    truncated = true;
                    break;
                }
            };
            let Some(last) = batch.last() else { break };
            next = last.offset + 1;
            for r in batch {
                read += r.data.len();
                match decode(&r.data) {
                    Ok(rec) => follow(rec, w, &mut wanted, &mut out),
                    Err(_) => truncated = true,
                }
            }
            if read >= SEARCH_BYTES_MAX {
                truncated = true;
                break;
            }
        }
        Ok((out, truncated))
    }
}

fn earliest_time(log: &Log) -> Result<i64> {
    Ok(log.read(log.earliest_offset(), 1, 1)?.first().map_or(i64::MAX, |r| r.timestamp_ms))
}

/// Adds what `rec` says about the wanted event (and its replayed copies) to `out`.
fn follow(rec: Record, w: &Wanted<'_>, wanted: &mut HashSet<(String, u32, u64)>, out: &mut Vec<HistoryEntry>) {
    let key = |t: &str, p: u32, o: u64| (t.to_owned(), p, o);
    match rec {
        Record::Delivered { t, p, m, at, items } => {
            for (o, attempt, id) in items {
                let copy = t == w.replay_topic && id == w.id;
                if copy || wanted.contains(&key(&t, p, o)) {
                    wanted.insert(key(&t, p, o));
                    let what =
                        Happened::Delivered { attempt, member: m.clone(), topic: t.clone(), partition: p, offset: o };
                    out.push(HistoryEntry { at_ms: at, what });
                }
            }
        }
        Record::Settled { t, p, at, how, items, reason, delay_ms, .. } => {
            for (o, handler_us) in items {
                if !wanted.contains(&key(&t, p, o)) {
                    continue;
                }
                let reason = reason.clone().unwrap_or_default();
                let what = match how {
                    Settled::Ack => Happened::Acked { handler_us },
                    Settled::Nack => Happened::Nacked { reason, delay_ms, handler_us },
                    Settled::Reject => Happened::Rejected { reason, handler_us },
                };
                out.push(HistoryEntry { at_ms: at, what });
                if how == Settled::Ack {
                    out.push(HistoryEntry { at_ms: at, what: Happened::Done });
                }
            }
        }
        Record::TimedOut { t, p, at, items } => {
            for (o, attempt) in items {
                if wanted.contains(&key(&t, p, o)) {
                    out.push(HistoryEntry { at_ms: at, what: Happened::TimedOut { attempt } });
                }
            }
        }
        Record::DeadLettered { t, p, o, at, reason, attempts, dlq } => {
            if wanted.contains(&key(&t, p, o)) {
                out.push(HistoryEntry {
                    at_ms: at,
                    what: Happened::DeadLettered { reason, attempts, dlq_offset: dlq },
                });
            }
        }
        Record::Replayed { t, p, o, at, to } => {
            if wanted.contains(&key(&t, p, o)) {
                let (topic, partition, offset) = to.clone();
                wanted.insert(to);
                // The copy may have been delivered before this record was buffered: the replay
                // goes before its first delivery.
                let first = out.iter().position(|e| {
                    matches!(&e.what, Happened::Delivered { topic: t, partition: p, offset: o, .. }
                        if *t == topic && *p == partition && *o == offset)
                });
                let entry = HistoryEntry { at_ms: at, what: Happened::Replayed { topic, partition, offset } };
                match first {
                    Some(i) => out.insert(i, entry),
                    None => out.push(entry),
                }
            }
        }
    }
}

/// Finds where an event with `id` was published on `topic`, from the deliveries recorded: the
/// first `(partition, offset)` found. Blocking.
pub(crate) fn find_id(history: &History, topic: &str, id: &str) -> Result<Option<(u32, u64)>> {
    let Some(log) = &history.log else { return Ok(None) };
    crate::group::assert_no_group_lock("searching a group's history");
    let mut next = log.earliest_offset();
    let end = log.latest_offset();
    let mut read = 0usize;
    while next < end && read < SEARCH_BYTES_MAX {
        let Ok(batch) = log.read(next, 4 << 20, 10_000) else { break };
        let Some(last) = batch.last() else { break };
        next = last.offset + 1;
        for r in batch {
            read += r.data.len();
            if let Ok(Record::Delivered { t, p, items, .. }) = decode(&r.data)
                && t == topic
                && let Some((o, _, _)) = items.iter().find(|(_, _, i)| i == id)
            {
                return Ok(Some((p, *o)));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BrokerConfig {
        BrokerConfig { history_bytes_max: 1 << 20, ..BrokerConfig::default() }
    }

    fn id(t: &str, o: u64) -> DeliveryId {
        DeliveryId { topic: t.into(), partition: 0, offset: o, generation: 1, attempt: 1 }
    }

    #[test]
    fn the_buffer_is_bounded_and_counts_what_it_drops() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(dir.path(), &config());
        let ids: Vec<DeliveryId> = (0..PENDING_MAX as u64 + 10).map(|o| id("t", o)).collect();
        h.timed_out(&ids);
        assert_eq!(h.pending.lock().unwrap().records.len(), PENDING_MAX);
        assert_eq!(h.dropped(), 10);
        h.write().unwrap();
        assert_eq!(h.dropped(), 10, "the count survives the write");
        assert!(h.pending.lock().unwrap().records.is_empty());
    }

    #[test]
    fn off_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(&dir.path().join("h"), &BrokerConfig { history_bytes_max: 0, ..config() });
        h.timed_out(&[id("t", 1)]);
        h.write().unwrap();
        assert!(!h.enabled());
        assert!(!dir.path().join("h").exists());
    }

    #[test]
    fn a_search_follows_the_event_through_the_dlq_and_its_replayed_copy() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(dir.path(), &config());
        let at = now_ms();
        let d = |t: &str, o: u64, a: u32, i: &str| Record::Delivered {
            t: t.into(),
            p: 0,
            m: "m1".into(),
            at,
            items: vec![(o, a, i.into())],
        };
        let s = |t: &str, o: u64, how| Record::Settled {
            t: t.into(),
            p: 0,
            m: "m1".into(),
            at,
            how,
            items: vec![(o, Some(7))],
            reason: (how != Settled::Ack).then(|| "boom".into()),
            delay_ms: None,
        };
        h.push_all([
            d("orders", 4, 1, "e4"),
            d("orders", 5, 1, "other"),
            s("orders", 4, Settled::Nack),
            s("orders", 5, Settled::Ack),
            d("orders", 4, 2, "e4"),
            s("orders", 4, Settled::Reject),
            Record::DeadLettered { t: "orders".into(), p: 0, o: 4, at, reason: "boom".into(), attempts: 2, dlq: 0 },
            Record::Replayed { t: "orders".into(), p: 0, o: 4, at, to: ("g.replay".into(), 0, 0) },
            d("g.replay", 0, 1, "e4"),
            s("g.replay", 0, Settled::Ack),
        ]);
        h.write().unwrap();
        let w =
            Wanted { topic: "orders", partition: 0, offset: 4, id: "e4", published_ms: at, replay_topic: "g.replay" };
        let (entries, truncated) = h.search(&w).unwrap();
        assert!(!truncated);
        let kinds: Vec<&str> = entries.iter().map(|e| e.what.kind()).collect();
        assert_eq!(
            kinds,
            ["delivered", "nacked", "delivered", "rejected", "dead_lettered", "replayed", "delivered", "acked", "done"]
        );
        assert_eq!(find_id(&h, "orders", "e4").unwrap(), Some((0, 4)));
        assert_eq!(find_id(&h, "orders", "nope").unwrap(), None);
    }

    #[test]
    fn a_newer_record_format_is_refused_with_upgrade() {
        let e = decode(br#"{"v":2,"kind":"done"}"#).unwrap_err();
        assert!(e.contains("upgrade Herald"), "{e}");
    }
}
