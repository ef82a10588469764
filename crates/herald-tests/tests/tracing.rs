//! Traces are the same on every backend: the trace context travels in the event itself, so a
//! consumer's `process` span is a child of the producer's `create` span over `file://` (where the
//! broker in this process adds its `publish` and `deliver` spans) and over `nats://` (JetStream:
//! no Herald broker, so the SDK's spans only). Spans are collected with the OpenTelemetry SDK's
//! in-memory exporter; the OTLP path is `herald-cli/tests/tracing.rs`. One test, because the
//! tracer provider is process-wide.

// Shared with the nats binary, which uses all of them.
#[allow(dead_code)]
#[path = "nats/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "nats/server.rs"]
mod server;

use std::time::{Duration, Instant};

use herald::{CancellationToken, Client, Event, TopicConfig};
use opentelemetry::trace::{SpanKind, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};

/// Publishes one event through the producer, handles it with the runtime, and returns the spans
/// of its trace once the `process` span ended.
async fn traced(client: &Client, exporter: &InMemorySpanExporter, topic: &str) -> (TraceId, Vec<SpanData>) {
    client.ensure_topic(topic, TopicConfig::default()).await.unwrap();
    let event = Event::builder("traced.event").key("k").build().unwrap();
    client.producer().publish(topic, event).await.unwrap();
    let stop = CancellationToken::new();
    let run =
        tokio::spawn(client.consumer("g").subscribe([topic]).handler(|_e: Event| async { Ok(()) }).run(stop.clone()));
    let deadline = Instant::now() + Duration::from_secs(20);
    let process = format!("process {topic}");
    let spans = loop {
        let spans = exporter.get_finished_spans().unwrap();
        if let Some(p) = spans.iter().find(|s| s.name == process) {
            let trace = p.span_context.trace_id();
            break spans.into_iter().filter(|s| s.span_context.trace_id() == trace).collect::<Vec<_>>();
        }
        assert!(Instant::now() < deadline, "no process span for {topic}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    stop.cancel();
    run.await.unwrap().unwrap();
    (spans[0].span_context.trace_id(), spans)
}

fn one<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    let found: Vec<&SpanData> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "{name} in {:?}", spans.iter().map(|s| &s.name).collect::<Vec<_>>());
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_crosses_file_and_nats_backends_in_the_event() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    herald::telemetry::enable();

    // file://: the broker runs here, so its spans join the trace.
    let dir = tempfile::tempdir().unwrap();
    let client = herald::connect(&format!("file://{}", dir.path().display())).await.unwrap();
    let (_, spans) = traced(&client, &exporter, "on-file").await;
    let create = one(&spans, "create on-file");
    assert_eq!(create.span_kind, SpanKind::Producer);
    for name in ["publish on-file", "deliver on-file", "process on-file"] {
        assert_eq!(one(&spans, name).parent_span_id, create.span_context.span_id(), "{name} is a child of create");
    }
    assert_eq!(one(&spans, "process on-file").span_kind, SpanKind::Consumer);
    assert_eq!(one(&spans, "settle on-file").parent_span_id, one(&spans, "process on-file").span_context.span_id());
    client.close().await.unwrap();

    // nats://: JetStream carries the event (and so its traceparent); the SDK's spans are the same.
    let nats = harness::Harness::nats();
    let client = nats.client().await;
    let (_, spans) = traced(&client, &exporter, "on-nats").await;
    let create = one(&spans, "create on-nats");
    let process = one(&spans, "process on-nats");
    assert_eq!(process.parent_span_id, create.span_context.span_id(), "process is a child of create over NATS");
    assert!(process.links.iter().any(|l| l.span_context.span_id() == create.span_context.span_id()));
    assert!(
        spans.iter().all(|s| !s.name.starts_with("publish") && !s.name.starts_with("deliver")),
        "no Herald broker on nats://"
    );
    client.close().await.unwrap();

    herald::telemetry::disable();
    provider.shutdown().unwrap();
}
