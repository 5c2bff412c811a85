//! Where a failed message goes: a delay queue (transient failure, retries left) or the
//! dead-letter queue. Either publish is confirmed by the broker before the original is
//! acknowledged, so a crash at any point duplicates at worst and never loses.

use chrono::{SecondsFormat, Utc};
use lapin::{
    message::Delivery,
    types::{AMQPValue, FieldTable},
};
use rand::Rng;
use tracing::{warn, Instrument};

use super::{attempts, dead_letter, failure::Failure, retries, BatchError, Dead, Retry, Worker};
use crate::broker::{
    envelope::{header_str, Envelope},
    topology::DEAD_KEY,
};

/// Where a message with a transient failure goes next.
pub(super) enum Next {
    Retry(Retry),
    Dead(Dead),
}

impl Worker {
    /// Where a transient failure of the message at `index` goes: a delay queue while the
    /// schedule has a retry left, else the dead-letter queue ([`Worker::exhausted`]).
    pub(super) fn retry_or_exhausted(&self, index: usize, delivery: &Delivery, failure: Failure) -> Next {
        match self.topology.retry_queue(retries(delivery) as usize) {
            Some(_) => Next::Retry(Retry { index, failure }),
            None => Next::Dead(self.exhausted(index, delivery, failure)),
        }
    }

    /// Moves the message to the delay queue of its next retry; with none left (callers go
    /// through [`Worker::retry_or_exhausted`], so only a bug gets here) it is dead-lettered
    /// instead: outside data or an outage must never reach a panic.
    /// Headers `x-retry-count`, `x-first-failed-at`, `x-last-failed-at` and `x-last-error` travel with it.
    pub(super) async fn retry_later(&self, delivery: &Delivery, failure: &Failure) -> Result<(), BatchError> {
        let n = retries(delivery);
        let Some((queue, delay)) = self.topology.retry_queue(n as usize) else {
            let dead = self.exhausted(0, delivery, failure.clone());
            return self.dead_letter(delivery, &dead).await;
        };
        // ±20% jitter, so that a burst of failures does not come back as a burst.
        let jittered = delay.mul_f64(rand::thread_rng().gen_range(0.8..1.2));
        // The quorum queue's redelivery count belongs to the old copy: not carried over.
        let mut h = FieldTable::default();
        if let Some(old) = delivery.properties.headers() {
            for (k, v) in old.inner().iter().filter(|(k, _)| k.as_str() != "x-delivery-count") {
                h.insert(k.clone(), v.clone());
            }
        }
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
        let text = |s: &str| AMQPValue::LongString(s.to_owned().into());
        if header_str(&h, "x-first-failed-at").is_none() {
            h.insert("x-first-failed-at".into(), text(&now));
        }
        h.insert("x-last-failed-at".into(), text(&now));
        h.insert("x-retry-count".into(), AMQPValue::LongInt(n as i32 + 1));
        h.insert("x-last-error-kind".into(), text(failure.kind.as_str()));
        h.insert("x-last-error".into(), text(&failure.message));
        let props =
            delivery.properties.clone().with_headers(h).with_expiration(jittered.as_millis().to_string().into());
        let ids = ids(delivery);
        self.publisher
            .publish("", &queue, &delivery.data, props)
            .instrument(tracing::info_span!("retry", message_id = %ids.0, moka_id = %ids.1))
            .await
            .map_err(|e| BatchError::Broker(format!("moving to the delay queue failed: {e}")))?;
        warn!(message_id = %ids.0, moka_id = %ids.1, retry = n + 1, delay = ?jittered, kind = failure.kind.as_str(), reason = %failure.message, "transient failure; retrying later");
        metrics::counter!("moka_worker_retries_total", "reason" => failure.kind.as_str()).increment(1);
        metrics::counter!("moka_worker_messages_total", "outcome" => "retry").increment(1);
        Ok(())
    }

    /// A transient failure with no retry left (the message at `index` of the batch): dead, saying so.
    pub(super) fn exhausted(&self, index: usize, delivery: &Delivery, mut failure: Failure) -> Dead {
        let meta = Envelope::from_delivery(&delivery.properties, &delivery.data).ok().map(|e| e.meta);
        failure.transient = false;
        failure.message = format!("gave up after {} retries: {}", retries(delivery), failure.message);
        Dead { index, meta, failure, attempts: attempts(delivery) }
    }

    /// Publishes the original message, with the failure headers, to the dead-letter exchange.
    pub(super) async fn dead_letter(&self, delivery: &Delivery, dead: &Dead) -> Result<(), BatchError> {
        let ids = ids(delivery);
        let props = dead_letter::properties(&delivery.properties, &dead.failure, dead.attempts, &self.name);
        self.publisher
            .publish(&self.topology.dead_exchange, DEAD_KEY, &delivery.data, props)
            .instrument(tracing::info_span!("dead_letter", message_id = %ids.0, moka_id = %ids.1))
            .await
            .map_err(|e| BatchError::Broker(format!("dead-letter publish failed: {e}")))?;
        warn!(message_id = %ids.0, moka_id = %ids.1, kind = dead.failure.kind.as_str(), reason = %dead.failure.message, "message dead-lettered");
        metrics::counter!("moka_worker_messages_total", "outcome" => "dead").increment(1);
        metrics::counter!("moka_worker_dead_letters_total", "reason" => dead.failure.kind.as_str()).increment(1);
        Ok(())
    }
}

/// The message and candidate ids of a delivery, for logs.
fn ids(delivery: &Delivery) -> (String, String) {
    let message_id = delivery.properties.message_id().as_ref().map(|m| m.to_string()).unwrap_or_default();
    let moka_id =
        Envelope::from_delivery(&delivery.properties, &delivery.data).map(|e| e.meta.moka_id).unwrap_or_default();
    (message_id, moka_id)
}
