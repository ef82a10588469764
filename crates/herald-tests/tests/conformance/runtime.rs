//! The consumer runtime and producer beyond what every backend shares: idempotency stores,
//! typed handlers, the producer's bounded buffer, logs and metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald::{
    CancellationToken, Client, Event, FileIdempotency, HandlerError, IdempotencyStore, MemoryIdempotency,
    ProducerConfig, TopicConfig,
};

async fn run_until_idle(
    client: &Client,
    group: &str,
    store: Option<Arc<dyn IdempotencyStore>>,
    runs: Arc<AtomicU64>,
) -> herald::RunReport {
    let stop = CancellationToken::new();
    let mut c = client.consumer(group).subscribe(["t"]).handler(move |_e: Event| {
        runs.fetch_add(1, Ordering::SeqCst);
        async { Ok(()) }
    });
    if let Some(s) = store {
        c = c.idempotency(s);
    }
    let h = tokio::spawn(c.run(stop.clone()));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while client.lag(group).await.unwrap_or(1) > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    h.await.unwrap().unwrap()
}

fn no_dedupe() -> TopicConfig {
    // Dedupe off, so the same event can be stored twice and delivered twice.
    TopicConfig { dedupe_window_ms: 0, ..TopicConfig::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_idempotency_skips_a_completed_event() {
    let client = herald::connect("mem://").await.unwrap();
    client.ensure_topic("t", no_dedupe()).await.unwrap();
    let e = Event::builder("x").build().unwrap();
    let producer = client.producer();
    producer.publish("t", e.clone()).await.unwrap();
    producer.publish("t", e.clone()).await.unwrap();
    let runs = Arc::new(AtomicU64::new(0));
    let report =
        run_until_idle(&client, "g", Some(MemoryIdempotency::new(Duration::from_secs(60))), runs.clone()).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the handler ran once");
    assert_eq!((report.ok, report.duplicates), (1, 1));
    // Without a store, both copies run: the test can tell the difference.
    let runs = Arc::new(AtomicU64::new(0));
    run_until_idle(&client, "g2", None, runs.clone()).await;
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_idempotency_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("broker").display());
    let store_dir = dir.path().join("idem");
    let e = Event::builder("x").build().unwrap();
    {
        let client = herald::connect(&url).await.unwrap();
        client.ensure_topic("t", no_dedupe()).await.unwrap();
        client.producer().publish("t", e.clone()).await.unwrap();
        let store = FileIdempotency::open(&store_dir, Duration::from_secs(600)).unwrap();
        let runs = Arc::new(AtomicU64::new(0));
        run_until_idle(&client, "g", Some(store), runs.clone()).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        client.close().await.unwrap();
    }
    let client = herald::connect(&url).await.unwrap();
    client.producer().publish("t", e.clone()).await.unwrap();
    let store = FileIdempotency::open(&store_dir, Duration::from_secs(600)).unwrap();
    assert!(store.completed("g", &format!("{}\u{0}{}", e.source(), e.id())).await.unwrap());
    let runs = Arc::new(AtomicU64::new(0));
    let report = run_until_idle(&client, "g", Some(store), runs.clone()).await;
    assert_eq!(runs.load(Ordering::SeqCst), 0, "completed before the restart: not run again");
    assert_eq!(report.duplicates, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_idempotency_forgets_after_its_ttl_and_its_limit() {
    let store = MemoryIdempotency::with_limit(Duration::from_millis(50), 2);
    store.complete("g", "a").await.unwrap();
    store.complete("g", "b").await.unwrap();
    store.complete("g", "c").await.unwrap();
    assert!(!store.completed("g", "a").await.unwrap(), "over the limit, the oldest goes");
    assert!(store.completed("g", "c").await.unwrap());
    assert!(!store.completed("other", "c").await.unwrap(), "per group");
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert!(!store.completed("g", "c").await.unwrap(), "after the TTL");
}

#[derive(serde::Deserialize)]
struct Order {
    total: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_handlers_send_undecodable_events_to_the_dlq() {
    let client = herald::connect("mem://").await.unwrap();
    client.ensure_topic("t", TopicConfig::default()).await.unwrap();
    let producer = client.producer();
    producer.publish_json("t", "order", Some("a"), &serde_json::json!({"total": 5})).await.unwrap();
    producer.publish_json("t", "order", Some("b"), &serde_json::json!({"nope": true})).await.unwrap();
    let totals = Arc::new(Mutex::new(Vec::new()));
    let t2 = totals.clone();
    let stop = CancellationToken::new();
    let c = client.consumer("g").subscribe(["t"]).handler_json(move |o: Order, _e: Event| {
        t2.lock().unwrap().push(o.total);
        async { Ok::<(), HandlerError>(()) }
    });
    let h = tokio::spawn(c.run(stop.clone()));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while client.dlq_list("g", 10).await.map_or(true, |l| l.is_empty()) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    let report = h.await.unwrap().unwrap();
    assert_eq!(*totals.lock().unwrap(), vec![5]);
    assert_eq!(report.dead_lettered, 1);
    let reason = client.dlq_list("g", 10).await.unwrap()[0].header("dlqreason").unwrap().to_owned();
    assert!(reason.contains("not the expected JSON"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_producer_buffer_makes_publishers_wait_but_loses_nothing() {
    let client = herald::connect("mem://").await.unwrap();
    client.ensure_topic("t", TopicConfig::with_partitions(2)).await.unwrap();
    let producer =
        client.producer_with(ProducerConfig { buffer_events_max: 2, batch_events_max: 3, ..Default::default() });
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let p = producer.clone();
            tokio::spawn(async move {
                p.publish("t", Event::builder("x").data(format!("{i}").into_bytes(), "text/plain").build().unwrap())
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let runs = Arc::new(AtomicU64::new(0));
    run_until_idle(&client, "g", None, runs.clone()).await;
    assert_eq!(runs.load(Ordering::SeqCst), 300);
}

/// Was a bug: the runtime fetched up to `max_in_flight` (256) events but ran `concurrency`
/// handlers (default 1), and the ack deadline starts at the fetch: with handlers slower than the
/// deadline allows for the queue, waiting events timed out, counted as failed attempts and were
/// dead-lettered although no handler failed (`ok=220 retried=71` with 200 ms handlers). The
/// runtime now fetches only what its handlers can start before the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handlers_never_let_fetched_events_time_out() {
    const EVENTS: u64 = 60;
    let client = herald::connect("mem://").await.unwrap();
    client.ensure_topic("t", TopicConfig::with_partitions(1)).await.unwrap();
    let producer = client.producer();
    for i in 0..EVENTS {
        producer.publish("t", Event::builder("x").key(format!("k{i}")).build().unwrap()).await.unwrap();
    }
    let handled = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let (h, s) = (handled.clone(), stop.clone());
    let report = client
        .consumer("g")
        .subscribe(["t"])
        .handler_timeout(Duration::from_millis(300))
        // 60 events × 50 ms = 3 s of work, twice the deadline: a runtime that fetches all of
        // them at once sees half of them time out.
        .ack_timeout(Duration::from_millis(1500))
        .handler(move |_e: Event| {
            let (h, s) = (h.clone(), s.clone());
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if h.fetch_add(1, Ordering::SeqCst) + 1 == EVENTS {
                    s.cancel();
                }
                Ok(())
            }
        })
        .run(stop)
        .await
        .unwrap();
    assert_eq!((report.ok, report.retried, report.dead_lettered), (EVENTS, 0, 0), "{report:?}");
    assert!(client.dlq_list("g", 10).await.unwrap().is_empty());
}

/// Was a bug: the runtime decided backoff and dead-lettering from its builder settings while a
/// join kept the group's stored settings, so the two retry policies could disagree silently (the
/// runtime counting a retry for an event the broker dead-lettered). The group's stored policy
/// now decides, and the runtime follows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_group_s_stored_retry_policy_decides_when_an_event_is_dead_lettered() {
    let client = herald::connect("mem://").await.unwrap();
    client.ensure_topic("t", TopicConfig::default()).await.unwrap();
    let fast = |max_attempts| herald::RetryPolicy {
        max_attempts,
        backoff_base_ms: 1,
        backoff_factor: 2.0,
        backoff_max_ms: 5,
        jitter: 0.0,
    };
    // The group exists with 2 attempts (made by an earlier consumer).
    let options = herald::SubscribeOptions { topics: vec!["t".into()], retry: fast(2), ..Default::default() };
    client.backend().subscribe("g", options).await.unwrap().close().await.unwrap();
    client.producer().publish("t", Event::builder("x").build().unwrap()).await.unwrap();
    let runs = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let r = runs.clone();
    let consumer = client
        .consumer("g")
        .subscribe(["t"])
        .retry(fast(5))
        .handler(move |_e: Event| {
            r.fetch_add(1, Ordering::SeqCst);
            async { Err(HandlerError::retryable("always fails")) }
        })
        .run(stop.clone());
    let running = tokio::spawn(consumer);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while client.dlq_list("g", 10).await.unwrap().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Give a wrong runtime the chance to run the handler a third time.
    let settled = std::time::Instant::now() + Duration::from_millis(300);
    while std::time::Instant::now() < settled && runs.load(Ordering::SeqCst) < 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    let report = running.await.unwrap().unwrap();
    let letters = client.dlq_list("g", 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].header("dlqattempts"), Some("2"));
    assert_eq!(runs.load(Ordering::SeqCst), 2, "the handler ran more often than the group allows");
    assert_eq!((report.retried, report.dead_lettered), (1, 1), "{report:?}");
}

/// Was a bug (found in review of the fetch budget): a consumer whose budget was full fetched
/// nothing, and on the embedded backend a poll was its only heartbeat, so a handler slower than
/// the session timeout got its member removed and the consumer never fetched again. Waiting now
/// heartbeats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_slower_than_the_session_timeout_keeps_its_membership() {
    let client = herald::connect("mem://").await.unwrap();
    client.ensure_topic("t", TopicConfig::default()).await.unwrap();
    let options = herald::SubscribeOptions {
        topics: vec!["t".into()],
        session_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    client.backend().subscribe("g", options).await.unwrap().close().await.unwrap();
    let producer = client.producer();
    for i in 0..3 {
        producer.publish("t", Event::builder("x").key(format!("k{i}")).build().unwrap()).await.unwrap();
    }
    let done = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let (d, s) = (done.clone(), stop.clone());
    let running = client
        .consumer("g")
        .subscribe(["t"])
        .handler(move |_e: Event| {
            let (d, s) = (d.clone(), s.clone());
            async move {
                tokio::time::sleep(Duration::from_millis(700)).await;
                if d.fetch_add(1, Ordering::SeqCst) + 1 == 3 {
                    s.cancel();
                }
                Ok(())
            }
        })
        .run(stop.clone());
    // A consumer that lost its membership stalls: bounded, so that the test fails instead.
    let report = match tokio::time::timeout(Duration::from_secs(20), running).await {
        Ok(r) => r.unwrap(),
        Err(_) => {
            stop.cancel();
            panic!("the consumer stalled: {} of 3 handled in 20 s", done.load(Ordering::SeqCst));
        }
    };
    assert_eq!((report.ok, report.retried), (3, 0), "{report:?}");
    assert_eq!(client.lag("g").await.unwrap(), 0);
}
