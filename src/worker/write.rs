//! The database write of a batch: one transaction, short in-place retries for a database blip,
//! and isolation of the messages the database refuses.
//!
//! When the batch is refused for its data (a permanent SQLSTATE, see [`crate::store`]), every
//! message is written alone, in its own transaction with its own pending attachment rows: the ones
//! refused are dead (reason `database`, the SQLSTATE in the message), their neighbours are
//! committed at this same attempt. Isolation ends the batch's write: there is no second pass that
//! could be refused again, so no loop that spins on a fault it cannot place.

use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::{
    failure::{Failure, FailureKind},
    outcome::{BatchError, Dead, Ready},
};
use crate::{
    backoff::Backoff,
    config::RetrySettings,
    domain::dead_letter::DeadMessage,
    store::{
        self,
        candidates::{DeadRecord, Item, Written},
        dead_letters::{self, State},
        DbError,
    },
    telemetry,
};

/// Writes batches to PostgreSQL, tuned by `retry.db_*`.
pub struct Writer {
    pool: Pool,
    /// Tries of one write while the database is unavailable (`retry.db_attempts`).
    attempts: u32,
    backoff: (Duration, Duration),
    /// Record each applied candidate's links as `pending` (`attachments.fetch`).
    track_links: bool,
}

/// The result of [`Writer::store`].
pub enum Stored {
    /// Committed; one outcome per message left in `ready`, and the links to download.
    Written(Written),
    /// The database stayed unavailable through `retry.db_attempts` tries.
    Unavailable(DbError),
}

impl Writer {
    pub fn new(pool: Pool, retry: &RetrySettings, track_links: bool) -> Writer {
        Writer { pool, attempts: retry.db_attempts.max(1), backoff: retry.db_backoff(), track_links }
    }

    /// The pool, for the reads that go with a batch (attachments already stored).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Writes the batch, trying again in place (with short backoff) while the database is
    /// unavailable, up to `retry.db_attempts` times. Messages the database refuses move to `dead`.
    pub async fn store(
        &self,
        ready: &mut Vec<Ready>,
        dead: &mut Vec<Dead>,
        shutdown: &CancellationToken,
    ) -> Result<Stored, BatchError> {
        let mut backoff = Backoff::new(self.backoff.0, self.backoff.1);
        let mut failures = 0;
        loop {
            let e = match self.write(ready, dead).await {
                Ok(written) => return Ok(Stored::Written(written)),
                Err(e) if e.is_transient() => e,
                Err(e) => {
                    // Something in the batch is refused: find it by writing the messages one by one.
                    warn!(error = %telemetry::chain(&e), "batch refused by the database; writing its messages one by one");
                    match self.isolate(ready, dead).await {
                        Ok(written) => return Ok(Stored::Written(written)),
                        // What was committed alone is recorded, and counts as done when tried again.
                        Err(e) => e,
                    }
                }
            };
            failures += 1;
            metrics::counter!("moka_worker_db_errors_total").increment(1);
            if failures >= self.attempts {
                warn!(error = %telemetry::chain(&e), "database unavailable; moving the batch to the delay queues");
                return Ok(Stored::Unavailable(e));
            }
            warn!(error = %telemetry::chain(&e), "database write failed; trying again");
            if !backoff.wait(shutdown).await {
                return Err(BatchError::Shutdown);
            }
        }
    }

    /// Writes each message alone, then each dead record alone.
    /// Messages refused for their data join `dead`; the others are committed. Returns their
    /// outcomes, or the first transient error (the caller retries: what was committed is then
    /// a duplicate).
    async fn isolate(&self, ready: &mut Vec<Ready>, dead: &mut Vec<Dead>) -> Result<Written, DbError> {
        let mut written = Written { outcomes: Vec::with_capacity(ready.len()), pending: Vec::new() };
        let mut keep = Vec::with_capacity(ready.len());
        let mut pending = std::mem::take(ready).into_iter();
        for r in pending.by_ref() {
            match self.write(std::slice::from_ref(&r), &[]).await {
                Ok(w) => {
                    written.outcomes.extend(w.outcomes);
                    written.pending.extend(w.pending);
                    keep.push(r);
                }
                Err(e @ DbError::Permanent { .. }) => {
                    let failure = Failure::permanent(FailureKind::Database, telemetry::chain(&e));
                    dead.push(Dead { index: r.index, meta: Some(r.meta), failure, attempts: r.attempts });
                }
                Err(e) => {
                    keep.push(r);
                    keep.extend(pending);
                    *ready = keep;
                    return Err(e);
                }
            }
        }
        *ready = keep;
        // Dead records are made storable (see `store::storable`), so this should never refuse
        // one; if it does, the message is still in the dead-letter queue with its reason.
        for d in dead.iter() {
            match self.write(&[], std::slice::from_ref(d)).await {
                Ok(_) => {}
                Err(e @ DbError::Permanent { .. }) => {
                    error!(error = %telemetry::chain(&e), index = d.index, "cannot record a dead message in submissions")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(written)
    }

    /// Records `messages`, just dead-lettered, in the console's index. Best effort: the dead
    /// letter itself is already safe in its queue, and a failure here is counted
    /// (`moka_worker_dead_letter_index_errors_total`) and repaired by a re-index.
    pub async fn index_dead(&self, messages: &[DeadMessage]) {
        if messages.is_empty() {
            return;
        }
        let result = match self.pool.get().await {
            Ok(client) => dead_letters::record(&client, messages, State::Dead, None).await,
            Err(e) => Err(e.into()),
        };
        if let Err(e) = result {
            warn!(error = %telemetry::chain(&e), messages = messages.len(), "cannot index dead letters");
            metrics::counter!("moka_worker_dead_letter_index_errors_total").increment(messages.len() as u64);
        }
    }

    /// Forgets the index row written before the last delivery of `message_id`, which completed.
    pub async fn forget_last_chance(&self, message_id: &str) {
        let result = match self.pool.get().await {
            Ok(client) => dead_letters::forget_last_chance(&client, message_id).await,
            Err(e) => Err(e.into()),
        };
        if let Err(e) = result {
            warn!(error = %telemetry::chain(&e), message_id, "cannot forget a possibly poisonous message's index row");
        }
    }

    /// One transaction: candidates, children, pending attachment rows, submissions (and dead records).
    pub async fn write(&self, ready: &[Ready], dead: &[Dead]) -> Result<Written, DbError> {
        let items: Vec<Item> = ready
            .iter()
            .map(|r| Item { meta: &r.meta, payload: &r.payload, candidate: &r.candidate, attempts: r.attempts })
            .collect();
        let dead_records: Vec<DeadRecord> = dead
            .iter()
            .filter_map(|d| {
                d.meta.as_ref().map(|meta| DeadRecord { meta, attempts: d.attempts, error: d.failure.to_json() })
            })
            .collect();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let written = store::candidates::write(&tx, &items, self.track_links, &dead_records).await?;
        tx.commit().await?;
        Ok(written)
    }
}
