//! The cases. Each takes a harness and must pass on every backend that declares the
//! capabilities it needs.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald::{CancellationToken, Client, Event, HandlerError, RetryPolicy, TopicConfig};
use herald_broker::dlq_headers;
use tokio::task::JoinHandle;

use crate::harness::Harness;

const WAIT: Duration = Duration::from_secs(20);

fn ev(key: Option<&str>, n: u64) -> Event {
    let mut b = Event::builder("test.event").data(n.to_string().into_bytes(), "text/plain");
    if let Some(k) = key {
        b = b.key(k);
    }
    b.build().unwrap()
}

fn num(e: &Event) -> u64 {
    std::str::from_utf8(e.data()).unwrap().parse().unwrap()
}

fn fast_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy { max_attempts, backoff_base_ms: 10, backoff_factor: 2.0, backoff_max_ms: 50, jitter: 0.0 }
}

type Seen = Arc<Mutex<Vec<(Event, u32)>>>;

/// Runs a consumer whose handler records each event (with the time it started) and answers with
/// `decide(event, nth_time_seen)`.
fn spawn_consumer<F>(
    client: &Client,
    group: &str,
    topics: &[&str],
    concurrency: usize,
    retry: RetryPolicy,
    decide: F,
) -> (Seen, CancellationToken, JoinHandle<herald::Result<herald::RunReport>>)
where
    F: Fn(&Event, u32) -> Result<(), HandlerError> + Send + Sync + 'static,
{
    let seen: Seen = Arc::default();
    let counts: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let stop = CancellationToken::new();
    let decide = Arc::new(decide);
    let consumer = client
        .consumer(group)
        .subscribe(topics.iter().copied())
        .concurrency(concurrency)
        .retry(retry)
        .handler_timeout(Duration::from_secs(5))
        .shutdown_grace(Duration::from_secs(5))
        .handler({
            let (seen, counts, decide) = (seen.clone(), counts.clone(), decide.clone());
            move |e: Event| {
                let (seen, counts, decide) = (seen.clone(), counts.clone(), decide.clone());
                async move {
                    let nth = {
                        let mut c = counts.lock().unwrap();
                        let n = c.entry(e.id().to_owned()).or_insert(0);
                        *n += 1;
                        *n
                    };
                    seen.lock().unwrap().push((e.clone(), nth));
                    decide(&e, nth)
                }
            }
        });
    let handle = tokio::spawn(consumer.run(stop.clone()));
    (seen, stop, handle)
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn ok(_: &Event, _: u32) -> Result<(), HandlerError> {
    Ok(())
}

fn distinct(seen: &Seen) -> HashSet<u64> {
    seen.lock().unwrap().iter().map(|(e, _)| num(e)).collect()
}

pub async fn publish_subscribe_keeps_payload_and_headers(h: &Harness) {
    let client = h.client().await;
    client.ensure_topic("t", TopicConfig::with_partitions(2)).await.unwrap();
    let event = Event::builder("order.created")
        .source("/shop")
        .subject("order/1")
        .key("customer-1")
        .data(br#"{"total":42}"#.to_vec(), "application/json")
        .header("tenant", "acme")
        .traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        .build()
        .unwrap();
    let receipt = client.producer().publish("t", event.clone()).await.unwrap();
    assert!(!receipt.duplicate);
    let (seen, stop, handle) = spawn_consumer(&client, "g", &["t"], 1, RetryPolicy::default(), ok);
    until("the event", || seen.lock().unwrap().len() == 1).await;
    stop.cancel();
    assert_eq!(handle.await.unwrap().unwrap().ok, 1);
    let got = seen.lock().unwrap()[0].0.clone();
    assert_eq!(got.id(), event.id());
    assert_eq!(got.data(), event.data());
    assert_eq!(got.header("tenant"), Some("acme"));
    assert_eq!(got.key(), Some("customer-1"));
    assert_eq!(got.subject(), Some("order/1"));
    assert_eq!(got.traceparent(), event.traceparent());
    assert_eq!(got.time(), event.time());
}

pub async fn concurrent_publishers_and_subscribers(h: &Harness) {
    let client = h.client().await;
    client.ensure_topic("t", TopicConfig::with_partitions(4)).await.unwrap();
    let (s1, stop1, h1) = spawn_consumer(&client, "g", &["t"], 8, RetryPolicy::default(), ok);
    let (s2, stop2, h2) = spawn_consumer(&client, "g", &["t"], 8, RetryPolicy::default(), ok);
    let mut pubs = Vec::new();
    for p in 0..4u64 {
        let producer = client.producer();
        pubs.push(tokio::spawn(async move {
            for i in 0..100u64 {
                producer.publish("t", ev(Some(&format!("k{}", i % 10)), p * 100 + i)).await.unwrap();
            }
        }));
    }
    for p in pubs {
        p.await.unwrap();
    }
    until("400 distinct events", || distinct(&s1).len() + distinct(&s2).len() >= 400).await;
    stop1.cancel();
    stop2.cancel();
    h1.await.unwrap().unwrap();
    h2.await.unwrap().unwrap();
    let all: HashSet<u64> = distinct(&s1).union(&distinct(&s2)).copied().collect();
    assert_eq!(all, (0..400).collect());
}

pub async fn many_topics_at_once(h: &Harness) {
    let client = h.client().await;
    let topics: Vec<String> = (0..10).map(|i| format!("topic-{i}")).collect();
    let producer = client.producer();
    for (i, t) in topics.iter().enumerate() {
        client.ensure_topic(t, TopicConfig::default()).await.unwrap();
        producer.publish(t, ev(None, i as u64)).await.unwrap();
    }
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let (seen, stop, handle) = spawn_consumer(&client, "g", &names, 4, RetryPolicy::default(), ok);
    until("one event per topic", || distinct(&seen).len() == 10).await;
    stop.cancel();
    handle.await.unwrap().unwrap();
    assert_eq!(distinct(&seen), (0..10).collect());
}

pub async fn redelivery_after_nack(h: &Harness) {
    let client = h.client().await;
    client.ensure_topic("t", TopicConfig::default()).await.unwrap();
    client.producer().publish("t", ev(Some("k"), 1)).await.unwrap();
    let (seen, stop, handle) = spawn_consumer(&client, "g", &["t"], 1, fast_retry(5), |_, nth| {
        if nth == 1 { Err(HandlerError::retryable("first try fails")) } else { Ok(()) }
    });
    until("a redelivery", || seen.lock().unwrap().len() == 2).await;
    stop.cancel();
    let report = handle.await.unwrap().unwrap();
    assert_eq!((report.ok, report.retried), (1, 1));
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].0.id(), seen[1].0.id());
}

pub async fn no_next_event_of_a_key_before_the_ack(h: &Harness) {
    let client = h.client().await;
    client.ensure_topic("t", TopicConfig::default()).await.unwrap();
    let events: Vec<Event> = (0..20).map(|i| ev(Some("same"), i)).collect();
    client.producer().publish_all("t", events).await.unwrap();
    let active = Arc::new(Mutex::new(0u32));
    let overlapped = Arc::new(Mutex::new(false));
    let stop = CancellationToken::new();
    let order: Arc<Mutex<Vec<u64>>> = Arc::default();
    let consumer = client.consumer("g").subscribe(["t"]).concurrency(8).handler({
        let (active, overlapped, order) = (active.clone(), overlapped.clone(), order.clone());
        move |e: Event| {
            let (active, overlapped, order) = (active.clone(), overlapped.clone(), order.clone());
            async move {
                {
                    let mut a = active.lock().unwrap();
                    *a += 1;
                    if *a > 1 {
                        *overlapped.lock().unwrap() = true;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
                order.lock().unwrap().push(num(&e));
                *active.lock().unwrap() -= 1;
                Ok(())
            }
        }
    });
    let handle = tokio::spawn(consumer.run(stop.clone()));
    until("20 events", || order.lock().unwrap().len() == 20).await;
    stop.cancel();
    handle.await.unwrap().unwrap();
    assert!(!*overlapped.lock().unwrap(), "two events of one key ran at once");
    assert_eq!(*order.lock().unwrap(), (0..20).collect::<Vec<_>>());
}

pub async fn continue_after_a_subscriber_closes(h: &Harness) {
    let client = h.client().await;
    client.ensure_topic("t", TopicConfig::with_partitions(4)).await.unwrap();
    let producer = client.producer();
    producer.publish_all("t", (0..50).map(|i| ev(Some(&format!("k{i}")), i)).collect()).await.unwrap();
    let (s1, stop1, h1) = spawn_consumer(&client, "g", &["t"], 4, RetryPolicy::default(), ok);
    until("the first consumer to start", || !s1.lock().unwrap().is_empty()).await;
    stop1.cancel();
    h1.await.unwrap().unwrap();
    producer.publish_all("t", (50..100).map(|i| ev(Some(&format!("k{i}")), i)).collect()).await.unwrap();
    let (s2, stop2, h2) = spawn_consumer(&client, "g", &["t"], 4, RetryPolicy::default(), ok);
    until("all 100 between the two", || distinct(&s1).union(&distinct(&s2)).count() == 100).await;
    stop2.cancel();
    h2.await.unwrap().unwrap();
}

pub async fn continue_after_errors(h: &Harness) {
    let client = h.client().await;
    client.ensure_topic("t", TopicConfig::with_partitions(2)).await.unwrap();
    client.producer().publish_all("t", (0..30).map(|i| ev(Some(&format!("k{i}")), i)).collect()).await.unwrap();
    let (seen, stop, handle) = spawn_consumer(&client, "g", &["t"], 4, fast_retry(10), |e, nth| {
        if num(e).is_multiple_of(3) && nth < 3 { Err(HandlerError::retryable("flaky")) } else { Ok(()) }
    });
    until("every event to succeed", || {
        let s = seen.lock().unwrap();
        (0..30u64).all(|n| s.iter().any(|(e, nth)| num(e) == n && (!n.is_multiple_of(3) || *nth == 3)))
    })
    .await;
    stop.cancel();
    let report = handle.await.unwrap().unwrap();
    assert_eq!(report.ok, 30);
    assert_eq!(report.retried, 20);
}

pub async fn order_per_key_with_several_subscribers(h: &Harness) {
    let client = h.client().await;
    client.ensure_topic("t", TopicConfig::with_partitions(4)).await.unwrap();
    let keys = 8u64;
    client
        .producer()
        .publish_all("t", (0..200).map(|i| ev(Some(&format!("k{}", i % keys)), i)).collect())
        .await
        .unwrap();
    let (s1, stop1, h1) = spawn_consumer(&client, "g", &["t"], 4, RetryPolicy::default(), ok);
    let (s2, stop2, h2) = spawn_consumer(&client, "g", &["t"], 4, RetryPolicy::default(), ok);
    until("200 events", || distinct(&s1).len() + distinct(&s2).len() >= 200).await;
    stop1.cancel();
    stop2.cancel();
    h1.await.unwrap().unwrap();
    h2.await.unwrap().unwrap();
    for s in [&s1, &s2] {
        let mut per_key: HashMap<u64, Vec<u64>> = HashMap::new();
        for (e, _) in s.lock().unwrap().iter() {
            per_key.entry(num(e) % keys).or_default().push(num(e));
        }
        for (k, seq) in per_key {
            assert!(seq.windows(2).all(|w| w[0] < w[1]), "key {k} out of order: {seq:?}");
        }
    }
}

/// A producer with many small batches in flight keeps each key's events in publish order in
/// storage (one publish in flight per topic), also when publishes race from several tasks.
pub async fn producer_keeps_publish_order_per_key(h: &Harness) {
    let client = h.client().await;
    client.ensure_topic("t", TopicConfig::with_partitions(4)).await.unwrap();
    let producer = client.producer_with(herald::ProducerConfig {
        linger: Duration::ZERO,
        batch_events_max: 7,
        ..Default::default()
    });
    let keys = 5u64;
    let receipts =
        producer.publish_all("t", (0..400).map(|i| ev(Some(&format!("k{}", i % keys)), i)).collect()).await.unwrap();
    let mut last: HashMap<u64, (u32, u64)> = HashMap::new();
    for (i, r) in receipts.iter().enumerate() {
        let k = i as u64 % keys;
        if let Some((p, o)) = last.get(&k) {
            assert_eq!(*p, r.partition, "key {k} moved partition");
            assert!(r.offset > *o, "key {k}: event {i} stored at {} before its predecessor at {o}", r.offset);
        }
        last.insert(k, (r.partition, r.offset));
    }
}

pub async fn publisher_close_loses_nothing(h: &Harness) {
    let client = h.client().await;
    client.ensure_topic("t", TopicConfig::with_partitions(2)).await.unwrap();
    {
        let producer = client.producer();
        let receipts = producer.publish_all("t", (0..500).map(|i| ev(None, i)).collect()).await.unwrap();
        assert_eq!(receipts.len(), 500);
    } // producer dropped: every acknowledged publish is stored
    let (seen, stop, handle) = spawn_consumer(&client, "g", &["t"], 8, RetryPolicy::default(), ok);
    until("500 events", || distinct(&seen).len() == 500).await;
    stop.cancel();
    handle.await.unwrap().unwrap();
}

pub async fn topics_are_isolated(h: &Harness) {
    let client = h.client().await;
    client.ensure_topic("a", TopicConfig::default()).await.unwrap();
    client.ensure_topic("b", TopicConfig::default()).await.unwrap();
    let producer = client.producer();
    producer.publish("a", ev(None, 1)).await.unwrap();
    producer.publish("b", ev(None, 2)).await.unwrap();
    let (seen, stop, handle) = spawn_consumer(&client, "g", &["a"], 1, RetryPolicy::default(), ok);
    until("the event of a", || !seen.lock().unwrap().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.cancel();
    handle.await.unwrap().unwrap();
    assert_eq!(distinct(&seen), HashSet::from([1]));
}

pub async fn broker_restart_mid_stream_loses_nothing(h: &Harness) {
    let client = h.client().await;
    if !client.capabilities().durable {
        return; // an ephemeral backend has nothing to restart into
    }
    client.ensure_topic("t", TopicConfig::with_partitions(2)).await.unwrap();
    client.producer().publish_all("t", (0..100).map(|i| ev(Some(&format!("k{}", i % 7)), i)).collect()).await.unwrap();
    let (s1, stop1, h1) = spawn_consumer(&client, "g", &["t"], 2, RetryPolicy::default(), ok);
    until("some progress", || distinct(&s1).len() >= 20).await;
    stop1.cancel();
    h1.await.unwrap().unwrap();
    let client = h.restart(client).await.unwrap();
    client
        .producer()
        .publish_all("t", (100..150).map(|i| ev(Some(&format!("k{}", i % 7)), i)).collect())
        .await
        .unwrap();
    let (s2, stop2, h2) = spawn_consumer(&client, "g", &["t"], 2, RetryPolicy::default(), ok);
    until("everything", || distinct(&s1).union(&distinct(&s2)).count() == 150).await;
    stop2.cancel();
    h2.await.unwrap().unwrap();
}

pub async fn consumer_groups_are_independent(h: &Harness) {
    let client = h.client().await;
    client.ensure_topic("t", TopicConfig::with_partitions(2)).await.unwrap();
    client.producer().publish_all("t", (0..40).map(|i| ev(None, i)).collect()).await.unwrap();
    let (s1, stop1, h1) = spawn_consumer(&client, "g1", &["t"], 4, RetryPolicy::default(), ok);
    let (s2, stop2, h2) = spawn_consumer(&client, "g2", &["t"], 4, fast_retry(3), |e, nth| {
        if num(e) == 5 && nth == 1 { Err(HandlerError::retryable("only g2 fails")) } else { Ok(()) }
    });
    until("both groups", || distinct(&s1).len() == 40 && distinct(&s2).len() == 40).await;
    stop1.cancel();
    stop2.cancel();
    assert_eq!(h1.await.unwrap().unwrap().retried, 0);
    assert_eq!(h2.await.unwrap().unwrap().retried, 1);
}

pub async fn backoff_within_bounds(h: &Harness) {
    let client = h.client().await;
    client.ensure_topic("t", TopicConfig::default()).await.unwrap();
    client.producer().publish("t", ev(Some("k"), 1)).await.unwrap();
    let retry =
        RetryPolicy { max_attempts: 4, backoff_base_ms: 50, backoff_factor: 2.0, backoff_max_ms: 150, jitter: 0.2 };
    let times: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let t2 = times.clone();
    let (_seen, stop, handle) = spawn_consumer(&client, "g", &["t"], 1, retry, move |_, nth| {
        t2.lock().unwrap().push(Instant::now());
        if nth < 4 { Err(HandlerError::retryable("again")) } else { Ok(()) }
    });
    until("four attempts", || times.lock().unwrap().len() == 4).await;
    stop.cancel();
    handle.await.unwrap().unwrap();
    let t = times.lock().unwrap();
    for (i, w) in t.windows(2).enumerate() {
        let gap = w[1] - w[0];
        let ceiling = retry.backoff_ceiling(i as u32 + 1);
        let floor = ceiling.mul_f64(1.0 - retry.jitter);
        assert!(gap >= floor, "retry {}: {gap:?} < {floor:?}", i + 1);
        assert!(gap <= ceiling + Duration::from_millis(150), "retry {}: {gap:?} > {ceiling:?} + slack", i + 1);
    }
}

pub async fn max_attempts_then_dlq_with_every_header(h: &Harness) {
    let client = h.client().await;
    client.ensure_topic("t", TopicConfig::default()).await.unwrap();
    let poison = ev(Some("k"), 13);
    client.producer().publish("t", poison.clone()).await.unwrap();
    let (seen, stop, handle) = spawn_consumer(&client, "g", &["t"], 1, fast_retry(3), |_, _| {
        Err(HandlerError::retryable("downstream is down"))
    });
    until("the DLQ", || !futures_dlq_empty(&client)).await;
    stop.cancel();
    let report = handle.await.unwrap().unwrap();
    assert_eq!(seen.lock().unwrap().len(), 3, "exactly max attempts");
    assert_eq!((report.retried, report.dead_lettered), (2, 1));
    let letters = client.dlq_list("g", 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    let d = &letters[0];
    assert_eq!(d.id(), poison.id());
    assert_eq!(d.data(), poison.data());
    for h in [
        dlq_headers::REASON,
        dlq_headers::ATTEMPTS,
        dlq_headers::TOPIC,
        dlq_headers::PARTITION,
        dlq_headers::OFFSET,
        dlq_headers::GROUP,
        dlq_headers::FIRST_FAILURE,
        dlq_headers::LAST_FAILURE,
    ] {
        assert!(d.header(h).is_some(), "missing {h}");
    }
    assert_eq!(d.header(dlq_headers::REASON), Some("downstream is down"));
    assert_eq!(d.header(dlq_headers::ATTEMPTS), Some("3"));
    assert_eq!(d.header(dlq_headers::GROUP), Some("g"));
}

fn futures_dlq_empty(client: &Client) -> bool {
    let client = client.clone();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move { client.dlq_list("g", 1).await.map(|l| l.is_empty()).unwrap_or(true) })
    })
    .join()
    .unwrap()
}

pub async fn permanent_error_goes_to_dlq_at_once(h: &Harness) {
    let client = h.client().await;
    client.ensure_topic("t", TopicConfig::default()).await.unwrap();
    client.producer().publish("t", ev(Some("k"), 1)).await.unwrap();
    let (seen, stop, handle) =
        spawn_consumer(&client, "g", &["t"], 1, fast_retry(5), |_, _| Err(HandlerError::permanent("malformed")));
    until("the DLQ", || !futures_dlq_empty(&client)).await;
    stop.cancel();
    assert_eq!(handle.await.unwrap().unwrap().dead_lettered, 1);
    assert_eq!(seen.lock().unwrap().len(), 1, "no retry for a permanent error");
    let letters = client.dlq_list("g", 10).await.unwrap();
    assert_eq!(letters[0].header(dlq_headers::ATTEMPTS), Some("1"));
}

pub async fn dlq_replay_reaches_only_the_failed_group(h: &Harness) {
    let client = h.client().await;
    client.ensure_topic("t", TopicConfig::default()).await.unwrap();
    client.producer().publish("t", ev(Some("k"), 1)).await.unwrap();
    let fail = Arc::new(Mutex::new(true));
    let f2 = fail.clone();
    let (seen_bad, stop_bad, h_bad) = spawn_consumer(&client, "g", &["t"], 1, fast_retry(1), move |_, _| {
        if *f2.lock().unwrap() { Err(HandlerError::retryable("fails")) } else { Ok(()) }
    });
    let (seen_good, stop_good, h_good) = spawn_consumer(&client, "other", &["t"], 1, fast_retry(1), ok);
    until("the DLQ", || !futures_dlq_empty(&client)).await;
    until("the other group", || seen_good.lock().unwrap().len() == 1).await;
    *fail.lock().unwrap() = false;
    assert_eq!(client.dlq_replay("g").await.unwrap(), 1);
    until("the replay", || seen_bad.lock().unwrap().len() == 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_bad.cancel();
    stop_good.cancel();
    assert_eq!(h_bad.await.unwrap().unwrap().ok, 1);
    h_good.await.unwrap().unwrap();
    assert_eq!(seen_good.lock().unwrap().len(), 1, "the other group saw the replay");
}

/// The kinds of a group's history, in order.
fn history_kinds(h: &herald::EventHistory, group: &str) -> Vec<&'static str> {
    let g = h.groups.iter().find(|g| g.group == group).expect("the group is in the history");
    g.entries.iter().map(|e| e.what.kind()).collect()
}

pub async fn event_history_through_dlq_and_replay(h: &Harness) {
    let client = h.client().await;
    if !client.capabilities().event_history {
        return; // declared: the backend keeps no history
    }
    client.ensure_topic("t", TopicConfig::default()).await.unwrap();
    let receipt = client.producer().publish("t", ev(Some("k"), 1)).await.unwrap();
    let fail = Arc::new(Mutex::new(true));
    let f2 = fail.clone();
    let (seen, stop, handle) = spawn_consumer(&client, "g", &["t"], 1, fast_retry(2), move |_, _| {
        if *f2.lock().unwrap() { Err(HandlerError::retryable("downstream is down")) } else { Ok(()) }
    });
    until("the DLQ", || !futures_dlq_empty(&client)).await;
    *fail.lock().unwrap() = false;
    assert_eq!(client.dlq_replay("g").await.unwrap(), 1);
    until("the replay", || seen.lock().unwrap().len() == 3).await;
    let expected =
        ["delivered", "nacked", "delivered", "rejected", "dead_lettered", "replayed", "delivered", "acked", "done"];
    // The history is written on the group's next tick.
    let deadline = Instant::now() + Duration::from_secs(10);
    let history = loop {
        let got = client.event_history("t", receipt.partition, receipt.offset).await.unwrap();
        if history_kinds(&got, "g") == expected || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    stop.cancel();
    handle.await.unwrap().unwrap();
    assert_eq!(history_kinds(&history, "g"), expected);
    assert_eq!((history.topic.as_str(), history.offset, history.truncated), ("t", receipt.offset, false));
    let g = &history.groups[0];
    assert_eq!(g.state(), "done");
    use herald::Happened as H;
    match &g.entries[1].what {
        H::Nacked { reason, handler_us, .. } => {
            assert_eq!(reason, "downstream is down");
            assert!(handler_us.is_some(), "the runtime reports the handler's duration");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(&g.entries[2].what, H::Delivered { attempt: 2, .. }), "{:?}", g.entries[2]);
    assert!(matches!(&g.entries[4].what, H::DeadLettered { attempts: 2, .. }), "{:?}", g.entries[4]);
    let by_id = client.event_history_by_id("t", &history.id).await.unwrap();
    assert_eq!((by_id.partition, by_id.offset), (receipt.partition, receipt.offset));
    let missing = client.event_history("t", 0, receipt.offset + 100).await.unwrap_err();
    assert_eq!(missing.code(), herald::Code::EventNotFound, "{missing}");
    if client.capabilities().durable {
        let client = h.restart(client).await.unwrap();
        let after = client.event_history("t", receipt.partition, receipt.offset).await.unwrap();
        assert_eq!(history_kinds(&after, "g"), expected, "the history survives a restart");
    }
}

pub async fn dedupe_by_event_id(h: &Harness) {
    let client = h.client().await;
    if !client.capabilities().dedupe {
        return;
    }
    client.ensure_topic("t", TopicConfig::with_partitions(3)).await.unwrap();
    let producer = client.producer();
    let e = ev(None, 7);
    let first = producer.publish("t", e.clone()).await.unwrap();
    let again = producer.publish("t", e.clone()).await.unwrap();
    assert!(again.duplicate);
    assert_eq!((again.partition, again.offset), (first.partition, first.offset));
    let (seen, stop, handle) = spawn_consumer(&client, "g", &["t"], 1, RetryPolicy::default(), ok);
    until("the event", || !seen.lock().unwrap().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.cancel();
    handle.await.unwrap().unwrap();
    assert_eq!(seen.lock().unwrap().len(), 1);
}

pub async fn correlation_and_causation_propagate(h: &Harness) {
    let client = h.client().await;
    client.ensure_topic("in", TopicConfig::default()).await.unwrap();
    client.ensure_topic("out", TopicConfig::default()).await.unwrap();
    let producer = client.producer();
    let first = ev(None, 1);
    producer.publish("in", first.clone()).await.unwrap();
    let stop = CancellationToken::new();
    let p2 = producer.clone();
    let relay = client.consumer("relay").subscribe(["in"]).handler(move |e: Event| {
        let p = p2.clone();
        async move {
            p.publish("out", ev(None, num(&e) + 1)).await.map_err(HandlerError::retryable)?;
            Ok(())
        }
    });
    let relay = tokio::spawn(relay.run(stop.clone()));
    let (seen, stop2, sink) = spawn_consumer(&client, "sink", &["out"], 1, RetryPolicy::default(), ok);
    until("the relayed event", || !seen.lock().unwrap().is_empty()).await;
    stop.cancel();
    stop2.cancel();
    relay.await.unwrap().unwrap();
    sink.await.unwrap().unwrap();
    let out = seen.lock().unwrap()[0].0.clone();
    // The first publish took its own id as correlation id; the relayed event keeps it and names
    // the event that caused it.
    assert_eq!(out.correlationid(), Some(first.id()));
    assert_eq!(out.causationid(), Some(first.id()));
}

pub async fn lag_is_reported_and_falls_to_zero(h: &Harness) {
    let client = h.client().await;
    client.ensure_topic("t", TopicConfig::with_partitions(2)).await.unwrap();
    // The group exists before the events, so its lag counts them.
    let (_s, stop0, h0) = spawn_consumer(&client, "g", &["t"], 1, RetryPolicy::default(), ok);
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop0.cancel();
    h0.await.unwrap().unwrap();
    client.producer().publish_all("t", (0..50).map(|i| ev(None, i)).collect()).await.unwrap();
    assert_eq!(client.lag("g").await.unwrap(), 50);
    let (seen, stop, handle) = spawn_consumer(&client, "g", &["t"], 4, RetryPolicy::default(), ok);
    until("50 events", || distinct(&seen).len() == 50).await;
    stop.cancel();
    handle.await.unwrap().unwrap();
    assert_eq!(client.lag("g").await.unwrap(), 0);
}

pub async fn rebalance_when_a_member_leaves(h: &Harness) {
    let client = h.client().await;
    client.ensure_topic("t", TopicConfig::with_partitions(4)).await.unwrap();
    let (s1, stop1, h1) = spawn_consumer(&client, "g", &["t"], 2, RetryPolicy::default(), ok);
    let (s2, stop2, h2) = spawn_consumer(&client, "g", &["t"], 2, RetryPolicy::default(), ok);
    let producer = client.producer();
    producer.publish_all("t", (0..100).map(|i| ev(Some(&format!("k{i}")), i)).collect()).await.unwrap();
    until("the first 100", || distinct(&s1).len() + distinct(&s2).len() >= 100).await;
    stop1.cancel();
    h1.await.unwrap().unwrap();
    // The remaining member takes over all partitions.
    producer.publish_all("t", (100..200).map(|i| ev(Some(&format!("k{i}")), i)).collect()).await.unwrap();
    until("the next 100 at the remaining member", || (100..200).all(|n| distinct(&s2).contains(&n))).await;
    stop2.cancel();
    h2.await.unwrap().unwrap();
}

pub async fn handler_panics_and_timeouts_are_failed_attempts(h: &Harness) {
    let client = h.client().await;
    client.ensure_topic("t", TopicConfig::default()).await.unwrap();
    client.producer().publish_all("t", vec![ev(Some("a"), 1), ev(Some("b"), 2)]).await.unwrap();
    let stop = CancellationToken::new();
    let attempts: Arc<Mutex<Vec<(u64, u32)>>> = Arc::default();
    let a2 = attempts.clone();
    let counts: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let consumer = client
        .consumer("g")
        .subscribe(["t"])
        .concurrency(2)
        .retry(fast_retry(5))
        .handler_timeout(Duration::from_millis(100))
        .handler(move |e: Event| {
            let (attempts, counts) = (a2.clone(), counts.clone());
            async move {
                let n = num(&e);
                let nth = {
                    let mut c = counts.lock().unwrap();
                    let x = c.entry(n).or_insert(0);
                    *x += 1;
                    *x
                };
                attempts.lock().unwrap().push((n, nth));
                if nth == 1 && n == 1 {
                    panic!("handler bug");
                }
                if nth == 1 && n == 2 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Ok(())
            }
        });
    let handle = tokio::spawn(consumer.run(stop.clone()));
    until("both retried and done", || attempts.lock().unwrap().len() == 4).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.cancel();
    let report = handle.await.unwrap().unwrap();
    assert_eq!((report.ok, report.retried), (2, 2), "a panic and a timeout each cost one attempt");
}

pub async fn non_blocking_retries_let_the_key_move_on(h: &Harness) {
    let client = h.client().await;
    client.ensure_topic("t", TopicConfig::default()).await.unwrap();
    client.producer().publish_all("t", vec![ev(Some("k"), 1), ev(Some("k"), 2)]).await.unwrap();
    let order: Arc<Mutex<Vec<(u64, u32)>>> = Arc::default();
    let run = |group: &str, non_blocking: bool| {
        let order = order.clone();
        let stop = CancellationToken::new();
        let counts: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
        let mut c = client.consumer(group).subscribe(["t"]).retry(RetryPolicy {
            max_attempts: 3,
            backoff_base_ms: 300,
            backoff_factor: 1.0,
            backoff_max_ms: 300,
            jitter: 0.0,
        });
        if non_blocking {
            c = c.non_blocking_retries();
        }
        let c = c.handler(move |e: Event| {
            let (order, counts) = (order.clone(), counts.clone());
            async move {
                let n = num(&e);
                let nth = {
                    let mut c = counts.lock().unwrap();
                    let x = c.entry(n).or_insert(0);
                    *x += 1;
                    *x
                };
                order.lock().unwrap().push((n, nth));
                if n == 1 && nth == 1 { Err(HandlerError::retryable("later")) } else { Ok(()) }
            }
        });
        (stop.clone(), tokio::spawn(c.run(stop)))
    };
    let (stop, handle) = run("blocking", false);
    until("three handler calls", || order.lock().unwrap().len() == 3).await;
    stop.cancel();
    handle.await.unwrap().unwrap();
    assert_eq!(*order.lock().unwrap(), vec![(1, 1), (1, 2), (2, 1)], "blocking: the key waits for the retry");
    order.lock().unwrap().clear();
    let (stop, handle) = run("non-blocking", true);
    until("three handler calls", || order.lock().unwrap().len() == 3).await;
    stop.cancel();
    handle.await.unwrap().unwrap();
    assert_eq!(*order.lock().unwrap(), vec![(1, 1), (2, 1), (1, 2)], "non-blocking: the next event goes first");
}

pub async fn concurrent_close(h: &Harness) {
    let client = h.client().await;
    client.ensure_topic("t", TopicConfig::with_partitions(4)).await.unwrap();
    client.producer().publish_all("t", (0..200).map(|i| ev(Some(&format!("k{i}")), i)).collect()).await.unwrap();
    let consumers: Vec<_> =
        (0..4).map(|_| spawn_consumer(&client, "g", &["t"], 4, RetryPolicy::default(), ok)).collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Close them all at once, mid-stream: no panic, no error, every run returns.
    for (_, stop, _) in &consumers {
        stop.cancel();
    }
    let mut seen = HashSet::new();
    for (s, _, handle) in consumers {
        handle.await.unwrap().unwrap();
        seen.extend(distinct(&s));
    }
    // Whatever was not handled is still there for the next member.
    let (s, stop, handle) = spawn_consumer(&client, "g", &["t"], 4, RetryPolicy::default(), ok);
    until("the rest", || seen.union(&distinct(&s)).count() == 200).await;
    stop.cancel();
    handle.await.unwrap().unwrap();
}

#[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
struct Placed {
    id: String,
    total: u32,
}

/// `shop.Shipped` as a prost type.
#[derive(Clone, PartialEq, prost::Message)]
struct Shipped {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(int64, tag = "2")]
    at_ms: i64,
}

/// A registration of `shop.Shipped` (`string id = 1; int64 at_ms = 2;`) compiled from .proto text.
fn shipped(ty: &str) -> (herald::schema::NewSchema, prost_reflect::MessageDescriptor) {
    use prost::Message as _;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("s.proto"),
        "syntax = \"proto3\"; package shop; message Shipped { string id = 1; int64 at_ms = 2; }",
    )
    .unwrap();
    let set = protox::compile(["s.proto"], [dir.path()]).unwrap();
    let pool = prost_reflect::DescriptorPool::from_file_descriptor_set(set.clone()).unwrap();
    let schema = herald_schema::protobuf::document("shop.Shipped", &set.encode_to_vec());
    let s = herald::schema::NewSchema {
        ty: ty.to_owned(),
        format: herald::schema::SchemaFormat::Protobuf,
        schema,
        compatibility: None,
    };
    (s, pool.get_message_by_name("shop.Shipped").unwrap())
}

pub async fn schemas_are_enforced_on_publish_and_evolve_by_their_rule(h: &Harness) {
    use herald::schema::{Compatibility, SchemaPolicy, UnknownTypes};
    let client = h.client().await;
    if !client.capabilities().schemas {
        return;
    }
    let b = client.backend().clone();
    client.ensure_topic("orders", TopicConfig::with_partitions(2)).await.unwrap();
    let v1 = client.register_schema("orders", &herald::schema::json_schema_of::<Placed>("order.placed")).await.unwrap();
    assert_eq!(v1.version, 1);
    let producer = client.producer();
    // Invalid: refused with the path, nothing stored; valid: stamped.
    let e = producer
        .publish(
            "orders",
            Event::builder("order.placed").json(&serde_json::json!({"id": "a", "total": "x"})).build().unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), herald::Code::SchemaInvalid, "{e}");
    assert!(e.to_string().contains("/total"), "{e}");
    producer.publish_json("orders", "order.placed", Some("k"), &Placed { id: "a".into(), total: 3 }).await.unwrap();

    // Protobuf: registered, published as a message (a dynamic one, and a prost type matching
    // it), refused when the bytes are another message.
    let (proto, desc) = shipped("order.shipped");
    let p1 = b.register_schema("orders", &proto).await.unwrap();
    assert_eq!(p1.format, herald::schema::SchemaFormat::Protobuf);
    let mut m = prost_reflect::DynamicMessage::new(desc);
    m.set_field_by_name("id", prost_reflect::Value::String("s".into()));
    m.set_field_by_name("at_ms", prost_reflect::Value::I64(5));
    producer.publish_protobuf("orders", "order.shipped", Some("k"), &m).await.unwrap();
    let typed = Shipped { id: "t".into(), at_ms: 6 };
    producer.publish_protobuf("orders", "order.shipped", Some("k"), &typed).await.unwrap();
    let bad = Event::builder("order.shipped").data(vec![0x12, 0x01, b'x'], "application/protobuf").build().unwrap();
    let e = producer.publish("orders", bad).await.unwrap_err();
    assert_eq!(e.code(), herald::Code::SchemaInvalid, "{e}");
    assert!(e.to_string().contains("at_ms"), "{e}");

    // The consumer sees which version each event was written with.
    let (seen, stop, handle) = spawn_consumer(&client, "g", &["orders"], 1, RetryPolicy::default(), ok);
    until("the three events", || seen.lock().unwrap().len() >= 3).await;
    stop.cancel();
    handle.await.unwrap().unwrap();
    for (e, _) in seen.lock().unwrap().iter() {
        assert_eq!(herald::schema::version_of(e), Some(1), "{e:?}");
        assert!(e.dataschema().unwrap().contains(e.ty()), "{e:?}");
    }
    // Typed handlers: the Protobuf ones decode as the prost type; the JSON one goes to the DLQ
    // at once (it is no Protobuf message of that shape: a permanent failure).
    let got: Arc<Mutex<Vec<Shipped>>> = Arc::default();
    let stop = CancellationToken::new();
    let typed_consumer = client.consumer("typed").subscribe(["orders"]).retry(fast_retry(3)).handler_protobuf({
        let got = got.clone();
        move |m: Shipped, e: Event| {
            let got = got.clone();
            async move {
                if e.ty() != "order.shipped" {
                    return Err(HandlerError::permanent("not a shipment"));
                }
                got.lock().unwrap().push(m);
                Ok(())
            }
        }
    });
    let handle = tokio::spawn(typed_consumer.run(stop.clone()));
    until("both shipments decoded", || got.lock().unwrap().len() >= 2).await;
    stop.cancel();
    handle.await.unwrap().unwrap();
    let mut got = got.lock().unwrap().clone();
    got.sort_by_key(|m| m.at_ms);
    assert_eq!(got, vec![Shipped { id: "s".into(), at_ms: 5 }, typed]);

    // The AsyncAPI document: the topic, its two types with their schemas, both groups reading
    // it; valid AsyncAPI 3.0.
    let doc = b.asyncapi().await.unwrap();
    let spec: serde_json::Value =
        serde_json::from_str(include_str!("../../../herald-server/tests/fixtures/asyncapi-3.0.0.schema.json")).unwrap();
    let problems: Vec<String> = jsonschema::validator_for(&spec)
        .unwrap()
        .iter_errors(&doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(problems.is_empty(), "not valid AsyncAPI 3.0: {problems:#?}\n{doc:#}");
    assert_eq!(doc["channels"]["orders"]["address"], "orders", "{doc:#}");
    assert_eq!(doc["components"]["messages"]["orders.order.placed"]["payload"]["schema"], v1.schema);
    let shipped = &doc["components"]["messages"]["orders.order.shipped"]["payload"];
    assert!(shipped["schema"].as_str().is_some_and(|t| t.contains("at_ms")), "{shipped}");
    for g in ["g", "typed"] {
        assert_eq!(doc["operations"][format!("receive.{g}.orders")]["action"], "receive", "{doc:#}");
    }
    let channels = doc["channels"].as_object().unwrap();
    assert!(!channels.keys().any(|c| c.ends_with(".dlq") || c.ends_with(".replay")), "{doc:#}");

    // Evolution: a required field breaks BACKWARD (named); check says so; FORWARD accepts it.
    let mut required = v1.schema.clone();
    required["properties"]["coupon"] = serde_json::json!({"type": "string"});
    required["required"] = serde_json::json!(["id", "total", "coupon"]);
    let next = herald::schema::NewSchema {
        ty: "order.placed".into(),
        format: herald::schema::SchemaFormat::JsonSchema,
        schema: required,
        compatibility: None,
    };
    let e = b.register_schema("orders", &next).await.unwrap_err();
    assert_eq!(e.code(), herald::Code::SchemaIncompatible, "{e}");
    assert!(e.to_string().contains("coupon"), "{e}");
    assert_eq!(b.check_schema("orders", &next).await.unwrap().len(), 1);
    let forward = herald::schema::NewSchema { compatibility: Some(Compatibility::Forward), ..next };
    assert_eq!(b.register_schema("orders", &forward).await.unwrap().version, 2);
    assert_eq!(b.schema("orders", "order.placed", Some(1)).await.unwrap().schema, v1.schema);

    // Unknown types: refused once the policy says so; a deleted type is unknown.
    let policy = SchemaPolicy { unknown_types: UnknownTypes::Refuse, ..SchemaPolicy::default() };
    b.set_schema_policy("orders", policy).await.unwrap();
    assert_eq!(b.delete_schema("orders", "order.shipped").await.unwrap(), 1);
    let e = producer.publish("orders", ev(None, 1)).await.unwrap_err();
    assert_eq!(e.code(), herald::Code::SchemaInvalid, "{e}");
    let (p, list) = b.list_schemas("orders").await.unwrap();
    assert_eq!((p.unknown_types, list.len()), (UnknownTypes::Refuse, 1));
    assert_eq!(b.schema("orders", "order.shipped", None).await.unwrap_err().code(), herald::Code::SchemaNotFound);
}
