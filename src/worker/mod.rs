//! The worker: consumes submissions, validates and normalizes them, fetches their attachments,
//! writes them to PostgreSQL in batches, and acknowledges only after the commit. What fails
//! for a moment is retried later through delay queues ([`retry`]); what cannot succeed goes to the
//! dead-letter queue with its reason ([`dead_letter`]).
//!
//! Modules: [`lane`] (one consumer and its batch loop), [`batch`] (one batch: guard against
//! poison messages, validate, fetch, write, settle), [`write`] (the database write with in-place
//! retries), [`retry`] and [`dead_letter`] (where failed messages go), [`attachments`].
//!
//! Each of `worker.concurrency` lanes has its own broker connection, so one lane's slow batch
//! doesn't stall the others. Any number of worker processes can consume the same queue
//! (horizontal scaling): correctness comes from the database (see [`crate::store::candidates`]).

pub mod attachments;
mod batch;
mod dead_letter;
pub mod failure;
mod lane;
mod retry;
mod write;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use deadpool_postgres::Pool;
use futures_util::{stream::FuturesUnordered, StreamExt};
use lapin::message::Delivery;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::{
    backoff::Backoff,
    broker::{
        envelope::{Envelope, EnvelopeError, Meta},
        headers::History,
        publisher::{Publisher, PublisherOptions},
        topology::Topology,
    },
    config::Settings,
    domain::candidate::Candidate,
    health,
    store::{self, DbError},
};
use failure::Failure;

/// Why the worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database")]
    Database(#[from] DbError),
    #[error("attachments")]
    Attachments(#[from] attachments::SetupError),
    #[error("cannot listen for /metrics")]
    Listen(#[from] std::io::Error),
}

/// State shared by the lanes of one worker process.
pub struct Worker {
    settings: Settings,
    topology: Topology,
    pool: Pool,
    /// Publishes dead letters and retries (confirmed before the original is acknowledged).
    publisher: Arc<Publisher>,
    attachments: attachments::Attachments,
    /// `host:pid`, recorded in dead letters.
    name: String,
    /// Lanes currently consuming.
    lanes_up: AtomicUsize,
}

/// A running worker (tests and `all`).
pub struct Handle {
    pub ops_addr: std::net::SocketAddr,
    /// Ends after shutdown, or with an error as soon as a lane failed (the other lanes are
    /// stopped first): a worker missing a lane must not stay up half alive.
    pub task: tokio::task::JoinHandle<Result<(), WorkerError>>,
}

/// Why a worker stopped without being asked to.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("consumer lane {lane} panicked; the worker stopped (to be restarted)")]
    LanePanicked {
        lane: usize,
        #[source]
        source: tokio::task::JoinError,
    },
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

/// A message that failed for now and will be retried after a delay.
struct Retry {
    index: usize,
    failure: Failure,
}

/// A delivery, read once when it arrives: its envelope (or why it is not one) and what its
/// headers say about earlier attempts. The rest of the worker passes this along instead of
/// reading the delivery again.
struct Received<'a> {
    delivery: &'a Delivery,
    history: History,
    /// The envelope; its payload is taken (left empty) when the message becomes [`Ready`].
    envelope: Result<Envelope, EnvelopeError>,
}

impl<'a> Received<'a> {
    fn read(delivery: &'a Delivery) -> Received<'a> {
        Received {
            delivery,
            history: History::read(&delivery.properties),
            envelope: Envelope::from_delivery(&delivery.properties, &delivery.data),
        }
    }

    fn meta(&self) -> Option<&Meta> {
        self.envelope.as_ref().ok().map(|e| &e.meta)
    }

    /// Processing attempts so far, this one included, as the `submissions` table counts them.
    fn attempts(&self) -> i32 {
        i32::try_from(self.history.attempts()).unwrap_or(i32::MAX)
    }

    /// The message and candidate ids, for logs.
    fn ids(&self) -> (String, String) {
        let message_id = self.delivery.properties.message_id().as_ref().map(|m| m.to_string()).unwrap_or_default();
        (message_id, self.meta().map(|m| m.moka_id.clone()).unwrap_or_default())
    }
}

/// Runs migrations (if configured) and starts the worker; `ops_listener` serves its /metrics,
/// /healthz and /readyz. The worker stops when `shutdown` is cancelled, after finishing and
/// acknowledging the batches in flight.
pub async fn spawn(
    settings: &Settings,
    ops_listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<Handle, StartError> {
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
    let topology = Topology::from_settings(settings);
    // The worker's own publisher settings (worker.*), not the ingress's.
    let (min, max) = settings.broker.reconnect_backoff();
    let options = PublisherOptions {
        channels: settings.worker.publish_channels,
        confirm_timeout: Duration::from_millis(settings.worker.confirm_timeout_ms),
        reconnect: Backoff::new(min, max),
    };
    let publisher = Publisher::new(&settings.amqp_url, topology.clone(), "moka-ingest worker", options);
    let worker = Arc::new(Worker {
        settings: settings.clone(),
        topology,
        pool: store::pool(&settings.database_url, settings.worker.pool_size)?,
        publisher: publisher.clone(),
        attachments: attachments::Attachments::with_lookup(&settings.attachments, lookup)?,
        name: dead_letter::worker_name(),
        lanes_up: AtomicUsize::new(0),
    });
    let background_stop = CancellationToken::new();
    let publisher_task = tokio::spawn(publisher.run(background_stop.clone()));
    let depth_task = tokio::spawn(watch_dead_letter_depth(worker.clone(), background_stop.clone()));

    let ops_addr = ops_listener.local_addr()?;
    let ready_worker = worker.clone();
    let ready: health::Readiness = Arc::new(move || ready_worker.readiness());
    let ops_task = tokio::spawn({
        let stop = background_stop.clone();
        async move { axum::serve(ops_listener, health::router(ready)).with_graceful_shutdown(stop.cancelled_owned()).await }
    });

    // The lanes stop on shutdown, or when one of them fails: then the others are stopped too.
    let lanes_stop = shutdown.child_token();
    let mut lanes: FuturesUnordered<_> = (0..settings.worker.concurrency)
        .map(|i| {
            let lane = tokio::spawn(lane::run(worker.clone(), i, lanes_stop.clone()));
            async move { (i, lane.await) }
        })
        .collect();
    info!(lanes = lanes.len(), queue = %worker.topology.queue, "worker consuming");
    let task = tokio::spawn(async move {
        let mut failed = None;
        while let Some((lane, result)) = lanes.next().await {
            if let Err(source) = result {
                if failed.is_none() {
                    error!(lane, error = %source, "a consumer lane panicked; stopping the worker");
                    lanes_stop.cancel();
                    failed = Some(WorkerError::LanePanicked { lane, source });
                }
            }
        }
        background_stop.cancel();
        let _ = tokio::join!(publisher_task, depth_task, ops_task);
        worker.pool.close();
        info!("worker stopped");
        failed.map_or(Ok(()), Err)
    });
    Ok(Handle { ops_addr, task })
}

impl Worker {
    fn readiness(&self) -> Result<(), String> {
        let up = self.lanes_up.load(Ordering::Relaxed);
        if up < self.settings.worker.concurrency {
            return Err(format!("{up} of {} consumers connected", self.settings.worker.concurrency));
        }
        if !self.publisher.is_ready() {
            return Err("publisher (retries, dead letters) not connected".into());
        }
        Ok(())
    }
}

/// Keeps `moka_dead_letter_queue_depth` current, for alerting.
async fn watch_dead_letter_depth(worker: Arc<Worker>, stop: CancellationToken) {
    loop {
        if let Some(depth) = worker.publisher.queue_depth(&worker.topology.dead_queue).await {
            metrics::gauge!("moka_dead_letter_queue_depth").set(depth as f64);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Migrates, waiting for the database if it is not up yet (a worker started before its
/// database should wait, not crash-loop).
async fn migrate_when_reachable(settings: &Settings, shutdown: &CancellationToken) -> Result<(), DbError> {
    let (min, max) = settings.retry.db_backoff();
    let mut backoff = Backoff::new(min, max);
    loop {
        match store::migrate::run(&settings.database_url).await {
            Err(e) if e.is_transient() => {
                warn!(error = %crate::telemetry::chain(&e), "cannot migrate yet; retrying");
                if !backoff.wait(shutdown).await {
                    return Err(e);
                }
            }
            other => return other.map(|_| ()),
        }
    }
}

/// Why a batch was left unacknowledged (it will be redelivered).
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// Acknowledging, or moving a failed message on, did not work: the lane reconnects.
    #[error("{what}")]
    Broker {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    #[error("shutting down")]
    Shutdown,
}
