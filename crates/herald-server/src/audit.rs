//! The audit trail: every admin and dead-letter action, every refused request and every token
//! change, as a structured record (time, principal, source address, action, target, outcome)
//! written to the log (target `herald::audit`) and appended to the durable topic
//! [`AUDIT_TOPIC`], which principals holding `consume:topic/herald.audit` read like any other.
//!
//! Without authentication (`[auth] mode = "none"`) every caller is `anonymous`: records then go
//! to the log only, and no topic is made.
//!
//! Recording never blocks a request: records go through a bounded queue
//! ([`AUDIT_QUEUE_MAX`]) to one task that publishes them in batches; when the queue is full the
//! record is still logged, counted (`herald_server_audit_dropped_total`) and left out of the topic.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use herald_broker::{Broker, BrokerError, TopicConfig};
use herald_core::Event;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The topic audit records are appended to.
pub const AUDIT_TOPIC: &str = "herald.audit";
/// Records waiting to be appended at most.
pub const AUDIT_QUEUE_MAX: usize = 10_000;
/// Records appended in one publish at most.
const BATCH_MAX: usize = 500;
/// How long the audit topic keeps records: 90 days.
const RETENTION_MS: u64 = 90 * 24 * 3600 * 1000;
/// The most the audit topic keeps, oldest records going first: 1 GiB.
const RETENTION_BYTES: u64 = 1 << 30;

fn topic_config() -> TopicConfig {
    TopicConfig {
        partitions: 1,
        retention_ms: Some(RETENTION_MS),
        retention_bytes: Some(RETENTION_BYTES),
        ..TopicConfig::default()
    }
}

/// Makes the audit topic if it is missing (at start, before anyone can make it first).
pub(crate) fn ensure_topic(broker: &Broker) -> Result<(), BrokerError> {
    match broker.create_topic(AUDIT_TOPIC, topic_config()) {
        Ok(_) | Err(BrokerError::TopicExists { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// One audited action.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// ms since the Unix epoch.
    pub time_ms: u64,
    /// The caller's name (`anonymous` without authentication, `-` when it was not authenticated).
    pub principal: String,
    /// Where the request came from.
    pub source: Option<IpAddr>,
    /// `http` or `grpc` (or `server` for token changes the server noticed).
    pub api: &'static str,
    /// What was asked: `create_topic`, `delete_topic`, `reset_group`, `skip_damaged`,
    /// `dlq_list`, `dlq_replay`, `dlq_purge`, `token_created`, `token_revoked`, or the method of
    /// a refused request.
    pub action: String,
    /// What it was asked of: `topic/orders`, `group/billing`, `token/billing`, …
    pub target: String,
    /// `ok`, or the error code it was answered with.
    pub outcome: String,
}

/// Where audit records go.
pub struct Audit {
    /// `None`: the log only.
    tx: Option<mpsc::Sender<Record>>,
}

impl Audit {
    /// Starts the task that appends records to [`AUDIT_TOPIC`] until `stop`.
    /// With `to_topic` false, records only reach the log.
    pub(crate) fn start(
        broker: Broker,
        to_topic: bool,
        stop: CancellationToken,
    ) -> (Arc<Audit>, tokio::task::JoinHandle<()>) {
        if !to_topic {
            return (Arc::new(Audit { tx: None }), tokio::spawn(async {}));
        }
        let (tx, rx) = mpsc::channel(AUDIT_QUEUE_MAX);
        let task = tokio::spawn(append(broker, rx, stop));
        (Arc::new(Audit { tx: Some(tx) }), task)
    }

    /// An audit whose records only reach the log (for tests of other parts).
    #[cfg(test)]
    pub(crate) fn detached() -> Audit {
        Audit { tx: None }
    }

    /// Records one action (now).
    pub fn record(
        &self,
        principal: &str,
        source: Option<IpAddr>,
        api: &'static str,
        action: &str,
        target: &str,
        outcome: &str,
    ) {
        let r = Record {
            time_ms: crate::auth::tokens::now_ms(),
            principal: principal.to_owned(),
            source,
            api,
            action: action.to_owned(),
            target: target.to_owned(),
            outcome: outcome.to_owned(),
        };
        tracing::info!(target: "herald::audit", principal = %r.principal, source = ?r.source, api = r.api,
            action = %r.action, target = %r.target, outcome = %r.outcome, "audit");
        if let Some(tx) = &self.tx
            && tx.try_send(r).is_err()
        {
            metrics::counter!("herald_server_audit_dropped_total").increment(1);
        }
    }
}

fn event(r: &Record) -> Option<Event> {
    let data = serde_json::to_vec(r).ok()?;
    Event::builder("herald.audit")
        .source("/herald/server")
        .key(r.principal.clone())
        .data(data, "application/json")
        .build()
        .ok()
}

async fn append(broker: Broker, mut rx: mpsc::Receiver<Record>, stop: CancellationToken) {
    // The topic was made at start (`ensure_topic`, before the server took requests); it is made
    // again below if deleted since.
    let mut batch = Vec::with_capacity(BATCH_MAX);
    loop {
        let n = tokio::select! {
            n = rx.recv_many(&mut batch, BATCH_MAX) => n,
            () = stop.cancelled() => {
                // What is queued at shutdown still goes in.
                rx.close();
                rx.recv_many(&mut batch, AUDIT_QUEUE_MAX).await
            }
        };
        if n == 0 && batch.is_empty() {
            return;
        }
        let events: Vec<Event> = batch.drain(..).filter_map(|r| event(&r)).collect();
        if !events.is_empty() {
            let mut tries = 0;
            while let Err(e) = broker.publish_batch(AUDIT_TOPIC, events.clone()).await {
                tries += 1;
                if matches!(e, BrokerError::TopicNotFound { .. }) {
                    // Deleted under us (an operator on the data directory): made again.
                    let b = broker.clone();
                    if tokio::task::spawn_blocking(move || ensure_topic(&b)).await.is_ok_and(|r| r.is_ok()) && tries < 5
                    {
                        continue;
                    }
                }
                if !e.code().is_retryable() || tries >= 5 {
                    metrics::counter!("herald_server_audit_dropped_total").increment(events.len() as u64);
                    tracing::error!(error = %e, records = events.len(), "appending audit records failed");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100 << tries)).await;
            }
        }
        if stop.is_cancelled() && rx.is_closed() && rx.is_empty() {
            return;
        }
    }
}
