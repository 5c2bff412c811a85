//! A submission's metadata: what the ingress knows about it besides its payload. How it travels
//! (the envelope's JSON line and AMQP properties) is the broker's business (`broker::envelope`).

use chrono::{DateTime, SubsecRound, Utc};
use uuid::Uuid;

/// What the ingress knows about a submission, besides its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub message_id: Uuid,
    pub received_at: DateTime<Utc>,
    pub access_key: String,
    pub tonce: i64,
    pub moka_id: String,
}

impl Meta {
    /// A new submission received at `received_at` (kept to the microsecond, what travels), with a
    /// fresh UUIDv7.
    pub fn new(access_key: &str, tonce: i64, moka_id: &str, received_at: DateTime<Utc>) -> Meta {
        Meta {
            message_id: Uuid::now_v7(),
            received_at: received_at.trunc_subsecs(6),
            access_key: access_key.to_owned(),
            tonce,
            moka_id: moka_id.to_owned(),
        }
    }
}
