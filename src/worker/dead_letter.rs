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

use lapin::BasicProperties;

use super::{failure::Failure, Received};
use crate::broker::headers::{self, DeadLetter};

/// This process, as named in `x-failed-by`.
pub fn worker_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    format!("{host}:{}", std::process::id())
}

/// The original properties plus the failure headers (see [`crate::broker::headers`]).
pub(super) fn properties(received: &Received<'_>, failure: &Failure, attempts: i32, worker: &str) -> BasicProperties {
    let fields =
        (!failure.fields.is_empty()).then(|| serde_json::to_string(&failure.fields).expect("field errors serialize"));
    let dead = DeadLetter {
        kind: failure.kind.as_str(),
        message: &failure.message,
        fields,
        attempts: attempts.unsigned_abs(),
        failed_by: worker,
    };
    let original = &received.delivery.properties;
    original.clone().with_headers(headers::dead_letter_headers(original, &received.history, &dead))
}
