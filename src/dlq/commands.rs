//! The operator's commands (`moka-ingest dlq …`): what they check, print and how they end. Each
//! ends with a one-line summary on stderr and returns whether everything asked for succeeded.

use deadpool_postgres::Pool;
use tracing::warn;

use super::{Action, DeadMessage, Dlq, DlqError, Progress, Selection, Summary, WalkLock};
use crate::{broker::topology::Topology, config::Settings, store};

/// `dlq list`: one line per dead message (or a JSON array); removes nothing.
pub async fn list(
    settings: &Settings,
    limit: Option<usize>,
    reason: Option<String>,
    json: bool,
) -> Result<bool, DlqError> {
    let (dlq, _walk) = open(settings).await?;
    let held = dlq.snapshot(limit).await?;
    let shown: Vec<&DeadMessage> =
        held.iter().map(|h| &h.message).filter(|m| reason.as_ref().is_none_or(|r| *r == m.reason)).collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&shown).expect("serializes"));
    } else {
        println!(
            "{:<36}  {:<24}  {:<12}  {:<14}  {:>8}  FAILED AT",
            "MESSAGE ID", "MOKA ID", "NAME", "REASON", "ATTEMPTS"
        );
        for m in &shown {
            println!(
                "{:<36}  {:<24}  {:<12}  {:<14}  {:>8}  {}",
                m.message_id,
                m.moka_id,
                m.name.as_deref().unwrap_or("-"),
                m.reason,
                m.attempts,
                m.failed_at.as_deref().unwrap_or("-")
            );
        }
    }
    dlq.close().await;
    eprintln!("{}", Summary { listed: shown.len(), ..Default::default() });
    Ok(true)
}

/// `dlq show ID`: the whole message: envelope, payload and error.
pub async fn show(settings: &Settings, id: &str) -> Result<bool, DlqError> {
    let (dlq, _walk) = open(settings).await?;
    let held = dlq.snapshot(None).await?;
    let found = held.iter().find(|h| h.message.message_id == id).map(|h| h.message.clone());
    dlq.close().await;
    match found {
        Some(m) => {
            println!("{}", serde_json::to_string_pretty(&m).expect("serializes"));
            eprintln!("{}", Summary { listed: 1, ..Default::default() });
            Ok(true)
        }
        None => {
            eprintln!("no dead message with id {id}; {}", Summary::default());
            Ok(false)
        }
    }
}

/// `dlq replay`: republishes the selected messages (or, with `dry_run`, says which it would).
pub async fn replay(settings: &Settings, selection: &Selection, dry_run: bool) -> Result<bool, DlqError> {
    if selection.is_empty() {
        return Err(DlqError::Usage("say what to replay: --all, --id ID…, --reason KIND or --candidate MOKA_ID"));
    }
    let (dlq, _walk) = open(settings).await?;
    if dry_run {
        let mut cursor = dlq.cursor(&dlq.topology.dead_queue, None).await?;
        let mut summary = Summary::default();
        while let Some(h) = cursor.next(&dlq).await? {
            if selection.matches(&h.message) {
                summary.listed += 1;
                println!("would replay {} ({}, {})", h.message.message_id, h.message.moka_id, h.message.reason);
            }
        }
        dlq.close().await;
        eprintln!("dry run: {summary}");
        return Ok(true);
    }
    let index = index(settings);
    let progress = Progress::new(dlq.depth().await? as usize);
    let summary = dlq
        .act(
            Action::Replay,
            |m| selection.matches(m),
            index.as_ref(),
            &operator(),
            |s| progress.tick(s.replayed + s.failed, "replayed"),
        )
        .await?;
    dlq.close().await;
    eprintln!("{summary}");
    Ok(summary.failed == 0)
}

/// `dlq purge`: removes the selected messages for good.
pub async fn purge(settings: &Settings, ids: &[String], all: bool, yes: bool) -> Result<bool, DlqError> {
    if !yes {
        return Err(DlqError::Usage("purging cannot be undone; add --yes"));
    }
    let (dlq, _walk) = open(settings).await?;
    let index = index(settings);
    let by = operator();
    let mut ok = true;
    let summary = if all {
        let purged = dlq.purge_all().await? as usize;
        if let Some(pool) = &index {
            let moved = match pool.get().await {
                Ok(client) => store::dead_letters::purge_all(&client, &by).await.map(|_| ()),
                Err(e) => Err(e.into()),
            };
            if let Err(e) = moved {
                warn!(error = %e, "the dead-letter index was not updated; re-index it from the console");
            }
        }
        Summary { purged, ..Default::default() }
    } else {
        let selection = Selection { ids: ids.to_vec(), ..Default::default() };
        let summary = dlq.act(Action::Purge, |m| selection.matches(m), index.as_ref(), &by, |_| {}).await?;
        if summary.failed > 0 {
            ok = false;
        }
        if summary.purged < ids.len() {
            ok = false;
            eprintln!("{} of the given ids were not in the dead-letter queue", ids.len() - summary.purged);
        }
        summary
    };
    dlq.close().await;
    eprintln!("{summary}");
    Ok(ok)
}

/// The console's index of dead letters, moved along with the queue. The pool connects lazily:
/// a database that is away costs a warning, not the command.
fn index(settings: &Settings) -> Option<Pool> {
    match store::pool(&settings.database_url, 2) {
        Ok(pool) => Some(pool),
        Err(e) => {
            warn!(error = %e, "the dead-letter index will not be updated");
            None
        }
    }
}

/// Who runs the command, as the index records it.
fn operator() -> String {
    format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()))
}

/// The dead-letter queue of the configured broker and prefix, with the walk lock (see
/// [`WalkLock`]) when the database answers: a command waits for a console action (or another
/// command) on the same queue to finish. Without the database it goes on without the lock.
async fn open(settings: &Settings) -> Result<(Dlq, Option<WalkLock>), DlqError> {
    let lock = WalkLock::acquire(&settings.database_url, &settings.queue_prefix, false).await;
    let lock = match lock {
        Ok(Some(lock)) => Some(lock),
        Ok(None) => {
            eprintln!("waiting for another walk of the dead-letter queue (a console action or a dlq command) to end");
            WalkLock::acquire(&settings.database_url, &settings.queue_prefix, true).await.ok().flatten()
        }
        Err(e) => {
            warn!(error = %e, "no database: walking the dead-letter queue without its lock");
            None
        }
    };
    let topology = Topology::from_settings(&settings.queue_prefix, &settings.broker, &settings.retry);
    Ok((Dlq::open(&settings.amqp_url, topology).await?, lock))
}
