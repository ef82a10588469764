//! Herald through its SDK: any URL `herald::connect` takes, or a server started in this process
//! (`--serve`). Producers call `Backend::publish` with whole batches; consumers are group members
//! (`Backend::subscribe`) that fetch up to `FETCH_MAX` events and ack each one, all acks of a fetch
//! concurrently.

use std::sync::Arc;

use anyhow::{Context, Result};
use herald::{Backend, Event, StartFrom, SubscribeOptions, Subscription, TopicConfig};
use herald_core::Bytes;
use tokio_util::sync::CancellationToken;

use super::Plan;
use super::data::DataFormat;

/// The type of the bench's events (what `--schema` registers a schema for).
const EVENT_TYPE: &str = "bench.event";
use super::measure::{self, BatchSender, Counters, FETCH_MAX, FETCH_WAIT, Received, Receiver, Schedule};
use super::report::{self, RunResult};

/// Runs the workload against `url`, or against a server of its own with `serve`.
pub(super) async fn run(url: &str, serve: bool, plan: Arc<Plan>, options: herald::ConnectOptions) -> Result<RunResult> {
    let mut served = None;
    let url = if serve {
        let dir = tempfile::Builder::new()
            .prefix("herald-bench-")
            .tempdir()
            .context("creating a temporary data directory for --serve")?;
        // What `herald serve` reads (HERALD_BROKER__HISTORY_BYTES_MAX=0 and the like), on a
        // temporary directory and free loopback ports.
        let flags = [
            ("data_dir", toml::Value::String(dir.path().display().to_string())),
            ("http", toml::Value::String("127.0.0.1:0".into())),
            ("grpc", toml::Value::String("127.0.0.1:0".into())),
        ];
        let config = herald_server::ServerConfig::load(None, std::env::vars(), &flags)
            .context("the server configuration for --serve (HERALD_* variables)")?;
        let server = herald_server::Server::start(config).await.context("starting the server for --serve")?;
        let url = format!("herald://{}", server.grpc_addr());
        served = Some((server, dir));
        url
    } else {
        url.to_owned()
    };
    let result = connected(&url, serve, &plan, options).await;
    if let Some((server, dir)) = served {
        server.shutdown().await.context("stopping the --serve server")?;
        drop(dir);
    }
    result
}

/// Connects, runs, and removes the run's topics whatever happened.
async fn connected(url: &str, serve: bool, plan: &Arc<Plan>, options: herald::ConnectOptions) -> Result<RunResult> {
    let client = herald::connect_with(url, options).await?;
    let backend = client.backend().clone();
    let topics: Vec<String> = (0..plan.topics).map(|t| format!("bench-{}-t{t}", plan.run_id)).collect();
    let result = workload(&backend, &topics, plan, url, serve).await;
    // The run's topics go away with it (a file:// directory or a server keeps no bench data).
    for t in &topics {
        if let Err(e) = backend.delete_topic(t).await {
            eprintln!("warning: could not delete the bench topic {t}: {e}");
        }
    }
    if let Err(e) = client.close().await {
        eprintln!("warning: closing the client: {e}");
    }
    result
}

async fn workload(
    backend: &Arc<dyn Backend>,
    topics: &[String],
    plan: &Arc<Plan>,
    url: &str,
    serve: bool,
) -> Result<RunResult> {
    let mut config = TopicConfig::with_partitions(plan.partitions);
    config.durability = plan.durability;
    for t in topics {
        backend.ensure_topic(t, config.clone()).await.with_context(|| format!("creating topic {t}"))?;
        if plan.validate
            && let Some(schema) = plan.data.schema(EVENT_TYPE)?
        {
            backend.register_schema(t, &schema).await.with_context(|| format!("registering the schema on {t}"))?;
        }
    }
    // Every member joins before the first event is published, so each group reads everything.
    let mut receivers = Vec::new();
    for g in 0..plan.groups as usize {
        let group = format!("bench-{}-g{g}", plan.run_id);
        for _ in 0..plan.consumers_per_group {
            let options = SubscribeOptions {
                topics: topics.to_vec(),
                start: StartFrom::Earliest,
                ordering: plan.ordering,
                // What one fetch takes plus the ack rounds still unanswered.
                max_in_flight: ((ACK_ROUNDS_MAX + 2) * FETCH_MAX) as u32,
                ..SubscribeOptions::default()
            };
            let sub = backend.subscribe(&group, options).await.with_context(|| format!("joining group {group}"))?;
            receivers.push((g, SdkReceiver::new(sub, &group, plan.data)));
        }
    }
    let schedule = Schedule::starting_soon(plan.warmup, plan.duration);
    let counters = Arc::new(Counters::new(plan.groups as usize));
    let stop = CancellationToken::new();
    let consumers = receivers
        .into_iter()
        .map(|(g, r)| measure::spawn_consumer(r, g, schedule, counters.clone(), stop.clone()))
        .collect();
    let topics: Arc<[String]> = topics.into();
    let producers = (0..plan.producers)
        .map(|i| {
            let sender = SdkSender {
                backend: backend.clone(),
                topics: topics.clone(),
                plan: plan.clone(),
                next_key: u64::from(i) * plan.keys / u64::from(plan.producers),
            };
            measure::spawn_producer(sender, i, plan.clone(), schedule, counters.clone())
        })
        .collect();
    let measured = measure::finish("herald", plan, schedule, &counters, producers, consumers, stop).await?;
    let target = if serve { format!("{url} (--serve)") } else { url.to_owned() };
    let system = match (plan.data, plan.validate) {
        (DataFormat::Raw, _) => "herald",
        (DataFormat::Json, false) => "herald, JSON, no schema",
        (DataFormat::Json, true) => "herald, JSON Schema validated",
        (DataFormat::Protobuf, false) => "herald, Protobuf, no schema",
        (DataFormat::Protobuf, true) => "herald, Protobuf validated",
    };
    let mut result = RunResult::new(system, target, plan.durability_name(), None, plan, &counters, measured);
    result.peak_memory_bytes = report::peak_memory(None);
    result.peak_memory_of = if serve || url.starts_with("mem:") || url.starts_with("file:") {
        "this process's (the broker runs in it), warm-up and drain included".into()
    } else {
        "this process's, the client's alone: the server runs elsewhere".into()
    };
    Ok(result)
}

struct SdkSender {
    backend: Arc<dyn Backend>,
    topics: Arc<[String]>,
    plan: Arc<Plan>,
    next_key: u64,
}

impl BatchSender for SdkSender {
    async fn send(&mut self, seq: u64, stamp_ns: u64) -> Result<u64, String> {
        let topic = &self.topics[(seq % self.topics.len() as u64) as usize];
        // One buffer per batch: every event of it carries the same send time.
        let data = Bytes::from(self.plan.data.payload(self.plan.payload_bytes, stamp_ns));
        let mut events = Vec::with_capacity(self.plan.batch as usize);
        for _ in 0..self.plan.batch {
            let mut b = Event::builder(EVENT_TYPE).data(data.clone(), self.plan.data.content_type());
            if self.plan.keys > 0 {
                b = b.key(self.plan.key(self.next_key));
                self.next_key += 1;
            }
            events.push(b.build().map_err(|e| format!("building an event: {e}"))?);
        }
        // With tracing on, what the SDK's producer does: a create span per event, a send span
        // per batch (so that `herald bench` measures what tracing costs an application).
        let send = if herald::telemetry::enabled() {
            events = events.into_iter().map(|e| herald::telemetry::Spans::create(topic, e)).collect();
            herald::telemetry::Spans::send(topic, &events)
        } else {
            None
        };
        let receipts = self.backend.publish(topic, events).await.map_err(|e| e.to_string());
        if let Some(s) = send {
            s.end();
        }
        Ok(receipts?.len() as u64)
    }
}

/// Ack rounds (one per fetch) a consumer keeps waiting for while it fetches again, as a consumer
/// runtime does: its handlers do not wait for the server's answer to an ack before taking more.
const ACK_ROUNDS_MAX: usize = 8;

struct SdkReceiver {
    sub: Arc<dyn Subscription>,
    group: String,
    data: DataFormat,
    /// Ack rounds in flight: each answers how many acks failed, and the first error.
    acking: tokio::task::JoinSet<(u64, Option<String>)>,
}

impl SdkReceiver {
    fn new(sub: Box<dyn Subscription>, group: &str, data: DataFormat) -> Self {
        SdkReceiver { sub: Arc::from(sub), group: group.to_owned(), data, acking: tokio::task::JoinSet::new() }
    }

    fn count(r: &mut Received, done: Result<(u64, Option<String>), tokio::task::JoinError>) {
        let (errors, first) = done.unwrap_or_else(|e| (1, Some(format!("an ack round failed: {e}"))));
        r.ack_errors += errors;
        if r.ack_error.is_none() {
            r.ack_error = first;
        }
    }
}

impl Receiver for SdkReceiver {
    async fn receive(&mut self, stamps: &mut Vec<u64>) -> Result<Received, String> {
        let messages = self.sub.fetch(FETCH_MAX, FETCH_WAIT).await.map_err(|e| e.to_string())?;
        let mut r = Received { at_ns: measure::now_ns(), redelivered: 0, ack_errors: 0, ack_error: None };
        if herald::telemetry::enabled() {
            // What the consumer runtime does per message: a process span (the bench's handler
            // does nothing).
            for m in &messages {
                let (t, e, g) = (&m.topic, &m.event, &self.group);
                let p = herald::telemetry::Spans::process(t, e, m.partition, m.offset, g, m.attempt);
                if let Some(p) = p {
                    p.end();
                }
            }
        }
        for m in &messages {
            match self.data.stamp(m.event.data()) {
                Some(s) if m.attempt == 1 => stamps.push(s),
                Some(_) => r.redelivered += 1,
                None => {
                    r.ack_errors += 1;
                    r.ack_error.get_or_insert_with(|| format!("event {} has no send time", m.event.id()));
                }
            }
        }
        if !messages.is_empty() {
            // Acks are independent: all of them go at once (a remote backend pipelines them), and
            // the next fetch does not wait for their answers, up to ACK_ROUNDS_MAX rounds.
            let sub = self.sub.clone();
            self.acking.spawn(async move {
                let acks = futures::future::join_all(messages.iter().map(|m| sub.ack(m))).await;
                let mut errors = acks.into_iter().filter_map(Result::err);
                let first = errors.next().map(|e| e.to_string());
                (u64::from(first.is_some()) + errors.count() as u64, first)
            });
        }
        while let Some(done) = self.acking.try_join_next() {
            Self::count(&mut r, done);
        }
        while self.acking.len() > ACK_ROUNDS_MAX {
            let done = self.acking.join_next().await.expect("the set is not empty");
            Self::count(&mut r, done);
        }
        Ok(r)
    }

    async fn close(mut self) {
        // Acks still waiting are answered before the member leaves (their errors are no longer
        // counted: the measurement is over).
        while let Some(done) = self.acking.join_next().await {
            let mut r = Received { at_ns: 0, redelivered: 0, ack_errors: 0, ack_error: None };
            Self::count(&mut r, done);
            if let Some(e) = r.ack_error {
                eprintln!("warning: acking: {e}");
            }
        }
        if let Err(e) = self.sub.close().await {
            eprintln!("warning: leaving the group: {e}");
        }
    }
}
