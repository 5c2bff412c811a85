//! The rows of `candidate_attachments`, one per candidate, kind and URL, and their life:
//!
//! - `pending`: the candidate's current submission links this file, and its download is queued.
//!   Written with the candidate, in its transaction ([`record_pending`]).
//! - `stored`: downloaded and in blob storage (hash, type, name, key).
//! - `failed`: the link is dead (404, over the cap, blocked address, …) or its downloads gave up;
//!   `error` says why. A newer submission that still links it asks for it again.
//!
//! A newer submission that no longer links a file deletes its `pending` row, so a download still
//! in flight for it finds no row to settle and nothing is resurrected; `stored` and `failed`
//! rows of earlier submissions stay, as before. A stored file is never downgraded.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Transaction};

use super::{storable, DbError};
pub use crate::domain::attachments::{Kind, Link};

/// A finished download: the row it settles.
#[derive(Debug, Clone)]
pub struct Record {
    pub link: Link,
    pub stored: bool,
    pub sha256: Option<String>,
    pub size_bytes: Option<i64>,
    pub content_type: Option<String>,
    pub file_name: Option<String>,
    pub storage_key: Option<String>,
    pub error: Option<String>,
    pub fetched_at: DateTime<Utc>,
}

impl Record {
    /// A download that failed for good, saying why.
    pub fn failed(link: Link, error: String) -> Record {
        Record {
            link,
            stored: false,
            sha256: None,
            size_bytes: None,
            content_type: None,
            file_name: None,
            storage_key: None,
            error: Some(error),
            fetched_at: Utc::now(),
        }
    }
}

const DROP_PENDING_SQL: &str = "
DELETE FROM candidate_attachments a
WHERE a.moka_id = ANY($1) AND a.status = 'pending'
  AND NOT EXISTS (SELECT 1 FROM UNNEST($2::text[], $3::text[], $4::text[]) AS l(moka_id, kind, url)
                  WHERE l.moka_id = a.moka_id AND l.kind = a.kind AND l.url = a.url)";

const ADD_PENDING_SQL: &str = "
INSERT INTO candidate_attachments (moka_id, kind, url, status, requested_at)
SELECT u.moka_id, u.kind, u.url, 'pending', now() FROM UNNEST($1::text[], $2::text[], $3::text[]) AS u(moka_id, kind, url)
ON CONFLICT (moka_id, kind, url) DO UPDATE SET status = 'pending', error = NULL, requested_at = now()
-- A stored file is not fetched again; a pending one is already on its way; a failed one is asked for again.
WHERE candidate_attachments.status = 'failed'";

const PENDING_SQL: &str =
    "SELECT moka_id, kind, url FROM candidate_attachments WHERE moka_id = ANY($1) AND status = 'pending' ORDER BY 1, 2, 3";

const SETTLE_SQL: &str = "
UPDATE candidate_attachments a SET
    status = u.status, sha256 = u.sha256, size_bytes = u.size_bytes, content_type = u.content_type,
    file_name = u.file_name, storage_key = u.storage_key, error = u.error, fetched_at = u.fetched_at
FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[], $7::text[], $8::text[],
            $9::text[], $10::text[], $11::timestamptz[])
    AS u(moka_id, kind, url, status, sha256, size_bytes, content_type, file_name, storage_key, error, fetched_at)
WHERE a.moka_id = u.moka_id AND a.kind = u.kind AND a.url = u.url
  -- Only a row still waiting is settled (a dropped link has no row any more); a failed one may
  -- still be stored (a replayed download); a stored one is never downgraded.
  AND (a.status = 'pending' OR (a.status = 'failed' AND u.status = 'stored'))";

const STATUS_SQL: &str = "
SELECT u.i, a.status FROM UNNEST($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS u(moka_id, kind, url, i)
JOIN candidate_attachments a ON a.moka_id = u.moka_id AND a.kind = u.kind AND a.url = u.url";

/// A row's key, in the order rows are locked.
fn key(l: &Link) -> (&str, &str, &str) {
    (&l.moka_id, l.kind.as_str(), &l.url)
}

/// Columns of links, for UNNEST.
fn columns<'a>(links: impl Iterator<Item = &'a Link>) -> (Vec<&'a str>, Vec<&'a str>, Vec<&'a str>) {
    let mut cols = (Vec::new(), Vec::new(), Vec::new());
    for l in links {
        cols.0.push(l.moka_id.as_str());
        cols.1.push(l.kind.as_str());
        cols.2.push(l.url.as_str());
    }
    cols
}

/// In the candidates' transaction: the candidates just written by a newer submission now link
/// exactly `links` (of every applied candidate). The pending rows of the candidates that existed
/// before (`existed`) for other links are deleted, and each link not stored yet becomes `pending`.
pub async fn record_pending(tx: &Transaction<'_>, existed: &[&str], links: &[Link]) -> Result<(), DbError> {
    // Rows are written in key order, the order `settle` updates them in, so that the two wait for
    // each other instead of deadlocking.
    let mut sorted: Vec<&Link> = links.iter().collect();
    sorted.sort_by(|a, b| key(a).cmp(&key(b)));
    let (moka_id, kind, url) = columns(sorted.into_iter());
    if !existed.is_empty() {
        let drop = tx.prepare_cached(DROP_PENDING_SQL).await?;
        tx.execute(&drop, &[&existed, &moka_id, &kind, &url]).await?;
    }
    if !links.is_empty() {
        let add = tx.prepare_cached(ADD_PENDING_SQL).await?;
        tx.execute(&add, &[&moka_id, &kind, &url]).await?;
    }
    Ok(())
}

/// The pending links of the candidates `ids`: what their downloads must fetch.
pub async fn pending(client: &impl GenericClient, ids: &[&str]) -> Result<Vec<Link>, DbError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = client.query(PENDING_SQL, &[&ids]).await?;
    Ok(rows
        .iter()
        .filter_map(|r| Some(Link { moka_id: r.get(0), kind: Kind::parse(r.get::<_, &str>(1))?, url: r.get(2) }))
        .collect())
}

/// Which of `links` still want a download: their row is `pending`, or `failed` when an operator
/// replays the download (`failed_too`). The others were settled meanwhile (a redelivered job does
/// not fetch a dead link again), or dropped by a newer submission.
pub async fn still_wanted(client: &impl GenericClient, links: &[Link], failed_too: bool) -> Result<Vec<bool>, DbError> {
    let (moka_id, kind, url) = columns(links.iter());
    let rows = client.query(STATUS_SQL, &[&moka_id, &kind, &url]).await?;
    let mut wanted = vec![false; links.len()];
    for r in rows {
        let i: i64 = r.get(0);
        let status: &str = r.get(1);
        if let Some(w) = usize::try_from(i - 1).ok().and_then(|i| wanted.get_mut(i)) {
            *w = status == "pending" || (failed_too && status == "failed");
        }
    }
    Ok(wanted)
}

/// Settles the rows of finished downloads, in one statement; returns how many rows changed
/// (a link dropped meanwhile, or stored by another download, changes none).
pub async fn settle(client: &impl GenericClient, records: &[Record]) -> Result<u64, DbError> {
    // One update per row: the same link twice (two downloads of it) keeps a stored copy.
    let mut seen = HashSet::new();
    let mut rows: Vec<&Record> = Vec::with_capacity(records.len());
    let mut sorted: Vec<&Record> = records.iter().collect();
    sorted.sort_by_key(|r| std::cmp::Reverse(r.stored));
    for r in sorted {
        if seen.insert(&r.link) {
            rows.push(r);
        }
    }
    // Rows are updated in key order, so two writers settling overlapping rows wait instead of deadlocking.
    rows.sort_by(|a, b| {
        (&a.link.moka_id, a.link.kind.as_str(), &a.link.url).cmp(&(&b.link.moka_id, b.link.kind.as_str(), &b.link.url))
    });
    let (moka_id, kind, url) = columns(rows.iter().map(|r| &r.link));
    let status: Vec<&str> = rows.iter().map(|r| if r.stored { "stored" } else { "failed" }).collect();
    let sha: Vec<Option<&str>> = rows.iter().map(|r| r.sha256.as_deref()).collect();
    let size: Vec<Option<i64>> = rows.iter().map(|r| r.size_bytes).collect();
    // The file name comes from the file host and the error may quote it: make them storable.
    fn outside(t: &Option<String>) -> Option<std::borrow::Cow<'_, str>> {
        t.as_deref().map(|t| storable::text(t, storable::MESSAGE_MAX_BYTES))
    }
    let ctype: Vec<Option<&str>> = rows.iter().map(|r| r.content_type.as_deref()).collect();
    let name_cells: Vec<_> = rows.iter().map(|r| outside(&r.file_name)).collect();
    let name: Vec<Option<&str>> = name_cells.iter().map(|c| c.as_deref()).collect();
    let key: Vec<Option<&str>> = rows.iter().map(|r| r.storage_key.as_deref()).collect();
    let error_cells: Vec<_> = rows.iter().map(|r| outside(&r.error)).collect();
    let error: Vec<Option<&str>> = error_cells.iter().map(|c| c.as_deref()).collect();
    let fetched: Vec<DateTime<Utc>> = rows.iter().map(|r| r.fetched_at).collect();
    let stmt = client.prepare_cached(SETTLE_SQL).await?;
    Ok(client
        .execute(&stmt, &[&moka_id, &kind, &url, &status, &sha, &size, &ctype, &name, &key, &error, &fetched])
        .await?)
}
