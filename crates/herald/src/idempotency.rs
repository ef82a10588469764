//! Idempotency stores: remember which events a group has completed, so a redelivered or
//! republished copy is acked without running the handler again (outcome `duplicate`).
//!
//! The runtime records completion *before* it acks: after a crash between the two, the
//! redelivered event is recognised and skipped. With a durable store this makes handlers
//! effectively-once for their completion; side effects a handler makes before failing are still
//! its own to make idempotent.

use std::collections::{HashMap, VecDeque};
#[cfg(feature = "embedded")]
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
#[cfg(feature = "embedded")]
use herald_log::{Durability, Log, LogConfig, Retention};

use crate::error::Result;
#[cfg(feature = "embedded")]
use crate::error::{Code, Error};

/// Where completed event ids are remembered.
#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Whether `group` completed the event `key` (its `source` and `id`) within the TTL.
    async fn completed(&self, group: &str, key: &str) -> Result<bool>;
    /// Records that `group` completed `key`; durable before it returns, for a durable store.
    async fn complete(&self, group: &str, key: &str) -> Result<()>;
}

/// Default most remembered ids.
pub const ENTRIES_MAX_DEFAULT: usize = 1_000_000;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The in-memory part shared by both stores: ids with their completion time, oldest first,
/// bounded by a TTL and a count.
struct Memory {
    ttl_ms: i64,
    entries_max: usize,
    map: HashMap<String, i64>,
    order: VecDeque<(String, i64)>,
}

impl Memory {
    fn new(ttl: Duration, entries_max: usize) -> Self {
        Memory {
            ttl_ms: ttl.as_millis().min(i64::MAX as u128) as i64,
            entries_max: entries_max.max(1),
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn expire(&mut self, now: i64) {
        while let Some((_, at)) = self.order.front() {
            if now - *at <= self.ttl_ms && self.order.len() <= self.entries_max {
                break;
            }
            let (k, at) = self.order.pop_front().expect("front exists");
            if self.map.get(&k) == Some(&at) {
                self.map.remove(&k);
            }
        }
    }

    fn contains(&mut self, k: &str, now: i64) -> bool {
        self.expire(now);
        self.map.contains_key(k)
    }

    fn insert(&mut self, k: String, at: i64) {
        self.order.push_back((k.clone(), at));
        self.map.insert(k, at);
        self.expire(at);
    }
}

fn entry(group: &str, key: &str) -> String {
    format!("{group}\u{0}{key}")
}

/// Remembers completed ids in memory for `ttl` (at most `entries_max` of them). Lost on restart.
pub struct MemoryIdempotency(Mutex<Memory>);

impl MemoryIdempotency {
    /// A store keeping ids for `ttl`.
    pub fn new(ttl: Duration) -> Arc<Self> {
        Self::with_limit(ttl, ENTRIES_MAX_DEFAULT)
    }

    /// A store keeping ids for `ttl`, at most `entries_max` (the oldest are forgotten first).
    pub fn with_limit(ttl: Duration, entries_max: usize) -> Arc<Self> {
        Arc::new(MemoryIdempotency(Mutex::new(Memory::new(ttl, entries_max))))
    }
}

#[async_trait]
impl IdempotencyStore for MemoryIdempotency {
    async fn completed(&self, group: &str, key: &str) -> Result<bool> {
        Ok(self.0.lock().expect("store lock poisoned").contains(&entry(group, key), now_ms()))
    }

    async fn complete(&self, group: &str, key: &str) -> Result<()> {
        self.0.lock().expect("store lock poisoned").insert(entry(group, key), now_ms());
        Ok(())
    }
}

/// Remembers completed ids durably in a `herald-log` in `dir` (fsynced before `complete`
/// returns), reloading those younger than `ttl` at open. Old segments are deleted by age.
/// (Feature `embedded`.)
#[cfg(feature = "embedded")]
pub struct FileIdempotency {
    log: Arc<Log>,
    memory: Mutex<Memory>,
}

#[cfg(feature = "embedded")]
impl FileIdempotency {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path, ttl: Duration) -> Result<Arc<Self>> {
        let storage = |e: herald_log::LogError| Error::new(Code::Storage, e.to_string());
        let ttl_ms = ttl.as_millis().min(u64::MAX as u128 / 4) as u64;
        let config = LogConfig {
            durability: Durability::Always,
            segment_bytes_max: 8 << 20,
            retention: Retention { age_ms: Some(ttl_ms.max(1)), bytes: None },
            ..LogConfig::default()
        };
        let log = Log::open(dir, config).map_err(storage)?;
        log.enforce_retention(now_ms()).map_err(storage)?;
        let mut memory = Memory::new(ttl, ENTRIES_MAX_DEFAULT);
        let since = now_ms().saturating_sub(ttl_ms as i64);
        if let Some(mut next) = log.offset_for_timestamp(since).map_err(storage)? {
            loop {
                let records = log.read(next, 4 << 20, 10_000).map_err(storage)?;
                let Some(last) = records.last() else { break };
                next = last.offset + 1;
                for r in records {
                    if let Ok(k) = std::str::from_utf8(&r.data) {
                        memory.insert(k.to_owned(), r.timestamp_ms);
                    }
                }
            }
        }
        Ok(Arc::new(FileIdempotency { log: Arc::new(log), memory: Mutex::new(memory) }))
    }
}

#[cfg(feature = "embedded")]
#[async_trait]
impl IdempotencyStore for FileIdempotency {
    async fn completed(&self, group: &str, key: &str) -> Result<bool> {
        Ok(self.memory.lock().expect("store lock poisoned").contains(&entry(group, key), now_ms()))
    }

    async fn complete(&self, group: &str, key: &str) -> Result<()> {
        let k = entry(group, key);
        let log = self.log.clone();
        let record = k.clone().into_bytes();
        let appended = tokio::task::spawn_blocking(move || log.append(&[record]))
            .await
            .map_err(|e| Error::new(Code::Storage, format!("the store task failed: {e}")))?
            .map_err(|e| Error::new(Code::Storage, e.to_string()))?;
        self.memory.lock().expect("store lock poisoned").insert(k, appended.timestamp_ms);
        Ok(())
    }
}
