//! The overview: queues, throughput by outcome, the latest dead letters, the roles' readiness.

use maud::{html, Markup};

use super::{candidate_href, dead_href, page, time, Viewer};
use crate::console::{
    chart,
    queries::{Bucket, DeadRow},
    queues::{QueueCount, Role},
};

/// Everything the overview shows.
pub struct Overview {
    /// The queues, or why the broker could not be read.
    pub queues: Result<Vec<QueueCount>, String>,
    pub per_minute: Vec<Bucket>,
    pub per_hour: Vec<Bucket>,
    pub latest_dead: Vec<DeadRow>,
    /// (role, URL, answer): `Ok(())` ready, `Err(why)` not.
    pub readiness: Vec<(&'static str, String, Result<(), String>)>,
}

pub fn render(viewer: &Viewer<'_>, o: &Overview) -> Markup {
    let body = html! {
        h2 { "Queues" }
        @match &o.queues {
            Err(why) => p.error #broker-error { "The broker cannot be read: " (why) },
            Ok(queues) => {
                @let total = |role: Role| queues.iter().filter(|q| q.role == role).map(|q| q.messages).sum::<u32>();
                @let consumers = |role: Role| queues.iter().filter(|q| q.role == role).map(|q| q.consumers).sum::<u32>();
                div.grid {
                    div.stat #depth-submissions { div.n { (total(Role::Submissions)) } div.l { "waiting submissions · " (consumers(Role::Submissions)) " consumers" } }
                    div.stat #depth-retry { div.n { (total(Role::Retry)) } div.l { "submissions waiting to retry" } }
                    div.stat #depth-downloads { div.n { (total(Role::Downloads)) } div.l { "download jobs · " (consumers(Role::Downloads)) " consumers" } }
                    div.stat #depth-download-retry { div.n { (total(Role::DownloadRetry)) } div.l { "downloads waiting to retry" } }
                    div.stat #depth-dead { div.n { (total(Role::Dead)) } div.l { a href="/dead-letters" { "dead letters" } } }
                }
                div.card {
                    table #queues {
                        thead { tr { th { "Queue" } th { "Role" } th.num { "Messages" } th.num { "Consumers" } } }
                        tbody {
                            @for q in queues {
                                tr data-queue=(q.name) {
                                    td { code { (q.name) } }
                                    td { (q.role.label()) @if let Some(d) = q.delay { " " (humantime::format_duration(d)) } }
                                    td.num { (q.messages) }
                                    td.num { (q.consumers) }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Submissions by outcome" }
        div.card {
            (chart::stacked("Per minute, last hour", &o.per_minute, |b| b.start.map(|t| t.format("%H:%M").to_string()).unwrap_or_default(), 10))
            (chart::stacked("Per hour, last 7 days", &o.per_hour, |b| b.start.map(|t| t.format("%a %Hh").to_string()).unwrap_or_default(), 24))
        }
        div.two {
            div {
                h2 { "Latest dead letters" }
                div.card {
                    table #latest-dead {
                        thead { tr { th { "Died" } th { "Candidate" } th { "Reason" } } }
                        tbody {
                            @for d in &o.latest_dead {
                                tr {
                                    td { a href=(dead_href(&d.message_id)) { (time(&d.died_at)) } }
                                    td { a href=(candidate_href(&d.moka_id)) { (d.moka_id) } " " span.muted { (d.name.as_deref().unwrap_or("")) } }
                                    td { span.badge.dead { (d.kind) } }
                                }
                            }
                        }
                    }
                    @if o.latest_dead.is_empty() { p.muted { "None: nothing waits in the dead-letter queue." } }
                }
            }
            div {
                h2 { "Roles" }
                div.card {
                    table #readiness {
                        thead { tr { th { "Role" } th { "Readiness" } } }
                        tbody {
                            @for (role, url, answer) in &o.readiness {
                                tr {
                                    td { (role) " " span.muted { code { (url) } } }
                                    td { @match answer { Ok(()) => span.badge.ready { "ready" }, Err(why) => { span.badge.down { "not ready" } " " span.muted { (why) } } } }
                                }
                            }
                        }
                    }
                }
            }
        }
        p.muted { "This page reloads itself every 5 seconds." }
    };
    page("Overview", "/", viewer, Some(5), body)
}
