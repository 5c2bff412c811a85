//! The worker: consumes submissions, validates and normalizes them, writes them to PostgreSQL in
//! batches, and acknowledges only after the commit; their attachments follow, downloaded by a
//! consumer of their own. What fails for a moment is retried later through delay queues; what
//! cannot succeed goes to the dead-letter queue with its reason.
//!
//! This file starts a worker: it builds the parts from their own settings sections and runs the
//! lanes. One job per module:
//! - [`lane`]: one consumer, its connection and its batch loop;
//! - [`batch`]: one batch, from delivery to commit (poison guard, validate, write, settle failures);
//! - [`finish`]: after the commit, in order: queue the batch's downloads, acknowledge its messages;
//! - [`outcome`]: what a batch decides for each message (stored, retried, dead), in one place;
//! - [`write`]: the database write, with in-place retries and isolation of refused messages;
//! - [`settle`]: where a failed message goes: its delay queue or the dead-letter queue;
//! - [`failure`]: why a message failed and whether trying again can help;
//! - [`attachments`]: downloading and storing the files a submission links to;
//! - [`backlog`]: whether the lanes are behind, so that downloads give way to candidates.
//!
//! Each of `worker.concurrency` lanes has its own broker connection, so one lane's slow batch
//! doesn't stall the others. Any number of worker processes can consume the same queue
//! (horizontal scaling): correctness comes from the database (see [`crate::store::candidates`]).

pub mod attachments;
pub mod backlog;
mod batch;
pub mod catalog;
pub mod failure;
mod finish;
mod lane;
mod outcome;
mod settle;
mod write;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use futures_util::{stream::FuturesUnordered, FutureExt, StreamExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::{
    backoff::Backoff,
    broker::{
        publisher::{Publisher, PublisherOptions},
        topology::Topology,
        Dialer,
    },
    config::{RetrySettings, Settings},
    health,
    store::{self, DbError},
};
use attachments::{consumer::Downloads, hosts::Hosts, jobs::JobQueue, results::Results};
use batch::Batches;
use lane::{LaneOptions, Lanes};

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

/// One worker process: its lanes and its download consumer.
struct Worker {
    lanes: Arc<Lanes>,
    /// The download consumer (`attachments.fetch`).
    downloads: Option<Arc<Downloads>>,
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
    #[error("consumer {lane} panicked; the worker stopped (to be restarted)")]
    LanePanicked {
        /// `lane 0`, `lane 1`, …, or `downloads`.
        lane: String,
        #[source]
        source: tokio::task::JoinError,
    },
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
        migrate_when_reachable(&settings.database_url, &settings.retry, &shutdown).await?;
    }
    catalog::register();
    let topology = Topology::from_settings(&settings.queue_prefix, &settings.broker, &settings.retry);
    // The worker's own publisher settings (worker.*), not the ingress's.
    let (min, max) = settings.broker.reconnect_backoff();
    let options = PublisherOptions {
        channels: settings.worker.publish_channels,
        confirm_timeout: Duration::from_millis(settings.worker.confirm_timeout_ms),
        reconnect: Backoff::new(min, max),
    };
    let publisher = Publisher::new(&settings.amqp_url, topology.clone(), "moka-ingest worker", options);
    let name = settle::worker_name();
    let w = &settings.worker;
    let a = &settings.attachments;
    let pool = store::pool(&settings.database_url, w.pool_size)?;
    let background_stop = CancellationToken::new();
    let backlog = Arc::new(backlog::Backlog::default());
    let (downloads, results_task) = if a.fetch {
        let (results, task) = Results::start(pool.clone(), settings.retry.db_backoff(), background_stop.clone());
        let downloads = Downloads {
            attachments: attachments::Attachments::with_lookup(a, lookup)?,
            hosts: Arc::new(Hosts::new(a.per_host)),
            slots: Arc::new(tokio::sync::Semaphore::new(a.concurrency)),
            backlog: backlog.clone(),
            floor: (a.concurrency / 32).max(4),
            in_flight: Default::default(),
            active_jobs: Default::default(),
            results,
            publisher: publisher.clone(),
            topology: topology.clone(),
            pool: pool.clone(),
            dialer: Dialer::new(&settings.amqp_url),
            // Jobs hold up to 256 links: this many jobs keep every download slot busy.
            prefetch: u16::try_from(a.concurrency.div_ceil(2).clamp(8, 1024)).unwrap_or(1024),
            reconnect: Backoff::new(min, max),
            name: name.clone(),
            up: Default::default(),
        };
        (Some(Arc::new(downloads)), Some(task))
    } else {
        (None, None)
    };
    let batches = Batches {
        writer: write::Writer::new(pool, &settings.retry, a.fetch),
        settler: settle::Settler::new(publisher.clone(), topology.clone(), name.clone()),
        limits: batch::payload_limits(&settings.limits),
        timeout: Duration::from_millis(w.batch_timeout_ms),
        delivery_limit: settings.broker.delivery_limit,
    };
    let lane = LaneOptions {
        amqp_url: settings.amqp_url.clone(),
        prefetch: w.prefetch,
        batch_size: w.batch_size,
        batch_max_bytes: settings.limits.batch_max_bytes,
        batch_wait: Duration::from_millis(w.batch_wait_ms),
        reconnect: Backoff::new(min, max),
    };
    let lanes = Arc::new(Lanes {
        batches,
        options: lane,
        jobs: a.fetch.then(|| Arc::new(JobQueue::new(publisher.clone(), &topology))),
        topology,
        publisher: publisher.clone(),
        name,
        count: w.concurrency,
        up: AtomicUsize::new(0),
        backlog,
    });
    let worker = Arc::new(Worker { lanes, downloads });
    let publisher_task = tokio::spawn(publisher.run(background_stop.clone()));
    let depth_task = tokio::spawn(watch_queues(worker.clone(), background_stop.clone()));

    let ops_addr = ops_listener.local_addr()?;
    let ready_worker = worker.clone();
    let ready: health::Readiness = Arc::new(move || ready_worker.readiness());
    let ops_task = tokio::spawn({
        let stop = background_stop.clone();
        async move { axum::serve(ops_listener, health::router(ready)).with_graceful_shutdown(stop.cancelled_owned()).await }
    });

    // The lanes stop on shutdown, or when one of them fails: then the others are stopped too.
    let lanes_stop = shutdown.child_token();
    let mut lanes: FuturesUnordered<_> = (0..worker.lanes.count)
        .map(|i| {
            let lane = tokio::spawn(lane::run(worker.lanes.clone(), i, lanes_stop.clone()));
            async move { (format!("lane {i}"), lane.await) }.boxed()
        })
        .collect();
    if let Some(downloads) = &worker.downloads {
        let consumer = tokio::spawn(downloads.clone().run(lanes_stop.clone()));
        lanes.push(async move { ("downloads".to_owned(), consumer.await) }.boxed());
    }
    info!(lanes = lanes.len(), queue = %worker.lanes.topology.queue, "worker consuming");
    let task = tokio::spawn(async move {
        let mut failed = None;
        while let Some((lane, result)) = lanes.next().await {
            if let Err(source) = result {
                if failed.is_none() {
                    error!(%lane, error = %source, "a consumer panicked; stopping the worker");
                    lanes_stop.cancel();
                    failed = Some(WorkerError::LanePanicked { lane, source });
                }
            }
        }
        background_stop.cancel();
        let _ = tokio::join!(publisher_task, depth_task, ops_task);
        if let Some(task) = results_task {
            let _ = task.await;
        }
        worker.lanes.batches.writer.pool().close();
        info!("worker stopped");
        failed.map_or(Ok(()), Err)
    });
    Ok(Handle { ops_addr, task })
}

impl Worker {
    fn readiness(&self) -> Result<(), String> {
        let up = self.lanes.up.load(Ordering::Relaxed);
        if up < self.lanes.count {
            return Err(format!("{up} of {} consumers connected", self.lanes.count));
        }
        if !self.lanes.publisher.is_ready() {
            return Err("publisher (retries, dead letters) not connected".into());
        }
        if self.downloads.as_ref().is_some_and(|d| !d.is_up()) {
            return Err("download consumer not connected".into());
        }
        Ok(())
    }
}

/// Keeps the queue gauges current, for alerting: `moka_queue_messages{queue}`,
/// `moka_queue_consumers{queue}` and `moka_dead_letter_queue_depth`. Every worker reports the
/// same figures; dashboards and alerts take the maximum over instances.
async fn watch_queues(worker: Arc<Worker>, stop: CancellationToken) {
    let t = &worker.lanes.topology;
    // The labels of `catalog::QUEUES`, each with its queue.
    let queues = [("submissions", &t.queue), ("downloads", &t.downloads), ("dead", &t.dead_queue)];
    loop {
        for (label, queue) in queues {
            if let Some(stats) = worker.lanes.publisher.queue_stats(queue).await {
                metrics::gauge!("moka_queue_messages", "queue" => label).set(stats.messages);
                metrics::gauge!("moka_queue_consumers", "queue" => label).set(stats.consumers);
                if label == "dead" {
                    metrics::gauge!("moka_dead_letter_queue_depth").set(stats.messages);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Migrates, waiting for the database if it is not up yet (a worker started before its
/// database should wait, not crash-loop).
async fn migrate_when_reachable(
    database_url: &secrecy::SecretString,
    retry: &RetrySettings,
    shutdown: &CancellationToken,
) -> Result<(), DbError> {
    let (min, max) = retry.db_backoff();
    let mut backoff = Backoff::new(min, max);
    loop {
        match store::migrate::run(database_url).await {
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
