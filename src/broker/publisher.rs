//! A supervised broker connection with a few confirm-mode channels that any number of tasks
//! publish on at once (confirms are pipelined, not one publish at a time).
//!
//! The supervisor ([`Publisher::run`]) connects, declares the topology, and when the connection
//! breaks drops it at once (so callers get [`PublishError::NotConnected`] immediately instead of
//! hanging) and reconnects with exponential backoff and jitter until shutdown.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, RwLock,
    },
    time::Duration,
};

use lapin::{
    options::{BasicPublishOptions, ConfirmSelectOptions},
    publisher_confirm::Confirmation,
    BasicProperties, Channel, Connection,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{topology::Topology, Dialer};
use crate::{backoff::Backoff, config::BrokerUrls};

/// Why a publish was not confirmed. Every variant means "not in the queue": the caller must not
/// report success.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("not connected to the broker")]
    NotConnected,
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("the message was returned as unroutable (no queue bound)")]
    Unroutable,
    #[error("no publisher confirm within {0:?}")]
    Timeout(Duration),
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
}

/// One established connection and its publishing channels.
pub struct Live {
    pub conn: Connection,
    channels: Vec<Channel>,
    next: AtomicUsize,
    /// Signalled when the connection or a channel fails; wakes the supervisor.
    broken: Arc<Notify>,
    /// Some publish on this connection was confirmed.
    acked: AtomicBool,
}

impl Live {
    /// Asks the supervisor to replace this connection.
    pub fn mark_broken(&self) {
        self.broken.notify_one();
    }
}

/// How a publisher publishes and reconnects.
#[derive(Debug, Clone)]
pub struct PublisherOptions {
    /// Confirm-mode channels, used in turn.
    pub channels: usize,
    /// Longest wait for a publisher confirm.
    pub confirm_timeout: Duration,
    /// Waits between reconnects.
    pub reconnect: Backoff,
}

/// Shared by every request handler; cheap to call from many tasks.
pub struct Publisher {
    name: String,
    dialer: Dialer,
    topology: Topology,
    channels: usize,
    confirm_timeout: Duration,
    backoff: Backoff,
    live: RwLock<Option<Arc<Live>>>,
}

/// What RabbitMQ says of a queue (as gauge values).
#[derive(Debug, Clone, Copy)]
pub struct QueueStats {
    pub messages: f64,
    pub consumers: f64,
}

impl Publisher {
    /// `name` shows in the broker's connection list (e.g. `moka-ingest ingress`); `options` come
    /// from the section of the role that publishes (`ingress.*` or `worker.*`).
    pub fn new(urls: &BrokerUrls, topology: Topology, name: &str, options: PublisherOptions) -> Arc<Publisher> {
        // The series exist from the start (0: not connected yet), for dashboards and alerts;
        // increment(0) leaves another publisher of the same role in this process as it is.
        metrics::describe_gauge!("moka_broker_connected", "1 while the role's publishing connection is up");
        metrics::describe_counter!("moka_broker_reconnects_total", "Publishing connections lost and opened again");
        metrics::gauge!("moka_broker_connected", "role" => name.to_owned()).increment(0.0);
        metrics::counter!("moka_broker_reconnects_total", "role" => name.to_owned()).increment(0);
        Arc::new(Publisher {
            name: name.to_owned(),
            dialer: Dialer::new(urls),
            topology,
            channels: options.channels,
            confirm_timeout: options.confirm_timeout,
            backoff: options.reconnect,
            live: RwLock::new(None),
        })
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The current connection, if one is established.
    pub fn current(&self) -> Option<Arc<Live>> {
        self.live.read().expect("publisher lock").clone()
    }

    /// Connected and topology declared.
    pub fn is_ready(&self) -> bool {
        self.current().is_some_and(|l| l.conn.status().connected())
    }

    /// Keeps a connection up until `shutdown`, then closes it cleanly.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = self.backoff.clone();
        while !shutdown.is_cancelled() {
            // Room for the dialer to try every node, then to declare the topology.
            let limit = self.dialer.worst_case().max(Duration::from_secs(5)) + Duration::from_secs(10);
            match tokio::time::timeout(limit, self.connect()).await {
                Ok(Ok(live)) => {
                    backoff.reset();
                    let broken = live.broken.clone();
                    *self.live.write().expect("publisher lock") = Some(Arc::new(live));
                    metrics::gauge!("moka_broker_connected", "role" => self.name.clone()).set(1.0);
                    info!(connection = %self.name, "broker connected, topology declared");
                    tokio::select! {
                        _ = broken.notified() => warn!(connection = %self.name, "broker connection lost"),
                        _ = shutdown.cancelled() => {}
                    }
                    let old = self.live.write().expect("publisher lock").take();
                    metrics::gauge!("moka_broker_connected", "role" => self.name.clone()).set(0.0);
                    if let Some(old) = old {
                        // Closing waits for the broker; a dead one must not hold up the reconnect.
                        let close = tokio::time::timeout(Duration::from_secs(2), old.conn.close(200, "bye"));
                        let _ = close.await;
                    }
                    if shutdown.is_cancelled() {
                        break;
                    }
                    metrics::counter!("moka_broker_reconnects_total", "role" => self.name.clone()).increment(1);
                }
                Ok(Err(e)) => warn!(connection = %self.name, error = %e, "cannot connect to the broker; retrying"),
                Err(_) => warn!(connection = %self.name, "broker connect timed out; retrying"),
            }
            if !self.dialer.wait_for_election(&shutdown).await || !backoff.wait(&shutdown).await {
                break;
            }
        }
    }

    async fn connect(&self) -> Result<Live, lapin::Error> {
        let conn = self.dialer.connect(&self.name).await?;
        let broken = Arc::new(Notify::new());
        let on_error = broken.clone();
        conn.on_error(move |e| {
            warn!(error = %e, "broker connection error");
            on_error.notify_one();
        });
        let ch = conn.create_channel().await?;
        self.topology.declare(&ch).await?;
        ch.close(200, "declared").await?;
        let mut channels = Vec::with_capacity(self.channels);
        for _ in 0..self.channels {
            let ch = conn.create_channel().await?;
            // Confirm mode: the broker acks each publish once the queue has it on disk; success
            // is only ever reported after that ack.
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            channels.push(ch);
        }
        Ok(Live { conn, channels, next: AtomicUsize::new(0), broken, acked: AtomicBool::new(false) })
    }

    /// Publishes one message and waits for the broker's confirm (or the timeout).
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), PublishError> {
        let live = self.current().ok_or(PublishError::NotConnected)?;
        let ch = &live.channels[live.next.fetch_add(1, Ordering::Relaxed) % live.channels.len()];
        // Mandatory: a message no queue would take comes back instead of vanishing.
        let options = BasicPublishOptions { mandatory: true, immediate: false };
        let confirmed = async {
            let confirm = ch.basic_publish(exchange, routing_key, options, body, properties).await?;
            confirm.await
        };
        match tokio::time::timeout(self.confirm_timeout, confirmed).await {
            Err(_) => Err(PublishError::Timeout(self.confirm_timeout)),
            Ok(Err(e)) => {
                live.mark_broken();
                Err(PublishError::Broker(e))
            }
            Ok(Ok(Confirmation::Ack(None))) => {
                live.acked.store(true, Ordering::Relaxed);
                Ok(())
            }
            // lapin reports a returned (unroutable) message as an ack that carries it.
            Ok(Ok(Confirmation::Ack(Some(_)))) => Err(PublishError::Unroutable),
            Ok(Ok(Confirmation::Nack(_))) | Ok(Ok(Confirmation::NotRequested)) => {
                // A connection whose publishes were all refused may be bound to a queue leader
                // that is gone (see `broker::LEADER_ELECTION_WAIT`): replace it. (One that had
                // its publishes confirmed is kept: a full queue refuses through any connection.)
                if !live.acked.load(Ordering::Relaxed) {
                    live.mark_broken();
                }
                Err(PublishError::Nacked)
            }
        }
    }

    /// Messages ready in `queue` and its consumers, or `None` when not connected or it cannot be
    /// read.
    pub async fn queue_stats(&self, queue: &str) -> Option<QueueStats> {
        let live = self.current()?;
        let ch = live.conn.create_channel().await.ok()?;
        let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
        let stats = ch
            .queue_declare(queue, passive, Default::default())
            .await
            .ok()
            .map(|q| QueueStats { messages: f64::from(q.message_count()), consumers: f64::from(q.consumer_count()) });
        let _ = ch.close(200, "bye").await;
        stats
    }

    /// Waits until connected, up to `timeout`; true if ready.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if self.is_ready() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.is_ready()
    }
}
