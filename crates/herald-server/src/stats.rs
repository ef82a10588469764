//! What the Console shows moving: a sampler reads every topic's and group's figures once a
//! second (all in memory but a group's DLQ start), derives rates from the previous sample, and
//! keeps each group's total lag every [`LAG_EVERY`] for [`LAG_KEPT`].
//!
//! Bounded: two samples of the whole server, plus [`LAG_POINTS`] points for at most
//! [`CHARTED_GROUPS_MAX`] groups (about 1.5 MiB). The latest sample is published on a
//! `watch` channel: every open Console stream reads the same one, nothing is computed per viewer.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_broker::Broker;
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often the sampler runs.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// How often a group's lag is kept for its chart.
pub const LAG_EVERY: Duration = Duration::from_secs(5);
/// How long a group's lag is kept.
pub const LAG_KEPT: Duration = Duration::from_secs(15 * 60);
/// Points per group's lag chart.
pub const LAG_POINTS: usize = (LAG_KEPT.as_secs() / LAG_EVERY.as_secs()) as usize;
/// Groups whose lag is charted; beyond, a group has no chart until one is deleted.
pub const CHARTED_GROUPS_MAX: usize = 1_000;

/// One topic's figures in a sample.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TopicStat {
    /// Sum of the partitions' latest offsets: events ever appended.
    #[serde(skip)]
    pub appended: u64,
    /// Events stored (latest − earliest, summed).
    pub events: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// Events appended per second since the previous sample.
    pub in_per_s: f64,
}

/// One group's figures in a sample.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GroupStat {
    /// Sum of the committed offsets: events settled.
    #[serde(skip)]
    pub settled: u64,
    /// Events not yet settled.
    pub lag: u64,
    /// Members.
    pub members: usize,
    /// Dead letters held.
    pub dead_letters: u64,
    /// Events settled per second since the previous sample.
    pub out_per_s: f64,
}

/// The whole server at one moment.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// When, ms since the Unix epoch.
    pub t_ms: i64,
    /// By topic name.
    pub topics: HashMap<String, TopicStat>,
    /// By group name.
    pub groups: HashMap<String, GroupStat>,
}

/// The sampler's output.
pub struct Stats {
    latest: watch::Receiver<Arc<Sample>>,
    lag: Mutex<HashMap<String, VecDeque<(i64, u64)>>>,
}

impl Stats {
    /// Starts sampling `broker` until `stop`.
    pub fn start(broker: Broker, stop: CancellationToken) -> Arc<Stats> {
        let (tx, rx) = watch::channel(Arc::new(Sample::default()));
        let stats = Arc::new(Stats { latest: rx, lag: Mutex::default() });
        let me = stats.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut prev = Arc::new(Sample::default());
            let mut last_lag_ms: Option<i64> = None;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let (b, p) = (broker.clone(), prev.clone());
                let Ok(sample) = tokio::task::spawn_blocking(move || sample(&b, &p)).await else { return };
                let sample = Arc::new(sample);
                if last_lag_ms.is_none_or(|last| sample.t_ms.saturating_sub(last) >= LAG_EVERY.as_millis() as i64) {
                    last_lag_ms = Some(sample.t_ms);
                    me.keep_lag(&sample);
                }
                prev = sample.clone();
                if tx.send(sample).is_err() {
                    return;
                }
            }
        });
        stats
    }

    /// The latest sample (empty before the first).
    pub fn latest(&self) -> Arc<Sample> {
        self.latest.borrow().clone()
    }

    /// A receiver that sees each new sample.
    pub fn watch(&self) -> watch::Receiver<Arc<Sample>> {
        self.latest.clone()
    }

    /// `group`'s total lag over the last [`LAG_KEPT`], oldest first: `(t_ms, lag)`.
    pub fn lag(&self, group: &str) -> Vec<(i64, u64)> {
        let lag = self.lag.lock().expect("stats lock poisoned");
        lag.get(group).map(|v| v.iter().copied().collect()).unwrap_or_default()
    }

    fn keep_lag(&self, s: &Sample) {
        let mut lag = self.lag.lock().expect("stats lock poisoned");
        lag.retain(|g, _| s.groups.contains_key(g));
        for (g, stat) in &s.groups {
            if !lag.contains_key(g) && lag.len() >= CHARTED_GROUPS_MAX {
                continue;
            }
            let points = lag.entry(g.clone()).or_insert_with(|| VecDeque::with_capacity(LAG_POINTS));
            if points.len() == LAG_POINTS {
                points.pop_front();
            }
            points.push_back((s.t_ms, stat.lag));
            debug_assert!(points.len() <= LAG_POINTS);
        }
    }
}

/// Reads every topic and group now; rates are against `prev`.
fn sample(broker: &Broker, prev: &Sample) -> Sample {
    let t_ms = herald_core::Timestamp::now().as_unix_millis();
    let secs = if prev.t_ms > 0 { (t_ms - prev.t_ms).max(1) as f64 / 1000.0 } else { 0.0 };
    let rate = |now: u64, before: Option<u64>| match before {
        // A deleted and re-created topic, or a reset group, goes backwards: no rate then.
        Some(b) if secs > 0.0 && now >= b => (now - b) as f64 / secs,
        _ => 0.0,
    };
    let mut topics = HashMap::new();
    for name in broker.list_topics() {
        let Ok(info) = broker.describe_topic(&name) else { continue };
        let mut t = TopicStat::default();
        for p in &info.partitions {
            t.appended += p.latest_offset;
            t.events += p.latest_offset.saturating_sub(p.earliest_offset);
            t.bytes += p.bytes;
        }
        // A topic made since the previous sample had appended nothing then.
        t.in_per_s = rate(t.appended, Some(prev.topics.get(&name).map_or(0, |p| p.appended)));
        topics.insert(name, t);
    }
    let mut groups = HashMap::new();
    for name in broker.list_groups() {
        let Ok(info) = broker.describe_group(&name) else { continue };
        let mut g =
            GroupStat { members: info.members.len(), dead_letters: broker.dlq_held(&name), ..GroupStat::default() };
        for p in &info.partitions {
            g.settled += p.committed;
            g.lag += p.lag;
        }
        // A group made since the previous sample may start at the end: no rate until the next.
        g.out_per_s = rate(g.settled, prev.groups.get(&name).map(|p| p.settled));
        groups.insert(name, g);
    }
    Sample { t_ms, topics, groups }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_s_lag_keeps_the_last_points_and_charted_groups_are_bounded() {
        let (_tx, rx) = watch::channel(Arc::new(Sample::default()));
        let stats = Stats { latest: rx, lag: Mutex::default() };
        for i in 0..(LAG_POINTS as i64 + 10) {
            let mut s = Sample { t_ms: i, ..Sample::default() };
            s.groups.insert("g".into(), GroupStat { lag: i as u64, ..GroupStat::default() });
            stats.keep_lag(&s);
        }
        let points = stats.lag("g");
        assert_eq!(points.len(), LAG_POINTS);
        assert_eq!(points.first(), Some(&(10, 10)), "the oldest points went first");
        let mut s = Sample { t_ms: 1, ..Sample::default() };
        for i in 0..CHARTED_GROUPS_MAX + 5 {
            s.groups.insert(format!("g{i}"), GroupStat::default());
        }
        stats.keep_lag(&s);
        assert_eq!(stats.lag.lock().unwrap().len(), CHARTED_GROUPS_MAX);
        assert!(stats.lag("g").is_empty(), "a group that is gone loses its chart");
    }
}
