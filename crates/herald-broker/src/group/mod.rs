//! Consumer groups. The delivery state machine is pure ([`state`], with [`pick`] deciding order);
//! this module is its thin shell: it takes the group's lock only to ask the state machine what
//! must happen, and performs that — reading partitions, appending to the group's store, writing
//! dead letters — after releasing it. Blocking file work runs off the async workers
//! (`spawn_blocking`).
//!
//! No function here holds the group's lock while doing file I/O: every file operation the broker
//! does on a group's behalf (`GroupStore` appends, partition reads, metadata writes) asserts in
//! debug builds, and so in every test, that the calling thread holds no group lock
//! ([`assert_no_group_lock`]).
//!
//! Store appends reach the store in the order their state changes were made: the state machine
//! hands out a ticket with each batch of records, and [`Sequencer`] lets batches append in ticket
//! order without holding the group's lock.

use std::cell::Cell;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use herald_model::{DeliveryId, GroupConfig, GroupInfo, StartFrom, dead_letter, storage};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::Notify;

use crate::broker::Broker;
use crate::config::valid_name;
use crate::error::{BrokerError, Result};
use crate::store::{GroupStore, PartCheckpoint};
use crate::topic::write_durably;
use history::{History, Settled};

pub(crate) mod dlq;
pub(crate) mod history;
#[cfg(test)]
mod model_test;
pub(crate) mod pick;
pub(crate) mod state;

pub use herald_model::dead_letter::headers as dlq_headers;
pub use state::Delivery;
use state::{Append, Fill, GroupState, Now, Ticket, Tp};

/// A read copies at most this much from the log at once, so it stays near what the read-ahead
/// needs rather than whatever the partition holds.
const READ_AHEAD_BYTES: usize = 256 * 1024;
/// How often a group's timer checks sessions, ack timeouts, dead letters and flushes positions.
const TICK: Duration = Duration::from_millis(20);
/// Acks not yet durable are flushed at least this often, so a crash redelivers at most this
/// much acknowledged work (plus what was in flight).
pub const COMMIT_INTERVAL_MS: u64 = 100;
/// ...or as soon as this many acks are waiting.
pub const COMMIT_EVENTS_MAX: usize = 4096;

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

thread_local! {
    /// Group locks this thread holds.
    static GROUP_LOCKS_HELD: Cell<usize> = const { Cell::new(0) };
}

/// Asserts (in debug builds) that the calling thread holds no group lock: called by every file
/// operation done for a group, so that the test suite proves none runs under the lock.
pub(crate) fn assert_no_group_lock(what: &str) {
    debug_assert_eq!(GROUP_LOCKS_HELD.with(Cell::get), 0, "file I/O ({what}) while holding a group lock");
}

/// The group's state, locked: counts itself for [`assert_no_group_lock`].
struct Locked<'a>(MutexGuard<'a, GroupState>);

impl std::ops::Deref for Locked<'_> {
    type Target = GroupState;
    fn deref(&self) -> &GroupState {
        &self.0
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut GroupState {
        &mut self.0
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        GROUP_LOCKS_HELD.with(|c| c.set(c.get() - 1));
    }
}

/// Lets store appends run in ticket order without the group's lock.
#[derive(Default)]
struct Sequencer {
    turn: Mutex<u64>,
    moved: Condvar,
}

impl Sequencer {
    /// Runs `f` once every earlier ticket has run. Every ticket must be run exactly once.
    fn run<T>(&self, ticket: Ticket, f: impl FnOnce() -> T) -> T {
        assert_no_group_lock("waiting for the group store");
        let mut turn = self.turn.lock().expect("sequencer lock poisoned");
        while *turn != ticket.0 {
            debug_assert!(*turn < ticket.0, "ticket {} run twice", ticket.0);
            turn = self.moved.wait(turn).expect("sequencer lock poisoned");
        }
        drop(turn);
        struct Next<'a>(&'a Sequencer);
        impl Drop for Next<'_> {
            fn drop(&mut self) {
                *self.0.turn.lock().expect("sequencer lock poisoned") += 1;
                self.0.moved.notify_all();
            }
        }
        let _next = Next(self);
        f()
    }
}

pub(crate) struct Group {
    pub name: String,
    pub config: GroupConfig,
    state: Mutex<GroupState>,
    store: GroupStore,
    /// What happened to each event, for `event_history`.
    pub(crate) history: History,
    sequencer: Sequencer,
    /// Serialises writing dead letters with replaying and purging them, so that a replay never
    /// drops a dead letter written after it listed them.
    dlq: Arc<tokio::sync::Mutex<()>>,
    notify: Arc<Notify>,
    closed: AtomicBool,
}

fn group_dir(broker: &Broker, name: &str) -> std::path::PathBuf {
    broker.inner.dir.join("groups").join(name)
}

/// Latest offset of a partition, if it exists (no I/O: an atomic of the log).
fn latest_of(broker: &Broker, tp: &Tp) -> Option<u64> {
    broker.partition(&tp.0, tp.1).ok().map(|p| p.log.latest_offset())
}

/// Loads every group stored under `dir` at broker start. A group that cannot be opened is set
/// aside (half-made: no `group.json`) or reported and not served; it never stops the broker.
pub(crate) fn load_groups(broker: &Broker, dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(BrokerError::io(dir, "listing groups"))? {
        let entry = entry.map_err(BrokerError::io(dir, "listing groups"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !valid_name(&name) {
            continue;
        }
        let path = entry.path().join("group.json");
        let opened = fs::read(&path)
            .map_err(BrokerError::io(&path, "reading group settings"))
            .and_then(|bytes| Ok(storage::read::<storage::StoredGroupConfig>(&path.display().to_string(), &bytes)?))
            .and_then(|stored| Group::open(broker, &name, stored.into(), None));
        match opened {
            Ok(group) => {
                broker.inner.groups.write().expect("groups lock poisoned").insert(name, group);
            }
            Err(e) => {
                let d = crate::broker::set_aside_or_report(dir, &entry.path(), "group", &name, "group.json", &e)?;
                broker.inner.damage.lock().expect("damage lock poisoned").push(d);
            }
        }
    }
    Ok(())
}

/// Where a partition starts for `start`.
fn start_offset(broker: &Broker, topic: &str, partition: u32, start: StartFrom) -> Result<u64> {
    let p = broker.partition(topic, partition)?;
    Ok(match start {
        StartFrom::Earliest => p.log.earliest_offset(),
        StartFrom::Latest => p.log.latest_offset(),
        StartFrom::Timestamp(ts) => p.log.offset_for_timestamp(ts)?.unwrap_or_else(|| p.log.latest_offset()),
    })
}

pub(crate) fn create_group(broker: &Broker, name: &str, config: GroupConfig) -> Result<GroupInfo> {
    if !herald_model::valid_group_name(name) {
        return Err(BrokerError::InvalidGroupName { name: name.to_owned() });
    }
    config.validate()?;
    broker.check_not_damaged("group", name)?;
    for t in &config.topics {
        broker.topic(t)?;
    }
    let mut groups = broker.inner.groups.write().expect("groups lock poisoned");
    if let Some(existing) = groups.get(name) {
        if existing.config == config {
            return Ok(existing.info(broker));
        }
        return Err(BrokerError::InvalidConfig(format!(
            "group {name:?} exists with other settings ({}); delete it or use the same settings",
            config.differences(&existing.config).join("; ")
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
            let committed = start_offset(broker, t, p.id, config.start)?;
            start.push(PartCheckpoint { topic: t.clone(), partition: p.id, committed, attempts: vec![], done: vec![] });
        }
    }
    let group = Group::open(broker, name, config.clone(), Some(start))?;
    write_durably(&dir.join("group.json"), &storage::write(&storage::StoredGroupConfig::from(&config)))?;
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
        let durability = crate::config::log_durability(config.state_durability);
        let (store, recovered) = GroupStore::open(&dir.join("state"), durability)?;
        let history = History::open(&dir.join("history"), &broker.inner.config);
        let checkpoint = match start {
            Some(start) => {
                store.checkpoint(start.clone())?;
                start
            }
            None => recovered.parts,
        };
        let state = GroupState::new(name, &config, checkpoint, recovered.records, StdRng::from_os_rng());
        let group = Arc::new(Group {
            name: name.to_owned(),
            config,
            state: Mutex::new(state),
            store,
            history,
            sequencer: Sequencer::default(),
            dlq: Arc::new(tokio::sync::Mutex::new(())),
            notify: Arc::new(Notify::new()),
            closed: AtomicBool::new(false),
        });
        group.sync_topology(broker);
        group.clamp_to_ends(broker)?;
        for t in group.topics() {
            if let Ok(topic) = broker.topic(&t) {
                topic.listeners.add(&group.notify);
            }
        }
        tokio::spawn(timer(Arc::downgrade(&group), Arc::downgrade(&broker.inner)));
        Ok(group)
    }

    /// A position beyond its partition's end (the log lost its tail) is moved back to the end,
    /// durably, and reported with the numbers: never silently skipped.
    fn clamp_to_ends(&self, broker: &Broker) -> Result<()> {
        let (moved, append) = self.lock().clamp_to_ends(|tp| latest_of(broker, tp));
        if let Some(a) = append {
            self.commit(a)?;
        }
        for ((topic, partition), from, to) in moved {
            let problem = format!(
                "was at {topic}/{partition}@{from} but the partition ends at {to} (its log lost its tail): moved back \
                 to {to}, so events published from there on are delivered; events {to}..{from} as they were are gone"
            );
            tracing::error!(group = %self.name, %problem, "a group position beyond its partition's end");
            let d = crate::broker::Damage { kind: "group", name: self.name.clone(), problem, not_served: false };
            broker.inner.damage.lock().expect("damage lock poisoned").push(d);
        }
        Ok(())
    }

    fn lock(&self) -> Locked<'_> {
        let guard = self.state.lock().expect("group lock poisoned");
        GROUP_LOCKS_HELD.with(|c| c.set(c.get() + 1));
        Locked(guard)
    }

    /// Wakes pollers if the state machine asked for it.
    fn wake_if(&self, st: &mut Locked<'_>) {
        if st.take_wake() {
            self.notify.notify_waiters();
        }
    }

    /// Appends records to the store in their ticket's turn.
    fn commit(&self, append: Append) -> Result<()> {
        let Append { ticket, records, checkpoint } = append;
        self.sequencer.run(ticket, || {
            if !records.is_empty() {
                self.store.append(&records)?;
            }
            if let Some(parts) = checkpoint {
                self.store.checkpoint(parts)?;
            }
            Ok(())
        })
    }

    fn topics(&self) -> Vec<String> {
        let mut t = self.config.topics.clone();
        t.push(dead_letter::replay_topic(&self.name));
        t
    }

    /// Starts the partitions the group does not know yet (new topic partitions, the replay topic
    /// once it exists), durably.
    fn sync_topology(&self, broker: &Broker) {
        let append = {
            let mut st = self.lock();
            // Listed under the lock (memory only: the topic registry and the logs' offsets), so
            // that a topic deleted meanwhile cannot come back after its `Forget`.
            let mut present = Vec::new();
            for t in self.topics() {
                let Ok(topic) = broker.topic(&t) else { continue };
                for p in topic.partitions().iter() {
                    present.push(((topic.name.clone(), p.id), p.log.earliest_offset()));
                }
            }
            let append = st.add_partitions(&present, Now::system());
            self.wake_if(&mut st);
            append
        };
        if let Some(a) = append
            && let Err(e) = self.commit(a)
        {
            tracing::error!(group = %self.name, error = %e, "recording new partitions failed");
        }
    }

    pub fn topology_changed(&self) {
        // The timer task picks this up; wake pollers so they see new partitions promptly.
        self.notify.notify_waiters();
    }

    pub fn forget_topic(&self, topic: &str) {
        let append = {
            let mut st = self.lock();
            let a = st.forget_topic(topic, Now::system());
            self.wake_if(&mut st);
            a
        };
        if let Err(e) = self.commit(append) {
            tracing::error!(group = %self.name, error = %e, "recording a deleted topic failed");
        }
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
        let id: Arc<str> = member.id.unwrap_or_else(|| format!("member-{:016x}", rand::random::<u64>())).into();
        let mut st = self.lock();
        st.join(id.clone(), member.max_in_flight, broker.inner.config.members_per_group_max, Now::system())?;
        self.wake_if(&mut st);
        Ok(Member { broker: broker.clone(), group: self.clone(), id })
    }

    fn leave(&self, member: &str) {
        let mut st = self.lock();
        st.leave(member, Now::system());
        self.wake_if(&mut st);
    }

    /// Hands out up to `max` events to `member`; their attempts are durable before this returns.
    /// A partition that cannot be read does not stop the others: its error is returned only
    /// when nothing else could be delivered.
    fn deliver(&self, broker: &Broker, member: &Arc<str>, max: usize) -> Result<Vec<Delivery>> {
        let now = Now::system();
        let plans = self.lock().reads_for(member, now, |tp| latest_of(broker, tp))?;
        let mut fills = Vec::with_capacity(plans.len());
        let mut failure = None;
        for plan in plans {
            let read = broker
                .partition(&plan.tp.0, plan.tp.1)
                .and_then(|p| p.read(plan.from, READ_AHEAD_BYTES, plan.max_events));
            match read {
                Ok(events) => fills.push((plan, Fill::Events(events))),
                Err(BrokerError::Log(herald_log::LogError::OffsetBelowEarliest { earliest, .. })) => {
                    fills.push((plan, Fill::Overtaken { earliest }))
                }
                // Deleted meanwhile: the group forgets it.
                Err(BrokerError::TopicNotFound { .. } | BrokerError::PartitionNotFound { .. }) => {}
                Err(e) => {
                    tracing::error!(group = %self.name, topic = %plan.tp.0, partition = plan.tp.1, offset = plan.from,
                        error = %e, "reading a partition failed; delivering from the others");
                    failure.get_or_insert(e);
                }
            }
        }
        let poll = {
            let mut st = self.lock();
            for (plan, fill) in fills {
                st.fill(&plan, fill);
            }
            let poll = st.poll(member, max, now);
            self.wake_if(&mut st);
            poll?
        };
        if let Some(append) = poll.append
            && let Err(e) = self.commit(append)
        {
            // The member never sees them: they wait for redelivery.
            let mut st = self.lock();
            st.abandon(member, &poll.deliveries, Now::system());
            self.wake_if(&mut st);
            return Err(e);
        }
        self.history.delivered(member, &poll.deliveries);
        if herald_telemetry::enabled() {
            for d in &poll.deliveries {
                let s = &d.stored;
                herald_telemetry::Spans::deliver(
                    &s.topic,
                    &s.event,
                    s.partition,
                    s.offset,
                    &self.name,
                    member,
                    d.attempt,
                );
            }
        }
        match failure {
            Some(e) if poll.deliveries.is_empty() => Err(e),
            _ => Ok(poll.deliveries),
        }
    }

    fn settle_with<T>(&self, f: impl FnOnce(&mut GroupState, Now) -> T) -> T {
        let mut st = self.lock();
        let r = f(&mut st, Now::system());
        self.wake_if(&mut st);
        r
    }

    /// Runs one tick of the group's clock: new partitions, session and ack timeouts, and the
    /// store flush when due. Blocking: run it off the async workers.
    fn tick(&self, broker: &Broker, flush_due: bool) -> bool {
        self.sync_topology(broker);
        let (expired, pending) = {
            let mut st = self.lock();
            let e = st.expire(Now::system());
            self.wake_if(&mut st);
            (e, st.pending())
        };
        for m in &expired.members {
            tracing::warn!(group = %self.name, member = %m, "member missed its session timeout: removed");
        }
        for d in &expired.deliveries {
            tracing::info!(group = %self.name, topic = %d.topic, partition = d.partition, offset = d.offset,
                attempt = d.attempt, "ack timeout: redelivering");
        }
        self.history.timed_out(&expired.deliveries);
        if let Err(e) = self.history.write() {
            tracing::warn!(group = %self.name, error = %e, "writing the event history failed");
        }
        if flush_due || pending >= COMMIT_EVENTS_MAX {
            if let Err(e) = self.flush() {
                tracing::error!(group = %self.name, error = %e, "flushing group positions failed");
            }
            return true;
        }
        false
    }

    /// Writes acks and failures to the store, and a checkpoint now and then.
    fn flush(&self) -> Result<()> {
        let append = self.lock().take_flush();
        match append {
            Some(a) => self.commit(a),
            None => Ok(()),
        }
    }

    pub fn close(&self) -> Result<()> {
        self.closed.store(true, AtomicOrdering::Release);
        self.lock().close();
        self.flush()?;
        // A flush the timer took just before this close may still be on its way to the store
        // (its records left the state when it took them): the store closes in turn, after every
        // append handed out before, or those acks would be lost. (Was a bug: a group's positions
        // reverted after a close that raced its timer's flush.)
        let barrier = self.lock().barrier();
        self.sequencer.run(barrier, || self.store.close())?;
        self.history.close()
    }

    /// Moves every partition's position to `to`, forgetting attempts and pending retries;
    /// refused while the group has members. Durable before it returns.
    pub(crate) fn reset(&self, broker: &Broker, to: StartFrom) -> Result<()> {
        self.sync_topology(broker);
        let tps: Vec<Tp> = {
            let st = self.lock();
            st.check_idle()?;
            st.partitions().cloned().collect()
        };
        let mut cps = Vec::with_capacity(tps.len());
        for (t, p) in tps {
            let committed = start_offset(broker, &t, p, to)?;
            cps.push(PartCheckpoint { topic: t.to_string(), partition: p, committed, attempts: vec![], done: vec![] });
        }
        let append = {
            let mut st = self.lock();
            let a = st.reset(cps, Now::system())?;
            self.wake_if(&mut st);
            a
        };
        self.commit(append)
    }

    /// Why the group's state log accepts no appends, if it does not.
    pub(crate) fn store_fenced(&self) -> Option<(String, bool)> {
        self.store.fenced()
    }

    /// Makes the state log writable again after a full disk, if there is space now.
    pub(crate) fn store_try_unfence(&self) -> Result<bool> {
        let unfenced = self.store.try_unfence()?;
        if unfenced {
            tracing::info!(group = %self.name, "the group's state log accepts appends again");
        }
        Ok(unfenced)
    }

    pub fn info(&self, broker: &Broker) -> GroupInfo {
        let st = self.lock();
        GroupInfo {
            name: self.name.clone(),
            config: self.config.clone(),
            generation: st.generation(),
            members: st.members().map(|m| m.to_string()).collect(),
            partitions: st.info(|tp| latest_of(broker, tp)),
        }
    }

    fn next_due(&self, member: &str) -> Option<Instant> {
        self.lock().next_due(member)
    }
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
        let flush_due = last_flush.elapsed() >= Duration::from_millis(COMMIT_INTERVAL_MS);
        let (g2, b2) = (g.clone(), broker.clone());
        match tokio::task::spawn_blocking(move || g2.tick(&b2, flush_due)).await {
            Ok(true) => last_flush = Instant::now(),
            Ok(false) => {}
            Err(e) => tracing::error!(group = %g.name, error = %e, "group tick failed"),
        }
        if let Err(e) = g.flush_dead_letters(&broker).await {
            tracing::warn!(group = %g.name, error = %e, "writing dead letters failed; will retry");
        }
    }
}

fn micros(d: Option<Duration>) -> Option<u64> {
    d.map(|d| d.as_micros().min(u128::from(u64::MAX)) as u64)
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

    /// The group's settings: the ones in effect for every member, whatever a member asked for.
    pub fn settings(&self) -> &GroupConfig {
        &self.group.config
    }

    /// Waits up to `wait` for events of this member's partitions and returns up to `max` of them
    /// (fewer if its in-flight budget is used up). Also serves as a heartbeat.
    pub async fn poll(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let deadline = Instant::now().checked_add(wait.min(state::DELAY_MAX)).unwrap_or_else(Instant::now);
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
            // The next retry of this member's partitions, but not sooner than a tick: a retry that
            // is due yet cannot go (its key in flight, the budget used) must not spin the loop.
            let soonest = Instant::now() + TICK;
            let wake = self.group.next_due(&self.id).map_or(deadline, |d| d.max(soonest).min(deadline));
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }

    /// Acknowledges a delivery: the group's position may move past it.
    pub fn ack(&self, d: &Delivery) -> Result<()> {
        self.ack_id(&d.id(), None)
    }

    /// [`Member::ack`] by id; `handled` is how long the handler ran, when the consumer says
    /// (kept in the event's history).
    pub fn ack_id(&self, d: &DeliveryId, handled: Option<Duration>) -> Result<()> {
        // Recorded under the group's lock (memory only), so that it precedes the next delivery.
        let history = &self.group.history;
        self.group.settle_with(|st, now| {
            st.ack(&self.id, d, now)?;
            history.settled(&self.id, Settled::Ack, [(d, micros(handled))], None, None);
            Ok(())
        })
    }

    /// Acknowledges many deliveries at once (one lock for all); one result per delivery, in order.
    /// `handled[i]`, when present, is how long the handler of `ids[i]` ran.
    pub fn ack_many(&self, ids: &[DeliveryId], handled: &[Option<Duration>]) -> Vec<Result<()>> {
        let history = &self.group.history;
        self.group.settle_with(|st, now| {
            let results = st.ack_many(&self.id, ids, now);
            let acked = ids
                .iter()
                .enumerate()
                .filter(|(i, _)| results[*i].is_ok())
                .map(|(i, id)| (id, micros(handled.get(i).copied().flatten())));
            history.settled(&self.id, Settled::Ack, acked, None, None);
            results
        })
    }

    /// Acknowledges every delivery this member holds of `through`'s partition at or below its
    /// offset (a cumulative ack); returns how many.
    pub fn ack_through(&self, through: &DeliveryId) -> Result<usize> {
        let history = &self.group.history;
        self.group.settle_with(|st, now| {
            let acked = st.ack_through(&self.id, through, now)?;
            history.settled(&self.id, Settled::Ack, acked.iter().map(|d| (d, None)), None, None);
            Ok(acked.len())
        })
    }

    /// A failed attempt: redeliver after `delay`, or after the group's backoff when `None`;
    /// dead-lettered instead when the group's attempts are used up.
    pub fn nack(&self, d: &Delivery, delay: Option<Duration>, reason: &str) -> Result<()> {
        self.nack_id(&d.id(), delay, reason, None)
    }

    /// [`Member::nack`] by id; `handled` as for [`Member::ack_id`].
    pub fn nack_id(
        &self,
        d: &DeliveryId,
        delay: Option<Duration>,
        reason: &str,
        handled: Option<Duration>,
    ) -> Result<()> {
        let (history, delay_ms) = (&self.group.history, delay.map(|d| d.as_millis() as u64));
        self.group.settle_with(|st, now| {
            st.nack(&self.id, d, delay, reason, now)?;
            history.settled(&self.id, Settled::Nack, [(d, micros(handled))], Some(reason), delay_ms);
            Ok(())
        })
    }

    /// A permanent failure: the event goes to the group's DLQ at once.
    pub async fn reject(&self, d: &Delivery, reason: &str) -> Result<()> {
        self.reject_id(&d.id(), reason, None).await
    }

    /// [`Member::reject`] by id; `handled` as for [`Member::ack_id`].
    pub async fn reject_id(&self, d: &DeliveryId, reason: &str, handled: Option<Duration>) -> Result<()> {
        let history = &self.group.history;
        self.group.settle_with(|st, now| {
            st.reject(&self.id, d, reason, now)?;
            history.settled(&self.id, Settled::Reject, [(d, micros(handled))], Some(reason), None);
            Ok::<(), BrokerError>(())
        })?;
        self.group.flush_dead_letters(&self.broker).await
    }

    /// Deliveries this member holds unsettled.
    pub fn in_flight(&self) -> usize {
        self.group.lock().member_in_flight(&self.id)
    }

    /// Keeps the session alive without polling.
    pub fn heartbeat(&self) -> Result<()> {
        self.group.settle_with(|st, now| st.heartbeat(&self.id, now))
    }

    /// The partitions this member owns now.
    pub fn assignment(&self) -> Vec<(String, u32)> {
        self.group.lock().assignment(&self.id)
    }

    /// The group's current generation.
    pub fn generation(&self) -> u64 {
        self.group.lock().generation()
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
