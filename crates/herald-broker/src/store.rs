//! A group's durable state: a `herald-log` of state records (deliveries with their attempt
//! numbers, acks, failures, partition starts) with periodic checkpoints; segments wholly before
//! the latest checkpoint are deleted. Recovery replays from the earliest record kept.
//!
//! Records are versioned: a record is a JSON object whose `v` is its format, absent for format 1
//! (what main wrote before formats were named, and still writes). A reader accepts every format
//! up to [`RECORD_FORMAT`] and refuses a newer one, or a kind it does not know, with an error
//! that says to upgrade; unknown fields of a known kind are ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use herald_log::{Durability, Log, LogConfig};
use serde::{Deserialize, Serialize};

use crate::error::{BrokerError, Result};

/// The newest state record format this build writes and reads.
pub(crate) const RECORD_FORMAT: u32 = 1;

fn format_1() -> u32 {
    1
}

#[derive(Deserialize)]
struct Version {
    #[serde(default = "format_1")]
    v: u32,
}

/// A record as stored (format 1: the record's JSON, no `v`).
pub(crate) fn encode(record: &StateRecord) -> Vec<u8> {
    serde_json::to_vec(record).expect("state records serialize")
}

/// A stored record, or why it cannot be read.
pub(crate) fn decode(bytes: &[u8]) -> std::result::Result<StateRecord, String> {
    let Version { v } = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if v > RECORD_FORMAT {
        return Err(format!(
            "the record has format {v}; this build of Herald reads formats up to {RECORD_FORMAT}: upgrade Herald"
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        format!("{e} (a record kind this build does not know was written by a newer Herald: upgrade Herald)")
    })
}

/// One change of a group's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum StateRecord {
    /// The group starts reading a partition at `committed`.
    Start { topic: String, partition: u32, committed: u64 },
    /// Events handed to a member, with their attempt numbers. Written before the member sees them.
    Delivered { topic: String, partition: u32, offsets: Vec<(u64, u32)> },
    /// Events acked or dead-lettered.
    Done { topic: String, partition: u32, offsets: Vec<u64> },
    /// The topic was deleted: forget its partitions (a topic created again starts afresh).
    Forget { topic: String },
    /// The position jumped forward (retention deleted events before `committed`).
    Skip { topic: String, partition: u32, committed: u64 },
    /// A failed attempt (for the log; attempts are counted by `Delivered`).
    Failed { topic: String, partition: u32, offset: u64, reason: String, at_ms: i64 },
    /// The whole state at one moment; records before it no longer matter.
    Checkpoint { parts: Vec<PartCheckpoint> },
}

/// One partition's state in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PartCheckpoint {
    pub topic: String,
    pub partition: u32,
    pub committed: u64,
    pub attempts: Vec<(u64, u32)>,
    pub done: Vec<u64>,
}

/// What recovery rebuilt.
pub(crate) struct Recovered {
    pub parts: Vec<PartCheckpoint>,
    /// Records replayed since the last checkpoint.
    pub records: usize,
}

#[derive(Default)]
struct Part {
    committed: u64,
    attempts: BTreeMap<u64, u32>,
    done: BTreeSet<u64>,
}

impl Part {
    fn advance(&mut self) {
        while self.done.remove(&self.committed) {
            self.attempts.remove(&self.committed);
            self.committed += 1;
        }
    }
}

pub(crate) struct GroupStore {
    log: Log,
}

fn store_config(durability: Durability) -> LogConfig {
    // A checkpoint holds every attempt count and out-of-order ack of the group: allow large
    // records rather than fail to compact.
    LogConfig {
        durability,
        segment_bytes_max: 1 << 20,
        record_bytes_max: herald_log::RECORD_BYTES_MAX_MAX,
        batch_bytes_max: herald_log::RECORD_BYTES_MAX_MAX + 1024,
        ..LogConfig::default()
    }
}

impl GroupStore {
    pub fn open(dir: &Path, durability: Durability) -> Result<(GroupStore, Recovered)> {
        crate::group::assert_no_group_lock("opening a group store");
        let log = Log::open(dir, store_config(durability))?;
        let mut recovery = Recovery::default();
        let mut next = log.earliest_offset();
        loop {
            let batch = log.read(next, 4 << 20, 10_000)?;
            let Some(last) = batch.last() else { break };
            next = last.offset + 1;
            for r in batch {
                let rec = decode(&r.data).map_err(|reason| BrokerError::CorruptEvent {
                    topic: format!("group state {}", dir.display()),
                    partition: 0,
                    offset: r.offset,
                    reason,
                })?;
                recovery.apply(rec);
            }
        }
        Ok((GroupStore { log }, recovery.finish()))
    }

    /// Appends records durably (fsync before returning; concurrent callers share it).
    pub fn append(&self, records: &[StateRecord]) -> Result<()> {
        crate::group::assert_no_group_lock("appending to a group store");
        let encoded: Vec<Vec<u8>> = records.iter().map(encode).collect();
        for chunk in encoded.chunks(10_000) {
            self.log.append(chunk)?;
        }
        Ok(())
    }

    /// Writes a checkpoint and drops the segments before it.
    pub fn checkpoint(&self, parts: Vec<PartCheckpoint>) -> Result<()> {
        crate::group::assert_no_group_lock("checkpointing a group store");
        let rec = encode(&StateRecord::Checkpoint { parts });
        let at = self.log.append(&[rec])?.base_offset;
        self.log.delete_before(at)?;
        Ok(())
    }

    pub fn close(&self) -> Result<()> {
        Ok(self.log.close()?)
    }

    /// Why the state log accepts no appends, if it does not (and whether it was a full disk).
    pub fn fenced(&self) -> Option<(String, bool)> {
        self.log.fenced()
    }

    /// See `herald_log::Log::try_unfence`.
    pub fn try_unfence(&self) -> Result<bool> {
        crate::group::assert_no_group_lock("unfencing a group store");
        Ok(self.log.try_unfence()?)
    }
}

/// Rebuilds a group's durable state from its records, in order: a pure function, shared by
/// [`GroupStore::open`] and the state machine's model test.
#[derive(Default)]
pub(crate) struct Recovery {
    parts: BTreeMap<(String, u32), Part>,
    /// Records since the last checkpoint.
    records: usize,
}

impl Recovery {
    pub fn apply(&mut self, rec: StateRecord) {
        self.records += 1;
        apply(&mut self.parts, rec, &mut self.records);
    }

    pub fn finish(self) -> Recovered {
        let parts = self
            .parts
            .into_iter()
            .map(|((topic, partition), p)| PartCheckpoint {
                topic,
                partition,
                committed: p.committed,
                attempts: p.attempts.into_iter().collect(),
                done: p.done.into_iter().collect(),
            })
            .collect();
        Recovered { parts, records: self.records }
    }
}

fn apply(parts: &mut BTreeMap<(String, u32), Part>, rec: StateRecord, records: &mut usize) {
    match rec {
        StateRecord::Start { topic, partition, committed } => {
            parts.entry((topic, partition)).or_insert_with(|| Part { committed, ..Default::default() });
        }
        StateRecord::Delivered { topic, partition, offsets } => {
            if let Some(p) = parts.get_mut(&(topic, partition)) {
                for (o, a) in offsets {
                    if o >= p.committed {
                        let e = p.attempts.entry(o).or_insert(0);
                        *e = (*e).max(a);
                    }
                }
            }
        }
        StateRecord::Done { topic, partition, offsets } => {
            if let Some(p) = parts.get_mut(&(topic, partition)) {
                for o in offsets {
                    if o >= p.committed {
                        p.done.insert(o);
                    }
                }
                p.advance();
            }
        }
        StateRecord::Skip { topic, partition, committed } => {
            if let Some(p) = parts.get_mut(&(topic, partition))
                && committed > p.committed
            {
                p.committed = committed;
                p.done.retain(|o| *o >= committed);
                p.attempts.retain(|o, _| *o >= committed);
                p.advance();
            }
        }
        StateRecord::Forget { topic } => parts.retain(|(t, _), _| *t != topic),
        StateRecord::Failed { .. } => {}
        StateRecord::Checkpoint { parts: cps } => {
            parts.clear();
            *records = 0;
            for c in cps {
                parts.insert(
                    (c.topic, c.partition),
                    Part {
                        committed: c.committed,
                        attempts: c.attempts.into_iter().collect(),
                        done: c.done.into_iter().collect(),
                    },
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_as_main_wrote_them_before_formats_read_as_format_1() {
        let old = br#"{"kind":"delivered","topic":"orders","partition":0,"offsets":[[5,2]]}"#;
        assert_eq!(
            decode(old).unwrap(),
            StateRecord::Delivered { topic: "orders".into(), partition: 0, offsets: vec![(5, 2)] }
        );
        // Format 1 is still written without `v`: a rollback reads it.
        assert_eq!(encode(&decode(old).unwrap()), old.to_vec());
    }

    #[test]
    fn newer_formats_and_unknown_kinds_are_refused_with_what_to_do() {
        let e = decode(br#"{"v":2,"kind":"done","topic":"t","partition":0,"offsets":[]}"#).unwrap_err();
        assert!(e.contains("format 2") && e.contains("upgrade"), "{e}");
        let e = decode(br#"{"kind":"teleported","topic":"t"}"#).unwrap_err();
        assert!(e.contains("upgrade"), "{e}");
        // An unknown field of a known kind is ignored.
        let r = decode(br#"{"kind":"forget","topic":"t","since_ms":5}"#).unwrap();
        assert_eq!(r, StateRecord::Forget { topic: "t".into() });
    }
}
