//! `moka-ingest dlq`: the operator's view of the dead-letter queue: list, show, replay, purge.
//!
//! Every command works on a snapshot: it takes the messages that are in the queue when it starts
//! (without acknowledging them), acts on the selected ones (a replay republishes, confirmed, and
//! only then removes), and closes its channel, which puts every message it did not remove back.
//! So listing loses nothing, and a replayed message that fails again at once lands behind the
//! snapshot and is not replayed twice in one run.

pub mod commands;

use std::io::{IsTerminal, Write};

use deadpool_postgres::Pool;
use lapin::{
    message::BasicGetMessage,
    options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions},
    publisher_confirm::Confirmation,
    types::FieldTable,
    BasicProperties, Channel, Connection,
};
use secrecy::{ExposeSecret, SecretString};
use tracing::warn;

pub use crate::broker::dead::describe;
use crate::broker::{
    self,
    download::Job,
    headers::{self, DeadLetter, History},
    topology::{Topology, DEAD_KEY, SUBMISSION_KEY},
};
use crate::config::BrokerUrls;
pub use crate::domain::dead_letter::DeadMessage;
use crate::store::{
    dead_letters::{self, State},
    DbError,
};

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    /// The command line asks for something that cannot be done as asked.
    #[error("{0}")]
    Usage(&'static str),
    /// The broker did not take a message moved on (unroutable, refused, connection lost).
    #[error("the broker did not take the message: {0}")]
    Refused(String),
}

/// Which messages a command acts on.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub all: bool,
    pub ids: Vec<String>,
    pub reason: Option<String>,
    pub candidate: Option<String>,
}

impl Selection {
    pub fn is_empty(&self) -> bool {
        !self.all && self.ids.is_empty() && self.reason.is_none() && self.candidate.is_none()
    }

    pub fn matches(&self, m: &DeadMessage) -> bool {
        (self.all || !self.ids.is_empty() || self.reason.is_some() || self.candidate.is_some())
            && (self.ids.is_empty() || self.ids.contains(&m.message_id))
            && self.reason.as_ref().is_none_or(|r| *r == m.reason)
            && self.candidate.as_ref().is_none_or(|c| *c == m.moka_id)
    }
}

/// A message taken from the dead-letter queue and not yet acknowledged.
pub struct Held {
    pub message: DeadMessage,
    raw: BasicGetMessage,
}

/// A session on the dead-letter queue.
pub struct Dlq {
    conn: Connection,
    ch: Channel,
    topology: Topology,
}

/// A message waiting in a delay queue, as the console's retrying page shows it.
#[derive(Debug, Clone)]
pub struct Waiting {
    pub message: DeadMessage,
    /// Retries through the delay queues so far.
    pub retries: u32,
    pub last_error_kind: Option<String>,
    pub last_error: Option<String>,
    /// When it goes back to be processed: its last failure plus its (jittered) expiration.
    pub next_retry_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// One walk of a deployment's dead-letter queue at a time (`dlq` commands, console actions):
/// a walk holds the messages it took unacknowledged, so a second walk at the same time would not
/// see them, and would report them gone. A PostgreSQL advisory lock (keyed by the queue prefix)
/// on a connection of its own serializes the walks; dropping the value closes the connection,
/// which releases the lock, also when the holder fails.
pub struct WalkLock {
    _client: tokio_postgres::Client,
}

/// The advisory lock's first key ("mokb"; migrations use "moka").
const WALK_LOCK_CLASS: i32 = 0x6d6f6b62;

impl WalkLock {
    /// Takes the lock of `prefix`'s dead-letter queue; waits for it when `wait`, else returns
    /// `None` at once if another walk holds it.
    pub async fn acquire(database_url: &SecretString, prefix: &str, wait: bool) -> Result<Option<WalkLock>, DbError> {
        let (client, connection) = tokio_postgres::connect(database_url.expose_secret(), tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        let sql = match wait {
            true => "SELECT pg_advisory_lock($1, hashtext($2)), true",
            false => "SELECT null::text, pg_try_advisory_lock($1, hashtext($2))",
        };
        let got: bool = client.query_one(sql, &[&WALK_LOCK_CLASS, &prefix]).await?.get(1);
        Ok(got.then_some(WalkLock { _client: client }))
    }
}

/// Counts for the closing summary line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub listed: usize,
    pub replayed: usize,
    pub failed: usize,
    pub purged: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "listed {}, replayed {}, failed to replay {}, purged {}",
            self.listed, self.replayed, self.failed, self.purged
        )
    }
}

impl Dlq {
    /// Connects to the broker at `amqp_url` and declares `topology` (so that an empty queue
    /// reads as empty, not as an error).
    pub async fn open(amqp_url: &BrokerUrls, topology: Topology) -> Result<Dlq, DlqError> {
        let conn = broker::Dialer::new(amqp_url).connect("moka-ingest dlq").await?;
        let ch = conn.create_channel().await?;
        topology.declare(&ch).await?;
        // Replays are confirmed before the dead copy is removed.
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Dlq { conn, ch, topology })
    }

    /// The names this session works on.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Messages in the dead-letter queue now.
    pub async fn depth(&self) -> Result<u32, DlqError> {
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        Ok(self.ch.queue_declare(&self.topology.dead_queue, passive, FieldTable::default()).await?.message_count())
    }

    /// Messages ready in `queue` now (a delay queue, the dead-letter queue).
    pub async fn depth_of(&self, queue: &str) -> Result<u32, DlqError> {
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        Ok(self.ch.queue_declare(queue, passive, FieldTable::default()).await?.message_count())
    }

    /// Takes (without acknowledging) the messages in the queue when called, up to `limit`.
    /// Holds them all: for listing. Acting on many goes through [`Dlq::act`], which does not.
    pub async fn snapshot(&self, limit: Option<usize>) -> Result<Vec<Held>, DlqError> {
        let mut cursor = self.cursor(&self.topology.dead_queue, limit).await?;
        let mut held = Vec::new();
        while let Some(h) = cursor.next(self).await? {
            held.push(h);
        }
        Ok(held)
    }

    /// A walk over the messages in `queue` when called (up to `limit`), one at a time: each is
    /// taken without acknowledging, so what the walk does not remove goes back when the session
    /// closes, and what fails again meanwhile lands behind the walk's end.
    pub async fn cursor(&self, queue: &str, limit: Option<usize>) -> Result<Cursor, DlqError> {
        let total = self.depth_of(queue).await? as usize;
        Ok(Cursor { queue: queue.to_owned(), left: limit.map_or(total, |l| l.min(total)) })
    }

    /// The first `limit` messages of the delay queue `queue`, looked at and put back (when the
    /// session closes) unchanged.
    pub async fn peek(&self, queue: &str, limit: usize) -> Result<Vec<Waiting>, DlqError> {
        let mut cursor = self.cursor(queue, Some(limit)).await?;
        let mut out = Vec::new();
        while let Some(held) = cursor.next(self).await? {
            let props = &held.raw.delivery.properties;
            let h = props.headers().clone().unwrap_or_default();
            let last_failed = headers::text(&h, headers::LAST_FAILED_AT)
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.with_timezone(&chrono::Utc));
            let expiration = props.expiration().as_ref().and_then(|e| e.as_str().parse::<i64>().ok());
            out.push(Waiting {
                retries: History::read(props).retries,
                last_error_kind: headers::text(&h, headers::LAST_ERROR_KIND),
                last_error: headers::text(&h, headers::LAST_ERROR),
                next_retry_at: last_failed
                    .zip(expiration)
                    .and_then(|(t, ms)| t.checked_add_signed(chrono::Duration::try_milliseconds(ms)?)),
                message: held.message,
            });
        }
        Ok(out)
    }

    /// Replays or purges every message of the snapshot that `select` picks, one at a time
    /// (memory does not grow with the queue), and moves their rows in the `dead_letters` index
    /// when `index` is given (`by`: who asked). `progress` sees the counts after each message.
    pub async fn act(
        &self,
        action: Action,
        select: impl Fn(&DeadMessage) -> bool,
        index: Option<&Pool>,
        by: &str,
        mut progress: impl FnMut(&Summary),
    ) -> Result<Summary, DlqError> {
        let mut cursor = self.cursor(&self.topology.dead_queue, None).await?;
        let mut summary = Summary::default();
        while let Some(held) = cursor.next(self).await? {
            if !select(&held.message) {
                continue;
            }
            summary.listed += 1;
            let id = std::slice::from_ref(&held.message.message_id);
            // The row moves first: a replayed message that dies again at once is indexed as dead
            // by the worker after this, not hidden by a late "replayed".
            mark(index, id, Some(action.state()), by).await;
            let done = match action {
                Action::Replay => self.replay(&held).await,
                Action::Purge => self.remove(&held).await,
            };
            match done {
                Ok(()) => match action {
                    Action::Replay => summary.replayed += 1,
                    Action::Purge => summary.purged += 1,
                },
                Err(e) => {
                    summary.failed += 1;
                    warn!(message_id = %held.message.message_id, error = %e, "cannot {} a dead letter", action.verb());
                    mark(index, id, None, by).await;
                }
            }
            progress(&summary);
        }
        Ok(summary)
    }

    /// Moves the message `message_id` from the delay queue `queue` into the dead-letter queue now,
    /// keeping its reason and saying who parked it (`x-failed-by: console:<by>`); returns it as
    /// dead-lettered, or `None` when it is no longer in that queue (it went back to be retried).
    pub async fn park(&self, queue: &str, message_id: &str, by: &str) -> Result<Option<DeadMessage>, DlqError> {
        let mut cursor = self.cursor(queue, None).await?;
        while let Some(held) = cursor.next(self).await? {
            if held.message.message_id != message_id {
                continue;
            }
            let original = &held.raw.delivery.properties;
            let history = History::read(original);
            let h = original.headers().clone().unwrap_or_default();
            let kind = headers::text(&h, headers::LAST_ERROR_KIND).unwrap_or_else(|| "parked".into());
            let last = headers::text(&h, headers::LAST_ERROR).unwrap_or_else(|| "no error recorded".into());
            let message = format!("parked by {by} while waiting to be retried; last error: {last}");
            let failed_by = format!("console:{by}");
            let letter = DeadLetter {
                kind: &kind,
                message: &message,
                fields: None,
                attempts: history.attempts(),
                failed_by: &failed_by,
            };
            // Without the delay queue's expiration: a parked message waits for an operator.
            let props =
                without_expiration(original).with_headers(headers::dead_letter_headers(original, &history, &letter));
            self.publish_confirmed(&self.topology.dead_exchange, DEAD_KEY, &held.raw.delivery.data, props.clone())
                .await
                .map_err(DlqError::Refused)?;
            self.remove(&held).await.map_err(DlqError::Refused)?;
            return Ok(Some(describe(&props, &held.raw.delivery.data)));
        }
        Ok(None)
    }

    /// Republishes `held` where it came from (a submission to the submission exchange, a
    /// download to the downloads queue) with a fresh attempt count, and removes the dead copy
    /// once the broker confirmed the new one.
    pub async fn replay(&self, held: &Held) -> Result<(), String> {
        let props = replay_properties(&held.raw.delivery.properties);
        let (exchange, key) = match Job::is_job(&held.raw.delivery.properties) {
            true => ("", self.topology.downloads.as_str()),
            false => (self.topology.exchange.as_str(), SUBMISSION_KEY),
        };
        self.publish_confirmed(exchange, key, &held.raw.delivery.data, props).await?;
        self.remove(held).await
    }

    /// Publishes mandatory and waits for the broker's confirm.
    async fn publish_confirmed(
        &self,
        exchange: &str,
        key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), String> {
        let options = BasicPublishOptions { mandatory: true, immediate: false };
        let confirm = self
            .ch
            .basic_publish(exchange, key, options, body, props)
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        match confirm {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => Err(format!("unroutable: no queue takes {exchange:?}/{key:?}")),
            _ => Err("the broker refused the message".into()),
        }
    }

    /// Removes `held` from the queue it was taken from.
    pub async fn remove(&self, held: &Held) -> Result<(), String> {
        held.raw.delivery.acker.ack(BasicAckOptions::default()).await.map_err(|e| e.to_string())
    }

    /// Empties the dead-letter queue; returns how many were removed.
    pub async fn purge_all(&self) -> Result<u32, DlqError> {
        Ok(self.ch.queue_purge(&self.topology.dead_queue, Default::default()).await?)
    }

    /// Puts back everything taken and not removed.
    pub async fn close(self) {
        let _ = self.ch.close(200, "bye").await;
        let _ = self.conn.close(200, "bye").await;
    }
}

/// What [`Dlq::act`] does with each selected message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Replay,
    Purge,
}

impl Action {
    pub fn verb(self) -> &'static str {
        match self {
            Action::Replay => "replay",
            Action::Purge => "purge",
        }
    }

    fn state(self) -> State {
        match self {
            Action::Replay => State::Replayed,
            Action::Purge => State::Purged,
        }
    }
}

/// A walk over a queue's messages, from [`Dlq::cursor`].
pub struct Cursor {
    queue: String,
    left: usize,
}

impl Cursor {
    /// The next message of the walk, taken without acknowledging it; `None` at the walk's end.
    pub async fn next(&mut self, dlq: &Dlq) -> Result<Option<Held>, DlqError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        Ok(dlq
            .ch
            .basic_get(&self.queue, BasicGetOptions { no_ack: false })
            .await?
            .map(|raw| Held { message: describe(&raw.delivery.properties, &raw.delivery.data), raw }))
    }
}

/// Moves the rows of `ids` to `state` in the index, or back to dead (`None`) after their action
/// failed (the message is still there). Best effort: the queue is the truth, and a re-index from
/// the console repairs a row that could not be moved.
async fn mark(index: Option<&Pool>, ids: &[String], state: Option<State>, by: &str) {
    let Some(pool) = index else { return };
    let result = match pool.get().await {
        Ok(client) => match state {
            Some(state) => dead_letters::set_state(&client, ids, state, by).await,
            None => dead_letters::restore(&client, ids).await,
        },
        Err(e) => Err(DbError::from(e)),
    };
    if let Err(e) = result {
        warn!(error = %e, "the dead-letter index was not updated; re-index it from the console");
    }
}

/// `props` without `expiration` (lapin's builder can set a property, not remove one).
fn without_expiration(p: &BasicProperties) -> BasicProperties {
    let mut out = BasicProperties::default();
    if let Some(v) = p.content_type() {
        out = out.with_content_type(v.clone());
    }
    if let Some(v) = p.content_encoding() {
        out = out.with_content_encoding(v.clone());
    }
    if let Some(v) = p.headers() {
        out = out.with_headers(v.clone());
    }
    if let Some(v) = p.delivery_mode() {
        out = out.with_delivery_mode(*v);
    }
    if let Some(v) = p.priority() {
        out = out.with_priority(*v);
    }
    if let Some(v) = p.correlation_id() {
        out = out.with_correlation_id(v.clone());
    }
    if let Some(v) = p.reply_to() {
        out = out.with_reply_to(v.clone());
    }
    if let Some(v) = p.message_id() {
        out = out.with_message_id(v.clone());
    }
    if let Some(v) = p.timestamp() {
        out = out.with_timestamp(*v);
    }
    if let Some(v) = p.kind() {
        out = out.with_type(v.clone());
    }
    if let Some(v) = p.user_id() {
        out = out.with_user_id(v.clone());
    }
    if let Some(v) = p.app_id() {
        out = out.with_app_id(v.clone());
    }
    if let Some(v) = p.cluster_id() {
        out = out.with_cluster_id(v.clone());
    }
    out
}

/// The original properties without the failure headers, marked with `x-replayed-at`.
fn replay_properties(original: &BasicProperties) -> BasicProperties {
    original.clone().with_headers(headers::replay_headers(original))
}

/// Writes `done/total` over itself on a terminal (stderr), for long runs.
pub struct Progress {
    total: usize,
    on_terminal: bool,
}

impl Progress {
    pub fn new(total: usize) -> Progress {
        Progress { total, on_terminal: std::io::stderr().is_terminal() }
    }

    pub fn tick(&self, done: usize, verb: &str) {
        if self.on_terminal && (done.is_multiple_of(50) || done == self.total) {
            let mut err = std::io::stderr();
            let _ = write!(err, "\r{verb} {done}/{}", self.total);
            if done == self.total {
                let _ = writeln!(err);
            }
        }
    }
}
