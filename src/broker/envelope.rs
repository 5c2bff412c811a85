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
//! The line may also carry `sig`: 32 hex digits, the first 16 bytes of the SHA-256 of the
//! request's signature (what identifies a request, so that a replay that the ingress's cache
//! forgot is recorded as a `duplicate`). Readers ignore fields they do not know.
//!
//! **Version 3** carries a *group*: the submissions that arrived while the ingress's previous
//! publish waited for its confirm, in one AMQP message (`type` `moka.submission.v3`, its own
//! `message_id`). Its body is a line `{"v":3,"n":N}`, then N items, each a line of its own
//! metadata (as version 2, plus `message_id`, the submission's own, and `len`, the payload's
//! length in bytes), `\n`, the payload's exact bytes, `\n`:
//!
//! ```text
//! {"v":3,"n":2}
//! {"message_id":"0192…","received_at":"…","access_key":"AK","tonce":1764446400,"moka_id":"a","sig":"…","len":17}
//! {"id":"a","x":1}
//! {"message_id":"0193…","received_at":"…","access_key":"AK","tonce":1764446401,"moka_id":"b","sig":"…","len":9}
//! {"id":"b"}
//! ```
//!
//! A group of one is sent as version 2. Each submission of a group keeps its own message id: it
//! is retried and dead-lettered on its own, as a version 2 message.
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
/// Version of a group of submissions.
pub const GROUP_VERSION: i64 = 3;
/// AMQP `type` of a group.
pub const GROUP_TYPE: &str = "moka.submission.v3";
/// Most submissions a group may hold (a reader refuses more: its size comes from outside).
pub const GROUP_MAX: usize = crate::config::GROUP_MAX_MESSAGES;
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
    #[serde(skip_serializing_if = "Option::is_none")]
    sig: Option<String>,
}

/// A group's first line.
#[derive(serde::Serialize, serde::Deserialize)]
struct GroupLine {
    v: i64,
    n: usize,
}

/// The metadata line of one submission in a group, as written.
#[derive(serde::Serialize)]
struct ItemOut<'a> {
    message_id: &'a str,
    received_at: &'a str,
    access_key: &'a str,
    tonce: i64,
    moka_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sig: Option<String>,
    len: usize,
}

/// The metadata line of one submission in a group, as read.
#[derive(serde::Deserialize)]
struct ItemIn {
    message_id: String,
    received_at: String,
    access_key: String,
    tonce: i64,
    moka_id: String,
    #[serde(default)]
    sig: Option<String>,
    len: usize,
}

/// The metadata line, as read. Unknown fields are ignored, so a later minor addition is readable.
#[derive(serde::Deserialize)]
struct LineIn {
    v: i64,
    received_at: String,
    access_key: String,
    tonce: i64,
    moka_id: String,
    #[serde(default)]
    sig: Option<String>,
}

fn sig_out(sig: &Option<[u8; 16]>) -> Option<String> {
    sig.as_ref().map(hex::encode)
}

/// A well-formed `sig`, or none (an unreadable one identifies nothing).
fn sig_in(sig: Option<String>) -> Option<[u8; 16]> {
    let mut out = [0u8; 16];
    hex::decode_to_slice(sig?, &mut out).ok()?;
    Some(out)
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
            sig: sig_out(&self.signature),
        };
        let mut body = Vec::with_capacity(payload.len() + 128 + self.access_key.len() + self.moka_id.len());
        serde_json::to_writer(&mut body, &line).expect("writing JSON to memory cannot fail");
        body.push(b'\n');
        body.extend_from_slice(payload);
        body
    }
}

/// A group's first line (`{"v":3,"n":…}` and its newline) at most, for sizing its body.
const GROUP_LINE_BYTES: usize = 32;
/// An item's metadata line at most, besides its access key and candidate id: the field names,
/// message id, timestamp, tonce, signature digest and length (about 230 bytes).
const ITEM_LINE_BYTES: usize = 256;

/// A group of submissions (version 3): one message for several requests.
pub struct Group;

impl Group {
    /// Properties of a group: persistent, typed, its own fresh message id.
    pub fn properties() -> BasicProperties {
        let mut id = Uuid::encode_buffer();
        let now = Utc::now();
        BasicProperties::default()
            .with_delivery_mode(2)
            .with_type(GROUP_TYPE.into())
            .with_message_id(ShortString::from(&*Uuid::now_v7().hyphenated().encode_lower(&mut id)))
            .with_timestamp(u64::try_from(now.timestamp()).unwrap_or(0))
    }

    /// The body of a group of `items` (metadata and exact payload bytes each). The items are
    /// walked twice, once to size the body, hence `Clone`.
    pub fn body<'a, I>(items: I, n: usize) -> Vec<u8>
    where
        I: IntoIterator<Item = (&'a Meta, &'a [u8])>,
        I::IntoIter: Clone,
    {
        let items = items.into_iter();
        // Sized once: a group grown by doubling was copied over again and again (perf: about a
        // third of the ingress's memmove). An id or key that JSON must escape only costs a
        // reallocation.
        let size = items
            .clone()
            .map(|(m, p)| ITEM_LINE_BYTES + m.access_key.len() + m.moka_id.len() + p.len() + 2)
            .sum::<usize>();
        let mut body = Vec::with_capacity(GROUP_LINE_BYTES + size);
        serde_json::to_writer(&mut body, &GroupLine { v: GROUP_VERSION, n })
            .expect("writing JSON to memory cannot fail");
        body.push(b'\n');
        let mut id = Uuid::encode_buffer();
        for (meta, payload) in items {
            let received_at = meta.received_at.to_rfc3339_opts(SecondsFormat::Micros, true);
            let line = ItemOut {
                message_id: meta.message_id.hyphenated().encode_lower(&mut id),
                received_at: &received_at,
                access_key: &meta.access_key,
                tonce: meta.tonce,
                moka_id: &meta.moka_id,
                sig: sig_out(&meta.signature),
                len: payload.len(),
            };
            serde_json::to_writer(&mut body, &line).expect("writing JSON to memory cannot fail");
            body.push(b'\n');
            body.extend_from_slice(payload);
            body.push(b'\n');
        }
        body
    }

    /// Whether a delivery is a group.
    pub fn is_group(props: &BasicProperties) -> bool {
        props.kind().as_ref().is_some_and(|k| k.as_str() == GROUP_TYPE)
    }

    /// How many submissions a delivery holds (a group's `n`, read from its first line alone;
    /// anything else, or an unreadable group, counts one).
    pub fn count(props: &BasicProperties, body: &[u8]) -> usize {
        if !Self::is_group(props) {
            return 1;
        }
        let line = body.iter().position(|&b| b == b'\n').map(|end| &body[..end]);
        line.and_then(|l| serde_json::from_slice::<GroupLine>(l).ok()).map_or(1, |g| g.n.clamp(1, GROUP_MAX))
    }
}

impl Envelope {
    /// Every submission a delivery holds: those of a group (version 3), or the one of a version 2
    /// or 1 message.
    pub fn read_all(props: &BasicProperties, body: &[u8]) -> Result<Vec<Envelope>, EnvelopeError> {
        if !Group::is_group(props) {
            return Envelope::from_delivery(props, body).map(|e| vec![e]);
        }
        let newline = |from: usize| body[from..].iter().position(|&b| b == b'\n').map(|p| from + p);
        let end = newline(0).ok_or(EnvelopeError::Field("group line"))?;
        let group: GroupLine = serde_json::from_slice(&body[..end]).map_err(|_| EnvelopeError::Field("group line"))?;
        if group.v != GROUP_VERSION {
            return Err(EnvelopeError::Version(group.v));
        }
        if group.n == 0 || group.n > GROUP_MAX {
            return Err(EnvelopeError::Field("n"));
        }
        let mut at = end + 1;
        let mut out = Vec::with_capacity(group.n);
        for _ in 0..group.n {
            let end = newline(at).ok_or(EnvelopeError::Field("item line"))?;
            let item: ItemIn = serde_json::from_slice(&body[at..end]).map_err(|_| EnvelopeError::Field("item line"))?;
            let start = end + 1;
            let stop = start.checked_add(item.len).filter(|s| *s < body.len()).ok_or(EnvelopeError::Field("len"))?;
            if body[stop] != b'\n' {
                return Err(EnvelopeError::Field("len"));
            }
            let meta = Meta {
                message_id: Uuid::parse_str(&item.message_id).map_err(|_| EnvelopeError::Field("message_id"))?,
                received_at: parse_time(&item.received_at).ok_or(EnvelopeError::Field("received_at"))?,
                access_key: item.access_key,
                tonce: item.tonce,
                moka_id: item.moka_id,
                signature: sig_in(item.sig),
            };
            out.push(Envelope { meta, payload: text(&body[start..stop])? });
            at = stop + 1;
        }
        if at != body.len() {
            return Err(EnvelopeError::Field("n"));
        }
        Ok(out)
    }

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
                    signature: sig_in(line.sig),
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
                    signature: None,
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
    fn a_group_keeps_each_submissions_metadata_and_exact_bytes() {
        let a = Meta::new("AK", 1764400000, "a\n", Utc::now()).signed(b"signature-a");
        let b = Meta::new("AK2", 1764400001, "b", Utc::now());
        let (pa, pb) = ("{\"id\":\"a\\n\",\n \"x\": 1}\n".as_bytes(), br#"{"id":"b"}"#.as_slice());
        let body = Group::body([(&a, pa), (&b, pb)], 2);
        let props = Group::properties();
        assert_eq!(Group::count(&props, &body), 2);
        let read = Envelope::read_all(&props, &body).unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!((&read[0].meta, read[0].payload.as_bytes()), (&a, pa));
        assert_eq!((&read[1].meta, read[1].payload.as_bytes()), (&b, pb));
        assert!(read[0].meta.signature.is_some() && read[1].meta.signature.is_none());
        // A version 2 message reads as a group of one; its signature digest travels too.
        let single = Envelope::read_all(&a.properties(), &a.body(pa)).unwrap();
        assert_eq!(single.len(), 1);
        assert_eq!(single[0].meta, a);
        assert_eq!(Group::count(&a.properties(), &a.body(pa)), 1);
    }

    #[test]
    fn a_broken_group_is_refused_not_misread() {
        let a = Meta::new("AK", 1, "a", Utc::now());
        let good = Group::body([(&a, b"{}".as_slice())], 1);
        let props = Group::properties();
        let text = String::from_utf8(good.clone()).unwrap();
        for (what, body) in [
            ("more items announced", text.replacen("\"n\":1", "\"n\":2", 1)),
            ("fewer items announced", text.replacen("\"n\":1", "\"n\":0", 1)),
            ("a length past the end", text.replacen("\"len\":2", "\"len\":99", 1)),
            ("a length that cuts", text.replacen("\"len\":2", "\"len\":1", 1)),
            ("trailing bytes", format!("{text}junk")),
            ("a huge n", text.replacen("\"n\":1", "\"n\":99999999", 1)),
        ] {
            assert!(Envelope::read_all(&props, body.as_bytes()).is_err(), "{what}");
        }
        assert!(Envelope::read_all(&props, &good).is_ok());
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
