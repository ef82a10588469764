//! Schemas on NATS. JetStream validates nothing, so Herald's SDK does: each topic's schemas
//! (`herald_schema::registry::Stored`, the same JSON the broker keeps in `schemas.json`) live in
//! the KV bucket `HERALD_SCHEMAS` under the topic's escaped name; changes are compare-and-set on
//! the key's revision (two registrations at once: one wins, the other is re-decided against it);
//! every publish through this backend is checked against a copy at most [`CACHE_TTL`] old.
//!
//! What this cannot promise (declared in `docs/backends.md`): a producer that does not use
//! Herald's SDK publishes unchecked, and a schema registered by another process is enforced here
//! within [`CACHE_TTL`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{kv, stream};
use herald_model::schema::{Incompatibility, NewSchema, SchemaPolicy, SchemaVersion};
use herald_schema::Registry;
use herald_schema::registry::{FORMAT, Registered, Stored};

use super::{Inner, names, unavailable};
use crate::error::{Code, Error, Result};

/// The bucket.
pub(crate) const SCHEMAS_BUCKET: &str = "HERALD_SCHEMAS";
/// How old a topic's schemas may be when a publish is checked against them.
pub(crate) const CACHE_TTL: Duration = Duration::from_secs(1);
/// Largest stored value: NATS's default `max_payload`.
const VALUE_BYTES_MAX: usize = 1024 * 1024;
/// Attempts at a change that keeps meeting another one.
const CHANGE_ATTEMPTS: usize = 8;

/// Registries read recently, per topic.
#[derive(Default)]
pub(crate) struct Cache {
    topics: Mutex<HashMap<String, (Instant, Arc<Registry>)>>,
}

impl From<herald_schema::SchemaError> for Error {
    fn from(e: herald_schema::SchemaError) -> Error {
        Error::new(e.code(), e.to_string())
    }
}

fn key(topic: &str) -> String {
    names::esc(topic)
}

impl Inner {
    async fn schemas_bucket(&self, create: bool) -> Result<Option<kv::Store>> {
        match self.js.get_key_value(SCHEMAS_BUCKET).await {
            Ok(kv) => Ok(Some(kv)),
            Err(_) if !create => Ok(None),
            Err(_) => self
                .js
                .create_key_value(kv::Config {
                    bucket: SCHEMAS_BUCKET.into(),
                    history: 1,
                    storage: stream::StorageType::File,
                    num_replicas: self.settings.replicas,
                    max_value_size: VALUE_BYTES_MAX as i32,
                    ..Default::default()
                })
                .await
                .map(Some)
                .map_err(|e| unavailable("creating the schemas bucket", e)),
        }
    }

    /// `topic`'s schemas as stored now, with the key's revision (0: none stored).
    async fn read_schemas(&self, topic: &str) -> Result<(Arc<Registry>, u64)> {
        let (stored, revision) = match self.schemas_bucket(false).await? {
            None => (Stored::default(), 0),
            Some(kv) => match kv.entry(key(topic)).await {
                Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
                    let what = format!("the schemas of topic {topic:?} (KV {SCHEMAS_BUCKET})");
                    let s: Stored = serde_json::from_slice(&entry.value)
                        .map_err(|e| Error::new(Code::Storage, format!("{what} are not readable: {e}")))?;
                    if s.format > FORMAT {
                        return Err(Error::new(
                            Code::Storage,
                            format!(
                                "{what} have format {}; this Herald reads up to {FORMAT}: upgrade Herald",
                                s.format
                            ),
                        ));
                    }
                    (s, entry.revision)
                }
                Ok(Some(entry)) => (Stored::default(), entry.revision),
                Ok(None) => (Stored::default(), 0),
                Err(e) => return Err(unavailable(&format!("reading the schemas of {topic:?}"), e)),
            },
        };
        let registry = Registry::new(topic, stored).map_err(|e| Error::new(Code::Storage, e))?;
        let registry = Arc::new(registry);
        self.schemas
            .topics
            .lock()
            .expect("schemas cache poisoned")
            .insert(topic.to_owned(), (Instant::now(), registry.clone()));
        Ok((registry, revision))
    }

    /// What a publish to `topic` is checked against: a copy at most [`CACHE_TTL`] old.
    pub(crate) async fn publish_schemas(&self, topic: &str) -> Result<Arc<Registry>> {
        if let Some((at, r)) = self.schemas.topics.lock().expect("schemas cache poisoned").get(topic)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(r.clone());
        }
        Ok(self.read_schemas(topic).await?.0)
    }

    /// Decides a change with `decide` against the latest stored schemas and writes what it
    /// returns (if anything) unless another change came first; then decides again.
    async fn change_schemas<T>(
        &self,
        topic: &str,
        decide: impl Fn(&Registry) -> std::result::Result<(Option<Stored>, T), herald_schema::SchemaError>,
    ) -> Result<T> {
        self.topic(topic).await?;
        let kv = self.schemas_bucket(true).await?.expect("created");
        for _ in 0..CHANGE_ATTEMPTS {
            let (registry, revision) = self.read_schemas(topic).await?;
            let (next, answer) = decide(&registry)?;
            let Some(next) = next else { return Ok(answer) };
            let bytes = serde_json::to_vec(&next).expect("schemas serialize");
            if bytes.len() > VALUE_BYTES_MAX {
                return Err(Error::new(
                    Code::LimitExceeded,
                    format!(
                        "the schemas of topic {topic:?} would take {} bytes; a NATS KV value holds at most {VALUE_BYTES_MAX}: \
                         delete old types or use smaller schemas",
                        bytes.len()
                    ),
                ));
            }
            let written = if revision == 0 {
                kv.create(key(topic), bytes.into()).await.map(drop).map_err(|e| e.to_string())
            } else {
                kv.update(key(topic), bytes.into(), revision).await.map(drop).map_err(|e| e.to_string())
            };
            match written {
                Ok(()) => {
                    // Enforced by this process at once.
                    self.read_schemas(topic).await?;
                    return Ok(answer);
                }
                // Another change came first (wrong last sequence / key exists): decide again.
                Err(_) => continue,
            }
        }
        Err(Error::new(
            Code::Unavailable,
            format!("the schemas of topic {topic:?} kept changing under {CHANGE_ATTEMPTS} attempts; retry"),
        ))
    }

    pub(crate) async fn register_schema(&self, topic: &str, s: &NewSchema, now_ms: i64) -> Result<SchemaVersion> {
        self.change_schemas(topic, |r| match r.register(s.clone(), now_ms)? {
            Registered::Unchanged(v) => Ok((None, v)),
            Registered::Next(stored, v) => Ok((Some(stored), v)),
        })
        .await
    }

    pub(crate) async fn check_schema(&self, topic: &str, s: &NewSchema) -> Result<Vec<Incompatibility>> {
        self.topic(topic).await?;
        Ok(self.read_schemas(topic).await?.0.check_compatible(s)?)
    }

    pub(crate) async fn list_schemas(&self, topic: &str) -> Result<(SchemaPolicy, Vec<SchemaVersion>)> {
        self.topic(topic).await?;
        let r = self.read_schemas(topic).await?.0;
        Ok((r.policy(), r.list()))
    }

    pub(crate) async fn schema(&self, topic: &str, ty: &str, version: Option<u32>) -> Result<SchemaVersion> {
        self.topic(topic).await?;
        Ok(self.read_schemas(topic).await?.0.get(ty, version)?)
    }

    pub(crate) async fn delete_schema(&self, topic: &str, ty: &str) -> Result<usize> {
        self.change_schemas(topic, |r| r.delete(ty).map(|(stored, n)| (Some(stored), n))).await
    }

    pub(crate) async fn set_schema_policy(&self, topic: &str, policy: SchemaPolicy) -> Result<SchemaPolicy> {
        self.change_schemas(topic, |r| Ok((Some(r.with_policy(policy)), policy))).await
    }

    /// Forgets `topic`'s schemas (its stream was deleted).
    pub(crate) async fn drop_schemas(&self, topic: &str) {
        self.schemas.topics.lock().expect("schemas cache poisoned").remove(topic);
        if let Ok(Some(kv)) = self.schemas_bucket(false).await
            && let Err(e) = kv.purge(key(topic)).await
        {
            tracing::warn!(topic, error = %e, "could not remove a deleted topic's schemas");
        }
    }
}
