//! Reading a dead message's story off its properties and body: the worker's `x-error-*`
//! headers, or the broker's `x-death` when the broker dead-lettered it (delivery limit). The
//! worker indexes what this reads when a message dies; `dlq` and the console show it.

use chrono::SecondsFormat;
use lapin::BasicProperties;

use super::{download::Job, envelope::Envelope, headers::DeadHeaders};
use crate::domain::dead_letter::{DeadMessage, Source};

/// The dead message `body` with `props`, as an operator reads it.
pub fn describe(props: &BasicProperties, body: &[u8]) -> DeadMessage {
    let story = DeadHeaders::read(props);
    // A message that is not a readable envelope is shown as it is; a download shows its link.
    let envelope = Envelope::from_delivery(props, body).ok();
    let meta = envelope.as_ref().map(|e| &e.meta);
    let is_job = Job::is_job(props);
    let payload = match &envelope {
        Some(e) => e.payload.clone(),
        None => String::from_utf8_lossy(body).into_owned(),
    };
    let job_candidate =
        || is_job.then(|| Job::from_body(body).ok()).flatten().and_then(|j| j.links.first().map(|l| l.moka_id.clone()));
    let name =
        serde_json::from_str::<serde_json::Value>(&payload).ok().and_then(|v| v["name"].as_str().map(str::to_owned));
    let reason = story.kind.unwrap_or_else(|| "unknown".into());
    let error = story
        .message
        .or_else(|| story.last_error.map(|e| format!("{reason}; last error: {e}")))
        .unwrap_or_else(|| match reason.as_str() {
            "delivery_limit" => "delivered too many times without completing: it crashes or hangs the worker".into(),
            other => format!("dead-lettered by the broker ({other})"),
        });
    DeadMessage {
        message_id: props.message_id().as_ref().map(|m| m.to_string()).unwrap_or_default(),
        moka_id: meta.map(|m| m.moka_id.clone()).or_else(job_candidate).unwrap_or_default(),
        name,
        attempts: i64::from(story.attempts),
        failed_at: story.failed_at,
        first_failed_at: story.first_failed_at,
        failed_by: story.failed_by,
        received_at: meta.map(|m| m.received_at.to_rfc3339_opts(SecondsFormat::Micros, true)),
        tonce: meta.map(|m| m.tonce),
        reason,
        error,
        payload,
        source: if is_job { Source::Download } else { Source::Submission },
        fields: story.fields,
    }
}
