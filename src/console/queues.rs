//! The broker as the console shows it: depth and consumers of each queue, read with passive
//! declares on one lazily (re)connected channel. Acting on messages (replay, purge, park) opens
//! a `dlq` session of its own instead.

use lapin::{options::QueueDeclareOptions, types::FieldTable, Channel, Connection};
use tokio::sync::Mutex;

use crate::{
    broker::{self, topology::Topology},
    config::BrokerUrls,
};

/// What a queue is for, as the overview groups them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Submissions,
    Retry,
    Downloads,
    DownloadRetry,
    Dead,
}

impl Role {
    pub fn label(self) -> &'static str {
        match self {
            Role::Submissions => "submissions",
            Role::Retry => "delay (submissions)",
            Role::Downloads => "downloads",
            Role::DownloadRetry => "delay (downloads)",
            Role::Dead => "dead letters",
        }
    }
}

/// One queue's counts.
#[derive(Debug, Clone)]
pub struct QueueCount {
    pub name: String,
    pub role: Role,
    /// The delay of a delay queue.
    pub delay: Option<std::time::Duration>,
    pub messages: u32,
    pub consumers: u32,
}

pub struct Queues {
    dialer: broker::Dialer,
    pub topology: Topology,
    conn: Mutex<Option<(Connection, Channel)>>,
}

impl Queues {
    pub fn new(urls: &BrokerUrls, topology: Topology) -> Queues {
        Queues { dialer: broker::Dialer::new(urls), topology, conn: Mutex::new(None) }
    }

    /// Every queue of the topology with its delay, in the overview's order.
    pub fn names(&self) -> Vec<(String, Role, Option<std::time::Duration>)> {
        let t = &self.topology;
        let mut out = vec![(t.queue.clone(), Role::Submissions, None)];
        out.extend((0..t.retry_delays.len()).filter_map(|n| t.retry_queue(n)).map(|(q, d)| (q, Role::Retry, Some(d))));
        out.push((t.downloads.clone(), Role::Downloads, None));
        out.extend(
            (0..t.download_delays.len())
                .filter_map(|n| t.download_retry_queue(n))
                .map(|(q, d)| (q, Role::DownloadRetry, Some(d))),
        );
        out.push((t.dead_queue.clone(), Role::Dead, None));
        out
    }

    /// The counts of every queue now. A broker error drops the channel; the next call reconnects.
    pub async fn counts(&self) -> Result<Vec<QueueCount>, lapin::Error> {
        let mut guard = self.conn.lock().await;
        if guard.as_ref().is_none_or(|(c, ch)| !c.status().connected() || !ch.status().connected()) {
            let conn = self.dialer.connect("moka-ingest console").await?;
            let ch = conn.create_channel().await?;
            // The same idempotent declaration as every role: counts never fail for a missing queue.
            self.topology.declare(&ch).await?;
            *guard = Some((conn, ch));
        }
        let (_, ch) = guard.as_ref().expect("connected above");
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        let mut out = Vec::new();
        for (name, role, delay) in self.names() {
            match ch.queue_declare(&name, passive, FieldTable::default()).await {
                Ok(q) => out.push(QueueCount {
                    name,
                    role,
                    delay,
                    messages: q.message_count(),
                    consumers: q.consumer_count(),
                }),
                Err(e) => {
                    *guard = None;
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    /// Closes the connection (at shutdown).
    pub async fn close(&self) {
        if let Some((conn, ch)) = self.conn.lock().await.take() {
            let _ = ch.close(200, "bye").await;
            let _ = conn.close(200, "bye").await;
        }
    }
}
