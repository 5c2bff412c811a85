//! The message that travels from the ingress to the workers: version 1 of the envelope.
//!
//! The AMQP **body is the `payload` parameter exactly as received**, byte for byte; everything
//! else travels in AMQP properties, so the payload is never re-encoded and a dead-lettered or
//! replayed message still carries the original bytes.
//!
//! | where | name | meaning |
//! |---|---|---|
//! | property | `message_id` | a fresh UUIDv7 per accepted request |
//! | property | `type` | `moka.submission.v1` |
//! | property | `timestamp` | receive time, unix seconds |
//! | property | `content_type` / `delivery_mode` | `application/json` / `2` (persistent) |
//! | header | `x-envelope-version` | `1` |
//! | header | `x-received-at` | receive time, RFC 3339 with microseconds, UTC |
//! | header | `x-access-key` | the access key that signed the request |
//! | header | `x-tonce` | the request's tonce, unix seconds |
//! | header | `x-moka-id` | the payload's `id` |

use chrono::{DateTime, SecondsFormat, Utc};
use lapin::{
    types::{AMQPValue, FieldTable, ShortString},
    BasicProperties,
};
use uuid::Uuid;

pub const VERSION: i32 = 1;
/// AMQP `type` property of envelope messages.
pub const MESSAGE_TYPE: &str = "moka.submission.v1";

/// What the ingress knows about a submission, besides its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub message_id: Uuid,
    pub received_at: DateTime<Utc>,
    pub access_key: String,
    pub tonce: i64,
    pub moka_id: String,
}

/// A submission as a worker receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub meta: Meta,
    /// The raw payload text.
    pub payload: String,
}

/// Why a delivery is not a readable envelope (a permanent failure).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("envelope header {0} is missing or malformed")]
    Header(&'static str),
    #[error("unsupported envelope version {0}")]
    Version(i64),
    #[error("the body is not UTF-8 text")]
    NotText,
}

impl Meta {
    /// A new submission received now-ish, with a fresh UUIDv7.
    pub fn new(access_key: &str, tonce: i64, moka_id: &str, received_at: DateTime<Utc>) -> Meta {
        Meta {
            message_id: Uuid::now_v7(),
            received_at,
            access_key: access_key.to_owned(),
            tonce,
            moka_id: moka_id.to_owned(),
        }
    }

    /// Properties for publishing: persistent, typed, with the envelope in headers.
    pub fn properties(&self) -> BasicProperties {
        let mut h = FieldTable::default();
        h.insert("x-envelope-version".into(), AMQPValue::LongInt(VERSION));
        let received = self.received_at.to_rfc3339_opts(SecondsFormat::Micros, true);
        h.insert("x-received-at".into(), AMQPValue::LongString(received.into()));
        h.insert("x-access-key".into(), AMQPValue::LongString(self.access_key.clone().into()));
        h.insert("x-tonce".into(), AMQPValue::LongLongInt(self.tonce));
        h.insert("x-moka-id".into(), AMQPValue::LongString(self.moka_id.clone().into()));
        BasicProperties::default()
            // 2 = persistent: written to disk, survives a broker restart.
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_type(MESSAGE_TYPE.into())
            .with_app_id("moka-ingest".into())
            .with_message_id(self.message_id.to_string().into())
            .with_timestamp(self.received_at.timestamp() as u64)
            .with_headers(h)
    }
}

impl Envelope {
    /// Reads an envelope back from a delivery's properties and body.
    pub fn from_delivery(props: &BasicProperties, body: &[u8]) -> Result<Envelope, EnvelopeError> {
        let empty = FieldTable::default();
        let h = props.headers().as_ref().unwrap_or(&empty);
        let version = header_int(h, "x-envelope-version").ok_or(EnvelopeError::Header("x-envelope-version"))?;
        if version != VERSION as i64 {
            return Err(EnvelopeError::Version(version));
        }
        let message_id = props
            .message_id()
            .as_ref()
            .and_then(|m| Uuid::parse_str(m.as_str()).ok())
            .ok_or(EnvelopeError::Header("message_id"))?;
        let received_at = header_str(h, "x-received-at")
            .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
            .map(|d| d.with_timezone(&Utc))
            .ok_or(EnvelopeError::Header("x-received-at"))?;
        let meta = Meta {
            message_id,
            received_at,
            access_key: header_str(h, "x-access-key").ok_or(EnvelopeError::Header("x-access-key"))?,
            tonce: header_int(h, "x-tonce").ok_or(EnvelopeError::Header("x-tonce"))?,
            moka_id: header_str(h, "x-moka-id").ok_or(EnvelopeError::Header("x-moka-id"))?,
        };
        let payload = String::from_utf8(body.to_vec()).map_err(|_| EnvelopeError::NotText)?;
        Ok(Envelope { meta, payload })
    }
}

/// A header's text value.
pub fn header_str(h: &FieldTable, name: &str) -> Option<String> {
    match h.inner().get(&ShortString::from(name))? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// A header's integer value, whatever integer width the broker or a client chose.
pub fn header_int(h: &FieldTable, name: &str) -> Option<i64> {
    match h.inner().get(&ShortString::from(name))? {
        AMQPValue::ShortShortInt(v) => Some(*v as i64),
        AMQPValue::ShortShortUInt(v) => Some(*v as i64),
        AMQPValue::ShortInt(v) => Some(*v as i64),
        AMQPValue::ShortUInt(v) => Some(*v as i64),
        AMQPValue::LongInt(v) => Some(*v as i64),
        AMQPValue::LongUInt(v) => Some(*v as i64),
        AMQPValue::LongLongInt(v) => Some(*v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keeps_the_payload_bytes() {
        let raw = r#"{ "id" : "x",  "name":"张三" }"#;
        let meta = Meta::new("AK", 1764400000, "x", Utc::now());
        let back = Envelope::from_delivery(&meta.properties(), raw.as_bytes()).unwrap();
        // Microsecond precision survives the header.
        assert_eq!(back.meta.received_at.timestamp_micros(), meta.received_at.timestamp_micros());
        assert_eq!((back.meta.message_id, back.meta.tonce, back.payload.as_str()), (meta.message_id, 1764400000, raw));
        assert_eq!(back.meta.message_id.get_version_num(), 7);
    }

    #[test]
    fn refuses_foreign_messages() {
        let err = Envelope::from_delivery(&BasicProperties::default(), b"{}").unwrap_err();
        assert_eq!(err, EnvelopeError::Header("x-envelope-version"));
        let meta = Meta::new("AK", 1, "x", Utc::now());
        assert_eq!(Envelope::from_delivery(&meta.properties(), &[0xff]).unwrap_err(), EnvelopeError::NotText);
    }
}
