//! Consumer runtime benchmark: the runtime's overhead per event (a handler that does nothing)
//! against raw broker delivery (poll + ack on the same broker, same data, in the same run), and
//! runtime throughput at concurrency 1, 16 and 256 with 16 and 10,000 distinct keys.
//!
//! ```text
//! cargo bench -p herald --bench runtime              # 200k events per run, 3 runs, median
//! cargo bench -p herald --bench runtime -- --quick   # 50k events per run
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use herald::{CancellationToken, Client, Embedded, Event, TopicConfig};
use herald_broker::{Durability, GroupConfig, MemberConfig};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

async fn setup(events: u64, keys: u64) -> (Arc<Embedded>, Client) {
    let embedded = Arc::new(Embedded::memory().unwrap());
    let client = Client::from_backend(embedded.clone());
    let topic = TopicConfig { partitions: 8, durability: Durability::Os, ..TopicConfig::default() };
    client.ensure_topic("t", topic).await.unwrap();
    let broker = embedded.broker().clone();
    let mut batch = Vec::with_capacity(1000);
    for i in 0..events {
        batch.push(
            Event::builder("bench")
                .key(format!("k{}", i % keys))
                .data(vec![0u8; 100], "application/octet-stream")
                .build()
                .unwrap(),
        );
        if batch.len() == 1000 {
            broker.publish_batch("t", std::mem::take(&mut batch)).await.unwrap();
        }
    }
    if !batch.is_empty() {
        broker.publish_batch("t", batch).await.unwrap();
    }
    (embedded, client)
}

/// Raw broker delivery: one member polls up to 1000 and acks each, until all are acked.
async fn raw(embedded: &Embedded, group: &str, events: u64) -> f64 {
    let broker = embedded.broker();
    broker.create_group(group, GroupConfig::for_topics(["t"])).unwrap();
    let member = broker.join(group, MemberConfig { id: None, max_in_flight: 10_000 }).unwrap();
    let start = Instant::now();
    let mut done = 0;
    while done < events {
        for d in member.poll(1000, Duration::from_millis(100)).await.unwrap() {
            member.ack(&d).unwrap();
            done += 1;
        }
    }
    events as f64 / start.elapsed().as_secs_f64()
}

/// The runtime with a no-op handler at `concurrency`, until every event was handled.
async fn runtime(client: &Client, group: &str, events: u64, concurrency: usize) -> f64 {
    let handled = Arc::new(AtomicU64::new(0));
    let h = handled.clone();
    let stop = CancellationToken::new();
    let consumer = client.consumer(group).subscribe(["t"]).concurrency(concurrency).max_in_flight(10_000).handler(
        move |_e: Event| {
            h.fetch_add(1, Ordering::Relaxed);
            async { Ok(()) }
        },
    );
    let start = Instant::now();
    let run = tokio::spawn(consumer.run(stop.clone()));
    while handled.load(Ordering::Relaxed) < events {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let rate = events as f64 / start.elapsed().as_secs_f64();
    stop.cancel();
    run.await.unwrap().unwrap();
    rate
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // The per-event log line goes nowhere unless a subscriber is installed: like a service with
    // logging at WARN. (With a JSON subscriber at INFO, formatting dominates; see docs.)
    let quick = std::env::args().any(|a| a == "--quick");
    let events: u64 = if quick { 50_000 } else { 200_000 };
    let runs = 3;
    println!("# herald runtime benchmark ({events} events of 100 B per run, 8 partitions, median of {runs})\n");
    println!(
        "| keys | concurrency | raw broker poll+ack events/s | runtime events/s | raw ns/event | runtime ns/event | overhead ns/event |"
    );
    println!("|---|---|---|---|---|---|---|");
    for keys in [16u64, 10_000] {
        for concurrency in [1usize, 16, 256] {
            let mut raw_rates = Vec::new();
            let mut rt_rates = Vec::new();
            for run in 0..runs {
                let (embedded, client) = setup(events, keys).await;
                raw_rates.push(raw(&embedded, &format!("raw{run}"), events).await);
                rt_rates.push(runtime(&client, &format!("rt{run}"), events, concurrency).await);
                client.close().await.unwrap();
            }
            let (r, t) = (median(raw_rates), median(rt_rates));
            println!(
                "| {keys} | {concurrency} | {r:.0} | {t:.0} | {:.0} | {:.0} | {:.0} |",
                1e9 / r,
                1e9 / t,
                1e9 / t - 1e9 / r
            );
        }
    }
}
