//! The process-wide Prometheus recorder behind `GET /metrics`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Bucket bounds of every duration histogram, in seconds (100 µs to 60 s).
pub const DURATION_BUCKETS_SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Records how long a consumer's handler ran, as the consumer reported it with a settle.
pub fn handler_duration(api: &'static str, kind: &'static str, d: std::time::Duration) {
    metrics::histogram!("herald_server_handler_duration_seconds", "api" => api, "outcome" => kind)
        .record(d.as_secs_f64());
}

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Renders what the process recorded with the `metrics` crate.
#[derive(Clone)]
pub struct Metrics {
    handle: Option<PrometheusHandle>,
}

impl Metrics {
    /// Installs the Prometheus recorder once per process. If another recorder was installed
    /// first (an embedding application's), rendering shows only what the server adds itself.
    pub fn install() -> Metrics {
        let handle = HANDLE
            .get_or_init(|| {
                // Histograms as Prometheus histograms (buckets), so that dashboards can take
                // quantiles over any window and across servers.
                let recorder = PrometheusBuilder::new()
                    .set_buckets(DURATION_BUCKETS_SECONDS)
                    .expect("the buckets are not empty")
                    .build_recorder();
                let handle = recorder.handle();
                metrics::set_global_recorder(recorder).ok().map(|()| handle)
            })
            .clone();
        Metrics { handle }
    }

    /// The Prometheus text of everything recorded so far.
    pub fn render(&self) -> String {
        self.handle.as_ref().map(PrometheusHandle::render).unwrap_or_default()
    }
}
