//! Logs (tracing, text or JSON) and metrics (the `metrics` facade with a Prometheus recorder,
//! rendered at `GET /metrics`).

use std::{io::IsTerminal, sync::OnceLock};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{fmt, EnvFilter};

/// How a command logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    /// Services: stdout, `info` by default.
    Service,
    /// Operator commands: stderr (stdout is their output), `warn` by default.
    Command,
}

/// Installs the global log subscriber. `RUST_LOG` filters.
pub fn init_logging(json: bool, target: LogTarget) {
    let default = if target == LogTarget::Service { "info" } else { "warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Colours only for a person at a terminal, not in files and log collectors.
    let ansi = match target {
        LogTarget::Service => std::io::stdout().is_terminal(),
        LogTarget::Command => std::io::stderr().is_terminal(),
    };
    let builder = fmt().with_env_filter(filter).with_target(false).with_ansi(ansi);
    let _ = match (json, target) {
        (true, LogTarget::Service) => builder.json().try_init(),
        (true, LogTarget::Command) => builder.json().with_writer(std::io::stderr).try_init(),
        (false, LogTarget::Service) => builder.try_init(),
        (false, LogTarget::Command) => builder.with_writer(std::io::stderr).try_init(),
    };
}

/// An error and its sources, `a: b: c`, for log lines and stored messages: the top alone often
/// says only "database unavailable". A source whose text its parent already ends with is skipped.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The process-wide Prometheus recorder, installed on first use (so every role, and every test
/// in one process, shares one).
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        // Fails only if another recorder is installed, in which case ours renders an empty page.
        let handle = PrometheusBuilder::new()
            .install_recorder()
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder().handle());
        // Histogram samples wait in a buffer until upkeep folds them into their summaries, and
        // install_recorder leaves upkeep to the caller: without it a process nobody scrapes grows
        // by every sample it records (measured: 3,000,000 requests left an unscraped ingress
        // about 50 MiB larger).
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(std::time::Duration::from_secs(5));
                upkeep.run_upkeep();
            })
            .expect("a thread starts");
        handle
    })
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Middle);
    #[derive(Debug, thiserror::Error)]
    #[error("middle: inner")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn chain_shows_every_source_once() {
        let e = Outer(Middle(std::io::Error::other("inner")));
        assert_eq!(super::chain(&e), "outer: middle: inner");
    }
}
