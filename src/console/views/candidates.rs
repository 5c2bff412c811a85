//! Candidates: the search, and one candidate's whole story: the stored row beside the raw payload
//! that produced it, warnings, educations, experiences, attachments, and the timeline of every
//! submission with its dead letters.

use maud::{html, Markup};

use super::{candidate_href, dead_href, page, time, Viewer};
use crate::console::queries::{CandidateDetail, CandidateHit, DeadRow, Submission};

pub fn search(viewer: &Viewer<'_>, q: &str, hits: &[CandidateHit]) -> Markup {
    let body = html! {
        form.filters.card method="get" action="/candidates" #search {
            label { "Moka id, name, phone or email (the beginning is enough)"
                input type="search" name="q" value=(q) size="32" autofocus; }
            button type="submit" { "Search" }
        }
        @if !q.trim().is_empty() {
            div.card {
                table #candidates {
                    thead { tr { th { "Moka id" } th { "Name" } th.wide { "Phone" } th.wide { "Email" } th.wide { "Job" } th { "Updated" } } }
                    tbody {
                        @for c in hits {
                            tr {
                                td { a href=(candidate_href(&c.moka_id)) { (c.moka_id) } }
                                td { (c.name) }
                                td.wide { (c.phone) }
                                td.wide { (c.email) }
                                td.wide { (c.job_title) }
                                td { (time(&c.updated_at)) }
                            }
                        }
                    }
                }
                @if hits.is_empty() { p.muted #no-hits { "No candidate starts with that." } }
            }
        }
    };
    page("Candidates", "/candidates", viewer, None, body)
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// A column's value as text (strings without their quotes).
fn cell(v: Option<&serde_json::Value>) -> String {
    match v {
        None | Some(serde_json::Value::Null) => "—".into(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// The columns shown in the "stored" table, in order (the rest have sections of their own).
const COLUMNS: &[&str] = &[
    "moka_id",
    "name",
    "phone",
    "phone_raw",
    "email",
    "gender",
    "birth_year",
    "source",
    "academic_degree",
    "academic_degree_raw",
    "married",
    "job_title",
    "operator_name",
    "operator_email",
    "operator_phone",
    "resume_url",
    "interview_feedback_url",
    "offer_attachment_urls",
    "offer_info",
    "source_tonce",
    "source_received_at",
    "last_message_id",
    "created_at",
    "updated_at",
];

pub fn detail(
    viewer: &Viewer<'_>,
    moka_id: &str,
    c: Option<&CandidateDetail>,
    timeline: &[Submission],
    dead: &[DeadRow],
) -> Markup {
    let title = match c.and_then(|c| c.row.get("name")).and_then(|n| n.as_str()) {
        Some(name) => format!("{name} ({moka_id})"),
        None => format!("Candidate {moka_id}"),
    };
    let body = html! {
        @match c {
            None => p.notice #not-stored { "No candidate " code { (moka_id) } " is stored. Its submissions, if any, are below." },
            Some(c) => {
                div.two {
                    div.card {
                        h2 { "Stored (normalized)" }
                        dl.kv #stored {
                            @for col in COLUMNS { dt { (col) } dd data-column=(col) { (cell(c.row.get(*col))) } }
                        }
                    }
                    div.card {
                        h2 { "Raw payload of the submission applied last" }
                        pre #raw-payload { (c.row.get("raw_payload").map(pretty).unwrap_or_default()) }
                    }
                }
                div.card {
                    h2 { "Warnings" }
                    @let warnings = c.row.get("warnings").and_then(|w| w.as_array()).cloned().unwrap_or_default();
                    @if warnings.is_empty() { p.muted { "None: everything was understood." } }
                    @else {
                        table #warnings {
                            thead { tr { th { "Field" } th { "Message" } } }
                            tbody { @for w in &warnings { tr { td { code { (cell(w.get("field"))) } } td { (cell(w.get("message"))) } } } }
                        }
                    }
                }
                div.two {
                    div.card {
                        h2 { "Education" }
                        @if c.educations.is_empty() { p.muted { "None." } }
                        @for e in &c.educations {
                            p { strong { (cell(e.get("school"))) } " · " (cell(e.get("speciality"))) " · " (cell(e.get("academic_degree")))
                                br; span.muted { (cell(e.get("start_date"))) " – " @if e["is_current"] == true { "now" } @else { (cell(e.get("end_date"))) }
                                " (as written: " (cell(e.get("start_raw"))) " – " (cell(e.get("end_raw"))) ")" } }
                        }
                    }
                    div.card {
                        h2 { "Experience" }
                        @if c.experiences.is_empty() { p.muted { "None." } }
                        @for e in &c.experiences {
                            p { strong { (cell(e.get("company"))) } " · " (cell(e.get("title")))
                                br; span.muted { (cell(e.get("start_date"))) " – " @if e["is_current"] == true { "now" } @else { (cell(e.get("end_date"))) }
                                " (as written: " (cell(e.get("start_raw"))) " – " (cell(e.get("end_raw"))) ")" } }
                        }
                    }
                }
                div.card {
                    h2 { "Attachments" }
                    @if c.attachments.is_empty() { p.muted { "None." } }
                    @else {
                        table #attachments {
                            thead { tr { th { "Kind" } th { "Status" } th { "File" } th.num { "Size" } th.wide { "Type" } th { "Link" } } }
                            tbody {
                                @for a in &c.attachments {
                                    tr {
                                        td { (a.kind) }
                                        td { span class=(format!("badge {}", a.status)) { (a.status) } @if let Some(e) = &a.error { " " span.muted { (e) } } }
                                        td { @match (&a.sha256, a.status.as_str()) {
                                            (Some(sha), "stored") => a href=(format!("{}/files/{}", candidate_href(moka_id), sha)) download { (a.file_name.as_deref().unwrap_or("download")) },
                                            _ => (a.file_name.as_deref().unwrap_or("—")),
                                        } }
                                        td.num { (a.size_bytes.map(|s| s.to_string()).unwrap_or_else(|| "—".into())) }
                                        td.wide { (a.content_type.as_deref().unwrap_or("—")) }
                                        td.msg { code { (a.url) } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        div.card {
            h2 { "Timeline" }
            table #timeline {
                thead { tr { th { "Received" } th { "Outcome" } th.num { "Tonce" } th.wide { "Processed" } th.num { "Attempts" } th { "Error" } } }
                tbody {
                    @for s in timeline {
                        tr data-message=(s.message_id) {
                            td { (time(&s.received_at)) }
                            td { span class=(format!("badge {}", s.outcome)) data-outcome=(s.outcome) { (s.outcome) } }
                            td.num { (s.tonce) }
                            td.wide { (time(&s.processed_at)) }
                            td.num { (s.attempts) }
                            td.msg { @if let Some(e) = &s.error { (cell(e.get("kind"))) ": " (cell(e.get("message"))) } }
                        }
                    }
                }
            }
            @if timeline.is_empty() { p.muted { "No submission of this candidate was processed." } }
        }
        div.card {
            h2 { "Dead letters" }
            table #candidate-dead {
                thead { tr { th { "Died" } th { "Reason" } th { "Error" } th { "State" } } }
                tbody {
                    @for d in dead {
                        tr {
                            td { a href=(dead_href(&d.message_id)) { (time(&d.died_at)) } }
                            td { span.badge.dead { (d.kind) } }
                            td.msg { (d.message) }
                            td { span class=(format!("badge {}", d.state)) { (d.state) } }
                        }
                    }
                }
            }
            @if dead.is_empty() { p.muted { "None." } }
        }
    };
    page(&title, "/candidates", viewer, None, body)
}
