//! `herald serve`'s configuration: defaults, then a TOML file, then `HERALD_*` environment
//! variables, then flags (each overriding the one before). Unknown keys are errors wherever they
//! come from.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use herald_broker::BrokerConfig;
use serde::{Deserialize, Serialize};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file, a variable or a flag does not fit the schema (unknown key, wrong type).
    #[error("invalid configuration from {origin}: {message}")]
    Invalid {
        /// Where the bad value came from.
        origin: String,
        /// What was wrong.
        message: String,
    },
    /// A value is outside its range.
    #[error("invalid configuration: {0}")]
    Range(String),
}

/// Everything `herald serve` can be told. In TOML every key is optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Where the broker keeps its data.
    pub data_dir: PathBuf,
    /// HTTP/JSON listen address.
    pub http: SocketAddr,
    /// gRPC listen address.
    pub grpc: SocketAddr,
    /// Largest request body or gRPC message accepted, in bytes (a batch may hold many events).
    pub max_request_bytes: usize,
    /// Largest single event accepted over HTTP/gRPC, encoded, in bytes (topics may set a smaller
    /// limit of their own).
    pub max_event_bytes: usize,
    /// Most events in one publish request.
    pub max_batch_events: usize,
    /// Most events one browse (`GET …/events`) or DLQ listing returns.
    pub max_read_events: usize,
    /// Most open subscription streams (gRPC Subscribe and SSE together).
    pub max_subscriptions: usize,
    /// Most concurrent HTTP requests.
    pub max_http_requests: usize,
    /// Most open connections, HTTP and gRPC together (beyond, a connection is closed at once;
    /// HTTP keeps a small reserve for health checks and admin).
    pub max_connections: usize,
    /// How long a client may take to send a request head over HTTP (a new connection, a slow
    /// one, or one idle between requests) or the HTTP/2 preface over gRPC, in milliseconds;
    /// then the connection is closed.
    pub header_read_timeout_ms: u64,
    /// How long shutdown waits for requests in flight, in milliseconds.
    pub shutdown_grace_ms: u64,
    /// The broker's own limits.
    pub broker: BrokerConfig,
    /// Who may do what (`[auth]`): see `docs/security.md`.
    pub auth: crate::auth::AuthConfig,
    /// TLS on both listeners (`[tls] cert`, `key`: PEM files, re-read when they change).
    pub tls: Option<crate::tls::TlsConfig>,
    /// Trace export (`[telemetry]`); the `OTEL_*` variables fill in what it leaves out.
    pub telemetry: TelemetrySection,
    /// Serve the Console (the web UI) at `/` of the HTTP port, and sample the figures it shows
    /// once a second.
    pub console: bool,
    /// Most events a live tail (`GET /v1/topics/{t}/tail`) sends per second; beyond, it tells
    /// the viewer how many it skipped.
    pub tail_events_per_s_max: u32,
}

/// `[telemetry]`: OTLP export of the server's spans. Off unless an endpoint is given here or in
/// `OTEL_EXPORTER_OTLP_ENDPOINT`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySection {
    /// The OTLP endpoint (`http://collector:4318`).
    pub endpoint: Option<String>,
    /// `http/protobuf` (default) or `grpc`.
    pub protocol: Option<String>,
    /// `service.name` (default `herald-server`; `OTEL_SERVICE_NAME` wins).
    pub service_name: Option<String>,
}

impl TelemetrySection {
    /// What `herald_telemetry::install` takes.
    pub fn config(&self) -> Result<herald_telemetry::TelemetryConfig, ConfigError> {
        let protocol =
            self.protocol.as_deref().map(str::parse).transpose().map_err(|e: herald_telemetry::TelemetryError| {
                ConfigError::Range(format!("[telemetry] protocol: {e}"))
            })?;
        Ok(herald_telemetry::TelemetryConfig {
            endpoint: self.endpoint.clone(),
            protocol,
            service_name: self.service_name.clone(),
        })
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            data_dir: PathBuf::from("./herald-data"),
            http: SocketAddr::from(([127, 0, 0, 1], 7280)),
            grpc: SocketAddr::from(([127, 0, 0, 1], 7281)),
            max_request_bytes: 16 << 20,
            max_event_bytes: 1 << 20,
            max_batch_events: 10_000,
            max_read_events: 10_000,
            max_subscriptions: 1024,
            max_http_requests: 1024,
            max_connections: 4096,
            header_read_timeout_ms: 20_000,
            shutdown_grace_ms: 10_000,
            broker: BrokerConfig::default(),
            auth: crate::auth::AuthConfig::default(),
            tls: None,
            telemetry: TelemetrySection::default(),
            console: true,
            tail_events_per_s_max: 200,
        }
    }
}

/// Environment variables that belong to the CLI or to the test tooling (`./scripts/test` exports
/// `HERALD_NATS_SERVER`), not to the server.
const CLIENT_VARS: &[&str] =
    &["HERALD_URL", "HERALD_TOKEN", "HERALD_CA", "HERALD_LOG", "HERALD_LOG_FORMAT", "HERALD_NATS_SERVER"];

impl ServerConfig {
    /// Builds the configuration: defaults, then `file` (TOML), then the `HERALD_*` variables of
    /// `env` (`HERALD_DATA_DIR`, `HERALD_HTTP`, `HERALD_BROKER__TOPICS_MAX` for `[broker]
    /// topics_max`, …), then `flags` (`key = value` pairs, the same keys as the file).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &[(&str, toml::Value)],
    ) -> Result<ServerConfig, ConfigError> {
        let mut table = toml::Table::new();
        if let Some(path) = file {
            let text =
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
            table = text
                .parse::<toml::Table>()
                .map_err(|e| ConfigError::Invalid { origin: path.display().to_string(), message: e.to_string() })?;
            // Checked alone first, so that an error names the file.
            check(&table, &path.display().to_string())?;
        }
        let mut env: Vec<(String, String)> = env.into_iter().filter(|(k, _)| k.starts_with("HERALD_")).collect();
        env.sort();
        for (name, value) in env {
            if CLIENT_VARS.contains(&name.as_str()) {
                continue;
            }
            let path: Vec<String> = name["HERALD_".len()..].split("__").map(|s| s.to_ascii_lowercase()).collect();
            // Paths and addresses are text even when they look like numbers (HERALD_DATA_DIR=2024).
            let value = match path.as_slice() {
                [key] if TEXT_KEYS.contains(&key.as_str()) => toml::Value::String(value),
                _ => env_value(&value),
            };
            set(&mut table, &path, value);
            check(&table, &format!("environment variable {name}"))?;
        }
        for (key, value) in flags {
            let path: Vec<String> = key.split('.').map(str::to_owned).collect();
            set(&mut table, &path, value.clone());
            check(&table, &format!("flag --{}", key.replace('_', "-")))?;
        }
        let config: ServerConfig = toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| {
            ConfigError::Invalid { origin: "configuration".into(), message: e.to_string() }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.telemetry.config()?;
        let positive = [
            ("max_request_bytes", self.max_request_bytes),
            ("max_event_bytes", self.max_event_bytes),
            ("max_batch_events", self.max_batch_events),
            ("max_read_events", self.max_read_events),
            ("max_subscriptions", self.max_subscriptions),
            ("max_http_requests", self.max_http_requests),
            ("max_connections", self.max_connections),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(ConfigError::Range(format!("{name} is 0; it must be at least 1")));
            }
        }
        if self.max_event_bytes > herald_core::Limits::EVENT_BYTES_HARD_MAX {
            return Err(ConfigError::Range(format!(
                "max_event_bytes is {}; it must be at most {}",
                self.max_event_bytes,
                herald_core::Limits::EVENT_BYTES_HARD_MAX
            )));
        }
        if !(100..=600_000).contains(&self.header_read_timeout_ms) {
            return Err(ConfigError::Range(format!(
                "header_read_timeout_ms is {}; it must be between 100 and 600000",
                self.header_read_timeout_ms
            )));
        }
        if !(1..=100_000).contains(&self.tail_events_per_s_max) {
            return Err(ConfigError::Range(format!(
                "tail_events_per_s_max is {}; it must be between 1 and 100000",
                self.tail_events_per_s_max
            )));
        }
        if self.max_request_bytes < self.max_event_bytes {
            return Err(ConfigError::Range(format!(
                "max_request_bytes ({}) is below max_event_bytes ({}); raise it",
                self.max_request_bytes, self.max_event_bytes
            )));
        }
        self.broker.validate().map_err(|e| ConfigError::Range(e.to_string()))
    }

    /// The event limits requests are checked against.
    pub fn limits(&self) -> herald_core::Limits {
        herald_core::Limits { event_bytes_max: self.max_event_bytes, ..herald_core::Limits::default() }
    }
}

fn check(table: &toml::Table, origin: &str) -> Result<(), ConfigError> {
    let _: ServerConfig = toml::Value::Table(table.clone())
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Invalid { origin: origin.to_owned(), message: e.to_string() })?;
    Ok(())
}

/// Top-level keys whose values are always text.
const TEXT_KEYS: &[&str] = &["data_dir", "http", "grpc"];

/// An environment value as TOML: integers, floats and booleans as such, anything else a string.
fn env_value(v: &str) -> toml::Value {
    if let Ok(i) = v.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    if let Ok(b) = v.parse::<bool>() {
        return toml::Value::Boolean(b);
    }
    if let Ok(f) = v.parse::<f64>()
        && v.contains('.')
        && !v.contains(':')
    {
        return toml::Value::Float(f);
    }
    toml::Value::String(v.to_owned())
}

fn set(table: &mut toml::Table, path: &[String], value: toml::Value) {
    match path {
        [] => {}
        [last] => {
            table.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = table.entry(first.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            if let toml::Value::Table(t) = entry {
                set(t, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn precedence_is_flags_then_env_then_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("herald.toml");
        std::fs::write(&file, "data_dir = \"/from/file\"\nhttp = \"127.0.0.1:1\"\n[broker]\ntopics_max = 7\n").unwrap();
        let c = ServerConfig::load(Some(&file), env(&[("HERALD_HTTP", "127.0.0.1:2")]), &[]).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/from/file"));
        assert_eq!(c.http.port(), 2);
        assert_eq!(c.broker.topics_max, 7);
        let c = ServerConfig::load(
            Some(&file),
            env(&[("HERALD_HTTP", "127.0.0.1:2"), ("HERALD_BROKER__TOPICS_MAX", "9")]),
            &[("http", toml::Value::String("127.0.0.1:3".into()))],
        )
        .unwrap();
        assert_eq!(c.http.port(), 3);
        assert_eq!(c.broker.topics_max, 9);
    }

    #[test]
    fn unknown_keys_are_errors_naming_their_origin() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("herald.toml");
        std::fs::write(&file, "data_dirr = \"x\"\n").unwrap();
        let e = ServerConfig::load(Some(&file), env(&[]), &[]).unwrap_err().to_string();
        assert!(e.contains("herald.toml") && e.contains("data_dirr"), "{e}");
        let e = ServerConfig::load(None, env(&[("HERALD_HTTPP", "x")]), &[]).unwrap_err().to_string();
        assert!(e.contains("HERALD_HTTPP") && e.contains("httpp"), "{e}");
        let e = ServerConfig::load(None, env(&[("HERALD_BROKER__NOPE", "1")]), &[]).unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
        // The CLI's own variables are not the server's business.
        ServerConfig::load(None, env(&[("HERALD_URL", "herald://x:1")]), &[]).unwrap();
    }

    #[test]
    fn a_data_dir_that_looks_like_a_number_is_a_path() {
        let c = ServerConfig::load(None, env(&[("HERALD_DATA_DIR", "2024")]), &[]).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("2024"));
        // Numbers stay numbers where the key is numeric.
        let c = ServerConfig::load(None, env(&[("HERALD_MAX_BATCH_EVENTS", "7")]), &[]).unwrap();
        assert_eq!(c.max_batch_events, 7);
    }

    #[test]
    fn ranges_are_checked() {
        let e = ServerConfig::load(None, env(&[("HERALD_MAX_EVENT_BYTES", "0")]), &[]).unwrap_err().to_string();
        assert!(e.contains("max_event_bytes"), "{e}");
        let e = ServerConfig::load(None, env(&[("HERALD_HTTP", "not an address")]), &[]).unwrap_err().to_string();
        assert!(e.contains("HERALD_HTTP"), "{e}");
        for bad in ["0", "100001"] {
            let e = ServerConfig::load(None, env(&[("HERALD_TAIL_EVENTS_PER_S_MAX", bad)]), &[]).unwrap_err();
            assert!(e.to_string().contains("tail_events_per_s_max"), "{e}");
        }
        let c = ServerConfig::load(None, env(&[("HERALD_CONSOLE", "false")]), &[]).unwrap();
        assert!(!c.console);
    }
}
