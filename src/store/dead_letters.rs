//! The `dead_letters` table: the index of the dead-letter queue that the console lists, filters
//! and searches, so that none of that reads the queue message by message. A row is written when
//! a message dies and moved on (`replayed`, `purged`, `parked`) by whoever acts on the queue.
//! The queue remains the truth for what can be replayed: a row whose message is gone is only
//! history, and a message whose row is missing (the database was away when it died) is found
//! again by a re-index.

use deadpool_postgres::GenericClient;

use super::{storable, DbError};
use crate::domain::dead_letter::DeadMessage;

/// What became of a dead message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// In the dead-letter queue.
    Dead,
    /// In the dead-letter queue, put there by an operator from a delay queue.
    Parked,
    /// Sent back to be processed again.
    Replayed,
    /// Removed for good.
    Purged,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Dead => "dead",
            State::Parked => "parked",
            State::Replayed => "replayed",
            State::Purged => "purged",
        }
    }
}

const RECORD_SQL: &str = "
INSERT INTO dead_letters AS d (message_id, source, moka_id, name, kind, message, fields, attempts,
    first_failed_at, died_at, failed_by, received_at, tonce, payload, state, changed_at, changed_by)
SELECT u.message_id, u.source, u.moka_id, u.name, u.kind, u.message, COALESCE(u.fields::jsonb, '[]'),
    u.attempts, u.first_failed_at::timestamptz, COALESCE(u.died_at::timestamptz, now()), u.failed_by,
    u.received_at::timestamptz, u.tonce, u.payload, $15, CASE WHEN $15 = 'dead' THEN NULL ELSE now() END, $16
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::int[],
    $9::text[], $10::text[], $11::text[], $12::text[], $13::bigint[], $14::text[])
    AS u(message_id, source, moka_id, name, kind, message, fields, attempts, first_failed_at, died_at,
         failed_by, received_at, tonce, payload)
ON CONFLICT (message_id) DO UPDATE SET
    kind = EXCLUDED.kind, message = EXCLUDED.message, fields = EXCLUDED.fields,
    attempts = EXCLUDED.attempts, died_at = EXCLUDED.died_at, failed_by = EXCLUDED.failed_by,
    first_failed_at = COALESCE(d.first_failed_at, EXCLUDED.first_failed_at),
    state = EXCLUDED.state, changed_at = EXCLUDED.changed_at,
    changed_by = EXCLUDED.changed_by, indexed_at = now()";

/// Records `messages` as being in the dead-letter queue (`state` dead or parked, `by` the
/// operator who parked them). A message that died before (replayed, then failed again) is
/// updated. Text is made storable first: a message may be dead because PostgreSQL refuses it.
pub async fn record(
    client: &impl GenericClient,
    messages: &[DeadMessage],
    state: State,
    by: Option<&str>,
) -> Result<u64, DbError> {
    // One row per id (the last copy wins): the queue may hold two copies of a message (the
    // broker's at-least-once dead-lettering), and one statement cannot upsert a key twice.
    let mut seen = std::collections::HashSet::new();
    let mut unique: Vec<&DeadMessage> = messages.iter().rev().filter(|m| seen.insert(m.message_id.as_str())).collect();
    unique.reverse();
    let messages = unique;
    if messages.is_empty() {
        return Ok(0);
    }
    let t = |s: &str, max| storable::text(s, max).into_owned();
    let ot = |s: &Option<String>, max| s.as_deref().map(|s| storable::text(s, max).into_owned());
    // Timestamps from headers are outside data: only well-formed ones reach the cast.
    let time = |s: &Option<String>| {
        s.as_deref().filter(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok()).map(str::to_owned)
    };
    // Parsed, made storable value by value (NUL escaped, long texts cut), written again: cutting
    // the JSON text itself could leave it invalid.
    let fields = |s: &Option<String>| {
        let value: serde_json::Value = serde_json::from_str(s.as_deref()?).ok()?;
        value.is_array().then(|| storable::json(&value, 512).to_string())
    };
    let ids: Vec<String> = messages.iter().map(|m| t(&m.message_id, storable::ID_MAX_BYTES)).collect();
    let sources: Vec<&str> = messages.iter().map(|m| m.source.as_str()).collect();
    let moka: Vec<String> = messages.iter().map(|m| t(&m.moka_id, storable::ID_MAX_BYTES)).collect();
    let names: Vec<Option<String>> = messages.iter().map(|m| ot(&m.name, storable::ID_MAX_BYTES)).collect();
    let kinds: Vec<String> = messages.iter().map(|m| t(&m.reason, storable::ID_MAX_BYTES)).collect();
    let texts: Vec<String> = messages.iter().map(|m| t(&m.error, storable::MESSAGE_MAX_BYTES)).collect();
    let field_lists: Vec<Option<String>> = messages.iter().map(|m| fields(&m.fields)).collect();
    let attempts: Vec<i32> = messages.iter().map(|m| i32::try_from(m.attempts).unwrap_or(i32::MAX)).collect();
    let first: Vec<Option<String>> = messages.iter().map(|m| time(&m.first_failed_at)).collect();
    let died: Vec<Option<String>> = messages.iter().map(|m| time(&m.failed_at)).collect();
    let by_worker: Vec<Option<String>> = messages.iter().map(|m| ot(&m.failed_by, storable::ID_MAX_BYTES)).collect();
    let received: Vec<Option<String>> = messages.iter().map(|m| time(&m.received_at)).collect();
    let tonces: Vec<Option<i64>> = messages.iter().map(|m| m.tonce).collect();
    let payloads: Vec<String> = messages.iter().map(|m| storable::text(&m.payload, usize::MAX).into_owned()).collect();
    let stmt = client.prepare_cached(RECORD_SQL).await?;
    Ok(client
        .execute(
            &stmt,
            &[
                &ids,
                &sources,
                &moka,
                &names,
                &kinds,
                &texts,
                &field_lists,
                &attempts,
                &first,
                &died,
                &by_worker,
                &received,
                &tonces,
                &payloads,
                &state.as_str(),
                &by,
            ],
        )
        .await?)
}

/// Marks the messages `ids` as `state` (replayed, purged), changed by `by`. Only rows still in
/// the queue (dead or parked) move: a replay that raced a new death does not hide it.
pub async fn set_state(client: &impl GenericClient, ids: &[String], state: State, by: &str) -> Result<u64, DbError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let stmt = client
        .prepare_cached(
            "UPDATE dead_letters SET state = $2, changed_at = now(), changed_by = $3
             WHERE message_id = ANY($1) AND state IN ('dead', 'parked')",
        )
        .await?;
    Ok(client.execute(&stmt, &[&ids, &state.as_str(), &by]).await?)
}

/// Puts rows back to `dead` after an action on their message failed (it is still in the queue).
pub async fn restore(client: &impl GenericClient, ids: &[String]) -> Result<u64, DbError> {
    let stmt = client
        .prepare_cached(
            "UPDATE dead_letters SET state = 'dead', changed_at = now() WHERE message_id = ANY($1)
             AND state IN ('replayed', 'purged')",
        )
        .await?;
    Ok(client.execute(&stmt, &[&ids]).await?)
}

/// Marks every row still in the queue as purged (`dlq purge --all`).
pub async fn purge_all(client: &impl GenericClient, by: &str) -> Result<u64, DbError> {
    Ok(client
        .execute(
            "UPDATE dead_letters SET state = 'purged', changed_at = now(), changed_by = $1
             WHERE state IN ('dead', 'parked')",
            &[&by],
        )
        .await?)
}

/// Forgets the row that the worker wrote before a message's last allowed delivery (reason
/// `delivery_limit`, see the worker's batch) once that delivery completed after all.
pub async fn forget_last_chance(client: &impl GenericClient, message_id: &str) -> Result<u64, DbError> {
    Ok(client
        .execute(
            "DELETE FROM dead_letters WHERE message_id = $1 AND kind = 'delivery_limit' AND state = 'dead'",
            &[&message_id],
        )
        .await?)
}
