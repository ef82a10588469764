//! Herald in one process: a producer publishing orders at a steady rate, two consumer groups
//! (`billing` fails some events transiently and a few permanently; `shipping` never fails), a
//! live line of figures, then a summary, the dead letters and their replay to `billing` only.
//!
//! ```text
//! cargo run --release -p herald --example tour                 # mem:// (nothing kept)
//! cargo run --release -p herald --example tour -- file:///tmp/herald-tour
//! ```

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald::{CancellationToken, Client, Event, HandlerError, RetryPolicy, TopicConfig};

#[derive(Default)]
struct Stats {
    published: AtomicU64,
    billed: AtomicU64,
    shipped: AtomicU64,
    billing_failures: AtomicU64,
}

#[tokio::main]
async fn main() -> Result<(), herald::Error> {
    let url = std::env::args().nth(1).unwrap_or_else(|| "mem://".into());
    let client = herald::connect(&url).await?;
    println!("Herald tour on {url}: topic `orders` (8 partitions), groups `billing` and `shipping`\n");
    client.ensure_topic("orders", TopicConfig::with_partitions(8)).await?;
    let stats = Arc::new(Stats::default());
    let stop = CancellationToken::new();

    let billing = spawn_billing(&client, stats.clone(), stop.clone());
    let shipping = spawn_shipping(&client, stats.clone(), stop.clone());

    // Publish 2,000 orders at about 1,000 per second.
    let producer = client.producer();
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for n in 0..2000u64 {
        if n.is_multiple_of(10) {
            tick.tick().await;
        }
        let order =
            serde_json::json!({ "order": n, "customer": format!("c{}", n % 50), "total_cents": 500 + (n * 37) % 5000 });
        let p = producer.clone();
        let counters = stats.clone();
        tokio::spawn(async move {
            p.publish_json("orders", "order.created", Some(&format!("c{}", n % 50)), &order).await.expect("publish");
            counters.published.fetch_add(1, Ordering::Relaxed);
        });
        if n % 250 == 249 {
            print_line(&client, &stats, started).await;
        }
    }
    // Let the consumers drain.
    let deadline = Instant::now() + Duration::from_secs(20);
    while (client.lag("billing").await.unwrap_or(1) > 0 || client.lag("shipping").await.unwrap_or(1) > 0)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    print_line(&client, &stats, started).await;
    stop.cancel();
    let billing = billing.await.expect("billing task")?;
    let shipping = shipping.await.expect("shipping task")?;

    println!("\nSummary");
    println!("  published  {}", stats.published.load(Ordering::Relaxed));
    println!("  billing    {} ok, {} retried, {} dead-lettered", billing.ok, billing.retried, billing.dead_lettered);
    println!("  shipping   {} ok", shipping.ok);
    let letters = client.dlq_list("billing", 100).await?;
    println!("\nDead letters of `billing` ({}):", letters.len());
    for l in letters.iter().take(5) {
        println!(
            "  {}  attempts={} reason={:?}",
            l.id(),
            l.header("dlqattempts").unwrap_or("?"),
            l.header("dlqreason").unwrap_or("?")
        );
    }
    if letters.len() > 5 {
        println!("  … and {} more", letters.len() - 5);
    }
    let replayed = client.dlq_replay("billing").await?;
    println!("\nReplayed {replayed} dead letters to `billing` only (`shipping` does not see them again).");
    client.close().await
}

async fn print_line(client: &Client, stats: &Stats, started: Instant) {
    println!(
        "{:>5.1}s  published {:>5}  billed {:>5}  shipped {:>5}  billing failures {:>4}  lag billing {:>4} shipping {:>4}",
        started.elapsed().as_secs_f64(),
        stats.published.load(Ordering::Relaxed),
        stats.billed.load(Ordering::Relaxed),
        stats.shipped.load(Ordering::Relaxed),
        stats.billing_failures.load(Ordering::Relaxed),
        client.lag("billing").await.unwrap_or(0),
        client.lag("shipping").await.unwrap_or(0),
    );
}

fn spawn_billing(
    client: &Client,
    stats: Arc<Stats>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<herald::Result<herald::RunReport>> {
    let failed_once: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let consumer = client
        .consumer("billing")
        .subscribe(["orders"])
        .concurrency(32)
        .retry(RetryPolicy { max_attempts: 3, backoff_base_ms: 50, backoff_max_ms: 200, ..RetryPolicy::default() })
        .handler(move |event: Event| {
            let (stats, failed_once) = (stats.clone(), failed_once.clone());
            async move {
                let order: serde_json::Value = serde_json::from_slice(event.data())
                    .map_err(|e| HandlerError::permanent(format!("bad JSON: {e}")))?;
                let n = order["order"].as_u64().unwrap_or(0);
                // Transient: every 13th order's first attempt times out at the payment provider.
                if n.is_multiple_of(13) && failed_once.lock().unwrap().insert(n) {
                    stats.billing_failures.fetch_add(1, Ordering::Relaxed);
                    return Err(HandlerError::retryable("payment provider timed out"));
                }
                // Permanent: a few orders exceed the card limit.
                if order["total_cents"].as_u64().unwrap_or(0) > 5400 {
                    stats.billing_failures.fetch_add(1, Ordering::Relaxed);
                    return Err(HandlerError::permanent("order exceeds the card limit"));
                }
                stats.billed.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        });
    tokio::spawn(consumer.run(stop))
}

fn spawn_shipping(
    client: &Client,
    stats: Arc<Stats>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<herald::Result<herald::RunReport>> {
    let consumer = client.consumer("shipping").subscribe(["orders"]).concurrency(16).handler(move |_e: Event| {
        stats.shipped.fetch_add(1, Ordering::Relaxed);
        async { Ok(()) }
    });
    tokio::spawn(consumer.run(stop))
}
