//! The worker's metrics catalogue: every metric declared with its help text when a worker starts,
//! and made to exist at zero with every outcome and reason known in advance, so that a fresh
//! worker looks like a healthy one on a dashboard, and an alert on a rate sees 0, not nothing.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

use super::failure::FailureKind;
use crate::telemetry::zero_counters;

/// `moka_worker_messages_total{outcome}`: the store's outcomes, then the worker's own two.
pub const MESSAGE_OUTCOMES: [&str; 5] = ["applied", "stale", "duplicate", "retry", "dead"];
/// `moka_worker_attachments_total{outcome}`.
pub const ATTACHMENT_OUTCOMES: [&str; 5] = ["stored", "failed", "retry", "dead", "superseded"];
/// `moka_queue_messages{queue}` and `moka_queue_consumers{queue}`.
pub const QUEUES: [&str; 3] = ["submissions", "downloads", "dead"];

/// Declares the worker's metrics and makes each known series exist at zero (once per process is
/// enough; again is harmless).
pub fn register() {
    let reasons = || FailureKind::ALL.iter().map(|k| k.as_str());
    describe_counter!("moka_worker_messages_total", "Submissions by outcome: applied, stale, duplicate, retry, dead");
    zero_counters("moka_worker_messages_total", "outcome", MESSAGE_OUTCOMES);
    describe_counter!("moka_worker_retries_total", "Submissions and download jobs sent to a retry delay, by reason");
    zero_counters("moka_worker_retries_total", "reason", reasons());
    describe_counter!("moka_worker_dead_letters_total", "Messages dead-lettered, by reason");
    zero_counters("moka_worker_dead_letters_total", "reason", reasons());
    describe_counter!("moka_worker_attachments_total", "Attachment downloads by outcome");
    zero_counters("moka_worker_attachments_total", "outcome", ATTACHMENT_OUTCOMES);
    for (name, help) in [
        ("moka_worker_db_errors_total", "Batches PostgreSQL failed (each is retried)"),
        ("moka_worker_poison_returns_total", "Submissions that crashed or hung the worker and were returned alone"),
        ("moka_worker_groups_split_total", "Group messages split into their submissions after a failure"),
        ("moka_worker_replayed_messages_total", "Deliveries of a message already settled (acknowledged again)"),
        ("moka_worker_dead_letter_index_errors_total", "Dead letters the console's index could not record"),
        ("moka_worker_downloads_queued_total", "Attachment download jobs queued"),
    ] {
        describe_counter!(name, help);
        metrics::counter!(name).increment(0);
    }
    describe_counter!("moka_worker_attachment_bytes_total", Unit::Bytes, "Bytes of attachments stored");
    metrics::counter!("moka_worker_attachment_bytes_total").increment(0);
    describe_histogram!("moka_worker_batch_seconds", Unit::Seconds, "One batch: validated, written and settled");
    let _ = metrics::histogram!("moka_worker_batch_seconds");
    describe_histogram!("moka_worker_attachment_seconds", Unit::Seconds, "One attachment fetch, stored or failed");
    let _ = metrics::histogram!("moka_worker_attachment_seconds");
    describe_gauge!("moka_worker_downloads_in_flight", Unit::Count, "Attachment downloads running now");
    metrics::gauge!("moka_worker_downloads_in_flight").increment(0.0);
    describe_gauge!("moka_worker_downloads_waiting", Unit::Count, "Downloads waiting for a host's turn, by host");
    describe_gauge!("moka_dead_letter_queue_depth", Unit::Count, "Messages in the dead-letter queue");
    metrics::gauge!("moka_dead_letter_queue_depth").increment(0.0);
    describe_gauge!("moka_queue_messages", Unit::Count, "Messages in each queue (read from RabbitMQ every 10 s)");
    describe_gauge!("moka_queue_consumers", Unit::Count, "Consumers of each queue (read from RabbitMQ every 10 s)");
    for queue in QUEUES {
        metrics::gauge!("moka_queue_messages", "queue" => queue).increment(0.0);
        metrics::gauge!("moka_queue_consumers", "queue" => queue).increment(0.0);
    }
}
