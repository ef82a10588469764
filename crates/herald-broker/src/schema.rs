//! A topic's schemas: per CloudEvents `type`, the versions of its schema (JSON Schema or
//! Protobuf), the compatibility rule new versions must follow, and the validators events are
//! checked with on publish (compiling, validating and deciding compatibility are
//! `herald-schema`'s).
//!
//! Kept in `<topic dir>/schemas.json` (format-versioned, written durably, whole, on every
//! change; a newer format is refused with "upgrade Herald"). Format 1 holds JSON Schemas only;
//! format 2 adds each version's `format`, and is written only when a Protobuf version exists,
//! so that a topic without one stays readable by earlier Herald. Validators are compiled once
//! per latest version and shared; a topic without schemas costs one atomic load per batch.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use herald_core::Event;
use herald_model::schema::{
    self, Compatibility, Incompatibility, SCHEMA_BYTES_MAX, SchemaFormat, SchemaPolicy, SchemaVersion, TYPES_MAX,
    UnknownTypes, VERSIONS_MAX,
};
use herald_model::storage::StorageError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{BrokerError, Result};
use crate::topic::write_durably;

const FILE: &str = "schemas.json";
/// Format of `schemas.json`: 2 when a version is not a JSON Schema, else 1.
const FORMAT: u32 = 2;

fn format_1() -> u32 {
    1
}

fn is_json_schema(f: &SchemaFormat) -> bool {
    *f == SchemaFormat::JsonSchema
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Stored {
    #[serde(default = "format_1")]
    format: u32,
    #[serde(default)]
    policy: SchemaPolicy,
    #[serde(default)]
    types: BTreeMap<String, StoredType>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct StoredType {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    compatibility: Option<Compatibility>,
    versions: Vec<StoredVersion>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredVersion {
    version: u32,
    #[serde(default, skip_serializing_if = "is_json_schema")]
    format: SchemaFormat,
    schema: Value,
    registered_ms: i64,
}

/// What publishing checks against: the latest version of each type, compiled.
struct Compiled {
    version: u32,
    validator: Arc<herald_schema::Validator>,
    dataschema: String,
}

#[derive(Default)]
struct State {
    stored: Stored,
    compiled: HashMap<String, Compiled>,
}

/// A topic's schemas.
pub(crate) struct Registry {
    topic: String,
    path: PathBuf,
    state: RwLock<Arc<State>>,
    /// Changes one at a time (read, check, write durably, swap).
    change: Mutex<()>,
}

impl State {
    fn build(topic: &str, stored: Stored) -> std::result::Result<State, String> {
        let mut compiled = HashMap::new();
        for (ty, t) in &stored.types {
            let Some(latest) = t.versions.last() else { continue };
            let validator = herald_schema::compile(latest.format, &latest.schema)
                .map_err(|e| format!("type {ty:?} version {}: {e}", latest.version))?;
            compiled.insert(
                ty.clone(),
                Compiled {
                    version: latest.version,
                    validator: Arc::new(validator),
                    dataschema: schema::dataschema(topic, ty, latest.version),
                },
            );
        }
        Ok(State { stored, compiled })
    }
}

impl Registry {
    /// Opens the schemas kept in `dir` (none when the file is absent).
    pub fn open(topic: &str, dir: &Path) -> Result<Registry> {
        let path = dir.join(FILE);
        let stored = match std::fs::read(&path) {
            Ok(bytes) => {
                let what = path.display().to_string();
                let s: Stored = serde_json::from_slice(&bytes).map_err(|e| {
                    BrokerError::Format(StorageError::Malformed { what: what.clone(), reason: e.to_string() })
                })?;
                if s.format > FORMAT {
                    return Err(BrokerError::Format(StorageError::TooNew { what, found: s.format, supported: FORMAT }));
                }
                s
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Stored::default(),
            Err(e) => return Err(BrokerError::io(&path, "reading the topic's schemas")(e)),
        };
        let state = State::build(topic, stored).map_err(|reason| {
            BrokerError::Format(StorageError::Malformed { what: path.display().to_string(), reason })
        })?;
        Ok(Registry { topic: topic.to_owned(), path, state: RwLock::new(Arc::new(state)), change: Mutex::default() })
    }

    fn now(&self) -> Arc<State> {
        self.state.read().expect("schemas lock poisoned").clone()
    }

    /// Checks `events` against their types' schemas; returns them stamped with the `dataschema`
    /// of the version each matched. The first invalid event fails the whole batch.
    pub fn check(&self, events: Vec<Event>) -> Result<Vec<Event>> {
        let state = self.now();
        if state.compiled.is_empty() && state.stored.policy.unknown_types == UnknownTypes::Allow {
            return Ok(events);
        }
        events.into_iter().enumerate().map(|(i, e)| self.check_one(&state, i, e)).collect()
    }

    fn check_one(&self, state: &State, index: usize, event: Event) -> Result<Event> {
        let ty = event.ty().to_owned();
        let invalid = |version: u32, path: String, why: String| BrokerError::SchemaInvalid {
            topic: self.topic.clone(),
            ty: ty.clone(),
            version,
            path,
            message: why,
        };
        let Some(c) = state.compiled.get(&ty) else {
            return match state.stored.policy.unknown_types {
                UnknownTypes::Allow => Ok(event),
                UnknownTypes::Refuse => Err(invalid(
                    0,
                    String::new(),
                    format!(
                        "event {index} (id {:?}) has type {ty:?}, which has no schema on topic {:?}, and the topic refuses \
                         unknown types: register one (POST /v1/topics/{}/schemas) or publish a known type",
                        event.id(),
                        self.topic,
                        self.topic
                    ),
                )),
            };
        };
        if let Err(e) = c.validator.validate(event.data()) {
            let message = format!(
                "event {index} (id {:?}, type {ty:?}) does not match version {} of its schema ({}): {}",
                event.id(),
                c.version,
                c.validator.format(),
                e.message
            );
            return Err(invalid(c.version, e.path, message));
        }
        let mut event = event;
        if event.dataschema() != Some(c.dataschema.as_str()) {
            event.set_dataschema(c.dataschema.clone()).map_err(BrokerError::Event)?;
        }
        Ok(event)
    }

    fn version_of(&self, ty: &str, t: &StoredType, v: &StoredVersion, policy: &SchemaPolicy) -> SchemaVersion {
        SchemaVersion {
            topic: self.topic.clone(),
            ty: ty.to_owned(),
            version: v.version,
            format: v.format,
            schema: v.schema.clone(),
            registered_ms: v.registered_ms,
            compatibility: t.compatibility.unwrap_or(policy.compatibility),
            dataschema: schema::dataschema(&self.topic, ty, v.version),
        }
    }

    /// The latest version of every type.
    pub fn list(&self) -> (SchemaPolicy, Vec<SchemaVersion>) {
        let state = self.now();
        let p = state.stored.policy;
        let latest = state
            .stored
            .types
            .iter()
            .filter_map(|(ty, t)| t.versions.last().map(|v| self.version_of(ty, t, v, &p)))
            .collect();
        (p, latest)
    }

    /// `ty`'s schema at `version` (the latest when `None`).
    pub fn get(&self, ty: &str, version: Option<u32>) -> Result<SchemaVersion> {
        let state = self.now();
        let not_found = || BrokerError::SchemaNotFound { topic: self.topic.clone(), ty: ty.to_owned(), version };
        let t = state.stored.types.get(ty).ok_or_else(not_found)?;
        let v = match version {
            Some(n) => t.versions.iter().find(|v| v.version == n),
            None => t.versions.last(),
        }
        .ok_or_else(not_found)?;
        Ok(self.version_of(ty, t, v, &state.stored.policy))
    }

    /// What registering `schema` (of `format`) for `ty` would break (empty: it would be
    /// accepted), or why it is no schema at all.
    pub fn check_compatible(
        &self,
        ty: &str,
        format: SchemaFormat,
        schema: &Value,
        mode: Option<Compatibility>,
    ) -> Result<Vec<Incompatibility>> {
        Self::check_document(format, schema)?;
        let state = self.now();
        let t = state.stored.types.get(ty);
        let mode = mode.or_else(|| t.and_then(|t| t.compatibility)).unwrap_or(state.stored.policy.compatibility);
        let earlier: Vec<(SchemaFormat, Value)> =
            t.map(|t| t.versions.iter().map(|v| (v.format, v.schema.clone())).collect()).unwrap_or_default();
        Ok(herald_schema::check(format, mode, schema, &earlier).err().unwrap_or_default())
    }

    fn check_document(format: SchemaFormat, schema: &Value) -> Result<()> {
        let bytes = serde_json::to_vec(schema).map_or(usize::MAX, |b| b.len());
        if bytes > SCHEMA_BYTES_MAX {
            return Err(BrokerError::LimitExceeded {
                name: "schema bytes",
                value: bytes as u64,
                limit: SCHEMA_BYTES_MAX as u64,
                key: "SCHEMA_BYTES_MAX",
            });
        }
        herald_schema::compile(format, schema).map(drop).map_err(BrokerError::InvalidConfig)
    }

    /// Registers `schema` (of `format`) as the next version of `ty` (the same document as the
    /// latest version registers nothing and answers that version). `mode`, when given, becomes
    /// the type's rule and is the one checked.
    pub fn register(
        &self,
        ty: &str,
        format: SchemaFormat,
        schema: Value,
        mode: Option<Compatibility>,
        now_ms: i64,
    ) -> Result<SchemaVersion> {
        if ty.is_empty() || ty.len() > 256 {
            return Err(BrokerError::InvalidConfig(format!("event type {ty:?} must be 1 to 256 bytes")));
        }
        let _one = self.change.lock().expect("schemas change lock poisoned");
        let state = self.now();
        if let Some(t) = state.stored.types.get(ty)
            && let Some(latest) = t.versions.last()
            && latest.schema == schema
            && latest.format == format
            && mode.is_none_or(|m| Some(m) == t.compatibility)
        {
            return Ok(self.version_of(ty, t, latest, &state.stored.policy));
        }
        let problems = self.check_compatible(ty, format, &schema, mode)?;
        let current = state.stored.types.get(ty);
        let effective =
            mode.or_else(|| current.and_then(|t| t.compatibility)).unwrap_or(state.stored.policy.compatibility);
        if !problems.is_empty() {
            return Err(BrokerError::SchemaIncompatible {
                topic: self.topic.clone(),
                ty: ty.to_owned(),
                mode: effective,
                problems,
            });
        }
        let mut stored = state.stored.clone();
        if current.is_none() && stored.types.len() >= TYPES_MAX {
            return Err(BrokerError::LimitExceeded {
                name: "event types with a schema",
                value: stored.types.len() as u64 + 1,
                limit: TYPES_MAX as u64,
                key: "TYPES_MAX",
            });
        }
        let t = stored.types.entry(ty.to_owned()).or_default();
        if t.versions.len() >= VERSIONS_MAX {
            return Err(BrokerError::LimitExceeded {
                name: "schema versions of a type",
                value: t.versions.len() as u64 + 1,
                limit: VERSIONS_MAX as u64,
                key: "VERSIONS_MAX",
            });
        }
        if mode.is_some() {
            t.compatibility = mode;
        }
        let version = t.versions.last().map_or(1, |v| v.version + 1);
        t.versions.push(StoredVersion { version, format, schema, registered_ms: now_ms });
        self.store(stored)?;
        self.get(ty, Some(version))
    }

    /// Removes every version of `ty`'s schema (its events are then unknown types); returns how
    /// many versions there were.
    pub fn delete(&self, ty: &str) -> Result<usize> {
        let _one = self.change.lock().expect("schemas change lock poisoned");
        let mut stored = self.now().stored.clone();
        let t = stored.types.remove(ty).ok_or_else(|| BrokerError::SchemaNotFound {
            topic: self.topic.clone(),
            ty: ty.to_owned(),
            version: None,
        })?;
        self.store(stored)?;
        Ok(t.versions.len())
    }

    /// Sets the topic's policy.
    pub fn set_policy(&self, policy: SchemaPolicy) -> Result<SchemaPolicy> {
        let _one = self.change.lock().expect("schemas change lock poisoned");
        let mut stored = self.now().stored.clone();
        stored.policy = policy;
        self.store(stored)?;
        Ok(policy)
    }

    /// Writes `stored` durably, then makes it the one publishing checks against.
    fn store(&self, mut stored: Stored) -> Result<()> {
        let protobuf = stored.types.values().flat_map(|t| &t.versions).any(|v| v.format != SchemaFormat::JsonSchema);
        stored.format = if protobuf { FORMAT } else { 1 };
        let state = State::build(&self.topic, stored).map_err(BrokerError::InvalidConfig)?;
        write_durably(&self.path, &serde_json::to_vec_pretty(&state.stored).expect("schemas serialize"))?;
        *self.state.write().expect("schemas lock poisoned") = Arc::new(state);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const JSON: SchemaFormat = SchemaFormat::JsonSchema;

    fn order_schema() -> Value {
        json!({
            "type": "object",
            "properties": { "id": {"type": "string"}, "total": {"type": "integer", "minimum": 0} },
            "required": ["id", "total"]
        })
    }

    fn ev(ty: &str, data: Value) -> Event {
        Event::builder(ty).json(&data).build().unwrap()
    }

    #[test]
    fn events_are_checked_against_the_latest_version_and_stamped() {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::open("orders", dir.path()).unwrap();
        let v = r.register("order.placed", JSON, order_schema(), None, 1).unwrap();
        assert_eq!((v.version, v.compatibility), (1, Compatibility::Backward));
        let ok = r.check(vec![ev("order.placed", json!({"id": "a", "total": 3})), ev("other", json!(1))]).unwrap();
        assert_eq!(ok[0].dataschema(), Some("herald:/v1/topics/orders/schemas/order.placed/versions/1"));
        assert_eq!(ok[1].dataschema(), None, "unknown types pass unchecked by default");
        let e = r.check(vec![ev("order.placed", json!({"id": "a", "total": -1}))]).unwrap_err();
        match &e {
            BrokerError::SchemaInvalid { version, path, message, .. } => {
                assert_eq!((*version, path.as_str()), (1, "/total"), "{message}");
                assert!(message.contains("version 1") && message.contains("/total"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(e.code(), herald_model::Code::SchemaInvalid);
        let not_json = Event::builder("order.placed").data(&b"\xff"[..], "application/octet-stream").build().unwrap();
        assert!(matches!(r.check(vec![not_json]), Err(BrokerError::SchemaInvalid { .. })));

        r.set_policy(SchemaPolicy { unknown_types: UnknownTypes::Refuse, ..SchemaPolicy::default() }).unwrap();
        let e = r.check(vec![ev("other", json!(1))]).unwrap_err();
        assert!(e.to_string().contains("refuses unknown types"), "{e}");

        // All of it is back after a reopen.
        let r = Registry::open("orders", dir.path()).unwrap();
        assert_eq!(r.list().0.unknown_types, UnknownTypes::Refuse);
        assert_eq!(r.get("order.placed", None).unwrap().version, 1);
    }

    #[test]
    fn an_incompatible_version_is_refused_naming_the_change_and_a_compatible_one_is_next() {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::open("orders", dir.path()).unwrap();
        r.register("order.placed", JSON, order_schema(), None, 1).unwrap();
        let mut required = order_schema();
        required["properties"]["coupon"] = json!({"type": "string"});
        required["required"] = json!(["id", "total", "coupon"]);
        let e = r.register("order.placed", JSON, required.clone(), None, 2).unwrap_err();
        assert_eq!(e.code(), herald_model::Code::SchemaIncompatible);
        assert!(e.to_string().contains("BACKWARD") && e.to_string().contains("coupon"), "{e}");
        assert_eq!(r.check_compatible("order.placed", JSON, &required, None).unwrap().len(), 1);
        assert!(r.check_compatible("order.placed", JSON, &required, Some(Compatibility::Forward)).unwrap().is_empty());
        // The same document again is the same version.
        assert_eq!(r.register("order.placed", JSON, order_schema(), None, 3).unwrap().version, 1);
        let mut optional = order_schema();
        optional["properties"]["coupon"] = json!({"type": "string"});
        assert_eq!(r.register("order.placed", JSON, optional, None, 4).unwrap().version, 2);
        assert!(matches!(r.register("t", JSON, json!({"type": 7}), None, 5), Err(BrokerError::InvalidConfig(_))));
        assert_eq!(r.delete("order.placed").unwrap(), 2);
        assert!(matches!(r.get("order.placed", None), Err(BrokerError::SchemaNotFound { .. })));
    }

    #[test]
    fn protobuf_versions_validate_binary_data_and_only_they_need_format_2() {
        use prost::Message as _;
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::open("orders", dir.path()).unwrap();
        r.register("order.placed", JSON, order_schema(), None, 1).unwrap();
        let stored = |d: &Path| serde_json::from_slice::<Value>(&std::fs::read(d.join(FILE)).unwrap()).unwrap();
        assert_eq!(stored(dir.path())["format"], 1, "JSON Schemas alone stay readable by earlier Herald");

        let protos = tempfile::tempdir().unwrap();
        std::fs::write(
            protos.path().join("o.proto"),
            "syntax = \"proto3\"; package shop; message Shipped { string id = 1; int64 at_ms = 2; }",
        )
        .unwrap();
        let set = protox::compile(["o.proto"], [protos.path()]).unwrap().encode_to_vec();
        let doc = herald_schema::protobuf::document("shop.Shipped", &set);
        let v = r.register("order.shipped", SchemaFormat::Protobuf, doc.clone(), None, 2).unwrap();
        assert_eq!((v.version, v.format), (1, SchemaFormat::Protobuf));
        assert_eq!(stored(dir.path())["format"], 2);
        // A JSON Schema cannot follow it (under the default BACKWARD rule).
        let e = r.register("order.shipped", JSON, order_schema(), None, 3).unwrap_err();
        assert!(e.to_string().contains("format changed"), "{e}");

        let r = Registry::open("orders", dir.path()).unwrap();
        let bin = |bytes: &[u8]| {
            Event::builder("order.shipped").data(bytes.to_vec(), "application/protobuf").build().unwrap()
        };
        // id = "a", at_ms = 5
        let ok = r.check(vec![bin(&[0x0a, 0x01, b'a', 0x10, 0x05])]).unwrap();
        assert_eq!(ok[0].dataschema(), Some("herald:/v1/topics/orders/schemas/order.shipped/versions/1"));
        // at_ms written as a string
        match r.check(vec![bin(&[0x0a, 0x01, b'a']), bin(&[0x12, 0x01, b'x'])]).unwrap_err() {
            BrokerError::SchemaInvalid { version, path, message, .. } => {
                assert_eq!((version, path.as_str()), (1, "at_ms"), "{message}");
                assert!(message.contains("event 1") && message.contains("protobuf"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(r.check_compatible("order.shipped", SchemaFormat::Protobuf, &json!({"message": "x"}), None).is_err());
    }

    #[test]
    fn a_newer_format_is_refused_and_limits_hold() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), br#"{"format": 3}"#).unwrap();
        let e = Registry::open("t", dir.path()).err().unwrap();
        assert!(e.to_string().contains("upgrade Herald"), "{e}");
        std::fs::remove_file(dir.path().join(FILE)).unwrap();
        let r = Registry::open("t", dir.path()).unwrap();
        let big = json!({ "description": "x".repeat(SCHEMA_BYTES_MAX) });
        assert!(matches!(r.register("t", JSON, big, None, 1), Err(BrokerError::LimitExceeded { .. })));
    }
}
