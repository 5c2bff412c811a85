//! Dead-lettering by the worker: the original message (body and properties unchanged) is
//! published to the dead-letter exchange with headers that say why.
//!
//! | header | meaning |
//! |---|---|
//! | `x-error-kind` | `envelope`, `validation`, `database`, `attachment` (the broker's own dead-lettering shows `x-death` instead, with reason `delivery_limit`) |
//! | `x-error-message` | what went wrong, naming every bad field |
//! | `x-error-fields` | JSON array of `{field, problem}` for validation failures |
//! | `x-attempts` | deliveries so far |
//! | `x-first-failed-at`, `x-last-failed-at` | RFC 3339 |
//! | `x-failed-by` | the worker (`host:pid`) that gave up |

use chrono::{SecondsFormat, Utc};
use lapin::{
    types::{AMQPValue, FieldTable},
    BasicProperties,
};

use super::failure::Failure;
use crate::broker::envelope::header_str;

/// This process, as named in `x-failed-by`.
pub fn worker_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    format!("{host}:{}", std::process::id())
}

/// The original properties plus the failure headers.
pub fn properties(original: &BasicProperties, failure: &Failure, attempts: i32, worker: &str) -> BasicProperties {
    let mut h: FieldTable = original.headers().clone().unwrap_or_default();
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    let first = header_str(&h, "x-first-failed-at").unwrap_or_else(|| now.clone());
    let text = |s: &str| AMQPValue::LongString(s.to_owned().into());
    h.insert("x-error-kind".into(), text(failure.kind.as_str()));
    h.insert("x-error-message".into(), text(&failure.message));
    if !failure.fields.is_empty() {
        h.insert("x-error-fields".into(), text(&serde_json::to_string(&failure.fields).expect("serializes")));
    }
    h.insert("x-attempts".into(), AMQPValue::LongInt(attempts));
    h.insert("x-first-failed-at".into(), text(&first));
    h.insert("x-last-failed-at".into(), text(&now));
    h.insert("x-failed-by".into(), text(worker));
    original.clone().with_headers(h)
}
