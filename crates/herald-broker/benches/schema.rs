//! What schema validation costs on publish, in process: the same ~100 B JSON events published in
//! batches of 1,000 by 4 publishers to two topics of 8 partitions (durability `os`: no fsync, so
//! that the CPU cost shows), one with a typical 5-field JSON Schema registered for the events'
//! type and one without, alternating runs; medians of the events/s of each, their ratio, and the
//! difference per event in µs. Target (issue #13): ≤ 1 µs per event and ≤ 10 % of throughput.
//!
//! ```text
//! cargo bench -p herald-broker --bench schema
//! HERALD_BENCH_DIR=/path cargo bench -p herald-broker --bench schema
//! ```

use std::path::PathBuf;
use std::time::Instant;

use herald_broker::{Broker, BrokerConfig, Durability, TopicConfig};
use herald_core::Event;
use serde_json::json;

const BATCH: usize = 1_000;
const PUBLISHERS: usize = 4;
const EVENTS_PER_RUN: usize = 400_000;
const RUNS: usize = 5;
const TYPE: &str = "order.placed";

fn schema() -> serde_json::Value {
    json!({
        "type": "object",
        "properties": {
            "id": { "type": "string", "maxLength": 32 },
            "customer": { "type": "string" },
            "total": { "type": "integer", "minimum": 0 },
            "currency": { "enum": ["EUR", "USD", "GBP"] },
            "items": { "type": "integer", "minimum": 1 }
        },
        "required": ["id", "customer", "total", "currency", "items"]
    })
}

fn batch(start: usize) -> Vec<Event> {
    (start..start + BATCH)
        .map(|n| {
            let data = json!({ "id": format!("o-{n:08}"), "customer": format!("c-{}", n % 1000), "total": n % 100_000,
                               "currency": "EUR", "items": 1 + n % 5 });
            Event::builder(TYPE).json(&data).build().unwrap()
        })
        .collect()
}

/// Events/s publishing `EVENTS_PER_RUN` events to `topic` (batches made before the clock starts).
async fn run(broker: &Broker, topic: &str) -> f64 {
    let per = EVENTS_PER_RUN / PUBLISHERS;
    let batches: Vec<Vec<Vec<Event>>> =
        (0..PUBLISHERS).map(|p| (0..per / BATCH).map(|b| batch(p * per + b * BATCH)).collect()).collect();
    let started = Instant::now();
    let tasks: Vec<_> = batches
        .into_iter()
        .map(|bs| {
            let (b, t) = (broker.clone(), topic.to_owned());
            tokio::spawn(async move {
                for events in bs {
                    b.publish_batch(&t, events).await.expect("publish");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    EVENTS_PER_RUN as f64 / started.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let base = std::env::var_os("HERALD_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    let dir = tempfile::tempdir_in(base).unwrap();
    let broker = Broker::open(dir.path(), BrokerConfig::default()).unwrap();
    let config = TopicConfig { durability: Durability::Os, ..TopicConfig::with_partitions(8) };
    let sample = batch(0)[0].data().len();
    let (mut plain, mut checked) = (Vec::new(), Vec::new());
    for r in 0..RUNS {
        // Fresh topics per run, so that both write to logs of the same size.
        let (p, c) = (format!("plain-{r}"), format!("checked-{r}"));
        broker.create_topic(&p, config.clone()).unwrap();
        broker.create_topic(&c, config.clone()).unwrap();
        broker
            .register_schema(
                &c,
                herald_model::schema::NewSchema {
                    ty: TYPE.into(),
                    format: Default::default(),
                    schema: schema(),
                    compatibility: None,
                },
            )
            .unwrap();
        if r % 2 == 0 {
            plain.push(run(&broker, &p).await);
            checked.push(run(&broker, &c).await);
        } else {
            checked.push(run(&broker, &c).await);
            plain.push(run(&broker, &p).await);
        }
    }
    let (p, c) = (median(plain.clone()), median(checked.clone()));
    println!(
        "schema validation on publish: {EVENTS_PER_RUN} events of {sample} B data per run, {RUNS} runs, batches of {BATCH}, {PUBLISHERS} publishers"
    );
    println!("  no schema      {p:>10.0} events/s (median; runs {plain:.0?})");
    println!("  5-field schema {c:>10.0} events/s (median; runs {checked:.0?})");
    println!("  ratio {:.3}; cost {:.2} µs per event", c / p, (1.0 / c - 1.0 / p) * 1e6);
    broker.close().await.unwrap();
}
