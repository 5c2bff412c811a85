//! The rows of `candidate_attachments`: what the worker found for each link of a candidate.

use chrono::{DateTime, Utc};

/// `candidate_attachments.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Resume,
    InterviewFeedback,
    Offer,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Resume => "resume",
            Kind::InterviewFeedback => "interview_feedback",
            Kind::Offer => "offer",
        }
    }
}

/// One row of `candidate_attachments`.
#[derive(Debug, Clone)]
pub struct Record {
    pub moka_id: String,
    pub kind: Kind,
    pub url: String,
    pub stored: bool,
    pub sha256: Option<String>,
    pub size_bytes: Option<i64>,
    pub content_type: Option<String>,
    pub file_name: Option<String>,
    pub storage_key: Option<String>,
    pub error: Option<String>,
    pub fetched_at: DateTime<Utc>,
}

/// The links of these candidates already stored, as `(moka_id, kind, url)`: a redelivery or a
/// replay does not fetch them again.
pub async fn stored_links(
    pool: &deadpool_postgres::Pool,
    ids: &[&str],
) -> Result<std::collections::HashSet<(String, String, String)>, super::DbError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT moka_id, kind, url FROM candidate_attachments WHERE moka_id = ANY($1) AND status = 'stored'",
            &[&ids],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
}
