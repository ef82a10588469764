//! The `herald://host:port` backend: a Herald server (`herald serve`) over gRPC `herald.v1`.
//!
//! - Unary calls (publish, admin, browse) go over one lazily connecting channel: nothing is
//!   dialled until the first call, and after the server went away the next call dials again, so
//!   the client recovers by itself when the server comes back. Failures to reach the server are
//!   [`ErrorKind::Unavailable`] (retryable: the producer retries them; event ids make a retried
//!   publish safe). Idempotent calls are retried a few times within a second before failing.
//! - A subscription is one `Subscribe` stream kept by a background task (see `subscription.rs`),
//!   which re-joins the group when the stream breaks.
//!
//! Errors keep the server's stable code (`topic_not_found`, `busy`, …) and message.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use herald_core::Event;
use herald_proto::v1;
use herald_proto::v1::admin_client::AdminClient;
use herald_proto::v1::events_client::EventsClient;
use prost::Message as _;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use crate::backend::{
    Backend, Capabilities, DamageSkipped, DeadLetter, EventHistory, GroupInfo, Receipt, StartFrom, StoredEvent,
    SubscribeOptions, Subscription, TopicConfig, TopicInfo,
};
use crate::error::{Code, Error, ErrorKind, Result};
use crate::schema::{Incompatibility, NewSchema, SchemaPolicy, SchemaVersion};

mod subscription;

/// How long dialling the server may take before a call fails as unavailable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// HTTP/2 pings on an otherwise quiet connection, so that a server that vanished without closing
/// the connection (a power cut, a partition) is noticed.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// A ping unanswered this long closes the connection.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest a unary call may take before it fails as unavailable (its outcome is then unknown:
/// a publish retried after this is deduplicated by event id).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts of an idempotent call that fails to reach the server, and the pause before the
/// first retry (quadrupled each time): a call made just as a connection broke still succeeds,
/// while a server that is down is reported within a second.
const IDEMPOTENT_ATTEMPTS: u32 = 3;
const IDEMPOTENT_RETRY_PAUSE: Duration = Duration::from_millis(50);
/// A publish is sent in requests of at most this many events…
const PUBLISH_EVENTS_MAX: usize = 1000;
/// …and about this many bytes (a single larger event goes alone): well below the server's
/// default `max_request_bytes` (16 MiB).
const PUBLISH_BYTES_TARGET: usize = 4 << 20;
/// Largest message accepted from the server: one event at the hard size limit plus its envelope
/// (the server never sends more; see `herald_server::grpc::ENCODE_BYTES_MAX`).
const DECODE_BYTES_MAX: usize = herald_core::Limits::EVENT_BYTES_HARD_MAX + (1 << 20);

/// The channel every call goes over: the connection, with the caller's token added to each call.
pub(crate) type Wire = tonic::service::interceptor::InterceptedService<Channel, Credentials>;

/// Adds `authorization: Bearer <token>` to every call (when there is a token).
#[derive(Clone)]
pub(crate) struct Credentials(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Credentials {
    fn call(&mut self, mut request: tonic::Request<()>) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

/// A Herald server over gRPC.
pub(crate) struct Remote {
    addr: Arc<str>,
    events: EventsClient<Wire>,
    admin: AdminClient<Wire>,
    /// Cancelled by `close`: later calls fail with `closed`, subscriptions leave their groups.
    closed: CancellationToken,
}

/// Connects to the server at `addr` (`host:port`). Nothing is dialled yet: the first call does,
/// and reports a server that cannot be reached.
pub(crate) async fn connect(addr: &str, options: &crate::client::ConnectOptions) -> Result<Arc<dyn Backend>> {
    Ok(Arc::new(Remote::new(addr, options)?))
}

impl Remote {
    fn new(addr: &str, options: &crate::client::ConnectOptions) -> Result<Remote> {
        let invalid =
            |why: String| Error::new(Code::InvalidUrl, format!("cannot connect to \"herald://{addr}\": {why}"));
        let (host, port) =
            addr.rsplit_once(':').ok_or_else(|| invalid("expected host:port, e.g. herald://127.0.0.1:7281".into()))?;
        if host.is_empty() {
            return Err(invalid("the host is empty; expected host:port, e.g. herald://127.0.0.1:7281".into()));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err(invalid(format!("the port {port:?} is not a number from 1 to 65535"))),
        }
        let tls = options.tls || options.ca.is_some();
        let scheme = if tls { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| invalid(format!("not a valid address: {e}")))?;
        if tls {
            let domain = host.trim_start_matches('[').trim_end_matches(']');
            let mut config = tonic::transport::ClientTlsConfig::new().domain_name(domain);
            config = match &options.ca {
                Some(path) => {
                    let pem = std::fs::read(path).map_err(|e| {
                        Error::new(Code::InvalidArgument, format!("cannot read the CA file {}: {e}", path.display()))
                    })?;
                    config.ca_certificate(tonic::transport::Certificate::from_pem(pem))
                }
                None => config.with_native_roots(),
            };
            endpoint = endpoint.tls_config(config).map_err(|e| invalid(format!("cannot set up TLS: {e}")))?;
        }
        let endpoint = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        let channel = endpoint.connect_lazy();
        let loopback = host == "localhost"
            || host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if options.token.is_some() && !tls && !loopback {
            tracing::warn!(
                addr,
                "sending a token over plaintext to a server beyond loopback: anyone on the path can \
                read it; connect with TLS (--ca/HERALD_CA or --tls)"
            );
        }
        let credentials = match options.token.as_deref() {
            None => Credentials(None),
            Some(t) => {
                let mut v: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
                    format!("Bearer {t}").parse().map_err(|_| {
                        Error::new(
                            Code::InvalidArgument,
                            "the token holds characters a header cannot carry; copy it again",
                        )
                    })?;
                // Kept out of HTTP/2 header compression tables and debug output.
                v.set_sensitive(true);
                Credentials(Some(v))
            }
        };
        Ok(Remote {
            addr: addr.into(),
            events: EventsClient::with_interceptor(channel.clone(), credentials.clone())
                .max_decoding_message_size(DECODE_BYTES_MAX),
            admin: AdminClient::with_interceptor(channel, credentials).max_decoding_message_size(DECODE_BYTES_MAX),
            closed: CancellationToken::new(),
        })
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.is_cancelled() {
            return Err(Error::new(Code::Closed, format!("the client of herald://{} is closed", self.addr)));
        }
        Ok(())
    }

    /// One call, bounded by [`CALL_TIMEOUT`], its failure turned into an [`Error`].
    async fn once<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T> {
        self.check_open()?;
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(status_error(&self.addr, what, &s)),
            Err(_) => Err(Error::new(
                Code::Unavailable,
                format!(
                    "herald://{}: {what}: no answer within {} s; the server is overloaded or unreachable",
                    self.addr,
                    CALL_TIMEOUT.as_secs()
                ),
            )),
        }
    }

    /// An idempotent call: retried a few times when the server could not be reached.
    async fn idempotent<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut pause = IDEMPOTENT_RETRY_PAUSE;
        let mut attempt = 1;
        loop {
            match self.once(what, call()).await {
                Err(e) if matches!(e.code(), Code::Unavailable) && attempt < IDEMPOTENT_ATTEMPTS => {
                    tracing::debug!(addr = %self.addr, what, error = %e, "call failed to reach the server; retrying");
                    attempt += 1;
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = self.closed.cancelled() => return Err(e),
                    }
                    pause *= 4;
                }
                other => return other,
            }
        }
    }

    async fn publish_one(&self, topic: &str, events: Vec<v1::Event>) -> Result<Vec<Receipt>> {
        let n = events.len();
        let request = v1::PublishRequest { topic: topic.to_owned(), events };
        let mut client = self.events.clone();
        let response = self.once(&format!("publish to {topic:?}"), client.publish(request)).await?;
        if response.receipts.len() != n {
            return Err(Error::new(
                Code::Remote,
                format!(
                    "herald://{}: publish to {topic:?}: the server answered {} receipts for {n} events",
                    self.addr,
                    response.receipts.len()
                ),
            ));
        }
        Ok(response.receipts.into_iter().map(herald_proto::receipt_from_proto).collect())
    }
}

/// Splits encoded events into publish requests of at most [`PUBLISH_EVENTS_MAX`] events and about
/// [`PUBLISH_BYTES_TARGET`] bytes, keeping their order.
fn split_batch(events: Vec<v1::Event>) -> Vec<Vec<v1::Event>> {
    let mut out = Vec::new();
    let mut batch = Vec::new();
    let mut bytes = 0;
    for e in events {
        let len = e.encoded_len();
        if !batch.is_empty() && (batch.len() >= PUBLISH_EVENTS_MAX || bytes + len > PUBLISH_BYTES_TARGET) {
            out.push(std::mem::take(&mut batch));
            bytes = 0;
        }
        bytes += len;
        batch.push(e);
    }
    if !batch.is_empty() {
        out.push(batch);
    }
    out
}

/// An error from a code and message the server sent (a status or a `SettleResult`).
fn coded_error(addr: &str, what: &str, code: Code, message: &str) -> Error {
    Error::new(code, format!("herald://{addr}: {what}: {message}"))
}

/// A failed call as an [`Error`]. A status from a Herald server carries its stable code; one
/// without (the connection failed, the stream broke, no server there) is a transport failure,
/// retryable, except for the few gRPC codes that say the request itself is wrong.
fn status_error(addr: &str, what: &str, s: &tonic::Status) -> Error {
    if s.metadata().contains_key(herald_proto::CODE_KEY) {
        return coded_error(addr, what, herald_proto::code_of(s), s.message());
    }
    let mut detail = s.message().to_owned();
    let mut source = std::error::Error::source(s);
    while let Some(e) = source {
        let text = e.to_string();
        if !detail.contains(&text) {
            detail = format!("{detail}: {text}");
        }
        source = e.source();
    }
    if let Some(http) = non_grpc_answer(s.message()) {
        // Something answered, but not a gRPC server: retrying will not change that.
        return Error::new(
            Code::InvalidUrl,
            format!(
                "herald://{addr}: {what}: what listens there is not a Herald gRPC server (it answered HTTP {http}): \
                 point herald:// at the server's gRPC address (`herald serve --grpc`, port 7281 by default), not \
                 its HTTP API ({detail})"
            ),
        );
    }
    let code = herald_proto::code_of(s);
    let certificate =
        ["certificate", "UnknownIssuer", "CertNotValid", "NotValidForName"].iter().any(|w| detail.contains(w));
    if certificate {
        // Retrying cannot make an untrusted certificate trusted.
        return Error::new(
            Code::InvalidUrl,
            format!(
                "herald://{addr}: {what}: the server's TLS certificate is not trusted ({detail}); give the CA that \
                 signed it (--ca or HERALD_CA), and connect by the name the certificate is for"
            ),
        );
    }
    let hint = if code.kind() == ErrorKind::Unavailable {
        "; is the Herald server (`herald serve`) running and listening there? Retry once it is (a server with \
         TLS closes plaintext connections at once: connect with --ca/HERALD_CA or --tls)"
    } else {
        ""
    };
    Error::new(code, format!("herald://{addr}: {what}: {detail} (gRPC {:?}){hint}", s.code()))
}

/// The HTTP status of an answer that was not gRPC, read from tonic's message for it: `Some` when
/// a peer answered with a status other than 200 and other than those a proxy in front of a
/// Herald server gives while it is away (429, 502, 503, 504: still retryable).
fn non_grpc_answer(message: &str) -> Option<u16> {
    const MARKERS: [&str; 2] =
        ["while receiving response with status: ", "grpc-status header missing, mapped from HTTP status code "];
    let status = MARKERS.iter().find_map(|m| {
        let rest = &message[message.find(m)? + m.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u16>().ok()
    })?;
    (!matches!(status, 200 | 429 | 502 | 503 | 504)).then_some(status)
}

#[async_trait]
impl Backend for Remote {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            durable: true,
            durable_attempts: true,
            admin: true,
            dedupe: true,
            key_ordering: true,
            event_history: true,
            schemas: true,
        }
    }

    async fn publish(&self, topic: &str, events: Vec<Event>) -> Result<Vec<Receipt>> {
        self.check_open()?;
        let mut receipts = Vec::with_capacity(events.len());
        for batch in split_batch(events.iter().map(herald_proto::event_to_proto).collect()) {
            receipts.extend(self.publish_one(topic, batch).await?);
        }
        Ok(receipts)
    }

    async fn subscribe(&self, group: &str, options: SubscribeOptions) -> Result<Box<dyn Subscription>> {
        self.check_open()?;
        if options.max_in_flight == 0 {
            return Err(Error::new(
                Code::InvalidConfig,
                "max_in_flight is 0; a subscription must be able to hold at least one event",
            ));
        }
        let join = v1::Join {
            group: group.to_owned(),
            settings: Some(herald_proto::group_config_to_proto(&options.group_config())),
            max_in_flight: options.max_in_flight,
            member_id: String::new(),
        };
        let sub = subscription::RemoteSubscription::open(
            self.addr.clone(),
            self.events.clone(),
            join,
            self.closed.child_token(),
        )
        .await?;
        Ok(Box::new(sub))
    }

    async fn ensure_topic(&self, topic: &str, config: TopicConfig) -> Result<()> {
        let request = v1::CreateTopicRequest {
            name: topic.to_owned(),
            config: Some(herald_proto::topic_config_to_proto(&config)),
            if_not_exists: true,
        };
        let r = self
            .idempotent(&format!("create topic {topic:?}"), || {
                let (mut c, r) = (self.admin.clone(), request.clone());
                async move { c.create_topic(r).await }
            })
            .await;
        match r {
            // As on the embedded backend: a topic that exists (with whatever settings) is fine.
            Err(e) if matches!(e.code(), Code::TopicExists) => Ok(()),
            other => other.map(drop),
        }
    }

    async fn delete_topic(&self, topic: &str) -> Result<()> {
        let mut c = self.admin.clone();
        let request = v1::TopicName { name: topic.to_owned() };
        self.once(&format!("delete topic {topic:?}"), c.delete_topic(request)).await.map(drop)
    }

    async fn list_topics(&self) -> Result<Vec<String>> {
        let r = self
            .idempotent("list topics", || {
                let mut c = self.admin.clone();
                async move { c.list_topics(v1::ListTopicsRequest {}).await }
            })
            .await?;
        Ok(r.names)
    }

    async fn group_lag(&self, group: &str) -> Result<Vec<(String, u32, u64)>> {
        let info = self.describe_group(group).await?;
        Ok(info.partitions.into_iter().map(|p| (p.topic, p.partition, p.lag)).collect())
    }

    async fn dlq_list(&self, group: &str, max: usize) -> Result<Vec<Event>> {
        Ok(self.dead_letters(group, max).await?.into_iter().map(|d| d.event).collect())
    }

    async fn dlq_replay(&self, group: &str) -> Result<usize> {
        let mut c = self.admin.clone();
        let request = v1::GroupName { group: group.to_owned() };
        let n = self.once(&format!("replay the dead letters of {group:?}"), c.dlq_replay(request)).await?;
        Ok(usize::try_from(n.count).unwrap_or(usize::MAX))
    }

    async fn close(&self) -> Result<()> {
        self.closed.cancel();
        Ok(())
    }

    async fn describe_topic(&self, topic: &str) -> Result<TopicInfo> {
        let request = v1::TopicName { name: topic.to_owned() };
        let info = self
            .idempotent(&format!("describe topic {topic:?}"), || {
                let (mut c, r) = (self.admin.clone(), request.clone());
                async move { c.describe_topic(r).await }
            })
            .await?;
        Ok(herald_proto::topic_info_from_proto(info))
    }

    async fn whoami(&self) -> Result<crate::backend::Identity> {
        let r = self
            .idempotent("who am I", || {
                let mut c = self.admin.clone();
                async move { c.who_am_i(v1::Empty {}).await }
            })
            .await?;
        Ok(crate::backend::Identity {
            principal: r.principal,
            anonymous: r.anonymous,
            permissions: r.permissions,
            expires_ms: r.expires_ms,
        })
    }

    async fn list_groups(&self) -> Result<Vec<String>> {
        let r = self
            .idempotent("list groups", || {
                let mut c = self.admin.clone();
                async move { c.list_groups(v1::Empty {}).await }
            })
            .await?;
        Ok(r.names)
    }

    async fn describe_group(&self, group: &str) -> Result<GroupInfo> {
        let request = v1::GroupName { group: group.to_owned() };
        let info = self
            .idempotent(&format!("describe group {group:?}"), || {
                let (mut c, r) = (self.admin.clone(), request.clone());
                async move { c.describe_group(r).await }
            })
            .await?;
        Ok(herald_proto::group_info_from_proto(info))
    }

    async fn reset_group(&self, group: &str, to: StartFrom) -> Result<GroupInfo> {
        let mut c = self.admin.clone();
        let request = v1::ResetGroupRequest { group: group.to_owned(), to: Some(herald_proto::position_to_proto(to)) };
        let info = self.once(&format!("reset group {group:?}"), c.reset_group(request)).await?;
        Ok(herald_proto::group_info_from_proto(info))
    }

    async fn register_schema(&self, topic: &str, s: &NewSchema) -> Result<SchemaVersion> {
        let request = herald_proto::new_schema_to_proto(topic, s).map_err(invalid)?;
        let mut c = self.admin.clone();
        let what = format!("register a schema of {:?} on {topic}", s.ty);
        let v = self.once(&what, c.register_schema(request)).await?;
        herald_proto::schema_version_from_proto(v).map_err(invalid)
    }

    async fn check_schema(&self, topic: &str, s: &NewSchema) -> Result<Vec<Incompatibility>> {
        let request = herald_proto::new_schema_to_proto(topic, s).map_err(invalid)?;
        let what = format!("check a schema of {:?} on {topic}", s.ty);
        let r = self
            .idempotent(&what, || {
                let mut c = self.admin.clone();
                let request = request.clone();
                async move { c.check_schema(request).await }
            })
            .await?;
        Ok(r.problems.into_iter().map(herald_proto::schema_problem_from_proto).collect())
    }

    async fn list_schemas(&self, topic: &str) -> Result<(SchemaPolicy, Vec<SchemaVersion>)> {
        let r = self
            .idempotent(&format!("list the schemas of {topic}"), || {
                let mut c = self.admin.clone();
                let request = v1::TopicName { name: topic.to_owned() };
                async move { c.list_schemas(request).await }
            })
            .await?;
        let policy = herald_proto::schema_policy_from_proto(r.policy.unwrap_or_default()).map_err(invalid)?;
        let schemas = r
            .schemas
            .into_iter()
            .map(herald_proto::schema_version_from_proto)
            .collect::<std::result::Result<_, _>>()
            .map_err(invalid)?;
        Ok((policy, schemas))
    }

    async fn schema(&self, topic: &str, ty: &str, version: Option<u32>) -> Result<SchemaVersion> {
        let v = self
            .idempotent(&format!("get the schema of {ty:?} on {topic}"), || {
                let mut c = self.admin.clone();
                let request = v1::SchemaRef { topic: topic.to_owned(), r#type: ty.to_owned(), version };
                async move { c.get_schema(request).await }
            })
            .await?;
        herald_proto::schema_version_from_proto(v).map_err(invalid)
    }

    async fn delete_schema(&self, topic: &str, ty: &str) -> Result<usize> {
        let mut c = self.admin.clone();
        let request = v1::SchemaRef { topic: topic.to_owned(), r#type: ty.to_owned(), version: None };
        let n = self.once(&format!("delete the schema of {ty:?} on {topic}"), c.delete_schema(request)).await?;
        Ok(n.count as usize)
    }

    async fn set_schema_policy(&self, topic: &str, policy: SchemaPolicy) -> Result<SchemaPolicy> {
        let mut c = self.admin.clone();
        let request = v1::SchemaPolicyChange {
            topic: topic.to_owned(),
            policy: Some(herald_proto::schema_policy_to_proto(&policy)),
        };
        let p = self.once(&format!("set the schema policy of {topic}"), c.set_schema_policy(request)).await?;
        herald_proto::schema_policy_from_proto(p).map_err(invalid)
    }

    async fn asyncapi(&self) -> Result<serde_json::Value> {
        let r = self
            .idempotent("get the AsyncAPI document", || {
                let mut c = self.admin.clone();
                async move { c.async_api(v1::Empty {}).await }
            })
            .await?;
        serde_json::from_str(&r.json).map_err(|e| invalid(format!("the AsyncAPI document is not JSON: {e}")))
    }

    async fn skip_damaged(&self, group: &str, topic: &str, partition: u32) -> Result<DamageSkipped> {
        let mut c = self.admin.clone();
        let request = v1::SkipDamagedRequest { group: group.to_owned(), topic: topic.to_owned(), partition };
        let skipped = self
            .once(&format!("skip damage of group {group:?} in {topic}/{partition}"), c.skip_damaged(request))
            .await?;
        Ok(herald_proto::damage_skipped_from_proto(skipped))
    }

    async fn dead_letters(&self, group: &str, max: usize) -> Result<Vec<DeadLetter>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let request = v1::DlqListRequest { group: group.to_owned(), max: u32::try_from(max).unwrap_or(u32::MAX) };
        let what = format!("list the dead letters of {group:?}");
        let r = self
            .idempotent(&what, || {
                let (mut c, r) = (self.admin.clone(), request.clone());
                async move { c.dlq_list(r).await }
            })
            .await?;
        r.dead_letters
            .into_iter()
            .map(|d| {
                let event = herald_proto::event_from_proto(d.event.unwrap_or_default(), &herald_core::Limits::HARD)
                    .map_err(|e| undecodable(&self.addr, &what, e))?;
                Ok(DeadLetter { dlq_offset: d.dlq_offset, event })
            })
            .collect()
    }

    async fn dlq_purge(&self, group: &str) -> Result<u64> {
        let mut c = self.admin.clone();
        let request = v1::GroupName { group: group.to_owned() };
        Ok(self.once(&format!("purge the dead letters of {group:?}"), c.dlq_purge(request)).await?.count)
    }

    async fn read(&self, topic: &str, partition: u32, offset: u64, max: usize) -> Result<Vec<StoredEvent>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let request = v1::ReadRequest {
            topic: topic.to_owned(),
            partition,
            offset,
            limit: u32::try_from(max).unwrap_or(u32::MAX),
        };
        let what = format!("read {topic:?} partition {partition} from offset {offset}");
        let r = self
            .idempotent(&what, || {
                let (mut c, r) = (self.events.clone(), request.clone());
                async move { c.read(r).await }
            })
            .await?;
        r.events
            .into_iter()
            .map(|s| herald_proto::stored_from_proto(s).map_err(|e| undecodable(&self.addr, &what, e)))
            .collect()
    }

    async fn event_history(&self, topic: &str, partition: u32, offset: u64) -> Result<EventHistory> {
        let request = v1::EventHistoryRequest { topic: topic.to_owned(), partition, offset, id: String::new() };
        self.history(request, format!("history of {topic}/{partition}@{offset}")).await
    }

    async fn event_history_by_id(&self, topic: &str, id: &str) -> Result<EventHistory> {
        let request = v1::EventHistoryRequest { topic: topic.to_owned(), partition: 0, offset: 0, id: id.to_owned() };
        self.history(request, format!("history of event {id:?} in {topic:?}")).await
    }
}

impl Remote {
    async fn history(&self, request: v1::EventHistoryRequest, what: String) -> Result<EventHistory> {
        let r = self
            .idempotent(&what, || {
                let (mut c, r) = (self.events.clone(), request.clone());
                async move { c.event_history(r).await }
            })
            .await?;
        Ok(herald_proto::event_history_from_proto(r))
    }
}

/// The server sent an event this client cannot decode (a newer server, or a bug).
fn undecodable(addr: &str, what: &str, e: herald_core::EventError) -> Error {
    Error::new(Code::CorruptEvent, format!("herald://{addr}: {what}: the server sent an invalid event: {e}"))
}

/// An answer or a request that does not convert.
fn invalid(e: String) -> Error {
    Error::new(Code::InvalidArgument, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(bytes: usize) -> v1::Event {
        v1::Event {
            id: "x".into(),
            source: "/s".into(),
            r#type: "t".into(),
            data: vec![0; bytes].into(),
            ..Default::default()
        }
    }

    #[test]
    fn publish_requests_are_split_by_count_and_bytes() {
        let sizes = |b: &[Vec<v1::Event>]| b.iter().map(Vec::len).collect::<Vec<_>>();
        assert_eq!(sizes(&split_batch((0..2500).map(|_| event(10)).collect())), vec![1000, 1000, 500]);
        // 1 MiB events: three fit under the byte target, the fourth starts a new request.
        let big = split_batch((0..9).map(|_| event(1 << 20)).collect());
        assert_eq!(sizes(&big), vec![3, 3, 3]);
        assert!(big.iter().all(|b| b.iter().map(|e| e.encoded_len()).sum::<usize>() <= PUBLISH_BYTES_TARGET));
        // An event above the target still goes, alone.
        assert_eq!(sizes(&split_batch(vec![event(10), event(5 << 20), event(10)])), vec![1, 1, 1]);
        assert!(split_batch(Vec::new()).is_empty());
    }

    #[test]
    fn codes_from_the_server_keep_their_kind_and_unknown_ones_are_remote() {
        for &c in Code::ALL {
            let e = coded_error("h:1", "x", herald_proto::code_of(&herald_proto::status(c, "m")), "m");
            assert_eq!((e.code(), e.kind(), e.is_retryable()), (c, c.kind(), c.is_retryable()), "{c}");
        }
        let mut s = tonic::Status::internal("m");
        s.metadata_mut().insert(herald_proto::CODE_KEY, "something_new".parse().unwrap());
        assert_eq!(status_error("h:1", "x", &s).code(), Code::Remote);
    }

    #[test]
    fn statuses_keep_the_server_code_and_transport_failures_are_retryable() {
        let s = herald_proto::status(Code::TopicNotFound, "topic \"t\" does not exist");
        let e = status_error("h:1", "publish", &s);
        assert_eq!((e.kind(), e.code()), (ErrorKind::NotFound, Code::TopicNotFound));
        assert!(e.to_string().contains("topic \"t\" does not exist"), "{e}");
        let e = status_error("h:1", "publish", &tonic::Status::unavailable("tcp connect error"));
        assert_eq!((e.kind(), e.code()), (ErrorKind::Unavailable, Code::Unavailable));
        assert!(e.is_retryable());
        assert!(e.to_string().contains("herald serve"), "{e}");
        let e = status_error("h:1", "publish", &tonic::Status::unknown("h2 protocol error"));
        assert!(e.is_retryable(), "{e}");
        let e = status_error("h:1", "publish", &tonic::Status::unimplemented("no such method"));
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        // A peer that answers HTTP but not gRPC (tonic's wording for it) is a wrong address.
        for message in [
            "protocol error: received message with invalid compression flag: 123 (valid flags are 0 and 1) while \
             receiving response with status: 404 Not Found",
            "grpc-status header missing, mapped from HTTP status code 400",
        ] {
            let e = status_error("h:1", "publish", &tonic::Status::internal(message));
            assert_eq!((e.kind(), e.code()), (ErrorKind::Invalid, Code::InvalidUrl), "{message}");
            assert!(e.to_string().contains("gRPC address"), "{e}");
        }
        // A proxy saying the server is away is still worth retrying.
        let s = tonic::Status::unavailable("grpc-status header missing, mapped from HTTP status code 503");
        assert!(status_error("h:1", "publish", &s).is_retryable());
    }

    #[tokio::test]
    async fn bad_addresses_are_refused_with_what_to_do() {
        for addr in ["nohost", ":7281", "h:0", "h:99999", "h:port"] {
            let e = Remote::new(addr, &Default::default()).err().unwrap_or_else(|| panic!("{addr} accepted"));
            assert_eq!((e.kind(), e.code()), (ErrorKind::Invalid, Code::InvalidUrl), "{addr}");
            assert!(e.to_string().contains(addr), "{e}");
        }
        Remote::new("127.0.0.1:7281", &Default::default()).unwrap();
        Remote::new("[::1]:7281", &Default::default()).unwrap();
        Remote::new("localhost:7281", &Default::default()).unwrap();
    }
}
