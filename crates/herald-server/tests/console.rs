//! What the Console asks of the server, over real HTTP: its files under a strict policy (and
//! none with `console = false`), the session answer, the overview with the caller's permissions,
//! the stream of ticks and the lag chart, dead letters counted by reason and replayed or purged
//! by selection, browsing by time, and the live tail (filters, the rate limit, the stream limit).

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use herald_server::auth::{AuthConfig, AuthMode, tokens};
use herald_server::{Server, ServerConfig};
use serde_json::{Value, json};
use std::pin::Pin;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const PATIENCE: Duration = Duration::from_secs(15);

struct Env {
    _server: Server,
    base: String,
    http: reqwest::Client,
    token: Option<String>,
    _dir: tempfile::TempDir,
}

async fn start_with(tweak: impl FnOnce(&mut ServerConfig)) -> Result<Env, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut config = ServerConfig {
        data_dir: dir.path().to_owned(),
        http: "127.0.0.1:0".parse()?,
        grpc: "127.0.0.1:0".parse()?,
        ..Default::default()
    };
    tweak(&mut config);
    let server = Server::start(config).await?;
    let base = format!("http://{}", server.http_addr());
    Ok(Env { _server: server, base, http: reqwest::Client::new(), token: None, _dir: dir })
}

impl Env {
    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self.req(method, path);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let res = r.send().await.expect("a request");
        let status = res.status().as_u16();
        (status, serde_json::from_slice(&res.bytes().await.unwrap()).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn ok(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let (status, body) = self.call(method, path, body).await;
        assert!((200..300).contains(&status), "{path}: {status} {body}");
        body
    }

    async fn publish(&self, topic: &str, events: &[Value]) {
        let r = self
            .req(reqwest::Method::POST, &format!("/v1/topics/{topic}/events"))
            .header("content-type", "application/cloudevents-batch+json")
            .body(serde_json::to_vec(events).unwrap())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "publish: {}", r.status());
    }

    async fn sse(&self, path: &str) -> Sse {
        let r = self.req(reqwest::Method::GET, path).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        Sse { stream: Box::pin(r.bytes_stream()), buf: String::new() }
    }
}

fn event(id: &str, ty: &str, data: Value) -> Value {
    json!({ "specversion": "1.0", "id": id, "source": "/test", "type": ty, "partitionkey": id, "data": data })
}

struct Sse {
    stream: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    buf: String,
}

impl Sse {
    /// The next event (name, JSON data); `None` once the stream ended.
    async fn next(&mut self) -> Option<(String, Value)> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(pos) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..pos + 2).collect();
                let (mut name, mut data) = (String::from("message"), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim_start().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if data.is_empty() {
                    continue;
                }
                return Some((name, serde_json::from_str(&data).expect("SSE data is JSON")));
            }
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => panic!("no SSE event within {PATIENCE:?}"),
                Ok(None) | Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(chunk))) => self.buf.push_str(std::str::from_utf8(&chunk).unwrap()),
            }
        }
    }

    /// The next event, which must be named `name`.
    async fn expect(&mut self, name: &str) -> Value {
        let (got, data) = self.next().await.expect("the stream ended");
        assert_eq!(got, name, "{data}");
        data
    }
}

#[tokio::test]
async fn console_files_are_served_under_a_strict_policy_and_not_at_all_when_off() -> TestResult {
    let env = start_with(|_| {}).await?;
    let r = env.http.get(format!("{}/", env.base)).send().await?;
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"].to_str()?.starts_with("text/html"));
    let csp = r.headers()["content-security-policy"].to_str()?.to_owned();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert!(r.text().await?.contains("/console/app.js"));
    let r = env.http.get(format!("{}/console/app.js", env.base)).send().await?;
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"].to_str()?.starts_with("text/javascript"));
    for missing in ["/console/nope.js", "/console/..%2Fsrc%2Flib.rs", "/console/"] {
        let (status, body) = env.get(missing).await;
        assert_eq!(status, 404, "{missing}: {body}");
    }

    let off = start_with(|c| c.console = false).await?;
    for path in ["/", "/console/app.js", "/v1/console/overview", "/v1/console/stream"] {
        let (status, body) = off.get(path).await;
        assert_eq!((status, body["code"].as_str()), (404, Some("not_found")), "{path}: {body}");
    }
    // The API itself is unaffected.
    assert_eq!(off.get("/v1/topics").await.0, 200);
    Ok(())
}

#[tokio::test]
async fn the_session_overview_and_stream_show_what_the_caller_may_see_and_do() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mk = |name: &str, perms: &[&str]| {
        let perms: Vec<String> = perms.iter().map(|p| p.to_string()).collect();
        tokens::create(dir.path(), name, &perms, None).map(|t| t.token)
    };
    let (admin, reader) = (mk("admin", &["*:*"])?, mk("reader", &["consume:topic/orders*"])?);
    let path = dir.path().to_owned();
    let mut env = start_with(move |c| {
        c.data_dir = path;
        c.auth = AuthConfig { mode: AuthMode::Token, ..AuthConfig::default() };
    })
    .await?;

    // The files need no token; the session answers 200 either way.
    assert_eq!(env.http.get(format!("{}/", env.base)).send().await?.status().as_u16(), 200);
    let (status, s) = env.get("/v1/console/session").await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(
        (s["auth"].as_str(), &s["principal"], s["error"]["code"].as_str()),
        (Some("token"), &Value::Null, Some("unauthenticated"))
    );
    env.token = Some("wrong".into());
    let (status, s) = env.get("/v1/console/session").await;
    assert_eq!((status, s["error"]["code"].as_str()), (200, Some("unauthenticated")), "{s}");
    env.token = Some(reader.clone());
    let s = env.ok(reqwest::Method::GET, "/v1/console/session", None).await;
    assert_eq!(s["principal"]["name"], "reader");
    assert_eq!(s["error"], Value::Null);
    // Everything else still asks for a token.
    env.token = None;
    assert_eq!(env.get("/v1/console/overview").await.0, 401);

    env.token = Some(admin.clone());
    for (t, n) in [("orders", 2), ("orders-eu", 1), ("payments", 1)] {
        env.ok(reqwest::Method::POST, "/v1/topics", Some(json!({ "name": t, "partitions": n }))).await;
    }
    env.publish("orders", &[event("a", "order.placed", json!(1)), event("b", "order.placed", json!(2))]).await;
    let o = env.ok(reqwest::Method::GET, "/v1/console/overview", None).await;
    assert_eq!(o["totals"]["topics"], 3, "{o}");
    assert_eq!(o["may"]["create_topics"], true);
    let orders = o["topics"].as_array().unwrap().iter().find(|t| t["name"] == "orders").unwrap().clone();
    assert_eq!((orders["partitions"].as_u64(), orders["events"].as_u64()), (Some(2), Some(2)), "{orders}");
    assert_eq!(orders["may"], json!(["publish", "consume", "admin", "dlq"]));

    // The reader sees its topics only, may consume them, may create none.
    env.token = Some(reader.clone());
    let o = env.ok(reqwest::Method::GET, "/v1/console/overview", None).await;
    let names: Vec<&str> = o["topics"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["orders", "orders-eu"], "{o}");
    assert!(o["topics"].as_array().unwrap().iter().all(|t| t["may"] == json!(["consume"])), "{o}");
    assert_eq!(o["may"], json!({ "create_topics": false, "server_admin": false }));
    assert_eq!(o["damaged"], json!([]));

    // The stream: ticks a second apart with the reader's topics only, and rates.
    let mut stream = env.sse("/v1/console/stream").await;
    let first = stream.expect("tick").await;
    assert!(first["topics"].get("payments").is_none(), "{first}");
    env.token = Some(admin.clone());
    env.publish("orders", &[event("c", "order.placed", json!(3))]).await;
    let started = Instant::now();
    loop {
        let t = stream.expect("tick").await;
        if t["topics"]["orders"]["events"] == 3 {
            assert!(t["topics"]["orders"]["in_per_s"].as_f64().unwrap() > 0.0, "{t}");
            break;
        }
        assert!(started.elapsed() < PATIENCE, "the stream never showed the third event");
    }
    Ok(())
}

#[tokio::test]
async fn dead_letters_are_counted_by_reason_and_replayed_or_purged_by_selection() -> TestResult {
    let env = start_with(|_| {}).await?;
    env.ok(reqwest::Method::POST, "/v1/topics", Some(json!({ "name": "orders", "partitions": 1 }))).await;
    let reasons = ["card declined", "card declined", "address invalid", "card declined", "address invalid"];
    let events: Vec<Value> = (0..5).map(|i| event(&format!("e{i}"), "order.placed", json!(i))).collect();
    env.publish("orders", &events).await;
    let mut sub = env.sse("/v1/groups/billing/subscribe?topic=orders&from=earliest&max_in_flight=10").await;
    let member = sub.expect("joined").await["member"].as_str().unwrap().to_owned();
    let mut acks = Vec::new();
    for reason in reasons {
        let d = sub.expect("delivery").await;
        acks.push(json!({ "delivery": d["delivery"], "action": "reject", "reason": reason }));
    }
    env.ok(reqwest::Method::POST, "/v1/groups/billing/acks", Some(json!({ "member": member, "acks": acks }))).await;
    let deadline = Instant::now() + PATIENCE;
    let r = loop {
        let r = env.ok(reqwest::Method::GET, "/v1/groups/billing/dlq/reasons", None).await;
        if r["total"] == 5 {
            break r;
        }
        assert!(Instant::now() < deadline, "never 5 dead letters: {r}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(r["other"], 0);
    let counts: Vec<(String, u64)> = r["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["reason"].as_str().unwrap().to_owned(), c["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(counts, [("card declined".to_owned(), 3), ("address invalid".to_owned(), 2)]);
    let first = &r["reasons"][0];
    assert!(first["first_failure_ms"].as_i64().unwrap() > 0);
    assert!(first["last_failure_ms"].as_i64() >= first["first_failure_ms"].as_i64());

    // Listing one reason; replaying one reason: only those come back to the group.
    let l = env.ok(reqwest::Method::GET, "/v1/groups/billing/dlq?reason=address%20invalid", None).await;
    let ids: Vec<&str> =
        l["dead_letters"].as_array().unwrap().iter().map(|d| d["event"]["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["e2", "e4"]);
    let r = env.ok(reqwest::Method::POST, "/v1/groups/billing/dlq/replay?reason=card%20declined", None).await;
    assert_eq!(r, json!({ "replayed": 3 }));
    let mut again = Vec::new();
    for _ in 0..3 {
        let d = sub.expect("delivery").await;
        assert_eq!(d["topic"], "billing.replay");
        again.push(d["event"]["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(again, ["e0", "e1", "e3"]);
    let r = env.ok(reqwest::Method::GET, "/v1/groups/billing/dlq/reasons", None).await;
    assert_eq!((r["total"].as_u64(), r["reasons"][0]["reason"].as_str()), (Some(2), Some("address invalid")), "{r}");

    // Purging selected offsets: one of the two left.
    let l = env.ok(reqwest::Method::GET, "/v1/groups/billing/dlq", None).await;
    let letters = l["dead_letters"].as_array().unwrap();
    let (keep, purge) = (&letters[0], &letters[1]);
    let r =
        env.ok(reqwest::Method::DELETE, &format!("/v1/groups/billing/dlq?offsets={}", purge["dlq_offset"]), None).await;
    assert_eq!(r, json!({ "purged": 1 }));
    let l = env.ok(reqwest::Method::GET, "/v1/groups/billing/dlq", None).await;
    let left: Vec<&Value> = l["dead_letters"].as_array().unwrap().iter().map(|d| &d["event"]["id"]).collect();
    assert_eq!(left, [&keep["event"]["id"]]);

    // Bad selections.
    for (query, code) in [
        ("reason=a&offsets=1", "invalid_argument"),
        ("offsets=1,x", "invalid_argument"),
        ("nope=1", "invalid_argument"),
    ] {
        let (status, body) =
            env.call(reqwest::Method::POST, &format!("/v1/groups/billing/dlq/replay?{query}"), None).await;
        assert_eq!((status, body["code"].as_str()), (400, Some(code)), "{query}: {body}");
    }
    let many: Vec<String> = (0..=10_000).map(|i| i.to_string()).collect();
    let (status, body) =
        env.call(reqwest::Method::DELETE, &format!("/v1/groups/billing/dlq?offsets={}", many.join(",")), None).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("limit_exceeded")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("10000"), "{body}");
    Ok(())
}

#[tokio::test]
async fn events_are_browsed_from_a_time() -> TestResult {
    let env = start_with(|_| {}).await?;
    env.ok(reqwest::Method::POST, "/v1/topics", Some(json!({ "name": "t", "partitions": 1 }))).await;
    env.publish("t", &[event("old", "x", json!(1))]).await;
    let first = env.ok(reqwest::Method::GET, "/v1/topics/t/events", None).await;
    let old_ms = first["events"][0]["append_time_ms"].as_i64().unwrap();
    // The next append gets a later time.
    while herald_core::Timestamp::now().as_unix_millis() <= old_ms {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    env.publish("t", &[event("new", "x", json!(2))]).await;
    let second = env.ok(reqwest::Method::GET, "/v1/topics/t/events?offset=1", None).await;
    let new_ms = second["events"][0]["append_time_ms"].as_i64().unwrap();
    let r = env.ok(reqwest::Method::GET, &format!("/v1/topics/t/events?time={new_ms}"), None).await;
    let ids: Vec<&str> = r["events"].as_array().unwrap().iter().map(|e| e["event"]["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["new"]);
    let rfc = second["events"][0]["append_time"].as_str().unwrap().replace('+', "%2B");
    let r = env.ok(reqwest::Method::GET, &format!("/v1/topics/t/events?time={rfc}"), None).await;
    assert_eq!(r["events"][0]["event"]["id"], "new");
    let r = env.ok(reqwest::Method::GET, &format!("/v1/topics/t/events?time={}", new_ms + 60_000), None).await;
    assert_eq!((r["events"].as_array().map(Vec::len), r["next_offset"].as_u64()), (Some(0), Some(2)));
    for bad in ["time=yesterday", "time=1&offset=0"] {
        let (status, body) = env.get(&format!("/v1/topics/t/events?{bad}")).await;
        assert_eq!((status, body["code"].as_str()), (400, Some("invalid_argument")), "{bad}: {body}");
    }
    Ok(())
}

#[tokio::test]
async fn a_live_tail_sends_new_events_filtered_and_no_faster_than_its_limit() -> TestResult {
    let env = start_with(|c| {
        c.tail_events_per_s_max = 5;
        c.max_subscriptions = 2;
    })
    .await?;
    env.ok(reqwest::Method::POST, "/v1/topics", Some(json!({ "name": "orders", "partitions": 2 }))).await;
    env.publish("orders", &[event("before", "order.placed", json!(0))]).await;

    let mut tail = env.sse("/v1/topics/orders/tail?type=order.special&q=needle").await;
    let ready = tail.expect("ready").await;
    let from: u64 = ready["from"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(from, 1, "starts after what is stored: {ready}");
    env.publish(
        "orders",
        &[
            event("plain", "order.placed", json!("needle")),
            event("special-no", "order.special", json!("hay")),
            event("special-yes", "order.special", json!({ "text": "a needle here" })),
        ],
    )
    .await;
    let e = tail.expect("event").await;
    assert_eq!(e["event"]["id"], "special-yes", "{e}");
    assert!(e["offset"].is_u64() && e["partition"].is_u64());

    // Over the rate: 5 sent, the rest counted as skipped.
    let mut all = env.sse("/v1/topics/orders/tail").await;
    all.expect("ready").await;
    let burst: Vec<Value> = (0..20).map(|i| event(&format!("b{i}"), "order.placed", json!(i))).collect();
    env.publish("orders", &burst).await;
    let (mut sent, mut skipped) = (0, 0);
    while sent + skipped < 20 {
        match all.next().await.expect("the tail ended") {
            (name, _) if name == "event" => sent += 1,
            (name, d) if name == "skipped" => skipped += d["count"].as_u64().unwrap(),
            (name, d) => panic!("unexpected {name}: {d}"),
        }
    }
    assert!(sent <= 10, "{sent} sent within about a second; the limit is 5 a second");
    assert!(skipped >= 10, "{skipped} skipped");

    // Two streams open: a third tail is refused; a filter too long is refused.
    let (status, body) = env.get("/v1/topics/orders/tail").await;
    assert_eq!((status, body["code"].as_str()), (400, Some("limit_exceeded")), "{body}");
    drop(all);
    drop(tail);
    let long = "x".repeat(1025);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, body) = env.get(&format!("/v1/topics/orders/tail?q={long}")).await;
        if body["message"].as_str().is_some_and(|m| m.contains("max_subscriptions")) {
            assert!(Instant::now() < deadline, "the closed tails never gave their permits back");
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        assert_eq!((status, body["code"].as_str()), (400, Some("limit_exceeded")), "{body}");
        assert!(body["message"].as_str().unwrap().contains("1024"), "{body}");
        break;
    }
    let (status, body) = env.get("/v1/topics/nope/tail").await;
    assert_eq!((status, body["code"].as_str()), (404, Some("topic_not_found")), "{body}");
    Ok(())
}
