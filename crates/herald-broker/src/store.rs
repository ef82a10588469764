//! A group's durable state: a `herald-log` of state records (deliveries with their attempt
//! numbers, acks, failures, partition starts) with periodic checkpoints; segments wholly before
//! the latest checkpoint are deleted. Recovery replays from the earliest record kept.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use herald_log::{Durability, Log, LogConfig};
use serde::{Deserialize, Serialize};

use crate::error::{BrokerError, Result};

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
        let log = Log::open(dir, store_config(durability))?;
        let mut parts: BTreeMap<(String, u32), Part> = BTreeMap::new();
        let mut records = 0;
        let mut next = log.earliest_offset();
        loop {
            let batch = log.read(next, 4 << 20, 10_000)?;
            let Some(last) = batch.last() else { break };
            next = last.offset + 1;
            for r in batch {
                let rec: StateRecord = serde_json::from_slice(&r.data).map_err(|e| BrokerError::CorruptEvent {
                    topic: format!("group state {}", dir.display()),
                    partition: 0,
                    offset: r.offset,
                    reason: e.to_string(),
                })?;
                records += 1;
                apply(&mut parts, rec, &mut records);
            }
        }
        let parts = parts
            .into_iter()
            .map(|((topic, partition), p)| PartCheckpoint {
                topic,
                partition,
                committed: p.committed,
                attempts: p.attempts.into_iter().collect(),
                done: p.done.into_iter().collect(),
            })
            .collect();
        Ok((GroupStore { log }, Recovered { parts, records }))
    }

    /// Appends records durably (fsync before returning; concurrent callers share it).
    pub fn append(&self, records: &[StateRecord]) -> Result<()> {
        let encoded: Vec<Vec<u8>> =
            records.iter().map(|r| serde_json::to_vec(r).expect("state records serialize")).collect();
        for chunk in encoded.chunks(10_000) {
            self.log.append(chunk)?;
        }
        Ok(())
    }

    /// Writes a checkpoint and drops the segments before it.
    pub fn checkpoint(&self, parts: Vec<PartCheckpoint>) -> Result<()> {
        let rec = serde_json::to_vec(&StateRecord::Checkpoint { parts }).expect("serializes");
        let at = self.log.append(&[rec])?.base_offset;
        self.log.delete_before(at)?;
        Ok(())
    }

    pub fn close(&self) -> Result<()> {
        Ok(self.log.close()?)
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
