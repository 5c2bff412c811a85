//! A consumer on a connection of its own, with manual acknowledgements and a prefetch: what each
//! worker lane and the download consumer open, and close when they stop or lose the broker
//! (what they held unacknowledged then goes back to the queue).

use std::time::Duration;

use lapin::{
    options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions},
    types::FieldTable,
    Channel, Connection, Consumer,
};
use tokio_util::sync::CancellationToken;

use super::{publisher::Publisher, topology::Topology, Dialer};

/// Why a consumer could not be opened, or was lost.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct ConsumeError {
    pub what: &'static str,
    #[source]
    pub source: lapin::Error,
}

/// An open consumer.
pub struct Consuming {
    conn: Connection,
    ch: Channel,
    tag: String,
    pub consumer: Consumer,
}

/// What to consume.
pub struct Spec<'a> {
    /// The owner's dialer: it moves on to the next broker node after losing one.
    pub dialer: &'a Dialer,
    /// The connection's name, as the broker's management shows it.
    pub name: &'a str,
    pub queue: &'a str,
    pub tag: String,
    /// Unacknowledged deliveries at most: bounds what the consumer holds, whatever the queue depth.
    pub prefetch: u16,
}

/// Waits until `publisher` is connected (a consumer must be able to move failed messages on
/// before it takes any, else the first failures would bounce back as redeliveries); false on
/// shutdown.
pub async fn wait_for(publisher: &Publisher, shutdown: &CancellationToken) -> bool {
    while !publisher.is_ready() {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = shutdown.cancelled() => return false,
        }
    }
    true
}

/// Connects, declares `topology`, sets the prefetch and starts consuming (manual acks).
pub async fn open(spec: Spec<'_>, topology: &Topology) -> Result<Consuming, ConsumeError> {
    let err = |what| move |source| ConsumeError { what, source };
    let conn = spec.dialer.connect(spec.name).await.map_err(err("connect"))?;
    let ch = conn.create_channel().await.map_err(err("open a channel"))?;
    topology.declare(&ch).await.map_err(err("declare the topology"))?;
    ch.basic_qos(spec.prefetch, BasicQosOptions::default()).await.map_err(err("set the prefetch"))?;
    // Manual acks (no_ack: false): a message is acknowledged only once it is settled.
    let options = BasicConsumeOptions { no_ack: false, ..Default::default() };
    let consumer =
        ch.basic_consume(spec.queue, &spec.tag, options, FieldTable::default()).await.map_err(err("consume"))?;
    Ok(Consuming { conn, ch, tag: spec.tag, consumer })
}

impl Consuming {
    /// Stops deliveries, then closes the connection (and with it the channel, in one exchange:
    /// closing the channel first leaves its close-ok racing the connection's close): what is still
    /// unacknowledged goes back to the queue.
    pub async fn close(self) {
        let _ = self.ch.basic_cancel(&self.tag, BasicCancelOptions::default()).await;
        let _ = self.conn.close(200, "bye").await;
    }
}
