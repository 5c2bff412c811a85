//! The worker: consumes submissions, validates and normalizes them, writes them to PostgreSQL in
//! batches, dead-letters what cannot be processed, and acknowledges only after the commit.
//!
//! Each of `worker.concurrency` lanes has its own broker connection, consumer and batch loop, so
//! one lane's slow batch doesn't stall the others. Any number of worker processes can consume the
//! same queue (horizontal scaling): correctness comes from the database (see [`crate::store::candidates`]).

pub mod attachments;
mod dead_letter;
pub mod failure;
mod lane;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use chrono::Datelike;
use deadpool_postgres::Pool;
use lapin::message::Delivery;
use rand::Rng;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::{
    broker::{
        envelope::{header_int, Envelope, Meta},
        publisher::Publisher,
        topology::{Topology, DEAD_KEY},
    },
    config::Settings,
    domain::candidate::{self, Candidate},
    ops,
    store::{
        self,
        candidates::{DeadRecord, Item, Outcome},
        DbError,
    },
};
use failure::Failure;

/// Why the worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database: {0}")]
    Database(#[from] DbError),
    #[error("attachments: {0}")]
    Attachments(String),
    #[error("cannot listen for /metrics: {0}")]
    Listen(#[from] std::io::Error),
}

/// State shared by the lanes of one worker process.
pub struct Worker {
    settings: Settings,
    topology: Topology,
    pool: Pool,
    /// Publishes dead letters (confirmed before the original is acknowledged).
    dead_letters: Arc<Publisher>,
    attachments: attachments::Attachments,
    /// `host:pid`, recorded in dead letters.
    name: String,
    /// Lanes currently consuming.
    lanes_up: AtomicUsize,
}

/// A running worker (tests and `all`).
pub struct Handle {
    pub ops_addr: std::net::SocketAddr,
    pub task: tokio::task::JoinHandle<()>,
}

/// A message ready to be stored.
struct Ready {
    /// Its position in the batch.
    index: usize,
    meta: Meta,
    payload: String,
    candidate: Candidate,
    attempts: i32,
}

/// A message that will be dead-lettered.
struct Dead {
    index: usize,
    meta: Option<Meta>,
    failure: Failure,
    attempts: i32,
}

/// Deliveries so far, from the quorum queue's `x-delivery-count` (absent on the first delivery).
fn attempts(delivery: &Delivery) -> i32 {
    let count = delivery.properties.headers().as_ref().and_then(|h| header_int(h, "x-delivery-count")).unwrap_or(0);
    count as i32 + 1
}

/// Runs migrations (if configured) and starts the worker; `ops_listener` serves its /metrics,
/// /healthz and /readyz. The worker stops when `shutdown` is cancelled, after finishing and
/// acknowledging the batches in flight.
pub async fn spawn(settings: &Settings, ops_listener: TcpListener, shutdown: CancellationToken) -> Result<Handle, StartError> {
    spawn_with_lookup(settings, ops_listener, shutdown, Arc::new(attachments::guard::SystemLookup)).await
}

/// As [`spawn`], resolving attachment hosts with `lookup` (tests map names to loopback addresses).
pub async fn spawn_with_lookup(
    settings: &Settings,
    ops_listener: TcpListener,
    shutdown: CancellationToken,
    lookup: Arc<dyn attachments::guard::Lookup>,
) -> Result<Handle, StartError> {
    if settings.worker.migrate_on_start {
        migrate_when_reachable(settings, &shutdown).await?;
    }
    let topology = Topology::new(&settings.queue_prefix, settings.broker.delivery_limit);
    let dead_letters = Publisher::new(settings, topology.clone(), "moka-ingest worker");
    let worker = Arc::new(Worker {
        settings: settings.clone(),
        topology,
        pool: store::pool(settings)?,
        dead_letters: dead_letters.clone(),
        attachments: attachments::Attachments::with_lookup(&settings.attachments, lookup).map_err(StartError::Attachments)?,
        name: dead_letter::worker_name(),
        lanes_up: AtomicUsize::new(0),
    });
    let publisher_stop = CancellationToken::new();
    let publisher_task = tokio::spawn(dead_letters.run(publisher_stop.clone()));

    let ops_addr = ops_listener.local_addr()?;
    let ready_worker = worker.clone();
    let ready: ops::Readiness = Arc::new(move || ready_worker.readiness());
    let ops_stop = CancellationToken::new();
    let ops_task = tokio::spawn({
        let stop = ops_stop.clone();
        async move { axum::serve(ops_listener, ops::router(ready)).with_graceful_shutdown(stop.cancelled_owned()).await }
    });

    let lanes: Vec<_> = (0..settings.worker.concurrency)
        .map(|i| tokio::spawn(lane::run(worker.clone(), i, shutdown.clone())))
        .collect();
    info!(lanes = lanes.len(), queue = %worker.topology.queue, "worker consuming");
    let task = tokio::spawn(async move {
        for lane in lanes {
            let _ = lane.await;
        }
        publisher_stop.cancel();
        let _ = publisher_task.await;
        ops_stop.cancel();
        let _ = ops_task.await;
        worker.pool.close();
        info!("worker stopped");
    });
    Ok(Handle { ops_addr, task })
}

impl Worker {
    fn readiness(&self) -> Result<(), String> {
        let up = self.lanes_up.load(Ordering::Relaxed);
        if up < self.settings.worker.concurrency {
            return Err(format!("{up} of {} consumers connected", self.settings.worker.concurrency));
        }
        if !self.dead_letters.is_ready() {
            return Err("dead-letter publisher not connected".into());
        }
        Ok(())
    }

    /// Processes one batch of deliveries from one channel and acknowledges it. Returns an error
    /// (without acknowledging) when it must be retried on a fresh connection, or on shutdown.
    async fn process_batch(&self, deliveries: &[Delivery], shutdown: &CancellationToken) -> Result<(), BatchError> {
        let started = std::time::Instant::now();
        let year = chrono::Utc::now().year();
        let mut ready = Vec::with_capacity(deliveries.len());
        let mut dead = Vec::new();
        for (index, d) in deliveries.iter().enumerate() {
            let attempts = attempts(d);
            match Envelope::from_delivery(&d.properties, &d.data) {
                Err(e) => dead.push(Dead { index, meta: None, failure: e.into(), attempts }),
                Ok(env) => match candidate::parse(&env.payload, year) {
                    Ok(candidate) => ready.push(Ready { index, meta: env.meta, payload: env.payload, candidate, attempts }),
                    Err(fields) => dead.push(Dead { index, meta: Some(env.meta), failure: fields.into(), attempts }),
                },
            }
        }

        // Attachments first: a message whose files cannot be fetched right now is retried as a whole.
        let (records, retry) = self.fetch_attachments(&mut ready).await;
        let outcomes = self.store_with_retry(&mut ready, &records, &mut dead, deliveries, shutdown).await?;

        for d in &dead {
            let delivery = &deliveries[d.index];
            let (message_id, moka_id) = d.meta.as_ref().map(|m| (m.message_id.to_string(), m.moka_id.clone())).unwrap_or_default();
            let props = dead_letter::properties(&delivery.properties, &d.failure, d.attempts, &self.name);
            self.dead_letters
                .publish(&self.topology.dead_exchange, DEAD_KEY, &delivery.data, props)
                .instrument(tracing::info_span!("dead_letter", %message_id, %moka_id))
                .await
                .map_err(|e| BatchError::Broker(format!("dead-letter publish failed: {e}")))?;
            warn!(%message_id, %moka_id, kind = d.failure.kind.as_str(), reason = %d.failure.message, "message dead-lettered");
            metrics::counter!("moka_worker_messages_total", "outcome" => "dead").increment(1);
            metrics::counter!("moka_worker_dead_letters_total", "reason" => d.failure.kind.as_str()).increment(1);
        }
        for o in outcomes {
            metrics::counter!("moka_worker_messages_total", "outcome" => o.as_str()).increment(1);
        }

        // Transient failures go back to the queue (settled first, so that the multiple-ack below
        // does not cover them).
        for (index, why) in &retry {
            warn!(reason = %why, "transient failure; message returned to the queue");
            metrics::counter!("moka_worker_messages_total", "outcome" => "retry").increment(1);
            deliveries[*index]
                .acker
                .nack(lapin::options::BasicNackOptions { multiple: false, requeue: true })
                .await
                .map_err(|e| BatchError::Broker(format!("nack failed: {e}")))?;
        }
        // Everything else is committed (or dead-lettered): acknowledge up to the last such tag.
        if let Some(last) = deliveries.iter().enumerate().rev().find(|(i, _)| !retry.iter().any(|(r, _)| r == i)) {
            last.1
                .acker
                .ack(lapin::options::BasicAckOptions { multiple: true })
                .await
                .map_err(|e| BatchError::Broker(format!("ack failed: {e}")))?;
        }
        metrics::histogram!("moka_worker_batch_seconds").record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Downloads the attachments of `ready` that are not stored yet. Messages with a transient
    /// failure leave `ready` and are returned (batch index, reason) to be retried.
    async fn fetch_attachments(&self, ready: &mut Vec<Ready>) -> (Vec<attachments::Record>, Vec<(usize, String)>) {
        let mut jobs = Vec::new();
        for (i, r) in ready.iter().enumerate() {
            for (kind, url) in attachments::wanted(&r.candidate) {
                jobs.push((i, r.candidate.moka_id.clone(), kind, url));
            }
        }
        if jobs.is_empty() {
            return (Vec::new(), Vec::new());
        }
        // A link already stored for this candidate (a redelivery, a replay) is not fetched again.
        let ids: Vec<&str> = jobs.iter().map(|j| j.1.as_str()).collect();
        let stored: std::collections::HashSet<(String, String, String)> = match self.stored_links(&ids).await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "cannot read stored attachments; fetching again");
                Default::default()
            }
        };
        jobs.retain(|(_, id, kind, url)| !stored.contains(&(id.clone(), kind.as_str().to_owned(), url.clone())));
        let mut records = Vec::new();
        let mut failed: std::collections::BTreeMap<usize, String> = Default::default();
        for (owner, result) in self.attachments.fetch_all(jobs).await {
            match result {
                Ok(record) => records.push(record),
                Err(why) => {
                    failed.entry(owner).or_insert(why);
                }
            }
        }
        let mut retry = Vec::new();
        let mut keep = Vec::with_capacity(ready.len());
        for (i, r) in ready.drain(..).enumerate() {
            match failed.remove(&i) {
                Some(why) => retry.push((r.index, why)),
                None => keep.push(r),
            }
        }
        // The records of a retried message are written all the same: its files that did arrive
        // are not fetched again when it comes back.
        *ready = keep;
        (records, retry)
    }

    async fn stored_links(&self, ids: &[&str]) -> Result<std::collections::HashSet<(String, String, String)>, DbError> {
        let client = self.pool.get().await?;
        let rows = client
            .query("SELECT moka_id, kind, url FROM candidate_attachments WHERE moka_id = ANY($1) AND status = 'stored'", &[&ids])
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
    }

    /// Writes the batch, retrying transient database failures with backoff (the messages stay
    /// unacknowledged meanwhile). Items the database refuses move to `dead`.
    async fn store_with_retry(
        &self,
        ready: &mut Vec<Ready>,
        records: &[attachments::Record],
        dead: &mut Vec<Dead>,
        deliveries: &[Delivery],
        shutdown: &CancellationToken,
    ) -> Result<Vec<Outcome>, BatchError> {
        let mut delay = Duration::from_millis(self.settings.broker.reconnect_min_ms);
        loop {
            let result = self.write(ready, records, dead).await;
            match result {
                Ok(outcomes) => return Ok(outcomes),
                Err(e) if e.is_transient() => {
                    metrics::counter!("moka_worker_db_retries_total").increment(1);
                    warn!(error = %e, retry_in = ?delay, batch = deliveries.len(), "database write failed; will retry");
                    let jittered = delay.mul_f64(rand::thread_rng().gen_range(0.5..1.0));
                    tokio::select! {
                        _ = tokio::time::sleep(jittered) => {}
                        _ = shutdown.cancelled() => return Err(BatchError::Shutdown),
                    }
                    delay = (delay * 2).min(Duration::from_millis(self.settings.broker.reconnect_max_ms));
                }
                Err(e) => {
                    // Something in the batch is refused: find it by writing the items one by one.
                    warn!(error = %e, "batch refused by the database; isolating the bad messages");
                    self.isolate(ready, dead).await?;
                }
            }
        }
    }

    /// Writes each item alone; those refused permanently join `dead`.
    async fn isolate(&self, ready: &mut Vec<Ready>, dead: &mut Vec<Dead>) -> Result<(), BatchError> {
        let mut keep = Vec::with_capacity(ready.len());
        for r in ready.drain(..) {
            match self.write(std::slice::from_ref(&r), &[], &[]).await {
                Err(DbError::Permanent(message)) => {
                    let index = r.index;
                    let failure = Failure::permanent(failure::FailureKind::Database, message);
                    dead.push(Dead { index, meta: Some(r.meta), failure, attempts: r.attempts });
                }
                // Stored (it is recorded, so the batch write sees it as done) or to be retried.
                _ => keep.push(r),
            }
        }
        *ready = keep;
        Ok(())
    }

    async fn write(&self, ready: &[Ready], records: &[attachments::Record], dead: &[Dead]) -> Result<Vec<Outcome>, DbError> {
        let items: Vec<Item> = ready
            .iter()
            .map(|r| Item { meta: &r.meta, payload: &r.payload, candidate: &r.candidate, attempts: r.attempts })
            .collect();
        let dead_records: Vec<DeadRecord> = dead
            .iter()
            .filter_map(|d| d.meta.as_ref().map(|meta| DeadRecord { meta, attempts: d.attempts, error: d.failure.to_json() }))
            .collect();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let outcomes = store::candidates::write(&tx, &items, records, &dead_records).await?;
        tx.commit().await?;
        Ok(outcomes)
    }
}

/// Migrates, waiting for the database if it is not up yet (a worker started before its
/// database should wait, not crash-loop).
async fn migrate_when_reachable(settings: &Settings, shutdown: &CancellationToken) -> Result<(), DbError> {
    let mut delay = Duration::from_millis(settings.broker.reconnect_min_ms);
    loop {
        match store::migrate::run(settings).await {
            Err(e) if e.is_transient() && !shutdown.is_cancelled() => {
                warn!(error = %e, retry_in = ?delay, "cannot migrate yet");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return Err(e),
                }
                delay = (delay * 2).min(Duration::from_millis(settings.broker.reconnect_max_ms));
            }
            other => return other.map(|_| ()),
        }
    }
}

/// Why a batch was left unacknowledged (it will be redelivered).
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("{0}")]
    Broker(String),
    #[error("shutting down")]
    Shutdown,
}

/// Runs the worker until `shutdown` (the `worker` subcommand).
pub async fn run(settings: &Settings, shutdown: CancellationToken) -> Result<(), StartError> {
    let listener = TcpListener::bind(settings.worker.listen).await?;
    let handle = spawn(settings, listener, shutdown).await?;
    info!(ops = %handle.ops_addr, "worker /metrics, /healthz, /readyz listening");
    let _ = handle.task.await;
    Ok(())
}
