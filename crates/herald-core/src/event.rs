//! [`Event`] and [`EventBuilder`].

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Serialize;

use crate::limits::Limits;
use crate::timestamp::Timestamp;
use crate::validate::{EventError, validate};

/// The `source` a builder uses unless told otherwise.
pub const DEFAULT_SOURCE: &str = "/herald";

/// The CloudEvents version every [`Event`] has.
pub const SPECVERSION: &str = "1.0";

/// A CloudEvents 1.0 event, valid and immutable.
///
/// Every `Event` satisfies the invariants listed on [`EventError`] under the [`Limits`] it was
/// built or decoded with: make one with [`Event::builder`], [`crate::codec::binary::decode`] or
/// [`crate::codec::json::from_json`]. Cloning is cheap for `data`, which is shared.
///
/// Empty `data` means "no data": CloudEvents' distinction between absent and empty data is not
/// kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub(crate) id: String,
    pub(crate) source: String,
    pub(crate) ty: String,
    pub(crate) time: Option<Timestamp>,
    pub(crate) subject: Option<String>,
    pub(crate) datacontenttype: Option<String>,
    pub(crate) dataschema: Option<String>,
    pub(crate) data: Bytes,
    pub(crate) key: Option<String>,
    pub(crate) traceparent: Option<String>,
    pub(crate) tracestate: Option<String>,
    pub(crate) correlationid: Option<String>,
    pub(crate) causationid: Option<String>,
    pub(crate) headers: BTreeMap<String, String>,
}

/// A `dataschema` value checked once (an absolute URI), to stamp many events with
/// ([`Event::stamp_dataschema`]) without checking it again for each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSchema(String);

impl DataSchema {
    /// `schema`, if it is an absolute URI.
    pub fn new(schema: impl Into<String>) -> Result<DataSchema, EventError> {
        let schema = schema.into();
        crate::validate::check_dataschema(&schema)?;
        Ok(DataSchema(schema))
    }

    /// The URI.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Event {
    /// Starts an event of type `ty` with a new UUIDv7 `id`, `time` now, and
    /// `source` [`DEFAULT_SOURCE`].
    pub fn builder(ty: impl Into<String>) -> EventBuilder {
        EventBuilder {
            event: Event {
                id: uuid::Uuid::now_v7().to_string(),
                source: DEFAULT_SOURCE.to_owned(),
                ty: ty.into(),
                time: Some(Timestamp::now()),
                subject: None,
                datacontenttype: None,
                dataschema: None,
                data: Bytes::new(),
                key: None,
                traceparent: None,
                tracestate: None,
                correlationid: None,
                causationid: None,
                headers: BTreeMap::new(),
            },
            error: None,
        }
    }

    /// A builder holding every attribute of this event, `id` and `time` included; set a new
    /// [`EventBuilder::id`] when the result is a different event.
    pub fn to_builder(&self) -> EventBuilder {
        EventBuilder { event: self.clone(), error: None }
    }

    /// Sets the trace context (`traceparent`, `tracestate`): what a producer's tracing does to
    /// every event, so only these fields are checked (and the size under [`Limits::HARD`]), not
    /// the whole event again. On error the event is left as it was.
    pub fn set_trace_context(&mut self, traceparent: String, tracestate: Option<String>) -> Result<(), EventError> {
        crate::validate::check_trace(Some(&traceparent), tracestate.as_deref())?;
        let old = (self.traceparent.replace(traceparent), std::mem::replace(&mut self.tracestate, tracestate));
        let event_bytes = crate::codec::binary::encoded_len(self);
        if event_bytes > Limits::HARD.event_bytes_max {
            (self.traceparent, self.tracestate) = old;
            return Err(EventError::EventTooLarge { event_bytes, limit: Limits::HARD.event_bytes_max });
        }
        Ok(())
    }

    /// Sets `dataschema` (what a broker validating events does to each): only it is checked (and
    /// the size under [`Limits::HARD`]), not the whole event again. On error the event is left as
    /// it was.
    pub fn set_dataschema(&mut self, schema: String) -> Result<(), EventError> {
        crate::validate::check_dataschema(&schema)?;
        let old = self.dataschema.replace(schema);
        let event_bytes = crate::codec::binary::encoded_len(self);
        if event_bytes > Limits::HARD.event_bytes_max {
            self.dataschema = old;
            return Err(EventError::EventTooLarge { event_bytes, limit: Limits::HARD.event_bytes_max });
        }
        Ok(())
    }

    /// Sets `dataschema` to one checked beforehand (what a schema registry stamps on every event
    /// of a type): only the event's size is checked (under [`Limits::HARD`]). On error the event
    /// is left as it was.
    pub fn stamp_dataschema(&mut self, schema: &DataSchema) -> Result<(), EventError> {
        let old = self.dataschema.replace(schema.0.clone());
        let event_bytes = crate::codec::binary::encoded_len(self);
        if event_bytes > Limits::HARD.event_bytes_max {
            self.dataschema = old;
            return Err(EventError::EventTooLarge { event_bytes, limit: Limits::HARD.event_bytes_max });
        }
        Ok(())
    }

    /// Checks this event against other limits, e.g. a topic's stricter ones.
    pub fn check_limits(&self, limits: &Limits) -> Result<(), EventError> {
        validate(self, limits)
    }

    /// `id`: unique per `source`; a UUIDv7 unless set.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `source`: a URI-reference naming what produced the event.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// `type`, e.g. `order.created`.
    #[doc(alias = "type")]
    pub fn ty(&self) -> &str {
        &self.ty
    }

    /// `specversion`: always [`SPECVERSION`].
    pub fn specversion(&self) -> &'static str {
        SPECVERSION
    }

    /// `time`: when the occurrence happened.
    pub fn time(&self) -> Option<Timestamp> {
        self.time
    }

    /// `subject`: what the event is about, within `source`.
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    /// `datacontenttype`: the media type of `data`.
    pub fn datacontenttype(&self) -> Option<&str> {
        self.datacontenttype.as_deref()
    }

    /// `dataschema`: an absolute URI of the schema `data` adheres to.
    pub fn dataschema(&self) -> Option<&str> {
        self.dataschema.as_deref()
    }

    /// `data`: the payload; empty when there is none.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// The partition key (extension `partitionkey`): events with equal keys stay in order.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// `traceparent` (W3C Trace Context).
    pub fn traceparent(&self) -> Option<&str> {
        self.traceparent.as_deref()
    }

    /// `tracestate` (W3C Trace Context).
    pub fn tracestate(&self) -> Option<&str> {
        self.tracestate.as_deref()
    }

    /// `correlationid`: shared by all events of one business flow.
    pub fn correlationid(&self) -> Option<&str> {
        self.correlationid.as_deref()
    }

    /// `causationid`: the `id` of the event that caused this one.
    pub fn causationid(&self) -> Option<&str> {
        self.causationid.as_deref()
    }

    /// Free headers (the other extension attributes), ordered by name.
    pub fn headers(&self) -> &BTreeMap<String, String> {
        &self.headers
    }

    /// One header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Builds an [`Event`]; nothing is checked until [`EventBuilder::build`].
///
/// ```
/// use herald_core::Event;
///
/// let event = Event::builder("order.created")
///     .source("/shop/orders")
///     .subject("order-1001")
///     .key("customer-42")
///     .json(&serde_json::json!({ "total_cents": 4999 }))
///     .header("tenant", "acme")
///     .build()?;
/// assert_eq!(event.datacontenttype(), Some("application/json"));
/// assert_eq!(&event.data()[..], br#"{"total_cents":4999}"#);
/// # Ok::<(), herald_core::EventError>(())
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct EventBuilder {
    event: Event,
    /// The first error met while setting attributes (only [`EventBuilder::json`] can fail),
    /// reported by `build` so that the chain stays fluent.
    error: Option<EventError>,
}

impl EventBuilder {
    /// Sets `id`, replacing the generated UUIDv7.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.event.id = id.into();
        self
    }

    /// Sets `source`, a URI-reference such as `/shop/orders` or `urn:herald:billing`.
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.event.source = source.into();
        self
    }

    /// Sets `type`.
    #[doc(alias = "type")]
    pub fn ty(mut self, ty: impl Into<String>) -> Self {
        self.event.ty = ty.into();
        self
    }

    /// Sets `time`, or removes it with `None`.
    pub fn time(mut self, time: impl Into<Option<Timestamp>>) -> Self {
        self.event.time = time.into();
        self
    }

    /// Sets `subject`.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.event.subject = Some(subject.into());
        self
    }

    /// Sets `datacontenttype` alone; [`EventBuilder::data`] sets it with the data.
    pub fn datacontenttype(mut self, content_type: impl Into<String>) -> Self {
        self.event.datacontenttype = Some(content_type.into());
        self
    }

    /// Sets `dataschema`, an absolute URI.
    pub fn dataschema(mut self, schema: impl Into<String>) -> Self {
        self.event.dataschema = Some(schema.into());
        self
    }

    /// Sets `data` and its `datacontenttype`.
    pub fn data(mut self, data: impl Into<Bytes>, content_type: impl Into<String>) -> Self {
        self.event.data = data.into();
        self.event.datacontenttype = Some(content_type.into());
        self
    }

    /// Sets `data` to `value` serialized as JSON, and `datacontenttype` to `application/json`.
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(json) => {
                self.event.data = Bytes::from(json);
                self.event.datacontenttype = Some("application/json".to_owned());
            }
            Err(e) => {
                self.error.get_or_insert(EventError::JsonData { reason: e.to_string() });
            }
        }
        self
    }

    /// Sets the partition key (extension `partitionkey`).
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.event.key = Some(key.into());
        self
    }

    /// Sets `traceparent`, e.g. `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`.
    pub fn traceparent(mut self, traceparent: impl Into<String>) -> Self {
        self.event.traceparent = Some(traceparent.into());
        self
    }

    /// Sets `tracestate`.
    pub fn tracestate(mut self, tracestate: impl Into<String>) -> Self {
        self.event.tracestate = Some(tracestate.into());
        self
    }

    /// Sets `correlationid`.
    pub fn correlationid(mut self, id: impl Into<String>) -> Self {
        self.event.correlationid = Some(id.into());
        self
    }

    /// Sets `causationid`.
    pub fn causationid(mut self, id: impl Into<String>) -> Self {
        self.event.causationid = Some(id.into());
        self
    }

    /// Marks this event as caused by `cause`: `causationid` becomes `cause`'s id and
    /// `correlationid` is carried over (or starts at `cause`'s id).
    pub fn caused_by(mut self, cause: &Event) -> Self {
        self.event.causationid = Some(cause.id.clone());
        self.event.correlationid = Some(cause.correlationid.clone().unwrap_or_else(|| cause.id.clone()));
        self
    }

    /// Sets a header (extension attribute); names are `[a-z0-9]{1,20}` and not reserved.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.event.headers.insert(name.into(), value.into());
        self
    }

    /// Checks the event under the default [`Limits`] and returns it.
    pub fn build(self) -> Result<Event, EventError> {
        self.build_with(&Limits::default())
    }

    /// Checks the event under `limits` and returns it.
    pub fn build_with(self, limits: &Limits) -> Result<Event, EventError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        validate(&self.event, limits)?;
        Ok(self.event)
    }

    /// Returns the event of a record a Herald broker stored, which it validated before storing:
    /// checks only that `id`, `source` and `type` are not empty, and trusts the rest. This is
    /// how a client takes the events a server delivers (each is checked once, when published,
    /// not again on every delivery); anything else uses [`EventBuilder::build_with`].
    pub fn build_stored(self) -> Result<Event, EventError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let e = &self.event;
        if e.id.is_empty() {
            return Err(EventError::EmptyId);
        }
        if e.source.is_empty() {
            return Err(EventError::EmptySource);
        }
        if e.ty.is_empty() {
            return Err(EventError::EmptyType);
        }
        Ok(self.event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checked_dataschema_stamps_events_and_only_their_size_is_checked_again() {
        assert!(DataSchema::new("no-scheme").is_err());
        let d = DataSchema::new("herald:/v1/topics/t/schemas/t/versions/1").unwrap();
        let mut e = Event::builder("t").build().unwrap();
        e.stamp_dataschema(&d).unwrap();
        assert_eq!(e.dataschema(), Some(d.as_str()));
        let mut big = Event::builder("t")
            .data(vec![0u8; Limits::HARD.event_bytes_max - 100], "application/octet-stream")
            .build_with(&Limits::HARD)
            .unwrap();
        assert!(matches!(big.stamp_dataschema(&d), Err(EventError::EventTooLarge { .. })));
        assert_eq!(big.dataschema(), None, "left as it was");
    }

    #[test]
    fn a_dataschema_set_later_is_checked_and_a_refused_one_leaves_the_event_as_it_was() {
        let mut e = Event::builder("t").build().unwrap();
        e.set_dataschema("herald:/v1/topics/t/schemas/t/versions/1".into()).unwrap();
        assert_eq!(e.dataschema(), Some("herald:/v1/topics/t/schemas/t/versions/1"));
        let before = e.clone();
        assert!(matches!(e.set_dataschema("no-scheme".into()), Err(EventError::InvalidDataSchema { .. })));
        assert!(e.set_dataschema(String::new()).is_err());
        let huge = format!("herald:/{}", "x".repeat(Limits::HARD.event_bytes_max));
        assert!(matches!(e.set_dataschema(huge), Err(EventError::EventTooLarge { .. })));
        assert_eq!(e, before);
    }

    #[test]
    fn a_trace_context_is_checked_and_a_refused_one_leaves_the_event_as_it_was() {
        let mut e = Event::builder("t").build().unwrap();
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        e.set_trace_context(tp.into(), Some("k=v".into())).unwrap();
        assert_eq!((e.traceparent(), e.tracestate()), (Some(tp), Some("k=v")));
        let before = e.clone();
        assert!(matches!(e.set_trace_context("00-zz".into(), None), Err(EventError::InvalidTraceparent { .. })));
        assert!(e.set_trace_context(tp.into(), Some("\u{1}".into())).is_err());
        assert_eq!(e, before);
        let mut big = Event::builder("t")
            .data(vec![0u8; Limits::HARD.event_bytes_max - 200], "application/octet-stream")
            .build_with(&Limits::HARD)
            .unwrap();
        let size = big.clone();
        assert!(matches!(
            big.set_trace_context(tp.into(), Some("x".repeat(300))),
            Err(EventError::EventTooLarge { .. })
        ));
        assert_eq!(big, size);
    }

    #[test]
    fn stored_events_skip_validation_but_keep_their_required_attributes() {
        // A control character fails validation; a stored event is trusted with it.
        let b = Event::builder("t").id("a\u{1}b");
        assert!(b.clone().build().is_err());
        assert_eq!(b.build_stored().expect("trusted").id(), "a\u{1}b");
        assert_eq!(Event::builder("t").id("").build_stored(), Err(EventError::EmptyId));
        assert_eq!(Event::builder("").build_stored(), Err(EventError::EmptyType));
        assert_eq!(Event::builder("t").source("").build_stored(), Err(EventError::EmptySource));
    }

    #[test]
    fn defaults_are_safe() {
        let event = Event::builder("order.created").build().expect("valid");
        let id = uuid::Uuid::parse_str(event.id()).expect("uuid");
        assert_eq!(id.get_version_num(), 7);
        assert_eq!(event.source(), DEFAULT_SOURCE);
        assert_eq!(event.specversion(), "1.0");
        assert!(event.time().is_some());
        assert!(event.data().is_empty());
        assert_eq!(event.to_builder().build(), Ok(event));
    }

    #[test]
    fn json_error_is_reported_by_build() {
        let mut bad = BTreeMap::new();
        bad.insert((1, 2), 3);
        let err = Event::builder("t").json(&bad).build().expect_err("non-string keys");
        assert!(matches!(err, EventError::JsonData { .. }), "{err}");
    }

    #[test]
    fn caused_by_carries_correlation() {
        let first = Event::builder("a").build().expect("valid");
        let second = Event::builder("b").caused_by(&first).build().expect("valid");
        let third = Event::builder("c").caused_by(&second).build().expect("valid");
        assert_eq!(second.causationid(), Some(first.id()));
        assert_eq!(second.correlationid(), Some(first.id()));
        assert_eq!(third.causationid(), Some(second.id()));
        assert_eq!(third.correlationid(), Some(first.id()));
    }
}
