//! Operational endpoints served by every role: `GET /healthz` (the process is alive),
//! `GET /readyz` (its dependencies are connected) and `GET /metrics` (Prometheus text).

use std::sync::Arc;

use axum::{
    http::{header, StatusCode},
    routing::get,
    Router,
};

use crate::telemetry;

/// The Prometheus text exposition format's content type.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A readiness check: returns `Err(reason)` while the role cannot do its job.
pub type Readiness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

pub fn router(ready: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    match ready() {
                        Ok(()) => (StatusCode::OK, "ready".to_string()),
                        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
                    }
                }
            }),
        )
        .route("/metrics", get(|| async { ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], telemetry::metrics().render()) }))
}
