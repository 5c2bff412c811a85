//! What an operator does from the console: replay or purge dead letters, park a message that
//! waits in a delay queue, re-index the dead-letter queue. Each goes through the same `dlq` code
//! as the command line (the same snapshot semantics) and is recorded in `console_audit`, which
//! also carries a long run's progress.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use deadpool_postgres::{GenericClient, Pool};
use tracing::{info, warn};

use super::Console;
use crate::{
    dlq::{Action, Dlq, WalkLock},
    store::{
        dead_letters::{self, State},
        DbError,
    },
    telemetry,
};

/// How often a running action writes its progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// Opens an audit entry for `action` by `user` on `filter`, naming how many messages the
/// confirmation said it would touch; returns its id.
pub async fn audit_start(
    client: &impl GenericClient,
    user: &str,
    action: &str,
    filter: &serde_json::Value,
    requested: usize,
) -> Result<i64, DbError> {
    let requested = i32::try_from(requested).unwrap_or(i32::MAX);
    Ok(client
        .query_one(
            "INSERT INTO console_audit (username, action, filter, requested) VALUES ($1, $2, $3, $4) RETURNING id",
            &[&user, &action, filter, &requested],
        )
        .await?
        .get(0))
}

async fn audit_progress(pool: &Pool, id: i64, done: usize, failed: usize, finished: Option<&str>) {
    let result = async {
        let client = pool.get().await?;
        let (done, failed) = (i32::try_from(done).unwrap_or(i32::MAX), i32::try_from(failed).unwrap_or(i32::MAX));
        client
            .execute(
                "UPDATE console_audit SET done = $2, failed = $3,
                     finished_at = CASE WHEN $4::text IS NULL THEN NULL ELSE now() END, detail = COALESCE($4, detail)
                 WHERE id = $1",
                &[&id, &done, &failed, &finished],
            )
            .await?;
        Ok::<_, DbError>(())
    }
    .await;
    if let Err(e) = result {
        warn!(error = %telemetry::chain(&e), audit = id, "cannot record an action's progress");
    }
}

/// Aborts a task when dropped (the progress ticker ends with its action, even on a panic).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Writes `done`/`failed` to the audit entry `audit` every [`PROGRESS_EVERY`] until dropped.
fn ticker(pool: Pool, audit: i64, done: Arc<AtomicUsize>, failed: Arc<AtomicUsize>) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        loop {
            tokio::time::sleep(PROGRESS_EVERY).await;
            let (d, f) = (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
            audit_progress(&pool, audit, d, f, None).await;
        }
    }))
}

/// Replays or purges the messages `ids` in the background, writing progress to the audit entry
/// `audit`. Only ids are held (a "replay all" of many messages never holds the messages): the
/// dead-letter queue is walked once, each message acted on or put back as it comes. The walk
/// waits for any other walk of the queue (see [`WalkLock`]) to end first.
pub fn spawn_act(console: Arc<Console>, user: String, action: Action, ids: HashSet<String>, audit: i64) {
    tokio::spawn(async move {
        let done = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let _ticker = ticker(console.pool.clone(), audit, done.clone(), failed.clone());
        let result = async {
            let _walk = WalkLock::acquire(&console.database_url, &console.queue_prefix, true).await?;
            let dlq = Dlq::open(&console.amqp_url, console.queues.topology.clone()).await?;
            let summary = dlq
                .act(
                    action,
                    |m| ids.contains(&m.message_id),
                    Some(&console.pool),
                    &user,
                    |s| {
                        done.store(s.replayed + s.purged, Ordering::Relaxed);
                        failed.store(s.failed, Ordering::Relaxed);
                    },
                )
                .await;
            dlq.close().await;
            Ok::<_, ActionError>(summary?)
        }
        .await;
        let detail = match &result {
            Ok(s) => {
                let acted = s.replayed + s.purged;
                let missing = ids.len().saturating_sub(s.listed);
                info!(user = %user, action = action.verb(), acted, failed = s.failed, missing, "console action finished");
                metrics::counter!("moka_console_actions_total", "action" => action.verb()).increment(1);
                format!(
                    "{} {acted}, failed {}{}",
                    if action == Action::Replay { "replayed" } else { "purged" },
                    s.failed,
                    if missing > 0 { format!(", {missing} no longer in the dead-letter queue") } else { String::new() }
                )
            }
            Err(e) => format!("stopped: {}", telemetry::chain(e)),
        };
        let (d, f) = match &result {
            Ok(s) => (s.replayed + s.purged, s.failed),
            Err(_) => (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed)),
        };
        audit_progress(&console.pool, audit, d, f, Some(&detail)).await;
    });
}

/// Why a park or re-index did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error(transparent)]
    Dlq(#[from] crate::dlq::DlqError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("console database")]
    Pg(#[from] tokio_postgres::Error),
    #[error("message {0} is no longer in that delay queue (it went back to be retried)")]
    Gone(String),
    #[error("another action is walking the dead-letter queue; try again when it has ended (see Audit)")]
    Busy,
}

/// Moves `message_id` from the delay queue `queue` into the dead-letter queue, marked parked by
/// `user`, and indexes it.
pub async fn park(console: &Console, user: &str, queue: &str, message_id: &str) -> Result<(), ActionError> {
    let dlq = Dlq::open(&console.amqp_url, console.queues.topology.clone()).await?;
    let parked = dlq.park(queue, message_id, user).await;
    dlq.close().await;
    let parked = parked?.ok_or_else(|| ActionError::Gone(message_id.to_owned()))?;
    let client = console.pool.get().await.map_err(DbError::from)?;
    dead_letters::record(&client, &[parked], State::Parked, Some(user)).await?;
    let filter = serde_json::json!({ "queue": queue, "ids": [message_id] });
    let id = audit_start(&client, user, "park", &filter, 1).await?;
    drop(client);
    audit_progress(&console.pool, id, 1, 0, Some("parked")).await;
    metrics::counter!("moka_console_actions_total", "action" => "park").increment(1);
    Ok(())
}

/// Starts a re-index in the background; returns its audit entry. It walks the dead-letter queue
/// once and makes the index agree with it: every message in it is recorded (parked ones as
/// parked), and rows that say "in the queue" for messages that are gone (purged by hand on the
/// broker) are marked purged, but only when the walk saw the whole queue. Refused while another
/// walk runs: its messages would look gone.
pub async fn spawn_reindex(console: Arc<Console>, user: String) -> Result<i64, ActionError> {
    let walk =
        WalkLock::acquire(&console.database_url, &console.queue_prefix, false).await?.ok_or(ActionError::Busy)?;
    let client = console.pool.get().await.map_err(DbError::from)?;
    let audit = audit_start(&client, &user, "reindex", &serde_json::json!({}), 0).await?;
    drop(client);
    tokio::spawn(async move {
        let done = Arc::new(AtomicUsize::new(0));
        let _ticker = ticker(console.pool.clone(), audit, done.clone(), Arc::new(AtomicUsize::new(0)));
        let result = reindex(&console, &user, &done).await;
        drop(walk);
        let detail = match &result {
            Ok((n, gone)) => format!("indexed {n}, marked gone {gone}"),
            Err(e) => format!("stopped: {}", telemetry::chain(e)),
        };
        audit_progress(&console.pool, audit, done.load(Ordering::Relaxed), 0, Some(&detail)).await;
    });
    Ok(audit)
}

async fn reindex(console: &Console, user: &str, done: &AtomicUsize) -> Result<(usize, u64), ActionError> {
    let client = console.pool.get().await.map_err(DbError::from)?;
    let started: chrono::DateTime<chrono::Utc> = client.query_one("SELECT now()", &[]).await?.get(0);
    let dlq = Dlq::open(&console.amqp_url, console.queues.topology.clone()).await?;
    let depth = dlq.depth().await? as usize;
    let mut cursor = dlq.cursor(&dlq.topology().dead_queue, None).await?;
    let mut seen: Vec<String> = Vec::new();
    let mut chunk = Vec::new();
    let walked = async {
        while let Some(held) = cursor.next(&dlq).await? {
            seen.push(held.message.message_id.clone());
            chunk.push(held.message);
            if chunk.len() >= 200 {
                record_walked(&client, &mut chunk).await?;
                done.store(seen.len(), Ordering::Relaxed);
            }
        }
        record_walked(&client, &mut chunk).await
    }
    .await;
    dlq.close().await;
    walked?;
    done.store(seen.len(), Ordering::Relaxed);
    // Rows indexed during the walk (`indexed_at`) are new deaths, not gone ones.
    let gone = match seen.len() >= depth {
        true => {
            client
                .execute(
                    "UPDATE dead_letters SET state = 'purged', changed_at = now(), changed_by = $1
                     WHERE state IN ('dead', 'parked') AND indexed_at < $2 AND NOT (message_id = ANY($3))",
                    &[&format!("reindex:{user}"), &started, &seen],
                )
                .await?
        }
        false => 0,
    };
    Ok((seen.len(), gone))
}

/// Records walked messages: a message parked from the console says so in `x-failed-by`.
async fn record_walked(
    client: &impl GenericClient,
    chunk: &mut Vec<crate::dlq::DeadMessage>,
) -> Result<(), ActionError> {
    let parked_by = |m: &crate::dlq::DeadMessage| {
        m.failed_by.as_deref().and_then(|b| b.strip_prefix("console:")).map(str::to_owned)
    };
    let (parked, dead): (Vec<_>, Vec<_>) = chunk.drain(..).partition(|m| parked_by(m).is_some());
    dead_letters::record(client, &dead, State::Dead, None).await?;
    for m in parked {
        let by = parked_by(&m);
        dead_letters::record(client, &[m], State::Parked, by.as_deref()).await?;
    }
    Ok(())
}
