//! A model-based property test of the group state machine: random joins, leaves, polls, acks,
//! nacks, rejects, clock steps, flushes, dead-letter writes (some failing) and restarts (the state
//! rebuilt from the records it asked to store), checked after every step against a small
//! reference model:
//! - a key's next event is never delivered before the previous one settled (key order, blocking);
//! - no member ever holds more than its `max_in_flight`, and every count matches what is held;
//! - the committed position never passes an event that is not settled;
//! - attempts never decrease, across restarts too: each delivery of an event is its previous
//!   delivery count plus one;
//! - every event ends acked or dead-lettered once a member drains the group.
//!
//! The clock is injected: no test here sleeps.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_core::Event;
use herald_model::{DeliveryId, GroupConfig, OrderingMode, RetryPolicy};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::state::{Append, Delivery, Fill, GroupState, Now, Tp};
use crate::partition::StoredEvent;
use crate::store::{Recovery, StateRecord};

const PARTITIONS: u32 = 2;
const EVENTS: u64 = 14;
const MEMBERS: [&str; 3] = ["m0", "m1", "m2"];
const MAX_ATTEMPTS: u32 = 3;

#[derive(Debug, Clone)]
enum Step {
    Join { member: usize, max_in_flight: u32 },
    Leave { member: usize },
    Poll { member: usize, max: usize },
    Ack { member: usize, pick: usize },
    AckThrough { member: usize, pick: usize },
    Nack { member: usize, pick: usize, delay_ms: Option<u64> },
    Reject { member: usize, pick: usize },
    Advance { ms: u64 },
    Flush,
    WriteDeadLetters { ok: bool },
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    let m = 0..MEMBERS.len();
    prop_oneof![
        2 => (m.clone(), 1u32..5).prop_map(|(member, max_in_flight)| Step::Join { member, max_in_flight }),
        1 => m.clone().prop_map(|member| Step::Leave { member }),
        6 => (m.clone(), 1usize..6).prop_map(|(member, max)| Step::Poll { member, max }),
        6 => (m.clone(), 0usize..8).prop_map(|(member, pick)| Step::Ack { member, pick }),
        1 => (m.clone(), 0usize..8).prop_map(|(member, pick)| Step::AckThrough { member, pick }),
        3 => (m.clone(), 0usize..8, prop::option::of(0u64..40)).prop_map(|(member, pick, delay_ms)| Step::Nack { member, pick, delay_ms }),
        1 => (m.clone(), 0usize..8).prop_map(|(member, pick)| Step::Reject { member, pick }),
        3 => (1u64..120).prop_map(|ms| Step::Advance { ms }),
        2 => Just(Step::Flush),
        2 => any::<bool>().prop_map(|ok| Step::WriteDeadLetters { ok }),
        1 => Just(Step::Restart),
    ]
}

/// Keys of the events: a few keys that collide often, and unkeyed events.
fn key_of(offset: u64, partition: u32) -> Option<String> {
    match (offset * 7 + u64::from(partition) * 3) % 5 {
        0 => None,
        k => Some(format!("k{}", k % 3)),
    }
}

struct Harness {
    config: GroupConfig,
    log: HashMap<Tp, Vec<StoredEvent>>,
    state: GroupState,
    /// Records the state machine asked to store, in order (the durable store).
    store: Vec<StateRecord>,
    next_ticket: u64,
    base: Instant,
    t_ms: u64,
    /// What each member holds, as the member sees it.
    held: HashMap<usize, Vec<Delivery>>,
    /// The reference: per event, how many deliveries so far, and whether it is settled.
    deliveries: HashMap<(Tp, u64), u32>,
    settled: BTreeSet<(Tp, u64)>,
    dead_lettered: usize,
    /// Events that failed for good since the last restart (on their way to the DLQ).
    exhausted: BTreeSet<(Tp, u64)>,
}

fn tp(p: u32) -> Tp {
    (Arc::from("t"), p)
}

impl Harness {
    fn new(ordering: OrderingMode, blocking_retries: bool) -> Harness {
        let config = GroupConfig {
            ordering,
            blocking_retries,
            ack_timeout_ms: 60,
            session_timeout_ms: 250,
            retry: RetryPolicy {
                max_attempts: MAX_ATTEMPTS,
                backoff_base_ms: 5,
                backoff_factor: 2.0,
                backoff_max_ms: 30,
                jitter: 0.5,
            },
            ..GroupConfig::for_topics(["t"])
        };
        let mut log = HashMap::new();
        for p in 0..PARTITIONS {
            let events = (0..EVENTS)
                .map(|o| {
                    let mut b = Event::builder("t").id(format!("{p}-{o}"));
                    if let Some(k) = key_of(o, p) {
                        b = b.key(k);
                    }
                    StoredEvent {
                        event: b.build().unwrap(),
                        topic: "t".into(),
                        partition: p,
                        offset: o,
                        append_time_ms: 0,
                    }
                })
                .collect();
            log.insert(tp(p), events);
        }
        let state = GroupState::new("g", &config, vec![], 0, StdRng::seed_from_u64(7));
        let mut h = Harness {
            config,
            log,
            state,
            store: Vec::new(),
            next_ticket: 0,
            base: Instant::now(),
            t_ms: 0,
            held: HashMap::new(),
            deliveries: HashMap::new(),
            settled: BTreeSet::new(),
            dead_lettered: 0,
            exhausted: BTreeSet::new(),
        };
        let present: Vec<(Tp, u64)> = (0..PARTITIONS).map(|p| (tp(p), 0)).collect();
        let now = h.now();
        let a = h.state.add_partitions(&present, now).expect("new partitions");
        h.store(a);
        h
    }

    fn now(&self) -> Now {
        Now { mono: self.base + Duration::from_millis(self.t_ms), wall_ms: self.t_ms as i64 }
    }

    /// Appends in ticket order, as the shell's sequencer does.
    fn store(&mut self, a: Append) {
        assert_eq!(a.ticket.0, self.next_ticket, "tickets are handed out in order");
        self.next_ticket += 1;
        self.store.extend(a.records);
        if let Some(parts) = a.checkpoint {
            self.store.push(StateRecord::Checkpoint { parts });
        }
    }

    fn run(&mut self, s: &Step) {
        let now = self.now();
        match *s {
            Step::Join { member, max_in_flight } => {
                let _ = self.state.join(Arc::from(MEMBERS[member]), max_in_flight, 2, now);
            }
            Step::Leave { member } => {
                self.state.leave(MEMBERS[member], now);
                self.held.remove(&member);
            }
            Step::Poll { member, max } => self.poll(member, max),
            Step::Ack { member, pick } => {
                if let Some(d) = self.take(member, pick)
                    && self.state.ack(MEMBERS[member], &d.id(), now).is_ok()
                {
                    self.settled.insert(key(&d.id()));
                }
            }
            Step::AckThrough { member, pick } => {
                let Some(held) = self.held.get(&member).filter(|h| !h.is_empty()) else { return self.check() };
                let through = held[pick % held.len()].id();
                if let Ok(acked) = self.state.ack_through(MEMBERS[member], &through, now) {
                    for d in &acked {
                        assert!(
                            d.partition == through.partition && d.offset <= through.offset,
                            "{d:?} beyond {through:?}"
                        );
                        self.settled.insert(key(d));
                    }
                    let acked: BTreeSet<(Tp, u64, u32)> =
                        acked.iter().map(|d| ((d.topic.clone(), d.partition), d.offset, d.attempt)).collect();
                    if let Some(h) = self.held.get_mut(&member) {
                        h.retain(|d| {
                            !acked.contains(&((d.stored.topic.clone(), d.stored.partition), d.stored.offset, d.attempt))
                        });
                    }
                }
            }
            Step::Nack { member, pick, delay_ms } => {
                if let Some(d) = self.take(member, pick)
                    && self
                        .state
                        .nack(MEMBERS[member], &d.id(), delay_ms.map(Duration::from_millis), "nack", now)
                        .is_ok()
                    && d.attempt >= MAX_ATTEMPTS
                {
                    self.exhausted.insert(key(&d.id()));
                }
            }
            Step::Reject { member, pick } => {
                if let Some(d) = self.take(member, pick)
                    && self.state.reject(MEMBERS[member], &d.id(), "reject", now).is_ok()
                {
                    self.exhausted.insert(key(&d.id()));
                }
            }
            Step::Advance { ms } => {
                self.t_ms += ms;
                let expired = self.state.expire(self.now());
                for d in &expired.deliveries {
                    if d.attempt >= MAX_ATTEMPTS {
                        self.exhausted.insert(key(d));
                    }
                }
                // A member removed by its session timeout no longer holds anything.
                for m in expired.members {
                    let i = MEMBERS.iter().position(|x| *x == &*m).unwrap();
                    self.held.remove(&i);
                }
            }
            Step::Flush => {
                if let Some(a) = self.state.take_flush() {
                    self.store(a);
                }
            }
            Step::WriteDeadLetters { ok } => {
                let batch = self.state.take_dead_letters();
                for o in &batch {
                    let attempts = self.deliveries[&((o.topic.clone(), o.partition), o.offset)];
                    assert_eq!(o.attempts, attempts, "a dead letter records the attempts made");
                    if ok {
                        self.settled.insert(((o.topic.clone(), o.partition), o.offset));
                        self.dead_lettered += 1;
                    }
                }
                self.state.dead_letters_written(&batch, ok);
            }
            Step::Restart => self.restart(),
        }
        self.check();
    }

    fn restart(&mut self) {
        // What was not flushed is lost; in-flight events come back.
        let mut recovery = Recovery::default();
        for r in self.store.clone() {
            recovery.apply(r);
        }
        let recovered = recovery.finish();
        self.settled.clear();
        for c in &recovered.parts {
            let t = (Arc::from(c.topic.as_str()), c.partition);
            for o in 0..c.committed {
                self.settled.insert((t.clone(), o));
            }
            for o in &c.done {
                self.settled.insert((t.clone(), *o));
            }
        }
        self.state =
            GroupState::new("g", &self.config, recovered.parts, recovered.records, StdRng::seed_from_u64(self.t_ms));
        self.next_ticket = 0;
        self.held.clear();
        self.exhausted.clear();
    }

    fn take(&mut self, member: usize, pick: usize) -> Option<Delivery> {
        let held = self.held.get_mut(&member)?;
        if held.is_empty() {
            return None;
        }
        let i = pick % held.len();
        Some(held.swap_remove(i))
    }

    fn poll(&mut self, member: usize, max: usize) {
        let now = self.now();
        let id: Arc<str> = Arc::from(MEMBERS[member]);
        let Ok(plans) = self.state.reads_for(&id, now, latest) else { return };
        for plan in plans {
            let events = &self.log[&plan.tp];
            let end = (plan.from as usize + plan.max_events).min(events.len());
            let got = events[plan.from as usize..end].to_vec();
            self.state.fill(&plan, Fill::Events(got));
        }
        let Ok(poll) = self.state.poll(&id, max, now) else { return };
        if !poll.deliveries.is_empty() {
            let (in_flight, limit) = self.state.member_load(&id).expect("a member that got deliveries");
            assert!(in_flight <= limit as usize, "{id} holds {in_flight}, over its max_in_flight {limit}");
            assert!(poll.deliveries.len() <= max, "a poll for {max} handed out {}", poll.deliveries.len());
        }
        if let Some(a) = poll.append {
            self.store(a);
        }
        for d in &poll.deliveries {
            let k = key(&d.id());
            assert!(!self.settled.contains(&k), "{k:?} delivered after it was settled");
            let n = self.deliveries.entry(k.clone()).or_insert(0);
            assert_eq!(d.attempt, *n + 1, "{k:?}: attempts must count every delivery, also across restarts");
            *n += 1;
            // An event that failed for good (rejected, or failed at its last attempt) is not
            // delivered again — unless a restart lost its pending dead letter. (A rebalance that
            // takes an event back is no failure.)
            assert!(!self.exhausted.contains(&k), "{k:?} delivered again after it failed for good");
            if self.config.ordering == OrderingMode::Key
                && self.config.blocking_retries
                && let Some(key) = d.event().key()
            {
                {
                    for earlier in 0..d.stored.offset {
                        let e = &self.log[&k.0][earlier as usize];
                        if e.event.key() == Some(key) {
                            assert!(
                                self.settled.contains(&(k.0.clone(), earlier)),
                                "{k:?} (key {key}) delivered before offset {earlier} of its key was settled"
                            );
                        }
                    }
                }
            }
        }
        self.held.entry(member).or_default().extend(poll.deliveries);
    }

    fn check(&self) {
        self.state.check_invariants();
        // The position never passes an event that is not settled.
        for info in self.state.info(latest) {
            let t = (Arc::from(info.topic.as_str()), info.partition);
            for o in 0..info.committed {
                assert!(
                    self.settled.contains(&(t.clone(), o)),
                    "{t:?}: committed {} passes unsettled {o}",
                    info.committed
                );
            }
        }
    }

    /// One member takes everything until every event is settled.
    fn drain(&mut self) {
        self.restart();
        let now = self.now();
        self.state.join(Arc::from(MEMBERS[0]), 4, 3, now).unwrap();
        for _ in 0..5_000 {
            if (0..PARTITIONS).all(|p| (0..EVENTS).all(|o| self.settled.contains(&(tp(p), o)))) {
                return;
            }
            self.run(&Step::Poll { member: 0, max: 4 });
            while self.held.get(&0).is_some_and(|h| !h.is_empty()) {
                self.run(&Step::Ack { member: 0, pick: 0 });
            }
            self.run(&Step::WriteDeadLetters { ok: true });
            self.run(&Step::Flush);
            self.run(&Step::Advance { ms: 20 });
        }
        panic!("the group did not drain: settled {} of {}", self.settled.len(), PARTITIONS as u64 * EVENTS);
    }
}

/// Every partition of the test holds `EVENTS` events.
fn latest(_: &Tp) -> Option<u64> {
    Some(EVENTS)
}

fn key(d: &DeliveryId) -> (Tp, u64) {
    ((d.topic.clone(), d.partition), d.offset)
}

fn ordering() -> impl Strategy<Value = OrderingMode> {
    prop_oneof![4 => Just(OrderingMode::Key), 1 => Just(OrderingMode::Partition), 1 => Just(OrderingMode::None)]
}

/// Random steps per case, and cases: at least 10,000 random steps in all (plus each case's drain).
const STEPS: usize = 160;
const CASES: u32 = 80;

#[test]
fn the_group_state_machine_keeps_its_promises() {
    use proptest::test_runner::{Config, TestRunner};
    let steps_run = std::cell::Cell::new(0usize);
    let mut runner = TestRunner::new(Config { cases: CASES, ..Config::default() });
    let cases = (ordering(), prop::bool::weighted(0.8), prop::collection::vec(step(), STEPS));
    let result = runner.run(&cases, |(ordering, blocking, steps)| {
        let mut h = Harness::new(ordering, blocking);
        for s in &steps {
            h.run(s);
            steps_run.set(steps_run.get() + 1);
        }
        h.drain();
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(steps_run.get() >= 10_000, "only {} random steps ran", steps_run.get());
}
