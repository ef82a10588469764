//! How the suite reaches a backend.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use herald::Client;
use herald_server::{Server, ServerConfig};

pub struct Harness {
    url: String,
    _dir: Option<tempfile::TempDir>,
    /// For `herald://`: a real server in this process, started by the first `client` call.
    remote: Option<Remote>,
}

/// A Herald server on a loopback port, restartable on the same port and data directory.
pub struct Remote {
    dir: tempfile::TempDir,
    server: tokio::sync::Mutex<Option<Server>>,
    /// The gRPC address, fixed by the first start (port 0 picks it).
    addr: std::sync::Mutex<Option<SocketAddr>>,
}

impl Remote {
    pub fn new() -> Remote {
        Remote { dir: tempfile::tempdir().unwrap(), server: Default::default(), addr: Default::default() }
    }

    fn config(&self, grpc: SocketAddr) -> ServerConfig {
        ServerConfig {
            data_dir: self.dir.path().to_owned(),
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            grpc,
            shutdown_grace_ms: 2000,
            ..ServerConfig::default()
        }
    }

    /// Starts the server unless it runs; returns its gRPC address.
    pub async fn start(&self) -> SocketAddr {
        let mut server = self.server.lock().await;
        if server.is_none() {
            let known = *self.addr.lock().unwrap();
            let grpc = known.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)));
            // The port was just released by the previous run; binding it again may take a moment.
            let deadline = Instant::now() + Duration::from_secs(10);
            let started = loop {
                match Server::start(self.config(grpc)).await {
                    Ok(s) => break s,
                    Err(e) if Instant::now() < deadline => {
                        eprintln!("server start failed, retrying: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => panic!("cannot start the server on {grpc}: {e}"),
                }
            };
            *self.addr.lock().unwrap() = Some(started.grpc_addr());
            *server = Some(started);
        }
        self.addr.lock().unwrap().expect("started")
    }

    /// Shuts the server down cleanly (streams end, the broker flushes and closes).
    pub async fn stop(&self) {
        if let Some(s) = self.server.lock().await.take() {
            s.shutdown().await.unwrap();
        }
    }

    pub async fn url(&self) -> String {
        format!("herald://{}", self.start().await)
    }
}

impl Harness {
    pub fn memory() -> Harness {
        Harness { url: "mem://".into(), _dir: None, remote: None }
    }

    pub fn file() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        Harness { url: format!("file://{}", dir.path().display()), _dir: Some(dir), remote: None }
    }

    pub fn remote() -> Harness {
        Harness { url: String::new(), _dir: None, remote: Some(Remote::new()) }
    }

    pub async fn client(&self) -> Client {
        match &self.remote {
            Some(r) => herald::connect(&r.url().await).await.unwrap(),
            None => herald::connect(&self.url).await.unwrap(),
        }
    }

    /// Restarts the backend under `client`, if it survives that. Embedded backends close the
    /// client and connect again; a server is shut down and started again on the same port and
    /// data directory while the same client stays connected and must reconnect by itself.
    pub async fn restart(&self, client: Client) -> Option<Client> {
        if !client.capabilities().durable {
            return None;
        }
        if let Some(r) = &self.remote {
            r.stop().await;
            r.start().await;
            return Some(client);
        }
        client.close().await.unwrap();
        drop(client);
        Some(self.client().await)
    }
}
