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
