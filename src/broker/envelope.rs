//! The message that travels from the ingress to the workers: version 2 of the envelope.
//!
//! The AMQP **body** is one line of JSON metadata, a newline (`\n`), then **the `payload`
//! parameter exactly as received**, byte for byte: the payload is never re-encoded, and a
//! dead-lettered or replayed message still carries the original bytes.
//!
//! ```text
//! {"v":2,"received_at":"2026-11-29T20:00:00.123456Z","access_key":"AK","tonce":1764446400,"moka_id":"abc"}
//! {"id":"abc","name":"张三",...}
//! ```
//!
//! | where | name | meaning |
//! |---|---|---|
//! | property | `message_id` | a fresh UUIDv7 per accepted request |
//! | property | `type` | `moka.submission.v2` |
//! | property | `timestamp` | receive time, unix seconds |
//! | property | `delivery_mode` | `2` (persistent) |
//! | line | `v` | `2` |
//! | line | `received_at` | receive time, RFC 3339 with microseconds, UTC |
//! | line | `access_key` | the access key that signed the request |
//! | line | `tonce` | the request's tonce, unix seconds |
//! | line | `moka_id` | the payload's `id` |
//!
//! Why the metadata is in the body and not in AMQP headers (as in version 1): RabbitMQ decodes
//! and re-encodes a header table on every message, and with five headers a quorum queue took
//! about a fifth fewer confirmed publishes per second on this project's machine. The JSON line
//! cannot contain a raw newline (JSON escapes it), so the first `\n` always ends it.
//!
//! Version 1 (metadata in the headers `x-envelope-version`, `x-received-at`, `x-access-key`,
//! `x-tonce`, `x-moka-id`; body = payload; `type` `moka.submission.v1`) is still read, so that
//! messages queued or dead-lettered before an upgrade are processed. Workers are upgraded first.

use chrono::{DateTime, SecondsFormat, Utc};
use lapin::{types::ShortString, BasicProperties};
use uuid::Uuid;

use super::headers::{self, v1};

pub const VERSION: i64 = 2;
/// AMQP `type` property of envelope messages.
pub const MESSAGE_TYPE: &str = "moka.submission.v2";
/// `type` of version 1 messages, which are still read.
pub const MESSAGE_TYPE_V1: &str = "moka.submission.v1";

pub use crate::domain::submission::Meta;

/// A submission as a worker receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub meta: Meta,
    /// The raw payload text.
    pub payload: String,
}

/// Why a delivery is not a readable envelope (a permanent failure).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("not a moka submission (AMQP type {0:?}, no envelope version header)")]
    Foreign(String),
    #[error("envelope field {0} is missing or malformed")]
    Field(&'static str),
    #[error("unsupported envelope version {0}")]
    Version(i64),
    #[error("the body is not UTF-8 text")]
    NotText,
}

/// The metadata line, as written.
#[derive(serde::Serialize)]
struct LineOut<'a> {
    v: i64,
    received_at: &'a str,
    access_key: &'a str,
    tonce: i64,
    moka_id: &'a str,
}

/// The metadata line, as read. Unknown fields are ignored, so a later minor addition is readable.
#[derive(serde::Deserialize)]
struct LineIn {
    v: i64,
    received_at: String,
    access_key: String,
    tonce: i64,
    moka_id: String,
}

/// The wire form of the metadata (the domain type is [`Meta`]).
impl Meta {
    /// Properties for publishing: persistent, typed, with the message id. No header table.
    pub fn properties(&self) -> BasicProperties {
        let mut id = Uuid::encode_buffer();
        BasicProperties::default()
            // 2 = persistent: written to disk, survives a broker restart.
            .with_delivery_mode(2)
            .with_type(MESSAGE_TYPE.into())
            .with_message_id(ShortString::from(&*self.message_id.hyphenated().encode_lower(&mut id)))
            .with_timestamp(u64::try_from(self.received_at.timestamp()).unwrap_or(0))
    }

    /// The body for publishing: the metadata line, `\n`, then `payload` unchanged.
    pub fn body(&self, payload: &[u8]) -> Vec<u8> {
        let received_at = self.received_at.to_rfc3339_opts(SecondsFormat::Micros, true);
        let line = LineOut {
            v: VERSION,
            received_at: &received_at,
            access_key: &self.access_key,
            tonce: self.tonce,
            moka_id: &self.moka_id,
        };
        let mut body = Vec::with_capacity(payload.len() + 128 + self.access_key.len() + self.moka_id.len());
        serde_json::to_writer(&mut body, &line).expect("writing JSON to memory cannot fail");
        body.push(b'\n');
        body.extend_from_slice(payload);
        body
    }
}

impl Envelope {
    /// Reads an envelope back from a delivery's properties and body (version 2, or version 1).
    pub fn from_delivery(props: &BasicProperties, body: &[u8]) -> Result<Envelope, EnvelopeError> {
        let message_id = || {
            props
                .message_id()
                .as_ref()
                .and_then(|m| Uuid::parse_str(m.as_str()).ok())
                .ok_or(EnvelopeError::Field("message_id"))
        };
        let kind = props.kind().as_ref().map(|k| k.as_str());
        let v1_header = props.headers().as_ref().and_then(|h| headers::int(h, v1::ENVELOPE_VERSION));
        match (kind, v1_header) {
            (Some(MESSAGE_TYPE), _) => {
                let newline = body.iter().position(|&b| b == b'\n').ok_or(EnvelopeError::Field("metadata line"))?;
                let line: LineIn =
                    serde_json::from_slice(&body[..newline]).map_err(|_| EnvelopeError::Field("metadata line"))?;
                if line.v != VERSION {
                    return Err(EnvelopeError::Version(line.v));
                }
                let meta = Meta {
                    message_id: message_id()?,
                    received_at: parse_time(&line.received_at).ok_or(EnvelopeError::Field("received_at"))?,
                    access_key: line.access_key,
                    tonce: line.tonce,
                    moka_id: line.moka_id,
                };
                Ok(Envelope { meta, payload: text(&body[newline + 1..])? })
            }
            (_, Some(1)) => {
                let h = props.headers().as_ref().expect("a version header was read");
                let meta = Meta {
                    message_id: message_id()?,
                    received_at: headers::text(h, v1::RECEIVED_AT)
                        .and_then(|s| parse_time(&s))
                        .ok_or(EnvelopeError::Field(v1::RECEIVED_AT))?,
                    access_key: headers::text(h, v1::ACCESS_KEY).ok_or(EnvelopeError::Field(v1::ACCESS_KEY))?,
                    tonce: headers::int(h, v1::TONCE).ok_or(EnvelopeError::Field(v1::TONCE))?,
                    moka_id: headers::text(h, v1::MOKA_ID).ok_or(EnvelopeError::Field(v1::MOKA_ID))?,
                };
                Ok(Envelope { meta, payload: text(body)? })
            }
            (_, Some(v)) => Err(EnvelopeError::Version(v)),
            (kind, None) => Err(EnvelopeError::Foreign(kind.unwrap_or("none").to_owned())),
        }
    }
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).ok().map(|d| d.with_timezone(&Utc))
}

fn text(bytes: &[u8]) -> Result<String, EnvelopeError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| EnvelopeError::NotText)
}

#[cfg(test)]
mod tests {
    use lapin::types::{AMQPValue, FieldTable};

    use super::*;

    #[test]
    fn round_trips_and_keeps_the_payload_bytes() {
        // Newlines, quotes and non-ASCII in the payload and in the id must not disturb the framing.
        let raw = "{ \"id\" : \"x\\n\\\"y\",\n  \"name\":\"张三\" }\n";
        let meta = Meta::new("AK", 1764400000, "x\n\"y", Utc::now());
        let body = meta.body(raw.as_bytes());
        assert!(body.ends_with(raw.as_bytes()), "the payload is appended unchanged");
        let back = Envelope::from_delivery(&meta.properties(), &body).unwrap();
        assert_eq!(back.meta, meta);
        assert_eq!(back.payload, raw);
        assert_eq!(back.meta.message_id.get_version_num(), 7);
        assert!(meta.properties().headers().is_none(), "no header table: RabbitMQ pays for one per message");
    }

    #[test]
    fn the_line_is_plain_json_with_microseconds() {
        let at = DateTime::parse_from_rfc3339("2026-11-29T20:00:00.123456789Z").unwrap().with_timezone(&Utc);
        let meta = Meta::new("AK", 1764446400, "abc", at);
        let body = meta.body(b"{}");
        let line = std::str::from_utf8(&body).unwrap().lines().next().unwrap();
        assert_eq!(
            line,
            r#"{"v":2,"received_at":"2026-11-29T20:00:00.123456Z","access_key":"AK","tonce":1764446400,"moka_id":"abc"}"#
        );
    }

    #[test]
    fn version_1_messages_are_still_read() {
        let mut h = FieldTable::default();
        h.insert("x-envelope-version".into(), AMQPValue::LongInt(1));
        h.insert("x-received-at".into(), AMQPValue::LongString("2026-11-29T20:00:00.000001Z".into()));
        h.insert("x-access-key".into(), AMQPValue::LongString("AK".into()));
        h.insert("x-tonce".into(), AMQPValue::LongLongInt(1764446400));
        h.insert("x-moka-id".into(), AMQPValue::LongString("abc".into()));
        let id = Uuid::now_v7();
        let props = BasicProperties::default()
            .with_type(MESSAGE_TYPE_V1.into())
            .with_message_id(id.to_string().into())
            .with_headers(h);
        let env = Envelope::from_delivery(&props, br#"{"id":"abc"}"#).unwrap();
        assert_eq!((env.meta.message_id, env.meta.moka_id.as_str(), env.meta.tonce), (id, "abc", 1764446400));
        assert_eq!(env.meta.received_at.timestamp_subsec_micros(), 1);
        assert_eq!(env.payload, r#"{"id":"abc"}"#);
    }

    #[test]
    fn refuses_foreign_and_broken_messages() {
        let err = Envelope::from_delivery(&BasicProperties::default(), b"{}").unwrap_err();
        assert_eq!(err, EnvelopeError::Foreign("none".into()));
        let meta = Meta::new("AK", 1, "x", Utc::now());
        let props = meta.properties();
        assert_eq!(Envelope::from_delivery(&props, b"{\"v\":2}").unwrap_err(), EnvelopeError::Field("metadata line"));
        let mut body = meta.body(b"");
        body.push(0xff);
        assert_eq!(Envelope::from_delivery(&props, &body).unwrap_err(), EnvelopeError::NotText);
        let v3 = String::from_utf8(meta.body(b"{}")).unwrap().replacen("\"v\":2", "\"v\":3", 1);
        assert_eq!(Envelope::from_delivery(&props, v3.as_bytes()).unwrap_err(), EnvelopeError::Version(3));
    }
}
