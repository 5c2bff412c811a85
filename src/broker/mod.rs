//! RabbitMQ: the topology ([`topology`]), the message format ([`envelope`]), and a supervised,
//! self-healing connection with confirm-mode publishing ([`publisher`]), a dead message's story
//! read off its headers ([`dead`]), and the [`Dialer`] that connects to one node of the broker's.

pub mod consumer;
pub mod dead;
pub mod download;
pub mod envelope;
pub mod headers;
pub mod publisher;
pub mod topology;

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use lapin::{Connection, ConnectionProperties};
use tracing::{info, warn};

use crate::config::BrokerUrls;

/// With several nodes, the longest wait for one to accept a connection before the next is tried
/// (a node that is down refuses at once; one that is cut off would otherwise hold the list up).
/// A connect given up this way may leave lapin's connecting thread to finish on its own.
pub const NODE_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// With several nodes, how long a connection that was lost waits before the next one is opened:
/// the time the cluster takes to elect new leaders for the quorum queues the lost node led.
/// RabbitMQ 3.10 binds a channel's publishes and consumers to the leader known when the channel
/// opens; opened during the election, they stay bound to the node that is gone (every publish
/// nacked, no delivery) until it returns. Measured here (scripts/chaos.sh broker): the election
/// took 0.2 s and a reconnect after 0.13 s was stuck for the 24 s the node was down.
pub const LEADER_ELECTION_WAIT: Duration = Duration::from_secs(2);

/// Opens the connections of one owner (a lane, a publisher, a consumer) to the broker nodes.
///
/// It connects to the first node that answers, in the process's order; the next connect (after
/// that connection was lost) starts with the node after it, so that an owner moves on instead of
/// waiting for its node to come back: the node it lost, or that failed, is tried last.
pub struct Dialer {
    urls: BrokerUrls,
    next: AtomicUsize,
}

impl Dialer {
    pub fn new(urls: &BrokerUrls) -> Dialer {
        Dialer { urls: urls.clone(), next: AtomicUsize::new(0) }
    }

    /// After a connection was lost, waits for the cluster to elect new queue leaders (see
    /// [`LEADER_ELECTION_WAIT`]; nothing with one node); false (at once) on `shutdown`.
    pub async fn wait_for_election(&self, shutdown: &tokio_util::sync::CancellationToken) -> bool {
        if self.urls.len() < 2 {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(LEADER_ELECTION_WAIT) => true,
            _ = shutdown.cancelled() => false,
        }
    }

    /// The longest one [`Dialer::connect`] may take when every node is tried.
    pub fn worst_case(&self) -> Duration {
        NODE_CONNECT_TIMEOUT * self.urls.len() as u32
    }

    /// Connects to the first node that answers, starting where the last connection left off;
    /// `name` is the connection's name in the broker's lists. The error is the last node's.
    pub async fn connect(&self, name: &str) -> Result<Connection, lapin::Error> {
        let n = self.urls.len();
        let start = self.next.load(Ordering::Relaxed) % n;
        let mut last = None;
        for k in 0..n {
            let i = (start + k) % n;
            let node = self.urls.label(i);
            // Moved on before trying: whatever happens to this node, the next connect starts
            // after it (a node that hangs is not tried first again and again).
            self.next.store(i + 1, Ordering::Relaxed);
            // One node: no limit of ours, as before clusters (the publisher bounds its connect).
            let attempt = connect(self.urls.url(i), name);
            let result = match n {
                1 => Ok(attempt.await),
                _ => tokio::time::timeout(NODE_CONNECT_TIMEOUT, attempt).await,
            };
            match result {
                Ok(Ok(conn)) => {
                    if n > 1 {
                        info!(connection = name, node, "connected to broker node");
                    }
                    return Ok(conn);
                }
                Ok(Err(e)) => {
                    if n > 1 {
                        warn!(connection = name, node, error = %e, "broker node did not answer; trying the next");
                    }
                    last = Some(e);
                }
                Err(_) => {
                    warn!(connection = name, node, "broker node did not answer in time; trying the next");
                    last = Some(lapin::Error::IOError(std::sync::Arc::new(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("connecting to {node} timed out"),
                    ))));
                }
            }
        }
        Err(last.expect("at least one node"))
    }
}

/// Opens a connection to one URL, driven by the tokio runtime.
pub async fn connect(url: &str, name: &str) -> Result<Connection, lapin::Error> {
    let props = ConnectionProperties::default()
        .with_connection_name(name.into())
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    Connection::connect(url, props).await
}
