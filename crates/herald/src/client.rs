//! `connect(url)` and the client handle.

use std::sync::Arc;

use herald_core::Event;

use crate::backend::{Backend, Capabilities, TopicConfig};
use crate::consumer::Consumer;
use crate::error::{Code, Error, Result};
use crate::producer::{Producer, ProducerConfig};

/// A connection to a backend. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    backend: Arc<dyn Backend>,
}

/// How to connect, beyond the URL.
#[derive(Clone, Default)]
pub struct ConnectOptions {
    /// An API token for a server that requires one (`herald token create`), sent as
    /// `authorization: Bearer …` on every call. Keep it out of URLs (they get logged).
    pub token: Option<String>,
    /// Connect to `herald://` over TLS, trusting this CA (a PEM file) for the server's
    /// certificate.
    pub ca: Option<std::path::PathBuf>,
    /// Connect to `herald://` over TLS, trusting the system's roots (implied by `ca`).
    pub tls: bool,
    /// `nats://` only: a NATS credentials file (`.creds`: a user JWT and its NKey seed).
    pub nats_credentials: Option<std::path::PathBuf>,
    /// `nats://` only: user and password.
    pub nats_user: Option<(String, String)>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("token", &self.token.as_ref().map(|_| "…"))
            .field("ca", &self.ca)
            .field("tls", &self.tls)
            .field("nats_credentials", &self.nats_credentials)
            .field("nats_user", &self.nats_user.as_ref().map(|(u, _)| u))
            .finish()
    }
}

impl ConnectOptions {
    /// The options the environment gives: `HERALD_TOKEN`, `HERALD_CA` (a PEM file),
    /// `HERALD_TLS=1` (TLS with the system's roots), and for `nats://` `HERALD_NATS_CREDS` (a
    /// credentials file) or `HERALD_NATS_USER` with `HERALD_NATS_PASSWORD`.
    pub fn from_env() -> ConnectOptions {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        ConnectOptions {
            token: var("HERALD_TOKEN"),
            ca: var("HERALD_CA").map(Into::into),
            tls: var("HERALD_TLS").is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true")),
            nats_credentials: var("HERALD_NATS_CREDS").map(Into::into),
            nats_user: var("HERALD_NATS_USER").map(|u| (u, var("HERALD_NATS_PASSWORD").unwrap_or_default())),
        }
    }
}

/// Connects to the backend named by `url`, with the token in `HERALD_TOKEN` if set (see
/// [`connect_with`]):
/// - `mem://`: Herald's broker in this process, in a temporary directory (gone on close);
/// - `file:///path/to/dir`: Herald's broker in this process, durable in that directory;
/// - `herald://host:port`: a Herald server (`herald serve`) over gRPC;
/// - `nats://host:port[,host:port…]`: NATS JetStream (see `docs/backends.md`).
///
/// Must be called inside a Tokio runtime.
pub async fn connect(url: &str) -> Result<Client> {
    connect_with(url, ConnectOptions::from_env()).await
}

/// [`connect`] with explicit options (a token).
pub async fn connect_with(url: &str, options: ConnectOptions) -> Result<Client> {
    let invalid = |why: &str| Error::new(Code::InvalidUrl, format!("cannot connect to {url:?}: {why}"));
    let (scheme, rest) =
        url.split_once("://").ok_or_else(|| invalid("expected scheme://…, e.g. mem:// or file:///var/lib/herald"))?;
    let backend: Arc<dyn Backend> = match scheme {
        "mem" | "file" | "herald" | "nats" => open(scheme, rest, url, &options, &invalid).await?,
        other => return Err(invalid(&format!("unknown scheme {other:?}; use mem://, file://, herald:// or nats://"))),
    };
    Ok(Client { backend })
}

/// A backend left out of this build: what to enable to get it.
#[allow(dead_code)]
fn not_built(scheme: &str, feature: &str) -> Error {
    Error::new(
        Code::Unsupported,
        format!("this build of herald has no {scheme}:// backend: enable the crate feature `{feature}` of `herald`"),
    )
}

async fn open(
    scheme: &str,
    rest: &str,
    url: &str,
    options: &ConnectOptions,
    invalid: &dyn Fn(&str) -> Error,
) -> Result<Arc<dyn Backend>> {
    let _ = (rest, url, options, invalid);
    match scheme {
        #[cfg(feature = "embedded")]
        "mem" => {
            if !rest.is_empty() {
                return Err(invalid("mem:// takes no path"));
            }
            Ok(Arc::new(crate::embedded::Embedded::memory()?))
        }
        #[cfg(feature = "embedded")]
        "file" => {
            if !rest.starts_with('/') {
                return Err(invalid("file:// needs an absolute path, e.g. file:///var/lib/herald"));
            }
            Ok(Arc::new(crate::embedded::Embedded::open(&std::path::PathBuf::from(rest))?))
        }
        #[cfg(not(feature = "embedded"))]
        "mem" | "file" => Err(not_built(scheme, "embedded")),
        #[cfg(feature = "remote")]
        "herald" => {
            if rest.is_empty() || rest.contains('/') {
                return Err(invalid("herald:// needs host:port, e.g. herald://127.0.0.1:7281"));
            }
            crate::remote::connect(rest, options).await
        }
        #[cfg(not(feature = "remote"))]
        "herald" => Err(not_built(scheme, "remote")),
        #[cfg(feature = "nats")]
        "nats" => crate::nats::connect(url, options).await,
        #[cfg(not(feature = "nats"))]
        "nats" => Err(not_built(scheme, "nats")),
        _ => unreachable!("schemes are matched by connect"),
    }
}

impl Client {
    /// A client over any backend (for backends defined outside this crate).
    pub fn from_backend(backend: Arc<dyn Backend>) -> Client {
        Client { backend }
    }

    /// What the backend can do.
    pub fn capabilities(&self) -> Capabilities {
        self.backend.capabilities()
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// A producer with default settings.
    pub fn producer(&self) -> Producer {
        Producer::new(self.backend.clone(), ProducerConfig::default())
    }

    /// A producer with its own settings.
    pub fn producer_with(&self, config: ProducerConfig) -> Producer {
        Producer::new(self.backend.clone(), config)
    }

    /// A consumer in `group`; configure it, give it a handler, then `run` it.
    pub fn consumer(&self, group: &str) -> Consumer {
        Consumer::new(self.backend.clone(), group)
    }

    /// Creates a topic unless it exists.
    pub async fn ensure_topic(&self, topic: &str, config: TopicConfig) -> Result<()> {
        self.backend.ensure_topic(topic, config).await
    }

    /// Deletes a topic.
    pub async fn delete_topic(&self, topic: &str) -> Result<()> {
        self.backend.delete_topic(topic).await
    }

    /// What happened to the event at `topic`/`partition`@`offset` in each group reading the
    /// topic: every delivery, how each attempt ended (with the handler's duration and error),
    /// timeouts, dead letters, replays (backends with [`crate::Capabilities::event_history`]).
    pub async fn event_history(&self, topic: &str, partition: u32, offset: u64) -> Result<crate::EventHistory> {
        self.backend.event_history(topic, partition, offset).await
    }

    /// [`Client::event_history`] of the event with `id` on `topic` (found among the deliveries
    /// recorded: an event no group has received yet is found by its offset only).
    pub async fn event_history_by_id(&self, topic: &str, id: &str) -> Result<crate::EventHistory> {
        self.backend.event_history_by_id(topic, id).await
    }

    /// Registers `schema` (see [`crate::schema`]) as the next version of its type's schema on
    /// `topic`; `schema_incompatible` names each change that breaks the type's rule.
    pub async fn register_schema(
        &self,
        topic: &str,
        schema: &crate::schema::NewSchema,
    ) -> Result<crate::schema::SchemaVersion> {
        self.backend.register_schema(topic, schema).await
    }

    /// Who the backend takes this client for, and what it may do.
    pub async fn whoami(&self) -> Result<crate::backend::Identity> {
        self.backend.whoami().await
    }

    /// Topic names.
    pub async fn list_topics(&self) -> Result<Vec<String>> {
        self.backend.list_topics().await
    }

    /// Total lag of a group over its partitions.
    pub async fn lag(&self, group: &str) -> Result<u64> {
        Ok(self.backend.group_lag(group).await?.iter().map(|(_, _, l)| l).sum())
    }

    /// The group's dead letters, oldest first.
    pub async fn dlq_list(&self, group: &str, max: usize) -> Result<Vec<Event>> {
        self.backend.dlq_list(group, max).await
    }

    /// Replays the group's dead letters to that group only.
    pub async fn dlq_replay(&self, group: &str) -> Result<usize> {
        self.backend.dlq_replay(group).await
    }

    /// Flushes and closes the backend.
    pub async fn close(&self) -> Result<()> {
        self.backend.close().await
    }
}
