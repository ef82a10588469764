//! OTLP export, configured like every OpenTelemetry SDK: `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), `OTEL_EXPORTER_OTLP_PROTOCOL` (`http/protobuf`, the
//! default, or `grpc`), `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`,
//! `OTEL_SDK_DISABLED`, `OTEL_TRACES_EXPORTER=none`; a program's own settings (the server's
//! `[telemetry]`) come first. Off unless an endpoint is given.

use opentelemetry::global;
use opentelemetry_otlp::{MetricExporter, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// How spans travel to the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP over gRPC (port 4317 by convention).
    Grpc,
    /// OTLP over HTTP with protobuf bodies (port 4318 by convention; the specification's default).
    HttpProtobuf,
}

impl std::str::FromStr for Protocol {
    type Err = TelemetryError;

    fn from_str(s: &str) -> Result<Protocol, TelemetryError> {
        match s {
            "grpc" => Ok(Protocol::Grpc),
            "http/protobuf" => Ok(Protocol::HttpProtobuf),
            other => Err(TelemetryError::Config(format!(
                "OTLP protocol {other:?} is not supported; say \"grpc\" or \"http/protobuf\""
            ))),
        }
    }
}

/// What a program sets itself; anything left `None` comes from the `OTEL_*` variables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// The OTLP endpoint (`http://collector:4318`). No endpoint here or in the environment:
    /// tracing stays off.
    pub endpoint: Option<String>,
    /// The protocol.
    pub protocol: Option<Protocol>,
    /// `service.name`, unless `OTEL_SERVICE_NAME` says otherwise.
    pub service_name: Option<String>,
}

/// Export could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A setting is wrong.
    #[error("telemetry: {0}")]
    Config(String),
    /// The exporter could not be built.
    #[error("telemetry: the OTLP exporter cannot be built: {0}")]
    Exporter(String),
}

/// Installed export: flushes and stops on [`Telemetry::shutdown`] (or when dropped).
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    meters: Option<SdkMeterProvider>,
}

impl Telemetry {
    /// Exports what is buffered and stops exporting.
    pub fn shutdown(mut self) {
        self.stop();
    }

    /// Exports what is buffered now.
    pub fn flush(&self) {
        if let Some(p) = &self.provider
            && let Err(e) = p.force_flush()
        {
            tracing::warn!(error = %e, "flushing spans failed");
        }
        if let Some(m) = &self.meters
            && let Err(e) = m.force_flush()
        {
            tracing::warn!(error = %e, "flushing metrics failed");
        }
    }

    fn stop(&mut self) {
        if let Some(p) = self.provider.take() {
            crate::disable();
            if let Err(e) = p.shutdown() {
                tracing::warn!(error = %e, "stopping the span exporter failed");
            }
        }
        if let Some(m) = self.meters.take()
            && let Err(e) = m.shutdown()
        {
            tracing::warn!(error = %e, "stopping the metric exporter failed");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Installs OTLP export as the global tracer provider and turns Herald's spans on, when an
/// endpoint is configured (here or in `OTEL_*`) and the SDK is not disabled; `Ok(None)` when
/// tracing stays off. Call it inside a Tokio runtime (gRPC export needs one).
pub fn install(config: &TelemetryConfig, default_service: &str) -> Result<Option<Telemetry>, TelemetryError> {
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v == "none")
    {
        return Ok(None);
    }
    if let Some(other) = env("OTEL_TRACES_EXPORTER").filter(|v| v != "otlp") {
        return Err(TelemetryError::Config(format!(
            "OTEL_TRACES_EXPORTER={other:?} is not supported; Herald exports OTLP (or set it to none)"
        )));
    }
    let from_env = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"));
    if config.endpoint.is_none() && from_env.is_none() {
        return Ok(None);
    }
    let protocol = match config.protocol {
        Some(p) => p,
        None => match env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL")) {
            Some(p) => p.parse()?,
            None => Protocol::HttpProtobuf,
        },
    };
    // A base URL given here is completed with each signal's path, as OTEL_EXPORTER_OTLP_ENDPOINT is.
    let http_endpoint = |path: &str| {
        config.endpoint.as_deref().map(|e| {
            let e = e.trim_end_matches('/');
            let base = e.strip_suffix("/v1/traces").unwrap_or(e);
            format!("{base}{path}")
        })
    };
    let exporter = match protocol {
        Protocol::Grpc => {
            let mut b = SpanExporter::builder().with_tonic();
            if let Some(e) = &config.endpoint {
                b = b.with_endpoint(e.clone());
            }
            b.build()
        }
        Protocol::HttpProtobuf => {
            let mut b = SpanExporter::builder().with_http().with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
            if let Some(e) = http_endpoint("/v1/traces") {
                b = b.with_endpoint(e);
            }
            b.build()
        }
    }
    .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let metrics = match protocol {
        Protocol::Grpc => {
            let mut b = MetricExporter::builder().with_tonic();
            if let Some(e) = &config.endpoint {
                b = b.with_endpoint(e.clone());
            }
            b.build()
        }
        Protocol::HttpProtobuf => {
            let mut b = MetricExporter::builder().with_http().with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
            if let Some(e) = http_endpoint("/v1/metrics") {
                b = b.with_endpoint(e);
            }
            b.build()
        }
    }
    .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let mut resource = Resource::builder();
    if env("OTEL_SERVICE_NAME").is_none() {
        resource =
            resource.with_service_name(config.service_name.clone().unwrap_or_else(|| default_service.to_owned()));
    }
    let resource = resource.build();
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.clone()).build();
    let meters = SdkMeterProvider::builder().with_periodic_exporter(metrics).with_resource(resource).build();
    global::set_tracer_provider(provider.clone());
    global::set_meter_provider(meters.clone());
    crate::enable();
    Ok(Some(Telemetry { provider: Some(provider), meters: Some(meters) }))
}
