//! What schema validation costs on publish, in process, for JSON Schema and Protobuf:
//! - validation alone: one validator checking ~100 B records of a typical 5-field schema in a
//!   loop, µs per event (median of runs) — the CPU one event's check adds to its publish; for
//!   JSON Schema also the check without Herald's fast path (parse into a `serde_json::Value`,
//!   then `jsonschema`), as it was before, in the same run;
//! - publishing: the same records published in batches of 1,000 by 4 publishers to two topics of
//!   8 partitions (durability `os`: no fsync, so that the CPU cost shows at its largest), one
//!   with the schema registered for the events' type and one without, alternating runs; medians
//!   of the events/s of each and their ratio. A third topic without schema gets events that
//!   already carry the `dataschema` a validated one is stamped with, which tells the cost of
//!   the longer stored records from that of the check. The end-to-end figure through a server, with
//!   fsync, is `herald bench --serve --schema json|protobuf` (docs/benchmarks.md).
//!
//! Target (issue #13): ≤ 1 µs per 100 B event and ≤ 10 % of throughput.
//!
//! ```text
//! cargo bench -p herald-broker --bench schema
//! HERALD_BENCH_DIR=/path cargo bench -p herald-broker --bench schema
//! ```

use std::path::PathBuf;
use std::time::Instant;

use herald_broker::{Broker, BrokerConfig, Durability, TopicConfig};
use herald_core::Event;
use herald_model::schema::{NewSchema, SchemaFormat};
use serde_json::json;

const BATCH: usize = 1_000;
const PUBLISHERS: usize = 4;
const EVENTS_PER_RUN: usize = 400_000;
const RUNS: usize = 5;
const TYPE: &str = "order.placed";

fn json_schema() -> serde_json::Value {
    json!({
        "type": "object",
        "properties": {
            "id": { "type": "string", "maxLength": 64 },
            "customer": { "type": "string" },
            "total": { "type": "integer", "minimum": 0 },
            "currency": { "enum": ["EUR", "USD", "GBP"] },
            "items": { "type": "integer", "minimum": 1 }
        },
        "required": ["id", "customer", "total", "currency", "items"]
    })
}

const PROTO: &str = "syntax = \"proto3\"; package shop; \
    message Order { string id = 1; string customer = 2; int64 total = 3; string currency = 4; int32 items = 5; }";

fn protobuf_schema() -> serde_json::Value {
    use prost::Message as _;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("o.proto"), PROTO).unwrap();
    let set = protox::compile(["o.proto"], [dir.path()]).unwrap().encode_to_vec();
    herald_schema::protobuf::document("shop.Order", &set)
}

/// The record of order `n` in `format`: about 100 B of JSON, 55 B of Protobuf.
fn record(format: SchemaFormat, n: usize) -> Vec<u8> {
    let (id, customer) = (format!("order-{n:08}"), format!("customer-{:06}@example.com", n % 1000));
    let (total, items) = (n % 100_000, 1 + n % 5);
    match format {
        SchemaFormat::JsonSchema => serde_json::to_vec(&json!({
            "id": id, "customer": customer, "total": total, "currency": "EUR", "items": items
        }))
        .unwrap(),
        SchemaFormat::Protobuf => {
            let mut d = Vec::new();
            for (tag, s) in [(0x0a, id.as_str()), (0x12, customer.as_str())] {
                d.push(tag);
                prost::encoding::encode_varint(s.len() as u64, &mut d);
                d.extend_from_slice(s.as_bytes());
            }
            d.push(0x18);
            prost::encoding::encode_varint(total as u64, &mut d);
            d.extend_from_slice(&[0x22, 3]);
            d.extend_from_slice(b"EUR");
            d.push(0x28);
            prost::encoding::encode_varint(items as u64, &mut d);
            d
        }
    }
}

fn batch(format: SchemaFormat, start: usize, dataschema: Option<&str>) -> Vec<Event> {
    (start..start + BATCH)
        .map(|n| {
            let ct = if format == SchemaFormat::JsonSchema { "application/json" } else { "application/protobuf" };
            let b = Event::builder(TYPE).data(record(format, n), ct);
            match dataschema {
                Some(d) => b.dataschema(d),
                None => b,
            }
            .build()
            .unwrap()
        })
        .collect()
}

/// µs per event of validating records alone with `check` (median of `RUNS` runs of 200,000
/// events).
fn per_event(records: &[Vec<u8>], check: impl Fn(&[u8]) -> bool) -> f64 {
    let mut runs = Vec::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        for i in 0..200_000 {
            assert!(check(std::hint::black_box(&records[i % records.len()])));
        }
        runs.push(started.elapsed().as_secs_f64() * 1e6 / 200_000.0);
    }
    median(runs)
}

/// µs per event of validating records alone, and (JSON Schema) without the fast path.
fn validate_alone(format: SchemaFormat, schema: &serde_json::Value) -> (f64, Option<f64>, usize) {
    let v = herald_schema::compile(format, schema).unwrap();
    let records: Vec<Vec<u8>> = (0..1000).map(|n| record(format, n)).collect();
    let alone = per_event(&records, |r| v.validate(r).is_ok());
    let before = (format == SchemaFormat::JsonSchema).then(|| {
        let full = jsonschema::draft202012::new(schema).unwrap();
        per_event(&records, |r| full.is_valid(&serde_json::from_slice(r).unwrap()))
    });
    (alone, before, records[0].len())
}

/// Events/s publishing `EVENTS_PER_RUN` events to `topic` (batches made before the clock starts).
async fn run(broker: &Broker, topic: &str, format: SchemaFormat, dataschema: Option<&str>) -> f64 {
    let per = EVENTS_PER_RUN / PUBLISHERS;
    let batches: Vec<Vec<Vec<Event>>> = (0..PUBLISHERS)
        .map(|p| (0..per / BATCH).map(|b| batch(format, p * per + b * BATCH, dataschema)).collect())
        .collect();
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
    println!(
        "schema validation on publish: {EVENTS_PER_RUN} events per run, {RUNS} runs, batches of {BATCH}, {PUBLISHERS} publishers"
    );
    for (format, schema) in [(SchemaFormat::JsonSchema, json_schema()), (SchemaFormat::Protobuf, protobuf_schema())] {
        let (alone, before, bytes) = validate_alone(format, &schema);
        let (mut plain, mut checked, mut carried) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..RUNS {
            // Fresh topics per run, so that all write to logs of the same size.
            let (p, c, d) =
                (format!("plain-{format}-{r}"), format!("checked-{format}-{r}"), format!("carry-{format}-{r}"));
            for t in [&p, &c, &d] {
                broker.create_topic(t, config.clone()).unwrap();
            }
            let s = NewSchema { ty: TYPE.into(), format, schema: schema.clone(), compatibility: None };
            broker.register_schema(&c, s).unwrap();
            // What `c` stamps, the same length for `d`'s events.
            let stamp = herald_model::schema::dataschema(&c, TYPE, 1);
            // The three in turn, each first in one run of three.
            for i in 0..3 {
                match (r + i) % 3 {
                    0 => plain.push(run(&broker, &p, format, None).await),
                    1 => checked.push(run(&broker, &c, format, None).await),
                    _ => carried.push(run(&broker, &d, format, Some(&stamp)).await),
                }
            }
        }
        let (p, c, d) = (median(plain.clone()), median(checked.clone()), median(carried.clone()));
        let us = |faster: f64, slower: f64| (1.0 / slower - 1.0 / faster) * 1e6;
        println!("{format} ({bytes} B records):");
        println!("  validation alone {alone:>10.2} µs per event (median)");
        if let Some(before) = before {
            println!("  without fast path{before:>10.2} µs per event (median; parse, then jsonschema)");
        }
        println!("  no schema        {p:>10.0} events/s (median; runs {plain:.0?})");
        println!("  5-field schema   {c:>10.0} events/s (median; runs {checked:.0?})");
        println!("  no schema, events carrying the dataschema {d:.0} events/s (median; runs {carried:.0?})");
        println!(
            "  ratio {:.3}; publish cost {:.2} µs per event: {:.2} the longer records, {:.2} the rest (check and stamp)",
            c / p,
            us(p, c),
            us(p, d),
            us(d, c)
        );
    }
    broker.close().await.unwrap();
}
