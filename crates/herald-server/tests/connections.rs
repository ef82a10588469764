//! Connection hygiene (repro 6 of #8: 6,000 idle and 50 slowloris connections stayed open, and at
//! the descriptor limit health checks failed): slow, silent and idle connections are closed
//! after `header_read_timeout_ms` on both listeners, connections beyond `max_connections` are
//! closed at once, and a reserve keeps health checks and admin answering at the cap.

use std::time::{Duration, Instant};

use herald_server::{Server, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Long enough for anything that should happen on a busy machine.
const PATIENCE: Duration = Duration::from_secs(15);

async fn start(
    tweak: impl FnOnce(&mut ServerConfig),
) -> Result<(Server, tempfile::TempDir), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut config = ServerConfig {
        data_dir: dir.path().to_owned(),
        http: "127.0.0.1:0".parse()?,
        grpc: "127.0.0.1:0".parse()?,
        ..Default::default()
    };
    tweak(&mut config);
    Ok((Server::start(config).await?, dir))
}

/// Waits until the server closes `conn` (a read gives end of file or an error); panics after
/// [`PATIENCE`]. Whatever the server sent before closing is returned.
async fn closed_by_server(conn: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, conn.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the server kept the connection open for {PATIENCE:?}"),
        }
    }
}

/// Sends one request on `conn` and reads one whole response (by `Content-Length`); returns the
/// status and the body.
async fn request(conn: &mut TcpStream, head: &str, body: &[u8]) -> Result<(u16, String), Box<dyn std::error::Error>> {
    conn.write_all(head.as_bytes()).await?;
    conn.write_all(body).await?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(PATIENCE, conn.read(&mut buf)).await??;
        if n == 0 {
            return Err(format!("the connection closed mid-response: {:?}", String::from_utf8_lossy(&got)).into());
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                .ok_or("no content-length")?
                .parse()?;
            if got.len() >= end + 4 + length {
                let status = text[9..12].parse()?;
                return Ok((status, text[end + 4..end + 4 + length].to_owned()));
            }
        }
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")
}

fn publish(topic: &str, id: &str) -> (String, Vec<u8>) {
    let body = format!(r#"{{"specversion":"1.0","id":"{id}","source":"/t","type":"t"}}"#).into_bytes();
    let head = format!(
        "POST /v1/topics/{topic}/events HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/cloudevents+json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    (head, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_slow_and_idle_connections_are_closed_after_the_header_read_timeout() -> TestResult {
    let (server, _dir) = start(|c| c.header_read_timeout_ms = 300).await?;
    // Silent: connects and sends nothing, on either listener.
    let mut silent = TcpStream::connect(server.http_addr()).await?;
    closed_by_server(&mut silent).await;
    let mut silent_grpc = TcpStream::connect(server.grpc_addr()).await?;
    closed_by_server(&mut silent_grpc).await;

    // Slowloris: a request head one byte every 50 ms never completes; the connection is closed
    // although bytes keep coming.
    let mut slow = TcpStream::connect(server.http_addr()).await?;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n").await?;
    let started = Instant::now();
    let mut buf = [0u8; 256];
    loop {
        assert!(started.elapsed() < PATIENCE, "a slowloris connection stayed open for {PATIENCE:?}");
        if slow.write_all(b"x").await.is_err() {
            break;
        }
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(50), slow.read(&mut buf)).await {
            break;
        }
    }

    // Idle between requests: served once, then closed when no next request comes.
    let mut idle = TcpStream::connect(server.http_addr()).await?;
    let (status, _) = request(&mut idle, &get("/healthz"), b"").await?;
    assert_eq!(status, 200);
    closed_by_server(&mut idle).await;

    // A client that keeps sending requests keeps its connection.
    let mut busy = TcpStream::connect(server.http_addr()).await?;
    for _ in 0..5 {
        assert_eq!(request(&mut busy, &get("/healthz"), b"").await?.0, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_connections_health_and_admin_still_answer_and_the_rest_is_refused() -> TestResult {
    let (server, _dir) = start(|c| c.max_connections = 3).await?;
    let mut holders = Vec::new();
    for _ in 0..3 {
        let mut c = TcpStream::connect(server.http_addr()).await?;
        // Served: the server accepted it under the cap.
        assert_eq!(request(&mut c, &get("/healthz"), b"").await?.0, 200);
        holders.push(c);
    }
    let (head, body) = publish("t", "1");
    let create = r#"{"name":"t","partitions":1}"#;
    let create_head = format!(
        "POST /v1/topics HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        create.len()
    );
    assert_eq!(request(&mut holders[0], &create_head, create.as_bytes()).await?.0, 201);

    // At the cap: a new connection comes from the reserve, which answers health, metrics and
    // admin, and refuses the rest with 503 busy.
    let mut reserve = TcpStream::connect(server.http_addr()).await?;
    assert_eq!(request(&mut reserve, &get("/readyz"), b"").await?.0, 200);
    let (status, text) = request(&mut reserve, &get("/metrics"), b"").await?;
    assert_eq!(status, 200);
    assert!(text.contains("herald_server_connections 4"), "{text}");
    assert_eq!(request(&mut reserve, &get("/v1/topics/t"), b"").await?.0, 200);
    let (status, text) = request(&mut reserve, &head, &body).await?;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains(r#""code":"busy""#) && text.contains("max_connections"), "{text}");

    // gRPC has no reserve: a connection beyond the cap is closed at once.
    let mut grpc = TcpStream::connect(server.grpc_addr()).await?;
    let _ = grpc.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    closed_by_server(&mut grpc).await;

    // Once connections close, new ones are served in full again.
    drop(holders);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut c = TcpStream::connect(server.http_addr()).await?;
        let (status, text) = request(&mut c, &head, &body).await?;
        if status == 200 || status == 201 {
            break;
        }
        assert_eq!(status, 503, "{text}");
        assert!(Instant::now() < deadline, "still refused {PATIENCE:?} after the connections closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.shutdown().await?;
    Ok(())
}

/// A response that streams (an SSE subscription) is not idle however quiet it is: only
/// connections with nothing being handled are closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_sse_stream_outlives_the_header_read_timeout() -> TestResult {
    let (server, _dir) = start(|c| c.header_read_timeout_ms = 200).await?;
    let mut admin = TcpStream::connect(server.http_addr()).await?;
    let create = r#"{"name":"t","partitions":1}"#;
    let create_head = format!(
        "POST /v1/topics HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        create.len()
    );
    assert_eq!(request(&mut admin, &create_head, create.as_bytes()).await?.0, 201);
    let mut sse = TcpStream::connect(server.http_addr()).await?;
    sse.write_all(get("/v1/groups/g/subscribe?topic=t").as_bytes()).await?;
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains("event: joined") {
        let n = tokio::time::timeout(PATIENCE, sse.read(&mut buf)).await??;
        assert!(n > 0, "the stream ended: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    // Five timeouts of silence, then an event: the stream is still there to carry it.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut publisher = TcpStream::connect(server.http_addr()).await?;
    let (head, body) = publish("t", "late");
    assert!(matches!(request(&mut publisher, &head, &body).await?.0, 200 | 201));
    while !seen.contains("\"late\"") {
        let n = tokio::time::timeout(PATIENCE, sse.read(&mut buf)).await??;
        assert!(n > 0, "the stream ended: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    server.shutdown().await?;
    Ok(())
}
