//! Connection hygiene for both listeners: a cap on open connections (`max_connections`, shared by
//! HTTP and gRPC), a deadline for a client to send something (`header_read_timeout_ms`: a
//! request head over HTTP — for a new connection, a slow one and one idle between requests
//! alike — and the HTTP/2 preface over gRPC), and a reserve so that health checks and admin keep
//! working when the cap or the process's descriptor limit is reached.
//!
//! The reserve: [`RESERVE_CONNECTIONS`] HTTP connections beyond the cap, and as many spare
//! descriptors (`/dev/null` held open) that are let go when `accept` fails for lack of
//! descriptors, so that one more connection can be taken. A reserve connection is answered only
//! on health, metrics and admin routes; anything else gets 503 `busy`.

use std::convert::Infallible;
use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use herald_model::Code;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::http::ApiError;

/// HTTP connections (and spare descriptors) kept for health checks and admin.
pub const RESERVE_CONNECTIONS: usize = 16;
/// The header-read timeout of a reserve connection (at most): health checks send at once.
const RESERVE_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(1);
/// How long an accept loop waits after `accept` failed (for lack of descriptors, say) before
/// trying again, when no spare descriptor is left.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);
/// Connections that passed the gRPC preface check and wait for tonic to take them.
const GRPC_HANDOFF_MAX: usize = 64;

/// Admission of connections: the shared cap, the HTTP reserve, the spare descriptors.
pub(crate) struct Gate {
    regular: Arc<Semaphore>,
    reserve: Arc<Semaphore>,
    spares: Mutex<Vec<File>>,
    header_read_timeout: Duration,
    max_connections: usize,
}

/// What a connection may do.
enum Admitted {
    /// Everything.
    Regular(OwnedSemaphorePermit),
    /// Health, metrics and admin only.
    Reserve(Option<OwnedSemaphorePermit>),
}

impl Gate {
    pub(crate) fn new(max_connections: usize, header_read_timeout: Duration) -> Arc<Gate> {
        let spares = (0..RESERVE_CONNECTIONS).filter_map(|_| File::open("/dev/null").ok()).collect();
        Arc::new(Gate {
            regular: Arc::new(Semaphore::new(max_connections)),
            reserve: Arc::new(Semaphore::new(RESERVE_CONNECTIONS)),
            spares: Mutex::new(spares),
            header_read_timeout,
            max_connections,
        })
    }

    /// Connections open now (regular and reserve).
    pub(crate) fn open(&self) -> usize {
        (self.max_connections - self.regular.available_permits())
            + (RESERVE_CONNECTIONS - self.reserve.available_permits())
    }

    /// Accepts the next connection. When `accept` fails for lack of descriptors, one spare is let
    /// go to take the connection as a reserve one (`spare_used`); otherwise it waits a little and
    /// tries again.
    async fn accept(&self, listener: &TcpListener) -> (TcpStream, SocketAddr, bool) {
        loop {
            match listener.accept().await {
                Ok((tcp, peer)) => return (tcp, peer, false),
                Err(e) if out_of_descriptors(&e) => {
                    let spare = self.spares.lock().expect("spares lock poisoned").pop();
                    if spare.is_some() {
                        drop(spare);
                        if let Ok((tcp, peer)) = listener.accept().await {
                            tracing::warn!(%peer, "out of file descriptors: a spare one serves this connection (health and admin only)");
                            return (tcp, peer, true);
                        }
                        // Nothing taken: the spare goes back (if the descriptor is still free).
                        self.refill_spare();
                        tokio::time::sleep(ACCEPT_RETRY).await;
                    } else {
                        tracing::warn!(error = %e, "out of file descriptors and no spare left: new connections wait");
                        tokio::time::sleep(ACCEPT_RETRY).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
            }
        }
    }

    /// Puts a spare descriptor back after a connection that used one ended.
    fn refill_spare(&self) {
        if let Ok(f) = File::open("/dev/null") {
            let mut spares = self.spares.lock().expect("spares lock poisoned");
            if spares.len() < RESERVE_CONNECTIONS {
                spares.push(f);
            }
        }
    }

    fn admit_regular(&self) -> Option<OwnedSemaphorePermit> {
        self.regular.clone().try_acquire_owned().ok()
    }

    fn admit_http(&self, spare_used: bool) -> Option<Admitted> {
        if spare_used {
            return Some(Admitted::Reserve(None));
        }
        if let Some(p) = self.admit_regular() {
            return Some(Admitted::Regular(p));
        }
        self.reserve.clone().try_acquire_owned().ok().map(|p| Admitted::Reserve(Some(p)))
    }
}

/// Raises the process's soft limit on open files to its hard limit (what `herald serve` does at
/// start, as most servers do); returns the soft limit in effect, if there is one.
pub fn raise_descriptor_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit { current: limit.maximum, maximum: limit.maximum };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return limit.maximum;
        }
    }
    limit.current
}

/// `max_connections`, lowered to half the process's descriptor limit if that is smaller: the
/// broker's files need the other half, and a connection refused by the cap (closed at once)
/// is better than an `accept` that fails for lack of descriptors.
pub(crate) fn effective_max_connections(configured: usize) -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    match soft.map(|n| usize::try_from(n / 2).unwrap_or(usize::MAX)) {
        Some(half) if half < configured => {
            let lowered = half.saturating_sub(RESERVE_CONNECTIONS).max(1);
            tracing::warn!(
                configured,
                lowered,
                descriptor_limit = soft,
                "max_connections lowered to fit the process's file descriptor limit (raise it with ulimit -n)"
            );
            lowered
        }
        _ => configured,
    }
}

fn out_of_descriptors(e: &io::Error) -> bool {
    // EMFILE (24): the process's limit; ENFILE (23): the system's.
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// Serves HTTP/1.1 on `listener` until `stop`, then lets every connection finish gracefully.
pub(crate) async fn serve_http(
    listener: TcpListener,
    app: Router,
    gate: Arc<Gate>,
    stop: CancellationToken,
    tls: Option<Arc<crate::tls::Tls>>,
) {
    let reserve_app = app.clone().layer(axum::middleware::from_fn(reserve_only));
    let mut conns = JoinSet::new();
    loop {
        let (tcp, peer, spare_used) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = gate.accept(&listener) => accepted,
        };
        while conns.try_join_next().is_some() {}
        let Some(admitted) = gate.admit_http(spare_used) else {
            tracing::debug!(%peer, "refused a connection: max_connections and the reserve are in use");
            metrics::counter!("herald_server_connections_refused_total", "api" => "http").increment(1);
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        // A reserve connection is for a health check or an admin call, which send at once: it
        // does not get to sit on the reserve for long.
        let (permit, router, timeout) = match admitted {
            Admitted::Regular(p) => (Some(p), app.clone(), gate.header_read_timeout),
            Admitted::Reserve(p) => (p, reserve_app.clone(), gate.header_read_timeout.min(RESERVE_HEADER_READ_TIMEOUT)),
        };
        let (stop, gate, tls) = (stop.clone(), gate.clone(), tls.clone());
        conns.spawn(async move {
            let _permit = permit;
            let io = Tracked::new(tcp);
            let activity = io.activity.clone();
            let io = match tls {
                None => tokio_util::either::Either::Left(io),
                Some(tls) => match handshake(io, &tls, crate::tls::Listener::Http, timeout).await {
                    Some(t) => tokio_util::either::Either::Right(t),
                    None => {
                        if spare_used {
                            gate.refill_spare();
                        }
                        return;
                    }
                },
            };
            let handling = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let service = Counted {
                inner: TowerToHyperService::new(router),
                handling: handling.clone(),
                peer,
                cell: Arc::default(),
            };
            // HTTP/1.1, and HTTP/2 with prior knowledge (as axum::serve did: a gRPC client sent
            // here by mistake gets an HTTP answer it can explain). Hyper's own timeout covers an
            // HTTP/1 request head that started and does not finish (a slowloris); the watchdog
            // below covers a connection that sends nothing at all, at first or between requests.
            let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).header_read_timeout(timeout);
            let conn = builder.serve_connection(TokioIo::new(io), service);
            tokio::pin!(conn);
            let mut watchdog = tokio::time::interval((timeout / 4).max(Duration::from_millis(25)));
            let mut closing = false;
            loop {
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(%peer, error = %e, "http connection ended");
                        }
                        break;
                    }
                    () = stop.cancelled(), if !closing => {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    _ = watchdog.tick(), if !closing => {
                        // Idle: nothing read or written for the whole timeout, and no request
                        // being handled (a response that streams moves bytes).
                        if activity.idle() >= timeout && handling.load(std::sync::atomic::Ordering::Acquire) == 0 {
                            tracing::debug!(%peer, "closed an http connection idle for header_read_timeout_ms");
                            break;
                        }
                    }
                }
            }
            if spare_used {
                gate.refill_spare();
            }
        });
    }
    while conns.join_next().await.is_some() {}
}

/// The TLS handshake of a new connection within `timeout`; `None` (closed) when it fails. A
/// plaintext HTTP request is answered in plain text that this port wants TLS.
async fn handshake<T: AsyncRead + AsyncWrite + Unpin + Peek>(
    io: T,
    tls: &crate::tls::Tls,
    listener: crate::tls::Listener,
    timeout: Duration,
) -> Option<Box<tokio_rustls::server::TlsStream<T>>> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(timeout, io.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        _ => return None,
    }
    if !crate::tls::looks_like_tls(first[0]) {
        tracing::debug!(?listener, "a plaintext client on a TLS port: closed");
        metrics::counter!("herald_server_tls_failures_total", "reason" => "plaintext").increment(1);
        if matches!(listener, crate::tls::Listener::Http) {
            let mut io = io;
            use tokio::io::AsyncWriteExt as _;
            let _ = tokio::time::timeout(timeout, io.write_all(&crate::tls::plaintext_answer())).await;
            let _ = tokio::time::timeout(timeout, io.shutdown()).await;
        }
        return None;
    }
    match tokio::time::timeout(timeout, tls.acceptor(listener).accept(io)).await {
        Ok(Ok(t)) => Some(Box::new(t)),
        Ok(Err(e)) => {
            tracing::debug!(?listener, error = %e, "TLS handshake failed");
            metrics::counter!("herald_server_tls_failures_total", "reason" => "handshake").increment(1);
            None
        }
        Err(_) => None,
    }
}

/// A connection whose first byte can be looked at without taking it.
pub(crate) trait Peek {
    fn peek<'a>(&'a self, buf: &'a mut [u8]) -> impl std::future::Future<Output = io::Result<usize>> + Send + 'a;
}

impl Peek for Tracked {
    fn peek<'a>(&'a self, buf: &'a mut [u8]) -> impl std::future::Future<Output = io::Result<usize>> + Send + 'a {
        self.tcp.peek(buf)
    }
}

impl Peek for TcpStream {
    fn peek<'a>(&'a self, buf: &'a mut [u8]) -> impl std::future::Future<Output = io::Result<usize>> + Send + 'a {
        TcpStream::peek(self, buf)
    }
}

/// The router's service, counting the requests being handled on one connection, until their
/// response body ends (an SSE stream counts for as long as it runs).
#[derive(Clone)]
struct Counted<S> {
    inner: S,
    handling: Arc<std::sync::atomic::AtomicUsize>,
    /// The connection's source address, given to each request (for the failed-authentication
    /// limit).
    peer: std::net::SocketAddr,
    /// The principals counting this connection against their quota, given to each request.
    cell: Arc<crate::auth::quotas::ConnectionCell>,
}

impl<S, B> hyper::service::Service<hyper::Request<B>> for Counted<S>
where
    S: hyper::service::Service<hyper::Request<B>, Response = axum::response::Response>,
    S::Future: Send + 'static,
{
    type Response = axum::response::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn call(&self, mut req: hyper::Request<B>) -> Self::Future {
        req.extensions_mut().insert(crate::http::Peer(self.peer));
        req.extensions_mut().insert(self.cell.clone());
        self.handling.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let done = Handled(self.handling.clone());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let response = fut.await?;
            Ok(response.map(|inner| axum::body::Body::new(Guarded { inner, _done: done })))
        })
    }
}

/// A response body that counts its request as handled once it ends (or is dropped).
struct Guarded {
    inner: axum::body::Body,
    _done: Handled,
}

impl hyper::body::Body for Guarded {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Counts a request as handled when dropped (also when its future is dropped).
struct Handled(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Handled {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// When a connection last read or wrote a byte.
#[derive(Clone)]
struct Activity {
    since: std::time::Instant,
    last_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long ago the connection last moved a byte.
    fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(std::sync::atomic::Ordering::Relaxed));
        self.since.elapsed().saturating_sub(last)
    }
}

/// A connection that records its [`Activity`].
struct Tracked {
    tcp: TcpStream,
    activity: Activity,
}

impl Tracked {
    fn new(tcp: TcpStream) -> Tracked {
        let activity =
            Activity { since: std::time::Instant::now(), last_ms: Arc::new(std::sync::atomic::AtomicU64::new(0)) };
        Tracked { tcp, activity }
    }
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.tcp).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

/// On a reserve connection: health, metrics and admin are served, anything else is 503 `busy`.
async fn reserve_only(req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let admin = path.starts_with("/v1/")
        && !path.ends_with("/events")
        && !path.ends_with("/subscribe")
        && !path.ends_with("/acks");
    if matches!(path, "/healthz" | "/readyz" | "/metrics") || admin {
        return next.run(req).await;
    }
    ApiError::new(
        Code::Busy,
        "the server is at max_connections (or its file descriptor limit); this connection is from the reserve kept \
         for health checks and admin: retry with backoff",
    )
    .into_response()
}

/// The gRPC listener's connections, admitted under the cap and handed to tonic once they sent
/// their first bytes (the HTTP/2 preface) within `header_read_timeout_ms`.
pub(crate) fn grpc_incoming(
    listener: TcpListener,
    gate: Arc<Gate>,
    stop: CancellationToken,
    tls: Option<Arc<crate::tls::Tls>>,
) -> impl futures::Stream<Item = Result<GatedStream, Infallible>> {
    let (tx, rx) = mpsc::channel(GRPC_HANDOFF_MAX);
    tokio::spawn(async move {
        loop {
            let (tcp, peer, spare_used) = tokio::select! {
                () = stop.cancelled() => return,
                accepted = gate.accept(&listener) => accepted,
            };
            // A spare descriptor is for health and admin over HTTP; gRPC waits for the cap.
            let permit = if spare_used { None } else { gate.admit_regular() };
            let Some(permit) = permit else {
                if spare_used {
                    gate.refill_spare();
                }
                tracing::debug!(%peer, "refused a connection: max_connections in use");
                metrics::counter!("herald_server_connections_refused_total", "api" => "grpc").increment(1);
                drop(tcp);
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (tx, timeout, tls) = (tx.clone(), gate.header_read_timeout, tls.clone());
            tokio::spawn(async move {
                if let Some(tls) = tls {
                    if let Some(t) = handshake(tcp, &tls, crate::tls::Listener::Grpc, timeout).await {
                        let io = tokio_util::either::Either::Right(t);
                        let _ = tx.send(Ok(GatedStream { io, _permit: permit, cell: Arc::default() })).await;
                    }
                    return;
                }
                // `peek` waits for the first byte without taking it (readiness alone may be
                // spurious).
                match tokio::time::timeout(timeout, tcp.peek(&mut [0u8; 1])).await {
                    Ok(Ok(n)) if n > 0 => {
                        let io = tokio_util::either::Either::Left(tcp);
                        let _ = tx.send(Ok(GatedStream { io, _permit: permit, cell: Arc::default() })).await;
                    }
                    _ => {
                        tracing::debug!(%peer, "closed a gRPC connection that sent nothing within header_read_timeout_ms")
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// An accepted TCP connection holding its place under `max_connections` until it closes.
pub(crate) struct GatedStream {
    io: tokio_util::either::Either<TcpStream, Box<tokio_rustls::server::TlsStream<TcpStream>>>,
    _permit: OwnedSemaphorePermit,
    /// The principals counting this connection against their quota.
    cell: Arc<crate::auth::quotas::ConnectionCell>,
}

/// What every gRPC request learns of its connection.
#[derive(Clone)]
pub(crate) struct ConnInfo {
    /// The source address.
    pub remote: Option<SocketAddr>,
    /// The principals counting the connection against their quota.
    pub cell: Arc<crate::auth::quotas::ConnectionCell>,
}

impl tonic::transport::server::Connected for GatedStream {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        let tcp = match &self.io {
            tokio_util::either::Either::Left(tcp) => tcp,
            tokio_util::either::Either::Right(tls) => tls.get_ref().0,
        };
        ConnInfo { remote: tcp.peer_addr().ok(), cell: self.cell.clone() }
    }
}

impl AsyncRead for GatedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for GatedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
