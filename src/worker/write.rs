//! The database write of a batch: one transaction, short in-place retries for a database blip,
//! and isolation of a message the database refuses.

use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{
    attachments,
    failure::{Failure, FailureKind},
    BatchError, Dead, Ready, Worker,
};
use crate::{
    backoff::Backoff,
    store::{
        self,
        candidates::{DeadRecord, Item, Outcome},
        DbError,
    },
};

/// The result of [`Worker::store`].
pub(super) enum Stored {
    /// Committed; one outcome per ready message.
    Written(Vec<Outcome>),
    /// The database stayed unavailable through `retry.db_attempts` tries.
    Unavailable(String),
}

impl Worker {
    /// Writes the batch, trying again in place (with short backoff) while the database is
    /// unavailable, up to `retry.db_attempts` times. Messages the database refuses move to `dead`.
    pub(super) async fn store(
        &self,
        ready: &mut Vec<Ready>,
        records: &[attachments::Record],
        dead: &mut Vec<Dead>,
        shutdown: &CancellationToken,
    ) -> Result<Stored, BatchError> {
        let mut backoff = Backoff::from_settings(&self.settings.broker);
        let mut failures = 0;
        loop {
            match self.write(ready, records, dead).await {
                Ok(outcomes) => return Ok(Stored::Written(outcomes)),
                Err(e) if e.is_transient() => {
                    failures += 1;
                    metrics::counter!("moka_worker_db_errors_total").increment(1);
                    if failures >= self.settings.retry.db_attempts.max(1) {
                        warn!(error = %e, "database unavailable; moving the batch to the delay queues");
                        return Ok(Stored::Unavailable(e.to_string()));
                    }
                    warn!(error = %e, "database write failed; trying again");
                    if !backoff.wait(shutdown).await {
                        return Err(BatchError::Shutdown);
                    }
                }
                Err(e) => {
                    // Something in the batch is refused: find it by writing the messages one by one.
                    warn!(error = %e, "batch refused by the database; isolating the bad messages");
                    self.isolate(ready, dead).await;
                }
            }
        }
    }

    /// Writes each message alone; those refused permanently join `dead`.
    async fn isolate(&self, ready: &mut Vec<Ready>, dead: &mut Vec<Dead>) {
        let mut keep = Vec::with_capacity(ready.len());
        for r in ready.drain(..) {
            match self.write(std::slice::from_ref(&r), &[], &[]).await {
                Err(DbError::Permanent(message)) => {
                    let failure = Failure::permanent(FailureKind::Database, message);
                    dead.push(Dead { index: r.index, meta: Some(r.meta), failure, attempts: r.attempts });
                }
                // Stored (it is recorded, so the batch write sees it as done) or to be retried.
                _ => keep.push(r),
            }
        }
        *ready = keep;
    }

    /// One transaction: candidates, children, attachments, submissions (and dead records).
    pub(super) async fn write(
        &self,
        ready: &[Ready],
        records: &[attachments::Record],
        dead: &[Dead],
    ) -> Result<Vec<Outcome>, DbError> {
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
        let outcomes = store::candidates::write(&tx, &items, records, &dead_records).await?;
        tx.commit().await?;
        Ok(outcomes)
    }
}
