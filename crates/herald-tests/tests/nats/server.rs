//! `nats-server` processes on free loopback ports, each with a temporary store and a config
//! file that syncs every write (`sync_interval: always`).

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `nats-server` binary: `HERALD_NATS_SERVER`, else `<workspace>/target/tools/nats/bin/nats-server`,
/// else a `nats-server` on `PATH` of version 2.10 or later.
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("HERALD_NATS_SERVER") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "HERALD_NATS_SERVER={} is not a file", p.display());
        return p;
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let local = workspace.join("target/tools/nats/bin/nats-server");
    if local.is_file() {
        return local;
    }
    if let Ok(out) = Command::new("nats-server").arg("--version").output() {
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        // "nats-server: v2.10.7"
        let version = text.trim().rsplit('v').next().unwrap_or("");
        let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        if (major, minor) >= (2, 10) {
            return PathBuf::from("nats-server");
        }
    }
    panic!(
        "no nats-server >= 2.10 found: set HERALD_NATS_SERVER, or run ./scripts/test, which installs one into \
         target/tools/nats/bin"
    );
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One server (standalone or a cluster node), restartable on the same ports and store.
pub struct Node {
    pub name: String,
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    /// `routes`: the cluster ports of every node (empty: standalone).
    pub fn new(base: &Path, name: &str, port: u16, cluster_port: u16, routes: &[u16]) -> Node {
        let dir = base.join(name);
        std::fs::create_dir_all(dir.join("store")).unwrap();
        let mut config = format!(
            "server_name: {name}\nlisten: 127.0.0.1:{port}\n\
             jetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n",
            dir.join("store").display()
        );
        if !routes.is_empty() {
            let routes: Vec<String> = routes.iter().map(|p| format!("nats-route://127.0.0.1:{p}")).collect();
            config.push_str(&format!(
                "cluster {{\n  name: herald\n  listen: 127.0.0.1:{cluster_port}\n  routes: [{}]\n}}\n",
                routes.join(", ")
            ));
        }
        std::fs::write(dir.join("nats.conf"), config).unwrap();
        Node { name: name.to_owned(), port, dir, child: None }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Adds `extra` to the server's configuration (before it starts).
    pub fn configure(&self, extra: &str) {
        let path = self.dir.join("nats.conf");
        let mut config = std::fs::read_to_string(&path).unwrap();
        config.push_str(extra);
        std::fs::write(path, config).unwrap();
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} runs already", self.name);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("nats.log")).unwrap();
        let child = Command::new(binary())
            .arg("-c")
            .arg(self.dir.join("nats.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning nats-server");
        self.child = Some(child);
        // The client port accepts connections once the server runs.
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("{} exited at start ({status}); log:\n{}", self.name, self.log());
            }
            assert!(Instant::now() < deadline, "{} did not listen within 15 s; log:\n{}", self.name, self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("nats.log")).unwrap_or_default()
    }

    /// SIGTERM and wait: a clean shutdown.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if c.try_wait().unwrap().is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// SIGKILL: a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits until JetStream answers on `url` (a cluster needs its meta leader first).
pub async fn wait_for_jetstream(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ok = async {
            let client = async_nats::ConnectOptions::new()
                .connection_timeout(Duration::from_secs(1))
                .connect(url.trim_start_matches("nats://"))
                .await
                .ok()?;
            let js = async_nats::jetstream::new(client);
            js.query_account().await.ok()
        }
        .await;
        if ok.is_some() {
            return;
        }
        assert!(Instant::now() < deadline, "JetStream at {url} not ready within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes `line` to stderr at once (progress of long tests).
pub fn note(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}
