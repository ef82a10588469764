//! The embedded backend: Herald's own broker in this process, `mem://` (a temporary directory,
//! deleted on close) or `file:///path` (durable).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use herald_broker::{Broker, BrokerConfig, DeliveryId, Member, MemberConfig};
use herald_core::Event;

use crate::backend::{
    Backend, Capabilities, DeadLetter, GroupInfo, Message, Receipt, StartFrom, StoredEvent, SubscribeOptions,
    Subscription, TopicConfig, TopicInfo,
};
use crate::error::{Error, ErrorKind, Result};

/// Herald's broker, in-process.
pub struct Embedded {
    broker: Broker,
    durable: bool,
    /// Keeps a `mem://` broker's directory alive; removed on drop.
    _tmp: Option<tempfile::TempDir>,
}

impl Embedded {
    /// A broker in a temporary directory (`mem://`). Must be called inside a Tokio runtime.
    pub fn memory() -> Result<Embedded> {
        let tmp = tempfile::Builder::new()
            .prefix("herald-mem-")
            .tempdir()
            .map_err(|e| Error::new(ErrorKind::Storage, "storage", format!("creating a temporary directory: {e}")))?;
        let broker = Broker::open(tmp.path(), BrokerConfig::default())?;
        Ok(Embedded { broker, durable: false, _tmp: Some(tmp) })
    }

    /// A durable broker in `dir` (`file://`). Must be called inside a Tokio runtime.
    pub fn open(dir: &Path) -> Result<Embedded> {
        Ok(Embedded { broker: Broker::open(dir, BrokerConfig::default())?, durable: true, _tmp: None })
    }

    /// A backend over a broker opened elsewhere (e.g. the one a server in this process serves).
    /// Closing the backend closes the broker.
    pub fn from_broker(broker: Broker) -> Embedded {
        Embedded { broker, durable: true, _tmp: None }
    }

    /// The broker itself, for what the traits do not cover.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }
}

#[async_trait]
impl Backend for Embedded {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            durable: self.durable,
            durable_attempts: self.durable,
            admin: true,
            dedupe: true,
            key_ordering: true,
        }
    }

    async fn publish(&self, topic: &str, events: Vec<Event>) -> Result<Vec<Receipt>> {
        Ok(self.broker.publish_batch(topic, events).await?)
    }

    async fn subscribe(&self, group: &str, options: SubscribeOptions) -> Result<Box<dyn Subscription>> {
        let config = options.group_config();
        match self.broker.create_group(group, config.clone()) {
            Ok(_) => {}
            // A group created earlier with other settings keeps them: settings are the group's,
            // not the member's. (Changing them needs an admin call.)
            Err(e) if e.code() == "invalid_config" && self.broker.describe_group(group).is_ok() => {
                tracing::warn!(group, "group exists with other settings; joining with the stored ones");
            }
            Err(e) => return Err(e.into()),
        }
        let member = self.broker.join(group, MemberConfig { id: None, max_in_flight: options.max_in_flight })?;
        Ok(Box::new(EmbeddedSubscription { member: Mutex::new(Some(Arc::new(member))) }))
    }

    async fn ensure_topic(&self, topic: &str, config: TopicConfig) -> Result<()> {
        self.broker.ensure_topic(topic, config)?;
        Ok(())
    }

    async fn delete_topic(&self, topic: &str) -> Result<()> {
        Ok(self.broker.delete_topic(topic)?)
    }

    async fn list_topics(&self) -> Result<Vec<String>> {
        Ok(self.broker.list_topics())
    }

    async fn group_lag(&self, group: &str) -> Result<Vec<(String, u32, u64)>> {
        let info = self.broker.describe_group(group)?;
        Ok(info.partitions.into_iter().map(|p| (p.topic, p.partition, p.lag)).collect())
    }

    async fn dlq_list(&self, group: &str, max: usize) -> Result<Vec<Event>> {
        Ok(self.broker.dlq_list(group, max)?.into_iter().map(|d| d.event).collect())
    }

    async fn dlq_replay(&self, group: &str) -> Result<usize> {
        Ok(self.broker.dlq_replay(group).await?)
    }

    async fn close(&self) -> Result<()> {
        Ok(self.broker.close().await?)
    }

    async fn describe_topic(&self, topic: &str) -> Result<TopicInfo> {
        Ok(self.broker.describe_topic(topic)?)
    }

    async fn list_groups(&self) -> Result<Vec<String>> {
        Ok(self.broker.list_groups())
    }

    async fn describe_group(&self, group: &str) -> Result<GroupInfo> {
        Ok(self.broker.describe_group(group)?)
    }

    async fn reset_group(&self, group: &str, to: StartFrom) -> Result<GroupInfo> {
        Ok(self.broker.reset_group(group, to)?)
    }

    async fn dead_letters(&self, group: &str, max: usize) -> Result<Vec<DeadLetter>> {
        Ok(self.broker.dlq_list(group, max)?)
    }

    async fn dlq_purge(&self, group: &str) -> Result<u64> {
        Ok(self.broker.dlq_purge(group).await?)
    }

    async fn read(&self, topic: &str, partition: u32, offset: u64, max: usize) -> Result<Vec<StoredEvent>> {
        Ok(self.broker.read(topic, partition, offset, max)?)
    }
}

struct EmbeddedSubscription {
    member: Mutex<Option<Arc<Member>>>,
}

impl EmbeddedSubscription {
    fn member(&self) -> Result<Arc<Member>> {
        let guard = self.member.lock().expect("member lock poisoned");
        guard.clone().ok_or_else(|| Error::new(ErrorKind::Closed, "closed", "the subscription is closed"))
    }
}

fn delivery(m: &Message) -> &DeliveryId {
    m.token.downcast_ref::<DeliveryId>().expect("an embedded message carries its delivery id")
}

#[async_trait]
impl Subscription for EmbeddedSubscription {
    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Message>> {
        let member = self.member()?;
        Ok(member
            .poll(max, wait)
            .await?
            .into_iter()
            .map(|d| {
                let id = d.id();
                Message {
                    event: d.stored.event,
                    topic: d.stored.topic,
                    partition: d.stored.partition,
                    offset: d.stored.offset,
                    attempt: d.attempt,
                    append_time_ms: d.stored.append_time_ms,
                    token: Arc::new(id),
                }
            })
            .collect())
    }

    async fn ack(&self, message: &Message) -> Result<()> {
        Ok(self.member()?.ack_id(delivery(message))?)
    }

    async fn nack(&self, message: &Message, delay: Option<Duration>, reason: &str) -> Result<()> {
        Ok(self.member()?.nack_id(delivery(message), delay, reason)?)
    }

    async fn reject(&self, message: &Message, reason: &str) -> Result<()> {
        Ok(self.member()?.reject_id(delivery(message), reason).await?)
    }

    async fn close(&self) -> Result<()> {
        drop(self.member.lock().expect("member lock poisoned").take());
        Ok(())
    }
}
