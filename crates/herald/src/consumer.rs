//! The consumer runtime: fetch, run the handler with key-ordered concurrency, settle by the
//! outcome (ack, retry, dead letter), log and count every event, shut down gracefully.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use herald_core::Event;
use herald_telemetry::{FutureExt as _, Spans};
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::backend::{
    Backend, GroupConfig, Message, OrderingMode, RetryPolicy, StartFrom, SubscribeOptions, Subscription,
};
use crate::error::{Code, Error, ErrorKind, HandlerError, Result};
use crate::producer::HANDLING;

type BoxFuture = Pin<Box<dyn Future<Output = std::result::Result<(), HandlerError>> + Send>>;
type Handler = Arc<dyn Fn(Event) -> BoxFuture + Send + Sync>;

/// What happened to one event, as logged and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Handled and acked.
    Ok,
    /// Failed; will be redelivered.
    Retry,
    /// Sent to the dead-letter queue.
    Dlq,
    /// Already completed by this group (idempotency store): acked without running the handler.
    Duplicate,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Retry => "retry",
            Outcome::Dlq => "dlq",
            Outcome::Duplicate => "duplicate",
        }
    }
}

/// Totals of one [`Consumer::run`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Events handled and acked.
    pub ok: u64,
    /// Failed attempts that will be retried.
    pub retried: u64,
    /// Events sent to the DLQ.
    pub dead_lettered: u64,
    /// Events skipped as already completed.
    pub duplicates: u64,
}

/// Builds a consumer: `client.consumer("billing").subscribe(["orders"]).handler(...)`.
pub struct Consumer {
    backend: Arc<dyn Backend>,
    group: String,
    options: SubscribeOptions,
    concurrency: usize,
    handler_timeout: Duration,
    shutdown_grace: Duration,
    handler: Option<Handler>,
    idempotency: Option<Arc<dyn crate::idempotency::IdempotencyStore>>,
}

impl Consumer {
    pub(crate) fn new(backend: Arc<dyn Backend>, group: &str) -> Consumer {
        Consumer {
            backend,
            group: group.to_owned(),
            options: SubscribeOptions::default(),
            concurrency: 1,
            handler_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            handler: None,
            idempotency: None,
        }
    }

    /// Skips events this group already completed, as remembered by `store` (see
    /// [`crate::idempotency`]).
    pub fn idempotency(mut self, store: Arc<dyn crate::idempotency::IdempotencyStore>) -> Self {
        self.idempotency = Some(store);
        self
    }

    /// The topics to receive.
    pub fn subscribe<S: Into<String>>(mut self, topics: impl IntoIterator<Item = S>) -> Self {
        self.options.topics = topics.into_iter().map(Into::into).collect();
        self
    }

    /// Handlers running at once (default 1). Events of one key are still handled one at a time,
    /// in order.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Attempts and backoff for a group this consumer creates (blocking retries: a failing event
    /// holds its key until it succeeds or is dead-lettered, so order per key is kept). Settings
    /// belong to the group: when it exists already with other settings, its stored ones apply,
    /// and the consumer logs which differ.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.options.retry = policy;
        self
    }

    /// Non-blocking retries: a failing event no longer holds back the later events of its key;
    /// its retry comes after them. Use when throughput matters more than order under failure.
    /// (Blocking is the default.)
    pub fn non_blocking_retries(mut self) -> Self {
        self.options.blocking_retries = false;
        self
    }

    /// A handler running longer than this counts as a failed attempt (default 30 s).
    pub fn handler_timeout(mut self, t: Duration) -> Self {
        self.handler_timeout = t;
        // The broker must not redeliver while the handler may still run.
        self.options.ack_timeout = self.options.ack_timeout.max(t + Duration::from_secs(1));
        self
    }

    /// A delivery not settled within this is redelivered (default 30 s; raised to the handler
    /// timeout plus a second). Like every group setting, it applies when this consumer creates
    /// the group.
    pub fn ack_timeout(mut self, t: Duration) -> Self {
        self.options.ack_timeout = t.max(self.handler_timeout + Duration::from_secs(1));
        self
    }

    /// Where a new group starts (default: the earliest event).
    pub fn start(mut self, start: StartFrom) -> Self {
        self.options.start = start;
        self
    }

    /// Order kept by the broker (default: per key).
    pub fn ordering(mut self, mode: OrderingMode) -> Self {
        self.options.ordering = mode;
        self
    }

    /// Most events held at once (fetched and not yet settled).
    pub fn max_in_flight(mut self, n: u32) -> Self {
        self.options.max_in_flight = n.max(1);
        self
    }

    /// How long shutdown waits for running handlers.
    pub fn shutdown_grace(mut self, t: Duration) -> Self {
        self.shutdown_grace = t;
        self
    }

    /// The handler, an async fn of the event.
    pub fn handler<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(), HandlerError>> + Send + 'static,
    {
        self.handler = Some(Arc::new(move |e| Box::pin(f(e))));
        self
    }

    /// A handler of a typed JSON payload. An event whose data does not decode as `T` is a
    /// permanent failure (to the DLQ at once).
    pub fn handler_json<T, F, Fut>(self, f: F) -> Self
    where
        T: DeserializeOwned + Send + 'static,
        F: Fn(T, Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(), HandlerError>> + Send + 'static,
    {
        self.handler_decoded(f, |data| {
            serde_json::from_slice(data).map_err(|e| format!("data is not the expected JSON: {e}"))
        })
    }

    /// A handler of a typed Protobuf payload. An event whose data does not decode as `T` is a
    /// permanent failure (to the DLQ at once).
    pub fn handler_protobuf<T, F, Fut>(self, f: F) -> Self
    where
        T: prost::Message + Default + Send + 'static,
        F: Fn(T, Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(), HandlerError>> + Send + 'static,
    {
        self.handler_decoded(f, |data| {
            T::decode(data).map_err(|e| format!("data is not the expected Protobuf message: {e}"))
        })
    }

    /// A handler of a payload `decode` makes from the event's data; one it cannot make is a
    /// permanent failure, with its words.
    fn handler_decoded<T, F, Fut>(self, f: F, decode: fn(&[u8]) -> std::result::Result<T, String>) -> Self
    where
        T: Send + 'static,
        F: Fn(T, Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(), HandlerError>> + Send + 'static,
    {
        let f = Arc::new(f);
        self.handler(move |event: Event| {
            let f = f.clone();
            async move {
                let payload = decode(event.data()).map_err(HandlerError::permanent)?;
                f(payload, event).await
            }
        })
    }

    /// Runs until `shutdown` is cancelled: then stops fetching, lets running handlers finish
    /// within the grace period, and leaves the group (whatever is unsettled is redelivered).
    pub async fn run(self, shutdown: CancellationToken) -> Result<RunReport> {
        let handler =
            self.handler.clone().ok_or_else(|| Error::new(Code::InvalidConfig, "a consumer needs a handler"))?;
        if self.options.topics.is_empty() {
            return Err(Error::new(Code::InvalidConfig, "a consumer needs at least one topic"));
        }
        let sub: Arc<dyn Subscription> = Arc::from(self.backend.subscribe(&self.group, self.options.clone()).await?);
        // The group's stored settings decide backoff, attempts and dead letters: the runtime
        // follows them, whatever this builder asked for.
        let settings: GroupConfig = sub.settings().clone();
        let differences = self.options.group_config().differences(&settings);
        if !differences.is_empty() {
            tracing::warn!(group = %self.group, differences = %differences.join("; "),
                "the group exists with other settings; running with the group's");
        }
        let ack_timeout = Duration::from_millis(settings.ack_timeout_ms);
        if ack_timeout <= self.handler_timeout {
            tracing::warn!(group = %self.group, ?ack_timeout, handler_timeout = ?self.handler_timeout,
                "the group's ack timeout is not above the handler timeout: a slow handler's event is redelivered while it runs");
        }
        let rt = Arc::new(Runtime {
            sub: sub.clone(),
            group: self.group.clone(),
            handler,
            retry: settings.retry,
            budget: Budget::new(self.concurrency, self.options.max_in_flight as usize, ack_timeout),
            chain_keys: !self.backend.capabilities().key_ordering && settings.ordering == OrderingMode::Key,
            settled: tokio::sync::Notify::new(),
            timeout: self.handler_timeout,
            keys: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(self.concurrency)),
            held: Arc::new(Semaphore::new(self.options.max_in_flight as usize)),
            report: Mutex::new(RunReport::default()),
            idempotency: self.idempotency.clone(),
            meters: self.options.topics.iter().map(|t| (t.clone(), Meters::new(t, &self.group))).collect(),
        });
        let mut tasks = tokio::task::JoinSet::new();
        let lag_reporter = tokio::spawn(report_lag(self.backend.clone(), self.group.clone(), shutdown.clone()));
        loop {
            // Fetch only what can start before its ack deadline: the budget is what `concurrency`
            // handlers at the observed handler latency start within half the group's ack timeout
            // (and never more than `max_in_flight`). Fetched events wait for a handler while their
            // deadline runs, so fetching more would time them out though no handler failed. And
            // fetch in bulk: wait until half the budget is free rather than polling for every
            // event that completes (each poll costs the broker a durable delivery record).
            let limit = rt.budget.limit();
            let holding = self.options.max_in_flight as usize - rt.held.available_permits();
            let free = limit.saturating_sub(holding);
            if free < (limit / 2).max(1) {
                // Not fetching is not leaving: the session must outlive a slow handler.
                if let Err(e) = sub.heartbeat().await {
                    tracing::warn!(group = %self.group, error = %e, "heartbeat failed");
                }
                let settled = rt.settled.notified();
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = settled => {}
                    // The limit may grow as latencies are observed.
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
                continue;
            }
            let fetched = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = sub.fetch(free, Duration::from_millis(200)) => r,
            };
            let messages = match fetched {
                Ok(m) => m,
                Err(e) if e.kind() == ErrorKind::Closed => break,
                Err(e) => {
                    tracing::warn!(group = %self.group, error = %e, "fetch failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            for m in messages {
                let hold = rt.held.clone().try_acquire_owned().expect("fetched within the budget");
                rt.dispatch(m, hold, &mut tasks);
            }
            while tasks.try_join_next().is_some() {}
        }
        // Graceful shutdown: no more fetches; running chains finish within the grace period.
        let drained =
            tokio::time::timeout(self.shutdown_grace, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(group = %self.group, "shutdown grace elapsed; unfinished events will be redelivered");
            tasks.abort_all();
        }
        lag_reporter.abort();
        sub.close().await?;
        let report = rt.report.lock().expect("report lock poisoned").clone();
        Ok(report)
    }
}

/// Publishes the group's lag per partition as the gauge `herald_consumer_lag` every second.
async fn report_lag(backend: Arc<dyn Backend>, group: String, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if let Ok(lags) = backend.group_lag(&group).await {
            for (topic, partition, lag) in lags {
                metrics::gauge!("herald_consumer_lag", "topic" => topic, "partition" => partition.to_string(), "group" => group.clone())
                    .set(lag as f64);
            }
        }
    }
}

/// Metric handles per topic, registered once at start: no label allocation per event.
struct Meters {
    outcomes: [metrics::Counter; 4],
    latency: metrics::Histogram,
}

impl Meters {
    fn new(topic: &str, group: &str) -> Meters {
        let counter = |outcome: Outcome| {
            let labels =
                [("topic", topic.to_owned()), ("group", group.to_owned()), ("outcome", outcome.as_str().to_owned())];
            metrics::counter!("herald_consumer_events_total", &labels)
        };
        Meters {
            outcomes: [
                counter(Outcome::Ok),
                counter(Outcome::Retry),
                counter(Outcome::Dlq),
                counter(Outcome::Duplicate),
            ],
            latency: metrics::histogram!("herald_handler_seconds", "topic" => topic.to_owned(), "group" => group.to_owned()),
        }
    }
}

/// How many events the runtime may hold: what its handlers can start before the ack deadline.
struct Budget {
    concurrency: usize,
    max_in_flight: usize,
    /// Half the group's ack timeout: the time a fetched event may wait for a handler.
    window: Duration,
    /// Moving average of handler latency, in microseconds (0 until the first event).
    latency_us: std::sync::atomic::AtomicU64,
}

impl Budget {
    fn new(concurrency: usize, max_in_flight: usize, ack_timeout: Duration) -> Budget {
        Budget { concurrency, max_in_flight, window: ack_timeout / 2, latency_us: Default::default() }
    }

    /// Events to hold at most now.
    fn limit(&self) -> usize {
        use std::sync::atomic::Ordering::Relaxed;
        let latency = self.latency_us.load(Relaxed);
        // Nothing observed yet (latency 0): as many as can start at once.
        let startable = match (self.window.as_micros() as u64).checked_div(latency) {
            Some(per_handler) => self.concurrency.saturating_mul(per_handler.max(1) as usize),
            None => self.concurrency,
        };
        startable.clamp(1, self.max_in_flight)
    }

    fn observe(&self, latency: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let us = (latency.as_micros() as u64).max(1);
        // An average that follows slowdowns at once and speed-ups gradually.
        let _ = self
            .latency_us
            .fetch_update(Relaxed, Relaxed, |old| Some(if old == 0 || us > old { us } else { old - (old - us) / 8 }));
    }
}

struct Runtime {
    sub: Arc<dyn Subscription>,
    group: String,
    handler: Handler,
    /// The group's retry policy (its stored settings).
    retry: RetryPolicy,
    budget: Budget,
    /// Woken whenever an event is settled (room in the budget).
    settled: tokio::sync::Notify,
    timeout: Duration,
    /// Whether the runtime must keep key order itself: only for a backend that does not (the
    /// broker decides order where it can — one owner — and hands a key's events out one at a
    /// time; with ordering `none` or `partition` the user asked for no key order).
    chain_keys: bool,
    /// Keys with a chain running, and the messages queued behind it.
    keys: Mutex<HashMap<String, VecDeque<(Message, tokio::sync::OwnedSemaphorePermit)>>>,
    permits: Arc<Semaphore>,
    held: Arc<Semaphore>,
    report: Mutex<RunReport>,
    idempotency: Option<Arc<dyn crate::idempotency::IdempotencyStore>>,
    meters: HashMap<String, Meters>,
}

impl Runtime {
    /// Starts a chain for the message's key, or queues it behind the running one.
    fn dispatch(
        self: &Arc<Self>,
        m: Message,
        hold: tokio::sync::OwnedSemaphorePermit,
        tasks: &mut tokio::task::JoinSet<()>,
    ) {
        if self.chain_keys
            && let Some(key) = m.event.key().map(str::to_owned)
        {
            let mut keys = self.keys.lock().expect("keys lock poisoned");
            if let Some(queue) = keys.get_mut(&key) {
                queue.push_back((m, hold));
                return;
            }
            keys.insert(key, VecDeque::new());
        }
        let rt = self.clone();
        tasks.spawn(async move { rt.chain(m, hold).await });
    }

    /// Handles a message, then every message queued behind it for the same key, in order.
    async fn chain(self: Arc<Self>, mut m: Message, mut hold: tokio::sync::OwnedSemaphorePermit) {
        loop {
            let permit = self.permits.clone().acquire_owned().await.expect("never closed");
            self.handle(&mut m).await;
            drop(permit);
            drop(hold);
            self.settled.notify_one();
            if !self.chain_keys {
                return;
            }
            let Some(key) = m.event.key().map(str::to_owned) else { return };
            let mut keys = self.keys.lock().expect("keys lock poisoned");
            let next = keys.get_mut(&key).and_then(VecDeque::pop_front);
            match next {
                Some((n, h)) => {
                    m = n;
                    hold = h;
                }
                None => {
                    keys.remove(&key);
                    return;
                }
            }
        }
    }

    async fn handle(&self, m: &mut Message) {
        let start = Instant::now();
        let key = match &self.idempotency {
            Some(_) => format!("{}\u{0}{}", m.event.source(), m.event.id()),
            None => String::new(),
        };
        if let Some(store) = &self.idempotency {
            match store.completed(&self.group, &key).await {
                Ok(true) => {
                    let outcome = self.settle(m, Outcome::Duplicate, self.sub.ack(m).await);
                    self.record(m, outcome, start.elapsed());
                    return;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "idempotency store unavailable; handling anyway"),
            }
        }
        let event = m.event.clone();
        let ctx = (event.id().to_owned(), event.correlationid().map(str::to_owned));
        let process = Spans::process(&m.topic, &m.event, m.partition, m.offset, &self.group, m.attempt);
        let run = HANDLING.scope(ctx, (self.handler)(event));
        // Events the handler publishes are created inside its `process` span (tracing on only:
        // off, the handler's future is not wrapped at all).
        let run = match &process {
            Some(p) => futures::future::Either::Left(run.with_context(p.cx.clone())),
            None => futures::future::Either::Right(run),
        };
        let result = match tokio::time::timeout(self.timeout, AssertUnwindSafe(run).catch_unwind()).await {
            Ok(Ok(r)) => r,
            Ok(Err(panic)) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic".into());
                Err(HandlerError::retryable(format!("handler panicked: {msg}")))
            }
            Err(_) => Err(HandlerError::retryable(format!("handler timed out after {:?}", self.timeout))),
        };
        let latency = start.elapsed();
        m.handler_duration = Some(latency);
        let m = &*m;
        let error_type = result.as_ref().err().map(|e| if e.is_permanent() { "permanent" } else { "retryable" });
        if let (Some(p), Err(e)) = (&process, &result) {
            p.fail(error_type.unwrap_or_default(), e.message());
        }
        herald_telemetry::metrics::processed(&m.topic, &self.group, latency, error_type);
        let settle = |how| process.as_ref().map(|p| Spans::settle(p, &m.topic, &m.event, &self.group, how));
        let outcome = match result {
            Ok(()) => {
                // Completion is recorded before the ack: a crash in between is recognised later.
                if let Some(store) = &self.idempotency
                    && let Err(e) = store.complete(&self.group, &key).await
                {
                    tracing::warn!(error = %e, "could not record completion in the idempotency store");
                }
                let span = settle("ack");
                self.settle(m, Outcome::Ok, traced(span, self.sub.ack(m).await))
            }
            Err(e) if e.is_permanent() || self.retry.exhausted(m.attempt) => {
                let span = settle("reject");
                self.settle(m, Outcome::Dlq, traced(span, self.sub.reject(m, e.message()).await))
            }
            // The backoff is the group's: the backend applies its stored policy.
            Err(e) => {
                let span = settle("nack");
                self.settle(m, Outcome::Retry, traced(span, self.sub.nack(m, None, e.message()).await))
            }
        };
        if let Some(p) = process {
            p.end();
        }
        self.budget.observe(latency);
        self.record(m, outcome, latency);
    }

    /// One log line and the counters for a handled event.
    fn record(&self, m: &Message, outcome: Outcome, latency: Duration) {
        match self.meters.get(&*m.topic) {
            Some(meters) => {
                meters.outcomes[outcome as usize].increment(1);
                meters.latency.record(latency.as_secs_f64());
            }
            None => Meters::new(&m.topic, &self.group).outcomes[outcome as usize].increment(1),
        }
        tracing::info!(
            event_id = m.event.id(),
            r#type = m.event.ty(),
            topic = %m.topic,
            partition = m.partition,
            offset = m.offset,
            group = %self.group,
            attempt = m.attempt,
            latency_ms = latency.as_secs_f64() * 1e3,
            outcome = outcome.as_str(),
            correlation_id = m.event.correlationid().unwrap_or(""),
            "handled"
        );
        let mut r = self.report.lock().expect("report lock poisoned");
        match outcome {
            Outcome::Ok => r.ok += 1,
            Outcome::Retry => r.retried += 1,
            Outcome::Dlq => r.dead_lettered += 1,
            Outcome::Duplicate => r.duplicates += 1,
        }
    }

    /// Settles by outcome; `Retry` when the settle failed (the broker redelivers).
    fn settle(&self, m: &Message, outcome: Outcome, result: Result<()>) -> Outcome {
        if let Err(e) = result {
            // The broker redelivers what could not be settled (ack timeout or reassignment).
            tracing::warn!(event_id = m.event.id(), group = %self.group, error = %e, "could not settle; it will be redelivered");
            return Outcome::Retry;
        }
        outcome
    }
}

/// Ends a settle span, marking it failed when the settle could not be made.
fn traced(span: Option<herald_telemetry::Started>, result: Result<()>) -> Result<()> {
    if let Some(span) = span {
        if let Err(e) = &result {
            span.fail(e.code().as_str(), &e.to_string());
        }
        span.end();
    }
    result
}
