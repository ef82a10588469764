//! One subscription over `herald://`: a `Subscribe` stream (one group member on the server) kept
//! by a background task.
//!
//! - The stream opens with `Join` (whose `max_in_flight` is also the server's initial credit).
//!   The task reads what the server sends: deliveries go into a buffer that `fetch` empties,
//!   settlement results go to the `ack`/`nack`/`reject` calls waiting for them.
//! - Flow control: every delivery spends one credit; `fetch` grants the credit back as it hands
//!   messages out. So the buffer never holds more than `max_in_flight` messages, and the broker
//!   bounds what is handed out and unsettled by the same number.
//! - When the stream breaks (the server restarted, the network failed), the task re-joins the
//!   group on a new stream, retrying with capped exponential backoff, while `fetch` keeps
//!   answering (with nothing until the new stream delivers). What the old stream delivered can
//!   no longer be settled: its member left the group, the broker redelivers those events, and
//!   settling one fails with [`crate::ErrorKind::Stale`]. A failure to re-join that is not a transport
//!   failure (the group's topic was deleted, say) is returned once by the next `fetch`.
//! - Acks are batched: `ack` queues the id and waits; a task per subscription sends everything
//!   queued as one `Acks` message (with up to [`ACK_BATCHES_MAX`] of them unanswered), so that a
//!   busy consumer sends one message per batch of acks, not per event, and an idle one is not
//!   delayed (the first ack goes at once). Servers that do not say `batched_acks` get a `Settle`
//!   per ack.
//! - `close` ends the stream, which makes the server's member leave the group, and waits
//!   (bounded) until the server has ended its side, i.e. until the member is gone.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use herald_proto::v1;
use herald_proto::v1::events_client::EventsClient;
use herald_proto::v1::settle::Kind;
use herald_proto::v1::subscribe_request::Msg as Up;
use herald_proto::v1::subscribe_response::Msg as Down;
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;

use super::{IDEMPOTENT_ATTEMPTS, IDEMPOTENT_RETRY_PAUSE, coded_error, status_error};
use crate::backend::GroupConfig;
use crate::backend::{Message, Subscription};
use crate::error::{Code, Error, Result};

/// Requests (settlements, credit) queued towards the server before senders wait.
const REQUESTS_MAX: usize = 64;
/// Longest wait for the server to accept a `Join` (it may create the group, which is fsynced).
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the answer to a settlement.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `close` waits for the server to confirm the member left.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Re-joining after the stream broke: the first pause, doubled after each failure up to the cap.
const REJOIN_PAUSE_MIN: Duration = Duration::from_millis(50);
const REJOIN_PAUSE_MAX: Duration = Duration::from_secs(2);
/// The longest `fetch` waits when asked to wait longer than can be counted.
const FETCH_WAIT_MAX: Duration = Duration::from_secs(365 * 24 * 3600);
/// A nack or reject reason is cut to this many bytes (the server keeps no more).
const REASON_BYTES_MAX: usize = 1024;
/// Most ids in one `Acks` message (the server takes up to 10,000).
const ACKS_PER_MESSAGE_MAX: usize = 4096;
/// `Acks` messages sent and not yet answered, per subscription.
const ACK_BATCHES_MAX: usize = 8;

/// Identifies subscriptions, so that a message is only settled through the one it came from.
static NEXT_SUBSCRIPTION: AtomicU64 = AtomicU64::new(1);

/// What a remote message carries to be settled.
struct Token {
    subscription: u64,
    /// The stream it came on.
    epoch: u64,
    id: v1::DeliveryId,
}

/// One open `Subscribe` stream: requests up, responses down.
struct Stream {
    requests: mpsc::Sender<v1::SubscribeRequest>,
    responses: Streaming<v1::SubscribeResponse>,
    /// The group's settings in effect, from the server's `Joined` (`None` from a server too old
    /// to send them).
    settings: Option<GroupConfig>,
    /// The server takes `Acks`.
    batched_acks: bool,
}

/// An ack waiting to go out in an `Acks` message.
struct AckRequest {
    epoch: u64,
    id: v1::DeliveryId,
    /// How long the handler ran, µs (0: not reported).
    handler_micros: u64,
    what: String,
    answer: oneshot::Sender<Result<()>>,
}

/// An `Acks` message sent and not answered yet.
struct AckBatch {
    waiting: Vec<(String, oneshot::Sender<Result<()>>)>,
    /// Its place among the [`ACK_BATCHES_MAX`]; freed with the answer.
    _permit: tokio::sync::OwnedSemaphorePermit,
}

pub(super) struct RemoteSubscription {
    shared: Arc<Shared>,
    settings: GroupConfig,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// What the subscription's caller and its background task share.
struct Shared {
    id: u64,
    addr: Arc<str>,
    group: String,
    max_in_flight: u32,
    state: Mutex<State>,
    /// Woken when messages arrive and when the subscription ends.
    arrived: Notify,
    /// Cancelled by `close`, by dropping the subscription, or by closing the client.
    stop: CancellationToken,
    /// One permit per settlement on its way or waiting for its answer.
    settles: Semaphore,
    /// Acks for the batching task.
    acks: mpsc::Sender<AckRequest>,
    /// One permit per `Acks` message unanswered.
    ack_batches: Arc<Semaphore>,
}

struct State {
    /// Counts the streams joined; a message carries the one it came on.
    epoch: u64,
    /// Where requests to the current stream go; `None` while re-joining and once closed.
    link: Option<mpsc::Sender<v1::SubscribeRequest>>,
    /// Delivered and not yet fetched: at most `max_in_flight` (the server's credit).
    buffer: VecDeque<Message>,
    /// Credit earned by fetches and not sent yet (no stream: re-joining).
    owed: u32,
    /// Settlements sent on the current stream, waiting for their result.
    pending: HashMap<u64, oneshot::Sender<v1::SettleResult>>,
    /// `Acks` sent on the current stream, waiting for their result.
    pending_acks: HashMap<u64, AckBatch>,
    /// The current stream's server takes `Acks`.
    batched_acks: bool,
    next_seq: u64,
    /// A failure to re-join worth telling the caller: the next `fetch` returns it.
    error: Option<Error>,
    closed: bool,
}

/// Why a stream stopped being read.
enum End {
    /// The subscription is closing.
    Stop,
    /// The stream broke; why.
    Broken(String),
}

impl RemoteSubscription {
    /// Joins the group on a new stream (retrying a server that could not be reached a few times
    /// within a second), then keeps the stream in a background task.
    pub(super) async fn open(
        addr: Arc<str>,
        events: EventsClient<super::Wire>,
        join: v1::Join,
        stop: CancellationToken,
    ) -> Result<RemoteSubscription> {
        let mut pause = IDEMPOTENT_RETRY_PAUSE;
        let mut attempt = 1;
        let stream = loop {
            match open_stream(&addr, &events, &join).await {
                Ok(s) => break s,
                Err(e) if matches!(e.code(), Code::Unavailable) && attempt < IDEMPOTENT_ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(pause).await;
                    pause *= 4;
                }
                Err(e) => return Err(e),
            }
        };
        // Bounded by what can be unsettled: a member holds at most max_in_flight deliveries.
        let (acks_tx, acks_rx) = mpsc::channel(join.max_in_flight.max(1) as usize);
        let shared = Arc::new(Shared {
            id: NEXT_SUBSCRIPTION.fetch_add(1, Ordering::Relaxed),
            addr,
            group: join.group.clone(),
            max_in_flight: join.max_in_flight,
            state: Mutex::new(State {
                epoch: 0,
                link: None,
                buffer: VecDeque::new(),
                owed: 0,
                pending: HashMap::new(),
                pending_acks: HashMap::new(),
                batched_acks: false,
                next_seq: 0,
                error: None,
                closed: false,
            }),
            arrived: Notify::new(),
            stop,
            settles: Semaphore::new(join.max_in_flight as usize),
            acks: acks_tx,
            ack_batches: Arc::new(Semaphore::new(ACK_BATCHES_MAX)),
        });
        // Attached before the task starts, so that the first fetch already waits on this stream.
        let epoch = shared.attach(stream.requests.clone(), stream.batched_acks);
        tokio::spawn(send_acks(shared.clone(), acks_rx));
        let asked = || herald_proto::group_config_from_proto(join.settings.clone().unwrap_or_default());
        let settings = stream.settings.clone().unwrap_or_else(asked);
        let task = tokio::spawn(keep(shared.clone(), events, join, stream, epoch));
        Ok(RemoteSubscription { shared, settings, task: Mutex::new(Some(task)) })
    }
}

/// Opens a `Subscribe` stream and sends `Join`; the call returns once the server has joined the
/// group (or refused).
async fn open_stream(addr: &str, events: &EventsClient<super::Wire>, join: &v1::Join) -> Result<Stream> {
    let what = format!("join group {:?}", join.group);
    let (requests, rx) = mpsc::channel(REQUESTS_MAX);
    requests.try_send(v1::SubscribeRequest { msg: Some(Up::Join(join.clone())) }).expect("a new channel has room");
    let mut client = events.clone();
    let joined = async {
        let mut responses = client.subscribe(ReceiverStream::new(rx)).await?.into_inner();
        // The server answers a join with `Joined` first: it names the settings in effect.
        let first = responses.message().await?;
        Ok::<_, tonic::Status>((responses, first))
    };
    match tokio::time::timeout(JOIN_TIMEOUT, joined).await {
        Ok(Ok((responses, first))) => {
            let (settings, batched_acks) = match first.and_then(|m| m.msg) {
                Some(Down::Joined(j)) => {
                    tracing::debug!(addr, group = %join.group, member = %j.member_id, generation = j.generation, "joined");
                    (j.settings.map(herald_proto::group_config_from_proto), j.batched_acks)
                }
                _ => {
                    return Err(Error::new(
                        Code::Unavailable,
                        format!("herald://{addr}: {what}: the stream ended or did not start with Joined"),
                    ));
                }
            };
            Ok(Stream { requests, responses, settings, batched_acks })
        }
        Ok(Err(s)) => Err(status_error(addr, &what, &s)),
        Err(_) => Err(Error::new(
            Code::Unavailable,
            format!("herald://{addr}: {what}: no answer within {} s", JOIN_TIMEOUT.as_secs()),
        )),
    }
}

/// The background task: reads the stream, and re-joins whenever it breaks, until stopped.
async fn keep(shared: Arc<Shared>, events: EventsClient<super::Wire>, join: v1::Join, first: Stream, epoch: u64) {
    let mut stream = first;
    let mut epoch = epoch;
    loop {
        match shared.pump(epoch, &mut stream.responses).await {
            End::Stop => {
                shared.leave(stream).await;
                return;
            }
            End::Broken(why) => {
                tracing::warn!(addr = %shared.addr, group = %shared.group, reason = %why,
                    "subscription stream broke; re-joining the group (events delivered on it will be redelivered)");
                shared.detach();
                drop(stream);
            }
        }
        let mut pause = REJOIN_PAUSE_MIN;
        stream = loop {
            let jittered = pause.mul_f64(rand::random_range(0.8..=1.0));
            tokio::select! {
                () = shared.stop.cancelled() => return shared.finish(),
                () = tokio::time::sleep(jittered) => {}
            }
            let opened = tokio::select! {
                () = shared.stop.cancelled() => return shared.finish(),
                r = open_stream(&shared.addr, &events, &join) => r,
            };
            match opened {
                Ok(s) => break s,
                Err(e) => {
                    tracing::debug!(addr = %shared.addr, group = %shared.group, error = %e, "re-joining failed; retrying");
                    if !e.is_retryable() {
                        shared.lock().error = Some(e);
                        shared.arrived.notify_waiters();
                    }
                    pause = (pause * 2).min(REJOIN_PAUSE_MAX);
                }
            }
        };
        epoch = shared.attach(stream.requests.clone(), stream.batched_acks);
        metrics::counter!("herald_client_rejoins_total", "group" => shared.group.clone()).increment(1);
        tracing::info!(addr = %shared.addr, group = %shared.group, "subscription re-joined the group");
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("subscription state lock poisoned")
    }

    fn closed_error(&self) -> Error {
        Error::new(Code::Closed, format!("the subscription to group {:?} is closed", self.group))
    }

    fn stale_error(&self, what: &str, why: &str) -> Error {
        Error::new(
            Code::StaleGeneration,
            format!(
                "herald://{}: {what}: {why}; the member that received it left group {:?}, which redelivers it",
                self.addr, self.group
            ),
        )
    }

    /// A new stream is the current one; returns its epoch.
    fn attach(&self, link: mpsc::Sender<v1::SubscribeRequest>, batched_acks: bool) -> u64 {
        let mut st = self.lock();
        st.epoch += 1;
        st.link = Some(link);
        st.batched_acks = batched_acks;
        // The new member starts with full credit; nothing of an older stream can be settled.
        st.buffer.clear();
        st.owed = 0;
        st.pending.clear();
        st.pending_acks.clear();
        st.epoch
    }

    /// The current stream broke: its deliveries are void, its pending settlements unanswered.
    fn detach(&self) {
        let mut st = self.lock();
        st.link = None;
        st.buffer.clear();
        st.owed = 0;
        st.pending.clear();
        st.pending_acks.clear();
    }

    /// Nothing works any more.
    fn finish(&self) {
        let mut st = self.lock();
        st.closed = true;
        st.link = None;
        st.buffer.clear();
        st.pending.clear();
        st.pending_acks.clear();
        drop(st);
        self.arrived.notify_waiters();
    }

    /// Reads one stream until it breaks or the subscription stops.
    async fn pump(&self, epoch: u64, responses: &mut Streaming<v1::SubscribeResponse>) -> End {
        loop {
            tokio::select! {
                biased;
                () = self.stop.cancelled() => return End::Stop,
                m = responses.message() => match m {
                    Ok(Some(m)) => self.receive(epoch, m),
                    Ok(None) => return End::Broken("the server ended the stream".into()),
                    Err(s) => {
                        let e = status_error(&self.addr, "subscription", &s);
                        let why = e.to_string();
                        // Damaged data is not a broken connection: the caller must hear of it
                        // (the group cannot pass it without an operator), not only the log.
                        if matches!(e.code(), Code::Corrupt | Code::CorruptEvent) {
                            self.lock().error = Some(e);
                            self.arrived.notify_waiters();
                        }
                        return End::Broken(why);
                    }
                },
            }
        }
    }

    /// Handles one message from the server.
    fn receive(&self, epoch: u64, m: v1::SubscribeResponse) {
        match m.msg {
            Some(Down::Joined(j)) => {
                tracing::debug!(addr = %self.addr, group = %self.group, member = %j.member_id, generation = j.generation, "joined");
            }
            Some(Down::Deliveries(d)) => self.deliveries(epoch, d.deliveries),
            Some(answer @ (Down::Settled(_) | Down::Acked(_))) => self.answer(answer),
            Some(Down::Assigned(a)) => {
                tracing::debug!(addr = %self.addr, group = %self.group, generation = a.generation,
                    partitions = a.partitions.len(), "the group rebalanced");
            }
            // A message kind this client does not know (a newer server): nothing to do.
            None => {}
        }
    }

    fn deliveries(&self, epoch: u64, deliveries: Vec<v1::Delivery>) {
        let mut messages = Vec::with_capacity(deliveries.len());
        let mut undecodable = Vec::new();
        for d in deliveries {
            let Some(id) = d.id else {
                tracing::error!(addr = %self.addr, group = %self.group, "the server sent a delivery without an id; skipped");
                undecodable.push(None);
                continue;
            };
            match herald_proto::stored_from_proto(d.stored.unwrap_or_default()) {
                Ok(s) => messages.push(Message {
                    event: s.event,
                    topic: s.topic,
                    partition: s.partition,
                    offset: s.offset,
                    attempt: id.attempt,
                    append_time_ms: s.append_time_ms,
                    handler_duration: None,
                    token: Arc::new(Token { subscription: self.id, epoch, id }),
                }),
                Err(e) => {
                    tracing::error!(addr = %self.addr, group = %self.group, topic = %id.topic, partition = id.partition,
                        offset = id.offset, error = %e, "the server delivered an event this client cannot decode; rejecting it");
                    undecodable.push(Some((id, e.to_string())));
                }
            }
        }
        let mut st = self.lock();
        if st.closed || st.epoch != epoch {
            return;
        }
        for m in messages {
            if st.buffer.len() >= self.max_in_flight as usize {
                // The server sent more than its credit: a server bug. The event is redelivered
                // after its ack timeout.
                tracing::error!(addr = %self.addr, group = %self.group, max_in_flight = self.max_in_flight,
                    "the server delivered beyond the credit it was given; dropping the excess");
                break;
            }
            st.buffer.push_back(m);
        }
        // What cannot be handed out does not hold credit; undecodable events go to the DLQ
        // (best effort: if the request queue is full, the ack timeout redelivers them).
        for bad in undecodable {
            st.owed += 1;
            if let (Some((id, why)), Some(link)) = (bad, st.link.clone()) {
                let seq = st.next_seq;
                st.next_seq += 1;
                let reason = format!("the client could not decode the event: {why}");
                let settle = v1::Settle {
                    seq,
                    kind: Kind::Reject as i32,
                    id: Some(id),
                    delay_ms: None,
                    reason,
                    handler_micros: None,
                };
                let _ = link.try_send(v1::SubscribeRequest { msg: Some(Up::Settle(settle)) });
            }
        }
        flush_credit(&mut st);
        drop(st);
        self.arrived.notify_waiters();
    }

    /// Ends the stream, so that the server's member leaves the group, and waits for the server to
    /// end its side (it has then dropped the member). Answers to settlements still arrive.
    async fn leave(&self, stream: Stream) {
        {
            let mut st = self.lock();
            st.closed = true;
            st.link = None;
            st.buffer.clear();
        }
        self.arrived.notify_waiters();
        let Stream { requests, mut responses, .. } = stream;
        drop(requests);
        let drained = tokio::time::timeout(LEAVE_TIMEOUT, async {
            while let Ok(Some(m)) = responses.message().await {
                if let Some(answer) = m.msg {
                    self.answer(answer);
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(addr = %self.addr, group = %self.group, "the server did not end the stream within {} s of leaving", LEAVE_TIMEOUT.as_secs());
        }
        self.finish();
    }

    /// Hands a settlement's answer (`Settled` or `Acked`) to whoever waits for it; other
    /// messages are ignored.
    fn answer(&self, m: Down) {
        match m {
            Down::Settled(r) => {
                if let Some(waiting) = self.lock().pending.remove(&r.seq) {
                    let _ = waiting.send(r);
                }
            }
            Down::Acked(r) => {
                if let Some(batch) = self.lock().pending_acks.remove(&r.seq) {
                    self.answer_acks(batch, &r);
                }
            }
            _ => {}
        }
    }

    /// Tells each ack of an answered `Acks` how it went.
    fn answer_acks(&self, batch: AckBatch, r: &v1::AcksResult) {
        let whole = (!r.error_code.is_empty()).then(|| (Code::from_wire(&r.error_code), r.error_message.as_str()));
        let mut failed: HashMap<usize, &v1::AckFailure> = HashMap::new();
        for f in &r.failures {
            failed.insert(f.index as usize, f);
        }
        for (i, (what, answer)) in batch.waiting.into_iter().enumerate() {
            let result = match (whole, failed.get(&i)) {
                (Some((code, message)), _) => Err(coded_error(&self.addr, &what, code, message)),
                (None, Some(f)) => {
                    Err(coded_error(&self.addr, &what, Code::from_wire(&f.error_code), &f.error_message))
                }
                (None, None) => Ok(()),
            };
            let _ = answer.send(result);
        }
    }

    /// Queues an ack for the batching task and waits for its answer.
    async fn batched_ack(&self, what: String, token: &Token, handler_micros: u64) -> Result<()> {
        let (answer, result) = oneshot::channel();
        let request =
            AckRequest { epoch: token.epoch, id: token.id.clone(), handler_micros, what: what.clone(), answer };
        tokio::select! {
            r = self.acks.send(request) => {
                if r.is_err() {
                    return Err(self.closed_error());
                }
            }
            () = self.stop.cancelled() => return Err(self.closed_error()),
        }
        match tokio::time::timeout(SETTLE_TIMEOUT, result).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) if self.lock().closed => Err(self.closed_error()),
            Ok(Err(_)) => Err(self.stale_error(&what, "the stream broke before the server confirmed the ack")),
            Err(_) => Err(Error::new(
                Code::Unavailable,
                format!(
                    "herald://{}: {what}: no answer within {} s; if it was not recorded, the event is redelivered",
                    self.addr,
                    SETTLE_TIMEOUT.as_secs()
                ),
            )),
        }
    }

    async fn settle(&self, m: &Message, kind: Kind, delay: Option<Duration>, reason: &str) -> Result<()> {
        let what = match kind {
            Kind::Ack => "ack",
            Kind::Nack => "nack",
            Kind::Reject => "reject",
            Kind::Unspecified => "settle",
        };
        let what = format!("{what} of {}/{}@{} in group {:?}", m.topic, m.partition, m.offset, self.group);
        let token = match m.token.downcast_ref::<Token>() {
            Some(t) if t.subscription == self.id => t,
            _ => {
                return Err(Error::new(
                    Code::InvalidArgument,
                    format!(
                        "{what}: the message was not received through this subscription; settle it through its own"
                    ),
                ));
            }
        };
        if kind == Kind::Ack {
            let batched = {
                let st = self.lock();
                if st.closed {
                    return Err(self.closed_error());
                }
                if st.link.is_none() || st.epoch != token.epoch {
                    return Err(self.stale_error(&what, "the stream it was delivered on broke"));
                }
                st.batched_acks
            };
            if batched {
                return self.batched_ack(what, token, micros(m.handler_duration).unwrap_or(0)).await;
            }
        }
        let _permit = tokio::select! {
            p = self.settles.acquire() => p.expect("the settle semaphore is never closed"),
            () = self.stop.cancelled() => return Err(self.closed_error()),
        };
        let (seq, link, answer) = {
            let mut st = self.lock();
            if st.closed {
                return Err(self.closed_error());
            }
            let link = match &st.link {
                Some(link) if st.epoch == token.epoch => link.clone(),
                _ => return Err(self.stale_error(&what, "the stream it was delivered on broke")),
            };
            let seq = st.next_seq;
            st.next_seq += 1;
            let (tx, rx) = oneshot::channel();
            st.pending.insert(seq, tx);
            (seq, link, rx)
        };
        let settle = v1::Settle {
            seq,
            kind: kind as i32,
            id: Some(token.id.clone()),
            delay_ms: delay.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            reason: herald_proto::truncate_utf8(reason, REASON_BYTES_MAX).to_owned(),
            handler_micros: micros(m.handler_duration),
        };
        let exchange = async {
            if link.send(v1::SubscribeRequest { msg: Some(Up::Settle(settle)) }).await.is_err() {
                return Err(self.stale_error(&what, "the stream it was delivered on broke"));
            }
            drop(link);
            match answer.await {
                Ok(r) if r.error_code.is_empty() => Ok(()),
                Ok(r) => Err(coded_error(&self.addr, &what, Code::from_wire(&r.error_code), &r.error_message)),
                Err(_) if self.lock().closed => Err(self.closed_error()),
                Err(_) => Err(self.stale_error(&what, "the stream broke before the server confirmed the settlement")),
            }
        };
        match tokio::time::timeout(SETTLE_TIMEOUT, exchange).await {
            Ok(r) => r,
            Err(_) => {
                self.lock().pending.remove(&seq);
                Err(Error::new(
                    Code::Unavailable,
                    format!(
                        "herald://{}: {what}: no answer within {} s; if it was not recorded, the event is redelivered",
                        self.addr,
                        SETTLE_TIMEOUT.as_secs()
                    ),
                ))
            }
        }
    }
}

/// The batching task of a subscription's acks: takes every ack queued (up to
/// [`ACKS_PER_MESSAGE_MAX`]) and sends them as one `Acks` on the current stream, with at most
/// [`ACK_BATCHES_MAX`] unanswered. Acks of an older stream are answered stale at once.
async fn send_acks(shared: Arc<Shared>, mut queue: mpsc::Receiver<AckRequest>) {
    loop {
        let first = tokio::select! {
            r = queue.recv() => match r {
                Some(r) => r,
                None => return,
            },
            () = shared.stop.cancelled() => return,
        };
        let permit = tokio::select! {
            p = shared.ack_batches.clone().acquire_owned() => p.expect("the ack semaphore is never closed"),
            () = shared.stop.cancelled() => return,
        };
        // Everything that queued meanwhile goes in the same message.
        let mut batch = vec![first];
        while batch.len() < ACKS_PER_MESSAGE_MAX {
            match queue.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let (seq, link, ids, handler_micros) = {
            let mut st = shared.lock();
            let current = st.epoch;
            let link = st.link.clone().filter(|_| !st.closed);
            let (ours, stale): (Vec<AckRequest>, Vec<AckRequest>) =
                batch.into_iter().partition(|r| r.epoch == current && link.is_some());
            for r in stale {
                let e = shared.stale_error(&r.what, "the stream it was delivered on broke");
                let _ = r.answer.send(Err(e));
            }
            let Some(link) = link.filter(|_| !ours.is_empty()) else { continue };
            let seq = st.next_seq;
            st.next_seq += 1;
            let mut ids = Vec::with_capacity(ours.len());
            let mut handler_micros = Vec::with_capacity(ours.len());
            let mut waiting = Vec::with_capacity(ours.len());
            for r in ours {
                ids.push(r.id);
                handler_micros.push(r.handler_micros);
                waiting.push((r.what, r.answer));
            }
            st.pending_acks.insert(seq, AckBatch { waiting, _permit: permit });
            if handler_micros.iter().all(|&us| us == 0) {
                handler_micros.clear();
            }
            (seq, link, ids, handler_micros)
        };
        let message = v1::SubscribeRequest { msg: Some(Up::Acks(v1::Acks { seq, ids, handler_micros })) };
        if link.send(message).await.is_err() {
            // The stream broke: its pending acks were dropped with it (their callers hear stale).
            shared.lock().pending_acks.remove(&seq);
        }
    }
}

/// Sends the credit earned by fetches. When the request queue is full (of settlements: a client
/// acking a fetched batch at once), the credit goes in a task that waits for room, so that the
/// server gets it as soon as the queue moves, not at a later tick: a late credit starves the
/// stream. At most one such task per credit unit, so at most `max_in_flight` of them.
fn flush_credit(st: &mut State) {
    if st.owed == 0 {
        return;
    }
    let Some(link) = &st.link else { return };
    let credit = |n| v1::SubscribeRequest { msg: Some(Up::Credit(v1::Credit { n })) };
    match link.try_send(credit(st.owed)) {
        Ok(()) => st.owed = 0,
        Err(mpsc::error::TrySendError::Full(_)) => {
            let (link, n) = (link.clone(), std::mem::take(&mut st.owed));
            tokio::spawn(async move {
                // A closed stream needs no credit: the next one starts with full credit.
                let _ = link.send(credit(n)).await;
            });
        }
        Err(mpsc::error::TrySendError::Closed(_)) => st.owed = 0,
    }
}

#[async_trait]
impl Subscription for RemoteSubscription {
    fn settings(&self) -> &GroupConfig {
        &self.settings
    }

    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Message>> {
        let shared = &self.shared;
        // A wait too long to add to now (Duration::MAX: "as long as it takes") is a year.
        let now = tokio::time::Instant::now();
        let deadline = now.checked_add(wait).unwrap_or_else(|| now + FETCH_WAIT_MAX);
        loop {
            let arrived = shared.arrived.notified();
            tokio::pin!(arrived);
            // Registered before looking, so that a delivery right after the look still wakes us.
            arrived.as_mut().enable();
            {
                let mut st = shared.lock();
                if st.closed || shared.stop.is_cancelled() {
                    return Err(shared.closed_error());
                }
                if let Some(e) = st.error.take() {
                    return Err(e);
                }
                if max > 0 && !st.buffer.is_empty() {
                    let n = max.min(st.buffer.len());
                    let out: Vec<Message> = st.buffer.drain(..n).collect();
                    st.owed = st.owed.saturating_add(n as u32);
                    flush_credit(&mut st);
                    return Ok(out);
                }
            }
            if max == 0 {
                return Ok(Vec::new());
            }
            tokio::select! {
                () = &mut arrived => {}
                () = tokio::time::sleep_until(deadline) => return Ok(Vec::new()),
                () = shared.stop.cancelled() => return Err(shared.closed_error()),
            }
        }
    }

    async fn ack(&self, message: &Message) -> Result<()> {
        self.shared.settle(message, Kind::Ack, None, "").await
    }

    async fn nack(&self, message: &Message, delay: Option<Duration>, reason: &str) -> Result<()> {
        self.shared.settle(message, Kind::Nack, delay, reason).await
    }

    async fn reject(&self, message: &Message, reason: &str) -> Result<()> {
        self.shared.settle(message, Kind::Reject, None, reason).await
    }

    async fn close(&self) -> Result<()> {
        self.shared.stop.cancel();
        let task = self.task.lock().expect("subscription task lock poisoned").take();
        if let Some(task) = task {
            // The task leaves the group within its own bound; this only guards against a hang.
            let _ = tokio::time::timeout(LEAVE_TIMEOUT + Duration::from_secs(1), task).await;
        }
        self.shared.finish();
        Ok(())
    }
}

impl Drop for RemoteSubscription {
    fn drop(&mut self) {
        // The task leaves the group on its own.
        self.shared.stop.cancel();
    }
}

/// A handler's duration in µs, at least 1 (0 means "not reported" on the wire).
fn micros(d: Option<Duration>) -> Option<u64> {
    d.map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(link: mpsc::Sender<v1::SubscribeRequest>) -> State {
        State {
            epoch: 1,
            link: Some(link),
            buffer: VecDeque::new(),
            owed: 0,
            pending: HashMap::new(),
            pending_acks: HashMap::new(),
            batched_acks: true,
            next_seq: 0,
            error: None,
            closed: false,
        }
    }

    #[tokio::test]
    async fn credit_is_not_lost_or_delayed_while_the_request_queue_is_full() {
        let (tx, mut rx) = mpsc::channel(1);
        let mut st = state(tx);
        st.owed = 3;
        flush_credit(&mut st);
        assert_eq!(st.owed, 0);
        // The queue (of one) is full now: the credit waits for room in a task, not for a tick.
        st.owed = 2;
        flush_credit(&mut st);
        assert_eq!(st.owed, 0);
        st.owed = 4;
        flush_credit(&mut st);
        assert_eq!(st.owed, 0);
        let credit = |m: Option<v1::SubscribeRequest>| match m.and_then(|m| m.msg) {
            Some(Up::Credit(c)) => c.n,
            other => panic!("expected credit, got {other:?}"),
        };
        let mut got = vec![credit(rx.recv().await)];
        for _ in 0..2 {
            got.push(credit(tokio::time::timeout(Duration::from_secs(1), rx.recv()).await.expect("in time")));
        }
        got.sort();
        assert_eq!(got, vec![2, 3, 4], "every credit arrives as soon as the queue moves");
        // Without a stream (re-joining), credit is not sent; a new stream starts with full credit.
        st.link = None;
        st.owed = 5;
        flush_credit(&mut st);
        assert_eq!(st.owed, 5);
    }
}
