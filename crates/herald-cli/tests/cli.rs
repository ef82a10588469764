//! The `herald` binary end to end: a real server (`herald serve`) on loopback port 0, driven by the
//! real CLI over `herald://`, plus `herald demo` and the replay command it prints.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_herald");

/// A `herald serve` child process, killed on drop.
struct Server {
    child: Child,
    http: String,
    grpc: String,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Server::start_at(dir.path());
        s._dir = Some(dir);
        s
    }

    /// A server on a data directory the caller keeps (to restart on it).
    fn start_at(dir: &Path) -> Server {
        Server::spawn(Command::new(BIN), dir)
    }

    /// A server whose process may open at most `files` files (soft and hard limit).
    fn start_with_file_limit(dir: &Path, files: u32) -> Server {
        let mut sh = Command::new("sh");
        sh.arg("-c").arg(format!("ulimit -n {files} && exec \"$0\" \"$@\"")).arg(BIN);
        Server::spawn(sh, dir)
    }

    fn spawn(mut command: Command, dir: &Path) -> Server {
        let mut child = command
            .args(["serve", "--data-dir"])
            .arg(dir)
            .args(["--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"])
            .env_remove("HERALD_URL")
            .env("HERALD_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning herald serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("waiting for herald serve");
                panic!(
                    "herald serve printed no `herald listening:` line within 20 s ({}); stderr:\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        };
        // herald listening: http://ADDR grpc://ADDR
        let mut words = line.split_whitespace().skip(2);
        let http = words.next().and_then(|w| w.strip_prefix("http://")).map(str::to_owned);
        let grpc = words.next().and_then(|w| w.strip_prefix("grpc://")).map(str::to_owned);
        let (Some(http), Some(grpc)) = (http, grpc) else {
            let _ = child.kill();
            panic!("unexpected first line from herald serve: {line:?}");
        };
        Server { child, http, grpc, _dir: None }
    }

    fn url(&self) -> String {
        format!("herald://{}", self.grpc)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn command(url: &str, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.env_remove("HERALD_URL").env_remove("HERALD_TOKEN").arg("--url").arg(url).args(args);
    c
}

fn run(url: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut c = command(url, args);
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawning herald");
    let mut input = child.stdin.take().expect("piped stdin");
    let data = stdin.unwrap_or_default().to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().expect("running herald");
    writer.join().expect("stdin writer");
    out
}

/// Runs a command that must succeed; returns its stdout.
fn ok(url: &str, args: &[&str]) -> String {
    ok_in(url, args, None)
}

fn ok_in(url: &str, args: &[&str], stdin: Option<&[u8]>) -> String {
    let out = run(url, args, stdin);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "herald {args:?} failed ({}):\n{stderr}\n{stdout}", out.status);
    stdout.into_owned()
}

/// Runs a command with `--json` that must succeed; returns its output parsed.
fn json(url: &str, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = ok(url, &all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("herald {args:?} printed no JSON ({e}): {out}"))
}

/// Runs a command that must fail with exit code 1 and `error: …`; returns stderr.
fn fails(url: &str, args: &[&str], stdin: Option<&[u8]>) -> String {
    let out = run(url, args, stdin);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "herald {args:?} should fail with 1; stderr: {stderr}");
    assert!(stderr.starts_with("error: "), "herald {args:?}: stderr does not start with `error: `: {stderr}");
    stderr
}

/// `consume --json` output: one object per line.
fn consumed(url: &str, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["--json", "consume"];
    all.extend_from_slice(args);
    ok(url, &all).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}"))).collect()
}

fn lag(url: &str, group: &str) -> u64 {
    json(url, &["group", "describe", group])["lag"].as_u64().expect("lag")
}

#[test]
fn topics_are_created_listed_described_and_deleted() {
    let server = Server::start();
    let url = &server.url();
    let created = json(
        url,
        &["topic", "create", "orders", "--partitions", "3", "--retention-ms", "60000", "--durability", "interval:50"],
    );
    assert_eq!(created["partitions"].as_array().unwrap().len(), 3);
    assert_eq!(created["config"]["retention_ms"], 60000);
    assert_eq!(created["config"]["durability"], serde_json::json!({"interval": {"ms": 50}}));
    // The same settings again: fine; other settings: refused.
    ok(
        url,
        &["topic", "create", "orders", "--partitions", "3", "--retention-ms", "60000", "--durability", "interval:50"],
    );
    let err = fails(url, &["topic", "create", "orders", "--partitions", "4"], None);
    assert!(err.contains("exists already with 3 partitions"), "{err}");
    ok(url, &["topic", "create", "audit"]);

    let list = json(url, &["topic", "list"]);
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["audit", "orders"]);
    // HERALD_URL stands in for --url.
    let out = Command::new(BIN).args(["--json", "topic", "list"]).env("HERALD_URL", url).output().unwrap();
    assert!(out.status.success());
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap(), list);
    let table = ok(url, &["topic", "list"]);
    assert!(table.starts_with("TOPIC") && table.contains("orders") && table.contains("audit"), "{table}");

    ok(url, &["publish", "orders", "--key", "k", "hello"]);
    let described = json(url, &["topic", "describe", "orders"]);
    let parts = described["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    assert_eq!(parts.iter().map(|p| p["latest_offset"].as_u64().unwrap()).sum::<u64>(), 1);
    assert!(parts.iter().all(|p| p["earliest_offset"] == 0));
    assert!(parts.iter().any(|p| p["bytes"].as_u64().unwrap() > 0));
    let table = ok(url, &["topic", "describe", "orders"]);
    assert!(table.contains("PARTITION") && table.contains("EARLIEST") && table.contains("LATEST"), "{table}");

    assert!(ok(url, &["topic", "delete", "orders"]).contains("deleted topic orders"));
    let list = json(url, &["topic", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let err = fails(url, &["topic", "describe", "orders"], None);
    assert!(err.contains("orders") && err.contains("does not exist"), "{err}");
}

#[test]
fn published_events_are_consumed_in_key_order_and_acked() {
    let server = Server::start();
    let url = &server.url();
    ok(url, &["topic", "create", "orders", "--partitions", "4"]);
    // One event per command, then many per stdin line, for three keys.
    let mut sent: Vec<(String, Value)> = Vec::new();
    for i in 0..3 {
        let data = format!("{{\"n\":{i}}}");
        let r = json(
            url,
            &["publish", "orders", "--key", "a", "--type", "order.created", "--header", "tenant=acme", &data],
        );
        assert_eq!(r["topic"], "orders");
        assert!(r["offset"].is_u64() && r["partition"].as_u64().unwrap() < 4);
        sent.push(("a".into(), serde_json::json!({"n": i})));
    }
    for key in ["b", "c"] {
        let lines: String = (0..5).map(|i| format!("{key}-{i}\n")).collect();
        let out = ok_in(url, &["publish", "orders", "--key", key, "-"], Some(lines.as_bytes()));
        assert!(out.contains("published 5 events to orders"), "{out}");
        sent.extend((0..5).map(|i| (key.to_owned(), Value::String(format!("{key}-{i}")))));
    }

    let events = consumed(url, &["orders", "--group", "g", "--max", "13", "--wait-ms", "10000"]);
    assert_eq!(events.len(), 13);
    for key in ["a", "b", "c"] {
        let got: Vec<&Value> = events.iter().filter(|e| e["partitionkey"] == key).map(|e| &e["data"]).collect();
        let want: Vec<&Value> = sent.iter().filter(|(k, _)| k == key).map(|(_, d)| d).collect();
        assert_eq!(got, want, "key {key}");
    }
    for e in &events {
        assert_eq!(e["attempt"], 1);
        assert_eq!(e["topic"], "orders");
        assert!(e["offset"].is_u64() && e["partition"].is_u64() && e["id"].is_string());
    }
    let a = events.iter().find(|e| e["partitionkey"] == "a").unwrap();
    assert_eq!((a["type"].as_str(), a["tenant"].as_str()), (Some("order.created"), Some("acme")));
    assert_eq!(a["datacontenttype"], "application/json");
    let b = events.iter().find(|e| e["partitionkey"] == "b").unwrap();
    assert_eq!((b["type"].as_str(), b["datacontenttype"].as_str()), (Some("herald.cli"), Some("text/plain")));

    // All were acked: nothing more for the group, and no lag.
    assert!(consumed(url, &["orders", "--group", "g", "--wait-ms", "300"]).is_empty());
    assert_eq!(lag(url, "g"), 0);
    // A new group from latest sees only what comes next.
    assert!(consumed(url, &["orders", "--group", "late", "--from", "latest", "--wait-ms", "300"]).is_empty());
    ok(url, &["publish", "orders", "--key", "d", "later"]);
    let late = consumed(url, &["orders", "--group", "late", "--max", "5", "--wait-ms", "2000"]);
    assert_eq!(late.len(), 1);
    assert_eq!(late[0]["data"], "later");
}

#[test]
fn consume_stops_on_ctrl_c_after_acking_what_it_printed() {
    let server = Server::start();
    let url = &server.url();
    ok(url, &["topic", "create", "t", "--partitions", "2"]);
    for i in 0..3 {
        ok(url, &["publish", "t", "--key", &format!("k{i}"), "x"]);
    }
    let mut child = command(url, &["--json", "consume", "t", "--group", "g"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning consume");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    for _ in 0..3 {
        let line = rx.recv_timeout(Duration::from_secs(15)).expect("an event line");
        assert!(serde_json::from_str::<Value>(&line).unwrap()["id"].is_string());
    }
    let signalled = Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill -INT");
    assert!(signalled.success());
    let status = child.wait().expect("consume exits");
    assert!(status.success(), "consume after Ctrl-C: {status}");
    let g = json(url, &["group", "describe", "g"]);
    assert_eq!(g["lag"], 0, "the printed events were acked: {g}");
    assert_eq!(g["members"].as_array().unwrap().len(), 0, "consume left the group: {g}");
}

#[test]
fn stdin_is_published_in_bounded_batches_and_long_lines_are_refused() {
    let server = Server::start();
    let url = &server.url();
    ok(url, &["topic", "create", "t", "--partitions", "2"]);
    // More lines than one batch holds (STDIN_BATCH_LINES = 500), blank lines skipped.
    let lines: String =
        (0..1_201).map(|i| if i % 100 == 0 { "\n".to_owned() } else { format!("{{\"i\":{i}}}\n") }).collect();
    let receipts = ok_in(url, &["--json", "publish", "t", "-"], Some(lines.as_bytes()));
    let receipts: Vec<Value> = receipts.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(receipts.len(), 1_188);
    let described = json(url, &["topic", "describe", "t"]);
    let stored: u64 = described["partitions"].as_array().unwrap().iter().map(|p| p["events"].as_u64().unwrap()).sum();
    assert_eq!(stored, 1_188);

    // A line over STDIN_LINE_BYTES_MAX (1 MiB) is refused, naming the line.
    let mut input = b"fine\n".to_vec();
    input.extend(std::iter::repeat_n(b'x', (1 << 20) + 1));
    input.push(b'\n');
    let err = fails(url, &["publish", "t", "-"], Some(&input));
    assert!(err.contains("stdin line 2 is longer than 1048576 bytes"), "{err}");
}

#[test]
fn dead_letters_are_listed_shown_replayed_and_purged() {
    let server = Server::start();
    let url = server.url();
    ok(&url, &["topic", "create", "orders", "--partitions", "2"]);
    for i in 0..5 {
        ok(&url, &["publish", "orders", "--key", &format!("k{i}"), &format!("{{\"n\":{i}}}")]);
    }
    // No handler: the SDK rejects orders 1 and 3 and acks the rest.
    let rejected = reject_some(&url, "billing", &[1, 3]);
    assert_eq!(rejected.len(), 2);

    let letters = json(&url, &["dlq", "list", "--group", "billing"]);
    let letters = letters.as_array().unwrap();
    assert_eq!(letters.len(), 2);
    let mut ids: Vec<&str> = letters.iter().map(|l| l["id"].as_str().unwrap()).collect();
    ids.sort();
    let mut want: Vec<&str> = rejected.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(ids, want);
    for l in letters {
        assert_eq!(l["reason"], "rejected by the test");
        assert_eq!(l["attempts"], 1);
        assert_eq!(l["origin"]["topic"], "orders");
    }
    let table = ok(&url, &["dlq", "list", "--group", "billing"]);
    assert!(table.contains("REASON") && table.contains("rejected by the test") && table.contains(ids[0]), "{table}");
    assert_eq!(json(&url, &["dlq", "list", "--group", "billing", "--max", "1"]).as_array().unwrap().len(), 1);

    let shown = json(&url, &["dlq", "show", "--group", "billing", ids[0]]);
    assert_eq!(shown["id"], ids[0]);
    assert_eq!(shown["dlqreason"], "rejected by the test");
    assert_eq!(shown["dlqgroup"], "billing");
    assert!(shown["data"]["n"].is_u64());
    let err = fails(&url, &["dlq", "show", "--group", "billing", "no-such-id"], None);
    assert!(err.contains("no dead letter with id \"no-such-id\""), "{err}");

    let replayed = ok(&url, &["dlq", "replay", "--group", "billing"]);
    assert!(replayed.contains("replayed 2 dead letters to group billing"), "{replayed}");
    assert!(json(&url, &["dlq", "list", "--group", "billing"]).as_array().unwrap().is_empty());
    // Replayed to billing only.
    let again = consumed(&url, &["orders", "--group", "billing", "--max", "2", "--wait-ms", "10000"]);
    let mut again_ids: Vec<&str> = again.iter().map(|e| e["id"].as_str().unwrap()).collect();
    again_ids.sort();
    assert_eq!(again_ids, want);

    // Purge: two new dead letters, then none.
    ok(&url, &["publish", "orders", "--key", "k9", "x"]);
    ok(&url, &["publish", "orders", "--key", "k8", "y"]);
    assert_eq!(reject_some(&url, "billing", &[0, 1]).len(), 2);
    assert_eq!(json(&url, &["dlq", "purge", "--group", "billing"])["purged"], 2);
    assert!(json(&url, &["dlq", "list", "--group", "billing"]).as_array().unwrap().is_empty());
    assert!(ok(&url, &["dlq", "purge", "--group", "billing"]).contains("purged 0 dead letters"));
}

/// Joins `group` on `orders` through the SDK, fetches everything there is, rejects the messages at
/// the given positions (in fetch order) and acks the others; returns the rejected event ids.
fn reject_some(url: &str, group: &str, positions: &[usize]) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = herald::connect(url).await.expect("connect");
        let options = herald::SubscribeOptions { topics: vec!["orders".into()], ..Default::default() };
        let sub = client.backend().subscribe(group, options).await.expect("subscribe");
        let mut all = Vec::new();
        loop {
            let got = sub.fetch(100, Duration::from_millis(500)).await.expect("fetch");
            if got.is_empty() {
                break;
            }
            all.extend(got);
        }
        let mut rejected = Vec::new();
        for (i, m) in all.iter().enumerate() {
            if positions.contains(&i) {
                sub.reject(m, "rejected by the test").await.expect("reject");
                rejected.push(m.event.id().to_owned());
            } else {
                sub.ack(m).await.expect("ack");
            }
        }
        sub.close().await.expect("leave");
        client.close().await.expect("close");
        rejected
    })
}

#[test]
fn groups_are_described_and_reset() {
    let server = Server::start();
    let url = &server.url();
    ok(url, &["topic", "create", "orders", "--partitions", "2"]);
    for i in 0..4 {
        ok(url, &["publish", "orders", "--key", &format!("k{i}"), "x"]);
    }
    assert_eq!(consumed(url, &["orders", "--group", "g", "--max", "4", "--wait-ms", "10000"]).len(), 4);
    let g = json(url, &["group", "describe", "g"]);
    assert_eq!(g["name"], "g");
    assert_eq!(g["members"].as_array().unwrap().len(), 0);
    let parts = g["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert!(parts.iter().all(|p| p["committed"] == p["latest"] && p["lag"] == 0));
    assert_eq!(parts.iter().map(|p| p["latest"].as_u64().unwrap()).sum::<u64>(), 4);
    let table = ok(url, &["group", "describe", "g"]);
    assert!(table.contains("COMMITTED") && table.contains("LATEST") && table.contains("LAG"), "{table}");

    let list = json(url, &["group", "list"]);
    assert_eq!(list[0]["name"], "g");
    assert_eq!(list[0]["lag"], 0);

    assert_eq!(json(url, &["group", "reset", "g", "--to", "earliest"])["lag"], 4);
    assert_eq!(lag(url, "g"), 4);
    assert_eq!(json(url, &["group", "reset", "g", "--to", "latest"])["lag"], 0);
    assert_eq!(json(url, &["group", "reset", "g", "--to", "2000-01-01T00:00:00Z"])["lag"], 4);
    assert_eq!(json(url, &["group", "reset", "g", "--to", "2200-01-01T00:00:00+02:00"])["lag"], 0);
    // A group with a member is not reset.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (client, sub) = rt.block_on(async {
        let client = herald::connect(url).await.expect("connect");
        let options = herald::SubscribeOptions { topics: vec!["orders".into()], ..Default::default() };
        let sub = client.backend().subscribe("g", options).await.expect("subscribe");
        (client, sub)
    });
    assert_eq!(json(url, &["group", "describe", "g"])["members"].as_array().unwrap().len(), 1);
    let err = fails(url, &["group", "reset", "g", "--to", "earliest"], None);
    assert!(err.contains("has 1 member(s)"), "{err}");
    rt.block_on(async {
        sub.close().await.expect("leave");
        client.close().await.expect("close");
    });
    assert_eq!(json(url, &["group", "reset", "g", "--to", "earliest"])["lag"], 4);

    let err = fails(url, &["group", "reset", "g", "--to", "yesterday"], None);
    assert!(err.contains("RFC 3339"), "{err}");
    let err = fails(url, &["group", "describe", "nope"], None);
    assert!(err.contains("\"nope\" does not exist"), "{err}");
}

#[test]
fn bad_input_fails_with_a_clear_message() {
    let server = Server::start();
    let url = &server.url();
    ok(url, &["topic", "create", "t"]);
    let cases: &[(&[&str], &str)] = &[
        (&["publish", "nope", "x"], "topic \"nope\" does not exist"),
        (&["publish", "t", "--header", "tenant", "x"], "\"tenant\" is not NAME=VALUE"),
        (&["publish", "t", "--header", "Bad_Name=1", "x"], "Bad_Name"),
        (&["consume", "nope", "--group", "g", "--max", "1"], "nope"),
        (&["topic", "create", "bad/name"], "invalid topic name"),
        (&["topic", "create", "t2", "--durability", "sometimes"], "always, interval"),
        (&["topic", "create", "t2", "--partitions", "0"], "--partitions"),
        (&["dlq", "list", "--group", "g", "--max", "0"], "--max"),
        (&["dlq", "list", "--group", "g", "--max", "10001"], "--max"),
        (&["group", "describe", "nope"], "does not exist"),
        (&["no-such-command"], "no-such-command"),
        (&["demo", "--rate", "100001"], "--rate"),
        (&["demo", "--duration", "0"], "--duration"),
    ];
    for (args, expected) in cases {
        let err = fails(url, args, None);
        assert!(err.contains(expected), "herald {args:?}: {err:?} does not contain {expected:?}");
    }
    for (bad_url, expected) in [
        ("localhost:7281", "expected scheme://"),
        ("ftp://x", "unknown scheme \"ftp\""),
        ("file://relative/dir", "absolute path"),
        ("herald://", "host:port"),
    ] {
        let err = fails(bad_url, &["topic", "list"], None);
        assert!(err.contains(expected), "--url {bad_url}: {err:?} does not contain {expected:?}");
    }
    // Nothing listens there.
    let err = fails("herald://127.0.0.1:1", &["topic", "list"], None);
    assert!(err.contains("127.0.0.1:1"), "{err}");
}

#[test]
fn completions_are_printed() {
    let out = ok("mem://", &["completions", "bash"]);
    assert!(out.contains("_herald()") && out.contains("complete"), "{out}");
    assert!(out.contains("publish") && out.contains("dlq"), "{out}");
    let out = ok("mem://", &["completions", "zsh"]);
    assert!(out.contains("#compdef herald"), "{out}");
}

#[test]
fn the_server_answers_plain_http() {
    let server = Server::start();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let status = rt.block_on(async {
        reqwest::get(format!("http://{}/healthz", server.http)).await.expect("GET /healthz").status()
    });
    assert_eq!(status, 200);
}

#[test]
fn the_demo_runs_and_its_replay_command_works() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo data");
    let out = Command::new(BIN)
        .args(["demo", "--duration", "4", "--rate", "100", "--data-dir"])
        .arg(&dir)
        .env_remove("HERALD_URL")
        .output()
        .expect("running herald demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    // Not a terminal: one line per second, no cursor movement.
    assert!(!stdout.contains('\x1b'), "{stdout}");
    assert!(stdout.matches("published").count() >= 4, "{stdout}");

    let figure = |prefix: &str, word: &str| -> u64 {
        let line = stdout.lines().find(|l| l.trim_start().starts_with(prefix)).unwrap_or_else(|| panic!("{stdout}"));
        let mut words = line.split_whitespace();
        words.find(|w| *w == word).unwrap_or_else(|| panic!("no {word:?} in {line:?}"));
        words.next().and_then(|w| w.trim_end_matches(['+', ',']).parse().ok()).unwrap_or_else(|| panic!("{line:?}"))
    };
    let published = figure("published", "published");
    assert!(published >= 200, "{stdout}");
    assert!(figure("billing ", "processed") > 0, "{stdout}");
    assert!(figure("shipping ", "processed") > 0, "{stdout}");
    assert!(figure("billing ", "retried") > 0, "{stdout}");
    let dead = figure("Dead letters of", "`billing`:");
    assert!(dead > 0, "{stdout}");

    // The printed replay command, run as printed (the path has a space: it is quoted).
    let replay = stdout.lines().map(str::trim).find(|l| l.starts_with("herald --url")).expect("a replay command");
    let args = shell_split(replay.strip_prefix("herald ").unwrap());
    let out = Command::new(BIN).args(&args).env_remove("HERALD_URL").output().expect("running the replay command");
    let replayed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{replay}: {}", String::from_utf8_lossy(&out.stderr));
    assert!(replayed.contains(&format!("replayed {dead} dead letters to group billing")), "{replayed}");
    assert!(Path::new(&dir).join(".herald-demo").exists());
}

/// Splits a command line the way a POSIX shell does for plain words and single quotes.
fn shell_split(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let (mut word, mut in_word, mut quoted) = (String::new(), false, false);
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// SIGTERM: the server stops accepting, ends open subscription streams, flushes and closes its
/// logs, and exits 0 promptly; everything acknowledged is there after a restart.
#[test]
fn sigterm_shuts_down_gracefully_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start_at(dir.path());
    let url = server.url();
    ok(&url, &["topic", "create", "orders", "--partitions", "3"]);
    let lines: String = (0..40).map(|i| format!("{{\"n\": {i}}}\n")).collect();
    ok_in(&url, &["publish", "orders", "--key", "k", "-"], Some(lines.as_bytes()));
    // A consumer holding an open Subscribe stream, waiting for more than there is.
    let mut consumer = command(&url, &["consume", "orders", "--group", "held", "--max", "1000", "--wait-ms", "60000"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning herald consume");
    std::thread::sleep(Duration::from_millis(500));

    let pid = server.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().expect("kill -TERM");
    assert!(killed.success());
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = server.child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "herald serve still running 15 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "herald serve exited with {status} after SIGTERM");
    // The stream ended with the server; the consumer is not left hanging on it forever.
    let _ = consumer.kill();
    let _ = consumer.wait();

    // A clean close leaves the logs marked clean; a restart serves every acknowledged event.
    let server = Server::start_at(dir.path());
    let out = ok(&server.url(), &["consume", "orders", "--group", "after", "--max", "40", "--json"]);
    let got: Vec<i64> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json line")["data"]["n"].as_i64().expect("n"))
        .collect();
    assert_eq!(got, (0..40).collect::<Vec<_>>(), "every acknowledged event, in key order");
}

/// Repro 4 of #8, was a bug: over `herald://` a damaged batch stalled `herald consume` for good
/// and it reported "the stream broke before the server confirmed the settlement". Now it stops
/// with the `corrupt` error and the command that steps over the damage; `herald group
/// skip-damaged` does that, keeping the stored bytes in the DLQ, and the group goes on.
#[test]
fn consume_reports_damaged_data_and_skip_damaged_steps_over_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start_at(dir.path());
    let url = server.url();
    ok(&url, &["topic", "create", "t", "--partitions", "1"]);
    for batch in 0..6 {
        let lines: String = (0..10).map(|i| format!("{{\"n\": {}}}\n", batch * 10 + i)).collect();
        ok_in(&url, &["publish", "t", "-"], Some(lines.as_bytes()));
    }
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill -TERM").success());
    assert!(server.child.wait().expect("wait").success());
    // One flipped byte in the fourth batch (offsets 30..39).
    let seg = std::fs::read_dir(dir.path().join("topics/t/partitions/0"))
        .expect("partition dir")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|x| x == "log"))
        .expect("a segment");
    let mut bytes = std::fs::read(&seg).expect("read segment");
    let at = bytes.len() * 7 / 12;
    bytes[at] ^= 0x40;
    std::fs::write(&seg, &bytes).expect("write segment");

    let server = Server::start_at(dir.path());
    let url = server.url();
    let out = run(&url, &["--json", "consume", "t", "--group", "g", "--max", "60", "--wait-ms", "20000"], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("corrupt") && stderr.contains("herald group skip-damaged g"), "{stderr}");
    assert!(!stderr.contains("stream broke"), "{stderr}");
    let before = String::from_utf8_lossy(&out.stdout).lines().count() as u64;
    assert!((20..=30).contains(&before), "consumed up to the damage: {before}");

    // The partition says what is wrong with it.
    let described = ok(&url, &["topic", "describe", "t"]);
    assert!(described.contains("STATE") && described.contains("damaged: damaged data at offset 30"), "{described}");
    let described = json(&url, &["topic", "describe", "t"]);
    assert!(described["partitions"][0]["problem"].as_str().is_some_and(|p| p.contains("CRC")), "{described}");

    let said = ok(&url, &["group", "skip-damaged", "g", "--topic", "t", "--partition", "0"]);
    assert!(said.contains(&format!("offsets {before}..40 of t/0")), "{said}");
    assert!(said.contains("herald dlq show --group g damaged-t-0-"), "{said}");
    let rest: Vec<i64> = consumed(&url, &["t", "--group", "g", "--max", "20", "--wait-ms", "5000"])
        .iter()
        .map(|v| v["data"]["n"].as_i64().expect("n"))
        .collect();
    assert_eq!(rest, (40..60).collect::<Vec<_>>());
    let letters = json(&url, &["dlq", "list", "--group", "g"]);
    let letters = letters.as_array().expect("array");
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["type"], "herald.damaged", "{letters:?}");
    assert!(letters[0]["reason"].as_str().expect("reason").starts_with("corrupt: offsets"), "{letters:?}");
}

/// One HTTP request on a new connection; `None` if the server closed it without an answer.
fn http_once(addr: &str, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    use std::io::Read;
    let mut conn = std::net::TcpStream::connect(addr).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer).ok()?;
    let status = answer.get(9..12)?.parse().ok()?;
    Some((status, answer.split_once("\r\n\r\n").map_or(String::new(), |(_, b)| b.to_owned())))
}

/// `http_once` until the server answers (a connection may be refused at the cap); panics after
/// 15 s.
fn http_answer(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(answer) = http_once(addr, method, path, body) {
            return answer;
        }
        assert!(std::time::Instant::now() < deadline, "{method} {path}: no answer for 15 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Repro 6 of #8, was a bug: at the descriptor limit `/healthz`, publish and topic creation
/// failed, and a topic created then was left half-made. Now a flood of idle connections is held
/// below the limit (max_connections is lowered to fit it) and health and admin answer from the
/// reserve; partitions that exhaust the descriptors fail their topic's creation cleanly, health
/// still answers, the rest keeps working, and a restart comes up.
#[test]
fn at_the_file_descriptor_limit_health_and_admin_still_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with_file_limit(dir.path(), 256);
    let http = server.http.clone();
    assert_eq!(http_answer(&http, "POST", "/v1/topics", r#"{"name":"small","partitions":1}"#).0, 201);

    // 300 idle connections: more than the process could hold.
    let flood: Vec<std::net::TcpStream> = (0..300).filter_map(|_| std::net::TcpStream::connect(&http).ok()).collect();
    assert!(flood.len() >= 200, "the flood opened {} connections", flood.len());
    assert_eq!(http_answer(&http, "GET", "/healthz", "").0, 200);
    let (status, topics) = http_answer(&http, "GET", "/v1/topics", "");
    assert_eq!(status, 200, "{topics}");
    assert!(topics.contains("small"), "{topics}");
    drop(flood);

    // Partitions that take every descriptor: the creation fails, nothing else does.
    let (status, body) = http_answer(&http, "POST", "/v1/topics", r#"{"name":"big","partitions":400}"#);
    assert!(status >= 500, "creating 400 partitions under 256 descriptors: {status} {body}");
    assert_eq!(http_answer(&http, "GET", "/healthz", "").0, 200);
    let event = r#"{"specversion":"1.0","id":"after","source":"/t","type":"t"}"#;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let mut conn = std::net::TcpStream::connect(&http).expect("connect");
        let request = format!(
            "POST /v1/topics/small/events HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: application/cloudevents+json\r\nContent-Length: {}\r\n\r\n{event}",
            event.len()
        );
        conn.write_all(request.as_bytes()).expect("write");
        let mut answer = String::new();
        let _ = std::io::Read::read_to_string(&mut conn, &mut answer);
        if answer.starts_with("HTTP/1.1 20") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "publishing still fails: {answer}");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(server);

    // The directory opens again, with `small` and its event; `big` is not half there.
    let server = Server::start_at(dir.path());
    let (_, topics) = http_answer(&server.http, "GET", "/v1/topics", "");
    assert!(topics.contains("small") && !topics.contains("\"big\""), "{topics}");
    let (_, events) = http_answer(&server.http, "GET", "/v1/topics/small/events?partition=0", "");
    assert!(events.contains("\"after\""), "{events}");
}

#[test]
fn schemas_are_added_checked_compared_and_enforced_from_the_cli() {
    let server = Server::start();
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    };
    ok(&url, &["topic", "create", "orders", "--partitions", "1"]);
    let v1 = file(
        "v1.json",
        r#"{"type": "object", "properties": {"id": {"type": "string"}, "total": {"type": "integer", "minimum": 0}}, "required": ["id", "total"]}"#,
    );
    let added = json(&url, &["schema", "add", "orders", "order.placed", "--json-schema", &v1]);
    assert_eq!((added["version"].as_u64(), added["format"].as_str()), (Some(1), Some("json_schema")), "{added}");

    // A bad event is refused with its path; a good one is stamped.
    let e = fails(&url, &["publish", "orders", "--type", "order.placed", r#"{"id": "a", "total": "x"}"#], None);
    assert!(e.contains("schema_invalid") || e.contains("/total"), "{e}");
    assert!(e.contains("/total"), "{e}");
    ok(&url, &["publish", "orders", "--type", "order.placed", r#"{"id": "a", "total": 3}"#]);

    // A required field breaks BACKWARD: `check` says where and exits 1; `add` refuses it.
    let v2 = file(
        "v2.json",
        r#"{"type": "object", "properties": {"id": {"type": "string"}, "total": {"type": "integer", "minimum": 0}, "coupon": {"type": "string"}}, "required": ["id", "total", "coupon"]}"#,
    );
    let out = run(&url, &["schema", "check", "orders", "order.placed", "--json-schema", &v2], None);
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("BACKWARD") && said.contains("/required") && said.contains("coupon"), "{said}");
    let e = fails(&url, &["schema", "add", "orders", "order.placed", "--json-schema", &v2], None);
    assert!(e.contains("coupon"), "{e}");
    // Optional is fine; diff shows the line and that FORWARD still holds.
    let v2 = file(
        "v2b.json",
        r#"{"type": "object", "properties": {"id": {"type": "string"}, "total": {"type": "integer", "minimum": 0}, "coupon": {"type": "string"}}, "required": ["id", "total"]}"#,
    );
    ok(&url, &["schema", "add", "orders", "order.placed", "--json-schema", &v2]);
    let diff = ok(&url, &["schema", "diff", "orders", "order.placed"]);
    assert!(diff.contains("+") && diff.contains("coupon"), "{diff}");
    assert!(diff.contains("BACKWARD (new readers, old data): compatible"), "{diff}");

    // Protobuf from .proto text, compiled by the CLI.
    let proto = file(
        "shop.proto",
        "syntax = \"proto3\";\npackage shop;\nmessage Shipped { string id = 1; int64 at_ms = 2; }\n",
    );
    let added = json(
        &url,
        &[
            "schema",
            "add",
            "orders",
            "order.shipped",
            "--proto",
            &proto,
            "--message",
            "shop.Shipped",
            "--compatibility",
            "FULL",
        ],
    );
    assert_eq!(
        (added["format"].as_str(), added["compatibility"].as_str()),
        (Some("protobuf"), Some("FULL")),
        "{added}"
    );
    let shown = ok(&url, &["schema", "show", "orders", "order.shipped"]);
    assert!(shown.contains("int64 at_ms = 2;"), "{shown}");
    // A change of format (only under NONE): diff says that neither rule holds, and why.
    let args = ["--proto", &proto, "--message", "shop.Shipped", "--compatibility", "NONE"];
    ok(&url, &[&["schema", "add", "orders", "order.placed"][..], &args].concat());
    let diff = ok(&url, &["schema", "diff", "orders", "order.placed"]);
    assert!(diff.contains("BACKWARD (new readers, old data): 1 problem"), "{diff}");
    assert!(diff.contains("FORWARD (old readers, new data): 1 problem"), "{diff}");
    assert!(diff.contains("format changed from"), "{diff}");
    let renumbered = file(
        "shop2.proto",
        "syntax = \"proto3\";\npackage shop;\nmessage Shipped { string id = 1; string at_ms = 2; }\n",
    );
    let out = run(
        &url,
        &["schema", "check", "orders", "order.shipped", "--proto", &renumbered, "--message", "shop.Shipped"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Shipped.at_ms"), "{out:?}");
    let e = fails(&url, &["schema", "add", "orders", "x", "--proto", &proto, "--message", "shop.Nope"], None);
    assert!(e.contains("shop.Shipped"), "the error lists the messages there are: {e}");

    let list = json(&url, &["schema", "list", "orders"]);
    assert_eq!(list["schemas"].as_array().unwrap().len(), 2, "{list}");
    let policy = json(&url, &["schema", "policy", "orders", "--unknown-types", "refuse"]);
    assert_eq!(policy["unknown_types"], "refuse");
    let e = fails(&url, &["publish", "orders", "--type", "order.other", "1"], None);
    assert!(e.contains("refuses unknown types"), "{e}");

    let doc = json(&url, &["asyncapi"]);
    assert_eq!(doc["asyncapi"], "3.0.0");
    assert!(doc["components"]["messages"]["orders.order.shipped"].is_object(), "{doc}");

    let deleted = json(&url, &["schema", "delete", "orders", "order.shipped"]);
    assert_eq!(deleted["deleted"], 1);
    let e = fails(&url, &["schema", "show", "orders", "order.shipped"], None);
    assert!(e.contains("schema_not_found") || e.contains("no schema"), "{e}");
}
