//! The billing service: charges each order. Some orders fail transiently (retried with backoff),
//! some permanently (sent to the `billing.dlq` dead-letter queue at once). Runs until it has been
//! idle for two seconds, then prints what happened and the dead letters.
//!
//! ```text
//! cargo run -p herald --example producer && cargo run -p herald --example billing
//! ```

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use herald::{CancellationToken, Event, HandlerError, RetryPolicy};
use serde::Deserialize;

#[derive(Deserialize)]
struct Order {
    order: u64,
    total_cents: u64,
}

#[tokio::main]
async fn main() -> Result<(), herald::Error> {
    common::init_logging();
    let client = herald::connect(&common::url()).await?;
    let stop = CancellationToken::new();
    let last_activity = Arc::new(AtomicU64::new(0));
    let started = std::time::Instant::now();
    let activity = last_activity.clone();
    let failed_once = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let consumer = client
        .consumer("billing")
        .subscribe([common::TOPIC])
        .concurrency(8)
        .retry(RetryPolicy { max_attempts: 4, backoff_base_ms: 50, backoff_max_ms: 400, ..RetryPolicy::default() })
        .handler_json(move |order: Order, _event: Event| {
            activity.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
            // A payment provider hiccup: every 7th order fails on its first attempt.
            let hiccup = order.order.is_multiple_of(7) && failed_once.lock().unwrap().insert(order.order);
            async move {
                if hiccup {
                    return Err(HandlerError::retryable("payment provider timed out"));
                }
                // Orders above 1600 cents are outside the card limit: no retry will help.
                if order.total_cents > 1600 {
                    return Err(HandlerError::permanent(format!("order {} exceeds the card limit", order.order)));
                }
                Ok(())
            }
        });
    let watchdog = {
        let stop = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let idle = started.elapsed().as_millis() as u64 - last_activity.load(Ordering::Relaxed);
                if idle > 2000 {
                    stop.cancel();
                    return;
                }
            }
        })
    };
    let report = consumer.run(stop).await?;
    watchdog.await.ok();
    println!("billing: {} charged, {} retried, {} dead-lettered", report.ok, report.retried, report.dead_lettered);
    for letter in client.dlq_list("billing", 10).await? {
        println!("  DLQ: {} reason={:?}", letter.id(), letter.header("dlqreason"));
    }
    println!(
        "replay them with: client.dlq_replay(\"billing\") (CLI: herald dlq replay --group billing, coming with herald serve)"
    );
    client.close().await
}
