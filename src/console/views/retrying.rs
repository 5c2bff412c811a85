//! Retrying: what waits in each delay queue, when it comes back, and a way to park it.

use maud::{html, Markup};

use super::{candidate_href, opt_time, page, Viewer};
use crate::{console::queues::QueueCount, dlq::Waiting};

/// How many waiting messages of each delay queue the page shows.
pub const SHOWN: usize = 20;

/// One delay queue: its counts and its first waiting messages (or why they could not be read).
pub struct DelayQueue {
    pub count: QueueCount,
    pub waiting: Result<Vec<Waiting>, String>,
}

pub fn render(viewer: &Viewer<'_>, queues: &Result<Vec<DelayQueue>, String>, notice: Option<&str>) -> Markup {
    let body = html! {
        @if let Some(n) = notice { p.notice #notice { (n) } }
        p.muted { "Messages that failed for a moment wait here, then go back to be processed. Parking one sends it to the dead-letter queue now, with its reason, until an operator replays it." }
        @match queues {
            Err(why) => p.error { "The broker cannot be read: " (why) },
            Ok(queues) => {
                @for q in queues {
                    div.card data-queue=(q.count.name) {
                        h2 { (q.count.role.label()) @if let Some(d) = q.count.delay { " · " (humantime::format_duration(d)) } }
                        p { code { (q.count.name) } " · " strong.depth { (q.count.messages) } " waiting" }
                        @match &q.waiting {
                            Err(why) => p.error { (why) },
                            Ok(waiting) if waiting.is_empty() => {},
                            Ok(waiting) => {
                                table.waiting {
                                    thead { tr { th { "Candidate" } th.num { "Retry" } th { "Last error" } th { "Next retry" } @if viewer.can_act() { th {} } } }
                                    tbody {
                                        @for w in waiting {
                                            tr data-id=(w.message.message_id) {
                                                td { a href=(candidate_href(&w.message.moka_id)) { (w.message.moka_id) } }
                                                td.num { (w.retries) }
                                                td.msg { @if let Some(k) = &w.last_error_kind { span.badge.dead { (k) } " " } (w.last_error.as_deref().unwrap_or("")) }
                                                td { (opt_time(&w.next_retry_at)) }
                                                @if viewer.can_act() {
                                                    td {
                                                        form method="post" action="/retrying/park" {
                                                            input type="hidden" name="csrf" value=(viewer.csrf);
                                                            input type="hidden" name="queue" value=(q.count.name);
                                                            input type="hidden" name="id" value=(w.message.message_id);
                                                            button.secondary type="submit" { "Park" }
                                                        }
                                                    }
                                                }
                                            }
                                        }
                                    }
                                }
                                @if (q.count.messages as usize) > waiting.len() { p.muted { "The first " (waiting.len()) " are shown." } }
                            }
                        }
                    }
                }
            }
        }
    };
    page("Retrying", "/retrying", viewer, None, body)
}
