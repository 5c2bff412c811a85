//! One batch of deliveries, from delivery to acknowledgement.
//!
//! Poison messages: a message that crashes (panics) or hangs the worker comes back with a
//! higher `x-delivery-count`. Such redelivered messages are processed alone, so they cannot take
//! their neighbours down with them again, and each segment runs under a panic guard and a
//! timeout; a segment that fails that way is returned to the queue, whose delivery limit finally
//! dead-letters the poison message.

use std::{panic::AssertUnwindSafe, time::Duration};

use chrono::Datelike;
use futures_util::FutureExt;
use lapin::{message::Delivery, options::BasicNackOptions};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::{
    failure::{Failure, FailureKind},
    finish::Finish,
    outcome::{BatchError, Dead, Next, Ready, Received, Retry},
    settle::Settler,
    write::{Stored, Writer},
};
use crate::{
    broker::{
        envelope::{Envelope, Group},
        headers::History,
    },
    config::LimitSettings,
    domain::{candidate, limits::Limits},
    store::candidates::{Outcome, Written},
};

/// Processes the batches of every lane of a worker process.
pub struct Batches {
    pub writer: Writer,
    pub settler: Settler,
    pub limits: Limits,
    /// Longest one segment may take before it is returned as possibly poisonous (`worker.batch_timeout_ms`).
    pub timeout: Duration,
    /// The queue's delivery limit (`broker.delivery_limit`): the last delivery is noted first.
    pub delivery_limit: u32,
}

/// The payload caps of `limits.*`, for the domain's parser.
pub fn payload_limits(l: &LimitSettings) -> Limits {
    Limits {
        id_max_bytes: l.id_max_bytes,
        max_entries: l.max_entries,
        max_links: l.max_links,
        url_max_bytes: l.url_max_bytes,
        text_max_chars: l.text_max_chars,
        max_warnings: l.max_warnings,
    }
}

impl Batches {
    /// Processes what one lane collected: fresh messages together, redelivered ones one by one,
    /// in delivery order (so that each multiple-ack only covers settled messages).
    pub async fn process_deliveries(
        &self,
        deliveries: &[Delivery],
        finish: &mpsc::Sender<Finish>,
        shutdown: &CancellationToken,
    ) -> Result<(), BatchError> {
        // A group that comes back may be what crashed or hung a worker: before anything of it is
        // processed it is split into its submissions, each a message of its own that meets the
        // delivery limit alone, so one poisonous candidate never takes its neighbours with it.
        let mut start = 0;
        for (i, d) in deliveries.iter().enumerate() {
            if Group::is_group(&d.properties) && History::read(&d.properties).redeliveries > 0 {
                self.process_run(&deliveries[start..i], finish, shutdown).await?;
                self.split(d, finish, shutdown).await?;
                start = i + 1;
            }
        }
        self.process_run(&deliveries[start..], finish, shutdown).await
    }

    /// Publishes the submissions of the redelivered group `d` as messages of their own (each
    /// confirmed), then hands the group to the finisher to be acknowledged in its turn. A group
    /// that cannot be read is processed as it is (and dead-lettered whole, with the reason).
    async fn split(
        &self,
        d: &Delivery,
        finish: &mpsc::Sender<Finish>,
        shutdown: &CancellationToken,
    ) -> Result<(), BatchError> {
        let Ok(items) = Envelope::read_all(&d.properties, &d.data) else {
            return self.process_run(std::slice::from_ref(d), finish, shutdown).await;
        };
        for e in &items {
            self.settler.resubmit(&e.meta, e.payload.as_bytes()).await?;
        }
        warn!(submissions = items.len(), "a redelivered group was split into messages of their own");
        metrics::counter!("moka_worker_groups_split_total").increment(1);
        finish
            .send(Finish { links: Vec::new(), acker: d.acker.clone() })
            .await
            .map_err(|e| BatchError::Broker { what: "the lane's finisher stopped", source: e.into() })
    }

    /// Processes deliveries that need no split: fresh ones together, redelivered ones alone.
    async fn process_run(
        &self,
        deliveries: &[Delivery],
        finish: &mpsc::Sender<Finish>,
        shutdown: &CancellationToken,
    ) -> Result<(), BatchError> {
        let timeout = self.timeout;
        // Each delivery is read once, here (a group into its submissions); what follows passes
        // the result along.
        let mut received: Vec<Received> = deliveries.iter().flat_map(Received::read_all).collect();
        let mut start = 0;
        while start < received.len() {
            let end = if received[start].history.redeliveries > 0 {
                start + 1
            } else {
                start + received[start..].iter().take_while(|r| r.history.redeliveries == 0).count()
            };
            let segment = &mut received[start..end];
            let last_chance =
                segment.len() == 1 && segment[0].history.redeliveries.saturating_add(1) >= self.delivery_limit;
            if last_chance {
                self.note_last_chance(&segment[0]).await;
            }
            let guarded = AssertUnwindSafe(self.process_batch(&mut *segment, finish, shutdown)).catch_unwind();
            let why = match tokio::time::timeout(timeout, guarded).await {
                Ok(Ok(result)) => {
                    result?;
                    if last_chance {
                        // It completed after all: the row written for the broker's dead-lettering
                        // goes (a death of another kind in this batch already replaced it).
                        self.writer.forget_last_chance(&segment[0].ids().0).await;
                    }
                    None
                }
                Ok(Err(_panic)) => Some("processing panicked"),
                Err(_elapsed) => Some("processing timed out"),
            };
            if let Some(why) = why {
                // Back to the queue: its delivery count grows, and the queue's delivery limit
                // dead-letters a message that keeps doing this.
                error!(messages = segment.len(), reason = why, "returning possibly poisonous messages to the queue");
                metrics::counter!("moka_worker_poison_returns_total").increment(segment.len() as u64);
                // Once per delivery: a group's submissions share theirs.
                let mut returned = None;
                for r in segment
                    .iter()
                    .filter(|r| returned.replace(r.delivery.delivery_tag) != Some(r.delivery.delivery_tag))
                {
                    r.delivery
                        .acker
                        .nack(BasicNackOptions { multiple: false, requeue: true })
                        .await
                        .map_err(|e| BatchError::Broker { what: "nack failed", source: e.into() })?;
                }
            }
            start = end;
        }
        Ok(())
    }

    /// Before the last delivery the queue allows, records the message as dead (delivery limit):
    /// if it crashes the worker again the broker dead-letters it and SQL already says so; if it
    /// succeeds, the row is overwritten with the real outcome.
    async fn note_last_chance(&self, received: &Received<'_>) {
        let Some(meta) = received.meta() else { return };
        let failure = Failure::permanent(
            FailureKind::DeliveryLimit,
            format!(
                "delivered {} times without completing (crash or hang)",
                received.history.redeliveries.saturating_add(1)
            ),
        );
        let dead = [Dead { index: 0, meta: Some(meta.clone()), failure, attempts: received.attempts() }];
        if let Err(e) = self.writer.write(&[], &dead).await {
            warn!(error = %crate::telemetry::chain(&e), "cannot pre-record a possibly poisonous message");
        }
        self.writer.index_dead(&[self.settler.describe_dead(received, &dead[0])]).await;
    }

    /// Processes one segment and settles every message in it: stored, moved to a delay queue,
    /// or dead-lettered, then acknowledged. Returns an error (without acknowledging) when the
    /// segment must be redelivered: broker trouble, or shutdown while waiting for the database.
    async fn process_batch(
        &self,
        received: &mut [Received<'_>],
        finish: &mpsc::Sender<Finish>,
        shutdown: &CancellationToken,
    ) -> Result<(), BatchError> {
        let started = std::time::Instant::now();
        let year = chrono::Utc::now().year();
        let limits = &self.limits;
        let mut ready = Vec::with_capacity(received.len());
        let mut dead = Vec::new();
        for (index, r) in received.iter_mut().enumerate() {
            let attempts = r.attempts();
            if r.history.replayed {
                metrics::counter!("moka_worker_replayed_messages_total").increment(1);
            }
            match &mut r.envelope {
                Err(e) => dead.push(Dead { index, meta: None, failure: e.clone().into(), attempts }),
                Ok(env) => {
                    // The payload moves on (it may be large); the metadata stays for the logs.
                    let payload = std::mem::take(&mut env.payload);
                    #[cfg(feature = "fault-injection")]
                    fault_injection(&payload).await;
                    let meta = env.meta.clone();
                    match candidate::parse(&payload, year, limits) {
                        Ok(candidate) => ready.push(Ready { index, meta, payload, candidate, attempts }),
                        Err(fields) => dead.push(Dead { index, meta: Some(meta), failure: fields.into(), attempts }),
                    }
                }
            }
        }
        let received = &*received;

        let mut retry: Vec<Retry> = Vec::new();
        let written = match self.writer.store(&mut ready, &mut dead, shutdown).await? {
            Stored::Written(written) => written,
            Stored::Unavailable(e) => {
                // The database stayed away: everything waits in the delay queues instead.
                // Those whose schedule is used up are dead, reason `database`. (Their `submissions`
                // rows cannot be written now: the database is away. The dead-letter queue has them.)
                let failure = Failure::from(e);
                for r in ready.drain(..) {
                    match self.settler.next(r.index, &received[r.index], failure.clone()) {
                        Next::Retry(r) => retry.push(r),
                        Next::Dead(d) => dead.push(d),
                    }
                }
                Written::default()
            }
        };
        let outcomes = written.outcomes;

        let mut letters = Vec::with_capacity(dead.len());
        for d in &dead {
            letters.push(self.settler.dead_letter(&received[d.index], d).await?);
        }
        self.writer.index_dead(&letters).await;
        for r in &retry {
            self.settler.retry_later(&received[r.index], &r.failure).await?;
        }
        // One increment per outcome and batch: label lookups per message add up at thousands a second.
        for outcome in [Outcome::Applied, Outcome::Stale, Outcome::Duplicate, Outcome::Replayed] {
            let n = outcomes.iter().filter(|o| **o == outcome).count() as u64;
            if n > 0 {
                metrics::counter!("moka_worker_messages_total", "outcome" => outcome.as_str()).increment(n);
            }
        }

        // Every message of the segment is now committed, dead-lettered or in a delay queue: the
        // finisher queues the files' downloads, then acknowledges.
        let last = received.last().expect("segments are never empty");
        let done = Finish { links: written.pending, acker: last.delivery.acker.clone() };
        finish
            .send(done)
            .await
            .map_err(|e| BatchError::Broker { what: "the lane's finisher stopped", source: e.into() })?;
        metrics::histogram!("moka_worker_batch_seconds").record(started.elapsed().as_secs_f64());
        Ok(())
    }
}

/// Test builds only: a payload with `"__moka_fault": "panic"` or `"hang"` misbehaves on purpose.
#[cfg(feature = "fault-injection")]
async fn fault_injection(payload: &str) {
    let fault = serde_json::from_str::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| v["__moka_fault"].as_str().map(str::to_owned));
    match fault.as_deref() {
        Some("panic") => panic!("fault injection: poison message"),
        Some("hang") => std::future::pending::<()>().await,
        _ => {}
    }
}
