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
    /// A digest of the request's signature (the first 16 bytes of its SHA-256), which identifies
    /// the request: a replay of it carries the same one. `None` for messages from before it was
    /// recorded (envelope version 1, or version 2 written without it).
    pub signature: Option<[u8; 16]>,
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
            signature: None,
        }
    }

    /// The same submission, identified by the request's `signature` (its digest is kept).
    pub fn signed(mut self, signature: &[u8]) -> Meta {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(signature);
        let mut short = [0u8; 16];
        short.copy_from_slice(&digest[..16]);
        self.signature = Some(short);
        self
    }
}
