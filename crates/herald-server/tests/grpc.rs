//! gRPC `herald.v1` against a real server on a loopback port: publish and read, subscribe with
//! credit and settlements, admin calls, every limit, shutdown, and bad bytes on the wire.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald_proto::v1::admin_client::AdminClient;
use herald_proto::v1::events_client::EventsClient;
use herald_proto::v1::settle::Kind;
use herald_proto::v1::subscribe_request::Msg;
use herald_proto::v1::subscribe_response::Msg as Out;
use herald_proto::v1::{
    self, CreateTopicRequest, Credit, Delivery, DlqListRequest, GroupName, GroupSettings, Join, Joined, Position,
    PublishRequest, ReadRequest, ResetGroupRequest, RetryPolicy, Settle, SettleResult, SubscribeRequest,
    SubscribeResponse, TopicConfig, TopicName,
};
use herald_proto::{CODE_KEY, code_of};
use herald_server::{Server, ServerConfig};
use http_body_util::BodyExt;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::Service;
use tonic::transport::Channel;
use tonic::{Code, Status};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Long enough for anything that should happen on a busy machine.
const PATIENCE: Duration = Duration::from_secs(10);
/// How long the tests watch for something that must not happen.
const QUIET: Duration = Duration::from_millis(500);

struct Env {
    server: Server,
    events: EventsClient<Channel>,
    admin: AdminClient<Channel>,
    channel: Channel,
    _dir: tempfile::TempDir,
}

async fn start_with(tweak: impl FnOnce(&mut ServerConfig)) -> Result<Env, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut config = ServerConfig {
        data_dir: dir.path().to_owned(),
        http: "127.0.0.1:0".parse()?,
        grpc: "127.0.0.1:0".parse()?,
        ..Default::default()
    };
    tweak(&mut config);
    let server = Server::start(config).await?;
    let channel = Channel::from_shared(format!("http://{}", server.grpc_addr()))?.connect().await?;
    let events = EventsClient::new(channel.clone()).max_decoding_message_size(64 << 20);
    let admin = AdminClient::new(channel.clone());
    Ok(Env { server, events, admin, channel, _dir: dir })
}

async fn start() -> Result<Env, Box<dyn std::error::Error>> {
    start_with(|_| {}).await
}

impl Env {
    async fn topic(&mut self, name: &str, partitions: u32) -> TestResult {
        let config = TopicConfig { partitions: Some(partitions), ..Default::default() };
        self.admin
            .create_topic(CreateTopicRequest { name: name.into(), config: Some(config), if_not_exists: false })
            .await?;
        Ok(())
    }

    async fn publish(&mut self, topic: &str, events: Vec<v1::Event>) -> Result<Vec<v1::Receipt>, Status> {
        let r = self.events.publish(PublishRequest { topic: topic.into(), events }).await?;
        Ok(r.into_inner().receipts)
    }

    async fn subscribe(&mut self, join: Join) -> Result<Sub, Status> {
        Sub::open(&mut self.events, join).await
    }
}

/// An event with every CloudEvents attribute and extension set.
fn full_event(i: u32) -> v1::Event {
    v1::Event {
        id: format!("e-{i}"),
        source: "/tests/grpc".into(),
        r#type: "order.created".into(),
        time_unix_nano: Some(1_700_000_000_123_456_789 + i64::from(i)),
        subject: Some(format!("order/{i}")),
        datacontenttype: Some("application/json".into()),
        dataschema: Some("https://example.com/schemas/order.json".into()),
        data: format!("{{\"n\":{i}}}").into_bytes().into(),
        partitionkey: Some(format!("c-{i}")),
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        tracestate: Some("vendor=value".into()),
        correlationid: Some(format!("corr-{i}")),
        causationid: Some(format!("cause-{i}")),
        headers: HashMap::from([("tenant".to_owned(), "acme".to_owned()), ("region".to_owned(), "eu".to_owned())]),
    }
}

/// An event with only what is required.
fn event(i: u32) -> v1::Event {
    v1::Event { id: format!("m-{i}"), source: "/tests/grpc".into(), r#type: "t".into(), ..Default::default() }
}

fn settings(topic: &str) -> GroupSettings {
    GroupSettings {
        topics: vec![topic.into()],
        // Only what differs from the defaults.
        retry: Some(RetryPolicy {
            backoff_base_ms: Some(10),
            backoff_max_ms: Some(100),
            jitter: Some(0.0),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn join(group: &str, topic: &str, max_in_flight: u32) -> Join {
    Join { group: group.into(), settings: Some(settings(topic)), max_in_flight, member_id: String::new() }
}

/// Asserts Herald's code of a status, and that it came from the server (the metadata is set).
#[track_caller]
fn assert_code(s: &Status, code: &str) {
    assert!(s.metadata().get(CODE_KEY).is_some(), "no {CODE_KEY} in {s:?}");
    assert_eq!(code_of(s).as_str(), code, "{s:?}");
}

/// One open Subscribe stream.
struct Sub {
    tx: mpsc::Sender<SubscribeRequest>,
    rx: tonic::Streaming<SubscribeResponse>,
    joined: Joined,
    seq: u64,
    /// Deliveries that arrived while waiting for something else.
    pending: VecDeque<Delivery>,
    /// Assignments the server sent after Joined, in order.
    assignments: Vec<v1::Assignment>,
}

impl Sub {
    async fn open(client: &mut EventsClient<Channel>, join: Join) -> Result<Sub, Status> {
        let (tx, rx) = mpsc::channel(64);
        tx.send(SubscribeRequest { msg: Some(Msg::Join(join)) }).await.expect("channel open");
        let mut rx = client.subscribe(ReceiverStream::new(rx)).await?.into_inner();
        let first = tokio::time::timeout(PATIENCE, rx.message()).await.expect("Joined in time")?;
        match first.and_then(|m| m.msg) {
            Some(Out::Joined(joined)) => {
                Ok(Sub { tx, rx, joined, seq: 0, pending: VecDeque::new(), assignments: Vec::new() })
            }
            other => panic!("expected Joined first, got {other:?}"),
        }
    }

    async fn send(&self, msg: Msg) {
        self.tx.send(SubscribeRequest { msg: Some(msg) }).await.expect("stream open");
    }

    /// The next message from the server within `within`; `None` on timeout. Assignments are
    /// kept aside (in `assignments`), not returned.
    async fn next(&mut self, within: Duration) -> Option<Result<Out, Status>> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.rx.message()).await {
                Err(_) => return None,
                Ok(Ok(Some(m))) => match m.msg.expect("a message with content") {
                    Out::Assigned(a) => self.assignments.push(a),
                    other => return Some(Ok(other)),
                },
                Ok(Ok(None)) => return Some(Err(Status::ok("stream ended"))),
                Ok(Err(s)) => return Some(Err(s)),
            }
        }
    }

    /// Collects deliveries until `n` arrived (panics if they do not within [`PATIENCE`]).
    async fn deliveries(&mut self, n: usize) -> Vec<Delivery> {
        let deadline = Instant::now() + PATIENCE;
        let mut out: Vec<Delivery> = Vec::new();
        while out.len() < n {
            if let Some(d) = self.pending.pop_front() {
                out.push(d);
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(Ok(Out::Deliveries(d))) => self.pending.extend(d.deliveries),
                other => panic!("waiting for {n} deliveries (have {}): {other:?}", out.len()),
            }
        }
        out
    }

    /// Deliveries arriving within `within` (for checking that none or few arrive).
    async fn deliveries_within(&mut self, within: Duration) -> Vec<Delivery> {
        let deadline = Instant::now() + within;
        let mut out: Vec<Delivery> = self.pending.drain(..).collect();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                None => return out,
                Some(Ok(Out::Deliveries(d))) => out.extend(d.deliveries),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    async fn settle_raw(&mut self, settle: Settle) -> SettleResult {
        let seq = settle.seq;
        self.send(Msg::Settle(settle)).await;
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(Ok(Out::Settled(r))) => {
                    assert_eq!(r.seq, seq, "settle results come in order");
                    return r;
                }
                Some(Ok(Out::Deliveries(d))) => self.pending.extend(d.deliveries),
                other => panic!("waiting for SettleResult {seq}: {other:?}"),
            }
        }
    }

    async fn settle(&mut self, kind: Kind, d: &Delivery, delay_ms: Option<u64>, reason: &str) -> SettleResult {
        self.seq += 1;
        let settle = Settle {
            seq: self.seq,
            kind: kind as i32,
            id: d.id.clone(),
            delay_ms,
            reason: reason.to_owned(),
            handler_micros: None,
        };
        self.settle_raw(settle).await
    }

    async fn ack(&mut self, d: &Delivery) {
        let r = self.settle(Kind::Ack, d, None, "").await;
        assert_eq!(r.error_code, "", "ack failed: {r:?}");
    }

    /// Sends one `Acks` and waits for its `AcksResult` (deliveries meanwhile are kept).
    async fn acks(&mut self, ids: Vec<v1::DeliveryId>) -> v1::AcksResult {
        self.seq += 1;
        let seq = self.seq;
        self.send(Msg::Acks(v1::Acks { seq, ids, handler_micros: vec![] })).await;
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(Ok(Out::Acked(r))) => {
                    assert_eq!(r.seq, seq);
                    return r;
                }
                Some(Ok(Out::Deliveries(d))) => self.pending.extend(d.deliveries),
                other => panic!("waiting for AcksResult {seq}: {other:?}"),
            }
        }
    }

    async fn credit(&self, n: u32) {
        self.send(Msg::Credit(Credit { n })).await;
    }
}

fn offsets(ds: &[Delivery]) -> Vec<u64> {
    let mut o: Vec<u64> = ds.iter().map(|d| d.stored.as_ref().expect("stored").offset).collect();
    o.sort_unstable();
    o
}

fn attempt(d: &Delivery) -> u32 {
    d.id.as_ref().expect("id").attempt
}

#[tokio::test]
async fn publish_and_read_round_trip_keeps_every_attribute() -> TestResult {
    let mut env = start().await?;
    env.topic("orders", 1).await?;
    let sent = vec![full_event(1), event(2), full_event(3)];
    let receipts = env.publish("orders", sent.clone()).await?;
    assert_eq!(receipts.len(), 3);
    for (i, r) in receipts.iter().enumerate() {
        assert_eq!((r.topic.as_str(), r.partition, r.offset, r.duplicate), ("orders", 0, i as u64, false));
    }
    // The same (source, id) again is a duplicate pointing at the first copy.
    let again = env.publish("orders", vec![full_event(3)]).await?;
    assert_eq!((again[0].offset, again[0].duplicate), (2, true));

    let read = env.events.read(ReadRequest { topic: "orders".into(), partition: 0, offset: 0, limit: 10 }).await?;
    let stored = read.into_inner().events;
    assert_eq!(stored.len(), 3);
    for (i, (s, e)) in stored.iter().zip(&sent).enumerate() {
        assert_eq!(s.event.as_ref(), Some(e), "event {i} changed on its way");
        assert_eq!((s.topic.as_str(), s.partition, s.offset), ("orders", 0, i as u64));
        assert!(s.append_time_ms > 0);
    }
    let from_one = env.events.read(ReadRequest { topic: "orders".into(), partition: 0, offset: 1, limit: 1 }).await?;
    assert_eq!(from_one.into_inner().events.iter().map(|s| s.offset).collect::<Vec<_>>(), [1]);

    let metrics = env.server.state().metrics.render();
    assert!(metrics.contains("herald_server_published_events_total{api=\"grpc\"}"), "{metrics}");
    env.server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn publish_and_read_errors_are_typed() -> TestResult {
    let mut env = start().await?;
    env.topic("orders", 2).await?;
    let e = env.publish("orders", vec![]).await.unwrap_err();
    assert_code(&e, "invalid_argument");
    let e = env.publish("nope", vec![event(1)]).await.unwrap_err();
    assert_code(&e, "topic_not_found");
    assert_eq!(e.code(), Code::NotFound);
    let e = env.publish("orders", vec![v1::Event { id: String::new(), ..event(1) }]).await.unwrap_err();
    assert_code(&e, "invalid_event");
    assert!(e.message().contains("Event.id is empty") && !e.message().contains("leave it unset"), "{e:?}");
    let bad = v1::Event { r#type: String::new(), ..event(2) };
    let e = env.publish("orders", vec![event(1), bad]).await.unwrap_err();
    assert_code(&e, "invalid_event");
    assert!(e.message().contains("event 1") && e.message().contains("type is empty"), "{e:?}");
    // Nothing of a refused batch is stored.
    let info = env.admin.describe_topic(TopicName { name: "orders".into() }).await?.into_inner();
    assert!(info.partitions.iter().all(|p| p.latest_offset == 0), "{info:?}");

    let read = |partition, offset, limit| ReadRequest { topic: "orders".into(), partition, offset, limit };
    let e = env.events.read(read(0, 0, 0)).await.unwrap_err();
    assert_code(&e, "invalid_argument");
    let e = env.events.read(read(7, 0, 1)).await.unwrap_err();
    assert_code(&e, "partition_not_found");
    let e = env.events.read(read(0, 1000, 1)).await.unwrap_err();
    assert_code(&e, "offset_beyond_latest");
    assert_eq!(e.code(), Code::OutOfRange);

    // A name no topic can have is invalid_topic_name everywhere, never "not found, create it".
    for name in ["bad name!", "bad/name", ""] {
        let e = env.publish(name, vec![event(1)]).await.unwrap_err();
        assert_code(&e, "invalid_topic_name");
        assert_eq!(e.code(), Code::InvalidArgument, "{name:?}");
        let e =
            env.events.read(ReadRequest { topic: name.into(), partition: 0, offset: 0, limit: 1 }).await.unwrap_err();
        assert_code(&e, "invalid_topic_name");
        let e = env.admin.describe_topic(TopicName { name: name.into() }).await.unwrap_err();
        assert_code(&e, "invalid_topic_name");
        let e = env.admin.delete_topic(TopicName { name: name.into() }).await.unwrap_err();
        assert_code(&e, "invalid_topic_name");
    }
    env.server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn subscribe_ack_nack_reject() -> TestResult {
    let mut env = start().await?;
    env.topic("orders", 1).await?;
    env.publish("orders", vec![event(0), event(1), event(2)]).await?;
    let mut sub = env.subscribe(join("billing", "orders", 10)).await?;
    assert!(!sub.joined.member_id.is_empty() && sub.joined.generation > 0, "{:?}", sub.joined);
    let ds = sub.deliveries(3).await;
    assert_eq!(offsets(&ds), [0, 1, 2]);
    assert!(ds.iter().all(|d| attempt(d) == 1 && d.id.as_ref().unwrap().generation == sub.joined.generation));
    let by = |o: u64| ds.iter().find(|d| d.stored.as_ref().unwrap().offset == o).unwrap().clone();
    let (d0, d1, d2) = (by(0), by(1), by(2));
    assert_eq!(d0.stored.as_ref().unwrap().event.as_ref(), Some(&event(0)));

    sub.ack(&d0).await;
    // Acking twice: an answer naming the problem, and the stream lives on.
    let r = sub.settle(Kind::Ack, &d0, None, "").await;
    assert_eq!(r.error_code, "not_in_flight", "{r:?}");

    let r = sub.settle(Kind::Nack, &d1, Some(0), "try again").await;
    assert_eq!(r.error_code, "", "{r:?}");
    let again = sub.deliveries(1).await;
    assert_eq!((again[0].stored.as_ref().unwrap().offset, attempt(&again[0])), (1, 2));

    let r = sub.settle(Kind::Reject, &d2, None, "bad data").await;
    assert_eq!(r.error_code, "", "{r:?}");
    sub.ack(&again[0]).await;

    let dlq = env.admin.dlq_list(DlqListRequest { group: "billing".into(), max: 10 }).await?.into_inner();
    assert_eq!(dlq.dead_letters.len(), 1, "{dlq:?}");
    let letter = dlq.dead_letters[0].event.as_ref().unwrap();
    assert_eq!(letter.id, "m-2");
    assert_eq!(letter.headers.get("dlqreason").map(String::as_str), Some("bad data"), "{letter:?}");
    assert_eq!(letter.headers.get("dlqgroup").map(String::as_str), Some("billing"));

    // Everything settled: nothing more comes.
    assert!(sub.deliveries_within(QUIET).await.is_empty());
    env.server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn credit_bounds_unsettled_deliveries() -> TestResult {
    let mut env = start().await?;
    env.topic("orders", 1).await?;
    env.publish("orders", (0..10).map(event).collect()).await?;
    // max_in_flight 3 is also the initial credit.
    let mut sub = env.subscribe(join("g", "orders", 3)).await?;
    let mut held = sub.deliveries(3).await;
    let mut seen = offsets(&held);
    assert!(sub.deliveries_within(QUIET).await.is_empty(), "more than the credit of 3 was sent");

    // Settling frees room in the broker, but without credit nothing is sent.
    let d = held.remove(0);
    sub.ack(&d).await;
    assert!(sub.deliveries_within(QUIET).await.is_empty(), "sent without credit");
    sub.credit(1).await;
    let more = sub.deliveries(1).await;
    seen.extend(offsets(&more));
    held.extend(more);
    assert!(sub.deliveries_within(QUIET).await.is_empty());

    // Credit piles up to at most max_in_flight: an absurd amount neither overflows nor buys
    // more than 3 deliveries.
    sub.credit(u32::MAX).await;
    sub.credit(u32::MAX).await;
    for d in std::mem::take(&mut held) {
        sub.ack(&d).await;
    }
    held = sub.deliveries(3).await;
    seen.extend(offsets(&held));
    for d in std::mem::take(&mut held) {
        sub.ack(&d).await;
    }
    assert!(sub.deliveries_within(QUIET).await.is_empty(), "credit was not capped at max_in_flight");

    sub.credit(3).await;
    held = sub.deliveries(3).await;
    seen.extend(offsets(&held));
    for d in &held {
        sub.ack(d).await;
    }
    assert!(sub.deliveries_within(QUIET).await.is_empty());
    seen.sort_unstable();
    assert_eq!(seen, (0..10).collect::<Vec<u64>>(), "each event exactly once");
    env.server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn bad_settles_are_answered_and_the_stream_lives_on() -> TestResult {
    let mut env = start().await?;
    env.topic("orders", 1).await?;
    env.publish("orders", vec![event(0)]).await?;
    let mut sub = env.subscribe(join("g", "orders", 5)).await?;
    let d = sub.deliveries(1).await.remove(0);

    let mut stale = d.clone();
    stale.id.as_mut().unwrap().generation = 0;
    let r = sub.settle(Kind::Ack, &stale, None, "").await;
    assert_eq!(r.error_code, "stale_generation", "{r:?}");
    assert!(r.error_message.contains("generation 0"), "{r:?}");

    let mut elsewhere = d.clone();
    elsewhere.id.as_mut().unwrap().topic = "other".into();
    assert_eq!(sub.settle(Kind::Nack, &elsewhere, None, "").await.error_code, "not_in_flight");

    let mut earlier = d.clone();
    earlier.id.as_mut().unwrap().attempt = 7;
    assert_eq!(sub.settle(Kind::Reject, &earlier, None, "").await.error_code, "not_in_flight");

    // A Settle without a kind acknowledges nothing (0 used to be ACK).
    let r = sub
        .settle_raw(Settle {
            seq: 99,
            kind: 0,
            id: d.id.clone(),
            delay_ms: None,
            reason: String::new(),
            handler_micros: None,
        })
        .await;
    assert_eq!(r.error_code, "invalid_argument", "{r:?}");
    assert!(r.error_message.contains("not set"), "{r:?}");
    let r = sub
        .settle_raw(Settle { seq: 100, kind: 0, id: None, delay_ms: None, reason: String::new(), handler_micros: None })
        .await;
    assert_eq!(r.error_code, "invalid_argument");
    let r = sub
        .settle_raw(Settle {
            seq: 101,
            kind: 9,
            id: d.id.clone(),
            delay_ms: None,
            reason: String::new(),
            handler_micros: None,
        })
        .await;
    assert_eq!(r.error_code, "invalid_argument");
    assert!(r.error_message.contains("kind 9"), "{r:?}");

    // A huge reason is cut, not refused, and not stored whole.
    let r = sub.settle(Kind::Nack, &d, Some(0), &"x".repeat(100_000)).await;
    assert_eq!(r.error_code, "", "{r:?}");
    let d = sub.deliveries(1).await.remove(0);
    assert_eq!(attempt(&d), 2);
    sub.ack(&d).await;
    env.publish("orders", vec![event(1)]).await?;
    assert_eq!(offsets(&sub.deliveries(1).await), [1]);
    env.server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn subscribe_must_start_with_a_valid_join() -> TestResult {
    let mut env = start().await?;
    env.topic("orders", 1).await?;
    // Credit first.
    let first = SubscribeRequest { msg: Some(Msg::Credit(Credit { n: 1 })) };
    let e = env.events.subscribe(tokio_stream::iter([first])).await.unwrap_err();
    assert_code(&e, "invalid_argument");
    assert!(e.message().contains("must be Join"), "{e:?}");
    // Nothing at all.
    let e = env.events.subscribe(tokio_stream::iter(Vec::<SubscribeRequest>::new())).await.unwrap_err();
    assert_code(&e, "invalid_argument");

    let e = env.subscribe(join("g", "orders", 0)).await.err().expect("refused");
    assert_code(&e, "invalid_argument");
    assert!(e.message().contains("max_in_flight"), "{e:?}");
    let e = env.subscribe(join("g", "orders", 1_000_000)).await.err().expect("refused");
    assert_code(&e, "limit_exceeded");
    let e = env.subscribe(join("g", "missing", 1)).await.err().expect("refused");
    assert_code(&e, "topic_not_found");
    let e = env.subscribe(join("bad group!", "orders", 1)).await.err().expect("refused");
    assert_code(&e, "invalid_group_name");
    let e = env.subscribe(Join { member_id: "m".repeat(1000), ..join("g", "orders", 1) }).await.err().expect("no");
    assert_code(&e, "invalid_argument");

    // A second Join on a joined stream ends it.
    let mut sub = env.subscribe(join("g", "orders", 1)).await?;
    sub.send(Msg::Join(join("g", "orders", 1))).await;
    match sub.next(PATIENCE).await {
        Some(Err(s)) => assert_code(&s, "invalid_argument"),
        other => panic!("expected the stream to end with an error: {other:?}"),
    }
    env.server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_connected_idle_member_keeps_its_session() -> TestResult {
    let mut env = start().await?;
    env.topic("orders", 1).await?;
    let short = |group: &str, max_in_flight| Join {
        settings: Some(GroupSettings { session_timeout_ms: Some(1000), ..settings("orders") }),
        ..join(group, "orders", max_in_flight)
    };
    // One member with credit left and nothing more to receive, one holding its only delivery
    // (so without credit).
    let mut waiting = env.subscribe(short("waiting", 5)).await?;
    env.publish("orders", vec![event(0)]).await?;
    let mut holding = env.subscribe(short("holding", 1)).await?;
    let held = holding.deliveries(1).await.remove(0);
    let d = waiting.deliveries(1).await.remove(0);
    waiting.ack(&d).await;

    // Several session timeouts pass (heartbeats come every third of it).
    tokio::time::sleep(Duration::from_millis(3500)).await;
    for group in ["waiting", "holding"] {
        let info = env.admin.describe_group(GroupName { group: group.into() }).await?.into_inner();
        assert_eq!(info.members.len(), 1, "{group}: {info:?}");
    }
    holding.ack(&held).await;
    env.server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn admin_calls() -> TestResult {
    let mut env = start().await?;
    let create = |name: &str, partitions: u32, if_not_exists: bool| CreateTopicRequest {
        name: name.into(),
        config: Some(TopicConfig { partitions: Some(partitions), ..Default::default() }),
        if_not_exists,
    };
    let info = env.admin.create_topic(create("orders", 3, false)).await?.into_inner();
    assert_eq!((info.name.as_str(), info.partitions.len()), ("orders", 3));
    assert_eq!(info.config.as_ref().and_then(|c| c.partitions), Some(3));
    let e = env.admin.create_topic(create("orders", 3, false)).await.unwrap_err();
    assert_code(&e, "topic_exists");
    assert_eq!(e.code(), Code::AlreadyExists);
    let again = env.admin.create_topic(create("orders", 3, true)).await?.into_inner();
    assert_eq!(again.created_ms, info.created_ms);
    // "If it does not exist" with other settings is refused, naming the difference.
    let e = env.admin.create_topic(create("orders", 8, true)).await.unwrap_err();
    assert_code(&e, "invalid_config");
    assert!(e.message().contains("partitions: asked 8, stored 3"), "{e:?}");
    let e = env.admin.create_topic(create("bad name", 1, false)).await.unwrap_err();
    assert_code(&e, "invalid_topic_name");
    env.admin.create_topic(create("audit", 1, false)).await?;
    let names = env.admin.list_topics(v1::ListTopicsRequest {}).await?.into_inner().names;
    assert_eq!(names, ["audit", "orders"]);

    env.publish("orders", (0..6).map(|i| v1::Event { partitionkey: Some(format!("k{i}")), ..event(i) }).collect())
        .await?;
    let described = env.admin.describe_topic(TopicName { name: "orders".into() }).await?.into_inner();
    assert_eq!(described.partitions.iter().map(|p| p.latest_offset).sum::<u64>(), 6);

    // A group with a member: described, listed, and not resettable.
    let mut sub = env.subscribe(join("billing", "orders", 10)).await?;
    let ds = sub.deliveries(6).await;
    let rejected = ds[0].clone();
    let r = sub.settle(Kind::Reject, &rejected, None, "nope").await;
    assert_eq!(r.error_code, "");
    for d in &ds[1..] {
        sub.ack(d).await;
    }
    assert_eq!(env.admin.list_groups(v1::Empty {}).await?.into_inner().names, ["billing"]);
    let g = env.admin.describe_group(GroupName { group: "billing".into() }).await?.into_inner();
    assert_eq!(g.members, [sub.joined.member_id.clone()]);
    assert_eq!(g.partitions.len(), 3);
    let reset = ResetGroupRequest {
        group: "billing".into(),
        to: Some(Position { at: Some(v1::position::At::Earliest(true)) }),
    };
    let e = env.admin.reset_group(reset.clone()).await.unwrap_err();
    assert_code(&e, "group_active");
    assert_eq!(e.code(), Code::FailedPrecondition);

    // Closing the stream leaves the group; then the reset goes through and everything comes again.
    drop(sub);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let g = env.admin.describe_group(GroupName { group: "billing".into() }).await?.into_inner();
        if g.members.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the member did not leave: {g:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let g = env.admin.reset_group(reset).await?.into_inner();
    assert!(g.partitions.iter().all(|p| p.committed == 0 && p.lag == p.latest), "{g:?}");
    let mut sub = env.subscribe(join("billing", "orders", 10)).await?;
    let ds = sub.deliveries(6).await;
    assert!(ds.iter().all(|d| attempt(d) == 1), "attempts start over after a reset");
    drop(sub);

    // Dead letters: listed, replayed (counted), purged (counted).
    let dlq = env.admin.dlq_list(DlqListRequest { group: "billing".into(), max: 0 }).await?.into_inner();
    assert_eq!(dlq.dead_letters.len(), 1);
    let replayed = env.admin.dlq_replay(GroupName { group: "billing".into() }).await?.into_inner();
    assert_eq!(replayed.count, 1);
    let dlq = env.admin.dlq_list(DlqListRequest { group: "billing".into(), max: 10 }).await?.into_inner();
    assert!(dlq.dead_letters.is_empty());
    let mut sub = env.subscribe(join("billing", "orders", 10)).await?;
    let mut got = sub.deliveries(7).await;
    let replay = got.iter().position(|d| d.stored.as_ref().unwrap().topic.ends_with(".replay")).expect("replayed");
    let d = got.remove(replay);
    assert_eq!(d.stored.as_ref().unwrap().event.as_ref().unwrap().id, rejected.stored.unwrap().event.unwrap().id);
    assert_eq!(sub.settle(Kind::Reject, &d, None, "still no").await.error_code, "");
    drop(sub);
    let purged = env.admin.dlq_purge(GroupName { group: "billing".into() }).await?.into_inner();
    assert_eq!(purged.count, 1);
    let e = env.admin.dlq_purge(GroupName { group: "nobody".into() }).await.unwrap_err();
    assert_code(&e, "group_not_found");
    let e = env.admin.describe_group(GroupName { group: "nobody".into() }).await.unwrap_err();
    assert_code(&e, "group_not_found");

    env.admin.delete_topic(TopicName { name: "audit".into() }).await?;
    let e = env.admin.describe_topic(TopicName { name: "audit".into() }).await.unwrap_err();
    assert_code(&e, "topic_not_found");
    let e = env.admin.delete_topic(TopicName { name: "audit".into() }).await.unwrap_err();
    assert_code(&e, "topic_not_found");
    env.server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn batch_over_max_batch_events_is_refused() -> TestResult {
    let mut env = start_with(|c| c.max_batch_events = 5).await?;
    env.topic("t", 1).await?;
    env.publish("t", (0..5).map(event).collect()).await?;
    let e = env.publish("t", (10..16).map(event).collect()).await.unwrap_err();
    assert_code(&e, "request_too_large");
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(e.message().contains("6 events") && e.message().contains("max_batch_events"), "{e:?}");
    env.server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn event_over_max_event_bytes_is_refused() -> TestResult {
    let mut env = start_with(|c| c.max_event_bytes = 1024).await?;
    env.topic("t", 1).await?;
    let small = v1::Event { data: vec![b'a'; 500].into(), ..event(0) };
    env.publish("t", vec![small]).await?;
    let big = v1::Event { data: vec![b'a'; 2000].into(), ..event(2) };
    let e = env.publish("t", vec![event(1), big]).await.unwrap_err();
    assert_code(&e, "event_too_large");
    assert!(e.message().contains("event 1") && e.message().contains("1024"), "{e:?}");
    env.server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn message_over_max_request_bytes_is_refused() -> TestResult {
    let mut env = start_with(|c| {
        c.max_request_bytes = 8192;
        c.max_event_bytes = 4096;
    })
    .await?;
    env.topic("t", 1).await?;
    let events: Vec<v1::Event> = (0..20).map(|i| v1::Event { data: vec![b'a'; 900].into(), ..event(i) }).collect();
    let e = env.publish("t", events).await.unwrap_err();
    assert!(matches!(e.code(), Code::ResourceExhausted | Code::OutOfRange), "{e:?}");
    assert_code(&e, "request_too_large");
    assert!(e.message().contains("max_request_bytes"), "{e:?}");
    // The same on a Subscribe stream, after the Join.
    let mut sub = env.subscribe(join("g", "t", 1)).await?;
    let huge = Settle { seq: 1, reason: "r".repeat(10_000), ..Default::default() };
    sub.send(Msg::Settle(huge)).await;
    match sub.next(PATIENCE).await {
        Some(Err(s)) => assert_code(&s, "request_too_large"),
        other => panic!("expected the stream to end with request_too_large: {other:?}"),
    }
    // The connection still serves.
    env.publish("t", vec![event(99)]).await?;
    env.server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn many_large_events_are_split_into_messages_a_default_client_accepts() -> TestResult {
    let mut env = start().await?;
    env.topic("big", 1).await?;
    // 12 events of 900 KiB: 10.5 MiB in one publish, far over what one answer may carry.
    let big = |i| v1::Event { data: vec![b'x'; 900 << 10].into(), ..event(i) };
    env.publish("big", (0..12).map(big).collect()).await?;
    // Clients with tonic's default 4 MiB decoding limit.
    let mut events = EventsClient::new(env.channel.clone());
    let mut admin = AdminClient::new(env.channel.clone());

    let read = events.read(ReadRequest { topic: "big".into(), partition: 0, offset: 0, limit: 12 }).await?;
    let got = read.into_inner().events;
    assert!(!got.is_empty() && got.len() < 12, "{} events in one answer", got.len());
    assert_eq!(got.iter().map(|s| s.offset).collect::<Vec<_>>(), (0..got.len() as u64).collect::<Vec<_>>());

    let mut sub = Sub::open(&mut events, join("g", "big", 20)).await?;
    let mut messages = 0;
    let mut delivered = Vec::new();
    while delivered.len() < 12 {
        match sub.next(PATIENCE).await {
            Some(Ok(Out::Deliveries(d))) => {
                assert!(d.encoded_len() < 4 << 20, "a Deliveries message of {} bytes", d.encoded_len());
                messages += 1;
                delivered.extend(d.deliveries);
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(messages >= 3, "12 events of 900 KiB came in {messages} messages");
    for d in &delivered {
        let r = sub.settle(Kind::Reject, d, None, "too big").await;
        assert_eq!(r.error_code, "", "{r:?}");
    }
    let dlq = admin.dlq_list(DlqListRequest { group: "g".into(), max: 0 }).await?.into_inner();
    assert!(!dlq.dead_letters.is_empty() && dlq.dead_letters.len() < 12, "{}", dlq.dead_letters.len());
    env.server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn subscriptions_over_max_subscriptions_are_refused() -> TestResult {
    let mut env = start_with(|c| c.max_subscriptions = 2).await?;
    env.topic("t", 1).await?;
    let a = env.subscribe(join("a", "t", 1)).await?;
    let _b = env.subscribe(join("b", "t", 1)).await?;
    let e = env.subscribe(join("c", "t", 1)).await.err().expect("refused");
    assert_code(&e, "limit_exceeded");
    assert!(e.message().contains("max_subscriptions"), "{e:?}");
    // A closed stream gives its permit back.
    drop(a);
    let deadline = Instant::now() + PATIENCE;
    loop {
        match env.subscribe(join("c", "t", 1)).await {
            Ok(_) => break,
            Err(e) if matches!(code_of(&e), herald_model::Code::LimitExceeded) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    env.server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn shutdown_ends_open_subscribe_streams() -> TestResult {
    let mut env = start().await?;
    env.topic("t", 1).await?;
    let mut sub = env.subscribe(join("g", "t", 1)).await?;
    let mut idle = env.subscribe(join("h", "t", 1)).await?;
    env.publish("t", vec![event(0)]).await?;
    sub.deliveries(1).await; // holds it, unsettled
    idle.deliveries(1).await;
    let Env { server, .. } = env;
    // Well within the grace period (10 s by default): the streams do not hold the server up.
    tokio::time::timeout(Duration::from_secs(5), server.shutdown()).await.expect("shutdown in time")?;
    for s in [&mut sub, &mut idle] {
        match s.next(PATIENCE).await {
            Some(Err(s)) => {
                assert_code(&s, "shutting_down");
                assert_eq!(s.code(), Code::Unavailable);
            }
            other => panic!("expected the stream to end: {other:?}"),
        }
    }
    Ok(())
}

// ---- Bytes that are not what they should be -------------------------------------------------

/// One gRPC frame: flag 0, the length, the bytes.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(5 + body.len());
    f.push(0);
    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(body);
    f
}

/// What a raw call answered: the gRPC status code and Herald's code, if any.
#[derive(Debug)]
struct RawAnswer {
    code: Code,
    herald_code: Option<String>,
    message: String,
}

/// Posts `body` as the whole HTTP/2 request body of a gRPC call to `path`.
async fn raw_call(channel: &Channel, path: &str, body: Vec<u8>) -> RawAnswer {
    let req = http::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(http_body_util::Full::new(Bytes::from(body))))
        .expect("request");
    let mut ch = channel.clone();
    poll_fn(|cx| ch.poll_ready(cx)).await.expect("channel ready");
    let res = tokio::time::timeout(PATIENCE, ch.call(req)).await.expect("answered in time").expect("http response");
    let (parts, body) = res.into_parts();
    let status_from = |h: &http::HeaderMap| {
        let code = Code::from_bytes(h.get("grpc-status")?.as_bytes());
        let herald_code = h.get(CODE_KEY).map(|v| v.to_str().expect("ascii").to_owned());
        let message = Status::from_header_map(h).map(|s| s.message().to_owned()).unwrap_or_default();
        Some(RawAnswer { code, herald_code, message })
    };
    if let Some(a) = status_from(&parts.headers) {
        return a;
    }
    let collected = tokio::time::timeout(PATIENCE, body.collect()).await.expect("body in time").expect("body");
    let trailers = collected.trailers().cloned().expect("a gRPC response ends with trailers");
    status_from(&trailers).expect("grpc-status in the trailers")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// Random bytes, and valid requests with a few bytes changed or cut short.
fn mangled(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let n = valid.len();
    let flipped = {
        let valid = valid.clone();
        proptest::collection::vec((0..n, any::<u8>()), 1..8).prop_map(move |flips| {
            let mut v = valid.clone();
            for (i, b) in flips {
                v[i] = b;
            }
            v
        })
    };
    let cut = (0..n).prop_map(move |cut| valid[..cut].to_vec());
    prop_oneof![proptest::collection::vec(any::<u8>(), 0..300), flipped, cut]
}

/// An answer to bad input is a status with Herald's code (or, for input that happens to decode
/// into something acceptable, success), and the server keeps serving.
fn check_answer(a: &RawAnswer) -> Result<(), TestCaseError> {
    if a.code != Code::Ok {
        prop_assert!(a.herald_code.is_some(), "no {} in {:?}", CODE_KEY, a);
        prop_assert!(!a.message.is_empty(), "{:?}", a);
    }
    Ok(())
}

#[test]
fn random_bytes_as_requests_get_a_status() -> TestResult {
    let rt = runtime();
    let mut env = rt.block_on(start())?;
    rt.block_on(env.topic("t", 1))?;
    let valid_publish = PublishRequest { topic: "t".into(), events: vec![full_event(1), event(2)] }.encode_to_vec();
    let valid_join = SubscribeRequest { msg: Some(Msg::Join(join("g", "t", 4))) }.encode_to_vec();
    let valid_settle = SubscribeRequest {
        msg: Some(Msg::Settle(Settle {
            seq: 1,
            kind: Kind::Nack as i32,
            id: Some(v1::DeliveryId { topic: "t".into(), partition: 0, offset: 0, generation: 1, attempt: 1 }),
            delay_ms: Some(5),
            reason: "r".into(),
            handler_micros: Some(10),
        })),
    }
    .encode_to_vec();
    let config = ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() };

    // Publish bodies.
    TestRunner::new(config.clone()).run(&mangled(valid_publish), |bytes| {
        let a = rt.block_on(raw_call(&env.channel, "/herald.v1.Events/Publish", frame(&bytes)));
        check_answer(&a)
    })?;
    // The first message of a Subscribe stream.
    TestRunner::new(config.clone()).run(&mangled(valid_join.clone()), |bytes| {
        let a = rt.block_on(raw_call(&env.channel, "/herald.v1.Events/Subscribe", frame(&bytes)));
        check_answer(&a)
    })?;
    // A message after a valid Join.
    TestRunner::new(config.clone()).run(&mangled(valid_settle), |bytes| {
        let mut body = frame(&valid_join);
        body.extend(frame(&bytes));
        let a = rt.block_on(raw_call(&env.channel, "/herald.v1.Events/Subscribe", body));
        check_answer(&a)
    })?;
    // Whole bodies that are not even framed right (bad flag, lengths that do not match).
    TestRunner::new(config).run(&proptest::collection::vec(any::<u8>(), 0..64), |bytes| {
        let a = rt.block_on(raw_call(&env.channel, "/herald.v1.Admin/CreateTopic", bytes));
        check_answer(&a)
    })?;

    // Still serving.
    let receipts = rt.block_on(env.publish("t", vec![event(1000)]))?;
    assert_eq!(receipts.len(), 1);
    rt.block_on(env.server.shutdown())?;
    Ok(())
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    let kb: u64 = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("VmRSS in kB");
    kb * 1024
}

#[tokio::test]
async fn frames_claiming_huge_lengths_are_refused_without_allocating() -> TestResult {
    let mut env = start().await?;
    env.topic("t", 1).await?;
    // Warm up (connection, buffers) before measuring.
    env.publish("t", vec![event(0)]).await?;
    let before = rss_bytes();
    for round in 0..20u32 {
        for (path, claimed) in [
            ("/herald.v1.Events/Publish", 0x7fff_ffffu32),
            ("/herald.v1.Events/Publish", u32::MAX),
            ("/herald.v1.Events/Subscribe", 0x7fff_ffff),
            ("/herald.v1.Admin/CreateTopic", 0x7fff_ffff),
            // Just above the default max_request_bytes (16 MiB).
            ("/herald.v1.Events/Publish", (16 << 20) + 1 + round),
        ] {
            let mut body = vec![0];
            body.extend_from_slice(&claimed.to_be_bytes());
            body.extend_from_slice(&[0x0a; 4096]);
            let a = raw_call(&env.channel, path, body).await;
            assert_eq!(a.herald_code.as_deref(), Some("request_too_large"), "{path}: {a:?}");
            assert!(a.message.contains("max_request_bytes"), "{a:?}");
        }
    }
    let grown = rss_bytes().saturating_sub(before);
    assert!(grown < 48 << 20, "RSS grew by {} MiB", grown >> 20);
    env.publish("t", vec![event(1)]).await?;
    env.server.shutdown().await?;
    Ok(())
}

// ---- Regressions found in review ------------------------------------------------------------

/// Two streams joining under the same `member_id`: the broker would count them as one member,
/// and the first stream to end would take the other's membership with it. The second Join is
/// refused while the first stream is open, and accepted once it has ended.
#[tokio::test]
async fn a_member_id_held_by_an_open_stream_is_refused() -> TestResult {
    let mut env = start().await?;
    env.topic("t", 1).await?;
    let named = |id: &str| Join { member_id: id.into(), ..join("g", "t", 4) };
    let a = env.subscribe(named("m-1")).await?;
    let e = env.subscribe(named("m-1")).await.err().expect("a second stream under the same member id is refused");
    assert_code(&e, "member_active");
    assert!(e.message().contains("m-1"), "{e:?}");
    // Another id is fine, and once the first stream ended its id is free again.
    let _other = env.subscribe(named("m-2")).await?;
    drop(a);
    let deadline = Instant::now() + PATIENCE;
    let mut b = loop {
        match env.subscribe(named("m-1")).await {
            Ok(b) => break b,
            Err(e) if matches!(code_of(&e), herald_model::Code::MemberActive) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    };
    env.publish("t", (0..4).map(event).collect()).await?;
    // The new stream's member is alive: it receives (whatever partition it owns) and settles.
    let info = env.admin.describe_group(GroupName { group: "g".into() }).await?.into_inner();
    assert!(info.members.contains(&"m-1".to_owned()), "{info:?}");
    let got = b.deliveries_within(QUIET).await;
    for d in &got {
        b.ack(d).await;
    }
    env.server.shutdown().await?;
    Ok(())
}

/// A Join the broker refuses (max_in_flight above in_flight_max) leaves no group behind.
#[tokio::test]
async fn a_refused_join_creates_no_group() -> TestResult {
    let mut env = start().await?;
    env.topic("t", 1).await?;
    let e = env.subscribe(join("g", "t", u32::MAX)).await.err().expect("refused");
    assert_code(&e, "limit_exceeded");
    assert!(e.message().contains("in_flight_max"), "{e:?}");
    let groups = env.admin.list_groups(v1::Empty {}).await?.into_inner().names;
    assert!(groups.is_empty(), "a refused Join created {groups:?}");
    env.server.shutdown().await?;
    Ok(())
}

/// `Read` answers at most `max_read_events`, as `DlqList` does, rather than refusing a larger
/// limit: fewer than asked for is a normal answer, and a client cannot know the server's limit.
#[tokio::test]
async fn read_caps_its_limit_at_max_read_events() -> TestResult {
    let mut env = start_with(|c| c.max_read_events = 3).await?;
    env.topic("t", 1).await?;
    env.publish("t", (0..5).map(event).collect()).await?;
    let r = env.events.read(ReadRequest { topic: "t".into(), partition: 0, offset: 0, limit: u32::MAX }).await?;
    assert_eq!(r.into_inner().events.len(), 3);
    env.server.shutdown().await?;
    Ok(())
}

/// Many acks in one message: each id answered (failures by position), the whole refused beyond
/// the limit, and the stream lives on.
#[tokio::test]
async fn acks_settle_many_deliveries_in_one_message() -> TestResult {
    let mut env = start().await?;
    env.topic("orders", 1).await?;
    env.publish("orders", (0..20).map(event).collect()).await?;
    let mut sub = env.subscribe(join("g", "orders", 20)).await?;
    assert!(sub.joined.batched_acks, "the server says it takes Acks");
    let ds = sub.deliveries(20).await;
    let mut ids: Vec<v1::DeliveryId> = ds.iter().map(|d| d.id.clone().unwrap()).collect();
    let mut bogus = ids[3].clone();
    bogus.topic = "other".into();
    ids.insert(5, bogus);
    let r = sub.acks(ids).await;
    assert_eq!(r.error_code, "", "{r:?}");
    assert_eq!(r.failures.len(), 1, "{r:?}");
    assert_eq!((r.failures[0].index, r.failures[0].error_code.as_str()), (5, "not_in_flight"));
    // Acked twice: the second time each one fails, none is lost.
    let again = sub.acks(ds.iter().take(2).map(|d| d.id.clone().unwrap()).collect()).await;
    assert_eq!(again.failures.iter().map(|f| f.index).collect::<Vec<_>>(), [0, 1]);
    // Beyond the limit the whole message is refused and nothing is acknowledged.
    let too_many = vec![ds[0].id.clone().unwrap(); 10_001];
    let r = sub.acks(too_many).await;
    assert_eq!(r.error_code, "request_too_large", "{r:?}");
    assert!(r.error_message.contains("10000"), "{r:?}");
    // Everything was acknowledged: the group's position is at the end once flushed.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let info = env.admin.describe_group(v1::GroupName { group: "g".into() }).await?.into_inner();
        if info.partitions[0].committed == 20 {
            break;
        }
        assert!(Instant::now() < deadline, "committed stays at {}", info.partitions[0].committed);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Credit comes with Credit messages, not with acks.
    sub.credit(1).await;
    env.publish("orders", vec![event(20)]).await?;
    assert_eq!(offsets(&sub.deliveries(1).await), [20]);
    env.server.shutdown().await?;
    Ok(())
}

/// A retry policy that names only some fields takes the defaults for the others (it used to be
/// refused: a missing backoff_factor was 0).
#[tokio::test]
async fn a_partial_retry_policy_takes_the_defaults_for_the_rest() -> TestResult {
    let mut env = start().await?;
    env.topic("orders", 1).await?;
    let settings = GroupSettings {
        topics: vec!["orders".into()],
        retry: Some(RetryPolicy { max_attempts: Some(3), ..Default::default() }),
        ..Default::default()
    };
    let sub = env
        .subscribe(Join { group: "g".into(), settings: Some(settings), max_in_flight: 5, member_id: String::new() })
        .await?;
    let retry = sub.joined.settings.as_ref().and_then(|s| s.retry).expect("settings in effect");
    let d = herald_model::RetryPolicy::default();
    assert_eq!(retry.max_attempts, Some(3));
    assert_eq!(retry.backoff_factor, Some(d.backoff_factor));
    assert_eq!(retry.backoff_base_ms, Some(d.backoff_base_ms));
    assert_eq!(retry.jitter, Some(d.jitter));
    env.server.shutdown().await?;
    Ok(())
}

/// Joined says what the member owns; a rebalance is announced with an Assignment naming the new
/// generation and partitions (it used to go stale without a word).
#[tokio::test]
async fn a_rebalance_is_announced_with_the_new_assignment() -> TestResult {
    let mut env = start().await?;
    env.topic("orders", 4).await?;
    let mut a = env.subscribe(join("g", "orders", 5)).await?;
    let first = a.joined.assignment.clone().expect("Joined names the assignment");
    assert_eq!(first.partitions.len(), 4, "{first:?}");
    assert_eq!(first.generation, a.joined.generation);
    let b = env.subscribe(join("g", "orders", 5)).await?;
    let theirs = b.joined.assignment.clone().expect("Joined names the assignment");
    assert!(theirs.generation > first.generation, "{theirs:?}");
    // The first member hears of the rebalance (within a poll wait or a heartbeat).
    let deadline = Instant::now() + PATIENCE;
    while !a.assignments.iter().any(|x| x.generation >= theirs.generation) {
        assert!(Instant::now() < deadline, "no Assignment after the rebalance: {:?}", a.assignments);
        let _ = a.next(Duration::from_millis(100)).await;
    }
    let mine = a.assignments.last().unwrap();
    let mut all: Vec<u32> = mine.partitions.iter().chain(&theirs.partitions).map(|p| p.partition).collect();
    all.sort_unstable();
    assert_eq!(all, [0, 1, 2, 3], "mine {mine:?}, theirs {theirs:?}");
    env.server.shutdown().await?;
    Ok(())
}
