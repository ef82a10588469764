//! `herald serve --auth token` end to end through the CLI (and so the SDK over `herald://`):
//! `herald token create|list|revoke`, `--token` and `HERALD_TOKEN`, `herald whoami`, allowed and
//! refused commands per principal, a revoked token refused by a running server, and a server
//! that will not listen beyond loopback without authentication.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_herald");

/// A CLI command with no ambient URL or token.
fn herald(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.env_remove("HERALD_URL").env_remove("HERALD_TOKEN").env_remove("HERALD_DATA_DIR").args(args);
    c
}

fn output(mut c: Command) -> (bool, String, String) {
    let Output { status, stdout, stderr } = c.output().expect("running herald");
    (status.success(), String::from_utf8_lossy(&stdout).into_owned(), String::from_utf8_lossy(&stderr).into_owned())
}

fn token(dir: &Path, name: &str, allow: &[&str]) -> String {
    let mut args = vec!["token", "create", "--name", name];
    for a in allow {
        args.extend(["--allow", a]);
    }
    let mut c = herald(&args);
    c.arg("--data-dir").arg(dir);
    let (ok, out, err) = output(c);
    assert!(ok, "token create failed: {err}");
    assert!(err.contains("shown only this once"), "{err}");
    out.trim().to_owned()
}

struct Serve(Child, String);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(dir: &Path) -> Serve {
    let mut child = herald(&["serve", "--auth", "token", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir)
        .env("HERALD_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning herald serve");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(20)).expect("herald serve printed its listening line");
    let grpc = line.split_whitespace().find_map(|w| w.strip_prefix("grpc://")).expect("a grpc address").to_owned();
    Serve(child, format!("herald://{grpc}"))
}

/// A command against the server with `token` given as `--token` (or none).
fn with(url: &str, token: Option<&str>, args: &[&str]) -> (bool, String, String) {
    let mut c = herald(&["--url", url]);
    if let Some(t) = token {
        c.args(["--token", t]);
    }
    c.args(args);
    output(c)
}

#[test]
fn tokens_are_made_used_and_revoked_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let admin = token(dir.path(), "admin", &["*:*"]);
    let api = token(dir.path(), "orders-api", &["publish:topic/orders"]);
    let billing = token(dir.path(), "billing", &["consume:topic/orders", "consume:group/billing"]);
    assert!(admin.starts_with("hrd_") && admin != api);
    let server = serve(dir.path());
    let url = server.1.as_str();

    // No token: refused, saying how to send one.
    let (ok, _, err) = with(url, None, &["topic", "list"]);
    assert!(!ok && err.contains("requires a token"), "{err}");
    let (ok, _, err) = with(url, Some("hrd_nope"), &["topic", "list"]);
    assert!(!ok && err.contains("not valid here"), "{err}");

    // Admin makes the topic; the producer publishes and may not delete; billing consumes.
    let (ok, _, err) = with(url, Some(&admin), &["topic", "create", "orders", "--partitions", "1"]);
    assert!(ok, "{err}");
    let (ok, _, err) = with(url, Some(&api), &["publish", "orders", "--key", "k", "hello"]);
    assert!(ok, "{err}");
    let (ok, _, err) = with(url, Some(&api), &["topic", "delete", "orders"]);
    assert!(!ok && err.contains("may not administer topic \"orders\""), "{err}");
    let (ok, _, err) = with(url, Some(&billing), &["publish", "orders", "x"]);
    assert!(!ok && err.contains("may not publish to topic \"orders\""), "{err}");
    let (ok, out, err) = with(
        url,
        Some(&billing),
        &["--json", "consume", "orders", "--group", "billing", "--max", "1", "--wait-ms", "10000"],
    );
    assert!(ok, "{err}");
    assert!(out.contains("\"hello\""), "{out}");
    let (ok, _, err) = with(url, Some(&billing), &["consume", "orders", "--group", "other", "--max", "1"]);
    assert!(!ok && err.contains("may not consume group \"other\""), "{err}");

    // whoami, by --token and by HERALD_TOKEN.
    let (ok, out, _) = with(url, Some(&api), &["whoami"]);
    assert!(ok && out.starts_with("orders-api") && out.contains("publish:topic/orders"), "{out}");
    let mut c = herald(&["--url", url, "--json", "whoami"]);
    c.env("HERALD_TOKEN", &billing);
    let (ok, out, err) = output(c);
    assert!(ok, "{err}");
    let me: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(me["principal"], "billing");

    // List never shows a token; revoke takes effect on the running server.
    let mut c = herald(&["--json", "token", "list", "--data-dir"]);
    c.arg(dir.path());
    let (ok, out, _) = output(c);
    assert!(ok && !out.contains(&api[20..]) && out.contains("orders-api"), "{out}");
    let mut c = herald(&["token", "revoke", "orders-api", "--data-dir"]);
    c.arg(dir.path());
    assert!(output(c).0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, _, err) = with(url, Some(&api), &["whoami"]);
        if !ok {
            assert!(err.contains("revoked"), "{err}");
            break;
        }
        assert!(Instant::now() < deadline, "the revoked token still works");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn serve_refuses_anonymous_access_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = herald(&["serve", "--http", "0.0.0.0:0", "--grpc", "127.0.0.1:0", "--data-dir"]);
    c.arg(dir.path()).env("HERALD_LOG", "warn");
    let (ok, _, err) = output(c);
    assert!(!ok, "started anonymously on 0.0.0.0");
    assert!(err.contains("--allow-anonymous") && err.contains("--auth token"), "{err}");
}
