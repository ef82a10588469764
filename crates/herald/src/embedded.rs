//! The embedded backend: Herald's own broker in this process, `mem://` (a temporary directory,
//! deleted on close) or `file:///path` (durable).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use herald_broker::{Broker, BrokerConfig, DeliveryId, Member, MemberConfig};
use herald_core::Event;

use crate::backend::{
    Backend, Capabilities, DamageSkipped, DeadLetter, EventHistory, GroupConfig, GroupInfo, Message, Receipt,
    StartFrom, StoredEvent, SubscribeOptions, Subscription, TopicConfig, TopicInfo,
};
use crate::error::{Code, Error, Result};
use crate::schema::{Incompatibility, NewSchema, SchemaPolicy, SchemaVersion};

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
            .map_err(|e| Error::new(Code::Storage, format!("creating a temporary directory: {e}")))?;
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

    /// Runs a broker call that does file I/O (fsync, reads, metadata) off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Broker) -> std::result::Result<T, herald_broker::BrokerError> + Send + 'static,
    ) -> Result<T> {
        let broker = self.broker.clone();
        tokio::task::spawn_blocking(move || f(&broker))
            .await
            .map_err(|e| Error::new(Code::Internal, format!("a broker call failed: {e}")))?
            .map_err(Error::from)
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
            event_history: true,
            schemas: true,
        }
    }

    async fn publish(&self, topic: &str, events: Vec<Event>) -> Result<Vec<Receipt>> {
        Ok(self.broker.publish_batch(topic, events).await?)
    }

    async fn subscribe(&self, group: &str, options: SubscribeOptions) -> Result<Box<dyn Subscription>> {
        // Settings belong to the group: a group created earlier with other settings keeps them,
        // and the subscription reports the ones in effect.
        let (group, config) = (group.to_owned(), options.group_config());
        let member = MemberConfig { id: None, max_in_flight: options.max_in_flight };
        let member = self.blocking(move |b| b.subscribe(&group, config, member)).await?;
        let settings = member.settings().clone();
        Ok(Box::new(EmbeddedSubscription { member: Mutex::new(Some(Arc::new(member))), settings }))
    }

    async fn ensure_topic(&self, topic: &str, config: TopicConfig) -> Result<()> {
        let topic = topic.to_owned();
        self.blocking(move |b| b.ensure_topic(&topic, config)).await.map(drop)
    }

    async fn delete_topic(&self, topic: &str) -> Result<()> {
        let topic = topic.to_owned();
        self.blocking(move |b| b.delete_topic(&topic)).await
    }

    async fn list_topics(&self) -> Result<Vec<String>> {
        Ok(self.broker.list_topics())
    }

    async fn group_lag(&self, group: &str) -> Result<Vec<(String, u32, u64)>> {
        let info = self.broker.describe_group(group)?;
        Ok(info.partitions.into_iter().map(|p| (p.topic, p.partition, p.lag)).collect())
    }

    async fn dlq_list(&self, group: &str, max: usize) -> Result<Vec<Event>> {
        Ok(self.dead_letters(group, max).await?.into_iter().map(|d| d.event).collect())
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

    async fn whoami(&self) -> Result<crate::backend::Identity> {
        // In process there is nobody to authenticate: the process may do everything.
        Ok(crate::backend::Identity {
            principal: "anonymous".into(),
            anonymous: true,
            permissions: vec!["*:*".into()],
            expires_ms: None,
        })
    }

    async fn describe_group(&self, group: &str) -> Result<GroupInfo> {
        Ok(self.broker.describe_group(group)?)
    }

    async fn reset_group(&self, group: &str, to: StartFrom) -> Result<GroupInfo> {
        let group = group.to_owned();
        self.blocking(move |b| b.reset_group(&group, to)).await
    }

    async fn skip_damaged(&self, group: &str, topic: &str, partition: u32) -> Result<DamageSkipped> {
        Ok(self.broker.skip_damaged(group, topic, partition).await?)
    }

    async fn dead_letters(&self, group: &str, max: usize) -> Result<Vec<DeadLetter>> {
        let group = group.to_owned();
        self.blocking(move |b| b.dlq_list(&group, max)).await
    }

    async fn dlq_purge(&self, group: &str) -> Result<u64> {
        Ok(self.broker.dlq_purge(group).await?)
    }

    async fn register_schema(&self, topic: &str, s: &NewSchema) -> Result<SchemaVersion> {
        let (topic, s) = (topic.to_owned(), s.clone());
        self.blocking(move |b| b.register_schema(&topic, s)).await
    }

    async fn check_schema(&self, topic: &str, s: &NewSchema) -> Result<Vec<Incompatibility>> {
        let (topic, s) = (topic.to_owned(), s.clone());
        self.blocking(move |b| b.check_schema(&topic, &s)).await
    }

    async fn list_schemas(&self, topic: &str) -> Result<(SchemaPolicy, Vec<SchemaVersion>)> {
        Ok(self.broker.list_schemas(topic)?)
    }

    async fn schema(&self, topic: &str, ty: &str, version: Option<u32>) -> Result<SchemaVersion> {
        Ok(self.broker.schema(topic, ty, version)?)
    }

    async fn delete_schema(&self, topic: &str, ty: &str) -> Result<usize> {
        let (topic, ty) = (topic.to_owned(), ty.to_owned());
        self.blocking(move |b| b.delete_schema(&topic, &ty)).await
    }

    async fn set_schema_policy(&self, topic: &str, policy: SchemaPolicy) -> Result<SchemaPolicy> {
        let topic = topic.to_owned();
        self.blocking(move |b| b.set_schema_policy(&topic, policy)).await
    }

    async fn read(&self, topic: &str, partition: u32, offset: u64, max: usize) -> Result<Vec<StoredEvent>> {
        let topic = topic.to_owned();
        self.blocking(move |b| b.read(&topic, partition, offset, max)).await
    }

    async fn event_history(&self, topic: &str, partition: u32, offset: u64) -> Result<EventHistory> {
        Ok(self.broker.event_history(topic, partition, offset).await?)
    }

    async fn event_history_by_id(&self, topic: &str, id: &str) -> Result<EventHistory> {
        Ok(self.broker.event_history_by_id(topic, id).await?)
    }
}

struct EmbeddedSubscription {
    member: Mutex<Option<Arc<Member>>>,
    settings: GroupConfig,
}

impl EmbeddedSubscription {
    fn member(&self) -> Result<Arc<Member>> {
        let guard = self.member.lock().expect("member lock poisoned");
        guard.clone().ok_or_else(|| Error::new(Code::Closed, "the subscription is closed"))
    }
}

fn delivery(m: &Message) -> &DeliveryId {
    m.token.downcast_ref::<DeliveryId>().expect("an embedded message carries its delivery id")
}

#[async_trait]
impl Subscription for EmbeddedSubscription {
    fn settings(&self) -> &GroupConfig {
        &self.settings
    }

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
                    handler_duration: None,
                    token: Arc::new(id),
                }
            })
            .collect())
    }

    async fn ack(&self, message: &Message) -> Result<()> {
        Ok(self.member()?.ack_id(delivery(message), message.handler_duration)?)
    }

    async fn nack(&self, message: &Message, delay: Option<Duration>, reason: &str) -> Result<()> {
        Ok(self.member()?.nack_id(delivery(message), delay, reason, message.handler_duration)?)
    }

    async fn reject(&self, message: &Message, reason: &str) -> Result<()> {
        Ok(self.member()?.reject_id(delivery(message), reason, message.handler_duration).await?)
    }

    async fn heartbeat(&self) -> Result<()> {
        Ok(self.member()?.heartbeat()?)
    }

    async fn close(&self) -> Result<()> {
        drop(self.member.lock().expect("member lock poisoned").take());
        Ok(())
    }
}
