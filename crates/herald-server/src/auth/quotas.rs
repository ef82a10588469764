//! Quotas per principal, set on its token (`herald token create --publish-rate …`): events and
//! bytes published per second (token buckets holding one second's worth: a burst of up to a
//! second's quota passes at once, then the rate holds), and open subscription streams. Beyond a
//! rate the answer is `quota_exceeded` with how long to wait (retryable: the SDK's producer
//! waits and retries); beyond the stream count it is `quota_exceeded` too, until one closes.
//! Principals without quotas (and `anonymous`) are not limited by these.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use herald_model::Code;
use serde::{Deserialize, Serialize};

use super::grants::{Denied, Principal};

/// A token's quotas; a field left out is not limited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    /// Events published per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_events_per_s: Option<u64>,
    /// Event bytes (encoded) published per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_bytes_per_s: Option<u64>,
    /// Subscription streams open at once (gRPC Subscribe and SSE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscriptions: Option<u32>,
    /// Connections open at once on which it made a request (HTTP and gRPC together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<u32>,
    /// Topics it created that exist (see `owners.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topics: Option<u32>,
    /// Partitions of the topics it created that exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<u32>,
}

impl Quotas {
    /// Whether nothing is limited.
    pub fn is_empty(&self) -> bool {
        *self == Quotas::default()
    }

    /// Each limit must be at least 1.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("publish_events_per_s", self.publish_events_per_s),
            ("publish_bytes_per_s", self.publish_bytes_per_s),
            ("subscriptions", self.subscriptions.map(u64::from)),
            ("connections", self.connections.map(u64::from)),
            ("topics", self.topics.map(u64::from)),
            ("partitions", self.partitions.map(u64::from)),
        ] {
            if v == Some(0) {
                return Err(format!("the quota {name} is 0; leave it out for no limit, or allow at least 1"));
            }
        }
        Ok(())
    }
}

/// A token bucket that may go into debt: a request is admitted while the bucket is not in debt,
/// and takes its whole cost (so one large batch passes, and the next waits for the debt to clear).
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// `Err(seconds to wait)` while in debt; otherwise takes `cost`.
    fn take(&mut self, rate: u64, cost: u64, now: Instant) -> Result<(), f64> {
        let rate = rate as f64;
        self.tokens = (self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * rate).min(rate);
        self.at = now;
        if self.tokens < 0.0 {
            return Err(-self.tokens / rate);
        }
        self.tokens -= cost as f64;
        Ok(())
    }
}

#[derive(Default)]
struct Usage {
    events: Option<Bucket>,
    bytes: Option<Bucket>,
    subscriptions: u32,
    connections: u32,
}

/// The principals with a connection quota that made requests on one connection; each counts the
/// connection once, until it closes (when the last holder of the cell lets go).
#[derive(Default)]
pub struct ConnectionCell {
    held: Mutex<Vec<ConnectionSlot>>,
}

struct ConnectionSlot {
    meter: Arc<Meter>,
    name: Arc<str>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut by_name = self.meter.by_name.lock().expect("quota lock poisoned");
        if let Some(u) = by_name.get_mut(&self.name) {
            u.connections = u.connections.saturating_sub(1);
        }
    }
}

/// What every principal with quotas has used; one entry per principal (as many as tokens).
#[derive(Default)]
pub struct Meter {
    by_name: Mutex<HashMap<Arc<str>, Usage>>,
}

/// An open subscription counted against its principal's quota, released on drop.
pub struct SubscriptionSlot {
    meter: Option<(Arc<Meter>, Arc<str>)>,
}

impl Drop for SubscriptionSlot {
    fn drop(&mut self) {
        if let Some((meter, name)) = self.meter.take() {
            let mut by_name = meter.by_name.lock().expect("quota lock poisoned");
            if let Some(u) = by_name.get_mut(&name) {
                u.subscriptions = u.subscriptions.saturating_sub(1);
            }
        }
    }
}

fn exceeded(p: &Principal, what: String, wait_s: f64) -> Denied {
    let wait = wait_s.ceil().max(1.0) as u64;
    Denied {
        code: Code::QuotaExceeded,
        message: format!("{:?} is over its quota of {what}; retry in {wait} s (or ask for a higher quota)", p.name),
        retry_after_s: Some(wait),
    }
}

impl Meter {
    /// Charges a publish of `events` events of `bytes` bytes to `p`.
    pub fn publish(&self, p: &Principal, events: usize, bytes: usize) -> Result<(), Denied> {
        let q = p.quotas;
        if q.publish_events_per_s.is_none() && q.publish_bytes_per_s.is_none() {
            return Ok(());
        }
        let now = Instant::now();
        let mut by_name = self.by_name.lock().expect("quota lock poisoned");
        let u = by_name.entry(p.name.clone()).or_default();
        // Both are looked at before either is charged: a refused request costs nothing.
        let check = |b: &mut Option<Bucket>, rate: Option<u64>| -> Result<(), f64> {
            let Some(rate) = rate else { return Ok(()) };
            let b = b.get_or_insert(Bucket { tokens: rate as f64, at: now });
            b.take(rate, 0, now)
        };
        if let Err(wait) = check(&mut u.events, q.publish_events_per_s) {
            let rate = q.publish_events_per_s.unwrap_or_default();
            return Err(exceeded(p, format!("{rate} published events/s"), wait));
        }
        if let Err(wait) = check(&mut u.bytes, q.publish_bytes_per_s) {
            let rate = q.publish_bytes_per_s.unwrap_or_default();
            return Err(exceeded(p, format!("{rate} published bytes/s"), wait));
        }
        if let (Some(rate), Some(b)) = (q.publish_events_per_s, u.events.as_mut()) {
            let _ = b.take(rate, events as u64, now);
        }
        if let (Some(rate), Some(b)) = (q.publish_bytes_per_s, u.bytes.as_mut()) {
            let _ = b.take(rate, bytes as u64, now);
        }
        Ok(())
    }

    /// Counts `cell`'s connection for `p` (once), or refuses the request at `p`'s connection
    /// quota.
    pub fn connection(self: &Arc<Self>, p: &Principal, cell: &ConnectionCell) -> Result<(), Denied> {
        let Some(max) = p.quotas.connections else { return Ok(()) };
        let mut held = cell.held.lock().expect("connection cell lock poisoned");
        if held.iter().any(|s| s.name == p.name) {
            return Ok(());
        }
        let mut by_name = self.by_name.lock().expect("quota lock poisoned");
        let u = by_name.entry(p.name.clone()).or_default();
        if u.connections >= max {
            return Err(Denied {
                code: Code::QuotaExceeded,
                message: format!(
                    "{:?} has {max} connections open, its quota; reuse one (HTTP keep-alive, one gRPC channel) or \
                     close one (or ask for a higher quota)",
                    p.name
                ),
                retry_after_s: Some(1),
            });
        }
        u.connections += 1;
        held.push(ConnectionSlot { meter: self.clone(), name: p.name.clone() });
        Ok(())
    }

    /// Counts one more open subscription of `p`, or refuses it at its quota.
    pub fn subscribe(self: &Arc<Self>, p: &Principal) -> Result<SubscriptionSlot, Denied> {
        let Some(max) = p.quotas.subscriptions else { return Ok(SubscriptionSlot { meter: None }) };
        let mut by_name = self.by_name.lock().expect("quota lock poisoned");
        let u = by_name.entry(p.name.clone()).or_default();
        if u.subscriptions >= max {
            return Err(Denied {
                code: Code::QuotaExceeded,
                message: format!(
                    "{:?} has {max} subscriptions open, its quota; close one first (or ask for a higher quota)",
                    p.name
                ),
                retry_after_s: Some(1),
            });
        }
        u.subscriptions += 1;
        Ok(SubscriptionSlot { meter: Some((self.clone(), p.name.clone())) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited(q: Quotas) -> Principal {
        let mut p = Principal::new("limited", Vec::new(), None);
        p.quotas = q;
        p
    }

    #[test]
    fn a_rate_admits_a_seconds_burst_then_refuses_with_how_long_to_wait() {
        let m = Meter::default();
        let p = limited(Quotas { publish_events_per_s: Some(100), ..Quotas::default() });
        m.publish(&p, 100, 1).unwrap();
        // In debt now only if it took more than the bucket held: 100 of 100 leaves 0.
        m.publish(&p, 50, 1).unwrap();
        let e = m.publish(&p, 1, 1).unwrap_err();
        assert_eq!(e.code, Code::QuotaExceeded);
        assert!(e.retry_after_s.is_some_and(|s| s >= 1), "{e:?}");
        assert!(e.message.contains("100 published events/s"), "{}", e.message);
        // Another principal is not touched, and one without quotas is never limited.
        let other = limited(Quotas { publish_events_per_s: Some(100), ..Quotas::default() });
        let mut other = other;
        other.name = "other".into();
        m.publish(&other, 100, 1).unwrap();
        let free = Principal::new("free", Vec::new(), None);
        for _ in 0..100 {
            m.publish(&free, 1_000_000, 1).unwrap();
        }
    }

    #[test]
    fn bytes_are_limited_too_and_a_refusal_costs_nothing() {
        let m = Meter::default();
        let p = limited(Quotas { publish_bytes_per_s: Some(1000), ..Quotas::default() });
        m.publish(&p, 1, 5000).unwrap();
        let e = m.publish(&p, 1, 1).unwrap_err();
        assert!(e.message.contains("bytes/s") && e.retry_after_s.is_some_and(|s| (4..=5).contains(&s)), "{e:?}");
    }

    #[test]
    fn subscriptions_are_counted_and_released() {
        let m = Arc::new(Meter::default());
        let p = limited(Quotas { subscriptions: Some(2), ..Quotas::default() });
        let a = m.subscribe(&p).unwrap();
        let _b = m.subscribe(&p).unwrap();
        assert_eq!(m.subscribe(&p).err().map(|e| e.code), Some(Code::QuotaExceeded));
        drop(a);
        assert!(m.subscribe(&p).is_ok());
        assert!(Quotas { subscriptions: Some(0), ..Quotas::default() }.validate().is_err());
    }

    #[test]
    fn a_connection_counts_once_per_principal_until_it_closes() {
        let m = Arc::new(Meter::default());
        let p = limited(Quotas { connections: Some(1), ..Quotas::default() });
        let first = ConnectionCell::default();
        m.connection(&p, &first).unwrap();
        m.connection(&p, &first).unwrap();
        let second = ConnectionCell::default();
        assert_eq!(m.connection(&p, &second).err().map(|e| e.code), Some(Code::QuotaExceeded));
        drop(first);
        m.connection(&p, &second).unwrap();
    }
}
