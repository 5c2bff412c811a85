//! Logs (tracing, text or JSON) and metrics (the `metrics` facade with a Prometheus recorder,
//! rendered at `GET /metrics`). Each role declares its own metrics at start (`ingress::catalog`,
//! `worker::catalog`, the console's `register_metrics`); this module holds what they share: the recorder, the histograms'
//! buckets and the helpers that make a series exist before its first event.

use std::{io::IsTerminal, sync::OnceLock};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
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

/// Every histogram and its buckets (upper bounds). Histograms, not summaries: a deployment runs
/// several ingresses and workers, and only buckets can be summed across them before
/// `histogram_quantile`. The bounds cover what each measures, from its best case here to its
/// default timeout, so that a quantile is read from a bucket and not clamped at the last one.
pub const HISTOGRAMS: &[(&str, &[f64])] = &[
    // Request accepted → broker confirm: about 1 ms on loopback, up to the 5 s confirm timeout.
    (
        "moka_ingress_publish_seconds",
        &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
    ),
    // Submissions per published message: 1 when idle, up to `ingress.group_max_messages`.
    ("moka_ingress_group_size", &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0]),
    // One batch of up to `worker.batch_size` submissions, written in one transaction, up to
    // `worker.batch_timeout_ms` (600 s).
    (
        "moka_worker_batch_seconds",
        &[
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
            600.0,
        ],
    ),
    // One attachment fetched and stored, or failed: from a small file on a near host to a 20 MiB
    // one at the download timeout (`attachments.total_timeout_ms`, 300 s).
    (
        "moka_worker_attachment_seconds",
        &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0],
    ),
];

/// Makes `name{label=value}` exist at 0 for each value, so that a dashboard shows 0 rather than
/// "no data" and a rate over a fresh process is 0, not absent.
pub fn zero_counters(name: &'static str, label: &'static str, values: impl IntoIterator<Item = &'static str>) {
    for value in values {
        // increment(0), not absolute(0): a second start in one process (tests, `all`) keeps counts.
        metrics::counter!(name, label => value).increment(0);
    }
}

/// The process-wide Prometheus recorder, installed on first use (so every role, and every test
/// in one process, shares one).
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = || {
            HISTOGRAMS.iter().fold(PrometheusBuilder::new(), |b, (name, buckets)| {
                b.set_buckets_for_metric(Matcher::Full((*name).to_owned()), buckets)
                    .expect("the bucket lists are not empty")
            })
        };
        // Fails only if another recorder is installed, in which case ours renders an empty page.
        let handle = builder().install_recorder().unwrap_or_else(|_| builder().build_recorder().handle());
        // Histogram samples wait in a buffer until upkeep folds them into their buckets, and
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
