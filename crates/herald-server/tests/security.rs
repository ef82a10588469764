//! Who may do what (#10), against a real server with `[auth] mode = "token"`: a matrix of
//! principals × actions over HTTP and gRPC (allowed ones succeed, refused ones get
//! `permission_denied` worded the same whether or not the target exists), missing, wrong,
//! revoked and expired tokens, the failed-authentication limit per source address (an attacker
//! on 127.0.0.2 is cut off, a client on 127.0.0.1 is not), the Host/Origin check on loopback,
//! and a non-loopback listener without authentication refusing to start.

use std::time::Duration;

use herald_proto::v1::admin_client::AdminClient;
use herald_proto::v1::events_client::EventsClient;
use herald_proto::v1::{
    self, CreateTopicRequest, DlqListRequest, Empty, GroupName, PublishRequest, ReadRequest, TopicName,
};
use herald_server::auth::{AuthConfig, AuthMode, tokens};
use herald_server::{Server, ServerConfig};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

type TestResult = Result<(), Box<dyn std::error::Error>>;

struct Env {
    server: Server,
    http: reqwest::Client,
    channel: Channel,
    dir: tempfile::TempDir,
    admin: String,
    producer: String,
    billing: String,
    nobody: String,
}

async fn start() -> Result<Env, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mk = |name: &str, perms: &[&str]| {
        let perms: Vec<String> = perms.iter().map(|p| p.to_string()).collect();
        tokens::create(dir.path(), name, &perms, None).map(|t| t.token)
    };
    let admin = mk("admin", &["*:*"])?;
    let producer = mk("orders-api", &["publish:topic/orders"])?;
    let billing = mk("billing", &["consume:topic/orders", "consume:group/billing", "dlq:group/billing"])?;
    let nobody = mk("nobody", &[])?;
    let config = ServerConfig {
        data_dir: dir.path().to_owned(),
        http: "127.0.0.1:0".parse()?,
        grpc: "127.0.0.1:0".parse()?,
        auth: AuthConfig { mode: AuthMode::Token, failures_per_minute: 20, ..AuthConfig::default() },
        ..Default::default()
    };
    let server = Server::start(config).await?;
    let channel = Channel::from_shared(format!("http://{}", server.grpc_addr()))?.connect().await?;
    Ok(Env { server, http: reqwest::Client::new(), channel, dir, admin, producer, billing, nobody })
}

impl Env {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.http_addr())
    }

    /// One HTTP call with `token` (or none): status, code (`""` on success), body.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, String, serde_json::Value), Box<dyn std::error::Error>> {
        let mut r = self.http.request(method, self.url(path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            // Events go structured (CloudEvents JSON), everything else as plain JSON.
            let ty = if path.ends_with("/events") { "application/cloudevents+json" } else { "application/json" };
            r = r.header("content-type", ty).body(b.to_string());
        }
        let res = r.send().await?;
        let status = res.status().as_u16();
        let text = res.text().await?;
        let json: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        let code = if status < 300 { String::new() } else { json["code"].as_str().unwrap_or("?").to_owned() };
        Ok((status, code, json))
    }

    fn admin_client(
        &self,
        token: Option<&str>,
    ) -> AdminClient<tonic::service::interceptor::InterceptedService<Channel, Auth>> {
        AdminClient::with_interceptor(self.channel.clone(), Auth::new(token))
    }

    fn events_client(
        &self,
        token: Option<&str>,
    ) -> EventsClient<tonic::service::interceptor::InterceptedService<Channel, Auth>> {
        EventsClient::with_interceptor(self.channel.clone(), Auth::new(token))
    }
}

#[derive(Clone)]
struct Auth(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Auth {
    fn new(token: Option<&str>) -> Auth {
        Auth(token.map(|t| format!("Bearer {t}").parse().expect("a token is ASCII")))
    }
}

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            r.metadata_mut().insert("authorization", v.clone());
        }
        Ok(r)
    }
}

fn event(id: &str) -> serde_json::Value {
    serde_json::json!({"specversion": "1.0", "id": id, "source": "/test", "type": "t", "data": {"n": 1}})
}

fn wire_event(id: &str) -> v1::Event {
    v1::Event { id: id.into(), source: "/test".into(), r#type: "t".into(), ..Default::default() }
}

/// The Herald code of a gRPC result (`""` on success).
fn code<T>(r: &Result<tonic::Response<T>, tonic::Status>) -> String {
    match r {
        Ok(_) => String::new(),
        Err(s) => herald_proto::code_of(s).as_str().to_owned(),
    }
}

use reqwest::Method;

#[tokio::test]
async fn http_principals_may_do_what_their_permissions_say_and_nothing_else() -> TestResult {
    let env = start().await?;
    let (a, p, b, n) =
        (Some(env.admin.as_str()), Some(env.producer.as_str()), Some(env.billing.as_str()), Some(env.nobody.as_str()));
    let create = serde_json::json!({"name": "orders", "partitions": 1});
    // Topic admin: only admin.
    for who in [p, b, n] {
        let (s, c, _) = env.call(Method::POST, "/v1/topics", who, Some(create.clone())).await?;
        assert_eq!((s, c.as_str()), (403, "permission_denied"));
    }
    let (s, _, _) = env.call(Method::POST, "/v1/topics", a, Some(create.clone())).await?;
    assert_eq!(s, 201);
    let (s, _, body) =
        env.call(Method::POST, "/v1/topics", a, Some(serde_json::json!({"name": "payments", "partitions": 1}))).await?;
    assert_eq!(s, 201, "{body}");
    // Publish: admin and the producer, to orders only.
    let (s, c, _) = env.call(Method::POST, "/v1/topics/orders/events", p, Some(event("e1"))).await?;
    assert_eq!((s, c.as_str()), (201, ""));
    for who in [b, n] {
        let (s, c, _) = env.call(Method::POST, "/v1/topics/orders/events", who, Some(event("e2"))).await?;
        assert_eq!((s, c.as_str()), (403, "permission_denied"));
    }
    // No trace of what exists: an existing and a missing topic answer the same.
    let (_, c1, body1) = env.call(Method::POST, "/v1/topics/payments/events", p, Some(event("e3"))).await?;
    let (_, c2, body2) = env.call(Method::POST, "/v1/topics/no-such/events", p, Some(event("e3"))).await?;
    assert_eq!((c1.as_str(), c2.as_str()), ("permission_denied", "permission_denied"));
    let strip = |v: &serde_json::Value, name: &str| v["message"].as_str().unwrap_or_default().replace(name, "X");
    assert_eq!(strip(&body1, "payments"), strip(&body2, "no-such"), "same words either way");
    // Browse: billing (consume) and admin; not the producer.
    let (s, _, read) = env.call(Method::GET, "/v1/topics/orders/events", b, None).await?;
    assert_eq!(s, 200);
    assert_eq!(read["events"].as_array().map(Vec::len), Some(1));
    let (s, c, _) = env.call(Method::GET, "/v1/topics/orders/events", p, None).await?;
    assert_eq!((s, c.as_str()), (403, "permission_denied"));
    // Listings show only what a principal holds a permission on.
    let (_, _, all) = env.call(Method::GET, "/v1/topics", a, None).await?;
    assert!(all["topics"].as_array().is_some_and(|t| t.len() >= 2), "{all}");
    let (_, _, mine) = env.call(Method::GET, "/v1/topics", p, None).await?;
    assert_eq!(mine["topics"], serde_json::json!(["orders"]));
    let (_, _, none) = env.call(Method::GET, "/v1/topics", n, None).await?;
    assert_eq!(none["topics"], serde_json::json!([]));
    // Describe needs some permission on it.
    assert_eq!(env.call(Method::GET, "/v1/topics/orders", p, None).await?.0, 200);
    assert_eq!(env.call(Method::GET, "/v1/topics/payments", p, None).await?.1, "permission_denied");
    // A group's dead-letter and replay topics follow its `dlq` permission, not topic ones.
    let (_, c, _) = env.call(Method::GET, "/v1/topics/billing.dlq/events", b, None).await?;
    assert_eq!(c, "topic_not_found", "billing may look (there is none yet)");
    assert_eq!(env.call(Method::GET, "/v1/topics/billing.dlq/events", a, None).await?.1, "topic_not_found");
    assert_eq!(env.call(Method::GET, "/v1/topics/other.dlq/events", b, None).await?.1, "permission_denied");
    let (_, c, _) = env.call(Method::POST, "/v1/topics/billing.replay/events", a, Some(event("r1"))).await?;
    assert_eq!(c, "permission_denied", "nobody writes replays");
    // Dead letters: billing's own group only.
    assert_eq!(env.call(Method::GET, "/v1/groups/billing/dlq", b, None).await?.1, "group_not_found");
    assert_eq!(env.call(Method::GET, "/v1/groups/other/dlq", b, None).await?.1, "permission_denied");
    assert_eq!(env.call(Method::GET, "/v1/groups/billing/dlq", p, None).await?.1, "permission_denied");
    // Subscribing needs consume on the group and on every topic.
    let sub = |group: &str, topic: &str| format!("/v1/groups/{group}/subscribe?topic={topic}");
    assert_eq!(env.call(Method::GET, &sub("other", "orders"), b, None).await?.1, "permission_denied");
    assert_eq!(env.call(Method::GET, &sub("billing", "payments"), b, None).await?.1, "permission_denied");
    assert_eq!(env.call(Method::GET, &sub("billing", "orders"), p, None).await?.1, "permission_denied");
    let res = env.http.get(env.url(&sub("billing", "orders"))).bearer_auth(&env.billing).send().await?;
    assert_eq!(res.status().as_u16(), 200, "billing may subscribe");
    drop(res);
    // Group admin, metrics and deletion: admin only.
    let reset = serde_json::json!({"to": "earliest"});
    assert_eq!(env.call(Method::POST, "/v1/groups/billing/reset", b, Some(reset)).await?.1, "permission_denied");
    assert_eq!(env.call(Method::GET, "/metrics", b, None).await?.1, "permission_denied");
    assert_eq!(env.call(Method::GET, "/metrics", a, None).await?.0, 200);
    assert_eq!(env.call(Method::DELETE, "/v1/topics/orders", p, None).await?.1, "permission_denied");
    assert_eq!(env.call(Method::DELETE, "/v1/topics/payments", a, None).await?.0, 200);
    // whoami answers everyone with what they hold.
    let (s, _, me) = env.call(Method::GET, "/v1/whoami", b, None).await?;
    assert_eq!(s, 200);
    assert_eq!(me["principal"], "billing");
    assert_eq!(me["permissions"].as_array().map(Vec::len), Some(3));
    let (_, _, me) = env.call(Method::GET, "/v1/whoami", n, None).await?;
    assert_eq!(me["permissions"], serde_json::json!([]));
    // Probes need no token; readyz keeps its details for admins.
    let (s, _, ready) = env.call(Method::GET, "/readyz", None, None).await?;
    assert_eq!((s, ready.get("damaged").is_none()), (200, true), "{ready}");
    let (_, _, ready) = env.call(Method::GET, "/readyz", a, None).await?;
    assert!(ready.get("damaged").is_some(), "{ready}");
    assert_eq!(env.call(Method::GET, "/healthz", None, None).await?.0, 200);
    env.server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn grpc_principals_may_do_what_their_permissions_say_and_nothing_else() -> TestResult {
    let env = start().await?;
    let (a, p, b, n) =
        (Some(env.admin.as_str()), Some(env.producer.as_str()), Some(env.billing.as_str()), Some(env.nobody.as_str()));
    let create = |name: &str| CreateTopicRequest { name: name.into(), config: None, if_not_exists: false };
    for who in [p, b, n] {
        assert_eq!(code(&env.admin_client(who).create_topic(create("orders")).await), "permission_denied");
    }
    assert_eq!(code(&env.admin_client(a).create_topic(create("orders")).await), "");
    let publish = |topic: &str| PublishRequest { topic: topic.into(), events: vec![wire_event("g1")] };
    assert_eq!(code(&env.events_client(p).publish(publish("orders")).await), "");
    assert_eq!(code(&env.events_client(b).publish(publish("orders")).await), "permission_denied");
    assert_eq!(code(&env.events_client(p).publish(publish("no-such")).await), "permission_denied");
    assert_eq!(code(&env.events_client(p).publish(publish("bad name!")).await), "permission_denied");
    let read = ReadRequest { topic: "orders".into(), partition: 0, offset: 0, limit: 10 };
    assert_eq!(code(&env.events_client(b).read(read.clone()).await), "");
    assert_eq!(code(&env.events_client(p).read(read).await), "permission_denied");
    let names = env.admin_client(p).list_topics(v1::ListTopicsRequest::default()).await?.into_inner().names;
    assert_eq!(names, ["orders"]);
    let names = env.admin_client(n).list_topics(v1::ListTopicsRequest::default()).await?.into_inner().names;
    assert!(names.is_empty());
    let dlq = |g: &str| DlqListRequest { group: g.into(), max: 0 };
    assert_eq!(code(&env.admin_client(b).dlq_list(dlq("billing")).await), "group_not_found");
    assert_eq!(code(&env.admin_client(b).dlq_list(dlq("other")).await), "permission_denied");
    assert_eq!(code(&env.admin_client(b).dlq_purge(GroupName { group: "billing".into() }).await), "group_not_found");
    assert_eq!(code(&env.admin_client(p).describe_topic(TopicName { name: "orders".into() }).await), "");
    assert_eq!(code(&env.admin_client(b).delete_topic(TopicName { name: "orders".into() }).await), "permission_denied");
    // Subscribe: consume on the group and the topics, checked on Join.
    for (who, group, topic, expected) in [
        (b, "other", "orders", "permission_denied"),
        (p, "billing", "orders", "permission_denied"),
        (b, "billing", "orders", ""),
    ] {
        let join = v1::SubscribeRequest {
            msg: Some(v1::subscribe_request::Msg::Join(v1::Join {
                group: group.into(),
                settings: Some(v1::GroupSettings { topics: vec![topic.into()], ..Default::default() }),
                max_in_flight: 10,
                member_id: String::new(),
            })),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(join).await?;
        let r = env.events_client(who).subscribe(tokio_stream::wrappers::ReceiverStream::new(rx)).await;
        let got = match r {
            Err(s) => herald_proto::code_of(&s).as_str().to_owned(),
            Ok(res) => match res.into_inner().message().await {
                Ok(_) => String::new(),
                Err(s) => herald_proto::code_of(&s).as_str().to_owned(),
            },
        };
        assert_eq!(got, expected, "{group}/{topic}");
    }
    let me = env.admin_client(b).who_am_i(Empty {}).await?.into_inner();
    assert_eq!((me.principal.as_str(), me.anonymous, me.permissions.len()), ("billing", false, 3));
    env.server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn missing_wrong_revoked_and_expired_tokens_are_unauthenticated() -> TestResult {
    let env = start().await?;
    let short = tokens::create(env.dir.path(), "short", &["*:*".into()], Some(Duration::from_secs(2)))?.token;
    // None, garbage, a good-looking token of nobody: 401 / UNAUTHENTICATED.
    let (s, c, _) = env.call(Method::GET, "/v1/topics", None, None).await?;
    assert_eq!((s, c.as_str()), (401, "unauthenticated"));
    let res = env.http.get(env.url("/v1/topics")).send().await?;
    assert!(res.headers().get("www-authenticate").is_some_and(|v| v.as_bytes().starts_with(b"Bearer")));
    let forged = format!("hrd_{}_{}", "0".repeat(16), "0".repeat(64));
    for bad in [Some("nope"), Some(forged.as_str())] {
        assert_eq!(env.call(Method::GET, "/v1/topics", bad, None).await?.1, "unauthenticated");
        let r = env.admin_client(bad).list_topics(v1::ListTopicsRequest::default()).await;
        assert_eq!(code(&r), "unauthenticated");
        assert_eq!(r.unwrap_err().code(), tonic::Code::Unauthenticated);
    }
    assert_eq!(code(&env.admin_client(None).list_topics(v1::ListTopicsRequest::default()).await), "unauthenticated");
    // The new token works at once (the server re-reads the file), then expires.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while env.call(Method::GET, "/v1/whoami", Some(&short), None).await?.0 != 200 {
        assert!(std::time::Instant::now() < deadline, "a new token was not picked up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (s, c, body) = env.call(Method::GET, "/v1/whoami", Some(&short), None).await?;
        if s == 401 {
            assert_eq!(c, "unauthenticated");
            assert!(body["message"].as_str().is_some_and(|m| m.contains("expired")), "{body}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the token did not expire");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Revoked: refused within a second or so, with that said.
    assert_eq!(env.call(Method::GET, "/v1/whoami", Some(&env.billing), None).await?.0, 200);
    tokens::revoke(env.dir.path(), "billing")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (s, _, body) = env.call(Method::GET, "/v1/whoami", Some(&env.billing), None).await?;
        if s == 401 {
            assert!(body["message"].as_str().is_some_and(|m| m.contains("revoked")), "{body}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the revocation was not picked up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn ten_thousand_wrong_tokens_are_cut_off_per_address_and_others_keep_working() -> TestResult {
    let env = start().await?;
    let attacker = reqwest::Client::builder().local_address(std::net::IpAddr::from([127, 0, 0, 2])).build()?;
    let url = env.url("/v1/topics");
    let mut codes = std::collections::HashMap::<String, u32>::new();
    for i in 0..10_000u32 {
        let res = attacker.get(&url).bearer_auth(format!("guess-{i}")).send().await?;
        let status = res.status().as_u16();
        let body: serde_json::Value = res.json().await?;
        *codes.entry(format!("{status} {}", body["code"].as_str().unwrap_or("?"))).or_default() += 1;
        if i % 1000 == 0 {
            // Meanwhile the good client on 127.0.0.1 is served as usual.
            assert_eq!(env.call(Method::GET, "/v1/whoami", Some(&env.admin), None).await?.0, 200);
        }
    }
    // 20 failures a minute are looked at; the rest are refused unseen, with when to retry.
    assert_eq!(codes.get("401 unauthenticated"), Some(&20), "{codes:?}");
    assert_eq!(codes.get("429 quota_exceeded"), Some(&9_980), "{codes:?}");
    let res = attacker.get(&url).bearer_auth("one more guess").send().await?;
    assert_eq!(res.status().as_u16(), 429);
    assert!(res.headers().get("retry-after").is_some());
    // A valid token from the same address still passes: sharing it with an attacker locks nobody out.
    assert_eq!(attacker.get(&url).bearer_auth(&env.admin).send().await?.status().as_u16(), 200);
    assert_eq!(env.call(Method::GET, "/healthz", None, None).await?.0, 200);
    assert_eq!(env.call(Method::GET, "/v1/whoami", Some(&env.admin), None).await?.0, 200);
    env.server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_loopback_server_refuses_other_sites_hosts_and_origins() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = ServerConfig {
        data_dir: dir.path().to_owned(),
        http: "127.0.0.1:0".parse()?,
        grpc: "127.0.0.1:0".parse()?,
        ..Default::default()
    };
    let server = Server::start(config).await?;
    let url = format!("http://{}/v1/topics", server.http_addr());
    let http = reqwest::Client::new();
    // Anonymous access works on loopback (no setup)...
    assert_eq!(http.get(&url).send().await?.status().as_u16(), 200);
    assert_eq!(http.get(&url).header("Host", "localhost:7280").send().await?.status().as_u16(), 200);
    // ...but not for a page whose name was rebound to 127.0.0.1, nor from another site.
    for (header, value) in
        [("Host", "attacker.example"), ("Host", "attacker.example:7280"), ("Origin", "http://attacker.example")]
    {
        let res = http.post(&url).header(header, value).json(&serde_json::json!({"name": "x"})).send().await?;
        assert_eq!(res.status().as_u16(), 403, "{header}: {value}");
        let body: serde_json::Value = res.json().await?;
        assert_eq!(body["code"], "permission_denied");
        assert!(body["message"].as_str().is_some_and(|m| m.contains("allowed_hosts")), "{body}");
    }
    assert_eq!(http.get(&url).send().await?.json::<serde_json::Value>().await?["topics"], serde_json::json!([]));
    server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn anonymous_access_beyond_loopback_refuses_to_start_unless_allowed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = ServerConfig {
        data_dir: dir.path().to_owned(),
        http: "0.0.0.0:0".parse()?,
        grpc: "127.0.0.1:0".parse()?,
        ..Default::default()
    };
    let e = Server::start(config.clone()).await.err().ok_or("started without authentication on 0.0.0.0")?;
    assert!(e.to_string().contains("--allow-anonymous") && e.to_string().contains("--auth token"), "{e}");
    let mut allowed = config.clone();
    allowed.auth.allow_anonymous = true;
    Server::start(allowed).await?.shutdown().await?;
    let mut token = config;
    token.auth.mode = AuthMode::Token;
    Server::start(token).await?.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn admin_actions_refusals_and_token_changes_are_audited_and_read_back_through_a_group() -> TestResult {
    let env = start().await?;
    let (a, p, b) = (Some(env.admin.as_str()), Some(env.producer.as_str()), Some(env.billing.as_str()));
    env.call(Method::POST, "/v1/topics", a, Some(serde_json::json!({"name": "orders", "partitions": 1}))).await?;
    assert_eq!(env.call(Method::DELETE, "/v1/topics/orders", p, None).await?.1, "permission_denied");
    assert_eq!(env.call(Method::GET, "/v1/groups/billing/dlq", b, None).await?.1, "group_not_found");
    assert_eq!(env.call(Method::GET, "/v1/topics", Some("wrong"), None).await?.1, "unauthenticated");
    // Every group action is audited whatever its outcome (here: no such group).
    let reset = serde_json::json!({"to": "earliest"});
    assert_eq!(env.call(Method::POST, "/v1/groups/g1/reset", a, Some(reset)).await?.1, "group_not_found");
    let skip = serde_json::json!({"topic": "orders", "partition": 0});
    assert_eq!(env.call(Method::POST, "/v1/groups/g1/skip-damaged", a, Some(skip)).await?.1, "group_not_found");
    assert_eq!(env.call(Method::POST, "/v1/groups/g1/dlq/replay", a, None).await?.1, "group_not_found");
    assert_eq!(env.call(Method::DELETE, "/v1/groups/g1/dlq", a, None).await?.1, "group_not_found");
    let r = env.admin_client(a).delete_topic(TopicName { name: "orders".into() }).await;
    assert_eq!(code(&r), "");
    assert_eq!(
        code(&env.events_client(b).read(ReadRequest { topic: "x".into(), partition: 0, offset: 0, limit: 1 }).await),
        "permission_denied"
    );
    tokens::create(env.dir.path(), "late", &["publish:x".into()], None)?;
    tokens::revoke(env.dir.path(), "nobody")?;

    let expected = [
        ("admin", "http", "create_topic", "topic/orders", "ok"),
        ("orders-api", "http", "delete_topic", "topic/orders", "permission_denied"),
        ("billing", "http", "dlq_list", "group/billing", "group_not_found"),
        ("-", "http", "GET /v1/topics", "/v1/topics", "unauthenticated"),
        ("admin", "http", "reset_group", "group/g1", "group_not_found"),
        ("admin", "http", "skip_damaged", "group/g1", "group_not_found"),
        ("admin", "http", "dlq_replay", "group/g1", "group_not_found"),
        ("admin", "http", "dlq_purge", "group/g1", "group_not_found"),
        ("admin", "grpc", "delete_topic", "topic/orders", "ok"),
        ("billing", "grpc", "Read", "topic/x", "permission_denied"),
        ("-", "server", "token_created", "token/late", "ok"),
        ("-", "server", "token_revoked", "token/nobody", "ok"),
    ];
    // Read herald.audit as a consumer group would, until every expected record is there.
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tx.send(v1::SubscribeRequest {
        msg: Some(v1::subscribe_request::Msg::Join(v1::Join {
            group: "auditors".into(),
            settings: Some(v1::GroupSettings { topics: vec!["herald.audit".into()], ..Default::default() }),
            max_in_flight: 1000,
            member_id: String::new(),
        })),
    })
    .await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut records: Vec<serde_json::Value> = Vec::new();
    let found = |records: &[serde_json::Value]| {
        expected.iter().all(|(who, api, action, target, outcome)| {
            records.iter().any(|r| {
                r["principal"] == *who
                    && r["api"] == *api
                    && r["action"] == *action
                    && r["target"] == *target
                    && r["outcome"] == *outcome
            })
        })
    };
    // The topic appears with the first record: subscribe once it exists.
    loop {
        let topics = env.admin_client(a).list_topics(v1::ListTopicsRequest::default()).await?.into_inner().names;
        if topics.iter().any(|t| t == "herald.audit") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no herald.audit topic");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut stream =
        env.events_client(a).subscribe(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
    while !found(&records) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let msg = tokio::time::timeout(left, stream.message())
            .await
            .map_err(|_| format!("records so far: {records:#?}"))??;
        let Some(msg) = msg else { break };
        if let Some(v1::subscribe_response::Msg::Deliveries(d)) = msg.msg {
            let mut ids = Vec::new();
            for delivery in d.deliveries {
                ids.extend(delivery.id);
                let event = delivery.stored.and_then(|s| s.event).ok_or("a delivery without an event")?;
                assert_eq!(event.r#type, "herald.audit");
                records.push(serde_json::from_slice(&event.data)?);
            }
            // Acked: a principal's records are its key, and a key's next waits for the ack.
            let acks = v1::Acks { seq: records.len() as u64, ids, handler_micros: vec![] };
            tx.send(v1::SubscribeRequest { msg: Some(v1::subscribe_request::Msg::Acks(acks)) }).await?;
        }
    }
    assert!(found(&records), "{records:#?}");
    for r in &records {
        assert!(r["time_ms"].as_u64().is_some_and(|t| t > 0), "{r}");
        if r["api"] != "server" {
            assert_eq!(r["source"], "127.0.0.1", "{r}");
        }
    }
    // Reading the audit topic is a permission like any other.
    assert_eq!(env.call(Method::GET, "/v1/topics/herald.audit/events", b, None).await?.1, "permission_denied");
    env.server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_principal_over_its_quota_waits_while_others_publish_on() -> TestResult {
    let env = start().await?;
    let quotas = herald_server::auth::quotas::Quotas {
        publish_events_per_s: Some(100),
        subscriptions: Some(1),
        ..Default::default()
    };
    let slow_perms: Vec<String> =
        ["publish:orders", "consume:orders", "consume:group/slow*"].map(String::from).to_vec();
    let slow = tokens::create_with(env.dir.path(), "slow", &slow_perms, None, quotas)?.token;
    env.call(
        Method::POST,
        "/v1/topics",
        Some(&env.admin),
        Some(serde_json::json!({"name": "orders", "partitions": 2})),
    )
    .await?;
    // The server picks the new token up within a second or so.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while env.call(Method::GET, "/v1/whoami", Some(&slow), None).await?.0 != 200 {
        assert!(std::time::Instant::now() < deadline, "the new token was not picked up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let batch = |prefix: &str, n: usize| {
        serde_json::Value::Array((0..n).map(|i| event(&format!("{prefix}-{i}"))).collect()).to_string()
    };
    let post = |token: &str, body: String| {
        env.http
            .post(env.url("/v1/topics/orders/events"))
            .bearer_auth(token)
            .header("content-type", "application/cloudevents-batch+json")
            .body(body)
            .send()
    };
    // A second's worth passes at once (here more: the batch that empties the bucket passes whole).
    assert_eq!(post(&slow, batch("s1", 150)).await?.status().as_u16(), 201);
    let res = post(&slow, batch("s2", 10)).await?;
    assert_eq!(res.status().as_u16(), 429);
    let wait: u64 = res.headers().get("retry-after").ok_or("no Retry-After")?.to_str()?.parse()?;
    assert!((1..=2).contains(&wait), "{wait}");
    let body: serde_json::Value = res.json().await?;
    assert_eq!(body["code"], "quota_exceeded");
    // gRPC says the same.
    let r = env
        .events_client(Some(&slow))
        .publish(PublishRequest { topic: "orders".into(), events: vec![wire_event("g-1")] })
        .await;
    assert_eq!(code(&r), "quota_exceeded");
    assert_eq!(r.unwrap_err().code(), tonic::Code::ResourceExhausted);
    // Meanwhile another principal publishes at full speed.
    for i in 0..10 {
        assert_eq!(post(&env.admin, batch(&format!("a{i}"), 1000)).await?.status().as_u16(), 201);
    }
    // And after the wait, the slow one goes on.
    tokio::time::sleep(Duration::from_secs(wait + 1)).await;
    assert_eq!(post(&slow, batch("s3", 10)).await?.status().as_u16(), 201);

    // One subscription at a time.
    let sub = |group: &str| {
        env.http.get(env.url(&format!("/v1/groups/{group}/subscribe?topic=orders"))).bearer_auth(&slow).send()
    };
    let first = sub("slow-a").await?;
    assert_eq!(first.status().as_u16(), 200);
    let second = sub("slow-b").await?;
    assert_eq!(second.status().as_u16(), 429);
    assert_eq!(second.json::<serde_json::Value>().await?["code"], "quota_exceeded");
    drop(first);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let again = sub("slow-b").await?;
        if again.status().as_u16() == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the closed subscription kept its place");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn topics_and_partitions_a_principal_creates_are_counted_against_its_quota() -> TestResult {
    let env = start().await?;
    let quotas = herald_server::auth::quotas::Quotas { topics: Some(2), partitions: Some(6), ..Default::default() };
    let team = tokens::create_with(env.dir.path(), "team", &["admin:topic/team-*".into()], None, quotas)?.token;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while env.call(Method::GET, "/v1/whoami", Some(&team), None).await?.0 != 200 {
        assert!(std::time::Instant::now() < deadline, "the new token was not picked up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let create = |name: &str, partitions: u32| serde_json::json!({"name": name, "partitions": partitions});
    assert_eq!(env.call(Method::POST, "/v1/topics", Some(&team), Some(create("team-a", 4))).await?.0, 201);
    let (s, c, body) = env.call(Method::POST, "/v1/topics", Some(&team), Some(create("team-b", 3))).await?;
    assert_eq!((s, c.as_str()), (400, "limit_exceeded"), "{body}");
    assert!(body["message"].as_str().is_some_and(|m| m.contains("partitions")), "{body}");
    // Over gRPC too; a topic that failed to be made takes no place.
    let grpc = |name: &str, partitions: u32| CreateTopicRequest {
        name: name.into(),
        config: Some(v1::TopicConfig { partitions: Some(partitions), ..Default::default() }),
        if_not_exists: false,
    };
    assert_eq!(code(&env.admin_client(Some(&team)).create_topic(grpc("team-b", 2)).await), "");
    assert_eq!(code(&env.admin_client(Some(&team)).create_topic(grpc("team-c", 1)).await), "limit_exceeded");
    // Others are not counted against it, and a deleted topic gives its place back.
    env.call(Method::POST, "/v1/topics", Some(&env.admin), Some(create("team-x", 8))).await?;
    assert_eq!(env.call(Method::DELETE, "/v1/topics/team-a", Some(&env.admin), None).await?.0, 200);
    assert_eq!(env.call(Method::POST, "/v1/topics", Some(&team), Some(create("team-c", 4))).await?.0, 201);
    env.server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn connections_are_counted_per_principal_across_both_apis() -> TestResult {
    let env = start().await?;
    let quotas = herald_server::auth::quotas::Quotas { connections: Some(1), ..Default::default() };
    let one = tokens::create_with(env.dir.path(), "one", &["publish:x".into()], None, quotas)?.token;
    let first = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while first.get(env.url("/v1/whoami")).bearer_auth(&one).send().await?.status().as_u16() != 200 {
        assert!(std::time::Instant::now() < deadline, "the new token was not picked up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Many requests on its one connection are fine.
    for _ in 0..5 {
        assert_eq!(first.get(env.url("/v1/whoami")).bearer_auth(&one).send().await?.status().as_u16(), 200);
    }
    // A second connection, HTTP or gRPC, is over the quota; other principals are not limited.
    let second = reqwest::Client::new();
    let res = second.get(env.url("/v1/whoami")).bearer_auth(&one).send().await?;
    assert_eq!(res.status().as_u16(), 429);
    assert_eq!(res.json::<serde_json::Value>().await?["code"], "quota_exceeded");
    assert_eq!(code(&env.admin_client(Some(&one)).who_am_i(Empty {}).await), "quota_exceeded");
    assert_eq!(second.get(env.url("/v1/whoami")).bearer_auth(&env.admin).send().await?.status().as_u16(), 200);
    // Once the first connection closes, its place is free.
    drop(first);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let fresh = reqwest::Client::new();
        if fresh.get(env.url("/v1/whoami")).bearer_auth(&one).send().await?.status().as_u16() == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the closed connection kept its place");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn open_streams_end_when_their_token_is_revoked() -> TestResult {
    let env = start().await?;
    env.call(
        Method::POST,
        "/v1/topics",
        Some(&env.admin),
        Some(serde_json::json!({"name": "orders", "partitions": 1})),
    )
    .await?;
    // An SSE stream and a gRPC stream, both as billing.
    let mut sse =
        env.http.get(env.url("/v1/groups/billing/subscribe?topic=orders")).bearer_auth(&env.billing).send().await?;
    assert_eq!(sse.status().as_u16(), 200);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(v1::SubscribeRequest {
        msg: Some(v1::subscribe_request::Msg::Join(v1::Join {
            group: "billing".into(),
            settings: Some(v1::GroupSettings { topics: vec!["orders".into()], ..Default::default() }),
            max_in_flight: 10,
            member_id: String::new(),
        })),
    })
    .await?;
    let mut grpc = env
        .events_client(Some(&env.billing))
        .subscribe(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    assert!(matches!(grpc.message().await?.and_then(|m| m.msg), Some(v1::subscribe_response::Msg::Joined(_))));

    tokens::revoke(env.dir.path(), "billing")?;
    // The gRPC stream ends with unauthenticated...
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match grpc.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(s) => return Some(s),
            }
        }
    })
    .await?;
    let status = end.ok_or("the gRPC stream ended without a status")?;
    assert_eq!(herald_proto::code_of(&status).as_str(), "unauthenticated", "{status:?}");
    assert!(status.message().contains("revoked"), "{status:?}");
    // ...and so does the SSE stream.
    let mut text = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !text.contains("unauthenticated") {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match tokio::time::timeout(left, sse.chunk()).await.map_err(|_| format!("SSE so far: {text}"))?? {
            Some(bytes) => text.push_str(&String::from_utf8_lossy(&bytes)),
            None => break,
        }
    }
    assert!(text.contains("unauthenticated") && text.contains("revoked"), "{text}");
    drop(tx);
    env.server.shutdown().await?;
    Ok(())
}
