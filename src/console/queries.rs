//! What the console's pages read from PostgreSQL: every query here is served by an index of
//! `migrations/V4__console.sql` (or of the tables' keys), and bounded by a page size.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde::Deserialize;
use tokio_postgres::types::ToSql;

use crate::store::DbError;

/// Rows per page of the dead-letter, candidate and audit lists.
pub const PAGE_SIZE: i64 = 50;
/// The last page a link may ask for (a page number from the URL is outside data).
pub const MAX_PAGE: i64 = 1_000_000;

/// Submissions by outcome in one time bucket of a chart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bucket {
    pub start: Option<DateTime<Utc>>,
    pub applied: i64,
    pub stale: i64,
    pub dead: i64,
}

/// Counts per `bucket` (`minute` or `hour`) since `since`, one bucket per step, empty ones too.
pub async fn outcomes(client: &impl GenericClient, bucket: &str, since: &str) -> Result<Vec<Bucket>, DbError> {
    let step = match bucket {
        "minute" => "1 minute",
        _ => "1 hour",
    };
    // The buckets are generated, then joined with the counts: a quiet minute shows as zero.
    let sql = format!(
        "WITH counts AS (
             SELECT date_trunc('{bucket}', processed_at) AS b,
                    count(*) FILTER (WHERE outcome = 'applied') AS applied,
                    count(*) FILTER (WHERE outcome = 'stale') AS stale,
                    count(*) FILTER (WHERE outcome = 'dead') AS dead
             FROM submissions WHERE processed_at > now() - interval '{since}' GROUP BY 1)
         SELECT g.b, COALESCE(c.applied, 0), COALESCE(c.stale, 0), COALESCE(c.dead, 0)
         FROM generate_series(date_trunc('{bucket}', now() - interval '{since}') + interval '{step}',
                              date_trunc('{bucket}', now()), interval '{step}') AS g(b)
         LEFT JOIN counts c ON c.b = g.b ORDER BY g.b"
    );
    let rows = client.query(&sql, &[]).await?;
    Ok(rows.iter().map(|r| Bucket { start: r.get(0), applied: r.get(1), stale: r.get(2), dead: r.get(3) }).collect())
}

/// The filter of the dead-letter page, as its query string carries it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct DeadFilter {
    /// Reason kind (`validation`, `database`, …).
    pub kind: String,
    /// A field named by a validation failure.
    pub field: String,
    /// A Moka candidate id (exact).
    pub candidate: String,
    /// Text in the error message (case-insensitive).
    pub q: String,
    /// `hour`, `day`, `week`, `custom` (with `from`/`to`), anything else: all time.
    pub window: String,
    pub from: String,
    pub to: String,
    /// `queue` (dead or parked: what can be replayed; the default), or one state.
    pub state: String,
    /// Only what died up to this time (RFC 3339): a confirmation's "all that match" acts on what
    /// it counted, not on what died after.
    pub until: String,
    pub page: i64,
}

impl DeadFilter {
    /// The WHERE clause and its parameters.
    fn clause(&self) -> (String, Vec<Box<dyn ToSql + Sync + Send>>) {
        let mut w = Where::default();
        match self.state.as_str() {
            "dead" | "parked" | "replayed" | "purged" => w.bind("state = ?", self.state.clone()),
            _ => w.raw("state IN ('dead', 'parked')".into()),
        }
        if !self.kind.is_empty() {
            w.bind("kind = ?", self.kind.clone());
        }
        if !self.field.is_empty() {
            w.bind("fields @> (?::text)::jsonb", serde_json::json!([{ "field": self.field }]).to_string());
        }
        if !self.candidate.is_empty() {
            w.bind("moka_id = ?", self.candidate.clone());
        }
        if !self.q.is_empty() {
            // lower() then LIKE: about twice as fast as ILIKE on this scan (which no index serves).
            w.bind("lower(message) LIKE ?", format!("%{}%", like_escape(&self.q.to_lowercase())));
        }
        let interval = match self.window.as_str() {
            "hour" => Some("1 hour"),
            "day" => Some("1 day"),
            "week" => Some("7 days"),
            _ => None,
        };
        if let Some(i) = interval {
            w.raw(format!("died_at > now() - interval '{i}'"));
        }
        if let Some(until) = parse_time(&self.until) {
            w.bind("died_at <= ?", until);
        }
        if self.window == "custom" {
            if let Some(from) = parse_time(&self.from) {
                w.bind("died_at >= ?", from);
            }
            if let Some(to) = parse_time(&self.to) {
                w.bind("died_at < ?", to);
            }
        }
        (w.conds.join(" AND "), w.params)
    }

    /// The filter without its page, as query-string pairs (links and hidden form fields).
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        [
            ("kind", &self.kind),
            ("field", &self.field),
            ("candidate", &self.candidate),
            ("q", &self.q),
            ("window", &self.window),
            ("from", &self.from),
            ("to", &self.to),
            ("state", &self.state),
            ("until", &self.until),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k, v.clone()))
        .collect()
    }

    /// Whether the filter selects only what can be replayed or purged (dead or parked).
    pub fn in_queue(&self) -> bool {
        !matches!(self.state.as_str(), "replayed" | "purged")
    }
}

/// Conditions and their parameters, numbered as they are added.
#[derive(Default)]
struct Where {
    conds: Vec<String>,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Where {
    fn raw(&mut self, cond: String) {
        self.conds.push(cond);
    }

    /// `cond` with its `?` bound to `param`.
    fn bind(&mut self, cond: &str, param: impl ToSql + Sync + Send + 'static) {
        self.params.push(Box::new(param));
        self.conds.push(cond.replace('?', &format!("${}", self.params.len())));
    }
}

/// `datetime-local` (`2026-11-30T07:15`) or RFC 3339, read as UTC.
fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M").ok().map(|t| t.and_utc())
}

/// `s` with LIKE's wildcards taken literally.
pub fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

fn refs(params: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect()
}

/// A row of the dead-letter list.
#[derive(Debug, Clone)]
pub struct DeadRow {
    pub message_id: String,
    pub source: String,
    pub moka_id: String,
    pub name: Option<String>,
    pub kind: String,
    pub message: String,
    pub fields: serde_json::Value,
    pub attempts: i32,
    pub first_failed_at: Option<DateTime<Utc>>,
    pub died_at: DateTime<Utc>,
    pub state: String,
    pub changed_by: Option<String>,
}

const DEAD_COLUMNS: &str =
    "message_id, source, moka_id, name, kind, message, fields, attempts, first_failed_at, died_at, state, changed_by";

fn dead_row(r: &tokio_postgres::Row) -> DeadRow {
    DeadRow {
        message_id: r.get(0),
        source: r.get(1),
        moka_id: r.get(2),
        name: r.get(3),
        kind: r.get(4),
        message: r.get(5),
        fields: r.get(6),
        attempts: r.get(7),
        first_failed_at: r.get(8),
        died_at: r.get(9),
        state: r.get(10),
        changed_by: r.get(11),
    }
}

/// One page of dead letters matching `f`, newest first.
pub async fn dead_letters(client: &impl GenericClient, f: &DeadFilter) -> Result<Vec<DeadRow>, DbError> {
    let (clause, params) = f.clause();
    let offset = f.page.clamp(0, MAX_PAGE) * PAGE_SIZE;
    let sql = format!(
        "SELECT {DEAD_COLUMNS} FROM dead_letters WHERE {clause} ORDER BY died_at DESC LIMIT {PAGE_SIZE} OFFSET {offset}"
    );
    Ok(client.query(&sql, &refs(&params)).await?.iter().map(dead_row).collect())
}

/// Counts by cause (reason and field: a validation failure naming two fields counts under
/// both), the 50 largest.
pub type Causes = Vec<(String, Option<String>, i64)>;

/// How many dead letters match `f` in all, and by cause, from one scan of the matching rows (a
/// text search cannot use an index: it is read once, not once per count).
pub async fn summary(client: &impl GenericClient, f: &DeadFilter) -> Result<(i64, Causes), DbError> {
    let (clause, params) = f.clause();
    let sql = format!(
        "WITH m AS MATERIALIZED (SELECT kind, fields FROM dead_letters WHERE {clause})
         (SELECT NULL::text, NULL::text, count(*), 0 AS total_first FROM m)
         UNION ALL
         (SELECT kind, fe->>'field', count(*), 1 FROM m
          LEFT JOIN LATERAL jsonb_array_elements(CASE WHEN jsonb_typeof(fields) = 'array' THEN fields ELSE '[]' END) fe ON true
          GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT 50)"
    );
    let rows = client.query(&sql, &refs(&params)).await?;
    let total = rows.iter().find(|r| r.get::<_, i32>(3) == 0).map(|r| r.get(2)).unwrap_or(0);
    let causes = rows.iter().filter(|r| r.get::<_, i32>(3) == 1).map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    Ok((total, causes))
}

/// The ids of every dead letter in the queue that matches `f` (a "replay all that match"):
/// ids only, never the messages.
pub async fn matching_ids(client: &impl GenericClient, f: &DeadFilter) -> Result<Vec<String>, DbError> {
    // Only what is in the queue: the filter's state when it names one of those, else both.
    let state = if matches!(f.state.as_str(), "dead" | "parked") { f.state.clone() } else { String::new() };
    let in_queue = DeadFilter { state, ..f.clone() };
    let (clause, params) = in_queue.clause();
    let rows = client.query(&format!("SELECT message_id FROM dead_letters WHERE {clause}"), &refs(&params)).await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Of `ids`, those still in the queue (dead or parked).
pub async fn in_queue(client: &impl GenericClient, ids: &[String]) -> Result<Vec<String>, DbError> {
    let rows = client
        .query(
            "SELECT message_id FROM dead_letters WHERE message_id = ANY($1) AND state IN ('dead', 'parked')",
            &[&ids],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// One dead letter, with its payload and the rest of its story.
#[derive(Debug, Clone)]
pub struct DeadDetail {
    pub row: DeadRow,
    pub payload: String,
    pub failed_by: Option<String>,
    pub received_at: Option<DateTime<Utc>>,
    pub tonce: Option<i64>,
    pub changed_at: Option<DateTime<Utc>>,
}

pub async fn dead_letter(client: &impl GenericClient, id: &str) -> Result<Option<DeadDetail>, DbError> {
    let sql = format!(
        "SELECT {DEAD_COLUMNS}, payload, failed_by, received_at, tonce, changed_at FROM dead_letters WHERE message_id = $1"
    );
    Ok(client.query_opt(&sql, &[&id]).await?.map(|r| DeadDetail {
        row: dead_row(&r),
        payload: r.get(12),
        failed_by: r.get(13),
        received_at: r.get(14),
        tonce: r.get(15),
        changed_at: r.get(16),
    }))
}

/// The newest dead letters still in the queue (the overview's list).
pub async fn latest_dead(client: &impl GenericClient, n: i64) -> Result<Vec<DeadRow>, DbError> {
    let sql = format!(
        "SELECT {DEAD_COLUMNS} FROM dead_letters WHERE state IN ('dead', 'parked') ORDER BY died_at DESC LIMIT $1"
    );
    Ok(client.query(&sql, &[&n]).await?.iter().map(dead_row).collect())
}

/// Dead letters in the queue according to the index (set beside the queue's own depth).
pub async fn indexed_in_queue(client: &impl GenericClient) -> Result<i64, DbError> {
    Ok(client.query_one("SELECT count(*) FROM dead_letters WHERE state IN ('dead', 'parked')", &[]).await?.get(0))
}

/// A candidate in a search result.
#[derive(Debug, Clone)]
pub struct CandidateHit {
    pub moka_id: String,
    pub name: String,
    pub phone: String,
    pub email: String,
    pub job_title: String,
    pub updated_at: DateTime<Utc>,
}

/// Candidates whose Moka id, name, phone or email starts with `q` (a phone also after +86).
pub async fn search_candidates(client: &impl GenericClient, q: &str) -> Result<Vec<CandidateHit>, DbError> {
    let q = q.trim();
    if q.is_empty() {
        return Ok(Vec::new());
    }
    let prefix = format!("{}%", like_escape(q));
    let lower = format!("{}%", like_escape(&q.to_lowercase()));
    // A phone is searched only for what looks like one (at least three digits, nothing but digits,
    // `+`, spaces and dashes): "+86%" would match nearly every candidate.
    let digits: String = q.chars().filter(char::is_ascii_digit).collect();
    let phone_like = digits.len() >= 3 && q.chars().all(|c| c.is_ascii_digit() || " +-".contains(c));
    let (phone, cn_phone) = match phone_like {
        true if q.starts_with('+') => (format!("+{digits}%"), format!("+{digits}%")),
        true => (format!("{digits}%"), format!("+86{digits}%")),
        // Not used: `$5` is false.
        false => (String::new(), String::new()),
    };
    // One indexed prefix scan per column (text_pattern_ops), OR-ed by the planner's bitmap.
    let rows = client
        .query(
            "SELECT moka_id, name, phone, email, job_title, updated_at FROM candidates
             WHERE moka_id LIKE $1 OR name LIKE $1 OR email LIKE $2
                OR ($5 AND (phone LIKE $3 OR phone LIKE $4))
             ORDER BY updated_at DESC LIMIT $6",
            &[&prefix, &lower, &phone, &cn_phone, &phone_like, &PAGE_SIZE],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| CandidateHit {
            moka_id: r.get(0),
            name: r.get(1),
            phone: r.get(2),
            email: r.get(3),
            job_title: r.get(4),
            updated_at: r.get(5),
        })
        .collect())
}

/// A candidate's stored row, as JSON (every column), with its children.
#[derive(Debug, Clone)]
pub struct CandidateDetail {
    pub row: serde_json::Map<String, serde_json::Value>,
    pub educations: Vec<serde_json::Value>,
    pub experiences: Vec<serde_json::Value>,
    pub attachments: Vec<Attachment>,
}

/// An attachment row.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub kind: String,
    pub url: String,
    pub status: String,
    pub sha256: Option<String>,
    pub size_bytes: Option<i64>,
    pub content_type: Option<String>,
    pub file_name: Option<String>,
    pub storage_key: Option<String>,
    pub error: Option<String>,
}

pub async fn candidate(client: &impl GenericClient, moka_id: &str) -> Result<Option<CandidateDetail>, DbError> {
    let Some(row) = client.query_opt("SELECT to_jsonb(c) FROM candidates c WHERE moka_id = $1", &[&moka_id]).await?
    else {
        return Ok(None);
    };
    let row: serde_json::Value = row.get(0);
    let children =
        |table: &str| format!("SELECT to_jsonb(t) - 'moka_id' FROM {table} t WHERE moka_id = $1 ORDER BY position");
    let educations = client.query(&children("candidate_educations"), &[&moka_id]).await?;
    let experiences = client.query(&children("candidate_experiences"), &[&moka_id]).await?;
    let attachments = client
        .query(
            "SELECT kind, url, status, sha256, size_bytes, content_type, file_name, storage_key, error
             FROM candidate_attachments WHERE moka_id = $1 ORDER BY kind, url",
            &[&moka_id],
        )
        .await?;
    Ok(Some(CandidateDetail {
        row: row.as_object().cloned().unwrap_or_default(),
        educations: educations.iter().map(|r| r.get(0)).collect(),
        experiences: experiences.iter().map(|r| r.get(0)).collect(),
        attachments: attachments
            .iter()
            .map(|r| Attachment {
                kind: r.get(0),
                url: r.get(1),
                status: r.get(2),
                sha256: r.get(3),
                size_bytes: r.get(4),
                content_type: r.get(5),
                file_name: r.get(6),
                storage_key: r.get(7),
                error: r.get(8),
            })
            .collect(),
    }))
}

/// One submission of a candidate's timeline.
#[derive(Debug, Clone)]
pub struct Submission {
    pub message_id: String,
    pub tonce: i64,
    pub received_at: DateTime<Utc>,
    pub processed_at: DateTime<Utc>,
    pub outcome: String,
    pub attempts: i32,
    pub error: Option<serde_json::Value>,
}

/// Every submission of `moka_id` from the `submissions` ledger, newest first.
pub async fn timeline(client: &impl GenericClient, moka_id: &str) -> Result<Vec<Submission>, DbError> {
    let rows = client
        .query(
            "SELECT message_id::text, tonce, received_at, processed_at, outcome, attempts, error
             FROM submissions WHERE moka_id = $1 ORDER BY received_at DESC, processed_at DESC LIMIT 500",
            &[&moka_id],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Submission {
            message_id: r.get(0),
            tonce: r.get(1),
            received_at: r.get(2),
            processed_at: r.get(3),
            outcome: r.get(4),
            attempts: r.get(5),
            error: r.get(6),
        })
        .collect())
}

/// The dead letters of `moka_id`, whatever became of them, newest first.
pub async fn candidate_dead(client: &impl GenericClient, moka_id: &str) -> Result<Vec<DeadRow>, DbError> {
    let sql = format!("SELECT {DEAD_COLUMNS} FROM dead_letters WHERE moka_id = $1 ORDER BY died_at DESC LIMIT 200");
    Ok(client.query(&sql, &[&moka_id]).await?.iter().map(dead_row).collect())
}

/// A stored attachment of `moka_id` with this hash: (storage key, file name).
pub async fn stored_file(
    client: &impl GenericClient,
    moka_id: &str,
    sha256: &str,
) -> Result<Option<(String, Option<String>)>, DbError> {
    Ok(client
        .query_opt(
            "SELECT storage_key, file_name FROM candidate_attachments
             WHERE moka_id = $1 AND sha256 = $2 AND status = 'stored' AND storage_key IS NOT NULL LIMIT 1",
            &[&moka_id, &sha256],
        )
        .await?
        .map(|r| (r.get(0), r.get(1))))
}

/// An operator action.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub username: String,
    pub action: String,
    pub filter: serde_json::Value,
    pub requested: i32,
    pub done: i32,
    pub failed: i32,
    pub finished_at: Option<DateTime<Utc>>,
    pub detail: Option<String>,
}

const AUDIT_COLUMNS: &str = "id, at, username, action, filter, requested, done, failed, finished_at, detail";

fn audit_row(r: &tokio_postgres::Row) -> AuditEntry {
    AuditEntry {
        id: r.get(0),
        at: r.get(1),
        username: r.get(2),
        action: r.get(3),
        filter: r.get(4),
        requested: r.get(5),
        done: r.get(6),
        failed: r.get(7),
        finished_at: r.get(8),
        detail: r.get(9),
    }
}

/// One page of the audit table, newest first.
pub async fn audit(client: &impl GenericClient, page: i64) -> Result<Vec<AuditEntry>, DbError> {
    let sql = format!("SELECT {AUDIT_COLUMNS} FROM console_audit ORDER BY at DESC, id DESC LIMIT $1 OFFSET $2");
    Ok(client.query(&sql, &[&PAGE_SIZE, &(page.clamp(0, MAX_PAGE) * PAGE_SIZE)]).await?.iter().map(audit_row).collect())
}

pub async fn audit_entry(client: &impl GenericClient, id: i64) -> Result<Option<AuditEntry>, DbError> {
    let sql = format!("SELECT {AUDIT_COLUMNS} FROM console_audit WHERE id = $1");
    Ok(client.query_opt(&sql, &[&id]).await?.as_ref().map(audit_row))
}
