//! Settles finished downloads in batches: at a thousand files a second, one transaction per file
//! would make PostgreSQL the limit. Downloads hand their [`Record`] to one writer task and wait
//! for its commit before their job is acknowledged.

use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{
    backoff::Backoff,
    store::{attachments, DbError},
    telemetry,
};

/// Most rows settled in one statement.
const MAX_BATCH: usize = 512;

/// Why a record was not settled.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error("the database refused the attachment row")]
    Refused(#[source] DbError),
    #[error("shutting down before the row was written")]
    Shutdown,
}

type Reply = oneshot::Sender<Result<(), SettleError>>;

use crate::store::attachments::Record;

/// Hands records to the writer task.
#[derive(Clone)]
pub struct Results {
    tx: mpsc::Sender<(Record, Reply)>,
}

impl Results {
    /// Starts the writer on `pool`; it retries while the database is away (with `backoff`), and
    /// stops at `stop`, failing what it still holds.
    pub fn start(
        pool: Pool,
        backoff: (Duration, Duration),
        stop: CancellationToken,
    ) -> (Results, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        let task = tokio::spawn(write_loop(pool, rx, Backoff::new(backoff.0, backoff.1), stop));
        (Results { tx }, task)
    }

    /// Settles `record` and returns once it is committed.
    pub async fn settle(&self, record: Record) -> Result<(), SettleError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send((record, reply)).await.map_err(|_| SettleError::Shutdown)?;
        answer.await.unwrap_or(Err(SettleError::Shutdown))
    }
}

async fn write_loop(
    pool: Pool,
    mut rx: mpsc::Receiver<(Record, Reply)>,
    mut backoff: Backoff,
    stop: CancellationToken,
) {
    let mut batch: Vec<(Record, Reply)> = Vec::with_capacity(MAX_BATCH);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, MAX_BATCH) => if n == 0 { return },
            _ = stop.cancelled() => return,
        }
        let records: Vec<Record> = batch.iter().map(|(r, _)| r.clone()).collect();
        let outcome = loop {
            match write(&pool, &records).await {
                Ok(()) => break Ok(()),
                Err(e) if e.is_transient() => {
                    warn!(error = %telemetry::chain(&e), rows = records.len(), "cannot settle attachment rows yet; retrying");
                    if !backoff.wait(&stop).await {
                        break Err(None);
                    }
                }
                Err(e) => break Err(Some(e)),
            }
        };
        backoff.reset();
        match outcome {
            Ok(()) => batch.drain(..).for_each(|(_, reply)| drop(reply.send(Ok(())))),
            Err(None) => batch.drain(..).for_each(|(_, reply)| drop(reply.send(Err(SettleError::Shutdown)))),
            Err(Some(e)) => {
                // Something in the batch is refused: settle each alone, so only it fails.
                warn!(error = %telemetry::chain(&e), "attachment rows refused; settling them one by one");
                for (record, reply) in batch.drain(..) {
                    let result = write(&pool, std::slice::from_ref(&record)).await.map_err(SettleError::Refused);
                    let _ = reply.send(result);
                }
            }
        }
    }
}

async fn write(pool: &Pool, records: &[Record]) -> Result<(), DbError> {
    let client = pool.get().await?;
    attachments::settle(&client, records).await?;
    Ok(())
}
