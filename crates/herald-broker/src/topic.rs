//! Topics: durable metadata and their partitions.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use herald_model::storage::{self, StoredTopicConfig};
pub use herald_model::{PartitionInfo, TopicInfo};

use crate::config::{BrokerConfig, TopicConfig};
use crate::error::{BrokerError, Result};
use crate::partition::{Listeners, Partition, PartitionSettings};

const META_FILE: &str = "topic.json";
/// A topic being created: `<topics>/.creating-<name>` until it is whole.
pub(crate) const STAGING_PREFIX: &str = ".creating-";

/// What a topic is, as stored in `<data>/topics/<name>/topic.json` (versioned: see
/// [`herald_model::storage`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredTopicMeta {
    #[serde(default = "format_1")]
    pub format: u32,
    pub name: String,
    pub config: StoredTopicConfig,
    #[serde(default)]
    pub created_ms: i64,
}

fn format_1() -> u32 {
    1
}

impl storage::Stored for StoredTopicMeta {
    fn format(&self) -> u32 {
        self.format.max(self.config.format)
    }
}

/// A topic's metadata in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TopicMeta {
    pub name: String,
    pub config: TopicConfig,
    pub created_ms: i64,
}

impl TopicMeta {
    fn to_stored(&self) -> Vec<u8> {
        storage::write(&StoredTopicMeta {
            format: storage::SETTINGS_FORMAT,
            name: self.name.clone(),
            config: StoredTopicConfig::from(&self.config),
            created_ms: self.created_ms,
        })
    }
}

pub(crate) struct Topic {
    pub name: Arc<str>,
    pub dir: PathBuf,
    pub meta: RwLock<TopicMeta>,
    pub partitions: RwLock<Arc<Vec<Arc<Partition>>>>,
    /// Groups to wake when any partition gets new events.
    pub listeners: Arc<Listeners>,
    /// The schemas its events are checked against on publish.
    pub schemas: crate::schema::Registry,
}

/// Writes `data` to `path` durably: temp file, fsync, rename, fsync the directory.
pub(crate) fn write_durably(path: &Path, data: &[u8]) -> Result<()> {
    crate::group::assert_no_group_lock("writing a metadata file");
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(BrokerError::io(&tmp, "creating a metadata file"))?;
    f.write_all(data).map_err(BrokerError::io(&tmp, "writing a metadata file"))?;
    f.sync_all().map_err(BrokerError::io(&tmp, "fsyncing a metadata file"))?;
    drop(f);
    fs::rename(&tmp, path).map_err(BrokerError::io(path, "renaming a metadata file into place"))?;
    sync_dir(path.parent().expect("metadata files live in a directory"))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    crate::group::assert_no_group_lock("fsyncing a directory");
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(BrokerError::io(dir, "fsyncing a directory"))
}

/// `topic.json` has no checksum, and a field it lacks takes its default: a damaged one that still
/// parses must not serve the topic otherwise than it was written. It must name its own directory,
/// and no partition directory may lie beyond its partition count (partitions are never removed,
/// and a new count is stored before its partitions are made).
fn check_against_dir(dir: &Path, path: &Path, meta: &TopicMeta) -> Result<()> {
    let damaged = |reason: String| {
        BrokerError::Format(storage::StorageError::Malformed { what: path.display().to_string(), reason })
    };
    let dir_name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if meta.name != dir_name {
        return Err(damaged(format!("it names topic {:?}, but it is the file of topic {dir_name:?}", meta.name)));
    }
    let partitions = dir.join("partitions");
    let entries = match fs::read_dir(&partitions) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(BrokerError::io(&partitions, "listing partitions")(e)),
    };
    for entry in entries {
        let entry = entry.map_err(BrokerError::io(&partitions, "listing partitions"))?;
        let n = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok());
        if let Some(n) = n.filter(|&n| n >= meta.config.partitions) {
            return Err(damaged(format!(
                "it says {} partition(s), but partition {n} exists (partitions are never removed)",
                meta.config.partitions
            )));
        }
    }
    Ok(())
}

impl Topic {
    fn settings(meta: &TopicMeta, broker: &BrokerConfig, listeners: &Arc<Listeners>) -> PartitionSettings {
        PartitionSettings {
            listeners: listeners.clone(),
            log: crate::config::log_config(&meta.config),
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
        let mut opened = Vec::with_capacity(meta.config.partitions.saturating_sub(from) as usize);
        for p in from..meta.config.partitions {
            let settings = Self::settings(meta, broker, listeners);
            match Partition::open(name.clone(), p, &dir.join("partitions").join(p.to_string()), settings) {
                Ok(partition) => opened.push(partition),
                Err(e) => {
                    // Closed now, not when their writer tasks end: the caller may move the
                    // directory away.
                    for partition in &opened {
                        let _ = partition.log.close();
                    }
                    return Err(e);
                }
            }
        }
        Ok(opened)
    }

    /// Creates the topic's directory and metadata durably, then opens its partitions.
    ///
    /// The topic is made whole in a staging directory (`.creating-<name>`) and renamed into place:
    /// a crash, a full disk or a lack of descriptors part-way leaves only a staging directory,
    /// which the next open removes, never a half-made topic.
    pub fn create(topics_dir: &Path, meta: TopicMeta, broker: &BrokerConfig) -> Result<Topic> {
        let dir = topics_dir.join(&meta.name);
        let staging = topics_dir.join(format!("{STAGING_PREFIX}{}", meta.name));
        if staging.exists() {
            fs::remove_dir_all(&staging).map_err(BrokerError::io(&staging, "removing a stale staging directory"))?;
        }
        let made = fs::create_dir_all(staging.join("partitions"))
            .map_err(BrokerError::io(&staging, "creating a topic directory"))
            .and_then(|()| write_durably(&staging.join(META_FILE), &meta.to_stored()))
            .and_then(|()| fs::rename(&staging, &dir).map_err(BrokerError::io(&dir, "moving a new topic into place")))
            .and_then(|()| sync_dir(topics_dir));
        if let Err(e) = made {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
        Self::open_dir(dir.clone(), meta, broker).inspect_err(|_| {
            // Opening its partitions failed (out of descriptors, say): nothing of the topic was
            // acknowledged, so a failed create leaves nothing behind.
            let _ = fs::rename(&dir, &staging).and_then(|()| fs::remove_dir_all(&staging));
            let _ = sync_dir(topics_dir);
        })
    }

    /// Opens an existing topic directory.
    pub fn open(dir: PathBuf, broker: &BrokerConfig) -> Result<Topic> {
        let path = dir.join(META_FILE);
        let bytes = fs::read(&path).map_err(BrokerError::io(&path, "reading topic metadata"))?;
        let stored: StoredTopicMeta = storage::read(&path.display().to_string(), &bytes)?;
        let meta = TopicMeta { name: stored.name, config: stored.config.into(), created_ms: stored.created_ms };
        check_against_dir(&dir, &path, &meta)?;
        Self::open_dir(dir, meta, broker)
    }

    fn open_dir(dir: PathBuf, meta: TopicMeta, broker: &BrokerConfig) -> Result<Topic> {
        let name: Arc<str> = meta.name.as_str().into();
        let listeners = Arc::new(Listeners::default());
        let partitions = Self::open_partitions(&name, &dir, &meta, broker, &listeners, 0)?;
        let schemas = crate::schema::Registry::open(&name, &dir)?;
        Ok(Topic {
            name,
            dir,
            meta: RwLock::new(meta),
            partitions: RwLock::new(Arc::new(partitions)),
            listeners,
            schemas,
        })
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
        crate::config::validate_topic(&next.config, broker)?;
        write_durably(&self.dir.join(META_FILE), &next.to_stored())?;
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
                problem: p
                    .log
                    .fenced()
                    .map(|(reason, _)| format!("fenced, no appends: {reason}"))
                    .or_else(|| p.damage().map(|d| format!("damaged: {d}"))),
            })
            .collect();
        TopicInfo { name: meta.name, config: meta.config, created_ms: meta.created_ms, partitions }
    }
}
