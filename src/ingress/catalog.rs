//! The ingress's metrics catalogue: every metric declared with its help text when an ingress
//! starts, and made to exist at zero with every outcome a request can have, so that a fresh
//! ingress looks like a healthy one on a dashboard instead of showing "no data".

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

use super::error;
use crate::telemetry::zero_counters;

/// Declares the ingress's metrics and makes each known series exist at zero (once per process is
/// enough; again is harmless).
pub fn register() {
    describe_counter!(
        "moka_ingress_requests_total",
        "Submission requests by outcome: accepted, replayed (answered ok, not queued again) or the kind of refusal"
    );
    let refusals: Vec<&'static str> = error::examples().iter().map(|r| r.kind()).collect();
    zero_counters("moka_ingress_requests_total", "outcome", ["accepted", "replayed"].into_iter().chain(refusals));
    describe_histogram!(
        "moka_ingress_publish_seconds",
        Unit::Seconds,
        "From a verified request to the broker's confirm of the message that carries it"
    );
    let _ = metrics::histogram!("moka_ingress_publish_seconds");
    describe_histogram!("moka_ingress_group_size", Unit::Count, "Submissions per published message (group publishing)");
    let _ = metrics::histogram!("moka_ingress_group_size");
    describe_gauge!("moka_ingress_connections_open", Unit::Count, "Client connections open now");
    metrics::gauge!("moka_ingress_connections_open").increment(0.0);
    describe_counter!(
        "moka_ingress_connections_refused_total",
        "Connections refused because ingress.max_connections were open"
    );
    metrics::counter!("moka_ingress_connections_refused_total").increment(0);
    describe_counter!(
        "moka_ingress_connections_closed_total",
        "Connections the ingress closed: idle_timeout (between requests), header_timeout (a slow request head)"
    );
    zero_counters("moka_ingress_connections_closed_total", "reason", ["idle_timeout", "header_timeout"]);
}
