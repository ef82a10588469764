//! Schemas over HTTP against a real server: registration with compatibility checks, validation
//! on every publish mode (a batch with one invalid event stores nothing), `dataschema` stamped
//! on valid events, the policy for unknown types, and all of it after a restart.

use herald_server::{Server, ServerConfig};
use serde_json::{Value, json};

struct Env {
    server: Option<Server>,
    base: String,
    http: reqwest::Client,
    dir: tempfile::TempDir,
}

async fn start_in(dir: tempfile::TempDir) -> Env {
    let config = ServerConfig {
        data_dir: dir.path().to_owned(),
        http: "127.0.0.1:0".parse().unwrap(),
        grpc: "127.0.0.1:0".parse().unwrap(),
        console: false,
        ..Default::default()
    };
    let server = Server::start(config).await.unwrap();
    let base = format!("http://{}", server.http_addr());
    Env { server: Some(server), base, http: reqwest::Client::new(), dir }
}

impl Env {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let res = r.send().await.unwrap();
        let status = res.status().as_u16();
        (status, serde_json::from_slice(&res.bytes().await.unwrap()).unwrap_or(Value::Null))
    }

    async fn batch(&self, topic: &str, events: &[Value]) -> (u16, Value) {
        let res = self
            .http
            .post(format!("{}/v1/topics/{topic}/events", self.base))
            .header("content-type", "application/cloudevents-batch+json")
            .body(serde_json::to_vec(events).unwrap())
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, serde_json::from_slice(&res.bytes().await.unwrap()).unwrap_or(Value::Null))
    }

    async fn restart(mut self) -> Env {
        self.server.take().unwrap().shutdown().await.unwrap();
        start_in(self.dir).await
    }
}

fn order(id: &str, total: Value) -> Value {
    json!({ "specversion": "1.0", "id": id, "source": "/t", "type": "order.placed", "datacontenttype": "application/json",
            "data": { "id": id, "total": total } })
}

fn schema() -> Value {
    json!({ "type": "object", "properties": { "id": { "type": "string" }, "total": { "type": "integer", "minimum": 0 } },
            "required": ["id", "total"] })
}

#[tokio::test]
async fn events_are_validated_on_publish_and_schemas_evolve_by_their_rule() {
    let env = start_in(tempfile::tempdir().unwrap()).await;
    let post = reqwest::Method::POST;
    let (s, _) = env.call(post.clone(), "/v1/topics", Some(json!({ "name": "orders", "partitions": 2 }))).await;
    assert_eq!(s, 201);
    let (s, v1) = env
        .call(post.clone(), "/v1/topics/orders/schemas", Some(json!({ "type": "order.placed", "schema": schema() })))
        .await;
    assert_eq!(s, 200, "{v1}");
    assert_eq!((v1["version"].as_u64(), v1["compatibility"].as_str()), (Some(1), Some("BACKWARD")));

    // A batch with one invalid event: refused with its path and version, nothing stored.
    let (s, e) = env.batch("orders", &[order("a", json!(5)), order("b", json!("five"))]).await;
    assert_eq!((s, e["code"].as_str()), (400, Some("schema_invalid")), "{e}");
    let m = e["message"].as_str().unwrap();
    assert!(m.contains("/total") && m.contains("version 1") && m.contains("event 1"), "{m}");
    let (_, t) = env.call(reqwest::Method::GET, "/v1/topics/orders", None).await;
    let stored: u64 = t["partitions"].as_array().unwrap().iter().map(|p| p["latest_offset"].as_u64().unwrap()).sum();
    assert_eq!(stored, 0, "nothing of the batch was stored");

    // Valid events are stamped with the version they matched (binary mode too).
    let (s, r) = env.batch("orders", &[order("a", json!(5))]).await;
    assert_eq!(s, 201, "{r}");
    let res = env
        .http
        .post(format!("{}/v1/topics/orders/events", env.base))
        .header("ce-specversion", "1.0")
        .header("ce-id", "c")
        .header("ce-source", "/t")
        .header("ce-type", "order.placed")
        .header("content-type", "application/json")
        .body(r#"{"id": "c", "total": -1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400, "binary mode is validated too");
    let res = env
        .http
        .post(format!("{}/v1/topics/orders/events", env.base))
        .header("content-type", "application/cloudevents+json")
        .body(serde_json::to_vec(&order("s", json!(-2))).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400, "structured mode is validated too");
    let e: Value = res.json().await.unwrap();
    assert!(e["message"].as_str().unwrap().contains("/total"), "{e}");
    let (_, read) = env
        .call(
            reqwest::Method::GET,
            &format!("/v1/topics/orders/events?partition={}", r["receipts"][0]["partition"]),
            None,
        )
        .await;
    assert_eq!(read["events"][0]["event"]["dataschema"], v1["dataschema"], "{read}");
    assert_eq!(v1["dataschema"], "herald:/v1/topics/orders/schemas/order.placed/versions/1");

    // Adding a required field breaks BACKWARD: refused naming it; `check` says so without registering.
    let mut required = schema();
    required["properties"]["coupon"] = json!({ "type": "string" });
    required["required"] = json!(["id", "total", "coupon"]);
    let body = json!({ "type": "order.placed", "schema": required });
    let (s, c) = env.call(post.clone(), "/v1/topics/orders/schemas/check", Some(body.clone())).await;
    assert_eq!((s, &c["compatible"]), (200, &json!(false)), "{c}");
    assert_eq!(
        (c["problems"][0]["rule"].as_str(), c["problems"][0]["path"].as_str()),
        (Some("BACKWARD"), Some("/required"))
    );
    let (s, e) = env.call(post.clone(), "/v1/topics/orders/schemas", Some(body)).await;
    assert_eq!((s, e["code"].as_str()), (409, Some("schema_incompatible")), "{e}");
    assert!(e["message"].as_str().unwrap().contains("coupon"), "{e}");
    let mut optional = schema();
    optional["properties"]["coupon"] = json!({ "type": "string" });
    let (s, v2) = env
        .call(post.clone(), "/v1/topics/orders/schemas", Some(json!({ "type": "order.placed", "schema": optional })))
        .await;
    assert_eq!((s, v2["version"].as_u64()), (200, Some(2)), "{v2}");
    let (s, e) = env
        .call(post.clone(), "/v1/topics/orders/schemas", Some(json!({ "type": "x", "schema": { "type": 7 } })))
        .await;
    assert_eq!((s, e["code"].as_str()), (400, Some("invalid_config")), "{e}");

    // Unknown types: allowed by default, refused once the policy says so.
    let other = json!({ "specversion": "1.0", "id": "o", "source": "/t", "type": "order.other", "data": 1 });
    assert_eq!(env.batch("orders", std::slice::from_ref(&other)).await.0, 201);
    let (s, p) = env
        .call(reqwest::Method::PUT, "/v1/topics/orders/schema-policy", Some(json!({ "unknown_types": "refuse" })))
        .await;
    assert_eq!((s, p["unknown_types"].as_str()), (200, Some("refuse")), "{p}");
    let (s, e) = env.batch("orders", &[other]).await;
    assert_eq!((s, e["code"].as_str()), (400, Some("schema_invalid")), "{e}");

    // All of it after a restart.
    let env = env.restart().await;
    let (_, l) = env.call(reqwest::Method::GET, "/v1/topics/orders/schemas", None).await;
    assert_eq!(l["policy"]["unknown_types"], "refuse", "{l}");
    assert_eq!(l["schemas"][0]["version"], 2);
    let (s, v) = env.call(reqwest::Method::GET, "/v1/topics/orders/schemas/order.placed/versions/1", None).await;
    assert_eq!((s, &v["schema"]), (200, &schema()));
    assert_eq!(env.batch("orders", &[order("z", json!(-3))]).await.0, 400);
    let (s, d) = env.call(reqwest::Method::DELETE, "/v1/topics/orders/schemas/order.placed", None).await;
    assert_eq!((s, d["deleted"].as_u64()), (200, Some(2)));
    let (s, e) = env.call(reqwest::Method::GET, "/v1/topics/orders/schemas/order.placed", None).await;
    assert_eq!((s, e["code"].as_str()), (404, Some("schema_not_found")), "{e}");
}

/// The registration body of `shop.Shipped` (`string id = 1; int64 at_ms = 2;`), compiled from
/// `.proto` text.
fn shipped_schema() -> Value {
    use prost::Message as _;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("s.proto"),
        "syntax = \"proto3\"; package shop; message Shipped { string id = 1; int64 at_ms = 2; }",
    )
    .unwrap();
    let set = protox::compile(["s.proto"], [dir.path()]).unwrap().encode_to_vec();
    json!({ "type": "order.shipped", "format": "protobuf", "schema": herald_schema::protobuf::document("shop.Shipped", &set) })
}

#[tokio::test]
async fn protobuf_events_are_validated_as_their_message() {
    let env = start_in(tempfile::tempdir().unwrap()).await;
    let post = reqwest::Method::POST;
    env.call(post.clone(), "/v1/topics", Some(json!({ "name": "orders", "partitions": 1 }))).await;
    let (s, v1) = env.call(post.clone(), "/v1/topics/orders/schemas", Some(shipped_schema())).await;
    assert_eq!((s, v1["format"].as_str()), (200, Some("protobuf")), "{v1}");
    let publish = |id: &'static str, body: &'static [u8]| {
        env.http
            .post(format!("{}/v1/topics/orders/events", env.base))
            .header("ce-specversion", "1.0")
            .header("ce-id", id)
            .header("ce-source", "/t")
            .header("ce-type", "order.shipped")
            .header("content-type", "application/protobuf")
            .body(body)
            .send()
    };
    // id = "a", at_ms = 5
    let ok = publish("p1", &[0x0a, 0x01, b'a', 0x10, 0x05]).await.unwrap();
    assert_eq!(ok.status().as_u16(), 201);
    // at_ms written as a string: refused with the field's path.
    let bad = publish("p2", &[0x12, 0x01, b'x']).await.unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    let e: Value = bad.json().await.unwrap();
    assert_eq!(e["code"], "schema_invalid", "{e}");
    assert!(e["message"].as_str().unwrap().contains("at at_ms"), "{e}");
    let (_, read) = env.call(reqwest::Method::GET, "/v1/topics/orders/events?partition=0", None).await;
    assert_eq!(read["events"].as_array().unwrap().len(), 1, "{read}");
    assert_eq!(read["events"][0]["event"]["dataschema"], v1["dataschema"], "{read}");

    // A change of a field's type is refused under BACKWARD, naming the field.
    let mut changed = shipped_schema();
    {
        use prost::Message as _;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("s.proto"),
            "syntax = \"proto3\"; package shop; message Shipped { string id = 1; string at_ms = 2; }",
        )
        .unwrap();
        let set = protox::compile(["s.proto"], [dir.path()]).unwrap().encode_to_vec();
        changed["schema"] = herald_schema::protobuf::document("shop.Shipped", &set);
    }
    let (s, e) = env.call(post.clone(), "/v1/topics/orders/schemas", Some(changed)).await;
    assert_eq!((s, e["code"].as_str()), (409, Some("schema_incompatible")), "{e}");
    assert!(e["message"].as_str().unwrap().contains("Shipped.at_ms"), "{e}");
    let text = env
        .http
        .get(format!("{}/v1/topics/orders/schemas/order.shipped/versions/1/text", env.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("package shop;\nmessage Shipped {") && text.contains("int64 at_ms = 2;"), "{text}");
    let env = env.restart().await;
    let (_, v) = env.call(reqwest::Method::GET, "/v1/topics/orders/schemas/order.shipped", None).await;
    assert_eq!((v["version"].as_u64(), v["format"].as_str()), (Some(1), Some("protobuf")), "{v}");
}

/// Problems the AsyncAPI 3.0 JSON Schema finds in `doc`.
fn asyncapi_problems(doc: &Value) -> Vec<String> {
    let spec: Value =
        serde_json::from_str(include_str!("fixtures/asyncapi-3.0.0.schema.json")).expect("the AsyncAPI schema is JSON");
    let validator = jsonschema::validator_for(&spec).expect("the AsyncAPI schema compiles");
    validator.iter_errors(doc).map(|e| format!("{}: {e}", e.instance_path())).collect()
}

#[tokio::test]
async fn the_asyncapi_document_describes_the_live_system_and_is_valid_asyncapi_3() {
    let env = start_in(tempfile::tempdir().unwrap()).await;
    let post = reqwest::Method::POST;
    env.call(post.clone(), "/v1/topics", Some(json!({ "name": "orders", "partitions": 2 }))).await;
    env.call(post.clone(), "/v1/topics", Some(json!({ "name": "payments", "partitions": 1 }))).await;
    let (s, _) = env
        .call(post.clone(), "/v1/topics/orders/schemas", Some(json!({ "type": "order.placed", "schema": schema() })))
        .await;
    assert_eq!(s, 200);
    env.call(reqwest::Method::PUT, "/v1/topics/payments/schema-policy", Some(json!({ "unknown_types": "refuse" })))
        .await;
    let (s, _) = env.call(post.clone(), "/v1/topics/payments/schemas", Some(shipped_schema())).await;
    assert_eq!(s, 200);
    // A group reading orders (made by its first subscription; closed at once).
    let r = env.http.get(format!("{}/v1/groups/billing/subscribe?topic=orders", env.base)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    drop(r);

    let (s, doc) = env.call(reqwest::Method::GET, "/v1/asyncapi.json", None).await;
    assert_eq!(s, 200, "{doc}");
    let problems = asyncapi_problems(&doc);
    assert!(problems.is_empty(), "not valid AsyncAPI 3.0: {problems:#?}\n{doc:#}");
    assert_eq!(doc["channels"]["orders"]["address"], "orders");
    assert_eq!(doc["components"]["messages"]["orders.order.placed"]["payload"]["schema"], schema());
    let shipped = &doc["components"]["messages"]["payments.order.shipped"];
    assert_eq!(shipped["payload"]["schemaFormat"], "application/vnd.google.protobuf;version=3", "{shipped}");
    assert!(shipped["payload"]["schema"].as_str().unwrap().contains("int64 at_ms = 2;"), "{shipped}");
    assert!(doc["channels"]["orders"]["messages"].get("cloudevent").is_some(), "orders allows unknown types");
    assert!(doc["channels"]["payments"]["messages"].get("cloudevent").is_none(), "payments refuses them");
    assert_eq!(doc["operations"]["receive.billing.orders"]["action"], "receive");
    assert_eq!(doc["operations"]["send.orders"]["channel"]["$ref"], "#/channels/orders");
    assert!(doc["channels"].get("billing.dlq").is_none(), "internal topics are left out");

    // The check can fail: a document without its version is refused.
    let mut broken = doc.clone();
    broken.as_object_mut().unwrap().remove("asyncapi");
    assert!(!asyncapi_problems(&broken).is_empty());
}
