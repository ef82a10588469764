//! One `Subscribe` stream is one member of a consumer group.
//!
//! The stream opens with `Join` (anything else is refused), takes one of the server's
//! subscription permits (`max_subscriptions`, shared with SSE), creates the group if needed and
//! joins it. From then on one task per stream ([`Session::serve`]) does three things at once:
//! - reads the client's messages: `Settle` → ack / nack / reject, answered by a `SettleResult`
//!   carrying the client's `seq` (a failed settle is an answer, not the end of the stream);
//!   `Credit` → more deliveries allowed;
//! - polls the member while the client has credit (each delivered event spends one) and sends
//!   `Deliveries`, split so that no message grows beyond [`super::RESPONSE_BYTES_TARGET`];
//! - heartbeats the member while it has no credit, so that a connected but idle client keeps its
//!   session (polling is the heartbeat otherwise).
//!
//! The stream ends, and the member leaves the group (its unsettled deliveries go to other
//! members), when the client closes its side or goes away, when a send fails, on a broker error,
//! and when the server shuts down (the client then gets `shutting_down`).

use herald_model::Code;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::grpc::broker_status;
use futures::future::BoxFuture;
use herald_broker::{BrokerError, Delivery, DeliveryId, Member, MemberConfig};
use herald_proto::v1::settle::Kind;
use herald_proto::v1::subscribe_request::Msg;
use herald_proto::v1::subscribe_response::Msg as Out;
use herald_proto::v1::{self, Deliveries, Join, Joined, Settle, SettleResult, SubscribeRequest, SubscribeResponse};
use herald_proto::{delivery_id_from_proto, delivery_id_to_proto, group_config_from_proto, status};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::{RESPONSE_BYTES_TARGET, blocking, field_len, wire_status};
use crate::auth::{Action, Principal, Resource};
use crate::{AppState, MemberClaim};

/// What a `Subscribe` call streams back.
pub type SubscribeStream = ReceiverStream<Result<SubscribeResponse, Status>>;

/// How long a new stream may take to send its `Join`.
const JOIN_WAIT: Duration = Duration::from_secs(10);
/// Messages queued towards one client before the session waits for it to read.
const OUTBOUND_MESSAGES_MAX: usize = 16;
/// Most events one poll takes (further ones come with the next poll).
const POLL_EVENTS_MAX: u32 = 256;
/// Most ids in one `Acks` message.
pub const ACKS_PER_MESSAGE_MAX: usize = 10_000;
/// How long a member with deliveries to settle waits before polling again after damaged data.
const DAMAGE_RETRY: Duration = Duration::from_millis(500);
/// Longest single poll: also how often an idle member with credit heartbeats.
const POLL_WAIT_MAX: Duration = Duration::from_millis(200);
/// Longest pause between heartbeats of a member without credit.
const HEARTBEAT_MAX: Duration = Duration::from_secs(1);
/// How often an open stream checks that its token still works (revoked, expired).
const TOKEN_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);
/// Longest member id accepted in `Join`.
const MEMBER_ID_BYTES_MAX: usize = 256;
/// A nack or reject reason is cut to this many bytes (it is stored with the group's state and
/// in the dead letter).
const REASON_BYTES_MAX: usize = 1024;

/// Why a session ends: a status for the client, or `None` when nobody is listening any more.
type End = Option<Status>;

fn shutting_down() -> Status {
    status(Code::ShuttingDown, "the server is shutting down; subscribe again once it is back (or to another server)")
}

/// Opens a stream: permit, `Join`, group, member; then hands the rest to a [`Session`] task.
pub(super) async fn start(
    state: Arc<AppState>,
    caller: Principal,
    mut inbound: Streaming<SubscribeRequest>,
) -> Result<SubscribeStream, Status> {
    let max_subscriptions = state.config.max_subscriptions;
    let permit = state.subscriptions.clone().try_acquire_owned().map_err(|_| {
        status(
            Code::LimitExceeded,
            format!(
                "the server has {max_subscriptions} subscription streams open (gRPC and SSE together), its limit \
                 (max_subscriptions): close one, or raise max_subscriptions"
            ),
        )
    })?;
    let first = tokio::select! {
        r = tokio::time::timeout(JOIN_WAIT, inbound.message()) => r,
        () = state.shutdown.cancelled() => return Err(shutting_down()),
    };
    let join = match first {
        Err(_) => {
            return Err(status(
                Code::InvalidArgument,
                format!("no Join within {} s of opening the Subscribe stream; send Join first", JOIN_WAIT.as_secs()),
            ));
        }
        Ok(Err(s)) => return Err(wire_status(&s, state.config.max_request_bytes)),
        Ok(Ok(None)) => return Err(status(Code::InvalidArgument, "the Subscribe stream ended before its Join")),
        Ok(Ok(Some(SubscribeRequest { msg: Some(Msg::Join(join)) }))) => join,
        Ok(Ok(Some(SubscribeRequest { msg }))) => {
            return Err(status(
                Code::InvalidArgument,
                format!("the first message of a Subscribe stream must be Join, not {}", describe(msg.as_ref())),
            ));
        }
    };
    let Join { group, settings, max_in_flight, member_id } = join;
    caller.check(Action::Consume, Resource::Group(&group)).map_err(super::denied)?;
    for t in settings.as_ref().map_or(&[][..], |s| &s.topics[..]) {
        caller.check(Action::Consume, Resource::Topic(t)).map_err(super::denied)?;
    }
    let quota = state.guard.meter.subscribe(&caller).map_err(super::denied)?;
    if max_in_flight == 0 {
        return Err(status(
            Code::InvalidArgument,
            "Join.max_in_flight is 0; set it to the most unsettled deliveries the client will hold (at least 1)",
        ));
    }
    if member_id.len() > MEMBER_ID_BYTES_MAX {
        return Err(status(
            Code::InvalidArgument,
            format!("Join.member_id is {} bytes; the limit is {MEMBER_ID_BYTES_MAX}", member_id.len()),
        ));
    }
    let in_flight_max = state.broker.config().in_flight_max;
    if max_in_flight > in_flight_max {
        // Checked before the group is created: a refused Join leaves nothing behind.
        return Err(status(
            Code::LimitExceeded,
            format!("Join.max_in_flight is {max_in_flight}; the most is {in_flight_max} (in_flight_max)"),
        ));
    }
    // An id given by the client is reserved before joining: a second stream under the same id
    // would share the member, and the first to end would remove it from under the other.
    let mut claim = None;
    if !member_id.is_empty() {
        claim = Some(state.members.claim(&group, &member_id).ok_or_else(|| member_active(&group, &member_id))?);
    }
    let config = group_config_from_proto(settings.unwrap_or_default());
    let member_config = MemberConfig { id: (!member_id.is_empty()).then_some(member_id), max_in_flight };
    // Settings belong to the group: a member that asks for other ones joins with the stored
    // ones, and `Joined` tells the client which are in effect.
    let member = blocking(&state.broker, move |b| b.subscribe(&group, config, member_config)).await?;
    // The group's stored topics are the ones delivered: the caller must be allowed them too
    // (dropping the member leaves the group).
    for t in &member.settings().topics {
        caller.check(Action::Consume, Resource::Topic(t)).map_err(super::denied)?;
    }
    let session_timeout_ms = member.settings().session_timeout_ms;
    if claim.is_none() {
        // A generated id: reserved so that no other stream can name it.
        claim = state.members.claim(member.group(), member.id());
    }
    let (tx, rx) = mpsc::channel(OUTBOUND_MESSAGES_MAX);
    let told_generation = member.generation();
    let joined = Joined {
        member_id: member.id().to_owned(),
        generation: member.generation(),
        settings: Some(herald_proto::group_config_to_proto(member.settings())),
        batched_acks: true,
        assignment: Some(assignment_of(&member)),
    };
    tx.try_send(Ok(SubscribeResponse { msg: Some(Out::Joined(joined)) })).expect("a new channel has room");
    // Polling refreshes the session, and so does a heartbeat: both well within the timeout.
    let session = Duration::from_millis(session_timeout_ms);
    let third = (session / 3).max(Duration::from_millis(1));
    let s = Session {
        told_generation,
        max_request_bytes: state.config.max_request_bytes,
        shutdown: state.shutdown.clone(),
        member: Arc::new(member),
        tx,
        credit: max_in_flight,
        max_in_flight,
        poll_wait: third.min(POLL_WAIT_MAX),
        heartbeat: third.min(HEARTBEAT_MAX),
        _claim: claim,
        _quota: quota,
        caller,
        guard: state.guard.clone(),
    };
    tokio::spawn(s.run(inbound, permit));
    Ok(ReceiverStream::new(rx))
}

fn member_active(group: &str, member: &str) -> Status {
    status(
        Code::MemberActive,
        format!(
            "member {member:?} of group {group:?} is held by another open Subscribe stream on this server; close \
             that stream first (its member then leaves the group), or join with another member_id (or none)"
        ),
    )
}

fn describe(msg: Option<&Msg>) -> &'static str {
    match msg {
        Some(Msg::Join(_)) => "Join",
        Some(Msg::Settle(_)) => "Settle",
        Some(Msg::Credit(_)) => "Credit",
        Some(Msg::Acks(_)) => "Acks",
        None => "an empty message",
    }
}

/// What `member` owns now, for the wire.
fn assignment_of(member: &Member) -> v1::Assignment {
    v1::Assignment {
        generation: member.generation(),
        partitions: member
            .assignment()
            .into_iter()
            .map(|(topic, partition)| v1::TopicPartition { topic, partition })
            .collect(),
    }
}

struct Session {
    /// The generation the client was last told of (in Joined or an Assignment).
    told_generation: u64,
    max_request_bytes: usize,
    shutdown: tokio_util::sync::CancellationToken,
    member: Arc<Member>,
    tx: mpsc::Sender<Result<SubscribeResponse, Status>>,
    /// Deliveries the client can still take; never above `max_in_flight`.
    credit: u32,
    max_in_flight: u32,
    poll_wait: Duration,
    heartbeat: Duration,
    /// The member id's reservation; declared after `member` so that it is released only once
    /// the member has left the group.
    _claim: Option<MemberClaim>,
    /// The stream's place under its principal's subscription quota.
    _quota: crate::auth::quotas::SubscriptionSlot,
    /// Who opened the stream: its token is checked again every second.
    caller: Principal,
    guard: Arc<crate::auth::Guard>,
}

impl Session {
    async fn run(mut self, mut inbound: Streaming<SubscribeRequest>, permit: OwnedSemaphorePermit) {
        let group = self.member.group().to_owned();
        let member = self.member.id().to_owned();
        tracing::info!(%group, %member, max_in_flight = self.max_in_flight, "grpc subscriber joined");
        let gauge = metrics::gauge!("herald_server_subscriptions", "api" => "grpc");
        gauge.increment(1.0);
        let end = self.serve(&mut inbound).await;
        match &end {
            Some(s) => {
                tracing::info!(%group, %member, code = %herald_proto::code_of(s), reason = %s.message(), "grpc subscriber ended");
                let _ = self.tx.try_send(Err(s.clone()));
            }
            None => tracing::info!(%group, %member, "grpc subscriber left"),
        }
        gauge.decrement(1.0);
        // Dropping the member leaves the group; the permit goes back last.
        drop(self);
        drop(permit);
    }

    async fn serve(&mut self, inbound: &mut Streaming<SubscribeRequest>) -> End {
        let mut polling: Option<BoxFuture<'static, Result<Vec<Delivery>, BrokerError>>> = None;
        let mut beat = tokio::time::interval(self.heartbeat);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut recheck = tokio::time::interval(TOKEN_RECHECK);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if polling.is_none() && self.credit > 0 {
                let member = self.member.clone();
                let (max, wait) = (self.credit.min(POLL_EVENTS_MAX) as usize, self.poll_wait);
                polling = Some(Box::pin(async move { member.poll(max, wait).await }));
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return Some(shutting_down()),
                () = self.tx.closed() => return None,
                msg = inbound.message() => match msg {
                    Ok(Some(m)) => {
                        if let Err(end) = self.handle(m).await {
                            return end;
                        }
                    }
                    // The client closed its side: it leaves the group.
                    Ok(None) => return None,
                    Err(s) => return Some(wire_status(&s, self.max_request_bytes)),
                },
                r = poll_some(&mut polling), if polling.is_some() => {
                    polling = None;
                    if let Err(end) = self.tell_assignment().await {
                        return end;
                    }
                    match r {
                        Ok(deliveries) => {
                            if let Err(end) = self.deliver(deliveries).await {
                                return end;
                            }
                        }
                        // Damaged data: the stream ends with `corrupt` (the client hears of it),
                        // but not while this member still has deliveries to settle, so that
                        // their settlements are answered first.
                        Err(e) if matches!(e.code(), Code::Corrupt | Code::CorruptEvent) && self.member.in_flight() > 0 => {
                            polling = Some(Box::pin(async {
                                tokio::time::sleep(DAMAGE_RETRY).await;
                                Ok(Vec::new())
                            }));
                        }
                        Err(e) => return Some(broker_status(&e)),
                    }
                }
                _ = recheck.tick() => {
                    if let Err(d) = self.guard.still_valid(&self.caller) {
                        return Some(super::denied(d));
                    }
                }
                _ = beat.tick(), if self.credit == 0 => {
                    if let Err(e) = self.member.heartbeat() {
                        return Some(broker_status(&e));
                    }
                    if let Err(end) = self.tell_assignment().await {
                        return end;
                    }
                }
            }
        }
    }

    async fn handle(&mut self, m: SubscribeRequest) -> Result<(), End> {
        match m.msg {
            Some(Msg::Settle(s)) => {
                let seq = s.seq;
                let (error_code, error_message) = match self.settle(s).await {
                    Ok(()) => (String::new(), String::new()),
                    Err((code, message)) => (code.as_str().to_owned(), message),
                };
                let result = SettleResult { seq, error_code, error_message };
                self.send(SubscribeResponse { msg: Some(Out::Settled(result)) }).await
            }
            Some(Msg::Acks(a)) => {
                let result = self.acks(a);
                self.send(SubscribeResponse { msg: Some(Out::Acked(result)) }).await
            }
            Some(Msg::Credit(c)) => {
                // Credit beyond max_in_flight could never be used: the member holds at most that.
                self.credit = self.credit.saturating_add(c.n).min(self.max_in_flight);
                Ok(())
            }
            Some(Msg::Join(_)) => Err(Some(status(
                Code::InvalidArgument,
                "Join came twice on one Subscribe stream; open another stream to join again",
            ))),
            // A message kind this server does not know (a newer client): nothing to do.
            None => Ok(()),
        }
    }

    async fn settle(&self, s: Settle) -> Result<(), (Code, String)> {
        let Some(id) = s.id else {
            return Err((Code::InvalidArgument, "Settle.id is missing; echo the id of the Delivery".to_owned()));
        };
        let id: DeliveryId = delivery_id_from_proto(id);
        let reason = herald_proto::truncate_utf8(&s.reason, REASON_BYTES_MAX);
        let handled = s.handler_micros.filter(|&us| us > 0).map(Duration::from_micros);
        let (r, kind_name) = match Kind::try_from(s.kind) {
            Ok(Kind::Ack) => (self.member.ack_id(&id, handled), "ack"),
            Ok(Kind::Nack) => {
                (self.member.nack_id(&id, s.delay_ms.map(Duration::from_millis), reason, handled), "nack")
            }
            Ok(Kind::Reject) => (self.member.reject_id(&id, reason, handled).await, "reject"),
            Ok(Kind::Unspecified) => {
                return Err((
                    Code::InvalidArgument,
                    "Settle.kind is not set; say KIND_ACK (3), KIND_NACK (1) or KIND_REJECT (2) (0 no longer acknowledges)"
                        .to_owned(),
                ));
            }
            Err(_) => {
                return Err((
                    Code::InvalidArgument,
                    format!("Settle.kind {} is unknown; say KIND_ACK (3), KIND_NACK (1) or KIND_REJECT (2)", s.kind),
                ));
            }
        };
        let code = r.as_ref().err().map_or("ok", |e| crate::code_of(e).as_str());
        metrics::counter!("herald_server_settled_events_total", "api" => "grpc", "kind" => kind_name, "code" => code)
            .increment(1);
        if let (Ok(()), Some(d)) = (&r, handled) {
            crate::metrics::handler_duration("grpc", kind_name, d);
        }
        r.map_err(|e| (crate::code_of(&e), e.to_string()))
    }

    /// Sends an Assignment when a rebalance changed the generation since the client last heard.
    async fn tell_assignment(&mut self) -> Result<(), End> {
        if self.member.generation() == self.told_generation {
            return Ok(());
        }
        let assignment = assignment_of(&self.member);
        self.told_generation = assignment.generation;
        self.send(SubscribeResponse { msg: Some(Out::Assigned(assignment)) }).await
    }

    /// Acknowledges many deliveries under one lock of the group.
    fn acks(&self, a: v1::Acks) -> v1::AcksResult {
        let seq = a.seq;
        if a.ids.len() > ACKS_PER_MESSAGE_MAX {
            return v1::AcksResult {
                seq,
                failures: Vec::new(),
                error_code: Code::RequestTooLarge.as_str().to_owned(),
                error_message: format!(
                    "Acks holds {} ids; send at most {ACKS_PER_MESSAGE_MAX} per message",
                    a.ids.len()
                ),
            };
        }
        if !a.handler_micros.is_empty() && a.handler_micros.len() != a.ids.len() {
            return v1::AcksResult {
                seq,
                failures: Vec::new(),
                error_code: Code::InvalidArgument.as_str().to_owned(),
                error_message: format!(
                    "Acks holds {} ids and {} handler_micros; send none or one per id",
                    a.ids.len(),
                    a.handler_micros.len()
                ),
            };
        }
        let handled: Vec<Option<Duration>> =
            a.handler_micros.iter().map(|&us| (us > 0).then(|| Duration::from_micros(us))).collect();
        let ids: Vec<DeliveryId> = a.ids.into_iter().map(delivery_id_from_proto).collect();
        let results = self.member.ack_many(&ids, &handled);
        for (r, d) in results.iter().zip(&handled) {
            if let (Ok(()), Some(d)) = (r, d) {
                crate::metrics::handler_duration("grpc", "ack", *d);
            }
        }
        let mut failures = Vec::new();
        for (index, r) in results.into_iter().enumerate() {
            if let Err(e) = r {
                let code = crate::code_of(&e);
                metrics::counter!("herald_server_settled_events_total", "api" => "grpc", "kind" => "ack", "code" => code.as_str())
                    .increment(1);
                failures.push(v1::AckFailure {
                    index: index as u32,
                    error_code: code.as_str().to_owned(),
                    error_message: e.to_string(),
                });
            }
        }
        let ok = ids.len() - failures.len();
        metrics::counter!("herald_server_settled_events_total", "api" => "grpc", "kind" => "ack", "code" => "ok")
            .increment(ok as u64);
        v1::AcksResult { seq, failures, error_code: String::new(), error_message: String::new() }
    }

    /// Sends what a poll returned, spending credit, in messages of about
    /// [`RESPONSE_BYTES_TARGET`] at most.
    async fn deliver(&mut self, deliveries: Vec<Delivery>) -> Result<(), End> {
        if deliveries.is_empty() {
            return Ok(());
        }
        self.credit = self.credit.saturating_sub(deliveries.len() as u32);
        metrics::counter!("herald_server_delivered_events_total", "api" => "grpc").increment(deliveries.len() as u64);
        let mut batch = Vec::new();
        let mut bytes = 0;
        for d in deliveries {
            let one = v1::Delivery {
                stored: Some(herald_proto::stored_to_proto(&d.stored)),
                id: Some(delivery_id_to_proto(&d.id())),
            };
            let len = field_len(&one);
            if !batch.is_empty() && bytes + len > RESPONSE_BYTES_TARGET {
                let full = std::mem::take(&mut batch);
                self.send(SubscribeResponse { msg: Some(Out::Deliveries(Deliveries { deliveries: full })) }).await?;
                bytes = 0;
            }
            bytes += len;
            batch.push(one);
        }
        self.send(SubscribeResponse { msg: Some(Out::Deliveries(Deliveries { deliveries: batch })) }).await
    }

    /// Queues one message for the client, waiting while the queue is full (the client reads
    /// slowly) but not past a shutdown.
    async fn send(&self, msg: SubscribeResponse) -> Result<(), End> {
        tokio::select! {
            r = self.tx.send(Ok(msg)) => r.map_err(|_| None),
            () = self.shutdown.cancelled() => Err(Some(shutting_down())),
        }
    }
}

/// Awaits the poll in progress; only called when there is one.
async fn poll_some(
    polling: &mut Option<BoxFuture<'static, Result<Vec<Delivery>, BrokerError>>>,
) -> Result<Vec<Delivery>, BrokerError> {
    match polling.as_mut() {
        Some(f) => Pin::as_mut(f).await,
        None => std::future::pending().await,
    }
}
