//! One partition: its log, its writer task (broker-level group commit and dedupe), and the
//! notification consumers wait on.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use herald_core::Event;
use herald_core::codec::binary;
use herald_log::{Log, LogConfig};
use tokio::sync::{mpsc, oneshot};

use crate::broker::now_ms;
use crate::error::{BrokerError, Result};

pub use herald_model::{Receipt, StoredEvent};

/// Most stored bytes of a damaged stretch kept as evidence when a group steps over it.
pub const DAMAGED_BYTES_MAX: usize = 64 * 1024;

/// A stretch of a partition that cannot be read. See [`Partition::damaged_range`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedRange {
    /// First damaged offset.
    pub from: u64,
    /// The next readable offset (or the partition's end).
    pub to: u64,
    /// What is wrong.
    pub reason: String,
    /// The stored bytes from where the damage starts, at most [`DAMAGED_BYTES_MAX`].
    pub bytes: Vec<u8>,
}

/// Why an append failed, and whether it was a full disk.
type AppendFailure = (String, bool);

struct WriteRequest {
    events: Vec<(Event, Vec<u8>)>,
    /// The offsets (and whether each was a duplicate), or the failure and whether it was a full disk.
    reply: oneshot::Sender<Result<Vec<(u64, bool)>, AppendFailure>>,
}

/// `source`, a zero byte, `id`: one shared allocation per event, in the map and the queue.
type DedupeKey = Arc<str>;

fn dedupe_key(event: &Event) -> DedupeKey {
    let mut k = String::with_capacity(event.source().len() + event.id().len() + 1);
    k.push_str(event.source());
    k.push('\0');
    k.push_str(event.id());
    k.into()
}

/// Remembers `(source, id)` → offset of recent appends.
struct Dedupe {
    window_ms: i64,
    entries_max: usize,
    map: HashMap<DedupeKey, (u64, i64)>,
    order: VecDeque<(DedupeKey, i64)>,
}

impl Dedupe {
    fn new(window_ms: u64, entries_max: usize) -> Self {
        Dedupe {
            window_ms: window_ms.min(i64::MAX as u64) as i64,
            entries_max,
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn expire(&mut self, now_ms: i64) {
        let horizon = now_ms.saturating_sub(self.window_ms);
        while let Some((_, ts)) = self.order.front() {
            if *ts >= horizon && self.order.len() <= self.entries_max {
                break;
            }
            let (key, ts) = self.order.pop_front().expect("front exists");
            if self.map.get(&key).is_some_and(|e| e.1 == ts) {
                self.map.remove(&key);
            }
        }
    }

    fn get(&self, key: &str) -> Option<u64> {
        self.map.get(key).map(|e| e.0)
    }

    fn insert(&mut self, key: DedupeKey, offset: u64, ts: i64) {
        if self.window_ms == 0 {
            return;
        }
        self.order.push_back((key.clone(), ts));
        self.map.insert(key, (offset, ts));
        if self.order.len() > self.entries_max {
            tracing::warn!(entries_max = self.entries_max, "dedupe memory full: forgetting the oldest event ids early");
            self.expire(i64::MIN);
        }
    }
}

pub(crate) struct Partition {
    pub topic: Arc<str>,
    pub id: u32,
    pub log: Arc<Log>,
    tx: mpsc::UnboundedSender<WriteRequest>,
    queued: Arc<AtomicUsize>,
    queue_max: usize,
    /// The first damage found in this partition, if any.
    damage: std::sync::Mutex<Option<String>>,
}

/// Who to wake when a partition of a topic gets new events (one `Notify` per subscribed group).
#[derive(Default)]
pub(crate) struct Listeners(std::sync::Mutex<Vec<std::sync::Weak<tokio::sync::Notify>>>);

impl Listeners {
    pub fn add(&self, n: &Arc<tokio::sync::Notify>) {
        let mut v = self.0.lock().expect("listeners lock poisoned");
        v.retain(|w| w.strong_count() > 0);
        if !v.iter().any(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(n))) {
            v.push(Arc::downgrade(n));
        }
    }

    fn notify(&self) {
        for w in self.0.lock().expect("listeners lock poisoned").iter() {
            if let Some(n) = w.upgrade() {
                n.notify_waiters();
            }
        }
    }
}

pub(crate) struct PartitionSettings {
    pub listeners: Arc<Listeners>,
    pub log: LogConfig,
    pub dedupe_window_ms: u64,
    pub dedupe_entries_max: usize,
    pub queue_max: usize,
    pub batch_events_max: usize,
}

impl Partition {
    /// Opens the partition's log, rebuilds the dedupe memory from the window's tail, and starts
    /// the writer task. Must run inside a Tokio runtime.
    pub fn open(topic: Arc<str>, id: u32, dir: &Path, s: PartitionSettings) -> Result<Arc<Partition>> {
        let (log, recovery) = Log::open_with_report(dir, s.log.clone())?;
        let log = Arc::new(log);
        let mut dedupe = Dedupe::new(s.dedupe_window_ms, s.dedupe_entries_max);
        let mut damage = recovery.lost.map(|(from, to)| {
            format!(
                "offsets {from}..{to} were lost after the last clean shutdown (the log's tail was cut); \
                 they are not reused and reads of them fail as damaged"
            )
        });
        if let Some((from, to)) = recovery.lost_head {
            damage.get_or_insert(format!(
                "offsets {from}..{to} were lost after the last clean shutdown (the oldest segments are gone, \
                 not deleted by retention); the partition starts at {to}"
            ));
        }
        if s.dedupe_window_ms > 0 {
            // Republishing must be idempotent across a restart too: remember the ids stored
            // within the window. Cost: one read of the window's tail. Damage there does not stop
            // the partition: the damaged records are passed over (their ids are not remembered)
            // and the partition reports them.
            let since = now_ms().saturating_sub(dedupe.window_ms);
            let start = match log.offset_for_timestamp(since) {
                Ok(start) => start,
                // The time lookup met the damage first: the window starts at or after it.
                Err(herald_log::LogError::Corrupt { offset, reason, .. }) => {
                    damage = Some(format!("damaged data at offset {offset}: {reason}"));
                    Some(offset)
                }
                Err(e) => return Err(e.into()),
            };
            if let Some(mut next) = start {
                while next < log.latest_offset() {
                    let records = match log.read(next, 4 << 20, 10_000) {
                        Ok(r) => r,
                        Err(herald_log::LogError::Corrupt { offset, reason, .. }) => {
                            damage.get_or_insert(format!("damaged data at offset {offset}: {reason}"));
                            next = first_readable_after(&log, offset.max(next));
                            continue;
                        }
                        Err(e) => return Err(e.into()),
                    };
                    let Some(last) = records.last() else { break };
                    next = last.offset + 1;
                    for r in records {
                        match binary::decode_with(&r.data, &herald_core::Limits::HARD) {
                            Ok(event) => dedupe.insert(dedupe_key(&event), r.offset, r.timestamp_ms),
                            Err(e) => {
                                damage.get_or_insert(format!("undecodable event at offset {}: {e}", r.offset));
                            }
                        }
                    }
                }
            }
        }
        if let Some(problem) = &damage {
            tracing::error!(%topic, partition = id, %problem,
                "damage in the dedupe window: those events' ids are not remembered; the partition serves the rest");
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let writer = Writer {
            log: log.clone(),
            rx,
            dedupe,
            queued: queued.clone(),
            listeners: s.listeners.clone(),
            batch_events_max: s.batch_events_max,
            batch_bytes_max: s.log.batch_bytes_max as usize,
        };
        tokio::spawn(writer.run());
        Ok(Arc::new(Partition {
            topic,
            id,
            log,
            tx,
            queued,
            queue_max: s.queue_max,
            damage: std::sync::Mutex::new(damage),
        }))
    }

    /// Appends events (already validated and encoded). Returns `(offset, duplicate)` per event.
    pub async fn append(&self, events: Vec<(Event, Vec<u8>)>) -> Result<Vec<(u64, bool)>> {
        let n = events.len();
        let queued = self.queued.fetch_add(n, Ordering::AcqRel);
        if queued + n > self.queue_max && queued > 0 {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            return Err(BrokerError::Busy { topic: self.topic.to_string(), partition: self.id, queued });
        }
        let (reply, rx) = oneshot::channel();
        if self.tx.send(WriteRequest { events, reply }).is_err() {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            return Err(BrokerError::Closed);
        }
        match rx.await {
            Ok(Ok(offsets)) => Ok(offsets),
            Ok(Err((reason, storage_full))) => Err(BrokerError::WriteFailed {
                topic: self.topic.to_string(),
                partition: self.id,
                reason,
                storage_full,
            }),
            Err(_) => Err(BrokerError::Closed),
        }
    }

    /// The damaged stretch a read from `offset` fails on: its offsets `from..to` (`to` is the
    /// next readable offset, or the end), why, and its stored bytes (up to
    /// [`DAMAGED_BYTES_MAX`]) as evidence. `None` when a read from `offset` succeeds.
    pub fn damaged_range(&self, offset: u64) -> Result<Option<DamagedRange>> {
        match self.read_inner(offset, 1, 1) {
            Err(BrokerError::CorruptEvent { offset: at, reason, .. }) => {
                // The batch is intact; one record in it does not decode.
                let bytes = self.log.read(at, 1, 1)?.into_iter().next().map(|r| r.data.to_vec()).unwrap_or_default();
                let bytes = bytes[..bytes.len().min(DAMAGED_BYTES_MAX)].to_vec();
                Ok(Some(DamagedRange { from: at, to: at + 1, reason: format!("undecodable event: {reason}"), bytes }))
            }
            Err(BrokerError::Log(herald_log::LogError::Corrupt { offset: at, reason, .. })) => {
                let from = at.max(offset);
                // Exact where the log can resynchronise behind the damage; probing otherwise
                // (a batch behind a mangled frame can be intact yet unreachable by a read).
                let mut to = self.log.next_readable(from)?.max(from + 1);
                if to < self.log.latest_offset() && self.log.read(to, 1, 1).is_err() {
                    to = first_readable_after(&self.log, to);
                }
                let bytes = self.log.damaged_bytes(from, DAMAGED_BYTES_MAX)?.map(|(_, _, b)| b).unwrap_or_default();
                Ok(Some(DamagedRange { from, to, reason, bytes }))
            }
            Err(e) => Err(e),
            Ok(_) => Ok(None),
        }
    }

    /// The first damage found in this partition, if any.
    pub fn damage(&self) -> Option<String> {
        self.damage.lock().expect("damage lock poisoned").clone()
    }

    /// Reads stored events from `offset`. Damage found is remembered for [`Partition::damage`].
    pub fn read(&self, offset: u64, max_bytes: usize, max_events: usize) -> Result<Vec<StoredEvent>> {
        let r = self.read_inner(offset, max_bytes, max_events);
        if let Err(e @ (BrokerError::Log(herald_log::LogError::Corrupt { .. }) | BrokerError::CorruptEvent { .. })) = &r
        {
            self.damage.lock().expect("damage lock poisoned").get_or_insert_with(|| e.to_string());
        }
        r
    }

    fn read_inner(&self, offset: u64, max_bytes: usize, max_events: usize) -> Result<Vec<StoredEvent>> {
        crate::group::assert_no_group_lock("reading a partition");
        let records = self.log.read(offset, max_bytes, max_events)?;
        let mut events = Vec::with_capacity(records.len());
        for r in records {
            events.push({
                let event = binary::decode_with(&r.data, &herald_core::Limits::HARD).map_err(|e| {
                    BrokerError::CorruptEvent {
                        topic: self.topic.to_string(),
                        partition: self.id,
                        offset: r.offset,
                        reason: e.to_string(),
                    }
                })?;
                StoredEvent {
                    event,
                    topic: self.topic.clone(),
                    partition: self.id,
                    offset: r.offset,
                    append_time_ms: r.timestamp_ms,
                }
            });
        }
        Ok(events)
    }
}

/// The first offset after `damaged` (which cannot be read) that can be read, or the log's end:
/// probing forward by doubling steps, then narrowing down, so that a damaged batch costs a few
/// reads and no intact record after it is passed over.
fn first_readable_after(log: &Log, damaged: u64) -> u64 {
    let end = log.latest_offset();
    let readable = |o: u64| log.read(o, 1, 1).is_ok();
    let (mut lo, mut step) = (damaged, 1u64);
    let mut hi = loop {
        let probe = lo.saturating_add(step);
        if probe >= end {
            break end;
        }
        if readable(probe) {
            break probe;
        }
        lo = probe;
        step = step.saturating_mul(2);
    };
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if readable(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// The single writer of a partition: drains every queued request into one log append (one
/// fsync under `always`), so concurrent publishers share the cost of durability.
struct Writer {
    log: Arc<Log>,
    rx: mpsc::UnboundedReceiver<WriteRequest>,
    dedupe: Dedupe,
    queued: Arc<AtomicUsize>,
    listeners: Arc<Listeners>,
    batch_events_max: usize,
    batch_bytes_max: usize,
}

impl Writer {
    async fn run(mut self) {
        let mut carry: Option<WriteRequest> = None;
        loop {
            let first = match carry.take() {
                Some(r) => r,
                None => match self.rx.recv().await {
                    Some(r) => r,
                    None => break,
                },
            };
            let mut events = first.events.len();
            let mut bytes: usize = first.events.iter().map(|e| e.1.len() + 8).sum();
            let mut requests = vec![first];
            while events < self.batch_events_max {
                let Ok(r) = self.rx.try_recv() else { break };
                let (n, b) = (r.events.len(), r.events.iter().map(|e| e.1.len() + 8).sum::<usize>());
                if events + n > self.batch_events_max || bytes + b + 64 > self.batch_bytes_max {
                    carry = Some(r);
                    break;
                }
                events += n;
                bytes += b;
                requests.push(r);
            }
            self.write(requests, events).await;
        }
    }

    async fn write(&mut self, requests: Vec<WriteRequest>, events: usize) {
        let now = now_ms();
        self.dedupe.expire(now);
        // Decide per event: a duplicate of something stored (or earlier in this very batch),
        // or a new record.
        let mut records: Vec<Vec<u8>> = Vec::new();
        let mut fresh: HashMap<DedupeKey, usize> = HashMap::new();
        let mut plan: Vec<Vec<Slot>> = Vec::with_capacity(requests.len());
        let mut keys = Vec::new();
        let mut replies = Vec::with_capacity(requests.len());
        for req in requests {
            let mut slots = Vec::with_capacity(req.events.len());
            for (event, encoded) in req.events {
                let key = dedupe_key(&event);
                if let Some(offset) = self.dedupe.get(&key) {
                    slots.push(Slot::Stored(offset));
                } else if let Some(&i) = fresh.get(&key) {
                    slots.push(Slot::New(i, true));
                } else {
                    fresh.insert(key.clone(), records.len());
                    slots.push(Slot::New(records.len(), false));
                    keys.push(key);
                    records.push(encoded);
                }
            }
            plan.push(slots);
            replies.push(req.reply);
        }
        let result = if records.is_empty() {
            Ok(None)
        } else {
            let log = self.log.clone();
            let bytes_max = self.batch_bytes_max;
            match tokio::task::spawn_blocking(move || append_split(&log, &records, now, bytes_max)).await {
                Ok(Ok(a)) => Ok(Some(a)),
                Ok(Err(e)) => Err((e.to_string(), e.is_storage_full())),
                Err(e) => Err((format!("the append task failed: {e}"), false)),
            }
        };
        self.queued.fetch_sub(events, Ordering::AcqRel);
        match result {
            Ok(appended) => {
                if let Some(a) = appended {
                    for (i, key) in keys.into_iter().enumerate() {
                        self.dedupe.insert(key, a.base_offset + i as u64, a.timestamp_ms);
                    }
                    self.listeners.notify();
                }
                let base = appended.map_or(0, |a| a.base_offset);
                for (slots, reply) in plan.into_iter().zip(replies) {
                    let offsets = slots
                        .into_iter()
                        .map(|s| match s {
                            Slot::Stored(o) => (o, true),
                            Slot::New(i, dup) => (base + i as u64, dup),
                        })
                        .collect();
                    let _ = reply.send(Ok(offsets));
                }
            }
            Err(reason) => {
                tracing::error!(reason = %reason.0, "partition append failed");
                for reply in replies {
                    let _ = reply.send(Err(reason.clone()));
                }
            }
        }
    }
}

/// Appends `records` as one log batch, or as several consecutive ones when they exceed the log's
/// batch limits (one large request must not fail for being large). This writer is the log's
/// only appender, so the batches are contiguous and the result spans them all.
fn append_split(
    log: &Log,
    records: &[Vec<u8>],
    now: i64,
    bytes_max: usize,
) -> herald_log::Result<herald_log::Appended> {
    let records_max = log.config().batch_records_max as usize;
    let mut first: Option<herald_log::Appended> = None;
    let mut start = 0;
    while start < records.len() {
        let mut end = start;
        let mut bytes = herald_log::batch::BATCH_HEADER_BYTES;
        while end < records.len() && end - start < records_max {
            let size = records[end].len() + herald_log::batch::RECORD_HEADER_BYTES;
            if end > start && bytes + size > bytes_max {
                break;
            }
            bytes += size;
            end += 1;
        }
        let a = log.append_at(&records[start..end], now)?;
        if let Some(f) = &first {
            assert_eq!(a.base_offset, f.next_offset, "the partition writer is the log's only appender");
        }
        first = Some(match first {
            Some(f) => herald_log::Appended { next_offset: a.next_offset, ..f },
            None => a,
        });
        start = end;
    }
    Ok(first.expect("records is not empty"))
}

enum Slot {
    /// Already in the log at this offset.
    Stored(u64),
    /// The i-th record of this append; `true` if an earlier event of the batch had the same id.
    New(usize, bool),
}
