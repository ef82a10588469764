//! What the Console's browser tests and benchmark share: a spawned `herald serve`, a spawned
//! `chromedriver` driving headless Chromium (Debian's `chromium` and `chromium-driver`, which
//! `./scripts/test` installs), and helpers to wait for a page, read the browser's console and
//! save screenshots.

#![allow(dead_code)] // each target uses its own part

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

pub const BIN: &str = env!("CARGO_BIN_EXE_herald");

/// A spawned `herald serve` on free loopback ports.
pub struct Herald {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub http: String,
    /// `herald://127.0.0.1:PORT`.
    pub url: String,
    pub dir: tempfile::TempDir,
}

impl Drop for Herald {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `herald` command with no ambient configuration (`HERALD_*`, `OTEL_*`).
pub fn herald(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("HERALD_") || k.starts_with("OTEL_") {
            c.env_remove(k);
        }
    }
    c.args(args);
    c
}

impl Herald {
    /// `herald serve` on a new data directory with `extra` flags.
    pub fn start(extra: &[&str]) -> Herald {
        Herald::start_in(tempfile::tempdir().expect("a temp dir"), extra)
    }

    /// `herald serve` on `dir` (made before, e.g. with tokens in it).
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Herald {
        let mut child = herald(&["serve", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.path())
            .args(extra)
            .env("HERALD_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning herald serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let line = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).expect("herald serve printed its listening line");
            if line.contains("herald listening:") {
                break line;
            }
        };
        let word =
            |prefix: &str| line.split_whitespace().find_map(|w| w.strip_prefix(prefix)).expect("an address").to_owned();
        let (http, grpc) = (word("http://"), word("grpc://"));
        Herald { child, http: format!("http://{http}"), url: format!("herald://{grpc}"), dir }
    }
}

/// Makes a token in `dir` (before the server starts) allowed `allow`.
pub fn token(dir: &Path, name: &str, allow: &[&str]) -> String {
    let mut args = vec!["token", "create", "--name", name];
    for a in allow {
        args.extend(["--allow", a]);
    }
    let out = herald(&args).arg("--data-dir").arg(dir).output().expect("running herald token create");
    assert!(out.status.success(), "token create: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A chromedriver and a headless Chromium session.
pub struct Browser {
    driver: Child,
    port: u16,
    pub c: Client,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium window `width` pixels wide.
    pub async fn start(width: u32) -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; ./scripts/test installs it)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen on {port}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = serde_json::json!({
            "goog:chromeOptions": {
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    format!("--window-size={width},900"), format!("--user-data-dir={}", profile.path().display()),
                    "--no-first-run", "--disable-extensions",
                ],
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let caps = caps.as_object().unwrap().clone().into_iter().collect();
        let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session");
        Browser { driver, port, c, _profile: profile }
    }

    /// Goes to `url` and waits until the page named `page` has rendered its data.
    pub async fn open(&self, url: &str, page: &str) {
        self.c.goto(url).await.expect("navigating");
        self.ready(page).await;
    }

    /// Waits until `body[data-ready=page]`.
    pub async fn ready(&self, page: &str) {
        let css = format!("body[data-ready=\"{page}\"]");
        let found = self.c.wait().at_most(Duration::from_secs(15)).for_element(Locator::Css(&css)).await;
        if found.is_err() {
            let errors = self.console_errors().await;
            let body = self.c.find(Locator::Css("body")).await.ok();
            let text = match body {
                Some(b) => b.text().await.unwrap_or_default(),
                None => String::new(),
            };
            panic!("page {page} did not become ready; console errors: {errors:?}; page text: {text}");
        }
    }

    /// Waits until `css` matches an element, and returns it.
    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        match self.c.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css(css)).await {
            Ok(e) => e,
            Err(e) => panic!("no element {css}: {e}"),
        }
    }

    /// The text of the element `css`, trimmed.
    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.expect("element text").trim().to_owned()
    }

    /// How many elements match `css` (without waiting).
    pub async fn count(&self, css: &str) -> usize {
        self.c.find_all(Locator::Css(css)).await.expect("find_all").len()
    }

    /// Waits until `cond` holds over the page, evaluated as JavaScript returning a boolean.
    pub async fn until_js(&self, what: &str, js: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let v = self.c.execute(js, vec![]).await.expect("executing a script");
            if v.as_bool() == Some(true) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Messages the browser logged at level SEVERE (errors, failed loads, uncaught exceptions)
    /// since the last call (chromedriver's log endpoint).
    pub async fn console_errors(&self) -> Vec<String> {
        let id = self.c.session_id().await.ok().flatten().expect("a session id");
        let url = format!("http://127.0.0.1:{}/session/{id}/se/log", self.port);
        let got: serde_json::Value = reqwest::Client::new()
            .post(url)
            .json(&serde_json::json!({ "type": "browser" }))
            .send()
            .await
            .expect("asking chromedriver for the browser log")
            .json()
            .await
            .expect("the log as JSON");
        got["value"]
            .as_array()
            .expect("log entries")
            .iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Saves a PNG of the window as `name.png` in `dir`.
    pub async fn screenshot(&self, dir: &Path, name: &str) -> PathBuf {
        let png = self.c.screenshot().await.expect("a screenshot");
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}
