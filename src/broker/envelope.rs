//! The message that travels from the ingress to the workers: version 1 of the envelope.
//!
//! The AMQP body is this JSON object:
//!
//! | field | meaning |
//! |---|---|
//! | `v` | envelope version, `1` |
//! | `message_id` | a fresh UUIDv7 per accepted request (also the AMQP `message_id`) |
//! | `received_at` | when the ingress received the request (RFC 3339, UTC) |
//! | `access_key` | which key signed it |
//! | `tonce` | the request's tonce, in seconds |
//! | `moka_id` | the payload's `id` |
//! | `payload` | the `payload` parameter exactly as received, as a JSON string |

use chrono::{DateTime, Utc};
use lapin::{
    types::{AMQPValue, FieldTable},
    BasicProperties,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const VERSION: u32 = 1;
/// AMQP `type` property of envelope messages.
pub const MESSAGE_TYPE: &str = "moka.submission.v1";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Envelope {
    pub v: u32,
    pub message_id: Uuid,
    pub received_at: DateTime<Utc>,
    pub access_key: String,
    pub tonce: i64,
    pub moka_id: String,
    /// The raw payload text; never re-serialized, so what Moka sent is what is stored.
    pub payload: String,
}

impl Envelope {
    pub fn new(access_key: &str, tonce: i64, moka_id: &str, payload: &str, received_at: DateTime<Utc>) -> Envelope {
        Envelope {
            v: VERSION,
            message_id: Uuid::now_v7(),
            received_at,
            access_key: access_key.to_owned(),
            tonce,
            moka_id: moka_id.to_owned(),
            payload: payload.to_owned(),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an envelope always serializes")
    }

    pub fn from_json(body: &[u8]) -> Result<Envelope, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// Properties for publishing: persistent, typed, with the ids visible to operators.
    pub fn properties(&self) -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert("x-moka-id".into(), AMQPValue::LongString(self.moka_id.clone().into()));
        BasicProperties::default()
            // 2 = persistent: written to disk, survives a broker restart.
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_type(MESSAGE_TYPE.into())
            .with_app_id("moka-ingest".into())
            .with_message_id(self.message_id.to_string().into())
            .with_timestamp(self.received_at.timestamp() as u64)
            .with_headers(headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keeps_the_payload_text() {
        let raw = r#"{ "id" : "x",  "name":"张三" }"#;
        let env = Envelope::new("AK", 1764400000, "x", raw, Utc::now());
        let back = Envelope::from_json(&env.to_json()).unwrap();
        assert_eq!(back, env);
        assert_eq!(back.payload, raw);
        assert_eq!(back.message_id.get_version_num(), 7);
    }
}
