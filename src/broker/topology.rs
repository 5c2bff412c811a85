//! Exchange and queue names (all derived from the prefix) and their idempotent declaration.
//!
//! ```text
//! <prefix>.submissions (direct exchange) --"submission"--> <prefix>.submissions (quorum queue)
//!        delivery limit exceeded / worker gives up --> <prefix>.dead (exchange) --> <prefix>.dead (quorum queue)
//! ```

use lapin::{
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions, ExchangeDeleteOptions},
    types::{AMQPValue, FieldTable},
    Channel, ExchangeKind,
};

/// Routing key of submissions on the submission exchange.
pub const SUBMISSION_KEY: &str = "submission";
/// Routing key of dead letters on the dead-letter exchange.
pub const DEAD_KEY: &str = "dead";

/// The names of everything this service declares.
#[derive(Debug, Clone)]
pub struct Topology {
    pub exchange: String,
    pub queue: String,
    pub dead_exchange: String,
    pub dead_queue: String,
    /// `x-delivery-limit` of the submission queue.
    pub delivery_limit: u32,
}

impl Topology {
    pub fn new(prefix: &str, delivery_limit: u32) -> Topology {
        Topology {
            exchange: format!("{prefix}.submissions"),
            queue: format!("{prefix}.submissions"),
            dead_exchange: format!("{prefix}.dead"),
            dead_queue: format!("{prefix}.dead"),
            delivery_limit,
        }
    }

    /// Declares exchanges, queues and bindings. Idempotent: re-declaring with the same arguments
    /// is a no-op, so every ingress and worker does it at start.
    pub async fn declare(&self, ch: &Channel) -> Result<(), lapin::Error> {
        // Durable: the topology must survive a broker restart, or publishes after it are unroutable.
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        ch.exchange_declare(&self.dead_exchange, ExchangeKind::Direct, durable, FieldTable::default())
            .await?;
        ch.queue_declare(&self.dead_queue, durable_queue(), quorum_args()).await?;
        ch.queue_bind(&self.dead_queue, &self.dead_exchange, DEAD_KEY, QueueBindOptions::default(), FieldTable::default())
            .await?;

        ch.exchange_declare(&self.exchange, ExchangeKind::Direct, durable, FieldTable::default())
            .await?;
        let mut args = quorum_args();
        // RabbitMQ 3.10 has no default delivery limit: without one a poison message loops forever.
        args.insert("x-delivery-limit".into(), AMQPValue::LongInt(self.delivery_limit as i32));
        args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(self.dead_exchange.clone().into()));
        args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(DEAD_KEY.into()));
        // At-least-once dead-lettering: the broker keeps a message until the DLQ confirmed it, so a
        // crash mid-move duplicates at worst. It requires overflow=reject-publish.
        args.insert("x-dead-letter-strategy".into(), AMQPValue::LongString("at-least-once".into()));
        args.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
        ch.queue_declare(&self.queue, durable_queue(), args).await?;
        ch.queue_bind(&self.queue, &self.exchange, SUBMISSION_KEY, QueueBindOptions::default(), FieldTable::default())
            .await?;
        Ok(())
    }

    /// Deletes everything `declare` made (tests and `dlq` tooling clean up with it).
    pub async fn delete(&self, ch: &Channel) -> Result<(), lapin::Error> {
        ch.queue_delete(&self.queue, QueueDeleteOptions::default()).await?;
        ch.queue_delete(&self.dead_queue, QueueDeleteOptions::default()).await?;
        ch.exchange_delete(&self.exchange, ExchangeDeleteOptions::default()).await?;
        ch.exchange_delete(&self.dead_exchange, ExchangeDeleteOptions::default()).await?;
        Ok(())
    }
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions { durable: true, ..Default::default() }
}

/// Quorum queues replicate and fsync every message before confirming it (and are faster than
/// classic queues for confirmed persistent publishes here, see the limits README).
fn quorum_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    args
}
