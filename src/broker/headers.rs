//! The AMQP headers of this service, in one place: their names, and a typed read and write of the
//! failure and retry story that a message carries on its way back (the submission itself carries
//! no headers, see [`super::envelope`]). The worker writes them ([`retry_headers`],
//! [`dead_letter_headers`]) and the `dlq` commands read them ([`DeadHeaders::read`]), through the
//! same names and the same types.
//!
//! | header | written by | meaning |
//! |---|---|---|
//! | `x-retry-count` | worker, on a retry | retries through the delay queues so far |
//! | `x-first-failed-at`, `x-last-failed-at` | worker | RFC 3339, milliseconds |
//! | `x-last-error-kind`, `x-last-error` | worker, on a retry | the failure that caused it |
//! | `x-error-kind`, `x-error-message`, `x-error-fields` | worker, on a dead letter | why (fields: JSON `[{field, problem}]`) |
//! | `x-attempts` | worker, on a dead letter | processing attempts, the last one included |
//! | `x-failed-by` | worker, on a dead letter | `host:pid` |
//! | `x-replayed-at` | `dlq replay` | when an operator sent it back |
//! | `x-delivery-count`, `x-death`, `x-first-death-*` | RabbitMQ | redeliveries of a quorum queue; broker dead-lettering |

use chrono::{DateTime, SecondsFormat, Utc};
use lapin::{
    types::{AMQPValue, FieldTable, ShortString},
    BasicProperties,
};

pub const RETRY_COUNT: &str = "x-retry-count";
pub const FIRST_FAILED_AT: &str = "x-first-failed-at";
pub const LAST_FAILED_AT: &str = "x-last-failed-at";
pub const LAST_ERROR_KIND: &str = "x-last-error-kind";
pub const LAST_ERROR: &str = "x-last-error";
pub const ERROR_KIND: &str = "x-error-kind";
pub const ERROR_MESSAGE: &str = "x-error-message";
pub const ERROR_FIELDS: &str = "x-error-fields";
pub const ATTEMPTS: &str = "x-attempts";
pub const FAILED_BY: &str = "x-failed-by";
pub const REPLAYED_AT: &str = "x-replayed-at";
/// Set by a quorum queue on a redelivered copy; absent on the first delivery.
pub const DELIVERY_COUNT: &str = "x-delivery-count";
/// Set by RabbitMQ when it dead-letters a message itself (the delivery limit).
pub const DEATH: &str = "x-death";

/// Version 1 of the envelope carried its metadata in these headers (still read).
pub mod v1 {
    pub const ENVELOPE_VERSION: &str = "x-envelope-version";
    pub const RECEIVED_AT: &str = "x-received-at";
    pub const ACCESS_KEY: &str = "x-access-key";
    pub const TONCE: &str = "x-tonce";
    pub const MOKA_ID: &str = "x-moka-id";
}

/// Headers a replay removes: the failure's story starts afresh.
pub const FAILURE_HEADERS: &[&str] = &[
    ERROR_KIND,
    ERROR_MESSAGE,
    ERROR_FIELDS,
    ATTEMPTS,
    FAILED_BY,
    FIRST_FAILED_AT,
    LAST_FAILED_AT,
    LAST_ERROR,
    LAST_ERROR_KIND,
    RETRY_COUNT,
    DELIVERY_COUNT,
    DEATH,
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
];

/// A header's text value.
pub fn text(h: &FieldTable, name: &str) -> Option<String> {
    match h.inner().get(&ShortString::from(name))? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// A header's integer value, whatever integer width the broker or a client chose.
pub fn int(h: &FieldTable, name: &str) -> Option<i64> {
    match h.inner().get(&ShortString::from(name))? {
        AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongLongInt(v) => Some(*v),
        _ => None,
    }
}

/// A count header: absent or negative is 0, more than a `u32` holds is `u32::MAX` (headers come
/// from outside: a forged count must neither wrap nor panic).
fn count(h: &FieldTable, name: &str) -> u32 {
    int(h, name).map_or(0, |v| u32::try_from(v.max(0)).unwrap_or(u32::MAX))
}

fn text_value(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.to_owned().into())
}

fn count_value(n: u32) -> AMQPValue {
    AMQPValue::LongInt(i32::try_from(n).unwrap_or(i32::MAX))
}

/// Now, as the failure headers write it.
pub fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// What a message's headers say about its earlier attempts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// Retries through the delay queues so far (`x-retry-count`).
    pub retries: u32,
    /// Returns of this copy to the queue: crash, hang, lost connection (`x-delivery-count`).
    pub redeliveries: u32,
    /// When it first failed, if it did.
    pub first_failed_at: Option<String>,
    /// Sent back by an operator (`x-replayed-at`).
    pub replayed: bool,
}

impl History {
    pub fn read(props: &BasicProperties) -> History {
        let Some(h) = props.headers().as_ref() else { return History::default() };
        History {
            retries: count(h, RETRY_COUNT),
            redeliveries: count(h, DELIVERY_COUNT),
            first_failed_at: text(h, FIRST_FAILED_AT),
            replayed: text(h, REPLAYED_AT).is_some(),
        }
    }

    /// Processing attempts so far, this one included.
    pub fn attempts(&self) -> u32 {
        self.retries.saturating_add(self.redeliveries).saturating_add(1)
    }
}

/// The original headers for a move to a delay queue: one more retry, and the failure that caused
/// it. The quorum queue's redelivery count belongs to the old copy and is not carried over.
pub fn retry_headers(original: &BasicProperties, history: &History, kind: &str, message: &str) -> FieldTable {
    let mut h = FieldTable::default();
    if let Some(old) = original.headers() {
        for (k, v) in old.inner().iter().filter(|(k, _)| k.as_str() != DELIVERY_COUNT) {
            h.insert(k.clone(), v.clone());
        }
    }
    let now = now();
    h.insert(FIRST_FAILED_AT.into(), text_value(history.first_failed_at.as_deref().unwrap_or(&now)));
    h.insert(LAST_FAILED_AT.into(), text_value(&now));
    h.insert(RETRY_COUNT.into(), count_value(history.retries.saturating_add(1)));
    h.insert(LAST_ERROR_KIND.into(), text_value(kind));
    h.insert(LAST_ERROR.into(), text_value(message));
    h
}

/// Why the worker dead-letters a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter<'a> {
    pub kind: &'a str,
    pub message: &'a str,
    /// JSON `[{field, problem}]`, for validation failures.
    pub fields: Option<String>,
    pub attempts: u32,
    /// The worker (`host:pid`) that gave up.
    pub failed_by: &'a str,
}

/// The original headers plus the dead letter's.
pub fn dead_letter_headers(original: &BasicProperties, history: &History, dead: &DeadLetter<'_>) -> FieldTable {
    let mut h: FieldTable = original.headers().clone().unwrap_or_default();
    let now = now();
    h.insert(ERROR_KIND.into(), text_value(dead.kind));
    h.insert(ERROR_MESSAGE.into(), text_value(dead.message));
    if let Some(fields) = &dead.fields {
        h.insert(ERROR_FIELDS.into(), text_value(fields));
    }
    h.insert(ATTEMPTS.into(), count_value(dead.attempts));
    h.insert(FIRST_FAILED_AT.into(), text_value(history.first_failed_at.as_deref().unwrap_or(&now)));
    h.insert(LAST_FAILED_AT.into(), text_value(&now));
    h.insert(FAILED_BY.into(), text_value(dead.failed_by));
    h
}

/// The original headers without the failure story, marked with `x-replayed-at`.
pub fn replay_headers(original: &BasicProperties) -> FieldTable {
    let mut h = FieldTable::default();
    if let Some(old) = original.headers() {
        for (k, v) in old.inner().iter().filter(|(k, _)| !FAILURE_HEADERS.contains(&k.as_str())) {
            h.insert(k.clone(), v.clone());
        }
    }
    h.insert(REPLAYED_AT.into(), text_value(&now()));
    h
}

/// A dead message's story as its headers tell it: the worker's `x-error-*`, or the broker's
/// `x-death` when the broker dead-lettered it (delivery limit).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadHeaders {
    /// `x-error-kind`, else the broker's reason (`delivery_limit`, …).
    pub kind: Option<String>,
    pub message: Option<String>,
    pub fields: Option<String>,
    /// The last transient error, when retries ran out.
    pub last_error: Option<String>,
    /// `x-attempts`, else counted from the retry and redelivery counts.
    pub attempts: u32,
    /// `x-last-failed-at`, else the broker's dead-lettering time.
    pub failed_at: Option<String>,
    pub first_failed_at: Option<String>,
    pub failed_by: Option<String>,
}

impl DeadHeaders {
    pub fn read(props: &BasicProperties) -> DeadHeaders {
        let empty = FieldTable::default();
        let h = props.headers().as_ref().unwrap_or(&empty);
        let death = first_death(h);
        let death_time = death.as_ref().and_then(|d| match d.inner().get(&ShortString::from("time")) {
            Some(AMQPValue::Timestamp(t)) => DateTime::<Utc>::from_timestamp(i64::try_from(*t).ok()?, 0)
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
            _ => None,
        });
        let attempts = match int(h, ATTEMPTS) {
            Some(_) => count(h, ATTEMPTS),
            None => History::read(props).attempts(),
        };
        DeadHeaders {
            kind: text(h, ERROR_KIND).or_else(|| death.as_ref().and_then(|d| text(d, "reason"))),
            message: text(h, ERROR_MESSAGE),
            fields: text(h, ERROR_FIELDS),
            last_error: text(h, LAST_ERROR),
            attempts,
            failed_at: text(h, LAST_FAILED_AT).or(death_time),
            first_failed_at: text(h, FIRST_FAILED_AT),
            failed_by: text(h, FAILED_BY),
        }
    }
}

fn first_death(h: &FieldTable) -> Option<FieldTable> {
    match h.inner().get(&ShortString::from(DEATH))? {
        AMQPValue::FieldArray(a) => match a.as_slice().first()? {
            AMQPValue::FieldTable(t) => Some(t.clone()),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(h: FieldTable) -> BasicProperties {
        BasicProperties::default().with_headers(h)
    }

    #[test]
    fn what_the_worker_writes_the_dlq_reads_back() {
        let fresh = BasicProperties::default();
        let history = History::read(&fresh);
        assert_eq!((history.attempts(), history.retries), (1, 0));
        let retried = with(retry_headers(&fresh, &history, "attachment", "503 from files.example"));
        let history = History::read(&retried);
        assert_eq!((history.retries, history.attempts()), (1, 2));
        let first = history.first_failed_at.clone().expect("first failure recorded");
        let dead = DeadLetter {
            kind: "attachment",
            message: "gave up after 1 retries: 503",
            fields: None,
            attempts: history.attempts(),
            failed_by: "host:1",
        };
        let read = DeadHeaders::read(&with(dead_letter_headers(&retried, &history, &dead)));
        assert_eq!(read.kind.as_deref(), Some("attachment"));
        assert_eq!(read.message.as_deref(), Some("gave up after 1 retries: 503"));
        assert_eq!(read.last_error.as_deref(), Some("503 from files.example"));
        assert_eq!(read.attempts, 2);
        assert_eq!(read.first_failed_at, Some(first));
        assert_eq!(read.failed_by.as_deref(), Some("host:1"));
        let replayed = with(replay_headers(&with(dead_letter_headers(&retried, &history, &dead))));
        assert_eq!(History::read(&replayed), History { replayed: true, ..History::default() });
    }

    #[test]
    fn counts_from_outside_neither_wrap_nor_panic() {
        let mut h = FieldTable::default();
        h.insert(RETRY_COUNT.into(), AMQPValue::LongLongInt(-5));
        h.insert(DELIVERY_COUNT.into(), AMQPValue::LongLongInt(i64::MAX));
        let history = History::read(&with(h));
        assert_eq!((history.retries, history.redeliveries, history.attempts()), (0, u32::MAX, u32::MAX));
        let again = History::read(&with(retry_headers(&BasicProperties::default(), &history, "database", "x")));
        assert_eq!(again.retries, 1);
        let mut h = FieldTable::default();
        h.insert(RETRY_COUNT.into(), AMQPValue::LongLongInt(i64::from(u32::MAX)));
        let max = History { retries: u32::MAX, ..History::default() };
        assert_eq!(History::read(&with(h)), max);
        let written = retry_headers(&BasicProperties::default(), &max, "database", "x");
        assert_eq!(int(&written, RETRY_COUNT), Some(i64::from(i32::MAX)));
    }
}
