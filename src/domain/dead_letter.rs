//! A dead message as operators see it (`dlq list`, the console) and as the `dead_letters` table
//! indexes it. Reading it off a message's headers is the broker's business
//! (`broker::dead::describe`); this is the plain record both sides share.

use serde::Serialize;

/// Where a dead message came from, and so where a replay sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Source {
    /// A submission (back to the submission exchange).
    #[default]
    Submission,
    /// A download job (back to the downloads queue).
    Download,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Submission => "submission",
            Source::Download => "download",
        }
    }
}

/// One dead message, as an operator reads it. The serialized form is `dlq list --json`'s and
/// `dlq show`'s output (a contract): fields added for the console are not serialized.
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
    #[serde(skip)]
    pub source: Source,
    /// `[{field, problem}]` of a validation failure, as JSON text.
    #[serde(skip)]
    pub fields: Option<String>,
}
