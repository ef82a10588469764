//! The shipping service: ships every order (it never fails). It receives every event too: each
//! consumer group gets all of them. Stops after two idle seconds.
//!
//! ```text
//! cargo run -p herald --example producer && cargo run -p herald --example shipping
//! ```

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use herald::{CancellationToken, Event};

#[tokio::main]
async fn main() -> Result<(), herald::Error> {
    common::init_logging();
    let client = herald::connect(&common::url()).await?;
    let stop = CancellationToken::new();
    let shipped = Arc::new(AtomicU64::new(0));
    let counter = shipped.clone();
    let consumer = client.consumer("shipping").subscribe([common::TOPIC]).concurrency(16).handler(move |_e: Event| {
        counter.fetch_add(1, Ordering::Relaxed);
        async { Ok(()) }
    });
    let run = tokio::spawn(consumer.run(stop.clone()));
    let mut last = u64::MAX;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = shipped.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    stop.cancel();
    let report = run.await.expect("the consumer task")?;
    println!("shipping: {} shipped; lag now {}", report.ok, client.lag("shipping").await?);
    client.close().await
}
