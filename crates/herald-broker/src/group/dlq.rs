//! A group's dead letters: writing them to `<group>.dlq`, listing, replaying and purging.
//!
//! Replay and purge never delete before they have written: dead letters are dropped from view by
//! moving the DLQ's start (`<data>/groups/<group>/dlq.json`, written durably) only after the
//! replayed letters are stored in the replay topic and the ones kept are stored again at the
//! DLQ's end. Whole segments before the start are then deleted. A crash in between shows some
//! letters twice (at-least-once), never loses one.

use std::sync::Arc;

use herald_core::Event;
use herald_model::dead_letter::{self, Envelope, Reasons, Selection};
use herald_model::{DamageSkipped, DeadLetter, TopicConfig};
use serde::{Deserialize, Serialize};

use super::Group;
use super::state::Outgoing;
use crate::broker::Broker;
use crate::error::{BrokerError, Result};
use crate::partition::Partition;
use crate::topic::write_durably;

const START_FILE: &str = "dlq.json";
/// Format of `dlq.json`.
const START_FORMAT: u32 = 1;

fn format_1() -> u32 {
    1
}

/// Where a group's DLQ starts: letters below `before` were replayed or purged. Applies only to
/// the DLQ topic created at `dlq_created_ms` (one deleted and created again starts afresh).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct DlqStart {
    #[serde(default = "format_1")]
    format: u32,
    dlq_created_ms: i64,
    before: u64,
}

/// A DLQ's partition, its topic's creation time, and the first (or next) offset in view.
type View = (Arc<Partition>, i64, u64);

/// The DLQ's partition and the first offset still in view, if the DLQ exists.
fn dlq_view(broker: &Broker, group: &str) -> Result<Option<View>> {
    let Ok(topic) = broker.topic(&dead_letter::dlq_topic(group)) else { return Ok(None) };
    let created = topic.meta.read().expect("meta lock poisoned").created_ms;
    let Some(p) = topic.partitions().first().cloned() else { return Ok(None) };
    let path = broker.inner.dir.join("groups").join(group).join(START_FILE);
    super::assert_no_group_lock("reading the DLQ start");
    let mut start = p.log.earliest_offset();
    match std::fs::read(&path) {
        Ok(bytes) => {
            let s: DlqStart = serde_json::from_slice(&bytes)
                .map_err(|e| BrokerError::InvalidConfig(format!("{}: {e}", path.display())))?;
            if s.format > START_FORMAT {
                return Err(BrokerError::Format(herald_model::storage::StorageError::TooNew {
                    what: path.display().to_string(),
                    found: s.format,
                    supported: START_FORMAT,
                }));
            }
            if s.dlq_created_ms == created && s.before <= p.log.latest_offset() {
                start = start.max(s.before);
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(BrokerError::io(&path, "reading the DLQ start")(e)),
    }
    Ok(Some((p, created, start)))
}

/// Moves the DLQ's start to `before` durably, then deletes the segments wholly before it.
fn move_start(broker: &Broker, group: &str, p: &Partition, created: i64, before: u64) -> Result<()> {
    let path = broker.inner.dir.join("groups").join(group).join(START_FILE);
    let s = DlqStart { format: START_FORMAT, dlq_created_ms: created, before };
    write_durably(&path, &serde_json::to_vec_pretty(&s).expect("serializes"))?;
    if let Err(e) = p.log.delete_before(before) {
        tracing::warn!(group, error = %e, "deleting replayed dead letters' segments failed; they stay out of view");
    }
    Ok(())
}

/// Letters in view, oldest first, at most `max`, and the offset after the last one listed.
fn list(broker: &Broker, group: &str, max: usize) -> Result<(Vec<DeadLetter>, Option<View>)> {
    let mut out = Vec::new();
    if max == 0 {
        return Ok((out, dlq_view(broker, group)?));
    }
    let view = scan(broker, group, |l| {
        out.push(l);
        out.len() < max
    })?;
    Ok((out, view))
}

/// Calls `f` with each letter in view, oldest first, until it returns false (read in chunks: a
/// large DLQ is never held whole). Returns the DLQ's view with the offset after the last letter
/// `f` was given.
fn scan(broker: &Broker, group: &str, mut f: impl FnMut(DeadLetter) -> bool) -> Result<Option<View>> {
    const CHUNK: usize = 1_000;
    let Some((p, created, start)) = dlq_view(broker, group)? else { return Ok(None) };
    let (mut next, end) = (start, p.log.latest_offset());
    'read: while next < end {
        let events = p.read(next, 4 << 20, CHUNK)?;
        let Some(last) = events.last() else { break };
        debug_assert!(last.offset >= next, "a read went backwards");
        for s in events {
            next = s.offset + 1;
            if !f(DeadLetter { dlq_offset: s.offset, event: s.event }) {
                break 'read;
            }
        }
    }
    Ok(Some((p, created, next)))
}

impl Group {
    /// Writes pending dead letters to the DLQ topic, then settles them. The write runs in a task
    /// of its own: a caller that gives up waiting (a dropped request, an aborted handler) cannot
    /// leave letters marked as being written that nobody writes.
    pub(super) async fn flush_dead_letters(self: &Arc<Self>, broker: &Broker) -> Result<()> {
        let (group, broker) = (self.clone(), broker.clone());
        let task = tokio::spawn(async move {
            let _dlq = group.dlq.clone().lock_owned().await;
            let batch = group.lock().take_dead_letters();
            if batch.is_empty() {
                return Ok(());
            }
            let result = group.write_dead_letters(&broker, &batch).await;
            let mut st = group.lock();
            st.dead_letters_written(&batch, result.is_ok());
            group.wake_if(&mut st);
            result
        });
        task.await.map_err(|_| BrokerError::Closed)?
    }

    /// Creates the DLQ topic if needed and checks that `n` more letters fit under
    /// `dlq_events_max`.
    async fn make_room(&self, broker: &Broker, n: u64) -> Result<()> {
        let dlq = dead_letter::dlq_topic(&self.name);
        let (name, limit) = (self.name.clone(), self.config.dlq_events_max);
        broker
            .blocking(move |b| {
                b.ensure_own_topic(&dlq, TopicConfig::for_dead_letters())?;
                let held = dlq_view(b, &name)?.map_or(0, |(p, _, start)| p.log.latest_offset() - start);
                if held + n > limit {
                    let err = BrokerError::LimitExceeded {
                        name: "dead letters",
                        value: held + n,
                        limit,
                        key: "dlq_events_max",
                    };
                    tracing::error!(group = %name, error = %err, "DLQ full");
                    return Err(err);
                }
                Ok(())
            })
            .await
    }

    /// Steps over the damaged stretch at this group's position in `topic`/`partition`: writes
    /// the evidence first (a dead letter with reason `corrupt` holding the stored bytes), then
    /// moves the position to the first readable offset after it, durably. Refused when nothing
    /// is damaged there, or while events before it are in flight.
    pub(crate) async fn skip_damaged(
        self: &Arc<Self>,
        broker: &Broker,
        topic: &str,
        partition: u32,
    ) -> Result<DamageSkipped> {
        let tp: super::state::Tp = (Arc::from(topic), partition);
        let refused = |position: u64, why: String| BrokerError::SkipRefused {
            group: self.name.to_string(),
            topic: topic.to_owned(),
            partition,
            position,
            why,
            in_flight: false,
        };
        self.sync_topology(broker);
        let Some(position) = self.lock().read_position(&tp) else {
            return Err(refused(0, "the group does not read that partition".into()));
        };
        let t = topic.to_owned();
        let range = broker.blocking(move |b| b.partition(&t, partition)?.damaged_range(position)).await?;
        let Some(range) = range else {
            return Err(refused(
                position,
                "a read from there succeeds: nothing is damaged at the group's position".into(),
            ));
        };
        self.lock().check_skip(&tp, range.from)?;
        let _dlq = self.dlq.clone().lock_owned().await;
        self.make_room(broker, 1).await?;
        let letter = dead_letter::damaged_letter(&dead_letter::Damaged {
            group: &self.name,
            topic,
            partition,
            from: range.from,
            to: range.to,
            reason: &range.reason,
            bytes: &range.bytes,
            at_ms: crate::broker::now_ms(),
        });
        let receipts = broker.publish_batch(&dead_letter::dlq_topic(&self.name), vec![letter]).await?;
        let dlq_offset = receipts.first().map_or(0, |r| r.offset);
        let append = {
            let mut st = self.lock();
            let append = st.skip_damaged(&tp, range.from, range.to)?;
            self.wake_if(&mut st);
            append
        };
        let g = self.clone();
        broker.blocking(move |_| g.commit(append)).await?;
        let skipped = DamageSkipped {
            topic: topic.to_owned(),
            partition,
            from: range.from,
            to: range.to,
            reason: range.reason,
            dlq_offset,
            bytes_kept: range.bytes.len(),
        };
        tracing::error!(group = %self.name, topic, partition, from = skipped.from, to = skipped.to, reason = %skipped.reason,
            dlq_offset, "stepped over damaged offsets on the operator's request; the stored bytes are in the DLQ");
        broker.record_skipped_damage(&self.name, &skipped);
        Ok(skipped)
    }

    async fn write_dead_letters(&self, broker: &Broker, batch: &[Outgoing]) -> Result<()> {
        self.make_room(broker, batch.len() as u64).await?;
        let events: Vec<Event> = batch
            .iter()
            .map(|o| {
                Envelope {
                    reason: &o.failures.reason,
                    attempts: o.attempts,
                    topic: &o.topic,
                    partition: o.partition,
                    offset: o.offset,
                    group: &self.name,
                    first_failure_ms: o.failures.first_ms,
                    last_failure_ms: o.failures.last_ms,
                }
                .letter(&o.event)
            })
            .collect();
        let receipts = broker.publish_batch(&dead_letter::dlq_topic(&self.name), events).await?;
        for (o, r) in batch.iter().zip(&receipts) {
            self.history.dead_lettered(&o.topic, o.partition, o.offset, &o.failures.reason, o.attempts, r.offset);
            herald_telemetry::Spans::dead_letter(&o.topic, &o.event, &self.name, &o.failures.reason, o.attempts);
        }
        Ok(())
    }
}

/// Dead letters of `group`, oldest first, at most `max`.
pub(crate) fn dlq_list(broker: &Broker, group: &str, max: usize) -> Result<Vec<DeadLetter>> {
    broker.group(group)?;
    Ok(list(broker, group, max)?.0)
}

/// Dead letters of `group` with `reason`, oldest first, at most `max`: read in chunks, so a
/// large DLQ is never held in memory whole.
pub(crate) fn dlq_list_reason(broker: &Broker, group: &str, reason: &str, max: usize) -> Result<Vec<DeadLetter>> {
    broker.group(group)?;
    let mut out = Vec::new();
    if max > 0 {
        scan(broker, group, |l| {
            if dead_letter::reason(&l.event) == reason {
                out.push(l);
            }
            out.len() < max
        })?;
    }
    Ok(out)
}

/// See [`Broker::dlq_reasons`].
pub(crate) fn dlq_reasons(broker: &Broker, group: &str) -> Result<Reasons> {
    broker.group(group)?;
    let mut reasons = Reasons::default();
    scan(broker, group, |l| {
        reasons.add(&l.event);
        true
    })?;
    Ok(reasons.finish())
}

/// See [`Broker::dlq_held`].
pub(crate) fn held(broker: &Broker, group: &str) -> u64 {
    match dlq_view(broker, group) {
        Ok(Some((p, _, start))) => p.log.latest_offset().saturating_sub(start),
        _ => 0,
    }
}

/// See [`Broker::dlq_replay_selected`].
pub(crate) async fn dlq_replay(broker: &Broker, group: &str, selection: &Selection) -> Result<usize> {
    let g = broker.group(group)?;
    let _dlq = g.dlq.lock().await;
    let name = group.to_owned();
    let (letters, view) = broker.blocking(move |b| list(b, &name, usize::MAX)).await?;
    let Some((p, created, end)) = view else { return Ok(0) };
    let mut replay = Vec::new();
    let mut origins = Vec::new();
    let mut letters_replayed = Vec::new();
    let mut keep = Vec::new();
    for l in letters {
        // A damaged stretch's evidence holds no event to handle: it stays until purged.
        if !selection.selects(l.dlq_offset, &l.event)
            || l.event.ty() == dead_letter::DAMAGED_TYPE
            || dead_letter::replays(&l.event) >= g.config.replays_max
        {
            keep.push(l.event);
        } else {
            replay.push(dead_letter::for_replay(&l.event));
            origins.push(dead_letter::origin(&l.event));
            letters_replayed.push(l.event);
        }
    }
    let count = replay.len();
    if count == 0 {
        // Nothing to replay: the DLQ stays as it is (not rewritten for nothing).
        return Ok(0);
    }
    let topic = dead_letter::replay_topic(group);
    let t = topic.clone();
    broker.blocking(move |b| b.ensure_own_topic(&t, TopicConfig::for_dead_letters())).await?;
    let (g2, b2) = (g.clone(), broker.clone());
    broker
        .blocking(move |_| {
            g2.sync_topology(&b2);
            Ok(())
        })
        .await?;
    if let Ok(t) = broker.topic(&topic) {
        t.listeners.add(&g.notify);
    }
    let receipts = broker.publish_batch(&topic, replay).await?;
    for ((origin, letter), r) in origins.iter().zip(&letters_replayed).zip(&receipts) {
        if let Some((t, p, o)) = origin {
            g.history.replayed(t, *p, *o, (r.topic.to_string(), r.partition, r.offset));
            herald_telemetry::Spans::replay(t, letter, group, &r.topic, r.offset);
        }
    }
    if !keep.is_empty() {
        broker.publish_batch(&dead_letter::dlq_topic(group), keep).await?;
    }
    let name = group.to_owned();
    broker.blocking(move |b| move_start(b, &name, &p, created, end)).await?;
    Ok(count)
}

/// See [`Broker::dlq_purge_selected`].
pub(crate) async fn dlq_purge(broker: &Broker, group: &str, selection: &Selection) -> Result<u64> {
    let g = broker.group(group)?;
    let _dlq = g.dlq.lock().await;
    let name = group.to_owned();
    if *selection == Selection::All {
        return broker
            .blocking(move |b| {
                let Some((p, created, start)) = dlq_view(b, &name)? else { return Ok(0) };
                let end = p.log.latest_offset();
                move_start(b, &name, &p, created, end)?;
                Ok(end - start)
            })
            .await;
    }
    // Some letters go: the others are written again at the DLQ's end first (in their order),
    // then the start moves past all of them. A crash in between shows the kept ones twice.
    let (letters, view) = broker.blocking(move |b| list(b, &name, usize::MAX)).await?;
    let Some((p, created, end)) = view else { return Ok(0) };
    let (purged, keep): (Vec<DeadLetter>, Vec<DeadLetter>) =
        letters.into_iter().partition(|l| selection.selects(l.dlq_offset, &l.event));
    if purged.is_empty() {
        return Ok(0);
    }
    if !keep.is_empty() {
        broker.publish_batch(&dead_letter::dlq_topic(group), keep.into_iter().map(|l| l.event).collect()).await?;
    }
    let name = group.to_owned();
    broker.blocking(move |b| move_start(b, &name, &p, created, end)).await?;
    Ok(purged.len() as u64)
}
