//! Observability: one structured log line per handled event, and counters per outcome.
//!
//! A test binary of its own: `tracing` caches each call site's interest process-wide, so a
//! subscriber scoped to one test thread can miss lines while other tests run concurrently.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald::{CancellationToken, Event, HandlerError, TopicConfig};

/// Every handled event gets one structured log line with the documented fields, and the counters
/// move per outcome.
#[test]
fn every_event_is_logged_and_counted() {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt().json().with_writer(move || writer.clone()).finish();
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let report = tracing::subscriber::with_default(subscriber, || {
        metrics::with_local_recorder(&recorder, || {
            tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
                let client = herald::connect("mem://").await.unwrap();
                client.ensure_topic("t", TopicConfig::default()).await.unwrap();
                let p = client.producer();
                p.publish("t", Event::builder("ok.event").key("a").build().unwrap()).await.unwrap();
                p.publish("t", Event::builder("bad.event").key("b").build().unwrap()).await.unwrap();
                let stop = CancellationToken::new();
                let c = client.consumer("g").subscribe(["t"]).handler(|e: Event| async move {
                    if e.ty() == "bad.event" { Err(HandlerError::permanent("no")) } else { Ok(()) }
                });
                let h = tokio::spawn(c.run(stop.clone()));
                // (The group exists once the consumer has joined.)
                while client.lag("g").await.unwrap_or(1) > 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                stop.cancel();
                h.await.unwrap().unwrap()
            })
        })
    });
    assert_eq!((report.ok, report.dead_lettered), (1, 1));
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "handled")
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    for l in &lines {
        let f = &l["fields"];
        for field in [
            "event_id",
            "type",
            "topic",
            "partition",
            "offset",
            "group",
            "attempt",
            "latency_ms",
            "outcome",
            "correlation_id",
        ] {
            assert!(!f[field].is_null(), "field {field} missing in {f}");
        }
    }
    let outcomes: Vec<&str> = lines.iter().map(|l| l["fields"]["outcome"].as_str().unwrap()).collect();
    assert!(outcomes.contains(&"ok") && outcomes.contains(&"dlq"), "{outcomes:?}");
    let counters: Vec<(String, Vec<(String, String)>)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(k, _, _, _)| k.key().name() == "herald_consumer_events_total")
        .map(|(k, _, _, _)| {
            (k.key().name().to_owned(), k.key().labels().map(|l| (l.key().to_owned(), l.value().to_owned())).collect())
        })
        .collect();
    let has = |outcome: &str| counters.iter().any(|(_, labels)| labels.contains(&("outcome".into(), outcome.into())));
    assert!(has("ok") && has("dlq"), "{counters:?}");
}
