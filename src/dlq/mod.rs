//! `moka-ingest dlq`: the operator's view of the dead-letter queue: list, show, replay, purge.
//!
//! Every command works on a snapshot: it takes the messages that are in the queue when it starts
//! (without acknowledging them), acts on the selected ones (a replay republishes, confirmed, and
//! only then removes), and closes its channel, which puts every message it did not remove back.
//! So listing loses nothing, and a replayed message that fails again at once lands behind the
//! snapshot and is not replayed twice in one run.

pub mod commands;

use std::io::{IsTerminal, Write};

use chrono::SecondsFormat;
use lapin::{
    message::BasicGetMessage,
    options::{BasicAckOptions, BasicGetOptions, ConfirmSelectOptions, QueueDeclareOptions},
    publisher_confirm::Confirmation,
    types::FieldTable,
    BasicProperties, Channel, Connection,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use crate::broker::{
    self,
    download::Job,
    envelope::Envelope,
    headers::{self, DeadHeaders},
    topology::{Topology, SUBMISSION_KEY},
};

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    /// The command line asks for something that cannot be done as asked.
    #[error("{0}")]
    Usage(&'static str),
}

/// One dead message, as an operator reads it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadMessage {
    pub message_id: String,
    pub moka_id: String,
    /// The candidate's name, if the payload has one.
    pub name: Option<String>,
    /// `validation`, `envelope`, `database`, `attachment`, `delivery_limit`, …
    pub reason: String,
    pub error: String,
    pub attempts: i64,
    pub failed_at: Option<String>,
    pub first_failed_at: Option<String>,
    pub failed_by: Option<String>,
    pub received_at: Option<String>,
    pub tonce: Option<i64>,
    pub payload: String,
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
    pub async fn open(amqp_url: &SecretString, topology: Topology) -> Result<Dlq, DlqError> {
        let conn = broker::connect(amqp_url.expose_secret(), "moka-ingest dlq").await?;
        let ch = conn.create_channel().await?;
        topology.declare(&ch).await?;
        // Replays are confirmed before the dead copy is removed.
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Dlq { conn, ch, topology })
    }

    /// Messages in the dead-letter queue now.
    pub async fn depth(&self) -> Result<u32, DlqError> {
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        Ok(self.ch.queue_declare(&self.topology.dead_queue, passive, FieldTable::default()).await?.message_count())
    }

    /// Takes (without acknowledging) the messages in the queue when called, up to `limit`.
    pub async fn snapshot(&self, limit: Option<usize>) -> Result<Vec<Held>, DlqError> {
        let total = self.depth().await? as usize;
        let want = limit.map_or(total, |l| l.min(total));
        let mut held = Vec::with_capacity(want);
        while held.len() < want {
            match self.ch.basic_get(&self.topology.dead_queue, BasicGetOptions { no_ack: false }).await? {
                Some(raw) => held.push(Held { message: describe(&raw.delivery.properties, &raw.delivery.data), raw }),
                None => break,
            }
        }
        Ok(held)
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
        let confirm = self
            .ch
            .basic_publish(
                exchange,
                key,
                lapin::options::BasicPublishOptions { mandatory: true, immediate: false },
                &held.raw.delivery.data,
                props,
            )
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        match confirm {
            Confirmation::Ack(None) => {}
            Confirmation::Ack(Some(_)) => return Err(format!("unroutable: no queue takes {exchange:?}/{key:?}")),
            _ => return Err("the broker refused the message".into()),
        }
        self.remove(held).await
    }

    /// Removes `held` from the dead-letter queue.
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

/// The original properties without the failure headers, marked with `x-replayed-at`.
fn replay_properties(original: &BasicProperties) -> BasicProperties {
    original.clone().with_headers(headers::replay_headers(original))
}

/// Reads a dead message's story from its headers: the worker's `x-error-*`, or the broker's
/// `x-death` when the broker dead-lettered it (delivery limit).
pub fn describe(props: &BasicProperties, body: &[u8]) -> DeadMessage {
    let story = DeadHeaders::read(props);
    // A message that is not a readable envelope is shown as it is; a download shows its link.
    let envelope = Envelope::from_delivery(props, body).ok();
    let meta = envelope.as_ref().map(|e| &e.meta);
    let payload = match &envelope {
        Some(e) => e.payload.clone(),
        None => String::from_utf8_lossy(body).into_owned(),
    };
    let job_candidate = || {
        Job::is_job(props)
            .then(|| Job::from_body(body).ok())
            .flatten()
            .and_then(|j| j.links.first().map(|l| l.moka_id.clone()))
    };
    let name =
        serde_json::from_str::<serde_json::Value>(&payload).ok().and_then(|v| v["name"].as_str().map(str::to_owned));
    let reason = story.kind.unwrap_or_else(|| "unknown".into());
    let error = story
        .message
        .or_else(|| story.last_error.map(|e| format!("{reason}; last error: {e}")))
        .unwrap_or_else(|| match reason.as_str() {
            "delivery_limit" => "delivered too many times without completing: it crashes or hangs the worker".into(),
            other => format!("dead-lettered by the broker ({other})"),
        });
    DeadMessage {
        message_id: props.message_id().as_ref().map(|m| m.to_string()).unwrap_or_default(),
        moka_id: meta.map(|m| m.moka_id.clone()).or_else(job_candidate).unwrap_or_default(),
        name,
        attempts: i64::from(story.attempts),
        failed_at: story.failed_at,
        first_failed_at: story.first_failed_at,
        failed_by: story.failed_by,
        received_at: meta.map(|m| m.received_at.to_rfc3339_opts(SecondsFormat::Micros, true)),
        tonce: meta.map(|m| m.tonce),
        reason,
        error,
        payload,
    }
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
