//! A consumer group's delivery state as a pure state machine: membership, assignment with
//! generations, per-partition positions, read-ahead buffers, in-flight deliveries, retries,
//! pending dead letters and attempt counts.
//!
//! Every function here is a function of the state, its inputs and an injected clock ([`Now`])
//! and randomness (the state's seeded RNG); none does I/O or takes a lock. What must happen
//! outside — records to append to the group's store, events to read, dead letters to write — is
//! returned to the shell (`group/mod.rs`), which performs it outside the group's lock. Store
//! appends carry a [`Ticket`] taken here, so they reach the store in the order their state
//! changes were made.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_core::Event;
use herald_model::{DeliveryId, GroupConfig, GroupPartitionInfo, OrderingMode, RetryPolicy};
use rand::rngs::StdRng;

use super::pick::pick;
use crate::error::{BrokerError, Result};
use crate::partition::StoredEvent;
use crate::store::{PartCheckpoint, StateRecord};

/// Longest nack delay honoured (one year); longer ones are cut to it.
pub(crate) const DELAY_MAX: Duration = Duration::from_secs(365 * 24 * 3600);
/// Events fetched ahead of delivery per partition.
pub(crate) const READ_AHEAD_EVENTS: usize = 1024;
/// Records between checkpoints of the group's store.
const CHECKPOINT_EVERY_RECORDS: usize = 10_000;

pub(crate) type Tp = (Arc<str>, u32);

/// The clock, injected: a monotonic instant for deadlines and the wall clock for what is recorded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Now {
    pub mono: Instant,
    pub wall_ms: i64,
}

impl Now {
    pub fn system() -> Now {
        Now { mono: Instant::now(), wall_ms: crate::broker::now_ms() }
    }

    fn after(self, d: Duration) -> Instant {
        // A delay too large for the clock means "as late as possible", not a panic.
        self.mono.checked_add(d.min(DELAY_MAX)).unwrap_or(self.mono)
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

/// The place of a batch of store records in the order of state changes.
#[must_use = "every ticket must be passed to the store, or the appends after it wait forever"]
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Ticket(pub u64);

/// Store records to append, in their place.
#[must_use]
pub(crate) struct Append {
    pub ticket: Ticket,
    pub records: Vec<StateRecord>,
    /// A checkpoint to write after the records (and compact the store to).
    pub checkpoint: Option<Vec<PartCheckpoint>>,
}

pub(crate) struct InFlight {
    pub member: Arc<str>,
    pub generation: u64,
    pub attempt: u32,
    pub deadline: Instant,
    pub event: StoredEvent,
}

pub(crate) struct Waiting {
    pub event: StoredEvent,
    pub due: Instant,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Failures {
    pub first_ms: i64,
    pub last_ms: i64,
    pub reason: String,
}

/// An event on its way to the DLQ; it keeps blocking its key until written.
pub(crate) struct Dead {
    pub event: StoredEvent,
    pub attempts: u32,
    pub failures: Failures,
    pub writing: bool,
}

/// A dead letter handed to the shell for writing.
pub(crate) struct Outgoing {
    pub topic: Arc<str>,
    pub partition: u32,
    pub offset: u64,
    pub event: Event,
    pub attempts: u32,
    pub failures: Failures,
}

pub(crate) struct PartState {
    pub owner: Option<Arc<str>>,
    pub assigned_generation: u64,
    pub committed: u64,
    pub fetched: u64,
    pub buffer: VecDeque<StoredEvent>,
    pub retry: BTreeMap<u64, Waiting>,
    pub in_flight: HashMap<u64, InFlight>,
    pub dead: BTreeMap<u64, Dead>,
    pub done: BTreeSet<u64>,
    /// Delivery count per offset at or above `committed`.
    pub attempts: HashMap<u64, u32>,
    pub failures: HashMap<u64, Failures>,
    pub overtaken: Option<(u64, u64)>,
    /// Offsets acked or dead-lettered since the last flush to the store.
    pub settled: Vec<u64>,
}

impl PartState {
    pub fn new(committed: u64) -> Self {
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
        debug_assert!(self.done.first().is_none_or(|d| *d > self.committed), "done offsets stay above the position");
    }

    /// Whether the event at `offset` is somewhere in the pipeline (buffered, in flight, waiting
    /// for a retry or on its way to the DLQ).
    fn holds(&self, offset: u64) -> bool {
        self.in_flight.contains_key(&offset) || self.retry.contains_key(&offset) || self.dead.contains_key(&offset)
    }
}

pub(crate) struct MemberState {
    pub last_seen: Instant,
    pub max_in_flight: u32,
    pub in_flight: usize,
}

/// What a group's state machine needs of its settings.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub ordering: OrderingMode,
    pub blocking_retries: bool,
    pub ack_timeout: Duration,
    pub session_timeout: Duration,
    pub retry: RetryPolicy,
}

impl From<&GroupConfig> for Policy {
    fn from(c: &GroupConfig) -> Self {
        Policy {
            ordering: c.ordering,
            blocking_retries: c.blocking_retries,
            ack_timeout: Duration::from_millis(c.ack_timeout_ms),
            session_timeout: Duration::from_millis(c.session_timeout_ms),
            retry: c.retry,
        }
    }
}

/// A read the shell must do for the state: up to `max_events` from `from` of partition `tp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReadPlan {
    pub tp: Tp,
    pub from: u64,
    pub max_events: usize,
}

/// What a read brought.
pub(crate) enum Fill {
    Events(Vec<StoredEvent>),
    /// Retention deleted everything below `earliest`.
    Overtaken {
        earliest: u64,
    },
}

/// What a poll handed out, and the attempt records to make durable before the member sees it.
pub(crate) struct Poll {
    pub deliveries: Vec<Delivery>,
    pub append: Option<Append>,
}

/// What the clock expired.
#[derive(Default)]
pub(crate) struct Expired {
    pub members: Vec<Arc<str>>,
    pub deliveries: Vec<DeliveryId>,
}

pub(crate) struct GroupState {
    pub name: Arc<str>,
    policy: Policy,
    rng: StdRng,
    generation: u64,
    members: BTreeMap<Arc<str>, MemberState>,
    parts: BTreeMap<Tp, PartState>,
    /// Records not yet in the store (failures, skips), flushed with the acks.
    unflushed: Vec<StateRecord>,
    /// Acks and dead letters not yet in the store (their offsets wait in each `PartState`).
    settled_pending: usize,
    records_since_checkpoint: usize,
    next_ticket: u64,
    closed: bool,
    /// Pollers should look again (new assignment, settled events, due retries).
    wake: bool,
}

impl GroupState {
    pub fn new(
        name: &str,
        config: &GroupConfig,
        checkpoint: Vec<PartCheckpoint>,
        records_since_checkpoint: usize,
        rng: StdRng,
    ) -> GroupState {
        let mut parts = BTreeMap::new();
        for c in checkpoint {
            let mut st = PartState::new(c.committed);
            for (o, a) in c.attempts {
                st.attempts.insert(o, a);
            }
            for o in c.done {
                st.mark_done(o);
            }
            parts.insert((Arc::from(c.topic.as_str()), c.partition), st);
        }
        GroupState {
            name: name.into(),
            policy: Policy::from(config),
            rng,
            generation: 0,
            members: BTreeMap::new(),
            parts,
            unflushed: Vec::new(),
            settled_pending: 0,
            records_since_checkpoint,
            next_ticket: 0,
            closed: false,
            wake: false,
        }
    }

    fn ticket(&mut self) -> Ticket {
        let t = Ticket(self.next_ticket);
        self.next_ticket += 1;
        t
    }

    fn append(&mut self, records: Vec<StateRecord>) -> Append {
        self.records_since_checkpoint += records.len();
        Append { ticket: self.ticket(), records, checkpoint: None }
    }

    /// Whether pollers should be woken; clears the flag.
    pub fn take_wake(&mut self) -> bool {
        std::mem::take(&mut self.wake)
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn close(&mut self) {
        self.closed = true;
    }

    /// A ticket with nothing to append: running it waits for every append handed out before.
    pub fn barrier(&mut self) -> Ticket {
        self.ticket()
    }

    pub fn members(&self) -> impl Iterator<Item = &Arc<str>> {
        self.members.keys()
    }

    /// Deliveries `member` holds unsettled (0 for an unknown member).
    pub fn member_in_flight(&self, member: &str) -> usize {
        self.members.get(member).map_or(0, |m| m.in_flight)
    }

    /// Where the group reads `tp` next (past what it buffered or has in flight), if it reads it.
    pub fn read_position(&self, tp: &Tp) -> Option<u64> {
        self.parts.get(tp).map(|p| p.fetched)
    }

    pub fn partitions(&self) -> impl Iterator<Item = &Tp> {
        self.parts.keys()
    }

    fn unknown(&self, member: &str) -> BrokerError {
        BrokerError::UnknownMember { group: self.name.to_string(), member: member.to_owned() }
    }

    // ---- membership and assignment ----

    /// Adds a member (or refreshes one joining again under the same id, which keeps what it holds
    /// in flight: its limit counts across the rejoin) and rebalances.
    pub fn join(&mut self, id: Arc<str>, max_in_flight: u32, members_max: u32, now: Now) -> Result<()> {
        if self.closed {
            return Err(BrokerError::Closed);
        }
        if !self.members.contains_key(&id) && self.members.len() as u64 >= u64::from(members_max) {
            return Err(BrokerError::LimitExceeded {
                name: "members",
                value: self.members.len() as u64 + 1,
                limit: members_max.into(),
                key: "members_per_group_max",
            });
        }
        let held = self.members.get(&id).map_or(0, |m| m.in_flight);
        self.members.insert(id, MemberState { last_seen: now.mono, max_in_flight, in_flight: held });
        self.rebalance(now);
        Ok(())
    }

    /// Removes a member; its partitions are reassigned and its in-flight events redelivered.
    pub fn leave(&mut self, member: &str, now: Now) {
        if self.members.remove(member).is_some() {
            self.rebalance(now);
        }
    }

    pub fn heartbeat(&mut self, member: &str, now: Now) -> Result<()> {
        let Some(m) = self.members.get_mut(member) else { return Err(self.unknown(member)) };
        m.last_seen = now.mono;
        Ok(())
    }

    /// The partitions `member` owns.
    pub fn assignment(&self, member: &str) -> Vec<(String, u32)> {
        self.parts
            .iter()
            .filter(|(_, p)| p.owner.as_deref() == Some(member))
            .map(|((t, p), _)| (t.to_string(), *p))
            .collect()
    }

    /// Starts the partitions in `present` (with their earliest offsets) the group does not know
    /// yet: new topic partitions, the replay topic once it exists. They are read from the
    /// earliest offset, so nothing published to them is skipped.
    pub fn add_partitions(&mut self, present: &[(Tp, u64)], now: Now) -> Option<Append> {
        let mut started = Vec::new();
        for (tp, earliest) in present {
            if let std::collections::btree_map::Entry::Vacant(slot) = self.parts.entry(tp.clone()) {
                slot.insert(PartState::new(*earliest));
                started.push(StateRecord::Start { topic: tp.0.to_string(), partition: tp.1, committed: *earliest });
            }
        }
        if started.is_empty() {
            return None;
        }
        self.rebalance(now);
        Some(self.append(started))
    }

    /// Forgets a deleted topic: what members hold of it will never be acked, so they get their
    /// budget back. The `Forget` record must land before the `Start` of a topic created again
    /// under this name, which is then read from its beginning.
    pub fn forget_topic(&mut self, topic: &str, now: Now) -> Append {
        let held: Vec<Arc<str>> = self
            .parts
            .iter()
            .filter(|((t, _), _)| &**t == topic)
            .flat_map(|(_, p)| p.in_flight.values().map(|f| f.member.clone()))
            .collect();
        for m in held {
            self.release(&m, 1);
        }
        self.parts.retain(|(t, _), _| &**t != topic);
        self.rebalance(now);
        self.append(vec![StateRecord::Forget { topic: topic.to_owned() }])
    }

    /// Gives a member back `n` of its in-flight budget.
    fn release(&mut self, member: &str, n: usize) {
        if let Some(m) = self.members.get_mut(member) {
            debug_assert!(m.in_flight >= n, "member {member} releases {n} but holds {}", m.in_flight);
            m.in_flight = m.in_flight.saturating_sub(n);
        }
    }

    /// Assigns partitions evenly and stickily; bumps the generation. What a partition's old owner
    /// had in flight goes back for redelivery to the new one.
    fn rebalance(&mut self, now: Now) {
        self.generation += 1;
        let generation = self.generation;
        let members: Vec<Arc<str>> = self.members.keys().cloned().collect();
        let n_parts = self.parts.len();
        let mut load: HashMap<Arc<str>, usize> = members.iter().map(|m| (m.clone(), 0)).collect();
        let cap = if members.is_empty() { 0 } else { n_parts.div_ceil(members.len()) };
        // Keep owners that are still members and under the cap.
        let mut unowned = Vec::new();
        for (tp, p) in self.parts.iter_mut() {
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
            let p = self.parts.get_mut(&tp).expect("part exists");
            p.owner = owner;
            p.assigned_generation = generation;
            let moved: Vec<(u64, InFlight)> = p.in_flight.drain().collect();
            for (offset, f) in moved {
                p.retry.insert(offset, Waiting { event: f.event, due: now.mono });
                if let Some(m) = self.members.get_mut(&f.member) {
                    debug_assert!(m.in_flight > 0, "member {} had events in flight it did not count", f.member);
                    m.in_flight = m.in_flight.saturating_sub(1);
                }
            }
        }
        tracing::info!(group = %self.name, generation, members = members.len(), partitions = n_parts, "rebalanced");
        self.wake = true;
    }

    // ---- delivery ----

    /// Reads `member` needs before a poll: partitions it owns whose read-ahead runs low and that
    /// have more stored (`latest` gives a partition's latest offset, or `None` if it is gone).
    /// Also a heartbeat.
    pub fn reads_for(&mut self, member: &str, now: Now, latest: impl Fn(&Tp) -> Option<u64>) -> Result<Vec<ReadPlan>> {
        let Some(m) = self.members.get_mut(member) else { return Err(self.unknown(member)) };
        m.last_seen = now.mono;
        let mut plans = Vec::new();
        for (tp, p) in &self.parts {
            if p.owner.as_deref() != Some(member) || p.buffer.len() >= READ_AHEAD_EVENTS / 2 {
                continue;
            }
            if latest(tp).is_some_and(|l| p.fetched < l) {
                plans.push(ReadPlan {
                    tp: tp.clone(),
                    from: p.fetched,
                    max_events: READ_AHEAD_EVENTS - p.buffer.len(),
                });
            }
        }
        Ok(plans)
    }

    /// Takes in what a read brought. A read made for a position the partition has moved from
    /// meanwhile (another poll filled it, a rebalance, a reset) is dropped.
    pub fn fill(&mut self, plan: &ReadPlan, fill: Fill) {
        let Some(p) = self.parts.get_mut(&plan.tp) else { return };
        if p.fetched != plan.from {
            return;
        }
        match fill {
            Fill::Events(events) => {
                for e in events {
                    debug_assert!(e.offset >= p.fetched, "reads move forward");
                    p.fetched = e.offset + 1;
                    if !p.done.contains(&e.offset) && e.offset >= p.committed && !p.holds(e.offset) {
                        p.buffer.push_back(e);
                    }
                }
            }
            Fill::Overtaken { earliest } => {
                tracing::error!(group = %self.name, topic = %plan.tp.0, partition = plan.tp.1, position = plan.from, earliest,
                    "retention deleted events this group had not consumed");
                p.overtaken = Some((plan.from, earliest));
                p.skip_to(earliest);
                self.unflushed.push(StateRecord::Skip {
                    topic: plan.tp.0.to_string(),
                    partition: plan.tp.1,
                    committed: earliest,
                });
            }
        }
    }

    /// Hands out up to `max` events to `member` within its in-flight budget. The attempt records
    /// returned must be durable before the member sees the deliveries.
    pub fn poll(&mut self, member: &Arc<str>, max: usize, now: Now) -> Result<Poll> {
        let generation = self.generation;
        let Some(m) = self.members.get_mut(member) else { return Err(self.unknown(member)) };
        m.last_seen = now.mono;
        let mut budget = (m.max_in_flight as usize).saturating_sub(m.in_flight).min(max);
        let owned: Vec<Tp> =
            self.parts.iter().filter(|(_, p)| p.owner.as_ref() == Some(member)).map(|(tp, _)| tp.clone()).collect();
        // A retention jump is reported before anything is picked, so that no event is taken
        // into flight by a poll that then returns an error.
        for tp in &owned {
            let p = self.parts.get_mut(tp).expect("owned part exists");
            if let Some((position, earliest)) = p.overtaken.take() {
                return Err(BrokerError::RetentionOvertook {
                    group: self.name.to_string(),
                    topic: tp.0.to_string(),
                    partition: tp.1,
                    position,
                    earliest,
                    lost: earliest - position,
                });
            }
        }
        let mut out = Vec::new();
        let mut records = Vec::new();
        for tp in owned {
            if budget == 0 {
                break;
            }
            let p = self.parts.get_mut(&tp).expect("owned part exists");
            let picked = pick(self.policy.ordering, self.policy.blocking_retries, p, now.mono, budget);
            if picked.is_empty() {
                continue;
            }
            let mut recs = Vec::with_capacity(picked.len());
            for event in picked {
                let attempt = p.attempts.get(&event.offset).copied().unwrap_or(0) + 1;
                p.attempts.insert(event.offset, attempt);
                recs.push((event.offset, attempt));
                let deadline = now.after(self.policy.ack_timeout);
                let f = InFlight { member: member.clone(), generation, attempt, deadline, event: event.clone() };
                let previous = p.in_flight.insert(event.offset, f);
                debug_assert!(previous.is_none(), "{}/{}@{} picked while in flight", tp.0, tp.1, event.offset);
                out.push(Delivery { stored: event, attempt, generation });
            }
            budget -= recs.len();
            records.push(StateRecord::Delivered { topic: tp.0.to_string(), partition: tp.1, offsets: recs });
        }
        let m = self.members.get_mut(member).expect("checked above");
        m.in_flight += out.len();
        debug_assert!(
            out.is_empty() || m.in_flight <= m.max_in_flight as usize,
            "member {member} given events over its in-flight limit"
        );
        let append = (!records.is_empty()).then(|| self.append(records));
        Ok(Poll { deliveries: out, append })
    }

    /// Takes back deliveries whose attempt records could not be stored: the member never saw
    /// them, so they wait for redelivery at once (their attempt stays counted in memory).
    pub fn abandon(&mut self, member: &str, deliveries: &[Delivery], now: Now) {
        let mut released = 0;
        for d in deliveries {
            let Some(p) = self.parts.get_mut(&(d.stored.topic.clone(), d.stored.partition)) else { continue };
            // Only this very delivery: a rebalance may have handed the event to another member
            // meanwhile, whose delivery is not ours to take back.
            let ours = p
                .in_flight
                .get(&d.stored.offset)
                .is_some_and(|f| &*f.member == member && f.attempt == d.attempt && f.generation == d.generation);
            if ours && let Some(f) = p.in_flight.remove(&d.stored.offset) {
                p.retry.insert(d.stored.offset, Waiting { event: f.event, due: now.mono });
                released += 1;
            }
        }
        self.release(member, released);
        self.wake = true;
    }

    /// Checks that `member` may settle `d` and takes it out of flight.
    fn settle(&mut self, member: &str, d: &DeliveryId, now: Now) -> Result<InFlight> {
        let current = self.generation;
        let name = self.name.clone();
        let Some(m) = self.members.get_mut(member) else { return Err(self.unknown(member)) };
        m.last_seen = now.mono;
        let not_in_flight = || BrokerError::NotInFlight {
            group: name.to_string(),
            member: member.to_owned(),
            topic: d.topic.to_string(),
            partition: d.partition,
            offset: d.offset,
        };
        let Some(p) = self.parts.get_mut(&(d.topic.clone(), d.partition)) else { return Err(not_in_flight()) };
        if d.generation < p.assigned_generation || p.owner.as_deref() != Some(member) {
            return Err(BrokerError::StaleGeneration {
                group: name.to_string(),
                member: member.to_owned(),
                generation: d.generation,
                current,
            });
        }
        match p.in_flight.get(&d.offset) {
            Some(f) if &*f.member == member && f.generation == d.generation && f.attempt == d.attempt => {}
            _ => return Err(not_in_flight()),
        }
        let f = p.in_flight.remove(&d.offset).expect("checked");
        self.release(member, 1);
        Ok(f)
    }

    /// Acknowledges a delivery: the position may move past it.
    pub fn ack(&mut self, member: &str, d: &DeliveryId, now: Now) -> Result<()> {
        self.settle(member, d, now)?;
        let p = self.parts.get_mut(&(d.topic.clone(), d.partition)).expect("settled");
        p.mark_done(d.offset);
        p.settled.push(d.offset);
        self.settled_pending += 1;
        self.wake = true;
        Ok(())
    }

    /// Acknowledges many deliveries under one call; one result per delivery.
    pub fn ack_many(&mut self, member: &str, ids: &[DeliveryId], now: Now) -> Vec<Result<()>> {
        ids.iter().map(|d| self.ack(member, d, now)).collect()
    }

    /// A cumulative ack: acknowledges every delivery `member` holds of `through`'s partition at or
    /// below `through.offset` (Kafka-style), refused as stale when the partition was reassigned
    /// since `through.generation`. Returns what was acked.
    pub fn ack_through(&mut self, member: &str, through: &DeliveryId, now: Now) -> Result<Vec<DeliveryId>> {
        let current = self.generation;
        let Some(m) = self.members.get_mut(member) else { return Err(self.unknown(member)) };
        m.last_seen = now.mono;
        let tp = (through.topic.clone(), through.partition);
        let stale = || BrokerError::StaleGeneration {
            group: self.name.to_string(),
            member: member.to_owned(),
            generation: through.generation,
            current,
        };
        let Some(p) = self.parts.get(&tp) else { return Err(stale()) };
        if through.generation < p.assigned_generation || p.owner.as_deref() != Some(member) {
            return Err(stale());
        }
        let ids: Vec<DeliveryId> = p
            .in_flight
            .iter()
            .filter(|(o, f)| **o <= through.offset && &*f.member == member)
            .map(|(o, f)| DeliveryId {
                topic: tp.0.clone(),
                partition: tp.1,
                offset: *o,
                generation: f.generation,
                attempt: f.attempt,
            })
            .collect();
        for d in &ids {
            self.ack(member, d, now)?;
        }
        Ok(ids)
    }

    /// A failed attempt: retry after `delay` (or the policy's backoff), or dead-letter when the
    /// attempts are spent.
    pub fn nack(
        &mut self,
        member: &str,
        d: &DeliveryId,
        delay: Option<Duration>,
        reason: &str,
        now: Now,
    ) -> Result<()> {
        let f = self.settle(member, d, now)?;
        self.fail(f, delay, reason, false, now);
        Ok(())
    }

    /// A permanent failure: to the DLQ at once.
    pub fn reject(&mut self, member: &str, d: &DeliveryId, reason: &str, now: Now) -> Result<()> {
        let f = self.settle(member, d, now)?;
        self.fail(f, None, reason, true, now);
        Ok(())
    }

    fn fail(&mut self, f: InFlight, delay: Option<Duration>, reason: &str, permanent: bool, now: Now) {
        let (topic, partition, offset) = (f.event.topic.clone(), f.event.partition, f.event.offset);
        let p = self.parts.get_mut(&(topic.clone(), partition)).expect("part exists");
        let fl = p.failures.entry(offset).or_insert_with(|| Failures { first_ms: now.wall_ms, ..Default::default() });
        fl.last_ms = now.wall_ms;
        fl.reason = reason.to_owned();
        let failures = fl.clone();
        if permanent || self.policy.retry.exhausted(f.attempt) {
            p.dead.insert(offset, Dead { event: f.event, attempts: f.attempt, failures, writing: false });
        } else {
            let delay = delay.unwrap_or_else(|| self.policy.retry.backoff_with(f.attempt, &mut self.rng));
            p.retry.insert(offset, Waiting { event: f.event, due: now.after(delay) });
        }
        self.unflushed.push(StateRecord::Failed {
            topic: topic.to_string(),
            partition,
            offset,
            reason: reason.to_owned(),
            at_ms: now.wall_ms,
        });
        self.wake = true;
    }

    /// Removes members past their session timeout and fails deliveries past their ack deadline.
    pub fn expire(&mut self, now: Now) -> Expired {
        let session = self.policy.session_timeout;
        let mut expired = Expired { members: Vec::new(), deliveries: Vec::new() };
        expired.members = self
            .members
            .iter()
            .filter(|(_, m)| now.mono.saturating_duration_since(m.last_seen) > session)
            .map(|(k, _)| k.clone())
            .collect();
        if !expired.members.is_empty() {
            for m in &expired.members {
                self.members.remove(m);
            }
            self.rebalance(now);
        }
        let mut late = Vec::new();
        for p in self.parts.values_mut() {
            let offsets: Vec<u64> =
                p.in_flight.iter().filter(|(_, f)| f.deadline <= now.mono).map(|(o, _)| *o).collect();
            for o in offsets {
                late.push(p.in_flight.remove(&o).expect("present"));
            }
        }
        for f in late {
            self.release(&f.member.clone(), 1);
            expired.deliveries.push(DeliveryId {
                topic: f.event.topic.clone(),
                partition: f.event.partition,
                offset: f.event.offset,
                generation: f.generation,
                attempt: f.attempt,
            });
            self.fail(f, None, "ack timeout", false, now);
        }
        if self.parts.values().any(|p| p.retry.values().any(|w| w.due <= now.mono)) {
            self.wake = true;
        }
        expired
    }

    /// When the next retry of `member`'s partitions falls due.
    pub fn next_due(&self, member: &str) -> Option<Instant> {
        self.parts
            .values()
            .filter(|p| p.owner.as_deref() == Some(member))
            .flat_map(|p| p.retry.values().map(|w| w.due))
            .min()
    }

    // ---- dead letters ----

    /// Dead letters not being written yet; they are marked as being written.
    pub fn take_dead_letters(&mut self) -> Vec<Outgoing> {
        let mut batch = Vec::new();
        for ((topic, partition), p) in self.parts.iter_mut() {
            for (offset, d) in p.dead.iter_mut() {
                if !d.writing {
                    d.writing = true;
                    batch.push(Outgoing {
                        topic: topic.clone(),
                        partition: *partition,
                        offset: *offset,
                        event: d.event.event.clone(),
                        attempts: d.attempts,
                        failures: d.failures.clone(),
                    });
                }
            }
        }
        batch
    }

    /// The outcome of writing `batch`: written letters are settled, failed ones wait for the next
    /// try.
    pub fn dead_letters_written(&mut self, batch: &[Outgoing], ok: bool) {
        for o in batch {
            let Some(p) = self.parts.get_mut(&(o.topic.clone(), o.partition)) else { continue };
            if ok {
                if p.dead.remove(&o.offset).is_some() {
                    p.mark_done(o.offset);
                    p.settled.push(o.offset);
                    self.settled_pending += 1;
                }
            } else if let Some(d) = p.dead.get_mut(&o.offset) {
                d.writing = false;
            }
        }
        self.wake = true;
    }

    // ---- durability ----

    /// Records waiting for the store.
    pub fn pending(&self) -> usize {
        self.unflushed.len() + self.settled_pending
    }

    /// Acks and failures for the store, and now and then a checkpoint. Acks are many; what
    /// recovery needs is each partition's position plus the offsets settled above it (out of
    /// order). So per partition: one `Skip` to the position and one `Done` with the rest.
    pub fn take_flush(&mut self) -> Option<Append> {
        let mut records = std::mem::take(&mut self.unflushed);
        self.settled_pending = 0;
        for ((topic, partition), p) in self.parts.iter_mut() {
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
        let checkpoint_due = self.records_since_checkpoint + records.len() > CHECKPOINT_EVERY_RECORDS;
        if records.is_empty() && !checkpoint_due {
            return None;
        }
        let mut append = self.append(records);
        if checkpoint_due {
            self.records_since_checkpoint = 0;
            append.checkpoint = Some(self.checkpoint());
        }
        Some(append)
    }

    /// The whole durable state.
    pub fn checkpoint(&self) -> Vec<PartCheckpoint> {
        self.parts
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

    /// Moves every position beyond the end of its partition back to that end (the log lost its
    /// tail: a damaged or truncated active segment). Events published from there on must reach the
    /// group rather than be skipped as "already consumed". Returns each move `(partition, from,
    /// to)` and the checkpoint that makes them durable.
    pub fn clamp_to_ends(&mut self, latest: impl Fn(&Tp) -> Option<u64>) -> (Vec<(Tp, u64, u64)>, Option<Append>) {
        let mut moved = Vec::new();
        for (tp, p) in self.parts.iter_mut() {
            let Some(end) = latest(tp) else { continue };
            if p.committed > end {
                debug_assert!(p.in_flight.is_empty(), "clamped before any delivery");
                moved.push((tp.clone(), p.committed, end));
                *p = PartState::new(end);
            }
        }
        if moved.is_empty() {
            return (moved, None);
        }
        let mut append = self.append(Vec::new());
        self.records_since_checkpoint = 0;
        append.checkpoint = Some(self.checkpoint());
        (moved, Some(append))
    }

    /// Refuses while the group has members.
    pub fn check_idle(&self) -> Result<()> {
        if !self.members.is_empty() {
            return Err(BrokerError::GroupActive { group: self.name.to_string(), members: self.members.len() });
        }
        Ok(())
    }

    /// Moves every partition to the positions in `cps`, forgetting attempts and pending retries;
    /// refused while the group has members.
    pub fn reset(&mut self, cps: Vec<PartCheckpoint>, now: Now) -> Result<Append> {
        self.check_idle()?;
        // Only partitions the group still has: a topic deleted while the positions were worked
        // out must not come back.
        let cps: Vec<PartCheckpoint> =
            cps.into_iter().filter(|c| self.parts.contains_key(&(Arc::from(c.topic.as_str()), c.partition))).collect();
        for c in &cps {
            self.parts.insert((Arc::from(c.topic.as_str()), c.partition), PartState::new(c.committed));
        }
        self.unflushed.clear();
        self.settled_pending = 0;
        self.rebalance(now);
        Ok(self.append(vec![StateRecord::Checkpoint { parts: cps }]))
    }

    /// Whether the group may step over damage starting at `from` in `tp`: its position there is
    /// `from`, with nothing of the partition buffered or in flight.
    pub fn check_skip(&self, tp: &Tp, from: u64) -> Result<()> {
        let refused = |position: u64, why: String, in_flight: bool| BrokerError::SkipRefused {
            group: self.name.to_string(),
            topic: tp.0.to_string(),
            partition: tp.1,
            position,
            why,
            in_flight,
        };
        let Some(p) = self.parts.get(tp) else {
            return Err(refused(0, "the group does not read that partition".into(), false));
        };
        if p.committed != from || p.fetched > from || !p.in_flight.is_empty() {
            let why = format!(
                "events before the damage at {from} are still in flight or unsettled; settle them (or let their \
                 ack timeout pass) and try again"
            );
            return Err(refused(p.committed, why, true));
        }
        Ok(())
    }

    /// Steps over the damaged offsets `from..to` of `tp` (an operator's decision, taken after
    /// the evidence was stored as a dead letter), if [`GroupState::check_skip`] allows it. The
    /// returned record must be durable before the caller reports success.
    pub fn skip_damaged(&mut self, tp: &Tp, from: u64, to: u64) -> Result<Append> {
        self.check_skip(tp, from)?;
        let p = self.parts.get_mut(tp).expect("checked");
        p.skip_to(to);
        self.wake = true;
        Ok(self.append(vec![StateRecord::Skip { topic: tp.0.to_string(), partition: tp.1, committed: to }]))
    }

    /// Per-partition figures (`latest` gives a partition's latest offset).
    pub fn info(&self, latest: impl Fn(&Tp) -> Option<u64>) -> Vec<GroupPartitionInfo> {
        self.parts
            .iter()
            .map(|(tp, s)| {
                let latest = latest(tp).unwrap_or(s.committed);
                GroupPartitionInfo {
                    topic: tp.0.to_string(),
                    partition: tp.1,
                    owner: s.owner.as_ref().map(|o| o.to_string()),
                    committed: s.committed,
                    latest,
                    lag: latest.saturating_sub(s.committed),
                    in_flight: s.in_flight.len(),
                }
            })
            .collect()
    }

    /// Checks every invariant of the state; panics naming the first one broken.
    #[cfg(test)]
    pub fn check_invariants(&self) {
        let mut held: HashMap<&str, usize> = HashMap::new();
        for ((t, n), p) in &self.parts {
            for (o, f) in &p.in_flight {
                *held.entry(&*f.member).or_default() += 1;
                assert!(*o >= p.committed, "{t}/{n}@{o} in flight below the position {}", p.committed);
                assert!(!p.done.contains(o), "{t}/{n}@{o} in flight and done");
                assert!(!p.retry.contains_key(o) && !p.dead.contains_key(o), "{t}/{n}@{o} in flight twice");
                assert_eq!(p.attempts.get(o), Some(&f.attempt), "{t}/{n}@{o} attempt not counted");
                assert!(self.members.contains_key(&f.member), "{t}/{n}@{o} held by a departed member");
                assert_eq!(p.owner.as_ref(), Some(&f.member), "{t}/{n}@{o} held by a member that does not own it");
            }
            for o in p.retry.keys().chain(p.dead.keys()) {
                assert!(*o >= p.committed && !p.done.contains(o), "{t}/{n}@{o} pending below the position or done");
            }
            assert!(p.done.first().is_none_or(|d| *d > p.committed), "{t}/{n}: done offsets at or below the position");
            assert!(p.fetched >= p.committed, "{t}/{n}: read behind the position");
            for e in &p.buffer {
                assert!(
                    e.offset >= p.committed && e.offset < p.fetched,
                    "{t}/{n}@{}: buffered outside the read window",
                    e.offset
                );
                assert!(!p.holds(e.offset), "{t}/{n}@{} buffered and pending", e.offset);
            }
            if self.policy.ordering == OrderingMode::Key {
                let mut keys = std::collections::HashSet::new();
                for f in p.in_flight.values() {
                    if let Some(k) = f.event.event.key() {
                        assert!(keys.insert(k), "{t}/{n}: two events of key {k} in flight");
                    }
                }
            }
            if let Some(o) = &p.owner {
                assert!(self.members.contains_key(o), "{t}/{n} owned by a departed member");
            }
        }
        for (id, m) in &self.members {
            let h = held.get(&**id).copied().unwrap_or(0);
            assert_eq!(m.in_flight, h, "member {id} counts {} in flight but holds {h}", m.in_flight);
            // (A member that joined again under its id with a lower limit may hold more than the
            // new limit until it settles: polls then give it nothing; see `poll`.)
        }
    }

    /// A member's in-flight count and limit.
    #[cfg(test)]
    pub fn member_load(&self, member: &str) -> Option<(usize, u32)> {
        self.members.get(member).map(|m| (m.in_flight, m.max_in_flight))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_core::Event;
    use rand::SeedableRng;

    fn at(base: Instant, ms: u64) -> Now {
        Now { mono: base + Duration::from_millis(ms), wall_ms: ms as i64 }
    }

    fn group(partitions: u32, config: GroupConfig, now: Now) -> GroupState {
        let mut st = GroupState::new("g", &config, vec![], 0, StdRng::seed_from_u64(1));
        let present: Vec<(Tp, u64)> = (0..partitions).map(|p| ((Arc::from("t"), p), 0)).collect();
        let _ = st.add_partitions(&present, now);
        st
    }

    fn owners(st: &GroupState) -> Vec<String> {
        st.info(|_| Some(0)).into_iter().map(|p| p.owner.unwrap_or_else(|| "-".into())).collect()
    }

    /// Rebalancing, one row per membership change: assignment stays even (at most one apart) and
    /// sticky (a member keeps what it owned while under its share).
    #[test]
    fn rebalancing_is_even_and_sticky() {
        // (partitions, membership changes: +member / -member, owners after the last change)
        let cases: &[(u32, &[&str], &[&str])] = &[
            (4, &["+a"], &["a", "a", "a", "a"]),
            (4, &["+a", "+b"], &["a", "a", "b", "b"]),
            (4, &["+a", "+b", "-a"], &["b", "b", "b", "b"]),
            (4, &["+b", "+a", "-a", "+c"], &["b", "b", "c", "c"]),
            (5, &["+a", "+b"], &["a", "a", "a", "b", "b"]),
            (3, &["+a", "+b", "+c", "+d"], &["a", "c", "b"]),
            (2, &["+a", "-a"], &["-", "-"]),
        ];
        let base = Instant::now();
        for (partitions, changes, want) in cases {
            let mut st = group(*partitions, GroupConfig::for_topics(["t"]), at(base, 0));
            let before = st.generation();
            for c in *changes {
                let (op, m) = c.split_at(1);
                match op {
                    "+" => st.join(Arc::from(m), 10, 10, at(base, 0)).unwrap(),
                    _ => st.leave(m, at(base, 0)),
                }
            }
            assert_eq!(owners(&st), *want, "{partitions} partitions after {changes:?}");
            assert_eq!(st.generation(), before + changes.len() as u64, "every change is a new generation");
            st.check_invariants();
        }
    }

    fn stored(offset: u64, key: &str) -> StoredEvent {
        let event = Event::builder("t").key(key).build().unwrap();
        StoredEvent { event, topic: "t".into(), partition: 0, offset, append_time_ms: 0 }
    }

    /// Fills partition 0 with `n` events of distinct keys.
    fn fill(st: &mut GroupState, member: &str, n: u64, now: Now) {
        for plan in st.reads_for(member, now, |_| Some(n)).unwrap() {
            st.fill(&plan, Fill::Events((plan.from..n).map(|o| stored(o, &format!("k{o}"))).collect()));
        }
    }

    /// Ack timeouts and backoff on the injected clock: nothing sleeps.
    #[test]
    fn an_unacked_delivery_times_out_and_returns_after_the_backoff_with_its_next_attempt() {
        let retry = RetryPolicy {
            max_attempts: 2,
            backoff_base_ms: 100,
            backoff_factor: 2.0,
            backoff_max_ms: 1000,
            jitter: 0.0,
        };
        let config = GroupConfig { ack_timeout_ms: 50, retry, ..GroupConfig::for_topics(["t"]) };
        let base = Instant::now();
        let mut st = group(1, config, at(base, 0));
        let m: Arc<str> = Arc::from("m");
        st.join(m.clone(), 10, 10, at(base, 0)).unwrap();
        fill(&mut st, &m, 1, at(base, 0));
        let first = st.poll(&m, 10, at(base, 0)).unwrap();
        assert_eq!(first.deliveries.len(), 1);
        assert_eq!(first.deliveries[0].attempt, 1);
        // Before the deadline nothing happens; at it, the delivery fails.
        assert!(st.expire(at(base, 49)).deliveries.is_empty());
        assert_eq!(st.expire(at(base, 50)).deliveries.len(), 1);
        // Backoff 100 ms after the first failure: not before.
        assert!(st.poll(&m, 10, at(base, 149)).unwrap().deliveries.is_empty());
        assert_eq!(st.next_due("m"), Some(base + Duration::from_millis(150)));
        assert_eq!(st.next_due("someone else"), None);
        let second = st.poll(&m, 10, at(base, 150)).unwrap().deliveries;
        assert_eq!(second[0].attempt, 2);
        // Late ack of the first attempt: refused, it does not settle the redelivery.
        assert!(st.ack(&m, &first.deliveries[0].id(), at(base, 151)).is_err());
        // The second failure is the last: to the DLQ, not redelivered.
        assert_eq!(st.expire(at(base, 200)).deliveries.len(), 1);
        assert!(st.poll(&m, 10, at(base, 10_000)).unwrap().deliveries.is_empty());
        let dead = st.take_dead_letters();
        assert_eq!((dead.len(), dead[0].attempts, dead[0].failures.reason.as_str()), (1, 2, "ack timeout"));
        st.dead_letters_written(&dead, true);
        assert_eq!(st.info(|_| Some(1))[0].committed, 1);
        st.check_invariants();
    }

    #[test]
    fn a_silent_member_is_removed_at_its_session_timeout_and_its_events_go_to_the_others() {
        let config = GroupConfig { session_timeout_ms: 1000, ..GroupConfig::for_topics(["t"]) };
        let base = Instant::now();
        let mut st = group(1, config, at(base, 0));
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        st.join(a.clone(), 10, 10, at(base, 0)).unwrap();
        fill(&mut st, &a, 3, at(base, 0));
        assert_eq!(st.poll(&a, 10, at(base, 0)).unwrap().deliveries.len(), 3);
        st.join(b.clone(), 10, 10, at(base, 900)).unwrap();
        // `a` still owns the partition (sticky); at 1001 ms it has been silent too long.
        assert!(st.expire(at(base, 1000)).members.is_empty());
        assert_eq!(st.expire(at(base, 1001)).members, vec![a.clone()]);
        assert_eq!(st.assignment("b").len(), 1);
        let got = st.poll(&b, 10, at(base, 1001)).unwrap().deliveries;
        assert_eq!(got.iter().map(|d| (d.stored.offset, d.attempt)).collect::<Vec<_>>(), vec![(0, 2), (1, 2), (2, 2)]);
        st.check_invariants();
    }
}
