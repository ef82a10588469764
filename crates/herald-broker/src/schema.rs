//! A topic's schemas, kept in `<topic dir>/schemas.json`: the file, its format check and the
//! one-change-at-a-time lock. What a registry decides (versions, compatibility, limits,
//! validation and the `dataschema` stamp) is `herald_schema::registry`'s.
//!
//! The file is format-versioned (see `herald_schema::registry::FORMAT`: 1 for JSON Schemas only,
//! 2 once a Protobuf version exists), written durably and whole on every change; a newer format
//! is refused with "upgrade Herald". Validators are compiled once per latest version and shared;
//! a topic without schemas costs one atomic load per batch.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use herald_core::Event;
use herald_model::schema::{Incompatibility, NewSchema, SchemaPolicy, SchemaVersion};
use herald_model::storage::StorageError;
use herald_schema::registry::{FORMAT, Registered, SchemaError, Stored};

use crate::error::{BrokerError, Result};
use crate::topic::write_durably;

const FILE: &str = "schemas.json";

impl From<SchemaError> for BrokerError {
    fn from(e: SchemaError) -> BrokerError {
        match e {
            SchemaError::Document(m) => BrokerError::InvalidConfig(m),
            SchemaError::Limit { name, value, limit, key } => BrokerError::LimitExceeded { name, value, limit, key },
            SchemaError::Event(e) => BrokerError::Event(e),
            e => BrokerError::Schema(e),
        }
    }
}

/// A topic's schemas.
pub(crate) struct Registry {
    topic: String,
    path: PathBuf,
    state: RwLock<Arc<herald_schema::Registry>>,
    /// Changes one at a time (read, check, write durably, swap).
    change: Mutex<()>,
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
        let state = herald_schema::Registry::new(topic, stored).map_err(|reason| {
            BrokerError::Format(StorageError::Malformed { what: path.display().to_string(), reason })
        })?;
        Ok(Registry { topic: topic.to_owned(), path, state: RwLock::new(Arc::new(state)), change: Mutex::default() })
    }

    fn now(&self) -> Arc<herald_schema::Registry> {
        self.state.read().expect("schemas lock poisoned").clone()
    }

    /// Checks `events` against their types' schemas; returns them stamped with the `dataschema`
    /// of the version each matched. The first invalid event fails the whole batch.
    pub fn check(&self, events: Vec<Event>) -> Result<Vec<Event>> {
        Ok(self.now().check(events)?)
    }

    /// The policy and the latest version of every type.
    pub fn list(&self) -> (SchemaPolicy, Vec<SchemaVersion>) {
        let r = self.now();
        (r.policy(), r.list())
    }

    /// `ty`'s schema at `version` (the latest when `None`).
    pub fn get(&self, ty: &str, version: Option<u32>) -> Result<SchemaVersion> {
        Ok(self.now().get(ty, version)?)
    }

    /// What registering `s` would break (empty: it would be accepted), or why it is no schema.
    pub fn check_compatible(&self, s: &NewSchema) -> Result<Vec<Incompatibility>> {
        Ok(self.now().check_compatible(s)?)
    }

    /// Registers `s` as the next version of its type (see `herald_schema::Registry::register`).
    pub fn register(&self, s: NewSchema, now_ms: i64) -> Result<SchemaVersion> {
        let _one = self.change.lock().expect("schemas change lock poisoned");
        match self.now().register(s, now_ms)? {
            Registered::Unchanged(v) => Ok(v),
            Registered::Next(stored, v) => {
                self.store(stored)?;
                Ok(v)
            }
        }
    }

    /// Removes every version of `ty`'s schema (its events are then unknown types); returns how
    /// many versions there were.
    pub fn delete(&self, ty: &str) -> Result<usize> {
        let _one = self.change.lock().expect("schemas change lock poisoned");
        let (stored, n) = self.now().delete(ty)?;
        self.store(stored)?;
        Ok(n)
    }

    /// Sets the topic's policy.
    pub fn set_policy(&self, policy: SchemaPolicy) -> Result<SchemaPolicy> {
        let _one = self.change.lock().expect("schemas change lock poisoned");
        let stored = self.now().with_policy(policy);
        self.store(stored)?;
        Ok(policy)
    }

    /// Writes `stored` durably, then makes it the one publishing checks against.
    fn store(&self, stored: Stored) -> Result<()> {
        let state = herald_schema::Registry::new(&self.topic, stored).map_err(BrokerError::InvalidConfig)?;
        write_durably(&self.path, &serde_json::to_vec_pretty(state.stored()).expect("schemas serialize"))?;
        *self.state.write().expect("schemas lock poisoned") = Arc::new(state);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_model::schema::{Compatibility, SchemaFormat, UnknownTypes};
    use serde_json::{Value, json};

    const JSON: SchemaFormat = SchemaFormat::JsonSchema;
    use herald_model::schema::SCHEMA_BYTES_MAX;

    fn new(ty: &str, format: SchemaFormat, schema: Value, compatibility: Option<Compatibility>) -> NewSchema {
        NewSchema { ty: ty.to_owned(), format, schema, compatibility }
    }

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
        let v = r.register(new("order.placed", JSON, order_schema(), None), 1).unwrap();
        assert_eq!((v.version, v.compatibility), (1, Compatibility::Backward));
        let ok = r.check(vec![ev("order.placed", json!({"id": "a", "total": 3})), ev("other", json!(1))]).unwrap();
        assert_eq!(ok[0].dataschema(), Some("herald:/v1/topics/orders/schemas/order.placed/versions/1"));
        assert_eq!(ok[1].dataschema(), None, "unknown types pass unchecked by default");
        let e = r.check(vec![ev("order.placed", json!({"id": "a", "total": -1}))]).unwrap_err();
        match &e {
            BrokerError::Schema(SchemaError::Invalid { version, path, message, .. }) => {
                assert_eq!((*version, path.as_str()), (1, "/total"), "{message}");
                assert!(message.contains("version 1") && message.contains("/total"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(e.code(), herald_model::Code::SchemaInvalid);
        let not_json = Event::builder("order.placed").data(&b"\xff"[..], "application/octet-stream").build().unwrap();
        assert!(matches!(r.check(vec![not_json]), Err(BrokerError::Schema(SchemaError::Invalid { .. }))));

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
        r.register(new("order.placed", JSON, order_schema(), None), 1).unwrap();
        let mut required = order_schema();
        required["properties"]["coupon"] = json!({"type": "string"});
        required["required"] = json!(["id", "total", "coupon"]);
        let e = r.register(new("order.placed", JSON, required.clone(), None), 2).unwrap_err();
        assert_eq!(e.code(), herald_model::Code::SchemaIncompatible);
        assert!(e.to_string().contains("BACKWARD") && e.to_string().contains("coupon"), "{e}");
        assert_eq!(r.check_compatible(&new("order.placed", JSON, required.clone(), None)).unwrap().len(), 1);
        assert!(
            r.check_compatible(&new("order.placed", JSON, required.clone(), Some(Compatibility::Forward)))
                .unwrap()
                .is_empty()
        );
        // The same document again is the same version.
        assert_eq!(r.register(new("order.placed", JSON, order_schema(), None), 3).unwrap().version, 1);
        let mut optional = order_schema();
        optional["properties"]["coupon"] = json!({"type": "string"});
        assert_eq!(r.register(new("order.placed", JSON, optional, None), 4).unwrap().version, 2);
        assert!(matches!(r.register(new("t", JSON, json!({"type": 7}), None), 5), Err(BrokerError::InvalidConfig(_))));
        assert_eq!(r.delete("order.placed").unwrap(), 2);
        assert!(matches!(r.get("order.placed", None), Err(BrokerError::Schema(SchemaError::NotFound { .. }))));
    }

    #[test]
    fn protobuf_versions_validate_binary_data_and_only_they_need_format_2() {
        use prost::Message as _;
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::open("orders", dir.path()).unwrap();
        r.register(new("order.placed", JSON, order_schema(), None), 1).unwrap();
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
        let v = r.register(new("order.shipped", SchemaFormat::Protobuf, doc.clone(), None), 2).unwrap();
        assert_eq!((v.version, v.format), (1, SchemaFormat::Protobuf));
        assert_eq!(stored(dir.path())["format"], 2);
        // A JSON Schema cannot follow it (under the default BACKWARD rule).
        let e = r.register(new("order.shipped", JSON, order_schema(), None), 3).unwrap_err();
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
            BrokerError::Schema(SchemaError::Invalid { version, path, message, .. }) => {
                assert_eq!((version, path.as_str()), (1, "at_ms"), "{message}");
                assert!(message.contains("event 1") && message.contains("protobuf"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            r.check_compatible(&new("order.shipped", SchemaFormat::Protobuf, json!({"message": "x"}).clone(), None))
                .is_err()
        );
    }

    #[test]
    fn a_format_1_file_written_by_main_of_2026_12_01_opens_and_takes_a_protobuf_version() {
        // The form main wrote before Protobuf existed (crates/herald-broker/tests/fixtures/
        // README.md): read as it was, then format 2 once a Protobuf version is added.
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schemas-v1-2026-12-01.json");
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(&fixture, dir.path().join(FILE)).unwrap();
        let r = Registry::open("orders", dir.path()).unwrap();
        let (policy, latest) = r.list();
        assert_eq!(policy.unknown_types, UnknownTypes::Refuse);
        let versions: Vec<(String, u32, SchemaFormat, Compatibility)> =
            latest.iter().map(|v| (v.ty.clone(), v.version, v.format, v.compatibility)).collect();
        assert_eq!(
            versions,
            vec![
                ("order.placed".into(), 2, JSON, Compatibility::Backward),
                ("order.shipped".into(), 1, JSON, Compatibility::Full)
            ]
        );
        assert_eq!(r.get("order.placed", Some(1)).unwrap().registered_ms, 1764547200000);
        let ok = r.check(vec![ev("order.placed", json!({"id": "a", "total": 1, "coupon": "c"}))]).unwrap();
        assert_eq!(ok[0].dataschema(), Some("herald:/v1/topics/orders/schemas/order.placed/versions/2"));
        assert!(r.check(vec![ev("order.placed", json!({"id": "a", "total": -1}))]).is_err());
        assert!(r.check(vec![ev("unknown", json!(1))]).is_err(), "the policy still refuses unknown types");

        use prost::Message as _;
        let protos = tempfile::tempdir().unwrap();
        std::fs::write(protos.path().join("p.proto"), "syntax = \"proto3\"; message P { string id = 1; }").unwrap();
        let set = protox::compile(["p.proto"], [protos.path()]).unwrap().encode_to_vec();
        let doc = herald_schema::protobuf::document("P", &set);
        r.register(new("order.paid", SchemaFormat::Protobuf, doc, None), 5).unwrap();
        let r = Registry::open("orders", dir.path()).unwrap();
        assert_eq!(r.list().1.len(), 3);
        let stored: Value = serde_json::from_slice(&std::fs::read(dir.path().join(FILE)).unwrap()).unwrap();
        assert_eq!(stored["format"], 2);
        assert_eq!(stored["types"]["order.placed"]["versions"][0].get("format"), None, "JSON versions keep their form");
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
        assert!(matches!(r.register(new("t", JSON, big, None), 1), Err(BrokerError::LimitExceeded { .. })));
    }
}
