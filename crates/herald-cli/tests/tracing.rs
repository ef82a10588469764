//! Traces end to end: an OTLP receiver inside this test process (gRPC with tonic, HTTP/protobuf
//! with axum, both decoding the OpenTelemetry protobuf types) collects what a producer and a
//! consumer runtime in this process export over gRPC and what a spawned `herald serve` exports
//! over HTTP. One trace per event, with the messaging spans of every hop; an event that fails
//! three times shows three `process` spans and a `dead_letter` span in its trace, and its replay
//! links back to its creation.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald::{CancellationToken, Event, HandlerError, RetryPolicy, TopicConfig};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;

const BIN: &str = env!("CARGO_BIN_EXE_herald");

/// A span as received, with the service that sent it.
#[derive(Clone, Debug)]
struct Got {
    service: String,
    span: Span,
}

impl Got {
    fn attr(&self, key: &str) -> Option<String> {
        self.span.attributes.iter().find(|a| a.key == key).and_then(|a| match a.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            Value::IntValue(i) => Some(i.to_string()),
            Value::BoolValue(b) => Some(b.to_string()),
            Value::DoubleValue(d) => Some(d.to_string()),
            _ => None,
        })
    }

    fn kind(&self) -> SpanKind {
        SpanKind::try_from(self.span.kind).unwrap_or(SpanKind::Unspecified)
    }
}

#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Got>>>, Arc<Mutex<Vec<(String, String)>>>);

impl Received {
    fn add(&self, request: ExportTraceServiceRequest) {
        let mut all = self.0.lock().unwrap();
        for rs in request.resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    all.push(Got { service: service.clone(), span });
                }
            }
        }
    }

    /// Metric names received, with the unit each came with.
    fn add_metrics(&self, request: ExportMetricsServiceRequest) {
        let mut all = self.1.lock().unwrap();
        for rm in request.resource_metrics {
            for sm in rm.scope_metrics {
                all.extend(sm.metrics.into_iter().map(|m| (m.name, m.unit)));
            }
        }
    }

    fn in_trace(&self, trace_id: &[u8]) -> Vec<Got> {
        self.0.lock().unwrap().iter().filter(|g| g.span.trace_id == trace_id).cloned().collect()
    }
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.add(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

#[tonic::async_trait]
impl MetricsService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.add_metrics(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse { partial_success: None }))
    }
}

/// The receiver: an OTLP/gRPC and an OTLP/HTTP (protobuf) endpoint.
async fn receiver() -> (Received, SocketAddr, SocketAddr) {
    let received = Received::default();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_addr = grpc.local_addr().unwrap();
    let service = TraceServiceServer::new(received.clone());
    let metrics = MetricsServiceServer::new(received.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .add_service(metrics)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(grpc))
            .await
            .unwrap();
    });
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap();
    let (r, rm) = (received.clone(), received.clone());
    let app = axum::Router::new()
        .route(
            "/v1/metrics",
            axum::routing::post(move |body: axum::body::Bytes| {
                let r = rm.clone();
                async move {
                    match ExportMetricsServiceRequest::decode(body) {
                        Ok(req) => {
                            r.add_metrics(req);
                            let ok = ExportMetricsServiceResponse { partial_success: None };
                            (axum::http::StatusCode::OK, ok.encode_to_vec())
                        }
                        Err(e) => (axum::http::StatusCode::BAD_REQUEST, e.to_string().into_bytes()),
                    }
                }
            }),
        )
        .route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let r = r.clone();
                async move {
                    match ExportTraceServiceRequest::decode(body) {
                        Ok(req) => {
                            r.add(req);
                            (
                                axum::http::StatusCode::OK,
                                ExportTraceServiceResponse { partial_success: None }.encode_to_vec(),
                            )
                        }
                        Err(e) => (axum::http::StatusCode::BAD_REQUEST, e.to_string().into_bytes()),
                    }
                }
            }),
        );
    tokio::spawn(async move { axum::serve(http, app).await.unwrap() });
    (received, grpc_addr, http_addr)
}

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `herald serve` exporting to `otlp_http` over HTTP/protobuf; returns it and its gRPC address.
fn serve(dir: &std::path::Path, otlp_http: SocketAddr) -> (Serve, String) {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("HERALD_") || k.starts_with("OTEL_") {
            c.env_remove(k);
        }
    }
    let mut child = c
        .args(["serve", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("HERALD_LOG", "warn")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp_http}"))
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning herald serve");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(20)).expect("herald serve printed its listening line");
    let grpc = line.split_whitespace().find_map(|w| w.strip_prefix("grpc://")).expect("a grpc address").to_owned();
    (Serve(child), format!("herald://{grpc}"))
}

fn trace_id(e: &Event) -> Vec<u8> {
    let tp = e.traceparent().expect("the event carries its trace context");
    let hex = tp.split('-').nth(1).expect("a trace id");
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
}

fn names(spans: &[Got]) -> HashMap<String, usize> {
    let mut n = HashMap::new();
    for s in spans {
        *n.entry(s.span.name.clone()).or_default() += 1;
    }
    n
}

async fn wait_for(
    what: &str,
    telemetry: &herald::telemetry::Telemetry,
    received: &Received,
    id: &[u8],
    done: impl Fn(&HashMap<String, usize>) -> bool,
) -> Vec<Got> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // This process's spans now; the server exports every 100 ms (OTEL_BSP_SCHEDULE_DELAY).
        tokio::task::block_in_place(|| telemetry.flush());
        let spans = received.in_trace(id);
        if done(&names(&spans)) {
            return spans;
        }
        assert!(Instant::now() < deadline, "{what}: the trace holds only {:?}", names(&spans));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_per_event_across_producer_server_and_consumer() {
    let (received, otlp_grpc, otlp_http) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = serve(dir.path(), otlp_http);

    // This process (producer and consumer) exports over gRPC.
    let config = herald::telemetry::TelemetryConfig {
        endpoint: Some(format!("http://{otlp_grpc}")),
        protocol: Some(herald::telemetry::Protocol::Grpc),
        service_name: Some("orders-app".into()),
    };
    let telemetry = herald::telemetry::install(&config, "test").unwrap().expect("an endpoint was given");

    let client = herald::connect(&url).await.unwrap();
    client.ensure_topic("orders", TopicConfig::default()).await.unwrap();
    let good = Event::builder("order.created").key("k1").id("good").build().unwrap();
    let poison = Event::builder("order.created").key("k2").id("poison").build().unwrap();
    let producer = client.producer();
    producer.publish("orders", good).await.unwrap();
    producer.publish("orders", poison).await.unwrap();
    let stored = client.backend().read("orders", 0, 0, 10).await.unwrap();
    let by_id: HashMap<String, Event> = stored.into_iter().map(|s| (s.event.id().to_owned(), s.event)).collect();
    let (good_trace, poison_trace) = (trace_id(&by_id["good"]), trace_id(&by_id["poison"]));
    assert_ne!(good_trace, poison_trace, "one trace per event");

    // The poison event fails three times (then the DLQ); after a replay it succeeds.
    let fail = Arc::new(Mutex::new(true));
    let f2 = fail.clone();
    let stop = CancellationToken::new();
    let retry =
        RetryPolicy { max_attempts: 3, backoff_base_ms: 10, backoff_factor: 1.0, backoff_max_ms: 10, jitter: 0.0 };
    let consumer = client.consumer("billing").subscribe(["orders"]).retry(retry).handler(move |e: Event| {
        let fail = f2.clone();
        async move {
            if e.id() == "poison" && *fail.lock().unwrap() {
                Err(HandlerError::retryable("card declined"))
            } else {
                Ok(())
            }
        }
    });
    let run = tokio::spawn(consumer.run(stop.clone()));

    let spans = wait_for("the poison event's failures", &telemetry, &received, &poison_trace, |n| {
        n.get("process orders") == Some(&3) && n.get("dead_letter orders") == Some(&1)
    })
    .await;
    let create = spans.iter().find(|s| s.span.name == "create orders").expect("a create span");
    assert_eq!(create.kind(), SpanKind::Producer);
    assert_eq!(create.service, "orders-app");
    assert_eq!(create.attr("messaging.system").as_deref(), Some("herald"));
    assert_eq!(create.attr("messaging.operation.type").as_deref(), Some("create"));
    assert_eq!(create.attr("messaging.destination.name").as_deref(), Some("orders"));
    assert_eq!(create.attr("messaging.message.id").as_deref(), Some("poison"));
    let publish = spans.iter().find(|s| s.span.name == "publish orders").expect("the server's publish span");
    assert_eq!((publish.kind(), publish.service.as_str()), (SpanKind::Server, "herald-server"));
    assert_eq!(publish.span.parent_span_id, create.span.span_id, "publish is a child of create");
    assert_eq!(publish.attr("messaging.destination.partition.id").as_deref(), Some("0"));
    let delivers: Vec<&Got> = spans.iter().filter(|s| s.span.name == "deliver orders").collect();
    assert_eq!(delivers.len(), 3, "one deliver span per attempt");
    assert!(delivers.iter().all(|d| d.attr("messaging.consumer.group.name").as_deref() == Some("billing")));
    let mut attempts: Vec<String> =
        spans.iter().filter(|s| s.span.name == "process orders").map(|p| p.attr("herald.attempt").unwrap()).collect();
    attempts.sort();
    assert_eq!(attempts, ["1", "2", "3"]);
    for p in spans.iter().filter(|s| s.span.name == "process orders") {
        assert_eq!(p.kind(), SpanKind::Consumer);
        assert_eq!(p.span.parent_span_id, create.span.span_id, "process is a child of create");
        assert!(p.span.links.iter().any(|l| l.span_id == create.span.span_id), "process links to create");
        assert_eq!(p.attr("error.type").as_deref(), Some("retryable"));
        assert_eq!(p.attr("messaging.message.conversation_id").as_deref(), Some("poison"), "the correlation id");
    }
    let settles: Vec<String> = spans
        .iter()
        .filter(|s| s.span.name == "settle orders")
        .filter_map(|s| s.attr("messaging.operation.name"))
        .collect();
    assert_eq!(settles.iter().filter(|s| *s == "nack").count(), 2, "{settles:?}");
    assert_eq!(settles.iter().filter(|s| *s == "reject").count(), 1, "{settles:?}");
    let dead = spans.iter().find(|s| s.span.name == "dead_letter orders").unwrap();
    assert_eq!(dead.attr("herald.reason").as_deref(), Some("card declined"));

    // The good event: its own trace, processed once and acked.
    let good_spans = wait_for("the good event", &telemetry, &received, &good_trace, |n| {
        n.get("process orders") == Some(&1) && n.get("settle orders") == Some(&1) && n.contains_key("publish orders")
    })
    .await;
    // The batch's send span is a trace of its own, linked to each event's create span.
    let good_create = good_spans.iter().find(|s| s.span.name == "create orders").unwrap();
    let sends: Vec<Got> = received.0.lock().unwrap().iter().filter(|s| s.span.name == "send orders").cloned().collect();
    let send = sends
        .iter()
        .find(|s| s.span.links.iter().any(|l| l.span_id == good_create.span.span_id))
        .expect("a send span linked to the event's create span");
    assert_eq!(send.kind(), SpanKind::Producer);
    assert_eq!(send.attr("messaging.batch.message_count").as_deref(), Some("1"));

    // Replay: a replay span linked to the creation, then a fourth, successful process span.
    *fail.lock().unwrap() = false;
    assert_eq!(client.dlq_replay("billing").await.unwrap(), 1);
    let spans = wait_for("the replay", &telemetry, &received, &poison_trace, |n| {
        n.get("process billing.replay") == Some(&1) && n.contains_key("replay orders")
    })
    .await;
    let replay = spans.iter().find(|s| s.span.name == "replay orders").expect("a replay span");
    assert!(replay.span.links.iter().any(|l| l.span_id == create.span.span_id), "the replay links back to create");
    let again = spans.iter().find(|s| s.span.name == "process billing.replay").unwrap();
    assert_eq!(again.attr("error.type"), None, "the replayed event succeeded");
    assert_eq!(again.span.parent_span_id, create.span.span_id);

    // The messaging metrics under their OpenTelemetry names and units.
    tokio::task::block_in_place(|| telemetry.flush());
    let metrics: HashMap<String, String> = received.1.lock().unwrap().iter().cloned().collect();
    for (name, unit) in [
        ("messaging.client.sent.messages", "{message}"),
        ("messaging.client.operation.duration", "s"),
        ("messaging.client.consumed.messages", "{message}"),
        ("messaging.process.duration", "s"),
    ] {
        assert_eq!(metrics.get(name).map(String::as_str), Some(unit), "{name} in {metrics:?}");
    }

    stop.cancel();
    run.await.unwrap().unwrap();
    client.close().await.unwrap();

    // The same spans over mem://: the broker is in this process, so its spans come from here.
    let client = herald::connect("mem://").await.unwrap();
    client.ensure_topic("audit", TopicConfig::default()).await.unwrap();
    let receipt = client.producer().publish("audit", Event::builder("audit.logged").build().unwrap()).await.unwrap();
    let stored = client.backend().read("audit", receipt.partition, receipt.offset, 1).await.unwrap();
    let trace = trace_id(&stored[0].event);
    let stop = CancellationToken::new();
    let run = tokio::spawn(
        client.consumer("auditors").subscribe(["audit"]).handler(|_e: Event| async { Ok(()) }).run(stop.clone()),
    );
    let spans = wait_for("mem://", &telemetry, &received, &trace, |n| {
        ["create audit", "publish audit", "deliver audit", "process audit", "settle audit"]
            .iter()
            .all(|s| n.contains_key(*s))
    })
    .await;
    assert!(spans.iter().all(|s| s.service == "orders-app"), "every span from this process");
    stop.cancel();
    run.await.unwrap().unwrap();
    client.close().await.unwrap();
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await.unwrap();
}
