//! Herald's traces, following the OpenTelemetry messaging semantic conventions: the one place that
//! names spans and attributes, carries W3C trace context in events (`traceparent`/`tracestate`,
//! the CloudEvents distributed-tracing extension), and installs OTLP export.
//!
//! Every span Herald makes goes through [`Spans`]; nothing is built while tracing is off
//! ([`enabled`] is one relaxed atomic load), so a process that exports nothing pays nothing.
//! Tracing is on once [`install`] (feature `otlp`: what `herald serve` and the CLI call) set up
//! an exporter, or once an application that installed its own global tracer provider calls
//! [`enable`].
//!
//! Who makes which span (one trace per event):
//!
//! | span | kind | where |
//! | --- | --- | --- |
//! | `create <topic>` | producer | the SDK's producer, per event; its context goes into the event |
//! | `send <topic>` | producer | the SDK's producer, per batch, linked to each event's `create` |
//! | `publish <topic>` | server | the broker, per stored event |
//! | `deliver <topic>` | server | the broker, per delivery (attempt) to a group member |
//! | `process <topic>` | consumer | the consumer runtime, per attempt: child of and linked to `create` |
//! | `settle <topic>` | client | the consumer runtime: ack, nack or reject of one attempt |
//! | `dead_letter <topic>` | internal | the broker, per event stored in a DLQ |
//! | `replay <topic>` | internal | the broker, per dead letter sent back (linked to `create`) |
//!
//! The producer and the runtime also record the OpenTelemetry messaging metrics ([`metrics`]),
//! exported with the spans; their Prometheus counterparts (`herald_*`) are the `metrics` crate's.

#![deny(missing_docs)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use herald_core::{Event, EventBuilder};
use opentelemetry::global::BoxedTracer;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Link, SpanContext, SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue, global};
use opentelemetry_sdk::propagation::TraceContextPropagator;

pub use opentelemetry::context::FutureExt;
pub use opentelemetry::trace::Span;
pub use opentelemetry::{Context as TraceContext, KeyValue as Attribute};

#[cfg(feature = "otlp")]
mod export;
pub mod metrics;
#[cfg(feature = "otlp")]
pub use export::{Protocol, Telemetry, TelemetryConfig, TelemetryError, install};

/// Attribute names (OpenTelemetry semantic conventions for messaging, and Herald's own).
pub mod semconv {
    /// `herald`.
    pub const MESSAGING_SYSTEM: &str = "messaging.system";
    /// `create`, `send`, `receive`, `process` or `settle`.
    pub const MESSAGING_OPERATION_TYPE: &str = "messaging.operation.type";
    /// The operation's own name (`publish`, `deliver`, `ack`, `dead_letter`, …).
    pub const MESSAGING_OPERATION_NAME: &str = "messaging.operation.name";
    /// The topic.
    pub const MESSAGING_DESTINATION_NAME: &str = "messaging.destination.name";
    /// The partition.
    pub const MESSAGING_DESTINATION_PARTITION_ID: &str = "messaging.destination.partition.id";
    /// The consumer group.
    pub const MESSAGING_CONSUMER_GROUP_NAME: &str = "messaging.consumer.group.name";
    /// The event's id.
    pub const MESSAGING_MESSAGE_ID: &str = "messaging.message.id";
    /// The correlation id.
    pub const MESSAGING_MESSAGE_CONVERSATION_ID: &str = "messaging.message.conversation_id";
    /// Events in a batch.
    pub const MESSAGING_BATCH_MESSAGE_COUNT: &str = "messaging.batch.message_count";
    /// The member a delivery went to.
    pub const MESSAGING_CLIENT_ID: &str = "messaging.client.id";
    /// The event's offset in its partition.
    pub const HERALD_OFFSET: &str = "herald.offset";
    /// The delivery attempt, from 1.
    pub const HERALD_ATTEMPT: &str = "herald.attempt";
    /// Why an event failed or was dead-lettered.
    pub const HERALD_REASON: &str = "herald.reason";
    /// The class of an error (`retryable`, `permanent`, `timeout`, `panic`, a Herald code).
    pub const ERROR_TYPE: &str = "error.type";
    /// The value of [`MESSAGING_SYSTEM`].
    pub const SYSTEM: &str = "herald";
}

static ENABLED: AtomicBool = AtomicBool::new(false);
/// The tracer of the provider installed when tracing was turned on (taken once, not per span).
static TRACER: RwLock<Option<Arc<BoxedTracer>>> = RwLock::new(None);

fn tracer() -> Arc<BoxedTracer> {
    if let Some(t) = TRACER.read().expect("tracer lock poisoned").as_ref() {
        return t.clone();
    }
    let t = Arc::new(global::tracer("herald"));
    *TRACER.write().expect("tracer lock poisoned") = Some(t.clone());
    t
}

/// Whether Herald makes spans in this process.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Makes Herald create spans with the global tracer provider: call it after installing your
/// own provider (`opentelemetry::global::set_tracer_provider`). [`install`] calls it itself.
pub fn enable() {
    *TRACER.write().expect("tracer lock poisoned") = None;
    ENABLED.store(true, Ordering::Relaxed);
}

/// Stops making spans (the provider stays installed).
pub fn disable() {
    ENABLED.store(false, Ordering::Relaxed);
}

struct EventFields<'a>(&'a Event);

impl Extractor for EventFields<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.0.traceparent(),
            "tracestate" => self.0.tracestate(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

#[derive(Default)]
struct Fields {
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl Injector for Fields {
    fn set(&mut self, key: &str, value: String) {
        match key {
            "traceparent" => self.traceparent = Some(value),
            "tracestate" if !value.is_empty() => self.tracestate = Some(value),
            _ => {}
        }
    }
}

/// The trace context an event carries (its `create` span), if any and valid.
pub fn context_of(event: &Event) -> Option<Context> {
    event.traceparent()?;
    let cx = TraceContextPropagator::new().extract(&EventFields(event));
    cx.span().span_context().is_valid().then_some(cx)
}

/// The span context an event carries, for a link.
pub fn span_context_of(event: &Event) -> Option<SpanContext> {
    context_of(event).map(|cx| cx.span().span_context().clone())
}

/// Writes `cx`'s span into the builder as `traceparent` (and `tracestate`).
pub fn inject(cx: &Context, builder: EventBuilder) -> EventBuilder {
    let mut f = Fields::default();
    TraceContextPropagator::new().inject_context(cx, &mut f);
    let mut b = builder;
    if let Some(tp) = f.traceparent {
        b = b.traceparent(tp);
    }
    if let Some(ts) = f.tracestate {
        b = b.tracestate(ts);
    }
    b
}

/// A started span and its context (to parent other spans or run code in).
pub struct Started {
    /// The context holding the span: end it with [`Started::end`] or by dropping.
    pub cx: Context,
}

impl Started {
    /// Records an error on the span.
    pub fn fail(&self, error_type: &str, message: &str) {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new(semconv::ERROR_TYPE, error_type.to_owned()));
        span.set_status(Status::error(message.to_owned()));
    }

    /// Adds attributes.
    pub fn set(&self, attributes: Vec<KeyValue>) {
        self.cx.span().set_attributes(attributes);
    }

    /// Ends the span now (nothing for the context of an event whose trace is not sampled).
    pub fn end(self) {
        self.cx.span().end();
    }
}

/// What a span is about: where the event lives.
pub struct About<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The event.
    pub event: &'a Event,
}

fn base(op_type: &'static str, op_name: &'static str, about: &About<'_>) -> Vec<KeyValue> {
    let mut a = Vec::with_capacity(8);
    a.push(KeyValue::new(semconv::MESSAGING_SYSTEM, semconv::SYSTEM));
    a.push(KeyValue::new(semconv::MESSAGING_OPERATION_TYPE, op_type));
    a.push(KeyValue::new(semconv::MESSAGING_OPERATION_NAME, op_name));
    a.push(KeyValue::new(semconv::MESSAGING_DESTINATION_NAME, about.topic.to_owned()));
    a.push(KeyValue::new(semconv::MESSAGING_MESSAGE_ID, about.event.id().to_owned()));
    if let Some(c) = about.event.correlationid() {
        a.push(KeyValue::new(semconv::MESSAGING_MESSAGE_CONVERSATION_ID, c.to_owned()));
    }
    a
}

fn start(
    name: String,
    kind: SpanKind,
    parent: &Context,
    attributes: impl FnOnce() -> Vec<KeyValue>,
    links: Vec<Link>,
) -> Started {
    let tracer = tracer();
    let span = tracer.span_builder(name).with_kind(kind).with_links(links).start_with_context(&*tracer, parent);
    let cx = parent.with_span(span);
    // Attributes only for a span that is kept (the sampler decided): nothing is built for the rest.
    if cx.span().is_recording() {
        cx.span().set_attributes(attributes());
    }
    Started { cx }
}

/// Whether `parent` (an event's context) was not sampled: its spans are not kept (Herald follows
/// the decision made when the event was created, as parent-based samplers do), so none is made.
fn unsampled(parent: &Context) -> bool {
    let sc = parent.span().span_context().clone();
    sc.is_valid() && !sc.is_sampled()
}

/// The spans Herald makes. Every function returns `None` when tracing is off.
pub struct Spans;

impl Spans {
    /// `create <topic>`: a new event in a producer, child of the caller's current context.
    /// Returns the event carrying the span's `traceparent` (the span is ended: creating is
    /// instant); the event as it was when tracing is off or it carries a trace context already.
    pub fn create(topic: &str, mut event: Event) -> Event {
        if !enabled() || event.traceparent().is_some() {
            return event;
        }
        let s = start(
            format!("create {topic}"),
            SpanKind::Producer,
            &Context::current(),
            || base("create", "create", &About { topic, event: &event }),
            Vec::new(),
        );
        let mut f = Fields::default();
        TraceContextPropagator::new().inject_context(&s.cx, &mut f);
        s.end();
        if let Some(tp) = f.traceparent {
            // An event at the size limit stays as it is (untraced) rather than fail.
            let _ = event.set_trace_context(tp, f.tracestate);
        }
        event
    }

    /// `send <topic>`: one batch leaving a producer, linked to each event's `create`.
    pub fn send(topic: &str, events: &[Event]) -> Option<Started> {
        if !enabled() {
            return None;
        }
        // Links only to the events whose trace is kept.
        let links: Vec<Link> =
            events.iter().filter_map(span_context_of).filter(SpanContext::is_sampled).map(Link::with_context).collect();
        let attributes = vec![
            KeyValue::new(semconv::MESSAGING_SYSTEM, semconv::SYSTEM),
            KeyValue::new(semconv::MESSAGING_OPERATION_TYPE, "send"),
            KeyValue::new(semconv::MESSAGING_OPERATION_NAME, "send"),
            KeyValue::new(semconv::MESSAGING_DESTINATION_NAME, topic.to_owned()),
            KeyValue::new(semconv::MESSAGING_BATCH_MESSAGE_COUNT, events.len() as i64),
        ];
        Some(start(format!("send {topic}"), SpanKind::Producer, &Context::current(), || attributes, links))
    }

    /// `publish <topic>`: the broker stores the event in `partition` (a child of its `create`);
    /// end it with [`Spans::published`] once stored.
    pub fn publish(topic: &str, event: &Event, partition: u32) -> Option<Started> {
        if !enabled() {
            return None;
        }
        let parent = context_of(event).filter(|p| !unsampled(p))?;
        let attributes = || {
            let mut a = base("send", "publish", &About { topic, event });
            a.push(KeyValue::new(semconv::MESSAGING_DESTINATION_PARTITION_ID, partition.to_string()));
            a
        };
        Some(start(format!("publish {topic}"), SpanKind::Server, &parent, attributes, Vec::new()))
    }

    /// Ends a `publish` span: stored at `offset` (`None`: the append failed with `error`).
    pub fn published(span: Started, offset: Option<u64>, error: Option<&str>) {
        match offset {
            Some(o) => span.set(vec![KeyValue::new(semconv::HERALD_OFFSET, o as i64)]),
            None => span.fail(error.unwrap_or("storage"), "the append failed"),
        }
        span.end();
    }

    /// `deliver <topic>`: the broker handed attempt `attempt` to `member` of `group`.
    pub fn deliver(topic: &str, event: &Event, partition: u32, offset: u64, group: &str, member: &str, attempt: u32) {
        if !enabled() {
            return;
        }
        let Some(parent) = context_of(event).filter(|p| !unsampled(p)) else { return };
        let attributes = || {
            let mut a = base("receive", "deliver", &About { topic, event });
            a.push(KeyValue::new(semconv::MESSAGING_DESTINATION_PARTITION_ID, partition.to_string()));
            a.push(KeyValue::new(semconv::HERALD_OFFSET, offset as i64));
            a.push(KeyValue::new(semconv::MESSAGING_CONSUMER_GROUP_NAME, group.to_owned()));
            a.push(KeyValue::new(semconv::MESSAGING_CLIENT_ID, member.to_owned()));
            a.push(KeyValue::new(semconv::HERALD_ATTEMPT, i64::from(attempt)));
            a
        };
        start(format!("deliver {topic}"), SpanKind::Server, &parent, attributes, Vec::new()).end();
    }

    /// `process <topic>`: one attempt of a handler, child of the event's `create` and linked to
    /// it; the handler runs in the returned context (for an event whose trace is not sampled,
    /// the event's context itself, so that what the handler publishes follows that decision).
    pub fn process(
        topic: &str,
        event: &Event,
        partition: u32,
        offset: u64,
        group: &str,
        attempt: u32,
    ) -> Option<Started> {
        if !enabled() {
            return None;
        }
        let creation = context_of(event);
        if let Some(parent) = creation.as_ref().filter(|p| unsampled(p)) {
            return Some(Started { cx: parent.clone() });
        }
        let links = creation.iter().map(|cx| Link::with_context(cx.span().span_context().clone())).collect();
        let parent = creation.unwrap_or_default();
        let attributes = || {
            let mut a = base("process", "process", &About { topic, event });
            a.push(KeyValue::new(semconv::MESSAGING_DESTINATION_PARTITION_ID, partition.to_string()));
            a.push(KeyValue::new(semconv::HERALD_OFFSET, offset as i64));
            a.push(KeyValue::new(semconv::MESSAGING_CONSUMER_GROUP_NAME, group.to_owned()));
            a.push(KeyValue::new(semconv::HERALD_ATTEMPT, i64::from(attempt)));
            a
        };
        Some(start(format!("process {topic}"), SpanKind::Consumer, &parent, attributes, links))
    }

    /// `settle <topic>`: `how` (`ack`, `nack`, `reject`) of one attempt, child of its `process`.
    pub fn settle(process: &Started, topic: &str, event: &Event, group: &str, how: &'static str) -> Started {
        if unsampled(&process.cx) {
            return Started { cx: process.cx.clone() };
        }
        let attributes = || {
            let mut a = base("settle", how, &About { topic, event });
            a.push(KeyValue::new(semconv::MESSAGING_CONSUMER_GROUP_NAME, group.to_owned()));
            a
        };
        start(format!("settle {topic}"), SpanKind::Client, &process.cx, attributes, Vec::new())
    }

    /// `dead_letter <topic>`: the broker stored the event in `group`'s DLQ (child of `create`).
    pub fn dead_letter(topic: &str, event: &Event, group: &str, reason: &str, attempts: u32) {
        if !enabled() {
            return;
        }
        let Some(parent) = context_of(event).filter(|p| !unsampled(p)) else { return };
        let attributes = || {
            let mut a = base("settle", "dead_letter", &About { topic, event });
            a.push(KeyValue::new(semconv::MESSAGING_CONSUMER_GROUP_NAME, group.to_owned()));
            a.push(KeyValue::new(semconv::HERALD_REASON, reason.to_owned()));
            a.push(KeyValue::new(semconv::HERALD_ATTEMPT, i64::from(attempts)));
            a
        };
        start(format!("dead_letter {topic}"), SpanKind::Internal, &parent, attributes, Vec::new()).end();
    }

    /// `replay <topic>`: a dead letter of `group` sent back as `replay_topic`@`offset`; a child
    /// of the event's `create`, and linked to it.
    pub fn replay(topic: &str, event: &Event, group: &str, replay_topic: &str, offset: u64) {
        if !enabled() {
            return;
        }
        let Some(parent) = context_of(event).filter(|p| !unsampled(p)) else { return };
        let link = Link::with_context(parent.span().span_context().clone());
        let attributes = || {
            let mut a = base("send", "replay", &About { topic, event });
            a.push(KeyValue::new(semconv::MESSAGING_CONSUMER_GROUP_NAME, group.to_owned()));
            a.push(KeyValue::new("herald.replay.topic", replay_topic.to_owned()));
            a.push(KeyValue::new(semconv::HERALD_OFFSET, offset as i64));
            a
        };
        start(format!("replay {topic}"), SpanKind::Internal, &parent, attributes, vec![link]).end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_context_round_trips_through_an_event() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let e = Event::builder("t").traceparent(tp).tracestate("k=v").build().unwrap();
        let cx = context_of(&e).expect("valid");
        let back = inject(&cx, Event::builder("t")).build().unwrap();
        assert_eq!(back.traceparent(), Some(tp));
        assert_eq!(back.tracestate(), Some("k=v"));
        let bad = Event::builder("t").traceparent("00-zz-zz-01").build();
        if let Ok(bad) = bad {
            assert!(context_of(&bad).is_none());
        }
    }

    #[test]
    fn off_makes_nothing() {
        disable();
        let e = Event::builder("t").build().unwrap();
        assert_eq!(Spans::create("t", e.clone()), e);
        assert!(Spans::send("t", std::slice::from_ref(&e)).is_none());
        assert!(Spans::process("t", &e, 0, 0, "g", 1).is_none());
    }
}
