//! Topics: durable metadata and their partitions.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::config::{BrokerConfig, TopicConfig};
use crate::error::{BrokerError, Result};
use crate::partition::{Listeners, Partition, PartitionSettings};

const META_FILE: &str = "topic.json";

/// What a topic is, as stored in `<data>/topics/<name>/topic.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TopicMeta {
    pub name: String,
    pub config: TopicConfig,
    pub created_ms: i64,
}

/// Per-partition figures of [`crate::Broker::describe_topic`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Partition number.
    pub partition: u32,
    /// Earliest offset still stored.
    pub earliest_offset: u64,
    /// Offset the next event will get.
    pub latest_offset: u64,
    /// Bytes on disk.
    pub bytes: u64,
    /// Segment files.
    pub segments: usize,
}

/// A topic as described by [`crate::Broker::describe_topic`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Its name.
    pub name: String,
    /// Its settings.
    pub config: TopicConfig,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: i64,
    /// Each partition.
    pub partitions: Vec<PartitionInfo>,
}

pub(crate) struct Topic {
    pub name: Arc<str>,
    pub dir: PathBuf,
    pub meta: RwLock<TopicMeta>,
    pub partitions: RwLock<Arc<Vec<Arc<Partition>>>>,
    /// Groups to wake when any partition gets new events.
    pub listeners: Arc<Listeners>,
}

/// Writes `data` to `path` durably: temp file, fsync, rename, fsync the directory.
pub(crate) fn write_durably(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(BrokerError::io(&tmp, "creating a metadata file"))?;
    f.write_all(data).map_err(BrokerError::io(&tmp, "writing a metadata file"))?;
    f.sync_all().map_err(BrokerError::io(&tmp, "fsyncing a metadata file"))?;
    drop(f);
    fs::rename(&tmp, path).map_err(BrokerError::io(path, "renaming a metadata file into place"))?;
    sync_dir(path.parent().expect("metadata files live in a directory"))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(BrokerError::io(dir, "fsyncing a directory"))
}

impl Topic {
    fn settings(meta: &TopicMeta, broker: &BrokerConfig, listeners: &Arc<Listeners>) -> PartitionSettings {
        PartitionSettings {
            listeners: listeners.clone(),
            log: meta.config.log_config(),
            dedupe_window_ms: meta.config.dedupe_window_ms,
            dedupe_entries_max: broker.dedupe_entries_max,
            queue_max: broker.write_queue_events_max,
            batch_events_max: broker.write_batch_events_max,
        }
    }

    fn open_partitions(
        name: &Arc<str>,
        dir: &Path,
        meta: &TopicMeta,
        broker: &BrokerConfig,
        listeners: &Arc<Listeners>,
        from: u32,
    ) -> Result<Vec<Arc<Partition>>> {
        (from..meta.config.partitions)
            .map(|p| {
                let settings = Self::settings(meta, broker, listeners);
                Partition::open(name.clone(), p, &dir.join("partitions").join(p.to_string()), settings)
            })
            .collect()
    }

    /// Creates the topic's directory and metadata durably, then opens its partitions.
    pub fn create(topics_dir: &Path, meta: TopicMeta, broker: &BrokerConfig) -> Result<Topic> {
        let dir = topics_dir.join(&meta.name);
        fs::create_dir_all(dir.join("partitions")).map_err(BrokerError::io(&dir, "creating a topic directory"))?;
        sync_dir(topics_dir)?;
        let json = serde_json::to_vec_pretty(&meta).expect("topic metadata serializes");
        write_durably(&dir.join(META_FILE), &json)?;
        Self::open_dir(dir, meta, broker)
    }

    /// Opens an existing topic directory.
    pub fn open(dir: PathBuf, broker: &BrokerConfig) -> Result<Topic> {
        let path = dir.join(META_FILE);
        let bytes = fs::read(&path).map_err(BrokerError::io(&path, "reading topic metadata"))?;
        let meta: TopicMeta = serde_json::from_slice(&bytes)
            .map_err(|e| BrokerError::InvalidConfig(format!("{}: {e}", path.display())))?;
        Self::open_dir(dir, meta, broker)
    }

    fn open_dir(dir: PathBuf, meta: TopicMeta, broker: &BrokerConfig) -> Result<Topic> {
        let name: Arc<str> = meta.name.as_str().into();
        let listeners = Arc::new(Listeners::default());
        let partitions = Self::open_partitions(&name, &dir, &meta, broker, &listeners, 0)?;
        Ok(Topic { name, dir, meta: RwLock::new(meta), partitions: RwLock::new(Arc::new(partitions)), listeners })
    }

    pub fn partitions(&self) -> Arc<Vec<Arc<Partition>>> {
        self.partitions.read().expect("partitions lock poisoned").clone()
    }

    pub fn config(&self) -> TopicConfig {
        self.meta.read().expect("meta lock poisoned").config.clone()
    }

    /// Grows the topic to `count` partitions: metadata first (durably), then the new logs.
    pub fn add_partitions(&self, count: u32, broker: &BrokerConfig) -> Result<()> {
        let mut meta = self.meta.write().expect("meta lock poisoned");
        let current = meta.config.partitions;
        if count <= current {
            return Err(BrokerError::InvalidConfig(format!(
                "topic {:?} has {current} partitions; the new count {count} must be larger (partitions are never removed)",
                meta.name
            )));
        }
        let mut next = meta.clone();
        next.config.partitions = count;
        next.config.validate(broker)?;
        write_durably(&self.dir.join(META_FILE), &serde_json::to_vec_pretty(&next).expect("serializes"))?;
        let added = Self::open_partitions(&self.name, &self.dir, &next, broker, &self.listeners, current)?;
        let mut parts = self.partitions.write().expect("partitions lock poisoned");
        let mut all = (**parts).clone();
        all.extend(added);
        *parts = Arc::new(all);
        *meta = next;
        Ok(())
    }

    pub fn info(&self) -> TopicInfo {
        let meta = self.meta.read().expect("meta lock poisoned").clone();
        let partitions = self
            .partitions()
            .iter()
            .map(|p| PartitionInfo {
                partition: p.id,
                earliest_offset: p.log.earliest_offset(),
                latest_offset: p.log.latest_offset(),
                bytes: p.log.size_bytes(),
                segments: p.log.segment_count(),
            })
            .collect();
        TopicInfo { name: meta.name, config: meta.config, created_ms: meta.created_ms, partitions }
    }

    /// Picks the partition of an event: by key when it has one; otherwise by its `(source, id)`,
    /// which spreads events evenly and sends a republished event to the same partition, where
    /// dedupe sees it.
    pub fn route(&self, key: Option<&str>, source: &str, id: &str, partitions: u32) -> u32 {
        match key {
            Some(k) => crate::partitioner::partition_for_key(k.as_bytes(), partitions),
            None => {
                let mut buf = Vec::with_capacity(source.len() + id.len() + 1);
                buf.extend_from_slice(source.as_bytes());
                buf.push(0);
                buf.extend_from_slice(id.as_bytes());
                crate::partitioner::partition_for_key(&buf, partitions)
            }
        }
    }
}
