//! One consumer lane: its own broker connection and channel, a batch loop, and reconnection with
//! backoff when the broker goes away (unacknowledged messages are then redelivered, to this lane
//! or another worker).

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use futures_util::StreamExt;
use lapin::{message::Delivery, Consumer};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use super::{attachments::jobs::JobQueue, backlog::Backlog, batch::Batches, finish, outcome::BatchError};
use crate::{
    backoff::Backoff,
    broker::{
        consumer::{self, ConsumeError},
        envelope::Group,
        publisher::Publisher,
        topology::Topology,
        Dialer,
    },
    config::BrokerUrls,
    telemetry,
};

/// What the lanes of one worker process share.
pub struct Lanes {
    pub batches: Batches,
    pub options: LaneOptions,
    pub topology: Topology,
    /// Publishes retries, dead letters and download jobs; lanes consume only once it is connected.
    pub publisher: Arc<Publisher>,
    /// Queues the downloads of committed candidates; `None` when `attachments.fetch` is off.
    pub jobs: Option<Arc<JobQueue>>,
    /// `host:pid`, in consumer tags.
    pub name: String,
    /// Lanes wanted (`worker.concurrency`) and currently consuming.
    pub count: usize,
    pub up: AtomicUsize,
    /// Marked when a lane takes a full batch (downloads then give way).
    pub backlog: Arc<Backlog>,
}

/// How every lane consumes (`worker.*`, `limits.batch_max_bytes`, `broker.reconnect_*`).
pub struct LaneOptions {
    pub amqp_url: BrokerUrls,
    pub prefetch: u16,
    pub batch_size: usize,
    pub batch_max_bytes: usize,
    pub batch_wait: Duration,
    /// Between reconnects.
    pub reconnect: Backoff,
}

/// Why a lane lost its consumer and reconnects.
#[derive(Debug, thiserror::Error)]
enum LaneError {
    #[error(transparent)]
    Broker(#[from] ConsumeError),
    #[error("the broker cancelled the consumer")]
    Cancelled,
    #[error(transparent)]
    Batch(BatchError),
    #[error("the lane's finisher stopped")]
    Finisher(#[source] tokio::task::JoinError),
}

/// Runs lane `id` until `shutdown`.
pub async fn run(worker: Arc<Lanes>, id: usize, shutdown: CancellationToken) {
    let mut backoff = worker.options.reconnect.clone();
    // Kept across reconnects: after losing a node, the lane moves on to the next one.
    let dialer = Dialer::new(&worker.options.amqp_url);
    while !shutdown.is_cancelled() {
        match consume(&worker, &dialer, id, &shutdown, &mut backoff).await {
            Ok(()) => break,
            Err(e) => warn!(lane = id, error = %telemetry::chain(&e), "consumer lost; reconnecting"),
        }
        if !dialer.wait_for_election(&shutdown).await || !backoff.wait(&shutdown).await {
            break;
        }
    }
}

/// One connection's life. Returns `Ok` on shutdown, `Err` when the connection must be replaced.
async fn consume(
    worker: &Lanes,
    dialer: &Dialer,
    id: usize,
    shutdown: &CancellationToken,
    backoff: &mut Backoff,
) -> Result<(), LaneError> {
    let s = &worker.options;
    // Consume only once failed messages can be moved on (retries, dead letters).
    if !consumer::wait_for(&worker.publisher, shutdown).await {
        return Ok(());
    }
    let spec = consumer::Spec {
        dialer,
        name: &format!("moka-ingest worker lane {id}"),
        queue: &worker.topology.queue,
        tag: format!("{}-lane{id}", worker.name),
        // Prefetch bounds what this lane holds unacknowledged (and so its memory).
        prefetch: s.prefetch,
    };
    let mut open = consumer::open(spec, &worker.topology).await?;
    worker.up.fetch_add(1, Ordering::Relaxed);
    backoff.reset();
    info!(lane = id, "consuming");

    // Committed segments are finished (downloads queued, then acknowledged) by a task of their own.
    let (finish_tx, finish_rx) = mpsc::channel(4);
    let mut finisher = tokio::spawn(finish::run(worker.jobs.clone(), finish_rx));
    // The finisher ends early only when it failed; the lane must notice even when idle, or the
    // segments it holds would wait for the next message to be acknowledged.
    let mut finished = None;
    let result = loop {
        let batch = tokio::select! {
            b = collect(&mut open.consumer, s.batch_size, s.batch_max_bytes, s.batch_wait) => b,
            f = &mut finisher => {
                finished = Some(f);
                break Ok(());
            }
            _ = shutdown.cancelled() => break Ok(()),
        };
        let batch = match batch {
            Ok(b) if b.is_empty() => break Err(LaneError::Cancelled),
            Ok(b) => b,
            Err(source) => break Err(LaneError::Broker(ConsumeError { what: "receive", source })),
        };
        if batch.len() >= s.batch_size {
            worker.backlog.mark();
        }
        // Test builds only: a lane that fails outside the per-message panic guard.
        #[cfg(feature = "fault-injection")]
        if batch.iter().any(|d| memchr::memmem::find(&d.data, br#""__moka_fault":"lane""#).is_some()) {
            panic!("fault injection: the lane itself panics");
        }
        // A batch in progress is finished even if shutdown arrives meanwhile (unless it is
        // waiting for the database, then it is left to be redelivered).
        let first = batch[0].properties.message_id().as_ref().map(|m| m.to_string()).unwrap_or_default();
        let span = tracing::info_span!("batch", lane = id, messages = batch.len(), first_message_id = %first);
        match worker.batches.process_deliveries(&batch, &finish_tx, shutdown).instrument(span).await {
            Ok(()) => {}
            Err(BatchError::Shutdown) => break Ok(()),
            Err(e @ BatchError::Broker { .. }) => break Err(LaneError::Batch(e)),
        }
    };
    // What was committed is finished before the channel closes (else it would only be redelivered).
    drop(finish_tx);
    let finished = match finished {
        Some(f) => f,
        None => finisher.await,
    };
    let result = match finished {
        Ok(Err(e)) => Err(LaneError::Batch(e)),
        Err(e) => Err(LaneError::Finisher(e)),
        Ok(Ok(())) => result,
    };
    worker.up.fetch_sub(1, Ordering::Relaxed);
    open.close().await;
    result
}

/// Waits for one delivery, then takes more until `max` messages, until their bodies reach
/// `max_bytes`, or until `wait` has passed. An empty batch means the consumer stream ended.
///
/// The byte budget bounds what a batch holds once parsed (payloads, candidates, the write's
/// columns) whatever the payloads' size; prefetch alone would let 500 bodies of 1 MiB into one
/// batch. Deliveries beyond it stay with the broker client until the next batch.
async fn collect(
    consumer: &mut Consumer,
    max: usize,
    max_bytes: usize,
    wait: Duration,
) -> Result<Vec<Delivery>, lapin::Error> {
    let mut batch = Vec::with_capacity(max.min(64));
    let (mut bytes, mut submissions) = (0, 0);
    match consumer.next().await {
        None => return Ok(batch),
        Some(d) => {
            let d = d?;
            bytes += d.data.len();
            submissions += Group::count(&d.properties, &d.data);
            batch.push(d);
        }
    }
    let deadline = tokio::time::Instant::now() + wait;
    // Counted in submissions: a group holds many.
    while submissions < max && bytes < max_bytes {
        match tokio::time::timeout_at(deadline, consumer.next()).await {
            Ok(Some(d)) => {
                let d = d?;
                bytes += d.data.len();
                submissions += Group::count(&d.properties, &d.data);
                batch.push(d);
            }
            Ok(None) | Err(_) => break,
        }
    }
    Ok(batch)
}
