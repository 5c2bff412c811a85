//! Where a failed message goes: a delay queue (transient failure, retries left) or the
//! dead-letter queue. Either publish is confirmed by the broker before the original is
//! acknowledged, so a crash at any point duplicates at worst and never loses.

use rand::Rng;
use tracing::{warn, Instrument};

use super::{dead_letter, failure::Failure, BatchError, Dead, Received, Retry, Worker};
use crate::broker::{headers, topology::DEAD_KEY};

/// Where a message with a transient failure goes next.
pub(super) enum Next {
    Retry(Retry),
    Dead(Dead),
}

impl Worker {
    /// Where a transient failure of the message at `index` goes: a delay queue while the
    /// schedule has a retry left, else the dead-letter queue ([`Worker::exhausted`]).
    pub(super) fn retry_or_exhausted(&self, index: usize, received: &Received<'_>, failure: Failure) -> Next {
        match self.topology.retry_queue(received.history.retries as usize) {
            Some(_) => Next::Retry(Retry { index, failure }),
            None => Next::Dead(self.exhausted(index, received, failure)),
        }
    }

    /// Moves the message to the delay queue of its next retry; with none left (callers go
    /// through [`Worker::retry_or_exhausted`], so only a bug gets here) it is dead-lettered
    /// instead: outside data or an outage must never reach a panic.
    /// Headers `x-retry-count`, `x-first-failed-at`, `x-last-failed-at` and `x-last-error` travel with it.
    pub(super) async fn retry_later(&self, received: &Received<'_>, failure: &Failure) -> Result<(), BatchError> {
        let n = received.history.retries;
        let Some((queue, delay)) = self.topology.retry_queue(n as usize) else {
            let dead = self.exhausted(0, received, failure.clone());
            return self.dead_letter(received, &dead).await;
        };
        // ±20% jitter, so that a burst of failures does not come back as a burst.
        let jittered = delay.mul_f64(rand::thread_rng().gen_range(0.8..1.2));
        let delivery = received.delivery;
        let h =
            headers::retry_headers(&delivery.properties, &received.history, failure.kind.as_str(), &failure.message);
        let props =
            delivery.properties.clone().with_headers(h).with_expiration(jittered.as_millis().to_string().into());
        let ids = received.ids();
        self.publisher
            .publish("", &queue, &delivery.data, props)
            .instrument(tracing::info_span!("retry", message_id = %ids.0, moka_id = %ids.1))
            .await
            .map_err(|e| BatchError::Broker { what: "moving to the delay queue failed", source: e.into() })?;
        warn!(message_id = %ids.0, moka_id = %ids.1, retry = n.saturating_add(1), delay = ?jittered, kind = failure.kind.as_str(), reason = %failure.message, "transient failure; retrying later");
        metrics::counter!("moka_worker_retries_total", "reason" => failure.kind.as_str()).increment(1);
        metrics::counter!("moka_worker_messages_total", "outcome" => "retry").increment(1);
        Ok(())
    }

    /// A transient failure with no retry left (the message at `index` of the batch): dead, saying so.
    pub(super) fn exhausted(&self, index: usize, received: &Received<'_>, mut failure: Failure) -> Dead {
        failure.transient = false;
        failure.message = format!("gave up after {} retries: {}", received.history.retries, failure.message);
        Dead { index, meta: received.meta().cloned(), failure, attempts: received.attempts() }
    }

    /// Publishes the original message, with the failure headers, to the dead-letter exchange.
    pub(super) async fn dead_letter(&self, received: &Received<'_>, dead: &Dead) -> Result<(), BatchError> {
        let ids = received.ids();
        let props = dead_letter::properties(received, &dead.failure, dead.attempts, &self.name);
        self.publisher
            .publish(&self.topology.dead_exchange, DEAD_KEY, &received.delivery.data, props)
            .instrument(tracing::info_span!("dead_letter", message_id = %ids.0, moka_id = %ids.1))
            .await
            .map_err(|e| BatchError::Broker { what: "dead-letter publish failed", source: e.into() })?;
        warn!(message_id = %ids.0, moka_id = %ids.1, kind = dead.failure.kind.as_str(), reason = %dead.failure.message, "message dead-lettered");
        metrics::counter!("moka_worker_messages_total", "outcome" => "dead").increment(1);
        metrics::counter!("moka_worker_dead_letters_total", "reason" => dead.failure.kind.as_str()).increment(1);
        Ok(())
    }
}
