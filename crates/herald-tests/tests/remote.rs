//! The `herald://` backend against a real server in this process: what the conformance suite
//! does not cover — a server restarting under a running consumer and under producers, a server
//! that is not there, flow control, stale settlements after a reconnect, leaving a group, and
//! publish batches larger than one request.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald::{
    CancellationToken, Client, ErrorKind, Event, HandlerError, ProducerConfig, SubscribeOptions, TopicConfig,
};
use herald_server::{Server, ServerConfig};

const WAIT: Duration = Duration::from_secs(15);

/// A server on a loopback port that can be restarted on the same port and data directory.
struct TestServer {
    dir: tempfile::TempDir,
    config: ServerConfig,
    server: Option<Server>,
    addr: SocketAddr,
}

impl TestServer {
    async fn start() -> TestServer {
        Self::start_with(ServerConfig::default()).await
    }

    async fn start_with(config: ServerConfig) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let config = ServerConfig {
            data_dir: dir.path().to_owned(),
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            grpc: SocketAddr::from(([127, 0, 0, 1], 0)),
            shutdown_grace_ms: 2000,
            ..config
        };
        let server = Server::start(config.clone()).await.unwrap();
        let addr = server.grpc_addr();
        TestServer { dir, config, server: Some(server), addr }
    }

    fn url(&self) -> String {
        format!("herald://{}", self.addr)
    }

    async fn client(&self) -> Client {
        herald::connect(&self.url()).await.unwrap()
    }

    async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.unwrap();
        }
    }

    /// Starts it again on the same port and data directory.
    async fn start_again(&mut self) {
        assert!(self.server.is_none());
        let config = ServerConfig { data_dir: self.dir.path().to_owned(), grpc: self.addr, ..self.config.clone() };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Server::start(config.clone()).await {
                Ok(s) => {
                    self.server = Some(s);
                    return;
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("restart failed, retrying: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot restart the server on {}: {e}", self.addr),
            }
        }
    }

    async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }
}

fn ev(n: u64) -> Event {
    Event::builder("test.event")
        .key(format!("k{}", n % 5))
        .data(n.to_string().into_bytes(), "text/plain")
        .build()
        .unwrap()
}

fn num(e: &Event) -> u64 {
    std::str::from_utf8(e.data()).unwrap().parse().unwrap()
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A port on which nothing listens (it was free a moment ago).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_consumer_survives_server_restarts() {
    let mut server = TestServer::start().await;
    let client = server.client().await;
    client.ensure_topic("t", TopicConfig::with_partitions(2)).await.unwrap();
    let producer = client.producer();
    producer.publish_all("t", (0..100).map(ev).collect()).await.unwrap();

    let seen: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let stop = CancellationToken::new();
    let consumer = client.consumer("g").subscribe(["t"]).concurrency(4).handler({
        let seen = seen.clone();
        move |e: Event| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().insert(num(&e));
                Ok::<(), HandlerError>(())
            }
        }
    });
    let run = tokio::spawn(consumer.run(stop.clone()));
    until("progress before the first restart", || !seen.lock().unwrap().is_empty()).await;

    // Twice: restart underneath the consumer, then publish more; the same run must get it all.
    for round in 1..=2u64 {
        server.restart().await;
        let next = round * 100;
        producer.publish_all("t", (next..next + 100).map(ev).collect()).await.unwrap();
        until(&format!("everything up to {}", next + 100), || {
            let s = seen.lock().unwrap();
            (0..next + 100).all(|n| s.contains(&n))
        })
        .await;
        // The consumer re-joined as one member; the member of the old stream is gone.
        let members = client.backend().describe_group("g").await.unwrap().members;
        assert_eq!(members.len(), 1, "after restart {round}: {members:?}");
    }
    assert!(!run.is_finished(), "the consumer stopped by itself");
    // Every event was handled; one whose ack went to a stream a restart broke comes again and is
    // acked then. Once the group's position is at the end, all were acked.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let lag = client.lag("g").await.unwrap();
        if lag == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "lag stays at {lag}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    let report = run.await.unwrap().unwrap();
    // An ack the server applied but whose answer a restart cut off is counted as a retry by the
    // runtime (it cannot know) and is not delivered again: so `ok` alone may be short of 300,
    // but every event was handled successfully at least once and none was dead-lettered.
    assert_eq!(report.dead_lettered, 0, "{report:?}");
    assert!(report.ok + report.retried >= 300, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_server_is_a_quick_unavailable_error() {
    let addr = format!("127.0.0.1:{}", free_port());
    let started = Instant::now();
    // Connecting dials nothing yet.
    let client = herald::connect(&format!("herald://{addr}")).await.unwrap();
    let e = client.list_topics().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_retryable());
    let text = e.to_string();
    assert!(text.contains(&addr) && text.contains("herald serve"), "{text}");
    let e = client.backend().publish("t", vec![ev(1)]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    let e = client.backend().subscribe("g", SubscribeOptions { topics: vec!["t".into()], ..Default::default() }).await;
    assert_eq!(e.err().map(|e| e.kind()), Some(ErrorKind::Unavailable));
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_while_the_server_is_down_is_retryable_and_the_producer_recovers() {
    let mut server = TestServer::start().await;
    let client = server.client().await;
    client.ensure_topic("t", TopicConfig::default()).await.unwrap();
    client.producer().publish("t", ev(0)).await.unwrap();
    server.stop().await;

    let e = client.backend().publish("t", vec![ev(1)]).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    let impatient =
        client.producer_with(ProducerConfig { retry_for: Duration::from_millis(300), ..Default::default() });
    let e = impatient.publish("t", ev(2)).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");

    // A producer that keeps retrying gets through once the server is back.
    let producer = client.producer();
    let pending = tokio::spawn(async move { producer.publish("t", ev(3)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!pending.is_finished(), "the publish gave up while the server was down");
    server.start_again().await;
    let receipt = tokio::time::timeout(WAIT, pending).await.unwrap().unwrap().unwrap();
    let stored = client.backend().read("t", receipt.partition, receipt.offset, 1).await.unwrap();
    assert_eq!(num(&stored[0].event), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credit_bounds_what_a_subscription_holds() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client.ensure_topic("t", TopicConfig::default()).await.unwrap();
    client.producer().publish_all("t", (0..20).map(ev).collect()).await.unwrap();
    let options = SubscribeOptions { topics: vec!["t".into()], max_in_flight: 5, ..Default::default() };
    let sub = client.backend().subscribe("g", options).await.unwrap();
    let mut held = Vec::new();
    let deadline = Instant::now() + WAIT;
    while held.len() < 5 {
        assert!(Instant::now() < deadline, "only {} of 5 arrived", held.len());
        held.extend(sub.fetch(100, Duration::from_millis(100)).await.unwrap());
    }
    assert_eq!(held.len(), 5, "more than max_in_flight arrived");
    // Nothing more while five are unsettled, however long we wait.
    assert!(sub.fetch(100, Duration::from_millis(300)).await.unwrap().is_empty());
    for m in held.drain(..) {
        sub.ack(&m).await.unwrap();
    }
    let deadline = Instant::now() + WAIT;
    while held.len() < 5 {
        assert!(Instant::now() < deadline, "only {} of the next 5 arrived", held.len());
        held.extend(sub.fetch(100, Duration::from_millis(100)).await.unwrap());
    }
    assert_eq!(held.len(), 5);
    sub.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_of_a_broken_stream_are_stale_and_come_again() {
    let mut server = TestServer::start().await;
    let client = server.client().await;
    client.ensure_topic("t", TopicConfig::default()).await.unwrap();
    client.producer().publish_all("t", (0..3).map(ev).collect()).await.unwrap();
    let options = SubscribeOptions { topics: vec!["t".into()], max_in_flight: 10, ..Default::default() };
    let sub = client.backend().subscribe("g", options).await.unwrap();
    let mut old = Vec::new();
    let deadline = Instant::now() + WAIT;
    while old.len() < 3 {
        assert!(Instant::now() < deadline, "only {} of 3 arrived", old.len());
        old.extend(sub.fetch(10, Duration::from_millis(100)).await.unwrap());
    }
    server.restart().await;
    // The subscription re-joins by itself and gets the three again, as later attempts.
    let mut again = Vec::new();
    let deadline = Instant::now() + WAIT;
    while again.len() < 3 {
        assert!(Instant::now() < deadline, "only {} of 3 came again", again.len());
        again.extend(sub.fetch(10, Duration::from_millis(100)).await.unwrap());
    }
    for m in &old {
        let e = sub.ack(m).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Stale, "{e}");
    }
    let mut nums: Vec<u64> = again.iter().map(|m| num(&m.event)).collect();
    nums.sort();
    assert_eq!(nums, vec![0, 1, 2]);
    assert!(again.iter().all(|m| m.attempt >= 2), "a redelivery counts as a new attempt");
    for m in &again {
        sub.ack(m).await.unwrap();
    }
    sub.close().await.unwrap();
    assert_eq!(client.lag("g").await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_leaves_the_group_at_once() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client.ensure_topic("t", TopicConfig::with_partitions(2)).await.unwrap();
    let options = SubscribeOptions { topics: vec!["t".into()], ..Default::default() };
    let a = client.backend().subscribe("g", options.clone()).await.unwrap();
    let b = client.backend().subscribe("g", options).await.unwrap();
    assert_eq!(client.backend().describe_group("g").await.unwrap().members.len(), 2);
    a.close().await.unwrap();
    assert_eq!(client.backend().describe_group("g").await.unwrap().members.len(), 1);
    let e = a.fetch(1, Duration::ZERO).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed);
    // Closing the client closes what it opened.
    client.close().await.unwrap();
    assert_eq!(b.fetch(1, Duration::ZERO).await.unwrap_err().kind(), ErrorKind::Closed);
    assert_eq!(client.list_topics().await.unwrap_err().kind(), ErrorKind::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_one_request_is_split() {
    // The server takes at most 1000 events and 5 MiB per request.
    let server = TestServer::start_with(ServerConfig {
        max_batch_events: 1000,
        max_request_bytes: 5 << 20,
        ..ServerConfig::default()
    })
    .await;
    let client = server.client().await;
    client.ensure_topic("t", TopicConfig::default()).await.unwrap();
    let receipts = client.backend().publish("t", (0..2500).map(ev).collect()).await.unwrap();
    assert_eq!(receipts.len(), 2500);
    assert!(receipts.windows(2).all(|w| w[0].offset + 1 == w[1].offset), "stored in order");
    // Twelve events of 900 KB: 10.8 MB, more than two requests' worth.
    let big: Vec<Event> = (0..12)
        .map(|i| Event::builder("big").data(vec![i as u8; 900_000], "application/octet-stream").build().unwrap())
        .collect();
    let receipts = client.backend().publish("t", big).await.unwrap();
    assert_eq!(receipts.len(), 12);
    let stored = client.backend().read("t", 0, receipts[11].offset, 1).await.unwrap();
    assert_eq!(stored[0].event.data().len(), 900_000);
}

// ---- Regressions found in review ------------------------------------------------------------

/// `read` returns at most what was asked for, and fewer is a normal answer: asking for more than
/// the server's `max_read_events` is not an error (as on the embedded backend).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_asking_for_more_than_the_server_answers_gets_fewer() {
    let server = TestServer::start_with(ServerConfig { max_read_events: 3, ..ServerConfig::default() }).await;
    let client = server.client().await;
    client.ensure_topic("t", TopicConfig::default()).await.unwrap();
    client.backend().publish("t", (0..5).map(ev).collect()).await.unwrap();
    let got = client.backend().read("t", 0, 0, 20_000).await.unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(client.backend().read("t", 0, 3, 20_000).await.unwrap().len(), 2);
}

/// A URL naming a port where something that does not speak gRPC listens (the server's HTTP
/// port, a common mix-up) is not "retry for 30 s": it fails at once, non-retryable, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_that_does_not_speak_grpc_is_not_retryable() {
    let server = TestServer::start().await;
    let http = server.server.as_ref().unwrap().http_addr();
    let client = herald::connect(&format!("herald://{http}")).await.unwrap();
    let started = Instant::now();
    let e = client.backend().list_topics().await.unwrap_err();
    assert_eq!((e.kind(), e.code().as_str()), (ErrorKind::Invalid, "invalid_url"), "{e}");
    assert!(e.to_string().contains("gRPC address"), "{e}");
    let e = client.backend().publish("t", vec![ev(1)]).await.unwrap_err();
    assert!(!e.is_retryable(), "{e}");
    // The producer gives up at once rather than retrying for its 30 s.
    let e = client.producer().publish("t", ev(2)).await.unwrap_err();
    assert_eq!(e.code().as_str(), "invalid_url", "{e}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

/// `fetch` with a wait too long to add to the clock (`Duration::MAX`) waits for a message, as
/// the embedded backend does, instead of panicking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_with_an_endless_wait_does_not_panic() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client.ensure_topic("t", TopicConfig::default()).await.unwrap();
    client.backend().publish("t", vec![ev(7)]).await.unwrap();
    let options = SubscribeOptions { topics: vec!["t".into()], max_in_flight: 4, ..Default::default() };
    let sub = client.backend().subscribe("g", options).await.unwrap();
    let got = tokio::time::timeout(WAIT, sub.fetch(4, Duration::MAX)).await.expect("a message in time").unwrap();
    assert_eq!(got.iter().map(|m| num(&m.event)).collect::<Vec<_>>(), vec![7]);
    sub.ack(&got[0]).await.unwrap();
    sub.close().await.unwrap();
}
