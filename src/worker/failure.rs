//! Why a message could not be processed, and whether trying again can help.

use serde::Serialize;

use crate::{broker::envelope::EnvelopeError, domain::candidate::FieldError, store::DbError};

/// The reason kinds an operator sees in the dead-letter queue (`x-error-kind`) and in
/// `submissions.error.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The message is not a readable envelope.
    Envelope,
    /// The payload lacks a required field or has one of an unusable type.
    Validation,
    /// PostgreSQL refused the data, or stayed unavailable.
    Database,
    /// Attachments could not be fetched.
    Attachment,
    /// Delivered again and again without completing: it crashes or hangs the worker.
    DeliveryLimit,
}

impl FailureKind {
    /// Every kind, for the metrics' label values.
    pub const ALL: [FailureKind; 5] = [
        FailureKind::Envelope,
        FailureKind::Validation,
        FailureKind::Database,
        FailureKind::Attachment,
        FailureKind::DeliveryLimit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Envelope => "envelope",
            FailureKind::Validation => "validation",
            FailureKind::Database => "database",
            FailureKind::Attachment => "attachment",
            FailureKind::DeliveryLimit => "delivery_limit",
        }
    }
}

/// A failure of one message.
#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: FailureKind,
    /// True: retry later. False: dead-letter now.
    pub transient: bool,
    pub message: String,
    /// For validation failures: every bad field.
    pub fields: Vec<FieldError>,
}

impl Failure {
    pub fn permanent(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure { kind, transient: false, message: message.into(), fields: Vec::new() }
    }

    /// The `submissions.error` value.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({"kind": self.kind, "message": self.message});
        if !self.fields.is_empty() {
            v["fields"] = serde_json::to_value(&self.fields).expect("field errors serialize");
        }
        v
    }
}

impl From<EnvelopeError> for Failure {
    fn from(e: EnvelopeError) -> Self {
        Failure::permanent(FailureKind::Envelope, e.to_string())
    }
}

impl From<Vec<FieldError>> for Failure {
    fn from(fields: Vec<FieldError>) -> Self {
        let message = fields.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
        Failure { kind: FailureKind::Validation, transient: false, message, fields }
    }
}

impl From<DbError> for Failure {
    fn from(e: DbError) -> Self {
        // The whole chain: the SQLSTATE and the server's words are what an operator needs.
        let message = crate::telemetry::chain(&e);
        Failure { kind: FailureKind::Database, transient: e.is_transient(), message, fields: Vec::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::FailureKind;

    #[test]
    fn all_holds_every_kind_once() {
        // The match has no wildcard: a new kind does not compile until it is placed here, and
        // the count below then reminds ALL (the metrics' zero series) of it.
        let index = |k: FailureKind| match k {
            FailureKind::Envelope => 0,
            FailureKind::Validation => 1,
            FailureKind::Database => 2,
            FailureKind::Attachment => 3,
            FailureKind::DeliveryLimit => 4,
        };
        let mut seen = [false; 5];
        FailureKind::ALL.iter().for_each(|k| seen[index(*k)] = true);
        assert!(seen.iter().all(|s| *s) && FailureKind::ALL.len() == seen.len());
    }
}
