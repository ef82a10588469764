//! Which events of one partition may go out now, under the group's ordering mode. The one place
//! where the broker decides per-key order (the NATS backend's hold-back and the runtime's key
//! chains only keep the order the broker hands out).

use std::collections::HashSet;
use std::time::Instant;

use herald_model::OrderingMode;

use super::state::PartState;
use crate::partition::StoredEvent;

/// Chooses what to deliver from one partition, in offset order, under the ordering mode, at most
/// `budget` events. What it returns has left the partition's buffer or retry queue.
pub(crate) fn pick(
    mode: OrderingMode,
    blocking: bool,
    p: &mut PartState,
    now: Instant,
    budget: usize,
) -> Vec<StoredEvent> {
    let mut out = Vec::new();
    if budget == 0 {
        return out;
    }
    match mode {
        OrderingMode::Partition => {
            if !p.in_flight.is_empty() || !p.dead.is_empty() {
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
            for d in p.dead.values() {
                if let Some(h) = key_hash(&d.event) {
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
                // Which buffered events go: the first of each free key (it blocks the key for
                // the rest), in offset order, up to the budget. Only the stretch of the buffer up
                // to the last one taken is moved; events are large, and the buffer is long.
                let room = budget - out.len();
                let mut take = Vec::new();
                for (i, e) in p.buffer.iter().enumerate() {
                    if take.len() >= room {
                        break;
                    }
                    match key_hash(e) {
                        Some(h) if !blocked.insert(h) => {}
                        _ => take.push(i),
                    }
                }
                if let Some(&last) = take.last() {
                    let mut kept = Vec::with_capacity(last + 1 - take.len());
                    let mut next = take.iter().copied().peekable();
                    for (i, e) in p.buffer.drain(..=last).enumerate() {
                        if next.peek() == Some(&i) {
                            next.next();
                            out.push(e);
                        } else {
                            kept.push(e);
                        }
                    }
                    for e in kept.into_iter().rev() {
                        p.buffer.push_front(e);
                    }
                }
            }
        }
    }
    debug_assert!(out.len() <= budget, "picked {} over a budget of {budget}", out.len());
    out
}

/// FNV-1a of an event's key.
pub(crate) fn key_hash(e: &StoredEvent) -> Option<u64> {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use herald_core::Event;

    use super::*;
    use crate::group::state::{InFlight, Waiting};

    fn ev(offset: u64, key: Option<&str>) -> StoredEvent {
        let mut b = Event::builder("t");
        if let Some(k) = key {
            b = b.key(k);
        }
        StoredEvent { event: b.build().unwrap(), topic: "t".into(), partition: 0, offset, append_time_ms: 0 }
    }

    fn part(buffer: &[(u64, Option<&str>)]) -> PartState {
        let mut p = PartState::new(0);
        for (o, k) in buffer {
            p.buffer.push_back(ev(*o, *k));
        }
        p
    }

    fn offsets(v: &[StoredEvent]) -> Vec<u64> {
        v.iter().map(|e| e.offset).collect()
    }

    fn in_flight(p: &mut PartState, e: StoredEvent, now: Instant) {
        let f = InFlight { member: Arc::from("m"), generation: 1, attempt: 1, deadline: now, event: e };
        p.in_flight.insert(f.event.offset, f);
    }

    /// One row: the buffer, what is in flight, what waits for a retry (offset, key, due in ms from
    /// now), the mode, blocking, the budget, and the offsets that must go out.
    struct Case {
        name: &'static str,
        buffer: &'static [(u64, Option<&'static str>)],
        flying: &'static [(u64, Option<&'static str>)],
        waiting: &'static [(u64, Option<&'static str>, i64)],
        mode: OrderingMode,
        blocking: bool,
        budget: usize,
        want: &'static [u64],
    }

    #[test]
    fn picking_follows_the_ordering_mode() {
        use OrderingMode::{Key, Partition};
        const NONE: OrderingMode = OrderingMode::None;
        let cases = [
            Case {
                name: "key: one per key",
                buffer: &[(0, Some("a")), (1, Some("a")), (2, Some("b"))],
                flying: &[],
                waiting: &[],
                mode: Key,
                blocking: true,
                budget: 10,
                want: &[0, 2],
            },
            Case {
                name: "key: in-flight key blocked",
                buffer: &[(1, Some("a")), (2, Some("b"))],
                flying: &[(0, Some("a"))],
                waiting: &[],
                mode: Key,
                blocking: true,
                budget: 10,
                want: &[2],
            },
            Case {
                name: "key: unkeyed all go",
                buffer: &[(0, None), (1, None), (2, None)],
                flying: &[(5, None)],
                waiting: &[],
                mode: Key,
                blocking: true,
                budget: 10,
                want: &[0, 1, 2],
            },
            Case {
                name: "key: budget",
                buffer: &[(0, Some("a")), (1, Some("b")), (2, Some("c"))],
                flying: &[],
                waiting: &[],
                mode: Key,
                blocking: true,
                budget: 2,
                want: &[0, 1],
            },
            Case {
                name: "key: blocking retry not due holds its key",
                buffer: &[(1, Some("a")), (2, Some("b"))],
                flying: &[],
                waiting: &[(0, Some("a"), 100)],
                mode: Key,
                blocking: true,
                budget: 10,
                want: &[2],
            },
            Case {
                name: "key: non-blocking retry not due lets the key pass",
                buffer: &[(1, Some("a")), (2, Some("b"))],
                flying: &[],
                waiting: &[(0, Some("a"), 100)],
                mode: Key,
                blocking: false,
                budget: 10,
                want: &[1, 2],
            },
            Case {
                name: "key: due retry goes first and holds its key",
                buffer: &[(1, Some("a")), (2, Some("b"))],
                flying: &[],
                waiting: &[(0, Some("a"), -1)],
                mode: Key,
                blocking: true,
                budget: 10,
                want: &[0, 2],
            },
            Case {
                name: "partition: one at a time",
                buffer: &[(0, Some("a")), (1, Some("b"))],
                flying: &[],
                waiting: &[],
                mode: Partition,
                blocking: true,
                budget: 10,
                want: &[0],
            },
            Case {
                name: "partition: nothing while one is in flight",
                buffer: &[(1, Some("b"))],
                flying: &[(0, Some("a"))],
                waiting: &[],
                mode: Partition,
                blocking: true,
                budget: 10,
                want: &[],
            },
            Case {
                name: "partition: a waiting retry blocks",
                buffer: &[(1, Some("b"))],
                flying: &[],
                waiting: &[(0, Some("a"), 100)],
                mode: Partition,
                blocking: true,
                budget: 10,
                want: &[],
            },
            Case {
                name: "none: everything up to the budget",
                buffer: &[(0, Some("a")), (1, Some("a")), (2, Some("a"))],
                flying: &[(9, Some("a"))],
                waiting: &[],
                mode: NONE,
                blocking: true,
                budget: 2,
                want: &[0, 1],
            },
            Case {
                name: "zero budget",
                buffer: &[(0, None)],
                flying: &[],
                waiting: &[],
                mode: NONE,
                blocking: true,
                budget: 0,
                want: &[],
            },
        ];
        let now = Instant::now() + Duration::from_secs(1);
        for c in cases {
            let mut p = part(c.buffer);
            for (o, k) in c.flying {
                in_flight(&mut p, ev(*o, *k), now);
            }
            for (o, k, due) in c.waiting {
                let due = if *due >= 0 {
                    now + Duration::from_millis(*due as u64)
                } else {
                    now - Duration::from_millis(due.unsigned_abs())
                };
                p.retry.insert(*o, Waiting { event: ev(*o, *k), due });
            }
            let got = pick(c.mode, c.blocking, &mut p, now, c.budget);
            assert_eq!(offsets(&got), c.want, "{}", c.name);
        }
    }
}
