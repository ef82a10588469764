//! Wire parity: the same failure reaches a user with the same stable code, kind and retryability
//! on every path — the embedded SDK (`mem://`), the SDK over a server (`herald://`), raw gRPC,
//! raw HTTP and `nats://` — and the servers answer it with the gRPC and HTTP status of that code
//! (`herald_model::Code`, the one table). Was a bug: codes lived in five tables and disagreed
//! (`group_active` was `Storage` embedded but `Busy` remote; `corrupt_event` was a gRPC client
//! error but an HTTP server error; `limit_exceeded` answered 429 with `Retry-After`).

use herald::{Client, Code, Event, TopicConfig};
use herald_proto::v1;
use herald_proto::v1::admin_client::AdminClient;
use herald_proto::v1::events_client::EventsClient;
use herald_server::{Server, ServerConfig};

use crate::harness::Harness;

/// One path's answer to a failure.
#[derive(Debug)]
struct Answer {
    path: &'static str,
    code: Code,
    kind: herald::ErrorKind,
    retryable: bool,
}

impl Answer {
    /// A raw wire answer: its kind and retryability are what the SDK makes of its code.
    fn wire(path: &'static str, code: Code) -> Answer {
        Answer { path, code, kind: code.kind(), retryable: code.is_retryable() }
    }
}

fn sdk(path: &'static str, r: herald::Result<impl std::fmt::Debug>) -> Answer {
    let e = r.expect_err(path);
    Answer { path, code: e.code(), kind: e.kind(), retryable: e.is_retryable() }
}

fn grpc(r: Result<impl std::fmt::Debug, tonic::Status>) -> Answer {
    let s = r.expect_err("grpc");
    let code = herald_proto::code_of(&s);
    assert!(s.metadata().contains_key(herald_proto::CODE_KEY), "a Herald server always names its code: {s:?}");
    assert_eq!(s.code(), herald_proto::grpc_code(code), "gRPC status of {code}: {s:?}");
    Answer::wire("grpc", code)
}

async fn http(r: reqwest::Response) -> Answer {
    let status = r.status().as_u16();
    let retry_after = r.headers().contains_key("retry-after");
    let body: serde_json::Value = r.json().await.unwrap();
    let code = Code::from_wire(body["code"].as_str().expect("an error body names its code"));
    assert_eq!(status, code.http_status(), "HTTP status of {code}: {body}");
    assert_eq!(retry_after, code.is_retryable(), "Retry-After only where retrying helps: {code}");
    Answer::wire("http", code)
}

fn same(case: &str, answers: &[Answer]) {
    let first = &answers[0];
    for a in answers {
        assert_eq!(
            (a.code, a.kind, a.retryable),
            (first.code, first.kind, first.retryable),
            "{case}: {} and {} disagree: {answers:?}",
            a.path,
            first.path
        );
    }
}

/// A valid event in the CloudEvents HTTP binary mode.
async fn binary_event(web: &reqwest::Client, url: &str, data: Vec<u8>) -> reqwest::Response {
    web.post(url)
        .header("ce-specversion", "1.0")
        .header("ce-id", "1")
        .header("ce-source", "/t")
        .header("ce-type", "x")
        .header("content-type", "text/plain")
        .body(data)
        .send()
        .await
        .unwrap()
}

fn big() -> Event {
    Event::builder("x").data(vec![b'a'; 500], "text/plain").build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_path_reports_a_failure_with_the_same_code_kind_and_retryability() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerConfig {
        data_dir: dir.path().to_owned(),
        http: "127.0.0.1:0".parse().unwrap(),
        grpc: "127.0.0.1:0".parse().unwrap(),
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let nats = Harness::nats();
    let clients: Vec<(&'static str, Client)> = vec![
        ("mem://", herald::connect("mem://").await.unwrap()),
        ("herald://", herald::connect(&format!("herald://{}", server.grpc_addr())).await.unwrap()),
        ("nats://", nats.client().await),
    ];
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (mut events, mut admin) = (EventsClient::new(channel.clone()), AdminClient::new(channel));
    let web = reqwest::Client::new();
    let base = format!("http://{}", server.http_addr());
    let small = TopicConfig { max_event_bytes: 200, ..TopicConfig::default() };
    for (_, c) in &clients {
        c.ensure_topic("small", small.clone()).await.unwrap();
    }

    // A topic that does not exist.
    let mut answers = Vec::new();
    for (path, c) in &clients {
        answers.push(sdk(path, c.backend().publish("missing", vec![Event::builder("x").build().unwrap()]).await));
    }
    let request = v1::PublishRequest { topic: "missing".into(), events: vec![herald_proto::event_to_proto(&big())] };
    answers.push(grpc(events.publish(request).await));
    answers.push(http(binary_event(&web, &format!("{base}/v1/topics/missing/events"), b"x".to_vec()).await).await);
    same("publish to a missing topic", &answers);
    assert_eq!(answers[0].code, Code::TopicNotFound);

    // A name that cannot be a topic.
    let mut answers = Vec::new();
    for (path, c) in &clients {
        answers.push(sdk(path, c.ensure_topic("bad name", TopicConfig::default()).await));
    }
    let request = v1::CreateTopicRequest { name: "bad name".into(), config: None, if_not_exists: false };
    answers.push(grpc(admin.create_topic(request).await));
    let body = serde_json::json!({"name": "bad name", "partitions": 1});
    answers.push(http(web.post(format!("{base}/v1/topics")).json(&body).send().await.unwrap()).await);
    same("create a topic with an invalid name", &answers);
    assert_eq!(answers[0].code, Code::InvalidTopicName);

    // An event over the topic's size limit.
    let mut answers = Vec::new();
    for (path, c) in &clients {
        answers.push(sdk(path, c.backend().publish("small", vec![big()]).await));
    }
    let request = v1::PublishRequest { topic: "small".into(), events: vec![herald_proto::event_to_proto(&big())] };
    answers.push(grpc(events.publish(request).await));
    answers.push(http(binary_event(&web, &format!("{base}/v1/topics/small/events"), vec![b'a'; 500]).await).await);
    same("publish an event over the topic's limit", &answers);
    assert_eq!(answers[0].code, Code::EventTooLarge);

    // A group that does not exist.
    let mut answers = Vec::new();
    for (path, c) in &clients {
        answers.push(sdk(path, c.backend().describe_group("nobody").await));
    }
    answers.push(grpc(admin.describe_group(v1::GroupName { group: "nobody".into() }).await));
    answers.push(http(web.get(format!("{base}/v1/groups/nobody")).send().await.unwrap()).await);
    same("describe a missing group", &answers);
    assert_eq!(answers[0].code, Code::GroupNotFound);

    // Resetting a group that has members (not offered on NATS: it says so).
    let mut answers = Vec::new();
    let mut subs = Vec::new();
    for (path, c) in &clients[..2] {
        let options = herald::SubscribeOptions { topics: vec!["small".into()], ..Default::default() };
        subs.push(c.backend().subscribe("busy", options).await.unwrap());
        answers.push(sdk(path, c.backend().reset_group("busy", herald::StartFrom::Earliest).await));
    }
    let request = v1::ResetGroupRequest { group: "busy".into(), to: None };
    answers.push(grpc(admin.reset_group(request).await));
    let to = serde_json::json!({"to": "earliest"});
    answers.push(http(web.post(format!("{base}/v1/groups/busy/reset")).json(&to).send().await.unwrap()).await);
    same("reset a group with members", &answers);
    assert_eq!(answers[0].code, Code::GroupActive);
    let e = clients[2].1.backend().reset_group("busy", herald::StartFrom::Earliest).await.unwrap_err();
    assert_eq!(e.code(), Code::Unsupported, "{e}");

    // Settling a delivery twice.
    let mut answers = Vec::new();
    for (path, c) in &clients {
        c.backend().publish("small", vec![Event::builder("x").build().unwrap()]).await.unwrap();
        let options = herald::SubscribeOptions { topics: vec!["small".into()], ..Default::default() };
        let sub = c.backend().subscribe("twice", options).await.unwrap();
        let m = loop {
            if let Some(m) = sub.fetch(1, std::time::Duration::from_secs(5)).await.unwrap().pop() {
                break m;
            }
        };
        sub.ack(&m).await.unwrap();
        answers.push(sdk(path, sub.ack(&m).await));
        sub.close().await.unwrap();
    }
    same("settle a delivery twice", &answers);
    assert_eq!(answers[0].code.kind(), herald::ErrorKind::Stale);

    for s in subs {
        s.close().await.unwrap();
    }
    for (_, c) in clients {
        c.close().await.unwrap();
    }
    server.shutdown().await.unwrap();
}
