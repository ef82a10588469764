//! A topic's schemas as one value: per CloudEvents `type`, its versions (each with its format)
//! and compatibility rule, the topic's policy, and the validators of the latest versions. Every
//! decision a registry makes lives here — which version a registration becomes, whether it may
//! follow the earlier ones, the limits, how an event is checked and stamped — so that the broker
//! (which keeps [`Stored`] in `schemas.json`) and the SDK's NATS backend (which keeps it in a KV
//! bucket) decide alike. Persisting and serialising changes is theirs: every change here returns
//! the next [`Stored`] to write, and a [`Registry`] is rebuilt from what was written.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use herald_core::{DataSchema, Event, EventError};
use herald_model::Code;
use herald_model::schema::{
    self, Compatibility, Incompatibility, NewSchema, SCHEMA_BYTES_MAX, SchemaFormat, SchemaPolicy, SchemaVersion,
    TYPES_MAX, UnknownTypes, VERSIONS_MAX,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Validator;

/// The newest format of [`Stored`]: 1 holds JSON Schemas only; 2 adds each version's `format`.
/// [`Stored::prepare`] writes 2 only when a version is not a JSON Schema, so that a topic without
/// one stays readable by a Herald that knows only format 1.
pub const FORMAT: u32 = 2;

fn format_1() -> u32 {
    1
}

fn is_json_schema(f: &SchemaFormat) -> bool {
    *f == SchemaFormat::JsonSchema
}

/// What is kept of a topic's schemas (JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    /// Its format (see [`FORMAT`]).
    #[serde(default = "format_1")]
    pub format: u32,
    /// The topic's policy.
    #[serde(default)]
    pub policy: SchemaPolicy,
    /// Per type.
    #[serde(default)]
    pub types: BTreeMap<String, StoredType>,
}

/// One type's versions, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoredType {
    /// Its own rule (else the topic's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compatibility: Option<Compatibility>,
    /// Its versions.
    pub versions: Vec<StoredVersion>,
}

/// One version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredVersion {
    /// 1, 2, …
    pub version: u32,
    /// Its format (JSON Schema when absent: format 1).
    #[serde(default, skip_serializing_if = "is_json_schema")]
    pub format: SchemaFormat,
    /// The document.
    pub schema: Value,
    /// When it was registered, ms since the Unix epoch.
    pub registered_ms: i64,
}

impl Stored {
    /// Sets the format it is to be written with (see [`FORMAT`]).
    pub fn prepare(mut self) -> Stored {
        let other = self.types.values().flat_map(|t| &t.versions).any(|v| v.format != SchemaFormat::JsonSchema);
        self.format = if other { FORMAT } else { 1 };
        self
    }
}

/// Why a registry refused something.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchemaError {
    /// An event that does not match its type's schema, or of a type without one where the topic
    /// refuses those (`schema_invalid`).
    #[error("{message}")]
    Invalid {
        /// The topic.
        topic: String,
        /// The event's type.
        ty: String,
        /// The version checked against (0: none).
        version: u32,
        /// Where in the data (JSON pointer or Protobuf field path; "" for the whole).
        path: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// A version that breaks its type's rule (`schema_incompatible`).
    #[error("the schema for type {ty:?} of topic {topic:?} breaks {mode}: {}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Incompatible {
        /// The topic.
        topic: String,
        /// The type.
        ty: String,
        /// The rule.
        mode: Compatibility,
        /// Each change that breaks it.
        problems: Vec<Incompatibility>,
    },
    /// No schema for that type or version (`schema_not_found`).
    #[error("topic {topic:?} has no schema for type {ty:?}{}; list them with GET /v1/topics/{topic}/schemas", version.map(|v| format!(" version {v}")).unwrap_or_default())]
    NotFound {
        /// The topic.
        topic: String,
        /// The type.
        ty: String,
        /// The version asked for.
        version: Option<u32>,
    },
    /// A document that is no schema of its format, or a bad type name (`invalid_config`).
    #[error("{0}")]
    Document(String),
    /// A limit (`limit_exceeded`).
    #[error("{name} {value} exceeds the limit of {limit} ({key})")]
    Limit {
        /// What.
        name: &'static str,
        /// How many or how large.
        value: u64,
        /// The limit.
        limit: u64,
        /// Its name.
        key: &'static str,
    },
    /// Stamping `dataschema` made the event invalid (`invalid_event`).
    #[error(transparent)]
    Event(#[from] EventError),
}

impl SchemaError {
    /// Its stable code.
    pub fn code(&self) -> Code {
        match self {
            SchemaError::Invalid { .. } => Code::SchemaInvalid,
            SchemaError::Incompatible { .. } => Code::SchemaIncompatible,
            SchemaError::NotFound { .. } => Code::SchemaNotFound,
            SchemaError::Document(_) => Code::InvalidConfig,
            SchemaError::Limit { .. } => Code::LimitExceeded,
            SchemaError::Event(EventError::EventTooLarge { .. }) => Code::EventTooLarge,
            SchemaError::Event(_) => Code::InvalidEvent,
        }
    }
}

type Result<T> = std::result::Result<T, SchemaError>;

/// What publishing checks against: the latest version of each type, compiled.
struct Compiled {
    version: u32,
    validator: Arc<Validator>,
    /// Checked once here: stamping it costs a copy and a size check per event.
    dataschema: DataSchema,
}

/// A topic's schemas, compiled: cheap to share, rebuilt on every change.
pub struct Registry {
    topic: String,
    stored: Stored,
    compiled: HashMap<String, Compiled>,
}

/// What a registration did.
pub enum Registered {
    /// The same document as the latest version (and no new rule): that version, nothing to write.
    Unchanged(SchemaVersion),
    /// A new version: what to write, and the version it becomes.
    Next(Stored, SchemaVersion),
}

impl Registry {
    /// `stored` of `topic`, compiled; why not when a latest version does not compile.
    pub fn new(topic: &str, stored: Stored) -> std::result::Result<Registry, String> {
        let mut compiled = HashMap::new();
        for (ty, t) in &stored.types {
            let Some(latest) = t.versions.last() else { continue };
            let validator = crate::compile(latest.format, &latest.schema)
                .map_err(|e| format!("type {ty:?} version {}: {e}", latest.version))?;
            compiled.insert(
                ty.clone(),
                Compiled {
                    version: latest.version,
                    validator: Arc::new(validator),
                    dataschema: DataSchema::new(schema::dataschema(topic, ty, latest.version))
                        .map_err(|e| format!("type {ty:?}: its dataschema: {e}"))?,
                },
            );
        }
        Ok(Registry { topic: topic.to_owned(), stored, compiled })
    }

    /// What is kept.
    pub fn stored(&self) -> &Stored {
        &self.stored
    }

    /// Whether every event passes unchecked (no schema, unknown types allowed): one test per batch.
    pub fn checks_nothing(&self) -> bool {
        self.compiled.is_empty() && self.stored.policy.unknown_types == UnknownTypes::Allow
    }

    /// Checks `events` against their types' latest schemas; returns them stamped with the
    /// `dataschema` of the version each matched. The first invalid event fails them all.
    pub fn check(&self, events: Vec<Event>) -> Result<Vec<Event>> {
        if self.checks_nothing() {
            return Ok(events);
        }
        events.into_iter().enumerate().map(|(i, e)| self.check_one(i, e)).collect()
    }

    fn check_one(&self, index: usize, event: Event) -> Result<Event> {
        let ty = event.ty();
        let invalid = |version: u32, path: String, message: String| SchemaError::Invalid {
            topic: self.topic.clone(),
            ty: ty.to_owned(),
            version,
            path,
            message,
        };
        let Some(c) = self.compiled.get(ty) else {
            return match self.stored.policy.unknown_types {
                UnknownTypes::Allow => Ok(event),
                UnknownTypes::Refuse => Err(invalid(
                    0,
                    String::new(),
                    format!(
                        "event {index} (id {:?}) has type {ty:?}, which has no schema on topic {:?}, and the topic refuses \
                         unknown types: register one (herald schema add, POST /v1/topics/{}/schemas) or publish a known type",
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
            event.stamp_dataschema(&c.dataschema)?;
        }
        Ok(event)
    }

    fn version_of(&self, ty: &str, t: &StoredType, v: &StoredVersion) -> SchemaVersion {
        SchemaVersion {
            topic: self.topic.clone(),
            ty: ty.to_owned(),
            version: v.version,
            format: v.format,
            schema: v.schema.clone(),
            registered_ms: v.registered_ms,
            compatibility: t.compatibility.unwrap_or(self.stored.policy.compatibility),
            dataschema: schema::dataschema(&self.topic, ty, v.version),
        }
    }

    /// The policy.
    pub fn policy(&self) -> SchemaPolicy {
        self.stored.policy
    }

    /// The latest version of every type.
    pub fn list(&self) -> Vec<SchemaVersion> {
        self.stored.types.iter().filter_map(|(ty, t)| t.versions.last().map(|v| self.version_of(ty, t, v))).collect()
    }

    /// `ty`'s schema at `version` (the latest when `None`).
    pub fn get(&self, ty: &str, version: Option<u32>) -> Result<SchemaVersion> {
        let not_found = || SchemaError::NotFound { topic: self.topic.clone(), ty: ty.to_owned(), version };
        let t = self.stored.types.get(ty).ok_or_else(not_found)?;
        let v = match version {
            Some(n) => t.versions.iter().find(|v| v.version == n),
            None => t.versions.last(),
        }
        .ok_or_else(not_found)?;
        Ok(self.version_of(ty, t, v))
    }

    fn mode_for(&self, ty: &str, mode: Option<Compatibility>) -> Compatibility {
        mode.or_else(|| self.stored.types.get(ty).and_then(|t| t.compatibility))
            .unwrap_or(self.stored.policy.compatibility)
    }

    /// What registering `s` would break (empty: it would be accepted), or why it is no schema.
    pub fn check_compatible(&self, s: &NewSchema) -> Result<Vec<Incompatibility>> {
        check_document(s)?;
        let earlier: Vec<(SchemaFormat, Value)> = self
            .stored
            .types
            .get(&s.ty)
            .map(|t| t.versions.iter().map(|v| (v.format, v.schema.clone())).collect())
            .unwrap_or_default();
        Ok(crate::check(s.format, self.mode_for(&s.ty, s.compatibility), &s.schema, &earlier).err().unwrap_or_default())
    }

    /// Registers `s` as the next version of its type (the same document as the latest version
    /// registers nothing). `s.compatibility`, when given, becomes the type's rule and is the one
    /// checked.
    pub fn register(&self, s: NewSchema, now_ms: i64) -> Result<Registered> {
        if let Some(t) = self.stored.types.get(&s.ty)
            && let Some(latest) = t.versions.last()
            && latest.schema == s.schema
            && latest.format == s.format
            && s.compatibility.is_none_or(|m| Some(m) == t.compatibility)
        {
            return Ok(Registered::Unchanged(self.version_of(&s.ty, t, latest)));
        }
        let problems = self.check_compatible(&s)?;
        if !problems.is_empty() {
            return Err(SchemaError::Incompatible {
                topic: self.topic.clone(),
                ty: s.ty.clone(),
                mode: self.mode_for(&s.ty, s.compatibility),
                problems,
            });
        }
        let mut stored = self.stored.clone();
        if !stored.types.contains_key(&s.ty) && stored.types.len() >= TYPES_MAX {
            return Err(SchemaError::Limit {
                name: "event types with a schema",
                value: stored.types.len() as u64 + 1,
                limit: TYPES_MAX as u64,
                key: "TYPES_MAX",
            });
        }
        let t = stored.types.entry(s.ty.clone()).or_default();
        if t.versions.len() >= VERSIONS_MAX {
            return Err(SchemaError::Limit {
                name: "schema versions of a type",
                value: t.versions.len() as u64 + 1,
                limit: VERSIONS_MAX as u64,
                key: "VERSIONS_MAX",
            });
        }
        if s.compatibility.is_some() {
            t.compatibility = s.compatibility;
        }
        let version = t.versions.last().map_or(1, |v| v.version + 1);
        t.versions.push(StoredVersion { version, format: s.format, schema: s.schema, registered_ms: now_ms });
        // The policy is this registry's: registering does not change it.
        let answer = self.version_of(&s.ty, t, t.versions.last().expect("just pushed"));
        Ok(Registered::Next(stored.prepare(), answer))
    }

    /// Without `ty`'s schema (every version): what to write, and how many versions it had.
    pub fn delete(&self, ty: &str) -> Result<(Stored, usize)> {
        let mut stored = self.stored.clone();
        let t = stored.types.remove(ty).ok_or_else(|| SchemaError::NotFound {
            topic: self.topic.clone(),
            ty: ty.to_owned(),
            version: None,
        })?;
        Ok((stored.prepare(), t.versions.len()))
    }

    /// With `policy`: what to write.
    pub fn with_policy(&self, policy: SchemaPolicy) -> Stored {
        let mut stored = self.stored.clone();
        stored.policy = policy;
        stored.prepare()
    }
}

/// A registration's type name, size and document, checked.
fn check_document(s: &NewSchema) -> Result<()> {
    if s.ty.is_empty() || s.ty.len() > 256 {
        return Err(SchemaError::Document(format!("event type {:?} must be 1 to 256 bytes", s.ty)));
    }
    let bytes = serde_json::to_vec(&s.schema).map_or(usize::MAX, |b| b.len());
    if bytes > SCHEMA_BYTES_MAX {
        return Err(SchemaError::Limit {
            name: "schema bytes",
            value: bytes as u64,
            limit: SCHEMA_BYTES_MAX as u64,
            key: "SCHEMA_BYTES_MAX",
        });
    }
    crate::compile(s.format, &s.schema).map(drop).map_err(SchemaError::Document)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn new(ty: &str, schema: Value) -> NewSchema {
        NewSchema { ty: ty.to_owned(), format: SchemaFormat::JsonSchema, schema, compatibility: None }
    }

    /// Registers `s` and returns the registry holding it.
    fn next(r: &Registry, s: NewSchema) -> Result<Registry> {
        match r.register(s, 1)? {
            Registered::Unchanged(_) => panic!("nothing new"),
            Registered::Next(stored, _) => Ok(Registry::new("t", stored).unwrap()),
        }
    }

    fn version(n: u32) -> StoredVersion {
        StoredVersion {
            version: n,
            format: SchemaFormat::JsonSchema,
            schema: json!({"type": "object"}),
            registered_ms: 1,
        }
    }

    #[test]
    fn the_type_and_version_limits_hold() {
        // A registry at the type limit, made directly (registering 1,000 types one by one would
        // compile every validator each time).
        let mut full = Stored::default();
        for i in 0..TYPES_MAX {
            full.types.insert(format!("type-{i}"), StoredType { compatibility: None, versions: vec![version(1)] });
        }
        let r = Registry::new("t", full).unwrap();
        let e = next(&r, new("one-more", json!({"type": "object"}))).err().unwrap();
        assert!(matches!(e, SchemaError::Limit { key: "TYPES_MAX", .. }), "{e}");
        assert_eq!(e.code(), Code::LimitExceeded);
        // A known type may still get a new version.
        let r = next(&r, new("type-0", json!({"type": "object", "properties": {"a": {"type": "string"}}}))).unwrap();
        assert_eq!(r.list().len(), TYPES_MAX);

        let mut long = Stored::default();
        long.types.insert(
            "v".into(),
            StoredType { compatibility: None, versions: (1..=VERSIONS_MAX as u32).map(version).collect() },
        );
        let r = Registry::new("t", long).unwrap();
        let e = next(&r, new("v", json!({"type": "object", "description": "one more"}))).err().unwrap();
        assert!(matches!(e, SchemaError::Limit { key: "VERSIONS_MAX", .. }), "{e}");
    }

    #[test]
    fn bad_type_names_and_documents_are_refused_with_their_code() {
        let r = Registry::new("t", Stored::default()).unwrap();
        for (s, code) in [
            (new("", json!({})), Code::InvalidConfig),
            (new(&"x".repeat(257), json!({})), Code::InvalidConfig),
            (new("t", json!({"type": 7})), Code::InvalidConfig),
            (new("t", json!({"description": "x".repeat(SCHEMA_BYTES_MAX)})), Code::LimitExceeded),
        ] {
            assert_eq!(r.register(s, 1).err().unwrap().code(), code);
        }
        // Stored is written as format 1 while only JSON Schemas exist.
        match r.register(new("t", json!({"type": "object"})), 1).unwrap() {
            Registered::Next(stored, v) => assert_eq!((stored.format, v.version), (1, 1)),
            Registered::Unchanged(_) => panic!("new"),
        }
    }
}
