//! One member of a group on JetStream.
//!
//! - **Sharing.** A group has one durable pull consumer per partition. Members register in the
//!   group's lease bucket (a KV bucket whose entries expire after the session timeout unless
//!   renewed) and spread the partitions among themselves: the i-th partition of the sorted list
//!   belongs to the i-th member (mod count) of the sorted member list. A member pulls a
//!   partition only while it holds the partition's lease (created with compare-and-set, renewed
//!   with compare-and-set on its revision).
//! - **Takeover.** A new owner hands nothing of a partition out until every message outstanding
//!   on its consumer is held by itself (`num_ack_pending` ≤ what it holds): what the previous
//!   owner still handles is settled by it or redelivered after the ack wait, so a key's later
//!   event never overtakes an earlier one.
//! - **Order.** Messages arrive in stream order and are held locally; a key has one message out
//!   at a time, and (blocking retries) a nacked message keeps holding its key until its
//!   redelivery is settled. Held messages get in-progress acks, so they do not time out.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::Subject;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::message::{AckKind, Acker};
use async_nats::jetstream::{self, kv};
use async_trait::async_trait;
use futures::StreamExt;
use herald_core::Event;
use herald_core::codec::binary;
use herald_model::dead_letter::Envelope;
use herald_model::{GroupConfig, OrderingMode};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Inner, consumer_config, names, unavailable};
use crate::backend::{Message, SubscribeOptions, Subscription};
use crate::error::{Code, Error, Result};

/// How long one pull request waits on the server.
const PULL_EXPIRES: Duration = Duration::from_secs(1);
/// Nak delay for messages given back unhandled (0 would mean "use the backoff").
const GIVE_BACK: Duration = Duration::from_millis(1);

/// One partition of the group.
struct Part {
    /// The topic shown to the handler (`<group>.replay` for replays).
    topic: Arc<str>,
    partition: u32,
    consumer: PullConsumer,
    lease_key: String,
}

/// A message received and not handed out yet.
struct Held {
    reply: Subject,
    attempt: u32,
    event: Event,
    append_ms: i64,
    key: Option<Arc<str>>,
}

/// A partition this member owns (holds the lease of).
struct Owned {
    epoch: u64,
    revision: u64,
    /// Hands out only once it holds everything outstanding on the consumer.
    ready: bool,
    /// Being given up: nothing more is handed out.
    releasing: bool,
    held: BTreeMap<u64, Held>,
    /// Handed out, not settled: sequence → reply subject (for in-progress acks).
    out: HashMap<u64, Subject>,
    /// Of those, the ones a settle is under way for: a second settle of one is refused.
    settling: std::collections::HashSet<u64>,
    /// Keys with a message out or awaiting its redelivery → that message's sequence, and when
    /// to stop waiting for a redelivery that may never come (an ack whose answer was lost may
    /// have been applied).
    blocked: HashMap<Arc<str>, (u64, Option<Instant>)>,
    stop: CancellationToken,
    puller: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct State {
    owned: HashMap<usize, Owned>,
    next_epoch: u64,
    /// First failure (ms) of messages that failed and are not settled yet.
    failures: HashMap<(usize, u64), i64>,
    cursor: usize,
}

struct Token {
    idx: usize,
    epoch: u64,
    seq: u64,
    reply: Subject,
    key: Option<Arc<str>>,
}

struct Shared {
    inner: Arc<Inner>,
    group: String,
    member: String,
    config: GroupConfig,
    max_in_flight: u32,
    parts: Vec<Arc<Part>>,
    leases: kv::Store,
    state: Mutex<State>,
    notify: Notify,
    stop: CancellationToken,
}

pub(crate) struct NatsSubscription {
    shared: Arc<Shared>,
    coordinator: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn closed() -> Error {
    Error::new(Code::Closed, "the subscription is closed")
}

impl NatsSubscription {
    pub(crate) async fn start(
        inner: Arc<Inner>,
        group: &str,
        config: GroupConfig,
        options: SubscribeOptions,
    ) -> Result<NatsSubscription> {
        inner.dlq_stream(group).await?;
        inner.replay_stream(group).await?;
        let mut parts = Vec::new();
        for (topic, p) in inner.group_partitions(group, &config).await? {
            let replay = topic == names::replay_topic(group);
            let (stream, filter) = if replay {
                (names::replay_stream(group), names::replay_subject(group))
            } else {
                (names::topic_stream(&topic), names::topic_subject(&topic, p))
            };
            let stream = inner.js.get_stream_no_info(&stream).await.map_err(|e| unavailable("reading a stream", e))?;
            let name = names::consumer(group, p);
            let cfg = consumer_config(name.clone(), filter, &config, options.max_in_flight);
            let consumer: PullConsumer = stream
                .get_or_create_consumer(&name, cfg)
                .await
                .map_err(|e| unavailable(&format!("creating consumer {name}"), e))?;
            parts.push(Arc::new(Part {
                lease_key: names::lease_key(&topic, p),
                topic: topic.into(),
                partition: p,
                consumer,
            }));
        }
        let bucket = names::lease_bucket(group);
        let leases = match inner.js.get_key_value(&bucket).await {
            Ok(kv) => kv,
            Err(_) => inner
                .js
                .create_key_value(kv::Config {
                    bucket: bucket.clone(),
                    history: 1,
                    max_age: Duration::from_millis(config.session_timeout_ms.max(100)),
                    storage: jetstream::stream::StorageType::File,
                    num_replicas: inner.settings.replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| unavailable(&format!("creating the lease bucket {bucket}"), e))?,
        };
        let shared = Arc::new(Shared {
            inner,
            group: group.to_owned(),
            member: format!("{:016x}", rand::random::<u64>()),
            config,
            max_in_flight: options.max_in_flight.max(1),
            parts,
            leases,
            state: Mutex::default(),
            notify: Notify::new(),
            stop: CancellationToken::new(),
        });
        // The first balance runs before `subscribe` returns, so a lone member owns its
        // partitions at once.
        if let Err(e) = shared.balance().await {
            tracing::warn!(group, error = %e, "first partition balance failed; retrying in the background");
        }
        let coordinator = tokio::spawn(shared.clone().coordinate());
        Ok(NatsSubscription { shared, coordinator: tokio::sync::Mutex::new(Some(coordinator)) })
    }
}

impl Shared {
    fn blocking_key(&self, event: &Event) -> Option<Arc<str>> {
        match self.config.ordering {
            OrderingMode::Key => event.key().map(Arc::from),
            OrderingMode::Partition => Some(Arc::from("")),
            OrderingMode::None => None,
        }
    }

    fn acker(&self, reply: &Subject) -> Acker {
        Acker::new(self.inner.js.clone(), Some(reply.clone()))
    }

    /// Renews membership and leases, gives up partitions now meant for others, takes free ones.
    async fn balance(self: &Arc<Self>) -> Result<()> {
        let kv_err = |what: &str, e: &dyn std::fmt::Display| unavailable(what, e);
        self.leases
            .put(names::member_key(&self.member), "".into())
            .await
            .map_err(|e| kv_err("renewing group membership", &e))?;
        let mut members = Vec::new();
        let mut keys = self.leases.keys().await.map_err(|e| kv_err("listing group members", &e))?;
        while let Some(k) = keys.next().await {
            let k = k.map_err(|e| kv_err("listing group members", &e))?;
            if let Some(m) = k.strip_prefix("m.") {
                members.push(m.to_owned());
            }
        }
        if !members.contains(&self.member) {
            members.push(self.member.clone());
        }
        members.sort();
        let me = members.iter().position(|m| *m == self.member).expect("listed");
        let desired: HashSet<usize> = (0..self.parts.len()).filter(|i| i % members.len() == me).collect();
        let owned: Vec<(usize, u64, u64)> = {
            let st = self.state.lock().expect("state lock poisoned");
            st.owned.iter().filter(|(_, o)| !o.releasing).map(|(i, o)| (*i, o.epoch, o.revision)).collect()
        };
        for (idx, epoch, rev) in owned {
            if !desired.contains(&idx) {
                self.release(idx, epoch, true).await;
                continue;
            }
            match self.leases.update(&self.parts[idx].lease_key, self.member.clone().into(), rev).await {
                Ok(new) => {
                    let mut st = self.state.lock().expect("state lock poisoned");
                    if let Some(o) = st.owned.get_mut(&idx).filter(|o| o.epoch == epoch) {
                        o.revision = new;
                    }
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    tracing::warn!(group = %self.group, topic = %self.parts[idx].topic, partition = self.parts[idx].partition,
                        "lost the lease of a partition (expired); giving it up");
                    self.release(idx, epoch, false).await;
                }
                Err(e) => return Err(kv_err("renewing a partition lease", &e)),
            }
        }
        let mut wanted: Vec<usize> = desired.into_iter().collect();
        wanted.sort();
        for idx in wanted {
            if self.state.lock().expect("state lock poisoned").owned.contains_key(&idx) {
                continue;
            }
            match self.leases.create(&self.parts[idx].lease_key, self.member.clone().into()).await {
                Ok(rev) => self.own(idx, rev),
                // Another member holds it still: it gives it up at its next balance, or its
                // lease expires after the session timeout.
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                Err(e) => return Err(kv_err("taking a partition lease", &e)),
            }
        }
        Ok(())
    }

    fn own(self: &Arc<Self>, idx: usize, revision: u64) {
        let mut st = self.state.lock().expect("state lock poisoned");
        st.next_epoch += 1;
        let epoch = st.next_epoch;
        let stop = self.stop.child_token();
        let puller = tokio::spawn(self.clone().pull(idx, epoch, stop.clone()));
        st.owned.insert(
            idx,
            Owned {
                epoch,
                revision,
                ready: false,
                releasing: false,
                held: BTreeMap::new(),
                out: HashMap::new(),
                settling: Default::default(),
                blocked: HashMap::new(),
                stop,
                puller: Some(puller),
            },
        );
        tracing::debug!(group = %self.group, member = %self.member, topic = %self.parts[idx].topic,
            partition = self.parts[idx].partition, "took a partition");
    }

    /// Gives a partition up: stops pulling (the current pull ends within its expiry), gives the
    /// held messages back in order, and deletes the lease if `delete_lease`.
    async fn release(&self, idx: usize, epoch: u64, delete_lease: bool) {
        let (stop, puller) = {
            let mut st = self.state.lock().expect("state lock poisoned");
            let Some(o) = st.owned.get_mut(&idx).filter(|o| o.epoch == epoch) else { return };
            o.releasing = true;
            o.ready = false;
            (o.stop.clone(), o.puller.take())
        };
        stop.cancel();
        if let Some(p) = puller {
            let _ = p.await;
        }
        let (held, revision) = {
            let mut st = self.state.lock().expect("state lock poisoned");
            st.failures.retain(|(i, _), _| *i != idx);
            match st.owned.remove(&idx) {
                Some(o) => (o.held, o.revision),
                None => return,
            }
        };
        for h in held.values() {
            let _ = self.acker(&h.reply).ack_with(AckKind::Nak(Some(GIVE_BACK))).await;
        }
        if delete_lease {
            let _ = self.leases.delete_expect_revision(&self.parts[idx].lease_key, Some(revision)).await;
        }
        self.notify.notify_waiters();
    }

    /// Pulls one partition into `held` until stopped; a pull in progress when stopped is
    /// completed and what it brings is given back.
    async fn pull(self: Arc<Self>, idx: usize, epoch: u64, stop: CancellationToken) {
        let part = self.parts[idx].clone();
        let batch = self.max_in_flight as usize;
        while !stop.is_cancelled() {
            let request = part.consumer.batch().max_messages(batch).expires(PULL_EXPIRES).messages().await;
            let mut messages = match request {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!(group = %self.group, error = %e, "pull failed; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                    }
                }
            };
            // What arrives once the partition is being given up goes back after this pull has
            // ended: given back earlier, it would be redelivered into this same pull at once.
            let mut give_back = Vec::new();
            loop {
                match tokio::time::timeout(PULL_EXPIRES + Duration::from_secs(2), messages.next()).await {
                    Ok(Some(Ok(m))) => give_back.extend(self.received(idx, epoch, &stop, m).await),
                    Ok(Some(Err(e))) => {
                        tracing::debug!(group = %self.group, error = %e, "pull ended with an error");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        break;
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            drop(messages);
            for reply in give_back {
                let _ = self.acker(&reply).ack_with(AckKind::Nak(Some(GIVE_BACK))).await;
            }
        }
    }

    /// Holds a pulled message; returns its reply subject if it must be given back instead.
    async fn received(
        &self,
        idx: usize,
        epoch: u64,
        stop: &CancellationToken,
        m: jetstream::Message,
    ) -> Option<Subject> {
        let reply = m.reply.clone()?;
        let Ok((seq, delivered, published_ms)) =
            m.info().map(|i| (i.stream_sequence, i.delivered, (i.published.unix_timestamp_nanos() / 1_000_000) as i64))
        else {
            return None;
        };
        let (message, acker) = m.split();
        let event = match binary::decode_with(&message.payload, &herald_core::Limits::HARD) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(group = %self.group, seq, error = %e, "not a Herald event; terminating it");
                let _ = acker.ack_with(AckKind::Term).await;
                return None;
            }
        };
        let key = self.blocking_key(&event);
        let mut st = self.state.lock().expect("state lock poisoned");
        match st.owned.get_mut(&idx).filter(|o| o.epoch == epoch && !o.releasing && !stop.is_cancelled()) {
            Some(o) => {
                let attempt = u32::try_from(delivered.max(1)).unwrap_or(u32::MAX);
                o.held.insert(seq, Held { reply, attempt, event, append_ms: published_ms, key });
                drop(st);
                self.notify.notify_waiters();
                None
            }
            None => Some(reply),
        }
    }

    /// Hands out up to `max` messages that their keys allow.
    fn take(&self, max: usize) -> Vec<Message> {
        let mut st = self.state.lock().expect("state lock poisoned");
        let mut idxs: Vec<usize> = st.owned.keys().copied().collect();
        idxs.sort();
        if !idxs.is_empty() {
            let c = st.cursor % idxs.len();
            idxs.rotate_left(c);
            st.cursor = st.cursor.wrapping_add(1);
        }
        let mut out = Vec::new();
        for idx in idxs {
            if out.len() >= max {
                break;
            }
            let part = self.parts[idx].clone();
            let Some(o) = st.owned.get_mut(&idx) else { continue };
            if !o.ready || o.releasing {
                continue;
            }
            let now = Instant::now();
            o.blocked.retain(|_, (_, until)| until.is_none_or(|u| u > now));
            let mut taken = Vec::new();
            for (&seq, h) in &o.held {
                if out.len() + taken.len() >= max {
                    break;
                }
                if o.out.contains_key(&seq) {
                    continue;
                }
                if let Some(k) = &h.key {
                    match o.blocked.get(k) {
                        Some(&(s, _)) if s != seq => continue,
                        Some(_) => {
                            o.blocked.insert(k.clone(), (seq, None));
                        }
                        None => {
                            o.blocked.insert(k.clone(), (seq, None));
                        }
                    }
                }
                taken.push(seq);
            }
            for seq in taken {
                let h = o.held.remove(&seq).expect("taken from held");
                o.out.insert(seq, h.reply.clone());
                let token = Token { idx, epoch: o.epoch, seq, reply: h.reply, key: h.key };
                out.push(Message {
                    event: h.event,
                    topic: part.topic.clone(),
                    partition: part.partition,
                    offset: seq,
                    attempt: h.attempt,
                    append_time_ms: h.append_ms,
                    handler_duration: None,
                    token: Arc::new(token),
                });
            }
        }
        out
    }

    /// Refuses to settle a message that is not in flight for this member: settled already (a
    /// second ack), or of a partition this member no longer owns — as on every backend.
    fn check_in_flight(&self, t: &Token, m: &Message) -> Result<()> {
        let mut st = self.state.lock().expect("state lock poisoned");
        match st.owned.get_mut(&t.idx).filter(|o| o.epoch == t.epoch) {
            // Claimed under the lock: two settles racing for one message cannot both go ahead.
            Some(o) if o.out.get(&t.seq) == Some(&t.reply) && !o.settling.contains(&t.seq) => {
                o.settling.insert(t.seq);
                Ok(())
            }
            Some(_) => Err(Error::new(
                Code::NotInFlight,
                format!(
                    "{}/{}@{} is not in flight for member {:?} of group {:?} (already settled, or redelivered)",
                    m.topic, m.partition, m.offset, self.member, self.group
                ),
            )),
            None => Err(Error::new(
                Code::StaleGeneration,
                format!(
                    "{}/{} was reassigned away from member {:?} of group {:?}: drop the event, it will be redelivered to its new owner",
                    m.topic, m.partition, self.member, self.group
                ),
            )),
        }
    }

    /// After a settle: `done` (acked or dead-lettered) frees the key; otherwise (nacked) the
    /// key stays held under blocking retries until the redelivery is settled.
    fn settled(&self, t: &Token, done: bool) {
        let mut st = self.state.lock().expect("state lock poisoned");
        let blocking = self.config.blocking_retries;
        if let Some(o) = st.owned.get_mut(&t.idx).filter(|o| o.epoch == t.epoch) {
            o.out.remove(&t.seq);
            o.settling.remove(&t.seq);
            if done {
                o.held.remove(&t.seq);
            }
            if (done || !blocking)
                && let Some(k) = &t.key
                && o.blocked.get(k).is_some_and(|(s, _)| *s == t.seq)
            {
                o.blocked.remove(k);
            }
        }
        if done {
            st.failures.remove(&(t.idx, t.seq));
        } else {
            st.failures.entry((t.idx, t.seq)).or_insert_with(now_ms);
        }
        drop(st);
        self.notify.notify_waiters();
    }

    /// A settle whose answer did not come: if it did not reach the server, the message is
    /// redelivered after its ack wait (+ backoff), so its key stays held until then; if an ack
    /// was applied nothing comes back, so the key is freed after that time.
    fn unsettled(&self, t: &Token, attempt: u32, was_ack: bool) {
        let mut st = self.state.lock().expect("state lock poisoned");
        if let Some(o) = st.owned.get_mut(&t.idx).filter(|o| o.epoch == t.epoch) {
            o.out.remove(&t.seq);
            o.settling.remove(&t.seq);
            if was_ack && let Some(k) = &t.key {
                let wait = Duration::from_millis(self.config.ack_timeout_ms)
                    + self.config.retry.backoff_ceiling(attempt)
                    + Duration::from_secs(2);
                if let Some(b) = o.blocked.get_mut(k).filter(|(s, _)| *s == t.seq) {
                    b.1 = Some(Instant::now() + wait);
                }
            }
        }
        drop(st);
        self.notify.notify_waiters();
    }

    /// Marks partitions ready once they hold everything outstanding on their consumer.
    async fn check_ready(&self) {
        let pending: Vec<(usize, u64, usize)> = {
            let st = self.state.lock().expect("state lock poisoned");
            st.owned
                .iter()
                .filter(|(_, o)| !o.ready && !o.releasing)
                .map(|(i, o)| (*i, o.epoch, o.held.len() + o.out.len()))
                .collect()
        };
        for (idx, epoch, local) in pending {
            let Ok(info) = self.parts[idx].consumer.get_info().await else { continue };
            if info.num_ack_pending <= local {
                let mut st = self.state.lock().expect("state lock poisoned");
                if let Some(o) = st.owned.get_mut(&idx).filter(|o| o.epoch == epoch) {
                    o.ready = true;
                }
                drop(st);
                self.notify.notify_waiters();
            }
        }
    }

    /// In-progress acks for everything held or out, so that nothing times out while it waits
    /// for its key.
    async fn progress(&self) {
        let replies: Vec<Subject> = {
            let st = self.state.lock().expect("state lock poisoned");
            st.owned
                .values()
                .flat_map(|o| o.held.values().map(|h| h.reply.clone()).chain(o.out.values().cloned()))
                .collect()
        };
        for r in replies {
            let _ = self.acker(&r).ack_with(AckKind::Progress).await;
        }
    }

    async fn coordinate(self: Arc<Self>) {
        let session = Duration::from_millis(self.config.session_timeout_ms);
        let tick = (session / 4).clamp(Duration::from_millis(50), Duration::from_millis(500));
        let progress_every = (Duration::from_millis(self.config.ack_timeout_ms) / 3).max(Duration::from_millis(20));
        let mut last_progress = Instant::now();
        let mut quick = 0;
        loop {
            if let Err(e) = self.balance().await {
                tracing::warn!(group = %self.group, error = %e, "partition balance failed; retrying");
            }
            self.check_ready().await;
            if last_progress.elapsed() >= progress_every {
                self.progress().await;
                last_progress = Instant::now();
            }
            // Partitions waiting to be ready are checked often at first.
            let waiting = self.state.lock().expect("state lock poisoned").owned.values().any(|o| !o.ready);
            let pause = if waiting && quick < 50 {
                quick += 1;
                Duration::from_millis(50)
            } else {
                if !waiting {
                    quick = 0;
                }
                tick
            };
            tokio::select! {
                _ = self.stop.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
        let owned: Vec<(usize, u64)> = {
            let st = self.state.lock().expect("state lock poisoned");
            st.owned.iter().map(|(i, o)| (*i, o.epoch)).collect()
        };
        for (idx, epoch) in owned {
            self.release(idx, epoch, true).await;
        }
        let _ = self.leases.delete(names::member_key(&self.member)).await;
    }

    fn dead_letter(&self, m: &Message, t: &Token, reason: &str) -> Event {
        let first = self.state.lock().expect("state lock poisoned").failures.get(&(t.idx, t.seq)).copied();
        let now = now_ms();
        Envelope {
            reason,
            attempts: m.attempt,
            topic: &m.topic,
            partition: m.partition,
            offset: m.offset,
            group: &self.group,
            first_failure_ms: first.unwrap_or(now),
            last_failure_ms: now,
        }
        .letter(&m.event)
    }
}

fn token(m: &Message) -> &Token {
    m.token.downcast_ref::<Token>().expect("a NATS message carries its token")
}

impl Drop for NatsSubscription {
    fn drop(&mut self) {
        // Leaving without `close`: the coordinator gives the partitions back in the background.
        self.shared.stop.cancel();
    }
}

#[async_trait]
impl Subscription for NatsSubscription {
    fn settings(&self) -> &GroupConfig {
        &self.shared.config
    }

    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Message>> {
        let s = &self.shared;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = s.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if s.stop.is_cancelled() {
                return Err(closed());
            }
            let out = s.take(max.max(1));
            if !out.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(out);
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = s.stop.cancelled() => {}
            }
        }
    }

    async fn ack(&self, message: &Message) -> Result<()> {
        let t = token(message);
        self.shared.check_in_flight(t, message)?;
        match self.shared.acker(&t.reply).double_ack().await {
            Ok(()) => {
                self.shared.settled(t, true);
                Ok(())
            }
            Err(e) => {
                self.shared.unsettled(t, message.attempt, true);
                Err(unavailable("acking", e))
            }
        }
    }

    async fn nack(&self, message: &Message, delay: Option<Duration>, _reason: &str) -> Result<()> {
        let t = token(message);
        self.shared.check_in_flight(t, message)?;
        let delay = delay.unwrap_or_else(|| self.shared.config.retry.backoff(message.attempt)).max(GIVE_BACK);
        match self.shared.acker(&t.reply).double_ack_with(AckKind::Nak(Some(delay))).await {
            Ok(()) => {
                self.shared.settled(t, false);
                Ok(())
            }
            Err(e) => {
                self.shared.unsettled(t, message.attempt, false);
                Err(unavailable("nacking", e))
            }
        }
    }

    async fn reject(&self, message: &Message, reason: &str) -> Result<()> {
        let t = token(message);
        self.shared.check_in_flight(t, message)?;
        let letter = self.shared.dead_letter(message, t, reason);
        // The dead letter is stored first, then the message terminated: a crash in between
        // redelivers it and its dead letter is deduplicated by its id.
        let id = format!("dlq:{}:{}:{}", names::esc(&message.topic), message.partition, message.offset);
        if let Err(e) =
            self.shared.inner.publish_side(&names::dlq_subject(&self.shared.group), vec![(id, letter)]).await
        {
            self.shared.unsettled(t, message.attempt, false);
            return Err(e);
        }
        match self.shared.acker(&t.reply).double_ack_with(AckKind::Term).await {
            Ok(()) => {
                self.shared.settled(t, true);
                Ok(())
            }
            Err(e) => {
                self.shared.unsettled(t, message.attempt, true);
                Err(unavailable("terminating a dead-lettered message", e))
            }
        }
    }

    async fn close(&self) -> Result<()> {
        self.shared.stop.cancel();
        if let Some(c) = self.coordinator.lock().await.take() {
            let _ = c.await;
        }
        Ok(())
    }
}
