//! Publishes 100 order events to the example broker.
//!
//! ```text
//! cargo run -p herald --example producer
//! ```

mod common;

use herald::{ProducerConfig, TopicConfig};
use serde::Serialize;

#[derive(Serialize)]
struct Order {
    order: u64,
    customer: String,
    total_cents: u64,
}

#[tokio::main]
async fn main() -> Result<(), herald::Error> {
    common::init_logging();
    let client = herald::connect(&common::url()).await?;
    client.ensure_topic(common::TOPIC, TopicConfig::with_partitions(4)).await?;
    let producer =
        client.producer_with(ProducerConfig { linger: std::time::Duration::from_millis(5), ..Default::default() });
    // Publish concurrently: the producer batches what arrives within its linger time.
    let receipts = futures::future::try_join_all((0..100u64).map(|n| {
        let producer = producer.clone();
        async move {
            let customer = format!("customer-{}", n % 10);
            let order = Order { order: n, customer: customer.clone(), total_cents: 1000 + n * 7 };
            producer.publish_json(common::TOPIC, "order.created", Some(&customer), &order).await
        }
    }))
    .await?;
    println!("published {} orders to {} (partitions used: {:?})", receipts.len(), common::url(), {
        let mut p: Vec<u32> = receipts.iter().map(|r| r.partition).collect();
        p.sort();
        p.dedup();
        p
    });
    client.close().await
}
