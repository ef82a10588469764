//! The OpenTelemetry messaging metrics, under their semantic-convention names and units, recorded
//! through the global meter provider while tracing is on ([`crate::enabled`]):
//!
//! | name | instrument | unit | recorded by |
//! | --- | --- | --- | --- |
//! | `messaging.client.sent.messages` | counter | `{message}` | the producer, per event sent |
//! | `messaging.client.operation.duration` | histogram | `s` | the producer, per batch sent |
//! | `messaging.client.consumed.messages` | counter | `{message}` | the runtime, per delivery handled |
//! | `messaging.process.duration` | histogram | `s` | the runtime, per handler run |
//!
//! Attributes: `messaging.system`, `messaging.operation.name`, `messaging.destination.name`,
//! `messaging.consumer.group.name` (consumer side) and `error.type` on failures — no event ids,
//! keys or offsets (nothing of high cardinality).

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::global;
use opentelemetry::metrics::{Counter, Histogram};

use crate::semconv;

/// `messaging.client.sent.messages`.
pub const SENT_MESSAGES: &str = "messaging.client.sent.messages";
/// `messaging.client.operation.duration`.
pub const OPERATION_DURATION: &str = "messaging.client.operation.duration";
/// `messaging.client.consumed.messages`.
pub const CONSUMED_MESSAGES: &str = "messaging.client.consumed.messages";
/// `messaging.process.duration`.
pub const PROCESS_DURATION: &str = "messaging.process.duration";

struct Instruments {
    sent: Counter<u64>,
    operation: Histogram<f64>,
    consumed: Counter<u64>,
    process: Histogram<f64>,
}

/// Made on first use after tracing is turned on, from the meter provider installed by then.
static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();

fn instruments() -> &'static Instruments {
    INSTRUMENTS.get_or_init(|| {
        let meter = global::meter("herald");
        Instruments {
            sent: meter.u64_counter(SENT_MESSAGES).with_unit("{message}").build(),
            operation: meter.f64_histogram(OPERATION_DURATION).with_unit("s").build(),
            consumed: meter.u64_counter(CONSUMED_MESSAGES).with_unit("{message}").build(),
            process: meter.f64_histogram(PROCESS_DURATION).with_unit("s").build(),
        }
    })
}

fn attributes(operation: &'static str, topic: &str, group: Option<&str>, error: Option<&str>) -> Vec<KeyValue> {
    let mut a = vec![
        KeyValue::new(semconv::MESSAGING_SYSTEM, semconv::SYSTEM),
        KeyValue::new(semconv::MESSAGING_OPERATION_NAME, operation),
        KeyValue::new(semconv::MESSAGING_DESTINATION_NAME, topic.to_owned()),
    ];
    if let Some(g) = group {
        a.push(KeyValue::new(semconv::MESSAGING_CONSUMER_GROUP_NAME, g.to_owned()));
    }
    if let Some(e) = error {
        a.push(KeyValue::new(semconv::ERROR_TYPE, e.to_owned()));
    }
    a
}

/// A producer sent `events` to `topic` in one batch that took `took`; `error` is the class of a
/// failure.
pub fn sent(topic: &str, events: usize, took: Duration, error: Option<&str>) {
    if !crate::enabled() {
        return;
    }
    let i = instruments();
    let a = attributes("send", topic, None, error);
    i.sent.add(events as u64, &a);
    i.operation.record(took.as_secs_f64(), &a);
}

/// The runtime handled a delivery of `topic` in `group`: the handler ran `took`; `error` is the
/// class of a failure.
pub fn processed(topic: &str, group: &str, took: Duration, error: Option<&str>) {
    if !crate::enabled() {
        return;
    }
    let i = instruments();
    i.consumed.add(1, &attributes("process", topic, Some(group), None));
    i.process.record(took.as_secs_f64(), &attributes("process", topic, Some(group), error));
}
