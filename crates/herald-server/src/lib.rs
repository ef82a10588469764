//! `herald serve`: Herald's embedded broker behind two APIs on loopback by default:
//! - gRPC `herald.v1` ([`grpc`]; the `.proto` is `proto/herald/v1/herald.proto`);
//! - HTTP/JSON following the CloudEvents HTTP binding, Server-Sent Events for consuming,
//!   `/metrics`, `/healthz`, `/readyz` ([`http`]).
//!
//! [`Server::start`] binds both listeners and serves until [`Server::shutdown`] (or a signal, in
//! the CLI): it then stops accepting, ends the subscription streams, waits for the requests in
//! flight up to the grace period, flushes and closes the broker.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use herald_broker::Broker;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub mod audit;
pub mod auth;
mod config;
mod conn;
pub mod grpc;
pub mod http;
mod metrics;
pub mod stats;
mod tls;

pub use tls::TlsConfig;

pub use config::{ConfigError, ServerConfig, TelemetrySection};
pub use conn::{RESERVE_CONNECTIONS, raise_descriptor_limit};

/// Most concurrent gRPC streams (calls and subscriptions) on one connection: advertised to the
/// client in HTTP/2 SETTINGS, and enforced.
pub const STREAMS_PER_CONNECTION_MAX: u32 = 256;

/// Why the server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr} for {api}: {source}; pick another address with --{api}")]
    Bind {
        /// Which API.
        api: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The broker failed to open or close.
    #[error("broker: {0}")]
    Broker(#[from] herald_broker::BrokerError),
}

/// The code the server answers a broker error with: the broker's, except that a broker closing
/// under a request means this server is shutting down (retry elsewhere or later), not that the
/// client closed something.
pub(crate) fn code_of(e: &herald_broker::BrokerError) -> herald_model::Code {
    match e.code() {
        herald_model::Code::Closed => herald_model::Code::ShuttingDown,
        c => c,
    }
}

/// What the API handlers share.
pub struct AppState {
    /// The broker.
    pub broker: Broker,
    /// The configuration the server runs with.
    pub config: ServerConfig,
    /// Cancelled when the server begins shutting down: streams end.
    pub shutdown: CancellationToken,
    /// Open subscription streams (gRPC and SSE together), bounded by
    /// [`ServerConfig::max_subscriptions`].
    pub subscriptions: Arc<tokio::sync::Semaphore>,
    /// Prometheus rendering.
    pub metrics: metrics::Metrics,
    /// Admission of connections on both listeners.
    pub(crate) gate: Arc<conn::Gate>,
    /// Group members held by this server's open streams (gRPC and SSE), by (group, member id).
    pub members: Arc<LiveMembers>,
    /// Who is calling, for both APIs.
    pub guard: Arc<auth::Guard>,
    /// The audit trail.
    pub audit: Arc<audit::Audit>,
}

/// The (group, member id) pairs of the members this server's streams hold. The broker counts two
/// joins under one id as one member, and the first of them to leave would take the other's
/// membership with it: so an id held by an open stream is refused to a second one.
#[derive(Default)]
pub struct LiveMembers {
    held: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
}

impl LiveMembers {
    /// Reserves `(group, member)`; `None` when an open stream holds it already. The reservation
    /// lasts as long as the returned guard: drop the guard only after the broker's member.
    pub fn claim(self: &Arc<Self>, group: &str, member: &str) -> Option<MemberClaim> {
        let key = (group.to_owned(), member.to_owned());
        if !self.held.lock().expect("live members lock poisoned").insert(key.clone()) {
            return None;
        }
        Some(MemberClaim { live: self.clone(), key })
    }
}

/// A reserved (group, member id); released on drop.
pub struct MemberClaim {
    live: Arc<LiveMembers>,
    key: (String, String),
}

impl Drop for MemberClaim {
    fn drop(&mut self) {
        self.live.held.lock().expect("live members lock poisoned").remove(&self.key);
    }
}

/// A running server.
pub struct Server {
    state: Arc<AppState>,
    http_addr: SocketAddr,
    grpc_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
    /// The audit appender: stopped after the requests (it appends what they recorded), before
    /// the broker closes.
    audit: (CancellationToken, JoinHandle<()>),
}

impl Server {
    /// Opens the broker in `config.data_dir` and starts serving. Port 0 picks a free port; see
    /// [`Server::http_addr`] and [`Server::grpc_addr`]. Must be called inside a Tokio runtime.
    pub async fn start(config: ServerConfig) -> Result<Server, ServerError> {
        config.validate()?;
        let http_listener = TcpListener::bind(config.http).await.map_err(|source| ServerError::Bind {
            api: "http",
            addr: config.http,
            source,
        })?;
        let grpc_listener = TcpListener::bind(config.grpc).await.map_err(|source| ServerError::Bind {
            api: "grpc",
            addr: config.grpc,
            source,
        })?;
        let http_addr = http_listener.local_addr().expect("bound listener has an address");
        let grpc_addr = grpc_listener.local_addr().expect("bound listener has an address");
        let guard = auth::Guard::new(&config.auth, config.data_dir.clone(), http_addr, grpc_addr)
            .map_err(|e| ServerError::Config(ConfigError::Range(e)))?;
        let tls = match &config.tls {
            None => None,
            Some(files) => Some(Arc::new(
                tls::Tls::new(files).map_err(|e| ServerError::Config(ConfigError::Range(format!("[tls]: {e}"))))?,
            )),
        };
        let broker = Broker::open(&config.data_dir, config.broker.clone())?;
        let max_connections = conn::effective_max_connections(config.max_connections);
        let gate = conn::Gate::new(max_connections, Duration::from_millis(config.header_read_timeout_ms));
        let audit_stop = CancellationToken::new();
        let to_topic = config.auth.mode == auth::AuthMode::Token;
        if to_topic {
            // Made before anyone can call: nobody else gets to make it first, with other settings.
            audit::ensure_topic(&broker)?;
        }
        let (audit, audit_task) = audit::Audit::start(broker.clone(), to_topic, audit_stop.clone());
        let state = Arc::new(AppState {
            broker,
            subscriptions: Arc::new(tokio::sync::Semaphore::new(config.max_subscriptions)),
            config,
            shutdown: CancellationToken::new(),
            metrics: metrics::Metrics::install(),
            gate,
            members: Arc::new(LiveMembers::default()),
            guard: Arc::new(guard),
            audit,
        });
        let guard_task = tokio::spawn(watch_files(state.clone(), tls.clone(), [http_addr, grpc_addr]));
        let gate = state.gate.clone();
        let http_task = {
            let app = http::router(state.clone());
            let stop = state.shutdown.clone();
            // No Nagle on accepted connections: small answers (receipts, SSE events) go out at once.
            tokio::spawn(conn::serve_http(http_listener, app, gate.clone(), stop, tls.clone()))
        };
        let grpc_task = {
            let routes = grpc::routes(state.clone());
            let stop = state.shutdown.clone();
            tokio::spawn(async move {
                // No Nagle on accepted connections (in `conn`): a small frame (a receipt, a settle
                // result, a delivery) otherwise waits for the peer's delayed ACK.
                let incoming = conn::grpc_incoming(grpc_listener, gate, stop.clone(), tls);
                let serve = tonic::transport::Server::builder()
                    .http2_keepalive_interval(Some(Duration::from_secs(10)))
                    .http2_keepalive_timeout(Some(Duration::from_secs(20)))
                    .max_frame_size(Some(1 << 20))
                    .concurrency_limit_per_connection(STREAMS_PER_CONNECTION_MAX as usize)
                    .max_concurrent_streams(Some(STREAMS_PER_CONNECTION_MAX))
                    .add_routes(routes)
                    .serve_with_incoming_shutdown(incoming, stop.cancelled_owned());
                if let Err(e) = serve.await {
                    tracing::error!(error = %e, "grpc server failed");
                }
            })
        };
        tracing::info!(%http_addr, %grpc_addr, data_dir = %state.config.data_dir.display(),
            auth = ?state.guard.mode(), tls = state.config.tls.is_some(), "herald serving");
        Ok(Server {
            state,
            http_addr,
            grpc_addr,
            tasks: vec![http_task, grpc_task, guard_task],
            audit: (audit_stop, audit_task),
        })
    }

    /// Where the HTTP API listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Where the gRPC API listens.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The broker it serves.
    pub fn broker(&self) -> &Broker {
        &self.state.broker
    }

    /// The shared state (for embedding the routers elsewhere).
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Stops accepting, ends the streams, waits up to the grace period for requests in flight,
    /// then flushes and closes the broker.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        self.state.shutdown.cancel();
        let grace = Duration::from_millis(self.state.config.shutdown_grace_ms);
        let all = futures::future::join_all(self.tasks);
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "requests still running after the grace period");
        }
        self.audit.0.cancel();
        if tokio::time::timeout(grace, self.audit.1).await.is_err() {
            tracing::warn!("audit records still being appended after the grace period");
        }
        self.state.broker.close().await?;
        tracing::info!("herald stopped");
        Ok(())
    }

    /// Serves until `stop` completes (e.g. a signal), then shuts down.
    pub async fn run_until(self, stop: impl std::future::Future<Output = ()>) -> Result<(), ServerError> {
        stop.await;
        self.shutdown().await
    }
}

/// Re-reads the token file and the certificate files each second when they changed (a revoked
/// token stops working, a renewed certificate is served, within a second), and repeats every
/// minute that anonymous access is served beyond loopback.
async fn watch_files(state: Arc<AppState>, tls: Option<Arc<tls::Tls>>, addrs: [SocketAddr; 2]) {
    const EVERY: Duration = Duration::from_secs(1);
    const WARN_EVERY: u32 = 60;
    let exposed = state.guard.exposed_anonymously(&addrs);
    let warn = || {
        tracing::warn!(http = %addrs[0], grpc = %addrs[1],
            "ANONYMOUS ACCESS on a non-loopback address (--allow-anonymous): anyone who reaches these ports may \
             publish, read, delete topics and purge dead letters; turn on --auth token");
    };
    if exposed {
        warn();
    } else if state.guard.mode() == auth::AuthMode::Token && state.guard.live_tokens() == 0 {
        tracing::warn!(data_dir = %state.config.data_dir.display(),
            "authentication is on and no token exists: every request is refused until one is made \
             (herald token create --data-dir … --name admin --allow '*:*')");
    }
    let mut tick = tokio::time::interval(EVERY);
    let mut n = 0u32;
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (s, tls) = (state.clone(), tls.clone());
        // File reads: off the async workers.
        let _ = tokio::task::spawn_blocking(move || {
            s.guard.reload_if_changed(&s.audit);
            if let Some(t) = tls {
                t.reload_if_changed();
            }
        })
        .await;
        n += 1;
        if exposed && n.is_multiple_of(WARN_EVERY) {
            warn();
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// The data directory a server uses by default.
pub fn default_data_dir() -> PathBuf {
    PathBuf::from("./herald-data")
}
