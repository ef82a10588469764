//! The producer: batching with a linger time, a bounded buffer, retries of retryable errors,
//! and correlation/causation ids.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use herald_core::Event;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::backend::{Backend, Receipt};
use crate::error::{Code, Error, Result};

/// Producer settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerConfig {
    /// How long the first event of a batch waits for others (0: send at once, still batching
    /// whatever is already queued).
    pub linger: Duration,
    /// Most events sent in one call to the backend.
    pub batch_events_max: usize,
    /// Most events waiting in the producer; `publish` waits when it is full.
    pub buffer_events_max: usize,
    /// How long retryable errors are retried before `publish` fails.
    pub retry_for: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            linger: Duration::from_millis(1),
            batch_events_max: 1000,
            buffer_events_max: 10_000,
            retry_for: Duration::from_secs(30),
        }
    }
}

struct Pending {
    topic: String,
    event: Event,
    reply: oneshot::Sender<Result<Receipt>>,
}

/// Publishes events. Cheap to clone; all clones share one buffer and one sender task.
#[derive(Clone)]
pub struct Producer {
    tx: mpsc::Sender<Pending>,
}

tokio::task_local! {
    /// The event a handler is processing, so events published from inside it inherit its
    /// correlation id and take its id as causation id.
    pub(crate) static HANDLING: (String, Option<String>);
}

/// Sets the correlation and causation ids an event should carry.
fn stamp(topic: &str, event: Event) -> Result<Event> {
    let event = stamp_ids(event)?;
    // Tracing on: a `create` span, whose context the event carries from here on.
    Ok(herald_telemetry::Spans::create(topic, event))
}

fn stamp_ids(event: Event) -> Result<Event> {
    let inherited = HANDLING.try_with(|(id, corr)| (id.clone(), corr.clone())).ok();
    match inherited {
        Some((cause, corr)) => {
            let mut b = event.to_builder();
            if event.causationid().is_none() {
                b = b.causationid(cause.clone());
            }
            if event.correlationid().is_none() {
                b = b.correlationid(corr.unwrap_or(cause));
            }
            Ok(b.build()?)
        }
        None if event.correlationid().is_none() => {
            // The first publish of a flow: its own id becomes the correlation id.
            let id = event.id().to_owned();
            Ok(event.to_builder().correlationid(id).build()?)
        }
        None => Ok(event),
    }
}

impl Producer {
    pub(crate) fn new(backend: Arc<dyn Backend>, config: ProducerConfig) -> Producer {
        let (tx, rx) = mpsc::channel(config.buffer_events_max.max(1));
        tokio::spawn(sender(backend, config, rx));
        Producer { tx }
    }

    /// Publishes one event; resolves once it is stored per the topic's durability. Waits while
    /// the producer's buffer is full.
    pub async fn publish(&self, topic: &str, event: Event) -> Result<Receipt> {
        let event = stamp(topic, event)?;
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Pending { topic: topic.to_owned(), event, reply })
            .await
            .map_err(|_| Error::new(Code::Closed, "the producer is closed"))?;
        rx.await.map_err(|_| Error::new(Code::Closed, "the producer is closed"))?
    }

    /// Publishes several events; receipts in order.
    pub async fn publish_all(&self, topic: &str, events: Vec<Event>) -> Result<Vec<Receipt>> {
        let mut waits = Vec::with_capacity(events.len());
        for event in events {
            let event = stamp(topic, event)?;
            let (reply, rx) = oneshot::channel();
            self.tx
                .send(Pending { topic: topic.to_owned(), event, reply })
                .await
                .map_err(|_| Error::new(Code::Closed, "the producer is closed"))?;
            waits.push(rx);
        }
        let mut out = Vec::with_capacity(waits.len());
        for rx in waits {
            out.push(rx.await.map_err(|_| Error::new(Code::Closed, "the producer is closed"))??);
        }
        Ok(out)
    }

    /// Serializes `payload` as JSON into an event of type `ty` with `key`, and publishes it.
    pub async fn publish_json<T: Serialize>(
        &self,
        topic: &str,
        ty: &str,
        key: Option<&str>,
        payload: &T,
    ) -> Result<Receipt> {
        let mut b = Event::builder(ty).json(payload);
        if let Some(k) = key {
            b = b.key(k);
        }
        self.publish(topic, b.build()?).await
    }

    /// Publishes a Protobuf message (its binary encoding, `application/protobuf`) as an event
    /// of type `ty`; register its schema with [`crate::schema::protobuf_of`].
    pub async fn publish_protobuf<T: prost::Message>(
        &self,
        topic: &str,
        ty: &str,
        key: Option<&str>,
        message: &T,
    ) -> Result<Receipt> {
        let mut b = Event::builder(ty).data(message.encode_to_vec(), "application/protobuf");
        if let Some(k) = key {
            b = b.key(k);
        }
        self.publish(topic, b.build()?).await
    }
}

async fn sender(backend: Arc<dyn Backend>, config: ProducerConfig, mut rx: mpsc::Receiver<Pending>) {
    // One worker per topic with one publish in flight: a topic's batches are stored in the order
    // they were formed, so events of one key keep their publish order (also across retries).
    // Topics go out concurrently; one topic's slow retries do not hold the others.
    let mut workers: HashMap<String, mpsc::Sender<Vec<Pending>>> = HashMap::new();
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + config.linger;
        while batch.len() < config.batch_events_max {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) if config.linger.is_zero() => break,
                Err(_) => match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(p)) => batch.push(p),
                    _ => break,
                },
            }
        }
        let mut by_topic: HashMap<String, Vec<Pending>> = HashMap::new();
        for p in batch {
            by_topic.entry(p.topic.clone()).or_default().push(p);
        }
        for (topic, mut pending) in by_topic {
            loop {
                let tx = workers
                    .entry(topic.clone())
                    .or_insert_with(|| spawn_topic_worker(backend.clone(), topic.clone(), config.retry_for));
                // Waits while the topic's worker has batches queued: the producer's buffer (and
                // so `publish`) applies the backpressure.
                match tx.send(pending).await {
                    Ok(()) => break,
                    Err(mpsc::error::SendError(back)) => {
                        // The worker ended after being idle; start another.
                        workers.remove(&topic);
                        pending = back;
                    }
                }
            }
        }
    }
}

/// Batches waiting per topic worker, beyond the one being published.
const TOPIC_QUEUE_BATCHES: usize = 4;
/// A topic worker with nothing to do for this long ends (the sender starts a new one on demand).
const TOPIC_WORKER_IDLE: Duration = Duration::from_secs(30);

fn spawn_topic_worker(backend: Arc<dyn Backend>, topic: String, retry_for: Duration) -> mpsc::Sender<Vec<Pending>> {
    let (tx, mut rx) = mpsc::channel::<Vec<Pending>>(TOPIC_QUEUE_BATCHES);
    tokio::spawn(async move {
        while let Ok(Some(pending)) = tokio::time::timeout(TOPIC_WORKER_IDLE, rx.recv()).await {
            let events: Vec<Event> = pending.iter().map(|p| p.event.clone()).collect();
            let send = herald_telemetry::Spans::send(&topic, &events);
            let (count, started) = (events.len(), std::time::Instant::now());
            let result = publish_with_retry(&*backend, &topic, events, retry_for).await;
            let error = result.as_ref().err().map(|e| e.code().as_str());
            herald_telemetry::metrics::sent(&topic, count, started.elapsed(), error);
            if let Some(send) = send {
                if let Err(e) = &result {
                    send.fail(e.code().as_str(), &e.to_string());
                }
                send.end();
            }
            match result {
                Ok(receipts) => {
                    for (p, r) in pending.into_iter().zip(receipts) {
                        let _ = p.reply.send(Ok(r));
                    }
                }
                Err(e) => {
                    for p in pending {
                        let _ = p.reply.send(Err(Error::new(e.code(), e.to_string())));
                    }
                }
            }
        }
    });
    tx
}

/// Retries retryable failures with exponential backoff; the events keep their ids, so a retry
/// after a lost reply is deduplicated by the broker.
async fn publish_with_retry(
    backend: &dyn Backend,
    topic: &str,
    events: Vec<Event>,
    retry_for: Duration,
) -> Result<Vec<Receipt>> {
    let start = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(5);
    loop {
        match backend.publish(topic, events.clone()).await {
            Err(e) if e.is_retryable() && start.elapsed() + delay < retry_for => {
                metrics::counter!("herald_publish_retries_total", "topic" => topic.to_owned()).increment(1);
                tracing::debug!(topic, error = %e, ?delay, "publish failed, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            other => return other,
        }
    }
}
