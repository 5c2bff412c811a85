//! Logs (tracing, text or JSON) and metrics (the `metrics` facade with a Prometheus recorder,
//! rendered at `GET /metrics`).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{fmt, EnvFilter};

/// Installs the global log subscriber. `RUST_LOG` filters (default `info`).
pub fn init_logging(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_target(false);
    let _ = if format == "json" { builder.json().try_init() } else { builder.try_init() };
}

/// The process-wide Prometheus recorder, installed on first use (so every role, and every test
/// in one process, shares one).
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        // install_recorder also starts the upkeep thread that keeps histograms bounded. It fails
        // only if another recorder is installed, in which case ours renders an empty page.
        PrometheusBuilder::new()
            .install_recorder()
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder().handle())
    })
}
