//! The operator's commands (`moka-ingest dlq …`): what they check, print and how they end. Each
//! ends with a one-line summary on stderr and returns whether everything asked for succeeded.

use super::{DeadMessage, Dlq, DlqError, Progress, Selection, Summary};
use crate::{broker::topology::Topology, config::Settings};

/// `dlq list`: one line per dead message (or a JSON array); removes nothing.
pub async fn list(
    settings: &Settings,
    limit: Option<usize>,
    reason: Option<String>,
    json: bool,
) -> Result<bool, DlqError> {
    let dlq = open(settings).await?;
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
    let dlq = open(settings).await?;
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
    let dlq = open(settings).await?;
    let held = dlq.snapshot(None).await?;
    let chosen: Vec<_> = held.iter().filter(|h| selection.matches(&h.message)).collect();
    let progress = Progress::new(chosen.len());
    let mut summary = Summary { listed: chosen.len(), ..Default::default() };
    for (i, h) in chosen.iter().enumerate() {
        if dry_run {
            println!("would replay {} ({}, {})", h.message.message_id, h.message.moka_id, h.message.reason);
            continue;
        }
        match dlq.replay(h).await {
            Ok(()) => summary.replayed += 1,
            Err(e) => {
                summary.failed += 1;
                eprintln!("cannot replay {}: {e}", h.message.message_id);
            }
        }
        progress.tick(i + 1, "replayed");
    }
    dlq.close().await;
    eprintln!("{}{summary}", if dry_run { "dry run: " } else { "" });
    Ok(summary.failed == 0)
}

/// `dlq purge`: removes the selected messages for good.
pub async fn purge(settings: &Settings, ids: &[String], all: bool, yes: bool) -> Result<bool, DlqError> {
    if !yes {
        return Err(DlqError::Usage("purging cannot be undone; add --yes"));
    }
    let dlq = open(settings).await?;
    let mut summary = Summary::default();
    let mut ok = true;
    if all {
        summary.purged = dlq.purge_all().await? as usize;
    } else {
        let held = dlq.snapshot(None).await?;
        let selection = Selection { ids: ids.to_vec(), ..Default::default() };
        for h in held.iter().filter(|h| selection.matches(&h.message)) {
            match dlq.remove(h).await {
                Ok(()) => summary.purged += 1,
                Err(e) => {
                    ok = false;
                    eprintln!("cannot purge {}: {e}", h.message.message_id);
                }
            }
        }
        if summary.purged < ids.len() {
            ok = false;
            eprintln!("{} of the given ids were not in the dead-letter queue", ids.len() - summary.purged);
        }
    }
    dlq.close().await;
    eprintln!("{summary}");
    Ok(ok)
}

/// The dead-letter queue of the configured broker and prefix.
async fn open(settings: &Settings) -> Result<Dlq, DlqError> {
    let topology = Topology::from_settings(&settings.queue_prefix, &settings.broker, &settings.retry);
    Dlq::open(&settings.amqp_url, topology).await
}
