//! Settling a failed message: a delay queue (transient failure, retries left) or the dead-letter
//! queue. Either publish is confirmed by the broker before the original is acknowledged, so a
//! crash at any point duplicates at worst and never loses.
//!
//! A dead letter is the original message (body and properties unchanged) with headers that say
//! why (written and read through [`crate::broker::headers`]):
//!
//! | header | meaning |
//! |---|---|
//! | `x-error-kind` | `envelope`, `validation`, `database`, `attachment` (the broker's own dead-lettering shows `x-death` instead, with reason `delivery_limit`) |
//! | `x-error-message` | what went wrong, naming every bad field |
//! | `x-error-fields` | JSON array of `{field, problem}` for validation failures |
//! | `x-attempts` | deliveries so far |
//! | `x-first-failed-at`, `x-last-failed-at` | RFC 3339 |
//! | `x-failed-by` | the worker (`host:pid`) that gave up |
//!
//! A retry carries `x-retry-count`, `x-first-failed-at`, `x-last-failed-at` and `x-last-error`.

use std::sync::Arc;

use lapin::BasicProperties;
use rand::Rng;
use tracing::{warn, Instrument};

use super::{
    failure::Failure,
    outcome::{BatchError, Dead, Next, Received, Retry},
};
use crate::broker::{
    dead::describe,
    envelope::Meta,
    headers::{self, DeadLetter},
    publisher::Publisher,
    topology::{Topology, DEAD_KEY, SUBMISSION_KEY},
};
use crate::domain::dead_letter::DeadMessage;

/// Moves failed messages on: to their delay queue or to the dead-letter exchange.
pub struct Settler {
    publisher: Arc<Publisher>,
    topology: Topology,
    /// `host:pid`, recorded in dead letters.
    name: String,
}

/// This process, as named in `x-failed-by`.
pub fn worker_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    format!("{host}:{}", std::process::id())
}

impl Settler {
    pub fn new(publisher: Arc<Publisher>, topology: Topology, name: String) -> Settler {
        Settler { publisher, topology, name }
    }

    /// Where a transient failure of the message at `index` goes: a delay queue while the
    /// schedule has a retry left, else the dead-letter queue ([`Dead::exhausted`]).
    pub fn next(&self, index: usize, received: &Received<'_>, failure: Failure) -> Next {
        match self.topology.retry_queue(received.history.retries as usize) {
            Some(_) => Next::Retry(Retry { index, failure }),
            None => Next::Dead(Dead::exhausted(index, received, failure)),
        }
    }

    /// Moves the message to the delay queue of its next retry; with none left (callers go
    /// through [`Settler::next`], so only a bug gets here) it is dead-lettered instead: outside
    /// data or an outage must never reach a panic.
    pub async fn retry_later(&self, received: &Received<'_>, failure: &Failure) -> Result<(), BatchError> {
        let n = received.history.retries;
        let Some((queue, delay)) = self.topology.retry_queue(n as usize) else {
            let dead = Dead::exhausted(0, received, failure.clone());
            return self.dead_letter(received, &dead).await.map(|_| ());
        };
        // ±20% jitter, so that a burst of failures does not come back as a burst.
        let jittered = delay.mul_f64(rand::thread_rng().gen_range(0.8..1.2));
        // A group's submission is retried on its own, as the version 2 message it is.
        let original = &*received.properties();
        let h = headers::retry_headers(original, &received.history, failure.kind.as_str(), &failure.message);
        let props = original.clone().with_headers(h).with_expiration(jittered.as_millis().to_string().into());
        let ids = received.ids();
        self.publisher
            .publish("", &queue, &received.body(), props)
            .instrument(tracing::info_span!("retry", message_id = %ids.0, moka_id = %ids.1))
            .await
            .map_err(|e| BatchError::Broker { what: "moving to the delay queue failed", source: e.into() })?;
        warn!(message_id = %ids.0, moka_id = %ids.1, retry = n.saturating_add(1), delay = ?jittered, kind = failure.kind.as_str(), reason = %failure.message, "transient failure; retrying later");
        metrics::counter!("moka_worker_retries_total", "reason" => failure.kind.as_str()).increment(1);
        metrics::counter!("moka_worker_messages_total", "outcome" => "retry").increment(1);
        Ok(())
    }

    /// Publishes one submission of a group as a message of its own (version 2, its own message
    /// id), confirmed, back to the submission exchange.
    pub async fn resubmit(&self, meta: &Meta, payload: &[u8]) -> Result<(), BatchError> {
        self.publisher
            .publish(&self.topology.exchange, SUBMISSION_KEY, &meta.body(payload), meta.properties())
            .await
            .map_err(|e| BatchError::Broker { what: "splitting a group failed", source: e.into() })
    }

    /// Publishes the original message, with the failure headers, to the dead-letter exchange;
    /// returns it as the dead-letter index records it.
    pub async fn dead_letter(&self, received: &Received<'_>, dead: &Dead) -> Result<DeadMessage, BatchError> {
        let ids = received.ids();
        let props = self.dead_letter_properties(received, dead);
        let body = received.body();
        let described = describe(&props, &body);
        self.publisher
            .publish(&self.topology.dead_exchange, DEAD_KEY, &body, props)
            .instrument(tracing::info_span!("dead_letter", message_id = %ids.0, moka_id = %ids.1))
            .await
            .map_err(|e| BatchError::Broker { what: "dead-letter publish failed", source: e.into() })?;
        warn!(message_id = %ids.0, moka_id = %ids.1, kind = dead.failure.kind.as_str(), reason = %dead.failure.message, "message dead-lettered");
        metrics::counter!("moka_worker_messages_total", "outcome" => "dead").increment(1);
        metrics::counter!("moka_worker_dead_letters_total", "reason" => dead.failure.kind.as_str()).increment(1);
        Ok(described)
    }

    /// `received` as it will read once dead-lettered for `dead`, without publishing it (the
    /// index row written before a possibly poisonous message's last delivery).
    pub fn describe_dead(&self, received: &Received<'_>, dead: &Dead) -> DeadMessage {
        describe(&self.dead_letter_properties(received, dead), &received.body())
    }

    /// The original properties plus the failure headers.
    fn dead_letter_properties(&self, received: &Received<'_>, dead: &Dead) -> BasicProperties {
        let failure = &dead.failure;
        let fields = (!failure.fields.is_empty())
            .then(|| serde_json::to_string(&failure.fields).expect("field errors serialize"));
        let letter = DeadLetter {
            kind: failure.kind.as_str(),
            message: &failure.message,
            fields,
            attempts: dead.attempts.unsigned_abs(),
            failed_by: &self.name,
        };
        let original = &*received.properties();
        original.clone().with_headers(headers::dead_letter_headers(original, &received.history, &letter))
    }
}
