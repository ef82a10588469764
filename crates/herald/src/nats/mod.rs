//! The `nats://host:port[,host:port…][?replicas=N&replicas.<topic>=N]` backend: NATS JetStream.
//!
//! A topic is a stream `HERALD_<topic>` with one subject per partition, `herald.<topic>.<n>`;
//! events are stored in Herald's binary encoding and routed exactly as on the embedded broker.
//! A group is one durable pull consumer per partition, shared by its members through leases in
//! a KV bucket. The mapping and every promise that differs from the embedded broker are in
//! `docs/backends.md`.

mod names;
mod schemas;
mod subscription;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, kv, stream};
use async_trait::async_trait;
use futures::StreamExt;
use herald_core::codec::binary;
use herald_core::{Event, Limits};
use herald_model::schema::{Incompatibility, NewSchema, SchemaPolicy, SchemaVersion};

use crate::backend::{
    Backend, Capabilities, DeadLetter, GroupInfo, GroupPartitionInfo, Receipt, StartFrom, SubscribeOptions,
    Subscription, TopicConfig, TopicInfo,
};
use crate::error::{Code, Error, Result};
use herald_model::dead_letter;
use herald_model::storage::{self, StoredGroupConfig, StoredTopicConfig};
use herald_model::{GroupConfig, PartitionInfo};

/// Most partitions of a topic on NATS (each is a subject, and each group a consumer per partition).
pub(crate) const PARTITIONS_MAX: u32 = 256;
/// Most events in one `publish` call (their acks are awaited together).
pub(crate) const PUBLISH_BATCH_MAX: usize = 10_000;
/// Dead letters read by one `dlq_replay`.
pub(crate) const REPLAY_MAX: usize = 100_000;
/// How long a JetStream API call may take before it fails as unavailable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Stream metadata keys.
const META_TOPIC: &str = "herald.topic";
const META_CONFIG: &str = "herald.config";

pub(crate) fn unavailable(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(Code::Unavailable, format!("NATS: {what}: {e}"))
}

/// A failed connect: refused credentials and TLS trouble are not worth retrying.
fn connect_error(servers: &str, e: async_nats::ConnectError) -> Error {
    match e.kind() {
        async_nats::ConnectErrorKind::AuthorizationViolation | async_nats::ConnectErrorKind::Authentication => {
            Error::new(
                Code::Unauthenticated,
                format!(
                    "NATS at {servers} refused the credentials ({e}): give them with HERALD_NATS_CREDS (a .creds \
                     file), HERALD_NATS_USER and HERALD_NATS_PASSWORD, or HERALD_TOKEN"
                ),
            )
        }
        async_nats::ConnectErrorKind::Tls => Error::new(
            Code::InvalidUrl,
            format!(
                "NATS at {servers}: TLS failed ({e}); give the CA that signed the server's certificate (HERALD_CA)"
            ),
        ),
        _ => unavailable(&format!("connecting to {servers}"), e),
    }
}

fn publish_error(topic: &str, e: jetstream::context::PublishError) -> Error {
    match e.kind() {
        jetstream::context::PublishErrorKind::MaxPayloadExceeded => Error::new(
            Code::EventTooLarge,
            format!("publishing to {topic:?}: the event exceeds the server's max_payload: {e}"),
        ),
        // "No responders" included: JetStream may be electing a leader or starting up.
        _ => unavailable(&format!("publishing to {topic:?}"), e),
    }
}

fn topic_not_found(topic: &str) -> Error {
    Error::new(Code::TopicNotFound, format!("topic {topic:?} does not exist; create it first"))
}

fn group_not_found(group: &str) -> Error {
    Error::new(Code::GroupNotFound, format!("group {group:?} does not exist"))
}

/// The partition of an event, as on the embedded broker (one routing for every backend).
pub(crate) fn route(event: &Event, partitions: u32) -> u32 {
    herald_model::routing::route_event(event, partitions)
}

/// What publish needs to know of a topic.
#[derive(Debug, Clone)]
pub(crate) struct TopicMeta {
    pub config: TopicConfig,
}

/// Settings parsed from the URL.
#[derive(Debug, Clone, PartialEq)]
struct Settings {
    servers: Vec<String>,
    replicas: usize,
    topic_replicas: HashMap<String, usize>,
}

fn parse_url(url: &str) -> Result<Settings> {
    let invalid = |why: String| Error::new(Code::InvalidUrl, format!("cannot connect to {url:?}: {why}"));
    let rest = url.strip_prefix("nats://").ok_or_else(|| invalid("expected nats://host:port".into()))?;
    let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut servers = Vec::new();
    for h in hosts.split(',') {
        let h = h.strip_prefix("nats://").unwrap_or(h);
        let ok = h.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !ok || h.contains('/') {
            return Err(invalid(format!("{h:?} is not host:port; use nats://host:port[,host:port…]")));
        }
        servers.push(format!("nats://{h}"));
    }
    let mut settings = Settings { servers, replicas: 1, topic_replicas: HashMap::new() };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| invalid(format!("{pair:?} is not key=value")))?;
        let n: usize = match v.parse() {
            Ok(n) if (1..=5).contains(&n) => n,
            _ => return Err(invalid(format!("{k}={v}: replicas must be a number from 1 to 5 (1 or 3 in practice)"))),
        };
        match k.strip_prefix("replicas") {
            Some("") => settings.replicas = n,
            Some(t) if t.starts_with('.') && t.len() > 1 => {
                settings.topic_replicas.insert(t[1..].to_owned(), n);
            }
            _ => return Err(invalid(format!("unknown setting {k:?}; known: replicas, replicas.<topic>"))),
        }
    }
    Ok(settings)
}

/// Connects to the NATS servers named by `url`.
///
/// Credentials (`options`): a token (`HERALD_TOKEN`, as NATS's `auth_token`), user and password,
/// or a credentials file; TLS with a CA file (`HERALD_CA`) or the system's roots (`HERALD_TLS`).
pub(crate) async fn connect(url: &str, options: &crate::client::ConnectOptions) -> Result<Arc<dyn Backend>> {
    let settings = parse_url(url)?;
    let addrs: Vec<async_nats::ServerAddr> = settings
        .servers
        .iter()
        .map(|s| s.parse())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::new(Code::InvalidUrl, format!("cannot connect to {url:?}: {e}")))?;
    let mut connect = async_nats::ConnectOptions::new();
    if let Some(path) = &options.nats_credentials {
        connect = connect.credentials_file(path).await.map_err(|e| {
            Error::new(Code::InvalidArgument, format!("cannot read the NATS credentials file {}: {e}", path.display()))
        })?;
    }
    if let Some((user, password)) = &options.nats_user {
        connect = connect.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &options.token {
        connect = connect.token(token.clone());
    }
    if let Some(ca) = &options.ca {
        connect = connect.add_root_certificates(ca.clone()).require_tls(true);
    } else if options.tls {
        connect = connect.require_tls(true);
    }
    let client = connect
        .name("herald")
        .connection_timeout(Duration::from_secs(3))
        .request_timeout(Some(REQUEST_TIMEOUT))
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| Duration::from_millis((50 * attempts as u64).min(1000)))
        .connect(addrs)
        .await
        .map_err(|e| connect_error(&settings.servers.join(","), e))?;
    check_server_version(&client.server_info().version)?;
    let js = jetstream::ContextBuilder::new().timeout(REQUEST_TIMEOUT).build(client.clone());
    Ok(Arc::new(Nats {
        inner: Arc::new(Inner {
            client,
            js,
            settings,
            topics: Mutex::default(),
            send_lock: Default::default(),
            schemas: Default::default(),
        }),
    }))
}

/// Oldest nats-server the backend works with: stream metadata (where Herald keeps a topic's
/// settings) came in 2.10.
const SERVER_VERSION_MIN: (u32, u32) = (2, 10);

/// Refuses a server too old for the backend, saying which version it needs.
fn check_server_version(version: &str) -> Result<()> {
    let mut parts = version.trim_start_matches('v').split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) >= SERVER_VERSION_MIN {
        return Ok(());
    }
    let (want_major, want_minor) = SERVER_VERSION_MIN;
    Err(Error::new(
        Code::Unsupported,
        format!(
            "the NATS server is version {version}; Herald's nats:// backend needs nats-server {want_major}.{want_minor} \
             or newer (it keeps topic settings in stream metadata): upgrade the server"
        ),
    ))
}

/// The JetStream backend.
pub(crate) struct Nats {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    client: async_nats::Client,
    pub js: jetstream::Context,
    settings: Settings,
    topics: Mutex<HashMap<String, Arc<TopicMeta>>>,
    send_lock: tokio::sync::Mutex<()>,
    schemas: schemas::Cache,
}

fn stream_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(j)
        if matches!(j.error_code(), jetstream::ErrorCode::STREAM_NOT_FOUND))
}

impl Inner {
    /// A topic's settings (cached: a topic's partitions never change on NATS).
    pub(crate) async fn topic(&self, topic: &str) -> Result<Arc<TopicMeta>> {
        if let Some(m) = self.topics.lock().expect("topics lock poisoned").get(topic) {
            return Ok(m.clone());
        }
        names::check_topic(topic)?;
        let info = match self.js.get_stream(names::topic_stream(topic)).await {
            Ok(mut s) => s.info().await.map_err(|e| unavailable("reading a stream", e))?.clone(),
            Err(e) if stream_not_found(&e) => return Err(topic_not_found(topic)),
            Err(e) => return Err(unavailable(&format!("looking up topic {topic:?}"), e)),
        };
        let stored = info.config.metadata.get(META_CONFIG).ok_or_else(|| {
            Error::new(
                Code::NotAHeraldTopic,
                format!("stream {} exists but was not created by Herald (no {META_CONFIG} metadata)", info.config.name),
            )
        })?;
        let what = format!("the settings of stream {}", info.config.name);
        let config: TopicConfig = storage::read::<StoredTopicConfig>(&what, stored.as_bytes())
            .map_err(|e| Error::new(Code::Storage, e.to_string()))?
            .into();
        let meta = Arc::new(TopicMeta { config });
        self.topics.lock().expect("topics lock poisoned").insert(topic.to_owned(), meta.clone());
        Ok(meta)
    }

    /// The stored settings of a group, or `None`.
    pub(crate) async fn group_config(&self, group: &str) -> Result<Option<GroupConfig>> {
        let kv = self.groups_bucket().await?;
        match kv.get(names::esc(group)).await {
            Ok(Some(bytes)) => storage::read::<StoredGroupConfig>(&format!("the settings of group {group:?}"), &bytes)
                .map(|s| Some(s.into()))
                .map_err(|e| Error::new(Code::Storage, e.to_string())),
            Ok(None) => Ok(None),
            Err(e) => Err(unavailable(&format!("reading group {group:?}"), e)),
        }
    }

    async fn groups_bucket(&self) -> Result<kv::Store> {
        match self.js.get_key_value(names::GROUPS_BUCKET).await {
            Ok(kv) => Ok(kv),
            Err(_) => self
                .js
                .create_key_value(kv::Config {
                    bucket: names::GROUPS_BUCKET.into(),
                    history: 1,
                    storage: stream::StorageType::File,
                    num_replicas: self.settings.replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| unavailable("creating the groups bucket", e)),
        }
    }

    /// Creates the group unless it exists; returns its settings (the stored ones if it existed).
    async fn ensure_group(&self, group: &str, options: &SubscribeOptions) -> Result<GroupConfig> {
        let asked = options.group_config();
        if let Some(c) = self.group_config(group).await? {
            let differences = asked.differences(&c);
            if !differences.is_empty() {
                tracing::warn!(group, differences = %differences.join("; "),
                    "group exists with other settings; joining with the stored ones");
            }
            return Ok(c);
        }
        let config = asked;
        let kv = self.groups_bucket().await?;
        let json = storage::write(&StoredGroupConfig::from(&config));
        match kv.create(names::esc(group), json.into()).await {
            Ok(_) => Ok(config),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                self.group_config(group).await?.ok_or_else(|| group_not_found(group))
            }
            Err(e) => Err(unavailable(&format!("creating group {group:?}"), e)),
        }
    }

    /// Creates a stream unless it exists.
    async fn ensure_stream(&self, config: stream::Config) -> Result<stream::Stream> {
        match self.js.get_stream(&config.name).await {
            Ok(s) => Ok(s),
            Err(e) if stream_not_found(&e) => {
                let name = config.name.clone();
                match self.js.create_stream(config.clone()).await {
                    Ok(s) => Ok(s),
                    // Someone else created it meanwhile.
                    Err(_) if self.js.get_stream(&name).await.is_ok() => {
                        self.js.get_stream(&name).await.map_err(|e| unavailable("reading a stream", e))
                    }
                    // The server answered with a refusal (e.g. 3 replicas on a single server):
                    // a setting to change, not something to retry.
                    Err(e) => Err(match e.kind() {
                        jetstream::context::CreateStreamErrorKind::JetStream(j) => Error::new(
                            Code::InvalidConfig,
                            format!("creating stream {name}: the NATS server refused it: {j}"),
                        ),
                        _ => unavailable(&format!("creating stream {name}"), e),
                    }),
                }
            }
            Err(e) => Err(unavailable(&format!("looking up stream {}", config.name), e)),
        }
    }

    /// The group's DLQ stream (one subject, dedupe by `Nats-Msg-Id`).
    async fn dlq_stream(&self, group: &str) -> Result<stream::Stream> {
        self.ensure_stream(self.side_stream(names::dlq_stream(group), names::dlq_subject(group), group, "dlq")).await
    }

    /// The group's private replay stream.
    async fn replay_stream(&self, group: &str) -> Result<stream::Stream> {
        self.ensure_stream(self.side_stream(names::replay_stream(group), names::replay_subject(group), group, "replay"))
            .await
    }

    fn side_stream(&self, name: String, subject: String, group: &str, kind: &str) -> stream::Config {
        stream::Config {
            name,
            subjects: vec![subject],
            storage: stream::StorageType::File,
            num_replicas: self.settings.replicas,
            duplicate_window: Duration::from_secs(120),
            allow_direct: true,
            metadata: HashMap::from([
                ("herald.group".to_owned(), group.to_owned()),
                ("herald.kind".into(), kind.into()),
            ]),
            ..Default::default()
        }
    }

    /// Publishes already-built dead letters or replays to a side stream, each with its msg id.
    async fn publish_side(&self, subject: &str, events: Vec<(String, Event)>) -> Result<()> {
        let mut acks = Vec::with_capacity(events.len());
        for (id, e) in events {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", id.as_str());
            let ack = self
                .js
                .publish_with_headers(subject.to_owned(), headers, binary::encode(&e).into())
                .await
                .map_err(|e| unavailable("publishing", e))?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await.map_err(|e| unavailable("publishing", e))?;
        }
        Ok(())
    }

    /// Stored messages of a one-subject stream, oldest first, as `(sequence, event)`.
    async fn read_stream<I>(
        &self,
        stream: &stream::Stream<I>,
        from: u64,
        max: usize,
    ) -> Result<Vec<(u64, Event, i64)>> {
        let info = stream.get_info().await.map_err(|e| unavailable("reading a stream", e))?;
        let mut out = Vec::new();
        let mut seq = info.state.first_sequence.max(from);
        while out.len() < max && seq <= info.state.last_sequence && info.state.messages > 0 {
            match stream.get_raw_message(seq).await {
                Ok(m) => {
                    let time = (m.time.unix_timestamp_nanos() / 1_000_000) as i64;
                    match binary::decode_with(&m.payload, &Limits::HARD) {
                        Ok(e) => out.push((seq, e, time)),
                        Err(e) => {
                            tracing::error!(stream = %info.config.name, seq, error = %e, "skipping a message that is not a Herald event")
                        }
                    }
                }
                Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => {}
                Err(e) => return Err(unavailable("reading a message", e)),
            }
            seq += 1;
        }
        Ok(out)
    }

    /// `(topic, partition, consumer)` of every partition a group reads, its replay partition last.
    pub(crate) async fn group_partitions(&self, group: &str, config: &GroupConfig) -> Result<Vec<(String, u32)>> {
        let mut out = Vec::new();
        for t in &config.topics {
            let meta = self.topic(t).await?;
            out.extend((0..meta.config.partitions).map(|p| (t.clone(), p)));
        }
        out.push((names::replay_topic(group), 0));
        Ok(out)
    }
}

/// The consumer settings of a group on one partition.
pub(crate) fn consumer_config(
    name: String,
    filter: String,
    config: &GroupConfig,
    max_in_flight: u32,
) -> consumer::pull::Config {
    let ack_wait = Duration::from_millis(config.ack_timeout_ms);
    // A delivery not answered within the ack timeout is redelivered after the backoff: JetStream's
    // BackOff sets the ack wait of the n-th delivery, so it is ack timeout + backoff(n).
    let backoff =
        (1..=config.retry.max_attempts.min(32)).map(|n| ack_wait + config.retry.backoff_ceiling(n)).collect::<Vec<_>>();
    let deliver_policy = match config.start {
        StartFrom::Earliest => consumer::DeliverPolicy::All,
        StartFrom::Latest => consumer::DeliverPolicy::New,
        StartFrom::Timestamp(ms) => consumer::DeliverPolicy::ByStartTime { start_time: time_from_ms(ms) },
    };
    consumer::pull::Config {
        durable_name: Some(name),
        filter_subject: filter,
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait,
        backoff,
        // Unlimited: a message reaching MaxDeliver is dropped by JetStream without a trace (an
        // advisory only); the runtime dead-letters by the delivery count instead.
        max_deliver: -1,
        deliver_policy,
        max_ack_pending: i64::from(max_in_flight.max(1)),
        metadata: HashMap::from([("herald.group".to_owned(), String::new())]),
        ..Default::default()
    }
}

fn time_from_ms(ms: i64) -> async_nats::datetime::DateTime {
    async_nats::datetime::from_nanos(i128::from(ms) * 1_000_000).unwrap_or_else(|_| async_nats::datetime::now())
}

fn stream_config(topic: &str, config: &TopicConfig, replicas: usize) -> stream::Config {
    let max_age = config.retention_ms.map(Duration::from_millis).unwrap_or_default();
    let mut dup = Duration::from_millis(config.dedupe_window_ms.max(1));
    if !max_age.is_zero() {
        dup = dup.min(max_age);
    }
    stream::Config {
        name: names::topic_stream(topic),
        subjects: vec![names::topic_subjects(topic)],
        storage: stream::StorageType::File,
        num_replicas: replicas,
        max_age,
        max_bytes: config
            .retention_bytes
            .map(|b| (b.saturating_mul(u64::from(config.partitions))) as i64)
            .unwrap_or(-1),
        max_message_size: i32::try_from(config.max_event_bytes).unwrap_or(i32::MAX),
        duplicate_window: dup,
        discard: stream::DiscardPolicy::Old,
        retention: stream::RetentionPolicy::Limits,
        allow_direct: true,
        metadata: HashMap::from([
            (META_TOPIC.to_owned(), topic.to_owned()),
            (
                META_CONFIG.to_owned(),
                String::from_utf8(storage::write(&StoredTopicConfig::from(config))).expect("JSON is UTF-8"),
            ),
        ]),
        ..Default::default()
    }
}

#[async_trait]
impl Backend for Nats {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            durable: true,
            durable_attempts: true,
            admin: true,
            dedupe: true,
            key_ordering: true,
            // JetStream keeps no per-delivery record to build one from.
            event_history: false,
            // Validated by this SDK before publishing (see schemas.rs).
            schemas: true,
        }
    }

    async fn register_schema(&self, topic: &str, s: &NewSchema) -> Result<SchemaVersion> {
        let now_ms = herald_core::Timestamp::now().as_unix_millis();
        self.inner.register_schema(topic, s, now_ms).await
    }

    async fn check_schema(&self, topic: &str, s: &NewSchema) -> Result<Vec<Incompatibility>> {
        self.inner.check_schema(topic, s).await
    }

    async fn list_schemas(&self, topic: &str) -> Result<(SchemaPolicy, Vec<SchemaVersion>)> {
        self.inner.list_schemas(topic).await
    }

    async fn schema(&self, topic: &str, ty: &str, version: Option<u32>) -> Result<SchemaVersion> {
        self.inner.schema(topic, ty, version).await
    }

    async fn delete_schema(&self, topic: &str, ty: &str) -> Result<usize> {
        self.inner.delete_schema(topic, ty).await
    }

    async fn set_schema_policy(&self, topic: &str, policy: SchemaPolicy) -> Result<SchemaPolicy> {
        self.inner.set_schema_policy(topic, policy).await
    }

    async fn publish(&self, topic: &str, events: Vec<Event>) -> Result<Vec<Receipt>> {
        if events.len() > PUBLISH_BATCH_MAX {
            return Err(Error::new(
                Code::LimitExceeded,
                format!("{} events in one publish; at most {PUBLISH_BATCH_MAX} (split the batch)", events.len()),
            ));
        }
        let meta = self.inner.topic(topic).await?;
        // JetStream validates nothing: checked (and stamped) here, as the broker would.
        let events = self.inner.publish_schemas(topic).await?.check(events)?;
        let partitions = meta.config.partitions;
        let mut encoded = Vec::with_capacity(events.len());
        for e in &events {
            let bytes = binary::encode(e);
            if bytes.len() as u64 > meta.config.max_event_bytes {
                return Err(Error::new(
                    Code::EventTooLarge,
                    format!(
                        "event {:?} is {} bytes encoded; topic {topic:?} accepts at most {} (max_event_bytes)",
                        e.id(),
                        bytes.len(),
                        meta.config.max_event_bytes
                    ),
                ));
            }
            encoded.push((route(e, partitions), bytes));
        }
        let topic_arc: Arc<str> = topic.into();
        let mut acks = Vec::with_capacity(events.len());
        // A batch is sent contiguously (sending only queues on the connection; acks are awaited
        // after the lock is released).
        let sending = self.inner.send_lock.lock().await;
        for (e, (p, bytes)) in events.iter().zip(encoded) {
            let mut headers = HeaderMap::new();
            if meta.config.dedupe_window_ms > 0 {
                headers.insert("Nats-Msg-Id", names::msg_id(e.source(), e.id()).as_str());
            }
            let ack = self
                .inner
                .js
                .publish_with_headers(names::topic_subject(topic, p), headers, bytes.into())
                .await
                .map_err(|e| publish_error(topic, e))?;
            acks.push((p, ack));
        }
        drop(sending);
        let mut receipts = Vec::with_capacity(acks.len());
        for (p, ack) in acks {
            let ack = ack.await.map_err(|e| publish_error(topic, e))?;
            receipts.push(Receipt {
                topic: topic_arc.clone(),
                partition: p,
                offset: ack.sequence,
                duplicate: ack.duplicate,
            });
        }
        Ok(receipts)
    }

    async fn subscribe(&self, group: &str, options: SubscribeOptions) -> Result<Box<dyn Subscription>> {
        names::check_group(group)?;
        if options.topics.is_empty() {
            return Err(Error::new(Code::InvalidConfig, "a group must subscribe to at least one topic"));
        }
        for t in &options.topics {
            self.inner.topic(t).await?;
        }
        let config = self.inner.ensure_group(group, &options).await?;
        Ok(Box::new(subscription::NatsSubscription::start(self.inner.clone(), group, config, options).await?))
    }

    async fn ensure_topic(&self, topic: &str, config: TopicConfig) -> Result<()> {
        names::check_topic(topic)?;
        if config.partitions == 0 || config.partitions > PARTITIONS_MAX {
            return Err(Error::new(
                Code::InvalidConfig,
                format!("partitions is {}; on NATS it must be between 1 and {PARTITIONS_MAX}", config.partitions),
            ));
        }
        if config.max_event_bytes == 0 || config.max_event_bytes > 64 << 20 {
            return Err(Error::new(
                Code::InvalidConfig,
                format!("max_event_bytes is {}; it must be between 1 and {}", config.max_event_bytes, 64 << 20),
            ));
        }
        let replicas = *self.inner.settings.topic_replicas.get(topic).unwrap_or(&self.inner.settings.replicas);
        self.inner.ensure_stream(stream_config(topic, &config, replicas)).await?;
        // Cached now, so that publishing does not wait on a lookup: concurrent publishes of one
        // topic then reach the server in the order they were called.
        self.inner.topic(topic).await?;
        Ok(())
    }

    async fn delete_topic(&self, topic: &str) -> Result<()> {
        names::check_topic(topic)?;
        self.inner.topics.lock().expect("topics lock poisoned").remove(topic);
        match self.inner.js.delete_stream(names::topic_stream(topic)).await {
            Ok(_) => {
                self.inner.drop_schemas(topic).await;
                Ok(())
            }
            Err(e) if matches!(e.kind(), jetstream::context::DeleteStreamErrorKind::JetStream(j) if matches!(j.error_code(), jetstream::ErrorCode::STREAM_NOT_FOUND)) => {
                Err(topic_not_found(topic))
            }
            Err(e) => Err(unavailable(&format!("deleting topic {topic:?}"), e)),
        }
    }

    async fn list_topics(&self) -> Result<Vec<String>> {
        let mut streams = self.inner.js.streams();
        let mut out = Vec::new();
        while let Some(info) = streams.next().await {
            let info = info.map_err(|e| unavailable("listing streams", e))?;
            if let Some(t) = info.config.metadata.get(META_TOPIC) {
                out.push(t.clone());
            }
        }
        out.sort();
        Ok(out)
    }

    async fn group_lag(&self, group: &str) -> Result<Vec<(String, u32, u64)>> {
        let config = self.inner.group_config(group).await?.ok_or_else(|| group_not_found(group))?;
        let mut out = Vec::new();
        for (topic, p) in self.inner.group_partitions(group, &config).await? {
            let (stream, name) = if topic == names::replay_topic(group) {
                (names::replay_stream(group), names::consumer(group, 0))
            } else {
                (names::topic_stream(&topic), names::consumer(group, p))
            };
            let lag = match self.inner.js.get_stream_no_info(&stream).await {
                Ok(s) => match s.consumer_info(&name).await {
                    Ok(i) => i.num_pending + i.num_ack_pending as u64,
                    Err(e)
                        if matches!(
                            e.kind(),
                            jetstream::context::ConsumerInfoErrorKind::NotFound
                                | jetstream::context::ConsumerInfoErrorKind::StreamNotFound
                        ) || matches!(e.kind(), jetstream::context::ConsumerInfoErrorKind::JetStream(j)
                            if matches!(j.error_code(), jetstream::ErrorCode::CONSUMER_NOT_FOUND)) =>
                    {
                        continue;
                    }
                    Err(e) => return Err(unavailable("reading a consumer", e)),
                },
                Err(e) if stream_not_found(&e) => continue,
                Err(e) => return Err(unavailable("reading a stream", e)),
            };
            out.push((topic, p, lag));
        }
        Ok(out)
    }

    async fn dlq_list(&self, group: &str, max: usize) -> Result<Vec<Event>> {
        Ok(self.dead_letters(group, max).await?.into_iter().map(|d| d.event).collect())
    }

    async fn dlq_replay(&self, group: &str) -> Result<usize> {
        let config = self.inner.group_config(group).await?.ok_or_else(|| group_not_found(group))?;
        let dlq = self.inner.dlq_stream(group).await?;
        let letters = self.inner.read_stream(&dlq, 0, REPLAY_MAX).await?;
        let Some(&(last, _, _)) = letters.last() else { return Ok(0) };
        let mut replay = Vec::new();
        let mut keep = Vec::new();
        for (seq, e, _) in letters {
            let replays = dead_letter::replays(&e);
            if replays >= config.replays_max {
                keep.push((format!("kept:{seq}"), e));
                continue;
            }
            replay.push((format!("replay:{seq}"), dead_letter::for_replay(&e)));
        }
        let count = replay.len();
        self.inner.replay_stream(group).await?;
        self.inner.publish_side(&names::replay_subject(group), replay).await?;
        // Write first, then drop: the kept letters are stored again (after `last`) before the
        // listed ones are purged, so a failure in between shows letters twice, never none. Only
        // what was listed is removed: a dead letter stored meanwhile stays.
        self.inner.publish_side(&names::dlq_subject(group), keep).await?;
        dlq.purge().sequence(last + 1).await.map_err(|e| unavailable("purging the DLQ", e))?;
        Ok(count)
    }

    async fn close(&self) -> Result<()> {
        self.inner.client.flush().await.map_err(|e| unavailable("flushing", e))?;
        Ok(())
    }

    async fn describe_topic(&self, topic: &str) -> Result<TopicInfo> {
        let meta = self.inner.topic(topic).await?;
        let stream = self
            .inner
            .js
            .get_stream_no_info(names::topic_stream(topic))
            .await
            .map_err(|e| unavailable("reading a stream", e))?;
        let info = stream.get_info().await.map_err(|e| unavailable("reading a stream", e))?;
        // Offsets are stream sequences, shared by the topic's partitions.
        let partitions = (0..meta.config.partitions)
            .map(|p| PartitionInfo {
                partition: p,
                earliest_offset: info.state.first_sequence,
                latest_offset: info.state.last_sequence + 1,
                bytes: info.state.bytes / u64::from(meta.config.partitions),
                segments: 0,
                problem: None,
            })
            .collect();
        Ok(TopicInfo {
            name: topic.to_owned(),
            config: meta.config.clone(),
            created_ms: (info.created.unix_timestamp_nanos() / 1_000_000) as i64,
            partitions,
        })
    }

    async fn list_groups(&self) -> Result<Vec<String>> {
        let kv = self.inner.groups_bucket().await?;
        let mut keys = kv.keys().await.map_err(|e| unavailable("listing groups", e))?;
        let mut out = Vec::new();
        while let Some(k) = keys.next().await {
            let k = k.map_err(|e| unavailable("listing groups", e))?;
            out.push(unescape(&k));
        }
        out.sort();
        Ok(out)
    }

    async fn describe_group(&self, group: &str) -> Result<GroupInfo> {
        names::check_group(group)?;
        let config = self.inner.group_config(group).await?.ok_or_else(|| group_not_found(group))?;
        let mut members = Vec::new();
        let mut owners = HashMap::new();
        if let Ok(kv) = self.inner.js.get_key_value(names::lease_bucket(group)).await {
            let mut keys = kv.keys().await.map_err(|e| unavailable("listing group members", e))?;
            while let Some(k) = keys.next().await {
                let k = k.map_err(|e| unavailable("listing group members", e))?;
                if let Some(m) = k.strip_prefix("m.") {
                    members.push(m.to_owned());
                } else if let Ok(Some(owner)) = kv.get(&k).await {
                    owners.insert(k, String::from_utf8_lossy(&owner).into_owned());
                }
            }
        }
        members.sort();
        let mut partitions = Vec::new();
        for (topic, p) in self.inner.group_partitions(group, &config).await? {
            let replay = topic == names::replay_topic(group);
            let stream = if replay { names::replay_stream(group) } else { names::topic_stream(&topic) };
            let Ok(stream) = self.inner.js.get_stream_no_info(&stream).await else { continue };
            let Ok(info) = stream.consumer_info(names::consumer(group, p)).await else { continue };
            let state = stream.get_info().await.map_err(|e| unavailable("reading a stream", e))?.state;
            partitions.push(GroupPartitionInfo {
                owner: owners.get(&names::lease_key(&topic, p)).cloned(),
                topic,
                partition: p,
                committed: info.ack_floor.stream_sequence + 1,
                latest: state.last_sequence + 1,
                lag: info.num_pending + info.num_ack_pending as u64,
                in_flight: info.num_ack_pending,
            });
        }
        Ok(GroupInfo { name: group.to_owned(), config, generation: 0, members, partitions })
    }

    async fn dead_letters(&self, group: &str, max: usize) -> Result<Vec<DeadLetter>> {
        names::check_group(group)?;
        self.inner.group_config(group).await?.ok_or_else(|| group_not_found(group))?;
        let stream = match self.inner.js.get_stream_no_info(names::dlq_stream(group)).await {
            Ok(s) => s,
            Err(e) if stream_not_found(&e) => return Ok(vec![]),
            Err(e) => return Err(unavailable("reading the DLQ", e)),
        };
        let letters = self.inner.read_stream(&stream, 0, max).await?;
        Ok(letters.into_iter().map(|(seq, event, _)| DeadLetter { dlq_offset: seq, event }).collect())
    }

    async fn dlq_purge(&self, group: &str) -> Result<u64> {
        names::check_group(group)?;
        self.inner.group_config(group).await?.ok_or_else(|| group_not_found(group))?;
        let stream = self.inner.dlq_stream(group).await?;
        let r = stream.purge().await.map_err(|e| unavailable("purging the DLQ", e))?;
        Ok(r.purged)
    }
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '_' {
            match chars.next() {
                Some('d') => out.push('.'),
                _ => out.push('_'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_older_than_2_10_are_refused_with_the_version_needed() {
        for old in ["2.9.10", "v2.9.25", "1.4.1", ""] {
            let e = check_server_version(old).unwrap_err();
            assert_eq!(e.code(), Code::Unsupported, "{old}");
            assert!(e.to_string().contains("2.10 or newer"), "{e}");
        }
        for ok in ["2.10.0", "2.15.1", "3.0.0", "v2.11.4"] {
            check_server_version(ok).unwrap();
        }
    }

    #[test]
    fn urls_parse() {
        let s = parse_url("nats://127.0.0.1:4222,nats://h:5?replicas=3&replicas.orders=1").unwrap();
        assert_eq!(s.servers, vec!["nats://127.0.0.1:4222", "nats://h:5"]);
        assert_eq!(s.replicas, 3);
        assert_eq!(s.topic_replicas["orders"], 1);
        for bad in ["nats://", "nats://h", "nats://h:x", "nats://h:1?replicas=9", "nats://h:1?foo=1", "nats://h:1/x"] {
            let e = parse_url(bad).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Invalid, "{bad}");
        }
    }

    #[test]
    fn routing_matches_the_embedded_broker() {
        let e = Event::builder("t").key("customer-7").build().unwrap();
        assert_eq!(route(&e, 8), herald_model::routing::partition_for_key(b"customer-7", 8));
        assert_eq!(unescape(&names::esc("a.b_c")), "a.b_c");
    }
}
