//! The broker: the registry of topics and groups, publish, and reads.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use herald_core::Event;
use herald_core::codec::binary;

use crate::config::{BrokerConfig, TopicConfig, valid_name};
use crate::error::{BrokerError, Result};
use crate::group::{Group, Member, MemberConfig};
use crate::partition::{Partition, Receipt, StoredEvent};
use crate::topic::{Topic, TopicInfo, TopicMeta, sync_dir};
use herald_model::dead_letter::{Reasons, Selection};
use herald_model::schema::{Incompatibility, NewSchema, SchemaPolicy, SchemaVersion};
use herald_model::{DeadLetter, EventHistory, GroupConfig, GroupHistory, GroupInfo, StartFrom};

/// History searches running at once (each may read up to `SEARCH_BYTES_MAX` per group); more
/// wait their turn.
static HISTORY_SEARCHES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

async fn retention_task(inner: std::sync::Weak<BrokerInner>) {
    loop {
        let every = match inner.upgrade() {
            Some(i) => std::time::Duration::from_millis(i.config.retention_check_ms),
            None => return,
        };
        tokio::time::sleep(every).await;
        let Some(inner) = inner.upgrade() else { return };
        // Deleting segments is file work: off the async workers.
        let result = (Broker { inner }).blocking(|b| b.enforce_retention()).await;
        if let Err(e) = result {
            tracing::error!(error = %e, "retention failed");
        }
    }
}

/// How often a partition fenced by a full disk checks whether there is space again.
pub const UNFENCE_CHECK_MS: u64 = 1000;

/// Every [`UNFENCE_CHECK_MS`]: partitions fenced by a full disk accept appends again once there
/// is space (a probe write succeeds). Costs nothing while no partition is fenced.
async fn unfence_task(inner: std::sync::Weak<BrokerInner>) {
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(UNFENCE_CHECK_MS)).await;
        let Some(inner) = inner.upgrade() else { return };
        let broker = Broker { inner };
        if broker.fenced().iter().all(|f| !f.storage_full) {
            continue;
        }
        let result = broker.blocking(|b| b.unfence()).await;
        if let Err(e) = result {
            tracing::error!(error = %e, "checking fenced partitions for disk space failed");
        }
    }
}

/// A partition (or a group's state log) that accepts no appends, and why. Reported by
/// [`Broker::fenced`] and `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fenced {
    /// `partition` or `group` (its state log: acks and deliveries fail until it recovers).
    pub kind: &'static str,
    /// `topic/partition`, or the group's name.
    pub name: String,
    /// The failure that fenced it.
    pub reason: String,
    /// It was a full disk: it recovers by itself within about a second of space returning.
    /// Otherwise it recovers when the broker restarts.
    pub storage_full: bool,
}

pub(crate) struct BrokerInner {
    pub dir: PathBuf,
    pub config: BrokerConfig,
    pub topics: RwLock<HashMap<String, Arc<Topic>>>,
    pub groups: RwLock<HashMap<String, Arc<Group>>>,
    /// What was found damaged at open and is not served.
    pub damage: std::sync::Mutex<Vec<Damage>>,
    /// Offsets stepped over as damaged since start.
    pub skipped: std::sync::atomic::AtomicU64,
}

/// Something found damaged, half-made or unreadable (the rest serves normally). Reported by
/// [`Broker::damage`], `/readyz` and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// `topic`, `group` or `partition`.
    pub kind: &'static str,
    /// Its name (`topic/partition` for a partition).
    pub name: String,
    /// What was found, and what became of it.
    pub problem: String,
    /// It is left in place and not served: creating (or joining) one of that name is refused
    /// with `damaged` until the operator repairs or removes it. Otherwise the entry reports
    /// something handled (set aside, stepped over, moved back, damaged records) and the thing
    /// serves.
    pub not_served: bool,
}

/// A topic or group that cannot be opened: set aside when its creation never finished (no
/// metadata file: nothing was acknowledged), otherwise left in place, not served, and reported.
pub(crate) fn set_aside_or_report(
    parent: &Path,
    path: &Path,
    kind: &'static str,
    name: &str,
    meta_file: &str,
    e: &BrokerError,
) -> Result<Damage> {
    if !path.join(meta_file).exists() {
        let aside = parent.join(format!(".quarantine-{name}-{}", now_ms()));
        fs::rename(path, &aside).map_err(BrokerError::io(path, "setting a half-made directory aside"))?;
        sync_dir(parent)?;
        let problem = format!("its creation never finished (no {meta_file}); set aside as {}", aside.display());
        tracing::warn!(kind, name, %problem, "a half-made {kind} was set aside");
        return Ok(Damage { kind, name: name.to_owned(), problem, not_served: false });
    }
    let problem = format!("cannot be opened, not served: {e}");
    tracing::error!(kind, name, %problem, "a damaged {kind} is not served; the rest is");
    Ok(Damage { kind, name: name.to_owned(), problem, not_served: true })
}

/// Herald's embedded broker. Cheap to clone (a handle); `Send + Sync`. Must be used inside a
/// Tokio runtime (it runs one writer task per partition and one timer task per group).
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use herald_broker::{Broker, BrokerConfig, TopicConfig};
/// use herald_core::Event;
///
/// let dir = tempfile::tempdir()?;
/// let broker = Broker::open(dir.path(), BrokerConfig::default())?;
/// broker.create_topic("orders", TopicConfig::with_partitions(4))?;
/// let event = Event::builder("order.created").key("customer-7").build()?;
/// let receipt = broker.publish("orders", event).await?;
/// assert_eq!(receipt.offset, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct Broker {
    pub(crate) inner: Arc<BrokerInner>,
}

impl Broker {
    /// Opens (or creates) the broker's data directory: every topic and group in it is loaded and
    /// each partition log recovered.
    pub fn open(dir: impl AsRef<Path>, config: BrokerConfig) -> Result<Broker> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let topics_dir = dir.join("topics");
        let groups_dir = dir.join("groups");
        for d in [&dir, &topics_dir, &groups_dir] {
            fs::create_dir_all(d).map_err(BrokerError::io(d, "creating the data directory"))?;
        }
        let mut topics = HashMap::new();
        let mut damage = Vec::new();
        for entry in fs::read_dir(&topics_dir).map_err(BrokerError::io(&topics_dir, "listing topics"))? {
            let entry = entry.map_err(BrokerError::io(&topics_dir, "listing topics"))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".deleted-") || name.starts_with(crate::topic::STAGING_PREFIX) {
                // A delete or a create interrupted by a crash: finish the delete, drop the
                // half-made topic (its creation was never acknowledged).
                fs::remove_dir_all(entry.path()).map_err(BrokerError::io(entry.path(), "removing a deleted topic"))?;
                continue;
            }
            if !valid_name(&name) {
                continue;
            }
            match Topic::open(entry.path(), &config) {
                Ok(topic) => {
                    topics.insert(name, Arc::new(topic));
                }
                Err(e) => {
                    damage.push(set_aside_or_report(&topics_dir, &entry.path(), "topic", &name, "topic.json", &e)?)
                }
            }
        }
        let broker = Broker {
            inner: Arc::new(BrokerInner {
                dir,
                config,
                topics: RwLock::new(topics),
                groups: RwLock::new(HashMap::new()),
                damage: std::sync::Mutex::new(damage),
                skipped: std::sync::atomic::AtomicU64::new(0),
            }),
        };
        crate::group::load_groups(&broker, &groups_dir)?;
        tokio::spawn(retention_task(Arc::downgrade(&broker.inner)));
        tokio::spawn(unfence_task(Arc::downgrade(&broker.inner)));
        Ok(broker)
    }

    /// Applies every topic's retention now (it also runs every `retention_check_ms`). Returns the
    /// number of segments deleted.
    pub fn enforce_retention(&self) -> Result<usize> {
        let topics: Vec<Arc<Topic>> =
            self.inner.topics.read().expect("topics lock poisoned").values().cloned().collect();
        let mut deleted = 0;
        for t in topics {
            for p in t.partitions().iter() {
                deleted += p.log.enforce_retention(now_ms())?.segments;
            }
        }
        Ok(deleted)
    }

    /// Partitions and group state logs that accept no appends after a write or fsync failure,
    /// and why.
    pub fn fenced(&self) -> Vec<Fenced> {
        let topics: Vec<Arc<Topic>> =
            self.inner.topics.read().expect("topics lock poisoned").values().cloned().collect();
        let mut out = Vec::new();
        for t in topics {
            for p in t.partitions().iter() {
                if let Some((reason, storage_full)) = p.log.fenced() {
                    let name = format!("{}/{}", t.name, p.id);
                    out.push(Fenced { kind: "partition", name, reason, storage_full });
                }
            }
        }
        for (name, g) in self.inner.groups.read().expect("groups lock poisoned").iter() {
            if let Some((reason, storage_full)) = g.store_fenced() {
                out.push(Fenced { kind: "group", name: name.clone(), reason, storage_full });
            }
        }
        out.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        out
    }

    /// Makes partitions and group state logs fenced by a full disk writable again if there is
    /// space now (the broker
    /// also does this every [`UNFENCE_CHECK_MS`]). Returns how many accept appends again.
    pub fn unfence(&self) -> Result<usize> {
        let topics: Vec<Arc<Topic>> =
            self.inner.topics.read().expect("topics lock poisoned").values().cloned().collect();
        let mut unfenced = 0;
        for t in topics {
            for p in t.partitions().iter() {
                if p.log.try_unfence()? {
                    tracing::info!(topic = %t.name, partition = p.id, "partition accepts appends again");
                    unfenced += 1;
                }
            }
        }
        let groups: Vec<Arc<Group>> =
            self.inner.groups.read().expect("groups lock poisoned").values().cloned().collect();
        for g in groups {
            if g.store_try_unfence()? {
                unfenced += 1;
            }
            // The event history too (its records are counted as dropped while it is fenced).
            match g.history.try_unfence() {
                Ok(true) => {
                    tracing::info!(group = %g.name, "the group's event history accepts appends again");
                    unfenced += 1;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(group = %g.name, error = %e, "the group's event history is still fenced"),
            }
        }
        Ok(unfenced)
    }

    /// What was found damaged, half-made or unreadable and is not served: topics and groups that
    /// could not be opened (or were set aside), and partitions with damage found so far.
    pub fn damage(&self) -> Vec<Damage> {
        let mut out = self.inner.damage.lock().expect("damage lock poisoned").clone();
        let topics: Vec<Arc<Topic>> =
            self.inner.topics.read().expect("topics lock poisoned").values().cloned().collect();
        for t in topics {
            for p in t.partitions().iter() {
                if let Some(problem) = p.damage() {
                    let name = format!("{}/{}", t.name, p.id);
                    out.push(Damage { kind: "partition", name, problem, not_served: false });
                }
            }
        }
        out.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        out
    }

    /// Refuses a name that belongs to a damaged topic or group left in place.
    pub(crate) fn check_not_damaged(&self, kind: &'static str, name: &str) -> Result<()> {
        let damage = self.inner.damage.lock().expect("damage lock poisoned");
        match damage.iter().find(|d| d.kind == kind && d.name == name && d.not_served) {
            Some(d) => Err(BrokerError::Damaged { kind, name: name.to_owned(), problem: d.problem.clone() }),
            None => Ok(()),
        }
    }

    /// The broker's limits.
    pub fn config(&self) -> &BrokerConfig {
        &self.inner.config
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Creates a topic. Its metadata is durable before this returns.
    pub fn create_topic(&self, name: &str, config: TopicConfig) -> Result<TopicInfo> {
        if !valid_name(name) {
            return Err(BrokerError::InvalidTopicName { name: name.to_owned() });
        }
        crate::config::validate_topic(&config, &self.inner.config)?;
        self.check_not_damaged("topic", name)?;
        let mut topics = self.inner.topics.write().expect("topics lock poisoned");
        if topics.contains_key(name) {
            return Err(BrokerError::TopicExists { topic: name.to_owned() });
        }
        let limit = self.inner.config.topics_max;
        if topics.len() as u64 >= u64::from(limit) {
            return Err(BrokerError::LimitExceeded {
                name: "topics",
                value: topics.len() as u64 + 1,
                limit: limit.into(),
                key: "topics_max",
            });
        }
        let meta = TopicMeta { name: name.to_owned(), config, created_ms: now_ms() };
        let topic = Arc::new(Topic::create(&self.inner.dir.join("topics"), meta, &self.inner.config)?);
        let info = topic.info();
        topics.insert(name.to_owned(), topic);
        Ok(info)
    }

    /// Creates the topic unless it exists with the same settings; returns its description.
    /// A topic of that name with other settings is refused with `invalid_config`, naming each
    /// difference (as a group is).
    pub fn ensure_topic(&self, name: &str, config: TopicConfig) -> Result<TopicInfo> {
        self.ensure_topic_created(name, config).map(|(info, _)| info)
    }

    /// [`Broker::ensure_topic`], also telling whether it created the topic.
    pub fn ensure_topic_created(&self, name: &str, config: TopicConfig) -> Result<(TopicInfo, bool)> {
        match self.create_topic(name, config.clone()) {
            Ok(info) => Ok((info, true)),
            Err(BrokerError::TopicExists { .. }) => {
                let info = self.describe_topic(name)?;
                let differences = config.differences(&info.config);
                if differences.is_empty() {
                    Ok((info, false))
                } else {
                    Err(BrokerError::InvalidConfig(format!(
                        "topic {name:?} exists with other settings ({}); use its settings, or another name",
                        differences.join("; ")
                    )))
                }
            }
            Err(e) => Err(e),
        }
    }

    /// A topic the broker keeps for itself (a group's DLQ or replay topic): created unless it
    /// exists, used as it is.
    pub(crate) fn ensure_own_topic(&self, name: &str, config: TopicConfig) -> Result<()> {
        match self.create_topic(name, config) {
            Ok(_) | Err(BrokerError::TopicExists { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Names of all topics, sorted.
    pub fn list_topics(&self) -> Vec<String> {
        let mut names: Vec<String> = self.inner.topics.read().expect("topics lock poisoned").keys().cloned().collect();
        names.sort();
        names
    }

    /// A topic's settings and per-partition offsets, bytes and segments.
    pub fn describe_topic(&self, name: &str) -> Result<TopicInfo> {
        Ok(self.topic(name)?.info())
    }

    /// Deletes a topic and its data. Groups subscribed to it stop receiving from it.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        if !valid_name(name) {
            return Err(BrokerError::InvalidTopicName { name: name.to_owned() });
        }
        let topic = {
            let mut topics = self.inner.topics.write().expect("topics lock poisoned");
            topics.remove(name).ok_or_else(|| BrokerError::TopicNotFound { topic: name.to_owned() })?
        };
        for group in self.inner.groups.read().expect("groups lock poisoned").values() {
            group.forget_topic(name);
        }
        // Closed before the move, so that their last index files are written where they are.
        for p in topic.partitions().iter() {
            if let Err(e) = p.log.close() {
                tracing::warn!(topic = name, partition = p.id, error = %e, "closing a deleted partition's log failed");
            }
        }
        let topics_dir = self.inner.dir.join("topics");
        let grave = topics_dir.join(format!(".deleted-{name}-{}", now_ms()));
        fs::rename(&topic.dir, &grave).map_err(BrokerError::io(&topic.dir, "renaming a deleted topic"))?;
        sync_dir(&topics_dir)?;
        drop(topic);
        fs::remove_dir_all(&grave).map_err(BrokerError::io(&grave, "removing a deleted topic"))?;
        Ok(())
    }

    /// Grows a topic to `partitions` partitions. Keys may map to other partitions afterwards
    /// (as in Kafka): order per key holds only within one partition count.
    pub fn add_partitions(&self, name: &str, partitions: u32) -> Result<TopicInfo> {
        let topic = self.topic(name)?;
        topic.add_partitions(partitions, &self.inner.config)?;
        for group in self.inner.groups.read().expect("groups lock poisoned").values() {
            group.topology_changed();
        }
        Ok(topic.info())
    }

    /// The topic of that name: `invalid_topic_name` for a name no topic can have (rather than
    /// "not found, create it", which would then be refused), `topic_not_found` otherwise.
    pub(crate) fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        if !valid_name(name) {
            return Err(BrokerError::InvalidTopicName { name: name.to_owned() });
        }
        self.inner
            .topics
            .read()
            .expect("topics lock poisoned")
            .get(name)
            .cloned()
            .ok_or_else(|| BrokerError::TopicNotFound { topic: name.to_owned() })
    }

    pub(crate) fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>> {
        let parts = self.topic(topic)?.partitions();
        parts.get(partition as usize).cloned().ok_or_else(|| BrokerError::PartitionNotFound {
            topic: topic.to_owned(),
            partition,
            partitions: parts.len() as u32,
        })
    }

    /// Publishes one event; returns once it is stored per the topic's durability.
    pub async fn publish(&self, topic: &str, event: Event) -> Result<Receipt> {
        let mut receipts = self.publish_batch(topic, vec![event]).await?;
        Ok(receipts.pop().expect("one receipt per event"))
    }

    /// Publishes events; one receipt per event, in order. Events of one partition are stored in
    /// one batch. On error some events may be stored: publishing the same events again is safe
    /// (dedupe by `(source, id)` within the topic's window).
    pub async fn publish_batch(&self, topic_name: &str, events: Vec<Event>) -> Result<Vec<Receipt>> {
        let topic = self.topic(topic_name)?;
        // Nothing of a batch with an invalid event is stored.
        let events = topic.schemas.check(events)?;
        let config = topic.config();
        let partitions = topic.partitions();
        let n = partitions.len() as u32;
        let mut per_partition: Vec<Vec<(usize, Event, Vec<u8>)>> = (0..n).map(|_| Vec::new()).collect();
        let count = events.len();
        // Only when tracing is on: a `publish` span per event, ended once it is stored.
        let tracing = herald_telemetry::enabled();
        let mut spans: Vec<Option<herald_telemetry::Started>> = Vec::new();
        for (i, event) in events.into_iter().enumerate() {
            let encoded = binary::encode(&event);
            if encoded.len() as u64 > config.max_event_bytes {
                return Err(BrokerError::EventTooLarge {
                    topic: topic_name.to_owned(),
                    bytes: encoded.len() as u64,
                    limit: config.max_event_bytes,
                });
            }
            let p = herald_model::routing::route_event(&event, n);
            if tracing {
                spans.push(herald_telemetry::Spans::publish(topic_name, &event, p));
            }
            per_partition[p as usize].push((i, event, encoded));
        }
        let mut receipts: Vec<Option<Receipt>> = vec![None; count];
        let mut pending = Vec::new();
        for (p, batch) in per_partition.into_iter().enumerate() {
            if batch.is_empty() {
                continue;
            }
            let part = partitions[p].clone();
            let (indexes, items): (Vec<usize>, Vec<(Event, Vec<u8>)>) =
                batch.into_iter().map(|(i, e, b)| (i, (e, b))).unzip();
            pending.push((part.id, indexes, tokio::spawn(async move { part.append(items).await })));
        }
        let mut first_error = None;
        for (p, indexes, task) in pending {
            match task.await.map_err(|_| BrokerError::Closed).and_then(|r| r) {
                Ok(offsets) => {
                    for (i, (offset, duplicate)) in indexes.into_iter().zip(offsets) {
                        receipts[i] = Some(Receipt { topic: topic.name.clone(), partition: p, offset, duplicate });
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        for (span, r) in spans.into_iter().zip(&receipts) {
            if let Some(span) = span {
                let code = first_error.as_ref().map(|e| e.code().as_str());
                herald_telemetry::Spans::published(span, r.as_ref().map(|r| r.offset), code);
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        Ok(receipts.into_iter().map(|r| r.expect("every event got a receipt")).collect())
    }

    /// Reads stored events of one partition from `offset` (a browse: no group, no ack).
    pub fn read(&self, topic: &str, partition: u32, offset: u64, max_events: usize) -> Result<Vec<StoredEvent>> {
        self.partition(topic, partition)?.read(offset, 4 << 20, max_events)
    }

    /// Creates a consumer group, or updates its settings (subscriptions, retry policy, ordering)
    /// if it exists. A new group starts at `config.start`.
    pub fn create_group(&self, name: &str, config: GroupConfig) -> Result<GroupInfo> {
        crate::group::create_group(self, name, config)
    }

    /// Joins `group` as a new member. Partitions are rebalanced across members.
    pub fn join(&self, group: &str, member: MemberConfig) -> Result<Member> {
        self.group(group)?.join(self, member)
    }

    /// Joins `group` as a new member, creating the group with `config` first if it does not
    /// exist. A group that exists keeps its stored settings — they belong to the group, not to a
    /// member — so the member runs by [`Member::settings`], and a difference from `config` is
    /// logged naming each setting.
    pub fn subscribe(&self, group: &str, config: GroupConfig, member: MemberConfig) -> Result<Member> {
        match self.create_group(group, config.clone()) {
            Ok(_) => {}
            Err(BrokerError::InvalidConfig(_)) if self.group(group).is_ok() => {}
            Err(e) => return Err(e),
        }
        let m = self.join(group, member)?;
        let differences = config.differences(m.settings());
        if !differences.is_empty() {
            tracing::warn!(group, differences = %differences.join("; "),
                "group exists with other settings; joining with the stored ones");
        }
        Ok(m)
    }

    /// Moves every position of `group` to `to` (earliest, latest, or the first event at or after a
    /// time), forgetting attempt counts and pending retries. Refused with
    /// [`BrokerError::GroupActive`] while the group has members.
    pub fn reset_group(&self, group: &str, to: StartFrom) -> Result<GroupInfo> {
        let g = self.group(group)?;
        g.reset(self, to)?;
        Ok(g.info(self))
    }

    /// Steps `group` over the damaged stretch at its position in `topic`/`partition` (a read
    /// there fails with `corrupt`): the stored bytes are written first as a dead letter of type
    /// `herald.damaged` with reason `corrupt: …` (kept, never replayed), then the position moves
    /// to the first readable offset after the damage, durably. Refused with
    /// `invalid_argument` when nothing is damaged at the position, and with `group_active`
    /// while events before it are in flight (settle them first). Counted in
    /// [`Broker::damaged_offsets_skipped`] and listed in [`Broker::damage`].
    pub async fn skip_damaged(&self, group: &str, topic: &str, partition: u32) -> Result<herald_model::DamageSkipped> {
        self.group(group)?.skip_damaged(self, topic, partition).await
    }

    /// Offsets stepped over as damaged since the broker started (an alarm: each one is an event
    /// that was never delivered).
    pub fn damaged_offsets_skipped(&self) -> u64 {
        self.inner.skipped.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn record_skipped_damage(&self, group: &str, s: &herald_model::DamageSkipped) {
        self.inner.skipped.fetch_add(s.to - s.from, std::sync::atomic::Ordering::Relaxed);
        let problem = format!(
            "stepped over damaged offsets {}/{} {}..{} ({}); the stored bytes are dead letter {} of {}",
            s.topic,
            s.partition,
            s.from,
            s.to,
            s.reason,
            s.dlq_offset,
            herald_model::dead_letter::dlq_topic(group)
        );
        let d = Damage { kind: "group", name: group.to_owned(), problem, not_served: false };
        self.inner.damage.lock().expect("damage lock poisoned").push(d);
    }

    /// Dead letters of `group`, oldest first, at most `max`.
    pub fn dlq_list(&self, group: &str, max: usize) -> Result<Vec<DeadLetter>> {
        crate::group::dlq::dlq_list(self, group, max)
    }

    /// Sends `group`'s dead letters back to that group only (through its private replay topic).
    /// A dead letter already replayed `replays_max` times is kept in the DLQ. Writes first: the
    /// replayed letters are stored in the replay topic, the kept ones again at the DLQ's end,
    /// and only then are they dropped from the DLQ. Returns how many were replayed.
    pub async fn dlq_replay(&self, group: &str) -> Result<usize> {
        self.dlq_replay_selected(group, &Selection::All).await
    }

    /// [`Broker::dlq_replay`] of the selected letters only: the others stay in the DLQ (written
    /// again at its end, in their order, before the replayed ones are dropped from view).
    /// Runs in a task of its own: a caller that stops waiting (a closed request) cannot leave it
    /// between writing the letters and moving the DLQ's start.
    pub async fn dlq_replay_selected(&self, group: &str, selection: &Selection) -> Result<usize> {
        let (b, g, s) = (self.clone(), group.to_owned(), selection.clone());
        tokio::spawn(async move { crate::group::dlq::dlq_replay(&b, &g, &s).await })
            .await
            .map_err(|_| BrokerError::Closed)?
    }

    /// Deletes every dead letter of `group`; returns how many there were.
    pub async fn dlq_purge(&self, group: &str) -> Result<u64> {
        self.dlq_purge_selected(group, &Selection::All).await
    }

    /// Deletes the selected dead letters of `group` (the others are written again at the DLQ's
    /// end first); returns how many were deleted.
    /// Runs in a task of its own, as [`Broker::dlq_replay_selected`] does.
    pub async fn dlq_purge_selected(&self, group: &str, selection: &Selection) -> Result<u64> {
        let (b, g, s) = (self.clone(), group.to_owned(), selection.clone());
        tokio::spawn(async move { crate::group::dlq::dlq_purge(&b, &g, &s).await })
            .await
            .map_err(|_| BrokerError::Closed)?
    }

    /// Dead letters of `group` with exactly `reason`, oldest first, at most `max`.
    pub fn dlq_list_reason(&self, group: &str, reason: &str, max: usize) -> Result<Vec<DeadLetter>> {
        crate::group::dlq::dlq_list_reason(self, group, reason, max)
    }

    /// `group`'s dead letters counted by reason, with each reason's first and last failure (the
    /// DLQ is read through in chunks).
    pub fn dlq_reasons(&self, group: &str) -> Result<Reasons> {
        crate::group::dlq::dlq_reasons(self, group)
    }

    /// Registers `schema` (a JSON Schema, or a
    /// [`ProtobufSchema`](herald_model::schema::ProtobufSchema) document) as the next version of
    /// its type's schema on `topic`, if it follows the type's compatibility rule
    /// (`schema.compatibility`, when given, becomes that rule).
    pub fn register_schema(&self, topic: &str, schema: NewSchema) -> Result<SchemaVersion> {
        self.topic(topic)?.schemas.register(schema, now_ms())
    }

    /// What registering `schema` on `topic` would break (empty: accepted), without registering it.
    pub fn check_schema(&self, topic: &str, schema: &NewSchema) -> Result<Vec<Incompatibility>> {
        self.topic(topic)?.schemas.check_compatible(schema)
    }

    /// `topic`'s schema policy and the latest schema of each type.
    pub fn list_schemas(&self, topic: &str) -> Result<(SchemaPolicy, Vec<SchemaVersion>)> {
        Ok(self.topic(topic)?.schemas.list())
    }

    /// `ty`'s schema on `topic` at `version` (the latest when `None`).
    pub fn schema(&self, topic: &str, ty: &str, version: Option<u32>) -> Result<SchemaVersion> {
        self.topic(topic)?.schemas.get(ty, version)
    }

    /// Removes `ty`'s schema (every version) from `topic`; returns how many versions it had.
    pub fn delete_schema(&self, topic: &str, ty: &str) -> Result<usize> {
        self.topic(topic)?.schemas.delete(ty)
    }

    /// Sets what `topic` does with unknown types and its default compatibility rule.
    pub fn set_schema_policy(&self, topic: &str, policy: SchemaPolicy) -> Result<SchemaPolicy> {
        self.topic(topic)?.schemas.set_policy(policy)
    }

    /// Wakes `waiter` (`notify_waiters`) whenever events are appended to `topic`, for as long as
    /// the caller holds it (a weak reference is kept).
    pub fn listen(&self, topic: &str, waiter: &Arc<tokio::sync::Notify>) -> Result<()> {
        self.topic(topic)?.listeners.add(waiter);
        Ok(())
    }

    /// The first offset of `topic`/`partition` appended at or after `time_ms` (the latest offset
    /// when none is).
    pub fn offset_for_time(&self, topic: &str, partition: u32, time_ms: i64) -> Result<u64> {
        let p = self.partition(topic, partition)?;
        Ok(p.log.offset_for_timestamp(time_ms)?.unwrap_or_else(|| p.log.latest_offset()))
    }

    /// The history of the event at `topic`/`partition`@`offset`: when it was published and,
    /// per group reading the topic, every delivery, settle, timeout, dead letter and replay
    /// recorded (see `BrokerConfig::history_bytes_max`).
    pub async fn event_history(&self, topic: &str, partition: u32, offset: u64) -> Result<EventHistory> {
        let _slot = HISTORY_SEARCHES.acquire().await.map_err(|_| BrokerError::Closed)?;
        let (topic, name) = (self.topic(topic)?, topic.to_owned());
        self.blocking(move |b| {
            let p = b.partition(&name, partition)?;
            let not_found = || BrokerError::EventNotFound {
                topic: name.clone(),
                what: format!("at partition {partition} offset {offset}"),
                hint: "; `herald topic describe` shows each partition's offsets",
            };
            if offset >= p.log.latest_offset() {
                return Err(not_found());
            }
            let stored =
                p.read(offset, 1 << 20, 1)?.into_iter().next().filter(|s| s.offset == offset).ok_or_else(not_found)?;
            let groups: Vec<Arc<Group>> =
                b.inner.groups.read().expect("groups lock poisoned").values().cloned().collect();
            let mut out = Vec::new();
            let mut truncated = false;
            for g in groups.iter().filter(|g| g.config.topics.iter().any(|x| **x == *topic.name)) {
                let replay = herald_model::dead_letter::replay_topic(&g.name);
                let w = crate::group::history::Wanted {
                    topic: &name,
                    partition,
                    offset,
                    id: stored.event.id(),
                    published_ms: stored.append_time_ms,
                    replay_topic: &replay,
                };
                // One group's unreadable history does not fail the others.
                let (entries, cut) = g.history.search(&w).unwrap_or_else(|e| {
                    tracing::warn!(group = %g.name, error = %e, "searching the event history failed");
                    (Vec::new(), true)
                });
                truncated |= cut;
                out.push(GroupHistory { group: g.name.clone(), entries });
            }
            out.sort_by(|a, b| a.group.cmp(&b.group));
            Ok(EventHistory {
                topic: name.clone(),
                partition,
                offset,
                id: stored.event.id().to_owned(),
                source: stored.event.source().to_owned(),
                ty: stored.event.ty().to_owned(),
                published_ms: stored.append_time_ms,
                groups: out,
                truncated,
            })
        })
        .await
    }

    /// [`Broker::event_history`] of the event with `id` on `topic`, found through the
    /// deliveries recorded in the groups' histories (an event no group has received yet is found
    /// by its offset only).
    pub async fn event_history_by_id(&self, topic: &str, id: &str) -> Result<EventHistory> {
        let t = self.topic(topic)?;
        let (name, wanted) = (topic.to_owned(), id.to_owned());
        let slot = HISTORY_SEARCHES.acquire().await.map_err(|_| BrokerError::Closed)?;
        let found = self
            .blocking(move |b| {
                let groups: Vec<Arc<Group>> =
                    b.inner.groups.read().expect("groups lock poisoned").values().cloned().collect();
                for g in groups.iter().filter(|g| g.config.topics.iter().any(|x| **x == *t.name)) {
                    if let Some(at) = crate::group::history::find_id(&g.history, &name, &wanted)? {
                        return Ok(Some(at));
                    }
                }
                Ok(None)
            })
            .await?;
        drop(slot);
        let Some((partition, offset)) = found else {
            return Err(BrokerError::EventNotFound {
                topic: topic.to_owned(),
                what: format!("with id {id:?}"),
                hint: " among the deliveries in the event history kept; ask by partition and offset instead",
            });
        };
        self.event_history(topic, partition, offset).await
    }

    /// Dead letters `group` holds (0 for an unknown group).
    pub fn dlq_held(&self, group: &str) -> u64 {
        crate::group::dlq::held(self, group)
    }

    /// Event history records dropped since the broker opened because a group's history could
    /// not be written fast enough (its history is incomplete), over all groups.
    pub fn history_dropped(&self) -> u64 {
        self.inner.groups.read().expect("groups lock poisoned").values().map(|g| g.history.dropped()).sum()
    }

    /// A group's members, partitions, positions and lag.
    pub fn describe_group(&self, name: &str) -> Result<GroupInfo> {
        Ok(self.group(name)?.info(self))
    }

    /// Names of all groups, sorted.
    pub fn list_groups(&self) -> Vec<String> {
        let mut names: Vec<String> = self.inner.groups.read().expect("groups lock poisoned").keys().cloned().collect();
        names.sort();
        names
    }

    pub(crate) fn group(&self, name: &str) -> Result<Arc<Group>> {
        self.inner
            .groups
            .read()
            .expect("groups lock poisoned")
            .get(name)
            .cloned()
            .ok_or_else(|| BrokerError::GroupNotFound { group: name.to_owned() })
    }

    /// Runs blocking broker work (file I/O) off the async workers.
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Broker) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let b = self.clone();
        tokio::task::spawn_blocking(move || f(&b)).await.map_err(|_| BrokerError::Closed)?
    }

    /// Flushes every group's positions and closes every log cleanly.
    pub async fn close(&self) -> Result<()> {
        let groups: Vec<Arc<Group>> =
            self.inner.groups.read().expect("groups lock poisoned").values().cloned().collect();
        for g in groups {
            g.close()?;
        }
        let topics: Vec<Arc<Topic>> =
            self.inner.topics.read().expect("topics lock poisoned").values().cloned().collect();
        for t in topics {
            for p in t.partitions().iter() {
                p.log.close()?;
            }
        }
        Ok(())
    }
}
