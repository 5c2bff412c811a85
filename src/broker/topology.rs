//! Exchange and queue names (all derived from the prefix) and their idempotent declaration.
//!
//! ```text
//! <prefix>.submissions (direct exchange) --"submission"--> <prefix>.submissions (quorum queue)
//!   transient failure: worker --> <prefix>.retry.<delay> (quorum queue, TTL) --expired--> <prefix>.submissions
//!   delivery limit exceeded / worker gives up --> <prefix>.dead (exchange) --> <prefix>.dead (quorum queue)
//! ```
//!
//! Every queue the broker itself moves messages out of (the submission queue, by delivery limit;
//! the retry queues, by TTL) is a quorum queue with at-least-once dead-lettering, so a broker crash
//! in the middle of a move duplicates at worst.

use std::time::Duration;

use lapin::{
    options::{
        ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable},
    Channel, ExchangeKind,
};

use crate::config::{BrokerSettings, RetrySettings};

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
    /// The retry schedule; one delay queue per step.
    pub retry_delays: Vec<Duration>,
    /// Download jobs (published to the default exchange, by queue name).
    pub downloads: String,
    /// The download retry schedule; one delay queue per step, expiring back into `downloads`.
    pub download_delays: Vec<Duration>,
}

impl Topology {
    pub fn new(
        prefix: &str,
        delivery_limit: u32,
        retry_delays: Vec<Duration>,
        download_delays: Vec<Duration>,
    ) -> Topology {
        Topology {
            exchange: format!("{prefix}.submissions"),
            queue: format!("{prefix}.submissions"),
            dead_exchange: format!("{prefix}.dead"),
            dead_queue: format!("{prefix}.dead"),
            delivery_limit,
            retry_delays,
            downloads: format!("{prefix}.downloads"),
            download_delays,
        }
    }

    /// The names under `queue_prefix`, the delivery limit of `broker.*` and the delay queues of
    /// `retry.schedule` and `retry.download_schedule`.
    pub fn from_settings(prefix: &str, broker: &BrokerSettings, retry: &RetrySettings) -> Topology {
        Topology::new(prefix, broker.delivery_limit, retry.schedule.clone(), retry.download_schedule.clone())
    }

    /// The delay queue of download retry number `n` (0-based) and its delay, or `None` when the
    /// schedule is used up.
    pub fn download_retry_queue(&self, n: usize) -> Option<(String, Duration)> {
        let delay = *self.download_delays.get(n)?;
        Some((self.download_retry_queue_name(delay), delay))
    }

    fn download_retry_queue_name(&self, delay: Duration) -> String {
        format!("{}.retry.{}ms", self.downloads, delay.as_millis())
    }

    /// The longest a message may wait in the delay queue of `delay` (its cap).
    pub fn delay_cap(delay: Duration) -> Duration {
        Self::retry_ttl(delay)
    }

    /// The delay queue of retry number `n` (0-based), or `None` when the schedule is used up.
    pub fn retry_queue(&self, n: usize) -> Option<(String, Duration)> {
        let delay = *self.retry_delays.get(n)?;
        Some((self.retry_queue_name(delay), delay))
    }

    fn retry_queue_name(&self, delay: Duration) -> String {
        format!("{}.retry.{}ms", self.queue.trim_end_matches(".submissions"), delay.as_millis())
    }

    /// Longest a message may wait in a delay queue: its delay plus the largest jitter.
    fn retry_ttl(delay: Duration) -> Duration {
        delay.mul_f64(1.25)
    }

    /// Declares exchanges, queues and bindings. Idempotent: re-declaring with the same arguments
    /// is a no-op, so every ingress and worker does it at start.
    pub async fn declare(&self, ch: &Channel) -> Result<(), lapin::Error> {
        // Durable: the topology must survive a broker restart, or publishes after it are unroutable.
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        ch.exchange_declare(&self.dead_exchange, ExchangeKind::Direct, durable, FieldTable::default()).await?;
        ch.queue_declare(&self.dead_queue, durable_queue(), quorum_args()).await?;
        ch.queue_bind(
            &self.dead_queue,
            &self.dead_exchange,
            DEAD_KEY,
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;

        ch.exchange_declare(&self.exchange, ExchangeKind::Direct, durable, FieldTable::default()).await?;
        // Submissions and downloads: a message that keeps crashing or hanging the worker is
        // dead-lettered by the broker after the delivery limit (RabbitMQ 3.10 has no default one:
        // without it a poison message loops forever).
        for queue in [&self.queue, &self.downloads] {
            let mut args = dead_lettering_to(&self.dead_exchange, DEAD_KEY);
            args.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongInt(i32::try_from(self.delivery_limit).unwrap_or(i32::MAX)),
            );
            ch.queue_declare(queue, durable_queue(), args).await?;
        }
        ch.queue_bind(&self.queue, &self.exchange, SUBMISSION_KEY, QueueBindOptions::default(), FieldTable::default())
            .await?;

        // Delay queues: expired messages go back where they came from (that is the retry):
        // submissions to their exchange, downloads to their queue through the default exchange.
        let submission_retries =
            self.retry_delays.iter().map(|d| (self.retry_queue_name(*d), *d, &*self.exchange, SUBMISSION_KEY));
        let download_retries =
            self.download_delays.iter().map(|d| (self.download_retry_queue_name(*d), *d, "", &*self.downloads));
        for (name, delay, exchange, key) in submission_retries.chain(download_retries) {
            let mut args = dead_lettering_to(exchange, key);
            // Messages carry their own jittered expiration; this caps it.
            args.insert(
                "x-message-ttl".into(),
                AMQPValue::LongLongInt(i64::try_from(Self::retry_ttl(delay).as_millis()).unwrap_or(i64::MAX)),
            );
            ch.queue_declare(&name, durable_queue(), args).await?;
        }
        Ok(())
    }

    /// Deletes everything `declare` made (tests and `dlq` tooling clean up with it).
    pub async fn delete(&self, ch: &Channel) -> Result<(), lapin::Error> {
        ch.queue_delete(&self.queue, QueueDeleteOptions::default()).await?;
        ch.queue_delete(&self.dead_queue, QueueDeleteOptions::default()).await?;
        for delay in &self.retry_delays {
            ch.queue_delete(&self.retry_queue_name(*delay), QueueDeleteOptions::default()).await?;
        }
        ch.queue_delete(&self.downloads, QueueDeleteOptions::default()).await?;
        for delay in &self.download_delays {
            ch.queue_delete(&self.download_retry_queue_name(*delay), QueueDeleteOptions::default()).await?;
        }
        ch.exchange_delete(&self.exchange, ExchangeDeleteOptions::default()).await?;
        ch.exchange_delete(&self.dead_exchange, ExchangeDeleteOptions::default()).await?;
        Ok(())
    }
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions { durable: true, ..Default::default() }
}

/// Quorum-queue arguments that dead-letter to `exchange` with `key`, at least once: the broker
/// keeps a message until the target confirmed it, so a crash mid-move duplicates at worst (this
/// requires overflow = reject-publish).
fn dead_lettering_to(exchange: &str, key: &str) -> FieldTable {
    let mut args = quorum_args();
    args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(exchange.into()));
    args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(key.into()));
    args.insert("x-dead-letter-strategy".into(), AMQPValue::LongString("at-least-once".into()));
    args.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
    args
}

/// Quorum queues replicate and fsync every message before confirming it (and are faster than
/// classic queues for confirmed persistent publishes here, see the limits README).
fn quorum_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    args
}
