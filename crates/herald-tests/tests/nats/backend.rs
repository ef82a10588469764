//! What is specific to the NATS backend: errors, limits, the JetStream settings a group maps to,
//! durable attempts, and order per key across a partition takeover.

use std::time::Duration;

use herald::{ErrorKind, Event, OrderingMode, RetryPolicy, SubscribeOptions, TopicConfig};

use crate::harness::Harness;
use crate::server::free_port;

fn ev(key: &str, n: u64) -> Event {
    Event::builder("test.event").key(key).data(n.to_string().into_bytes(), "text/plain").build().unwrap()
}

fn num(e: &Event) -> u64 {
    std::str::from_utf8(e.data()).unwrap().parse().unwrap()
}

fn options(ack_timeout: Duration) -> SubscribeOptions {
    SubscribeOptions {
        topics: vec!["t".into()],
        ack_timeout,
        session_timeout: Duration::from_secs(2),
        retry: RetryPolicy {
            max_attempts: 5,
            backoff_base_ms: 10,
            backoff_factor: 2.0,
            backoff_max_ms: 50,
            jitter: 0.0,
        },
        ..SubscribeOptions::default()
    }
}

async fn jetstream(h: &Harness) -> async_nats::jetstream::Context {
    let url = h.url().await;
    async_nats::jetstream::new(async_nats::connect(url.trim_start_matches("nats://")).await.unwrap())
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_and_bad_urls_are_invalid() {
    let e = herald::connect(&format!("nats://127.0.0.1:{}", free_port())).await.err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_retryable());
    for bad in ["nats://", "nats://localhost", "nats://h:1?replicas=7", "nats://h:1?colour=blue"] {
        let e = herald::connect(bad).await.err().unwrap();
        assert_eq!(e.kind(), ErrorKind::Invalid, "{bad}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_bad_input_are_typed_errors() {
    let h = Harness::nats();
    let client = h.client().await;
    let e = client.ensure_topic("t", TopicConfig::with_partitions(257)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
    let e = client.ensure_topic("bad name", TopicConfig::default()).await.unwrap_err();
    assert_eq!(e.code().as_str(), "invalid_topic_name");
    let e = client.backend().publish("missing", vec![ev("k", 1)]).await.unwrap_err();
    assert_eq!((e.kind(), e.code().as_str()), (ErrorKind::NotFound, "topic_not_found"));

    client.ensure_topic("t", TopicConfig { max_event_bytes: 200, ..TopicConfig::default() }).await.unwrap();
    let big = Event::builder("x").data(vec![b'a'; 500], "text/plain").build().unwrap();
    let e = client.backend().publish("t", vec![big]).await.unwrap_err();
    assert_eq!((e.kind(), e.code().as_str()), (ErrorKind::InvalidEvent, "event_too_large"));
    let many: Vec<Event> = (0..10_001).map(|i| ev("k", i)).collect();
    let e = client.backend().publish("t", many).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Limit, "{e}");
    let e = client.backend().subscribe("g*", options(Duration::from_secs(5))).await.err().unwrap();
    assert_eq!(e.code().as_str(), "invalid_group_name");
    // Three replicas on a single server: refused, and said so.
    let r3 = herald::connect(&format!("{}?replicas=3", h.url().await)).await.unwrap();
    let e = r3.ensure_topic("r3", TopicConfig::default()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
    assert!(e.to_string().contains("refused"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_maps_to_consumers_with_ack_wait_backoff_and_bounded_pending() {
    let h = Harness::nats();
    let client = h.client().await;
    client.ensure_topic("t", TopicConfig::with_partitions(2)).await.unwrap();
    // Forty events of one key: one is out, the rest wait for it, at most max_in_flight held.
    client.producer().publish_all("t", (0..40).map(|i| ev("same", i)).collect()).await.unwrap();
    let sub = client
        .backend()
        .subscribe("g", SubscribeOptions { max_in_flight: 4, ..options(Duration::from_secs(5)) })
        .await
        .unwrap();
    let first = sub.fetch(10, Duration::from_secs(5)).await.unwrap();
    assert_eq!(first.len(), 1, "one event of a key at a time");
    assert_eq!((num(&first[0].event), first[0].attempt), (0, 1));
    let js = jetstream(&h).await;
    let partition = first[0].partition;
    let stream = js.get_stream("HERALD_t").await.unwrap();
    let info = stream.consumer_info(format!("g__P{partition}")).await.unwrap();
    // JetStream reports BackOff[0] as the ack wait of the first delivery.
    assert_eq!(info.config.ack_wait, info.config.backoff[0]);
    assert_eq!(info.config.max_deliver, -1, "MaxDeliver unlimited: the runtime dead-letters");
    assert_eq!(info.config.backoff.len(), 5);
    assert_eq!(info.config.backoff[0], Duration::from_secs(5) + Duration::from_millis(10));
    assert_eq!(info.config.max_ack_pending, 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let info = stream.consumer_info(format!("g__P{partition}")).await.unwrap();
    assert!(info.num_ack_pending <= 4, "held beyond max_in_flight: {}", info.num_ack_pending);
    assert!(sub.fetch(10, Duration::from_millis(200)).await.unwrap().is_empty(), "the key is held");
    sub.ack(&first[0]).await.unwrap();
    let next = sub.fetch(10, Duration::from_secs(5)).await.unwrap();
    assert_eq!(next.iter().map(|m| num(&m.event)).collect::<Vec<_>>(), vec![1]);

    // Admin: the group, its member and its partitions (the replay partition last).
    let g = client.backend().describe_group("g").await.unwrap();
    assert_eq!(g.members.len(), 1);
    assert_eq!(g.partitions.len(), 3);
    assert_eq!(g.partitions[2].topic, "g.replay");
    let p = &g.partitions[partition as usize];
    assert_eq!(p.owner.as_deref(), Some(g.members[0].as_str()));
    assert_eq!(p.lag, 39, "40 events of one partition, 1 acked");
    assert!((1..=4).contains(&p.in_flight), "in flight {}", p.in_flight);
    assert_eq!(client.backend().list_groups().await.unwrap(), vec!["g"]);
    assert_eq!(client.list_topics().await.unwrap(), vec!["t"]);
    let e = client.backend().describe_group("nope").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    sub.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_come_from_the_delivery_count_and_survive_a_server_restart() {
    let h = Harness::nats();
    let client = h.client().await;
    client.ensure_topic("t", TopicConfig::default()).await.unwrap();
    client.producer().publish("t", ev("k", 1)).await.unwrap();
    let backend = client.backend().clone();
    let sub = backend.subscribe("g", options(Duration::from_secs(5))).await.unwrap();
    for want in 1..=2 {
        let m = sub.fetch(1, Duration::from_secs(5)).await.unwrap().pop().expect("a delivery");
        assert_eq!(m.attempt, want);
        // The second retry comes after the restart (a message given back unhandled at close
        // would count one more delivery).
        let delay = if want == 1 { 10 } else { 2000 };
        sub.nack(&m, Some(Duration::from_millis(delay)), "again").await.unwrap();
    }
    sub.close().await.unwrap();
    let client = h.restart(client).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let sub = loop {
        match client.backend().subscribe("g", options(Duration::from_secs(5))).await {
            Ok(s) => break s,
            Err(e) if e.is_retryable() && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("{e}"),
        }
    };
    let m = sub.fetch(1, Duration::from_secs(10)).await.unwrap().pop().expect("a delivery after the restart");
    assert_eq!(m.attempt, 3, "the attempt count is durable");
    sub.ack(&m).await.unwrap();
    sub.close().await.unwrap();
    assert_eq!(client.lag("g").await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_owner_waits_for_what_the_previous_owner_left_unsettled() {
    let h = Harness::nats();
    let client = h.client().await;
    client.ensure_topic("t", TopicConfig::default()).await.unwrap();
    client.producer().publish_all("t", vec![ev("k", 1), ev("k", 2), ev("other", 3)]).await.unwrap();
    let opts = SubscribeOptions { ordering: OrderingMode::Key, ..options(Duration::from_secs(2)) };
    let a = client.backend().subscribe("g", opts.clone()).await.unwrap();
    let got = a.fetch(10, Duration::from_secs(5)).await.unwrap();
    let mut nums: Vec<u64> = got.iter().map(|m| num(&m.event)).collect();
    nums.sort();
    assert_eq!(nums, vec![1, 3]);
    let three = got.iter().find(|m| num(&m.event) == 3).unwrap();
    a.ack(three).await.unwrap();
    // The first member leaves with event 1 still unsettled (as if its handler hung).
    a.close().await.unwrap();
    let b = client.backend().subscribe("g", opts).await.unwrap();
    let start = std::time::Instant::now();
    let first = loop {
        let got = b.fetch(10, Duration::from_secs(1)).await.unwrap();
        if let Some(m) = got.first() {
            assert_eq!(got.len(), 1);
            break m.clone();
        }
        assert!(start.elapsed() < Duration::from_secs(10), "event 1 never came back");
    };
    // Event 2 must not overtake event 1, which comes back after its ack wait.
    assert_eq!((num(&first.event), first.attempt), (1, 2));
    assert!(start.elapsed() >= Duration::from_millis(500), "handed out before the ack wait: {:?}", start.elapsed());
    b.ack(&first).await.unwrap();
    let next = b.fetch(10, Duration::from_secs(5)).await.unwrap();
    assert_eq!(next.iter().map(|m| num(&m.event)).collect::<Vec<_>>(), vec![2]);
    b.ack(&next[0]).await.unwrap();
    b.close().await.unwrap();
}

/// Was a bug: against nats-server 2.9 (no stream metadata) every topic failed with "stream HERALD_t
/// exists but was not created by Herald". Connecting now says the server is too old and which
/// version is needed. Runs Debian's nats-server 2.9 (`scripts/test` installs it when missing).
#[tokio::test]
async fn a_nats_server_older_than_2_10_is_refused_at_connect_with_the_version_needed() {
    let old = std::path::Path::new("/usr/sbin/nats-server");
    assert!(old.is_file(), "Debian's nats-server (2.9) is missing: ./scripts/test installs it");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = std::process::Command::new(old)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "nats-server 2.9 did not listen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let e = herald::connect(&format!("nats://127.0.0.1:{port}")).await.err().expect("refused");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("2.9") && e.to_string().contains("2.10 or newer"), "{e}");
}

/// A NATS server that requires credentials: refused without them (`unauthenticated`, saying
/// what to give, not retried), served with a user and password or a token from the options.
#[tokio::test]
async fn credentials_come_from_the_options_and_a_refusal_says_what_to_give() {
    let base = tempfile::tempdir().unwrap();
    let mut users = crate::server::Node::new(base.path(), "users", free_port(), free_port(), &[]);
    users.configure("authorization {\n  users: [{user: herald, password: s3cret}]\n}\n");
    users.start();
    let e = herald::connect_with(&users.url(), herald::ConnectOptions::default()).await.err().expect("refused");
    assert_eq!(e.code(), herald::Code::Unauthenticated, "{e}");
    assert!(e.to_string().contains("HERALD_NATS_USER"), "{e}");
    let wrong = herald::ConnectOptions { nats_user: Some(("herald".into(), "nope".into())), ..Default::default() };
    assert_eq!(
        herald::connect_with(&users.url(), wrong).await.err().map(|e| e.code()),
        Some(herald::Code::Unauthenticated)
    );
    let right = herald::ConnectOptions { nats_user: Some(("herald".into(), "s3cret".into())), ..Default::default() };
    let client = herald::connect_with(&users.url(), right).await.expect("connects with the password");
    client.ensure_topic("orders", TopicConfig::with_partitions(1)).await.unwrap();
    client.producer().publish("orders", Event::builder("t").build().unwrap()).await.unwrap();
    client.close().await.unwrap();

    let mut token = crate::server::Node::new(base.path(), "token", free_port(), free_port(), &[]);
    token.configure("authorization {\n  token: \"t0ken\"\n}\n");
    token.start();
    let with_token = herald::ConnectOptions { token: Some("t0ken".into()), ..Default::default() };
    let client = herald::connect_with(&token.url(), with_token).await.expect("connects with the token");
    client.ensure_topic("orders", TopicConfig::with_partitions(1)).await.unwrap();
    client.close().await.unwrap();
}

fn object_schema(ty: &str, description: String) -> herald::schema::NewSchema {
    herald::schema::NewSchema {
        ty: ty.to_owned(),
        format: herald::schema::SchemaFormat::JsonSchema,
        schema: serde_json::json!({ "type": "object", "description": description }),
        compatibility: None,
    }
}

/// Schemas on NATS: registrations racing from two clients are decided one after the other
/// (compare-and-set on the KV key), another client's registration is enforced within the cache
/// time, and a topic's schemas are held to what one KV value may take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_race_safely_reach_other_producers_and_are_bounded() {
    let h = Harness::nats();
    let (a, b) = (h.client().await, h.client().await);
    a.ensure_topic("t", TopicConfig::default()).await.unwrap();
    // Both clients have read the (empty) schemas: b publishes anything.
    b.producer().publish("t", Event::builder("order.placed").json(&1).build().unwrap()).await.unwrap();
    let racing = (0..8).map(|i| {
        let c = if i % 2 == 0 { a.clone() } else { b.clone() };
        tokio::spawn(async move { c.register_schema("t", &object_schema("order.placed", format!("v{i}"))).await })
    });
    let mut versions: Vec<u32> = Vec::new();
    for r in futures::future::join_all(racing).await {
        versions.push(r.unwrap().unwrap().version);
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=8).collect::<Vec<u32>>(), "every registration got its own version");
    // b's copy is at most a second old: an event that is no object is refused by then.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match b.producer().publish("t", Event::builder("order.placed").json(&1).build().unwrap()).await {
            Err(e) => {
                assert_eq!(e.code(), herald::Code::SchemaInvalid, "{e}");
                break;
            }
            Ok(_) => assert!(std::time::Instant::now() < deadline, "b never enforced a's schema"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Types of ~250 KiB each: the fifth would make the KV value larger than 1 MiB.
    let big = |i: usize| object_schema(&format!("big.{i}"), "x".repeat(250 * 1024));
    for i in 0..4 {
        a.register_schema("t", &big(i)).await.unwrap();
    }
    let e = a.register_schema("t", &big(4)).await.unwrap_err();
    assert_eq!(e.code(), herald::Code::LimitExceeded, "{e}");
    assert!(e.to_string().contains("1048576"), "{e}");
    assert_eq!(a.backend().list_schemas("t").await.unwrap().1.len(), 5, "order.placed and four big ones");
}
