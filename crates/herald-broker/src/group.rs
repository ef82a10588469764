//! Consumer groups: membership and partition assignment with generations, delivery with
//! ordering modes and backpressure, acks, nacks, rejects, ack timeouts, retries with backoff,
//! dead letters, and durable positions and attempt counts.
//!
//! All of a group's delivery state sits behind one mutex that is never held across I/O or an
//! `.await`; durable state goes to the group's own `herald-log` (see [`crate::store`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use herald_core::Event;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::broker::{Broker, now_ms};
use crate::config::{TopicConfig, valid_name};
use crate::error::{BrokerError, Result};
use crate::partition::StoredEvent;
use crate::store::{GroupStore, PartCheckpoint, StateRecord};
use crate::topic::write_durably;

/// Longest group name: its DLQ and replay topics must still be valid topic names (200).
pub const GROUP_NAME_BYTES_MAX: usize = 200 - ".replay".len();
/// Longest nack delay honoured (one year); longer ones are cut to it.
const DELAY_MAX: Duration = Duration::from_secs(365 * 24 * 3600);
/// Events fetched ahead of delivery per partition.
const READ_AHEAD_EVENTS: usize = 1024;
/// ...and bytes: a read copies this much from the log at once, so it stays near what the
/// read-ahead needs rather than whatever the partition holds.
const READ_AHEAD_BYTES: usize = 256 * 1024;
/// How often a group's timer checks sessions, ack timeouts, dead letters and flushes positions.
const TICK: Duration = Duration::from_millis(20);
/// Acks not yet durable are flushed at least this often, so a crash redelivers at most this
/// much acknowledged work (plus what was in flight).
pub const COMMIT_INTERVAL_MS: u64 = 100;
/// ...or as soon as this many acks are waiting.
pub const COMMIT_EVENTS_MAX: usize = 4096;

/// Header names the broker adds to dead letters (CloudEvents extension attributes).
pub mod dlq_headers {
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
}

/// Where a new group starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    /// The earliest stored event.
    #[default]
    Earliest,
    /// Only events published after the group is created.
    Latest,
    /// The first event appended at or after this time (ms since the Unix epoch).
    Timestamp(i64),
}

/// What order a group's deliveries keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OrderingMode {
    /// Events of one key strictly in publish order, also across retries; different keys in
    /// parallel, also within a partition. Events without a key have no order.
    #[default]
    Key,
    /// One event in flight per partition.
    Partition,
    /// No order.
    None,
}

/// Retries of failed deliveries: exponential backoff with jitter, up to a number of attempts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Deliveries before an event goes to the DLQ (at least 1).
    pub max_attempts: u32,
    /// Backoff after the first failure.
    pub backoff_base_ms: u64,
    /// Growth per further failure.
    pub backoff_factor: f64,
    /// Largest backoff.
    pub backoff_max_ms: u64,
    /// Share of the backoff taken away at random, `0.0..=1.0`: the delay is uniform in
    /// `[d * (1 - jitter), d]`.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_attempts: 5, backoff_base_ms: 100, backoff_factor: 2.0, backoff_max_ms: 60_000, jitter: 0.2 }
    }
}

impl RetryPolicy {
    /// The backoff ceiling after `failures` failed attempts: `min(max, base * factor^(failures-1))`.
    pub fn backoff_ceiling(&self, failures: u32) -> Duration {
        let exp = self.backoff_factor.powi(failures.saturating_sub(1).min(1000) as i32);
        let ms = (self.backoff_base_ms as f64 * exp).min(self.backoff_max_ms as f64);
        Duration::from_millis(ms.max(0.0) as u64)
    }

    /// The backoff after `failures` failed attempts, with jitter.
    pub fn backoff(&self, failures: u32) -> Duration {
        let ceiling = self.backoff_ceiling(failures);
        let cut = if self.jitter > 0.0 { rand::rng().random_range(0.0..=self.jitter) } else { 0.0 };
        ceiling.mul_f64(1.0 - cut)
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(BrokerError::InvalidConfig(m));
        if self.max_attempts == 0 {
            return bad("retry.max_attempts is 0; it must be at least 1".into());
        }
        if !(self.backoff_factor >= 1.0 && self.backoff_factor <= 100.0) {
            return bad(format!("retry.backoff_factor is {}; it must be between 1 and 100", self.backoff_factor));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return bad(format!("retry.jitter is {}; it must be between 0 and 1", self.jitter));
        }
        if self.backoff_base_ms > self.backoff_max_ms {
            return bad(format!(
                "retry.backoff_base_ms ({}) is above retry.backoff_max_ms ({})",
                self.backoff_base_ms, self.backoff_max_ms
            ));
        }
        Ok(())
    }
}

/// A consumer group's settings, stored with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Topics the group receives.
    pub topics: Vec<String>,
    /// Where a new group starts.
    pub start: StartFrom,
    /// What order deliveries keep.
    pub ordering: OrderingMode,
    /// An event not acked within this is redelivered (counted as a failed attempt).
    pub ack_timeout_ms: u64,
    /// A member silent for this long is removed and its partitions reassigned.
    pub session_timeout_ms: u64,
    /// Retries and backoff.
    pub retry: RetryPolicy,
    /// Most events the group's DLQ may hold; dead-lettering beyond fails and the event is
    /// retried later instead.
    pub dlq_events_max: u64,
    /// A dead letter replayed this many times is not replayed again.
    pub replays_max: u32,
    /// In `key` order: whether an event waiting for a retry holds back the later events of its
    /// key (blocking, the default: order kept) or lets them pass (non-blocking: the retry comes
    /// later, out of order; a key still has one event in flight at a time).
    pub blocking_retries: bool,
    /// Durability of the group's state (attempt counts, positions). `always` (the default)
    /// fsyncs each delivery's attempt record before the member sees the event; `interval`
    /// takes that fsync off the delivery path, at the price of attempt counts and positions
    /// that a machine crash (not a process crash) can set back by up to the interval.
    pub state_durability: crate::config::Durability,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            topics: Vec::new(),
            start: StartFrom::Earliest,
            ordering: OrderingMode::Key,
            ack_timeout_ms: 30_000,
            session_timeout_ms: 10_000,
            retry: RetryPolicy::default(),
            dlq_events_max: 1_000_000,
            replays_max: 3,
            blocking_retries: true,
            state_durability: crate::config::Durability::Always,
        }
    }
}

impl GroupConfig {
    /// A group receiving `topics`, with defaults otherwise.
    pub fn for_topics<S: Into<String>>(topics: impl IntoIterator<Item = S>) -> Self {
        GroupConfig { topics: topics.into_iter().map(Into::into).collect(), ..Default::default() }
    }

    fn validate(&self) -> Result<()> {
        if self.topics.is_empty() {
            return Err(BrokerError::InvalidConfig("a group must subscribe to at least one topic".into()));
        }
        if self.ack_timeout_ms == 0 || self.session_timeout_ms == 0 {
            return Err(BrokerError::InvalidConfig("ack_timeout_ms and session_timeout_ms must be at least 1".into()));
        }
        if self.dlq_events_max == 0 {
            return Err(BrokerError::InvalidConfig("dlq_events_max is 0; it must be at least 1".into()));
        }
        self.retry.validate()
    }
}

/// How a member joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberConfig {
    /// A stable id, or `None` for a generated one.
    pub id: Option<String>,
    /// Most unacknowledged events this member holds (capped by the broker's `in_flight_max`).
    pub max_in_flight: u32,
}

impl Default for MemberConfig {
    fn default() -> Self {
        MemberConfig { id: None, max_in_flight: 256 }
    }
}

/// One delivered event, to be acked, nacked or rejected by the member that received it.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The event and where it is stored.
    pub stored: StoredEvent,
    /// 1 for the first delivery to this group, then 2, 3, … (counted durably).
    pub attempt: u32,
    /// The assignment generation it was delivered under.
    pub generation: u64,
}

impl Delivery {
    /// The event.
    pub fn event(&self) -> &Event {
        &self.stored.event
    }

    /// What settling it needs, without the event.
    pub fn id(&self) -> DeliveryId {
        DeliveryId {
            topic: self.stored.topic.clone(),
            partition: self.stored.partition,
            offset: self.stored.offset,
            generation: self.generation,
            attempt: self.attempt,
        }
    }
}

/// Identifies a delivery for `ack`/`nack`/`reject` (see [`Member::ack_id`]) without holding its
/// event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryId {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// The generation it was delivered under.
    pub generation: u64,
    /// The attempt it was: a late answer to an earlier attempt does not settle a redelivery.
    pub attempt: u32,
}

/// A dead letter as listed by [`Broker::dlq_list`].
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Offset in the DLQ topic.
    pub dlq_offset: u64,
    /// The event as dead-lettered: the original plus the `dlq*` headers.
    pub event: Event,
}

/// Per-partition figures of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPartitionInfo {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Owning member, if any.
    pub owner: Option<String>,
    /// First offset not yet acked or dead-lettered.
    pub committed: u64,
    /// Latest offset of the partition.
    pub latest: u64,
    /// `latest - committed`.
    pub lag: u64,
    /// Events in flight.
    pub in_flight: usize,
}

/// A group as described by [`Broker::describe_group`].
#[derive(Debug, Clone, PartialEq)]
pub struct GroupInfo {
    /// Name.
    pub name: String,
    /// Settings.
    pub config: GroupConfig,
    /// Current generation.
    pub generation: u64,
    /// Member ids.
    pub members: Vec<String>,
    /// Each partition.
    pub partitions: Vec<GroupPartitionInfo>,
}

type Tp = (Arc<str>, u32);

/// A dead letter on its way to the DLQ topic.
struct Outgoing {
    topic: Arc<str>,
    partition: u32,
    offset: u64,
    event: Event,
    attempts: u32,
    failures: Failures,
}

struct InFlight {
    member: Arc<str>,
    generation: u64,
    attempt: u32,
    deadline: Instant,
    event: StoredEvent,
}

#[derive(Default, Clone)]
struct Failures {
    first_ms: i64,
    last_ms: i64,
    reason: String,
}

struct Waiting {
    event: StoredEvent,
    due: Instant,
}

struct PartState {
    owner: Option<Arc<str>>,
    assigned_generation: u64,
    committed: u64,
    fetched: u64,
    buffer: VecDeque<StoredEvent>,
    retry: BTreeMap<u64, Waiting>,
    in_flight: HashMap<u64, InFlight>,
    /// Dead letters not yet written to the DLQ; they keep blocking their key.
    dead: BTreeMap<u64, (StoredEvent, u32, Failures, bool)>,
    done: BTreeSet<u64>,
    /// Delivery count per offset at or above `committed`.
    attempts: HashMap<u64, u32>,
    failures: HashMap<u64, Failures>,
    overtaken: Option<(u64, u64)>,
    /// Offsets acked or dead-lettered since the last flush to the store.
    settled: Vec<u64>,
}

impl PartState {
    fn new(committed: u64) -> Self {
        PartState {
            owner: None,
            assigned_generation: 0,
            committed,
            fetched: committed,
            buffer: VecDeque::new(),
            retry: BTreeMap::new(),
            in_flight: HashMap::new(),
            dead: BTreeMap::new(),
            done: BTreeSet::new(),
            attempts: HashMap::new(),
            failures: HashMap::new(),
            overtaken: None,
            settled: Vec::new(),
        }
    }

    /// Moves the position forward to `offset` (retention deleted what was before it).
    fn skip_to(&mut self, offset: u64) {
        self.committed = self.committed.max(offset);
        self.fetched = self.fetched.max(offset);
        self.buffer.retain(|e| e.offset >= offset);
        self.done.retain(|o| *o >= offset);
        self.attempts.retain(|o, _| *o >= offset);
        self.failures.retain(|o, _| *o >= offset);
        self.advance();
    }

    fn mark_done(&mut self, offset: u64) {
        if offset >= self.committed {
            self.done.insert(offset);
        }
        self.advance();
    }

    /// Moves the position over every done offset right at it.
    fn advance(&mut self) {
        while self.done.remove(&self.committed) {
            self.attempts.remove(&self.committed);
            self.failures.remove(&self.committed);
            self.committed += 1;
        }
    }
}

struct MemberState {
    last_seen: Instant,
    max_in_flight: u32,
    in_flight: usize,
}

struct State {
    generation: u64,
    members: BTreeMap<Arc<str>, MemberState>,
    parts: BTreeMap<Tp, PartState>,
    /// Records not yet in the store (failures, skips), flushed by the timer.
    unflushed: Vec<StateRecord>,
    /// Acks and dead letters not yet in the store (their offsets wait in each `PartState`).
    settled_pending: usize,
    records_since_checkpoint: usize,
    closed: bool,
}

pub(crate) struct Group {
    pub name: String,
    pub config: GroupConfig,
    state: Mutex<State>,
    store: GroupStore,
    /// Held from a state change to the end of its store append, so appends keep that order.
    store_order: Mutex<()>,
    /// Serialises writing dead letters with replaying and purging them, so that a replay never
    /// deletes a dead letter written after it listed them.
    dlq: tokio::sync::Mutex<()>,
    notify: Arc<Notify>,
    closed: AtomicBool,
}

fn group_dir(broker: &Broker, name: &str) -> std::path::PathBuf {
    broker.inner.dir.join("groups").join(name)
}

fn dlq_topic(group: &str) -> String {
    format!("{group}.dlq")
}

fn replay_topic(group: &str) -> String {
    format!("{group}.replay")
}

/// Loads every group stored under `dir` at broker start.
pub(crate) fn load_groups(broker: &Broker, dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(BrokerError::io(dir, "listing groups"))? {
        let entry = entry.map_err(BrokerError::io(dir, "listing groups"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !valid_name(&name) {
            continue;
        }
        let path = entry.path().join("group.json");
        let Ok(bytes) = fs::read(&path) else { continue };
        let config: GroupConfig = serde_json::from_slice(&bytes)
            .map_err(|e| BrokerError::InvalidConfig(format!("{}: {e}", path.display())))?;
        let group = Group::open(broker, &name, config, None)?;
        broker.inner.groups.write().expect("groups lock poisoned").insert(name, group);
    }
    Ok(())
}

pub(crate) fn create_group(broker: &Broker, name: &str, config: GroupConfig) -> Result<GroupInfo> {
    // The group's DLQ and replay topics append ".replay" (7 characters) to its name.
    if !valid_name(name) || name.len() > GROUP_NAME_BYTES_MAX {
        return Err(BrokerError::InvalidGroupName { name: name.to_owned() });
    }
    config.validate()?;
    for t in &config.topics {
        broker.topic(t)?;
    }
    let mut groups = broker.inner.groups.write().expect("groups lock poisoned");
    if let Some(existing) = groups.get(name) {
        if existing.config == config {
            return Ok(existing.info(broker));
        }
        return Err(BrokerError::InvalidConfig(format!(
            "group {name:?} exists with other settings; delete it or use the same settings"
        )));
    }
    let limit = broker.inner.config.groups_max;
    if groups.len() as u64 >= u64::from(limit) {
        return Err(BrokerError::LimitExceeded {
            name: "groups",
            value: groups.len() as u64 + 1,
            limit: limit.into(),
            key: "groups_max",
        });
    }
    let dir = group_dir(broker, name);
    fs::create_dir_all(&dir).map_err(BrokerError::io(&dir, "creating a group directory"))?;
    // Where the group starts, decided once and stored before the group exists on disk.
    let mut start = Vec::new();
    for t in &config.topics {
        for p in broker.topic(t)?.partitions().iter() {
            let offset = match config.start {
                StartFrom::Earliest => p.log.earliest_offset(),
                StartFrom::Latest => p.log.latest_offset(),
                StartFrom::Timestamp(ts) => p.log.offset_for_timestamp(ts)?.unwrap_or_else(|| p.log.latest_offset()),
            };
            start.push(PartCheckpoint {
                topic: t.clone(),
                partition: p.id,
                committed: offset,
                attempts: vec![],
                done: vec![],
            });
        }
    }
    let group = Group::open(broker, name, config.clone(), Some(start))?;
    write_durably(&dir.join("group.json"), &serde_json::to_vec_pretty(&config).expect("serializes"))?;
    let info = group.info(broker);
    groups.insert(name.to_owned(), group);
    Ok(info)
}

impl Group {
    fn open(
        broker: &Broker,
        name: &str,
        config: GroupConfig,
        start: Option<Vec<PartCheckpoint>>,
    ) -> Result<Arc<Group>> {
        let dir = group_dir(broker, name);
        let (store, recovered) = GroupStore::open(&dir.join("state"), config.state_durability.into())?;
        let mut parts: BTreeMap<Tp, PartState> = BTreeMap::new();
        let checkpoint = match start {
            Some(start) => {
                store.append(&[StateRecord::Checkpoint { parts: start.clone() }])?;
                start
            }
            None => recovered.parts,
        };
        for c in checkpoint {
            let mut st = PartState::new(c.committed);
            for (o, a) in c.attempts {
                st.attempts.insert(o, a);
            }
            for o in c.done {
                st.mark_done(o);
            }
            parts.insert((c.topic.as_str().into(), c.partition), st);
        }
        let group = Arc::new(Group {
            name: name.to_owned(),
            config,
            state: Mutex::new(State {
                generation: 0,
                members: BTreeMap::new(),
                parts,
                unflushed: Vec::new(),
                settled_pending: 0,
                records_since_checkpoint: recovered.records,
                closed: false,
            }),
            store,
            store_order: Mutex::new(()),
            dlq: tokio::sync::Mutex::new(()),
            notify: Arc::new(Notify::new()),
            closed: AtomicBool::new(false),
        });
        group.sync_topology(broker);
        for t in group.topics() {
            if let Ok(topic) = broker.topic(&t) {
                topic.listeners.add(&group.notify);
            }
        }
        tokio::spawn(timer(Arc::downgrade(&group), Arc::downgrade(&broker.inner)));
        Ok(group)
    }

    fn topics(&self) -> Vec<String> {
        let mut t = self.config.topics.clone();
        t.push(replay_topic(&self.name));
        t
    }

    /// Adds state for partitions the group does not know yet (new topic partitions, the replay
    /// topic once it exists). Partitions added after the group starts are read from the earliest
    /// offset, so nothing published to them is skipped.
    fn sync_topology(&self, broker: &Broker) {
        let mut st = self.state.lock().expect("group lock poisoned");
        let mut started = Vec::new();
        for t in self.topics() {
            let Ok(topic) = broker.topic(&t) else { continue };
            for p in topic.partitions().iter() {
                let key: Tp = (topic.name.clone(), p.id);
                if let std::collections::btree_map::Entry::Vacant(slot) = st.parts.entry(key) {
                    let committed = p.log.earliest_offset();
                    slot.insert(PartState::new(committed));
                    started.push(StateRecord::Start { topic: t.clone(), partition: p.id, committed });
                }
            }
        }
        if !started.is_empty() {
            // Under the lock, so that no delivery record of the partition can precede its start;
            // and in store order, so that a checkpoint taken before it cannot land after it.
            let _order = self.store_order.lock().expect("store order lock poisoned");
            if let Err(e) = self.store.append(&started) {
                tracing::error!(group = %self.name, error = %e, "recording new partitions failed");
            }
            self.rebalance(&mut st);
        }
    }

    pub fn topology_changed(&self) {
        // The timer task picks this up; wake pollers so they see new partitions promptly.
        self.notify.notify_waiters();
    }

    pub fn forget_topic(&self, topic: &str) {
        let mut st = self.state.lock().expect("group lock poisoned");
        // What members hold of the topic will never be acked: give them their budget back.
        let held: Vec<Arc<str>> = st
            .parts
            .iter()
            .filter(|((t, _), _)| &**t == topic)
            .flat_map(|(_, p)| p.in_flight.values().map(|f| f.member.clone()))
            .collect();
        for m in held {
            if let Some(ms) = st.members.get_mut(&m) {
                ms.in_flight = ms.in_flight.saturating_sub(1);
            }
        }
        st.parts.retain(|(t, _), _| &**t != topic);
        // Durably and under the lock (like `Start`), so that it lands before the `Start` of a
        // topic created again under this name, which is then read from its beginning.
        let _order = self.store_order.lock().expect("store order lock poisoned");
        if let Err(e) = self.store.append(&[StateRecord::Forget { topic: topic.to_owned() }]) {
            tracing::error!(group = %self.name, error = %e, "recording a deleted topic failed");
        }
        self.rebalance(&mut st);
    }

    /// Assigns partitions evenly and stickily; bumps the generation.
    fn rebalance(&self, st: &mut State) {
        st.generation += 1;
        let generation = st.generation;
        let members: Vec<Arc<str>> = st.members.keys().cloned().collect();
        let n_parts = st.parts.len();
        let mut load: HashMap<Arc<str>, usize> = members.iter().map(|m| (m.clone(), 0)).collect();
        let cap = if members.is_empty() { 0 } else { n_parts.div_ceil(members.len()) };
        // Keep owners that are still members and under the cap.
        let mut unowned = Vec::new();
        for (tp, p) in st.parts.iter_mut() {
            let keep = p.owner.as_ref().filter(|o| load.get(*o).is_some_and(|l| *l < cap)).cloned();
            match keep {
                Some(o) => *load.get_mut(&o).expect("member") += 1,
                None => {
                    p.owner = None;
                    unowned.push(tp.clone());
                }
            }
        }
        for tp in unowned {
            let owner = load.iter().min_by_key(|(m, l)| (**l, (*m).clone())).map(|(m, _)| m.clone());
            if let Some(o) = &owner {
                *load.get_mut(o).expect("member") += 1;
            }
            let p = st.parts.get_mut(&tp).expect("part exists");
            p.owner = owner;
            p.assigned_generation = generation;
            // What the old owner had in flight goes back for redelivery to the new one.
            let moved: Vec<(u64, InFlight)> = p.in_flight.drain().collect();
            for (offset, f) in moved {
                if let Some(m) = st.members.get_mut(&f.member) {
                    m.in_flight = m.in_flight.saturating_sub(1);
                }
                let p = st.parts.get_mut(&tp).expect("part exists");
                p.retry.insert(offset, Waiting { event: f.event, due: Instant::now() });
            }
        }
        tracing::info!(group = %self.name, generation, members = members.len(), partitions = n_parts, "rebalanced");
        self.notify.notify_waiters();
    }

    pub fn join(self: &Arc<Self>, broker: &Broker, member: MemberConfig) -> Result<Member> {
        let limit = broker.inner.config.in_flight_max;
        if member.max_in_flight == 0 || member.max_in_flight > limit {
            return Err(BrokerError::LimitExceeded {
                name: "max_in_flight",
                value: member.max_in_flight.into(),
                limit: limit.into(),
                key: "in_flight_max",
            });
        }
        self.sync_topology(broker);
        let id: Arc<str> = member.id.unwrap_or_else(|| format!("member-{}", uuid_like())).into();
        let mut st = self.state.lock().expect("group lock poisoned");
        if st.closed {
            return Err(BrokerError::Closed);
        }
        let members_max = broker.inner.config.members_per_group_max;
        if !st.members.contains_key(&id) && st.members.len() as u64 >= u64::from(members_max) {
            return Err(BrokerError::LimitExceeded {
                name: "members",
                value: st.members.len() as u64 + 1,
                limit: members_max.into(),
                key: "members_per_group_max",
            });
        }
        // Joining again under the same id keeps what that member holds in flight: its limit
        // counts across the rejoin.
        let held = st.members.get(&id).map_or(0, |m| m.in_flight);
        st.members.insert(
            id.clone(),
            MemberState { last_seen: Instant::now(), max_in_flight: member.max_in_flight, in_flight: held },
        );
        self.rebalance(&mut st);
        Ok(Member { broker: broker.clone(), group: self.clone(), id })
    }

    fn leave(&self, member: &str) {
        let mut st = self.state.lock().expect("group lock poisoned");
        if st.members.remove(member).is_some() {
            self.rebalance(&mut st);
        }
    }

    fn unknown(&self, member: &str) -> BrokerError {
        BrokerError::UnknownMember { group: self.name.clone(), member: member.to_owned() }
    }

    /// Hands out up to `max` events to `member`. Records the attempts durably before returning.
    fn deliver(&self, broker: &Broker, member: &Arc<str>, max: usize) -> Result<Vec<Delivery>> {
        let mut out = Vec::new();
        let now = Instant::now();
        let ack_timeout = Duration::from_millis(self.config.ack_timeout_ms);
        let mut st = self.state.lock().expect("group lock poisoned");
        let generation = st.generation;
        let m = st.members.get_mut(member).ok_or_else(|| self.unknown(member))?;
        m.last_seen = now;
        let mut budget = (m.max_in_flight as usize).saturating_sub(m.in_flight).min(max);
        let owned: Vec<Tp> =
            st.parts.iter().filter(|(_, p)| p.owner.as_ref() == Some(member)).map(|(tp, _)| tp.clone()).collect();
        // A retention jump is reported before anything is picked, so that no event is taken
        // into flight by a poll that then returns an error.
        for tp in &owned {
            let p = st.parts.get_mut(tp).expect("owned part exists");
            if let Some((position, earliest)) = p.overtaken.take() {
                return Err(BrokerError::RetentionOvertook {
                    group: self.name.clone(),
                    topic: tp.0.to_string(),
                    partition: tp.1,
                    position,
                    earliest,
                    lost: earliest - position,
                });
            }
        }
        let mut delivered: Vec<(Tp, Vec<(u64, u32)>)> = Vec::new();
        for tp in owned {
            if budget == 0 {
                break;
            }
            let Ok(partition) = broker.partition(&tp.0, tp.1) else { continue };
            let p = st.parts.get_mut(&tp).expect("owned part exists");
            // Read ahead.
            if p.buffer.len() < READ_AHEAD_EVENTS / 2 && p.fetched < partition.log.latest_offset() {
                match partition.read(p.fetched, READ_AHEAD_BYTES, READ_AHEAD_EVENTS - p.buffer.len()) {
                    Ok(events) => {
                        for e in events {
                            p.fetched = e.offset + 1;
                            if !p.done.contains(&e.offset) && e.offset >= p.committed {
                                p.buffer.push_back(e);
                            }
                        }
                    }
                    Err(BrokerError::Log(herald_log::LogError::OffsetBelowEarliest { offset, earliest })) => {
                        tracing::error!(group = %self.name, topic = %tp.0, partition = tp.1, position = offset, earliest,
                            "retention deleted events this group had not consumed");
                        p.overtaken = Some((offset, earliest));
                        p.skip_to(earliest);
                        st.unflushed.push(StateRecord::Skip {
                            topic: tp.0.to_string(),
                            partition: tp.1,
                            committed: earliest,
                        });
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            let picked = pick(self.config.ordering, self.config.blocking_retries, p, now, budget);
            if picked.is_empty() {
                continue;
            }
            let mut recs = Vec::with_capacity(picked.len());
            for event in picked {
                let attempt = p.attempts.get(&event.offset).copied().unwrap_or(0) + 1;
                p.attempts.insert(event.offset, attempt);
                recs.push((event.offset, attempt));
                p.in_flight.insert(
                    event.offset,
                    InFlight {
                        member: member.clone(),
                        generation,
                        attempt,
                        deadline: now + ack_timeout,
                        event: event.clone(),
                    },
                );
                out.push(Delivery { stored: event, attempt, generation });
            }
            budget -= recs.len();
            delivered.push((tp, recs));
        }
        if let Some(m) = st.members.get_mut(member) {
            m.in_flight += out.len();
        }
        let records: Vec<StateRecord> = delivered
            .into_iter()
            .map(|(tp, offsets)| StateRecord::Delivered { topic: tp.0.to_string(), partition: tp.1, offsets })
            .collect();
        st.records_since_checkpoint += records.len();
        // Appends reach the store in the order their state changes were made (a checkpoint
        // taken earlier must not land after a later delivery record).
        let order = self.store_order.lock().expect("store order lock poisoned");
        drop(st);
        if !records.is_empty() {
            // Durable before the member sees them: a crash cannot reset the attempt count.
            self.store.append(&records)?;
        }
        drop(order);
        Ok(out)
    }

    /// Validates that `member` may settle `d` and removes it from flight.
    fn settle(&self, st: &mut State, member: &Arc<str>, d: &DeliveryId) -> Result<InFlight> {
        let s = d;
        let current = st.generation;
        let m = st.members.get_mut(member).ok_or_else(|| self.unknown(member))?;
        m.last_seen = Instant::now();
        let p = st.parts.get_mut(&(s.topic.clone(), s.partition));
        let not_in_flight = || BrokerError::NotInFlight {
            group: self.name.clone(),
            member: member.to_string(),
            topic: s.topic.to_string(),
            partition: s.partition,
            offset: s.offset,
        };
        let Some(p) = p else { return Err(not_in_flight()) };
        if d.generation < p.assigned_generation || p.owner.as_ref() != Some(member) {
            return Err(BrokerError::StaleGeneration {
                group: self.name.clone(),
                member: member.to_string(),
                generation: d.generation,
                current,
            });
        }
        match p.in_flight.get(&s.offset) {
            Some(f) if &f.member == member && f.generation == d.generation && f.attempt == d.attempt => {}
            _ => return Err(not_in_flight()),
        }
        let f = p.in_flight.remove(&s.offset).expect("checked");
        if let Some(m) = st.members.get_mut(member) {
            m.in_flight = m.in_flight.saturating_sub(1);
        }
        Ok(f)
    }

    fn ack(&self, member: &Arc<str>, d: &DeliveryId) -> Result<()> {
        let mut st = self.state.lock().expect("group lock poisoned");
        self.settle(&mut st, member, d)?;
        let s = d;
        let p = st.parts.get_mut(&(s.topic.clone(), s.partition)).expect("settled");
        p.mark_done(s.offset);
        p.settled.push(s.offset);
        st.settled_pending += 1;
        drop(st);
        self.notify.notify_waiters();
        Ok(())
    }

    /// A failed attempt: retry after `delay` (or the policy's backoff), or dead-letter when the
    /// attempts are spent or `permanent`.
    fn fail(&self, st: &mut State, f: InFlight, delay: Option<Duration>, reason: &str, permanent: bool) {
        let (topic, partition, offset) = (f.event.topic.clone(), f.event.partition, f.event.offset);
        let now = now_ms();
        let p = st.parts.get_mut(&(topic.clone(), partition)).expect("part exists");
        let fl = p.failures.entry(offset).or_insert_with(|| Failures { first_ms: now, ..Default::default() });
        fl.last_ms = now;
        fl.reason = reason.to_owned();
        let failures = fl.clone();
        st.unflushed.push(StateRecord::Failed {
            topic: topic.to_string(),
            partition,
            offset,
            reason: reason.to_owned(),
            at_ms: now,
        });
        let p = st.parts.get_mut(&(topic, partition)).expect("part exists");
        if permanent || f.attempt >= self.config.retry.max_attempts {
            p.dead.insert(offset, (f.event, f.attempt, failures, false));
        } else {
            let delay = delay.unwrap_or_else(|| self.config.retry.backoff(f.attempt));
            // A delay too large for the clock means "as late as possible", not a panic.
            let due = Instant::now().checked_add(delay.min(DELAY_MAX)).unwrap_or_else(Instant::now);
            p.retry.insert(offset, Waiting { event: f.event, due });
        }
    }

    fn nack(&self, member: &Arc<str>, d: &DeliveryId, delay: Option<Duration>, reason: &str) -> Result<()> {
        let mut st = self.state.lock().expect("group lock poisoned");
        let f = self.settle(&mut st, member, d)?;
        self.fail(&mut st, f, delay, reason, false);
        Ok(())
    }

    fn reject(&self, member: &Arc<str>, d: &DeliveryId, reason: &str) -> Result<()> {
        let mut st = self.state.lock().expect("group lock poisoned");
        let f = self.settle(&mut st, member, d)?;
        self.fail(&mut st, f, None, reason, true);
        Ok(())
    }

    fn heartbeat(&self, member: &Arc<str>) -> Result<()> {
        let mut st = self.state.lock().expect("group lock poisoned");
        let m = st.members.get_mut(member).ok_or_else(|| self.unknown(member))?;
        m.last_seen = Instant::now();
        Ok(())
    }

    /// Expires members and in-flight events; returns when the next deadline is due.
    fn expire(&self) {
        let now = Instant::now();
        let session = Duration::from_millis(self.config.session_timeout_ms);
        let mut st = self.state.lock().expect("group lock poisoned");
        let gone: Vec<Arc<str>> = st
            .members
            .iter()
            .filter(|(_, m)| now.duration_since(m.last_seen) > session)
            .map(|(k, _)| k.clone())
            .collect();
        if !gone.is_empty() {
            for m in &gone {
                tracing::warn!(group = %self.name, member = %m, "member missed its session timeout: removed");
                st.members.remove(m);
            }
            self.rebalance(&mut st);
        }
        let mut expired = Vec::new();
        for p in st.parts.values_mut() {
            let late: Vec<u64> = p.in_flight.iter().filter(|(_, f)| f.deadline <= now).map(|(o, _)| *o).collect();
            for o in late {
                expired.push(p.in_flight.remove(&o).expect("present"));
            }
        }
        let any = !expired.is_empty();
        for f in expired {
            if let Some(m) = st.members.get_mut(&f.member) {
                m.in_flight = m.in_flight.saturating_sub(1);
            }
            tracing::info!(group = %self.name, topic = %f.event.topic, partition = f.event.partition,
                offset = f.event.offset, attempt = f.attempt, "ack timeout: redelivering");
            self.fail(&mut st, f, None, "ack timeout", false);
        }
        let due = st.parts.values().any(|p| p.retry.values().any(|w| w.due <= now));
        drop(st);
        if any || due {
            self.notify.notify_waiters();
        }
    }

    /// Writes pending dead letters to the DLQ topic, then marks them done.
    async fn flush_dead_letters(&self, broker: &Broker) -> Result<()> {
        let _dlq = self.dlq.lock().await;
        let mut batch = Vec::new();
        {
            let mut st = self.state.lock().expect("group lock poisoned");
            for ((topic, partition), p) in st.parts.iter_mut() {
                for (offset, (event, attempts, failures, writing)) in p.dead.iter_mut() {
                    if !*writing {
                        *writing = true;
                        batch.push(Outgoing {
                            topic: topic.clone(),
                            partition: *partition,
                            offset: *offset,
                            event: event.event.clone(),
                            attempts: *attempts,
                            failures: failures.clone(),
                        });
                    }
                }
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        let result = self.write_dead_letters(broker, &batch).await;
        let mut st = self.state.lock().expect("group lock poisoned");
        for Outgoing { topic, partition, offset, .. } in &batch {
            let Some(p) = st.parts.get_mut(&(topic.clone(), *partition)) else { continue };
            if result.is_ok() {
                p.dead.remove(offset);
                p.mark_done(*offset);
            } else if let Some(d) = p.dead.get_mut(offset) {
                d.3 = false;
            }
        }
        if result.is_ok() {
            for Outgoing { topic, partition, offset, .. } in &batch {
                if let Some(p) = st.parts.get_mut(&(topic.clone(), *partition)) {
                    p.settled.push(*offset);
                }
                st.settled_pending += 1;
            }
        }
        drop(st);
        self.notify.notify_waiters();
        result
    }

    async fn write_dead_letters(&self, broker: &Broker, batch: &[Outgoing]) -> Result<()> {
        let dlq = dlq_topic(&self.name);
        let info = broker.ensure_topic(&dlq, dlq_topic_config())?;
        let held: u64 = info.partitions.iter().map(|p| p.latest_offset - p.earliest_offset).sum();
        if held + batch.len() as u64 > self.config.dlq_events_max {
            let err = BrokerError::LimitExceeded {
                name: "dead letters",
                value: held + batch.len() as u64,
                limit: self.config.dlq_events_max,
                key: "dlq_events_max",
            };
            tracing::error!(group = %self.name, error = %err, "DLQ full: the events stay pending and are retried");
            return Err(err);
        }
        let events: Vec<Event> = batch
            .iter()
            .map(|Outgoing { topic, partition, offset, event, attempts, failures: f }| {
                let ts = |ms: i64| herald_core::Timestamp::from_unix_nanos(ms.saturating_mul(1_000_000)).to_rfc3339();
                let mut b = event.to_builder();
                for (k, v) in [
                    (dlq_headers::REASON, truncate(&f.reason, 1024)),
                    (dlq_headers::ATTEMPTS, attempts.to_string()),
                    (dlq_headers::TOPIC, topic.to_string()),
                    (dlq_headers::PARTITION, partition.to_string()),
                    (dlq_headers::OFFSET, offset.to_string()),
                    (dlq_headers::GROUP, self.name.clone()),
                    (dlq_headers::FIRST_FAILURE, ts(f.first_ms)),
                    (dlq_headers::LAST_FAILURE, ts(f.last_ms)),
                ] {
                    b = b.header(k, v);
                }
                // A dead letter may exceed the limits its original just met (8 more headers):
                // it is built under the hard maxima, and if even that fails the original goes
                // alone rather than blocking every other dead letter of the group.
                b.build_with(&crate::partition::stored_limits()).unwrap_or_else(|e| {
                    tracing::error!(group = %self.name, error = %e, "dead letter stored without its dlq headers");
                    event.clone()
                })
            })
            .collect();
        broker.publish_batch(&dlq, events).await?;
        Ok(())
    }

    /// Writes acks and failures to the store, and a checkpoint now and then.
    fn flush(&self) -> Result<()> {
        let mut st = self.state.lock().expect("group lock poisoned");
        let mut records = std::mem::take(&mut st.unflushed);
        st.settled_pending = 0;
        // Acks are many; what recovery needs is each partition's position plus the offsets
        // settled above it (out of order). So per partition: one `Skip` to the position and one
        // `Done` with the rest.
        for ((topic, partition), p) in st.parts.iter_mut() {
            if p.settled.is_empty() {
                continue;
            }
            let committed = p.committed;
            let above: Vec<u64> = p.settled.drain(..).filter(|o| *o >= committed).collect();
            records.push(StateRecord::Skip { topic: topic.to_string(), partition: *partition, committed });
            if !above.is_empty() {
                records.push(StateRecord::Done { topic: topic.to_string(), partition: *partition, offsets: above });
            }
        }
        st.records_since_checkpoint += records.len();
        let checkpoint = (st.records_since_checkpoint > 10_000).then(|| {
            st.records_since_checkpoint = 0;
            checkpoint_of(&st)
        });
        let order = self.store_order.lock().expect("store order lock poisoned");
        drop(st);
        if !records.is_empty() {
            self.store.append(&records)?;
        }
        if let Some(parts) = checkpoint {
            self.store.checkpoint(parts)?;
        }
        drop(order);
        Ok(())
    }

    pub fn close(&self) -> Result<()> {
        self.closed.store(true, AtomicOrdering::Release);
        self.state.lock().expect("group lock poisoned").closed = true;
        self.flush()?;
        self.store.close()
    }

    /// Moves every partition's position to `to`, forgetting attempts and pending retries;
    /// refused while the group has members. Durable before it returns.
    fn reset(&self, broker: &Broker, to: StartFrom) -> Result<()> {
        self.sync_topology(broker);
        let mut st = self.state.lock().expect("group lock poisoned");
        if !st.members.is_empty() {
            return Err(BrokerError::GroupActive { group: self.name.clone(), members: st.members.len() });
        }
        let mut cps = Vec::new();
        for (t, p) in st.parts.keys() {
            let part = broker.partition(t, *p)?;
            let committed = match to {
                StartFrom::Earliest => part.log.earliest_offset(),
                StartFrom::Latest => part.log.latest_offset(),
                StartFrom::Timestamp(ts) => {
                    part.log.offset_for_timestamp(ts)?.unwrap_or_else(|| part.log.latest_offset())
                }
            };
            cps.push(PartCheckpoint { topic: t.to_string(), partition: *p, committed, attempts: vec![], done: vec![] });
        }
        {
            let _order = self.store_order.lock().expect("store order lock poisoned");
            self.store.append(&[StateRecord::Checkpoint { parts: cps.clone() }])?;
        }
        for c in cps {
            let key: Tp = (Arc::from(c.topic.as_str()), c.partition);
            st.parts.insert(key, PartState::new(c.committed));
        }
        st.unflushed.clear();
        st.settled_pending = 0;
        self.rebalance(&mut st);
        drop(st);
        self.notify.notify_waiters();
        Ok(())
    }

    pub fn info(&self, broker: &Broker) -> GroupInfo {
        let st = self.state.lock().expect("group lock poisoned");
        let partitions = st
            .parts
            .iter()
            .map(|((t, p), s)| {
                let latest = broker.partition(t, *p).map_or(s.committed, |x| x.log.latest_offset());
                GroupPartitionInfo {
                    topic: t.to_string(),
                    partition: *p,
                    owner: s.owner.as_ref().map(|o| o.to_string()),
                    committed: s.committed,
                    latest,
                    lag: latest.saturating_sub(s.committed),
                    in_flight: s.in_flight.len(),
                }
            })
            .collect();
        GroupInfo {
            name: self.name.clone(),
            config: self.config.clone(),
            generation: st.generation,
            members: st.members.keys().map(|m| m.to_string()).collect(),
            partitions,
        }
    }

    fn next_due(&self) -> Option<Instant> {
        let st = self.state.lock().expect("group lock poisoned");
        st.parts.values().flat_map(|p| p.retry.values().map(|w| w.due)).min()
    }
}

fn checkpoint_of(st: &State) -> Vec<PartCheckpoint> {
    st.parts
        .iter()
        .map(|((t, p), s)| PartCheckpoint {
            topic: t.to_string(),
            partition: *p,
            committed: s.committed,
            attempts: s.attempts.iter().map(|(o, a)| (*o, *a)).collect(),
            done: s.done.iter().copied().collect(),
        })
        .collect()
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

pub(crate) fn dlq_topic_config() -> TopicConfig {
    // No dedupe: an event dead-lettered again after a replay must be stored again. The size
    // limit is the hard maximum: a dead letter is its original plus headers.
    TopicConfig {
        partitions: 1,
        dedupe_window_ms: 0,
        max_event_bytes: crate::config::EVENT_BYTES_MAX_MAX,
        ..TopicConfig::default()
    }
}

/// Chooses what to deliver from one partition, in offset order, under the ordering mode.
fn pick(mode: OrderingMode, blocking: bool, p: &mut PartState, now: Instant, budget: usize) -> Vec<StoredEvent> {
    let mut out = Vec::new();
    match mode {
        OrderingMode::Partition => {
            if !p.in_flight.is_empty() || !p.dead.is_empty() || budget == 0 {
                return out;
            }
            // The lowest pending offset goes first; a waiting retry blocks the partition.
            let retry_first = p.retry.first_key_value().map(|(o, _)| *o);
            let buffer_first = p.buffer.front().map(|e| e.offset);
            let retry_next = retry_first.filter(|r| buffer_first.is_none_or(|b| *r < b));
            if let Some(r) = retry_next {
                if p.retry[&r].due <= now {
                    out.push(p.retry.remove(&r).expect("present").event);
                }
            } else if let Some(e) = p.buffer.pop_front() {
                out.push(e);
            }
        }
        OrderingMode::None => {
            let due: Vec<u64> = p.retry.iter().filter(|(_, w)| w.due <= now).map(|(o, _)| *o).take(budget).collect();
            for o in due {
                out.push(p.retry.remove(&o).expect("present").event);
            }
            while out.len() < budget {
                let Some(e) = p.buffer.pop_front() else { break };
                out.push(e);
            }
        }
        OrderingMode::Key => {
            // A key is blocked while an earlier event of it is in flight, waiting for a retry,
            // or on its way to the DLQ. Keys are compared by a 64-bit hash: this runs on every
            // poll over everything in flight, so it must not allocate. A collision only delays
            // an event until the other key's event is settled.
            let mut blocked: KeySet = KeySet::default();
            for f in p.in_flight.values() {
                if let Some(h) = key_hash(&f.event) {
                    blocked.insert(h);
                }
            }
            for (e, ..) in p.dead.values() {
                if let Some(h) = key_hash(e) {
                    blocked.insert(h);
                }
            }
            let mut take_retry = Vec::new();
            for (o, w) in &p.retry {
                let k = key_hash(&w.event);
                let free = k.is_none_or(|h| !blocked.contains(&h));
                let due = w.due <= now;
                if free && due && take_retry.len() < budget {
                    take_retry.push(*o);
                }
                // A retry not yet due holds its key only when retries block.
                if let Some(h) = k
                    && (due || blocking)
                {
                    blocked.insert(h);
                }
            }
            for o in take_retry {
                out.push(p.retry.remove(&o).expect("present").event);
            }
            if out.len() < budget && !p.buffer.is_empty() {
                let mut kept = VecDeque::with_capacity(p.buffer.len());
                for e in p.buffer.drain(..) {
                    if out.len() >= budget {
                        kept.push_back(e);
                        continue;
                    }
                    match key_hash(&e) {
                        // The first event of a free key goes; it blocks the key for the rest.
                        Some(h) if !blocked.insert(h) => kept.push_back(e),
                        _ => out.push(e),
                    }
                }
                p.buffer = kept;
            }
        }
    }
    out
}

/// FNV-1a of an event's key.
fn key_hash(e: &StoredEvent) -> Option<u64> {
    e.event
        .key()
        .map(|k| k.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)))
}

/// Keys are hashes already: hash them as themselves.
#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type KeySet = HashSet<u64, std::hash::BuildHasherDefault<IdHasher>>;

fn uuid_like() -> String {
    let mut r = rand::rng();
    format!("{:016x}", r.random::<u64>())
}

/// A group's clock: sessions, ack timeouts, dead letters, flushes. Holds neither the group nor
/// the broker alive.
async fn timer(group: Weak<Group>, broker: Weak<crate::broker::BrokerInner>) {
    let mut last_flush = Instant::now();
    loop {
        tokio::time::sleep(TICK).await;
        let Some(g) = group.upgrade() else { return };
        let Some(inner) = broker.upgrade() else { return };
        let broker = Broker { inner };
        if g.closed.load(AtomicOrdering::Acquire) {
            return;
        }
        g.sync_topology(&broker);
        g.expire();
        if let Err(e) = g.flush_dead_letters(&broker).await {
            tracing::warn!(group = %g.name, error = %e, "writing dead letters failed; will retry");
        }
        let pending = {
            let st = g.state.lock().expect("group lock poisoned");
            st.unflushed.len() + st.settled_pending
        };
        if pending >= COMMIT_EVENTS_MAX || last_flush.elapsed() >= Duration::from_millis(COMMIT_INTERVAL_MS) {
            last_flush = Instant::now();
            let g2 = g.clone();
            match tokio::task::spawn_blocking(move || g2.flush()).await {
                Ok(Err(e)) => tracing::error!(group = %g.name, error = %e, "flushing group positions failed"),
                Err(e) => tracing::error!(group = %g.name, error = %e, "flush task failed"),
                Ok(Ok(())) => {}
            }
        }
    }
}

/// A member of a consumer group: polls deliveries and settles them. Dropping it leaves the group.
pub struct Member {
    broker: Broker,
    group: Arc<Group>,
    id: Arc<str>,
}

impl Member {
    /// This member's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The group's name.
    pub fn group(&self) -> &str {
        &self.group.name
    }

    /// Waits up to `wait` for events of this member's partitions and returns up to `max` of them
    /// (fewer if its in-flight budget is used up). Also serves as a heartbeat.
    pub async fn poll(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let deadline = Instant::now().checked_add(wait.min(DELAY_MAX)).unwrap_or_else(Instant::now);
        loop {
            let notified = self.group.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let got = {
                let group = self.group.clone();
                let broker = self.broker.clone();
                let id = self.id.clone();
                tokio::task::spawn_blocking(move || group.deliver(&broker, &id, max))
                    .await
                    .map_err(|_| BrokerError::Closed)??
            };
            if !got.is_empty() || Instant::now() >= deadline {
                return Ok(got);
            }
            let wake = self.group.next_due().map_or(deadline, |d| d.min(deadline));
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }

    /// Acknowledges a delivery: the group's position may move past it.
    pub fn ack(&self, d: &Delivery) -> Result<()> {
        self.ack_id(&d.id())
    }

    /// [`Member::ack`] by id.
    pub fn ack_id(&self, d: &DeliveryId) -> Result<()> {
        self.group.ack(&self.id, d)
    }

    /// A failed attempt: redeliver after `delay`, or after the retry policy's backoff when
    /// `None`; dead-lettered instead when the attempts are used up.
    pub fn nack(&self, d: &Delivery, delay: Option<Duration>, reason: &str) -> Result<()> {
        self.nack_id(&d.id(), delay, reason)
    }

    /// [`Member::nack`] by id.
    pub fn nack_id(&self, d: &DeliveryId, delay: Option<Duration>, reason: &str) -> Result<()> {
        self.group.nack(&self.id, d, delay, reason)
    }

    /// A permanent failure: the event goes to the group's DLQ at once.
    pub async fn reject(&self, d: &Delivery, reason: &str) -> Result<()> {
        self.reject_id(&d.id(), reason).await
    }

    /// [`Member::reject`] by id.
    pub async fn reject_id(&self, d: &DeliveryId, reason: &str) -> Result<()> {
        self.group.reject(&self.id, d, reason)?;
        self.group.flush_dead_letters(&self.broker).await
    }

    /// Keeps the session alive without polling.
    pub fn heartbeat(&self) -> Result<()> {
        self.group.heartbeat(&self.id)
    }

    /// The partitions this member owns now.
    pub fn assignment(&self) -> Vec<(String, u32)> {
        let st = self.group.state.lock().expect("group lock poisoned");
        st.parts
            .iter()
            .filter(|(_, p)| p.owner.as_deref() == Some(&*self.id))
            .map(|((t, p), _)| (t.to_string(), *p))
            .collect()
    }

    /// The group's current generation.
    pub fn generation(&self) -> u64 {
        self.group.state.lock().expect("group lock poisoned").generation
    }

    /// Leaves the group now; its partitions are reassigned and its in-flight events redelivered.
    pub fn leave(self) {}

    /// Stops heartbeating without leaving, as a crashed process would: the member is removed
    /// when its session times out. For tests.
    #[doc(hidden)]
    pub fn vanish(self) {
        std::mem::forget(self);
    }
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member").field("group", &self.group.name).field("id", &self.id).finish()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.group.leave(&self.id);
    }
}

impl Broker {
    /// Moves every position of `group` to `to` (earliest, latest, or the first event at or after a
    /// time), forgetting attempt counts and pending retries. Refused with
    /// [`BrokerError::GroupActive`] while the group has members.
    pub fn reset_group(&self, group: &str, to: StartFrom) -> Result<GroupInfo> {
        let g = self.group(group)?;
        g.reset(self, to)?;
        Ok(g.info(self))
    }

    /// Dead letters of `group`, oldest first, at most `max`.
    pub fn dlq_list(&self, group: &str, max: usize) -> Result<Vec<DeadLetter>> {
        self.group(group)?;
        let Ok(p) = self.partition(&dlq_topic(group), 0) else { return Ok(vec![]) };
        let mut out = Vec::new();
        let mut next = p.log.earliest_offset();
        while out.len() < max {
            let events = p.read(next, 4 << 20, max - out.len())?;
            let Some(last) = events.last() else { break };
            next = last.offset + 1;
            out.extend(events.into_iter().map(|s| DeadLetter { dlq_offset: s.offset, event: s.event }));
        }
        Ok(out)
    }

    /// Sends `group`'s dead letters back to that group only (through its private replay topic),
    /// then empties its DLQ. A dead letter already replayed `replays_max` times stays in the DLQ.
    /// Returns how many were replayed.
    pub async fn dlq_replay(&self, group: &str) -> Result<usize> {
        let g = self.group(group)?;
        let _dlq = g.dlq.lock().await;
        let letters = self.dlq_list(group, usize::MAX)?;
        let mut replay = Vec::new();
        let mut keep = Vec::new();
        for l in letters {
            let replays: u32 = l.event.header(dlq_headers::REPLAYS).and_then(|v| v.parse().ok()).unwrap_or(0);
            if replays >= g.config.replays_max {
                keep.push(l.event);
                continue;
            }
            let b = l.event.to_builder().header(dlq_headers::REPLAYS, (replays + 1).to_string());
            replay.push(b.build_with(&crate::partition::stored_limits()).unwrap_or(l.event));
        }
        let count = replay.len();
        if count > 0 {
            let topic = replay_topic(group);
            self.ensure_topic(&topic, dlq_topic_config())?;
            g.sync_topology(self);
            if let Ok(t) = self.topic(&topic) {
                t.listeners.add(&g.notify);
            }
            self.publish_batch(&topic, replay).await?;
        }
        self.purge_dlq_topic(group)?;
        if !keep.is_empty() {
            self.publish_batch(&dlq_topic(group), keep).await?;
        }
        Ok(count)
    }

    /// Deletes every dead letter of `group`; returns how many there were.
    pub async fn dlq_purge(&self, group: &str) -> Result<u64> {
        let g = self.group(group)?;
        let _dlq = g.dlq.lock().await;
        let count = match self.partition(&dlq_topic(group), 0) {
            Ok(p) => p.log.latest_offset().saturating_sub(p.log.earliest_offset()),
            Err(_) => 0,
        };
        self.purge_dlq_topic(group)?;
        Ok(count)
    }

    fn purge_dlq_topic(&self, group: &str) -> Result<()> {
        let topic = dlq_topic(group);
        match self.delete_topic(&topic) {
            Ok(()) | Err(BrokerError::TopicNotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        self.create_topic(&topic, dlq_topic_config())?;
        Ok(())
    }
}
