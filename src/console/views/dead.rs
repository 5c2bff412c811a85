//! The dead letters: the filtered, paged list with its counts by cause; one dead letter; the
//! confirmation of a replay or purge, which states how many messages it will touch.

use maud::{html, Markup};

use super::{candidate_href, dead_href, hidden, link, opt_time, page, time, Viewer};
use crate::console::queries::{DeadDetail, DeadFilter, DeadRow, PAGE_SIZE};

/// The reason kinds offered in the filter.
const KINDS: &[&str] = &["validation", "envelope", "database", "attachment", "delivery_limit"];

/// What the list page shows.
pub struct List<'a> {
    pub filter: &'a DeadFilter,
    pub rows: &'a [DeadRow],
    pub total: i64,
    pub causes: &'a [(String, Option<String>, i64)],
    /// Messages in the dead-letter queue (the broker's count), if it could be read.
    pub queue_depth: Option<u32>,
    /// Rows the index says are in the queue.
    pub indexed: i64,
}

fn state_badge(state: &str) -> Markup {
    html! { span class=(format!("badge {state}")) { (state) } }
}

pub fn list(viewer: &Viewer<'_>, l: &List<'_>) -> Markup {
    let f = l.filter;
    let pairs = f.pairs();
    let selectable = viewer.can_act() && f.in_queue();
    let page_link = |n: i64| {
        let mut p = pairs.clone();
        p.push(("page", n.to_string()));
        link("/dead-letters", &p)
    };
    let (prev, next) = (page_link(f.page - 1), page_link(f.page + 1));
    let pages = ((l.total + PAGE_SIZE - 1) / PAGE_SIZE).max(1);
    let body = html! {
        form.filters.card method="get" action="/dead-letters" #filters {
            label { "Reason" select name="kind" {
                option value="" { "any" }
                @for k in KINDS { option value=(k) selected[f.kind == *k] { (k) } }
                @if !f.kind.is_empty() && !KINDS.contains(&f.kind.as_str()) { option value=(f.kind) selected { (f.kind) } }
            } }
            label { "Field" input type="text" name="field" value=(f.field) size="10"; }
            label { "Candidate id" input type="text" name="candidate" value=(f.candidate) size="12"; }
            label { "Error text" input type="search" name="q" value=(f.q) size="16"; }
            label { "Died" select name="window" {
                @for (v, label) in [("", "any time"), ("hour", "last hour"), ("day", "last day"), ("week", "last week"), ("custom", "between…")] {
                    option value=(v) selected[f.window == v] { (label) }
                }
            } }
            label { "From (UTC)" input type="datetime-local" name="from" value=(f.from); }
            label { "To (UTC)" input type="datetime-local" name="to" value=(f.to); }
            label { "State" select name="state" {
                @for (v, label) in [("", "in the queue"), ("dead", "dead"), ("parked", "parked"), ("replayed", "replayed"), ("purged", "purged")] {
                    option value=(v) selected[f.state == v] { (label) }
                }
            } }
            button type="submit" { "Filter" }
            a href="/dead-letters" { "Clear" }
        }
        div.two {
            div.card {
                h2 { "By cause" }
                table #causes {
                    thead { tr { th { "Reason" } th { "Field" } th.num { "Messages" } } }
                    tbody {
                        @for (kind, field, n) in l.causes {
                            @let narrowed = DeadFilter { kind: kind.clone(), field: field.clone().unwrap_or_default(), page: 0, ..f.clone() };
                            tr {
                                td { a href=(link("/dead-letters", &narrowed.pairs())) { (kind) } }
                                td { (field.as_deref().unwrap_or("—")) }
                                td.num { (n) }
                            }
                        }
                    }
                }
            }
            div.card {
                h2 { "Queue and index" }
                p {
                    "The dead-letter queue holds " strong #queue-depth { (l.queue_depth.map(|d| d.to_string()).unwrap_or_else(|| "?".into())) }
                    " messages; the index lists " strong #indexed { (l.indexed) } " as in the queue."
                }
                @if viewer.can_act() {
                    form method="post" action="/dead-letters/reindex" {
                        input type="hidden" name="csrf" value=(viewer.csrf);
                        button.secondary type="submit" { "Re-index from the queue" }
                    }
                }
            }
        }
        form method="post" action="/dead-letters/confirm" #dead-form {
            input type="hidden" name="csrf" value=(viewer.csrf);
            (hidden(&pairs))
            div.card {
                p #match-count { strong { (l.total) } " dead letters match." }
                @if selectable {
                    div.actions {
                        button type="submit" name="do" value="replay-selected" #replay-selected { "Replay selected" }
                        button.danger type="submit" name="do" value="purge-selected" #purge-selected { "Purge selected" }
                        button.secondary type="submit" name="do" value="replay-all" #replay-all { "Replay all " (l.total) " that match" }
                        button.secondary type="submit" name="do" value="purge-all" #purge-all { "Purge all " (l.total) " that match" }
                    }
                }
                table #dead-letters {
                    thead { tr {
                        @if selectable { th { input type="checkbox" #select-all title="select all on this page"; } }
                        th { "Died" } th { "Candidate" } th.wide { "Name" } th { "Reason" } th { "Error" } th.num.wide { "Attempts" } th { "State" }
                    } }
                    tbody {
                        @for d in l.rows {
                            tr data-id=(d.message_id) {
                                @if selectable { td { input type="checkbox" name="id" value=(d.message_id); } }
                                td { a href=(dead_href(&d.message_id)) { (time(&d.died_at)) } }
                                td { a href=(candidate_href(&d.moka_id)) { (d.moka_id) } }
                                td.wide { (d.name.as_deref().unwrap_or("")) }
                                td { span.badge.dead { (d.kind) } @if d.source == "download" { " " span.muted { "download" } } }
                                td.msg { (d.message) }
                                td.num.wide { (d.attempts) }
                                td { (state_badge(&d.state)) }
                            }
                        }
                    }
                }
                @if l.rows.is_empty() { p.muted { "No dead letter matches." } }
                div.pager {
                    @if f.page > 0 { a href=(prev) { "← Newer" } }
                    span.muted { "Page " (f.page + 1) " of " (pages) }
                    @if (f.page + 1) * PAGE_SIZE < l.total { a href=(next) #next-page { "Older →" } }
                }
            }
        }
    };
    page("Dead letters", "/dead-letters", viewer, None, body)
}

/// One dead letter.
pub fn detail(viewer: &Viewer<'_>, d: &DeadDetail) -> Markup {
    let r = &d.row;
    // The payload pretty-printed when it is JSON, as received otherwise.
    let payload = serde_json::from_str::<serde_json::Value>(&d.payload)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| d.payload.clone());
    let fields: Vec<(String, String)> = r
        .fields
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| {
                    let s = |k: &str| f[k].as_str().map(str::to_owned).unwrap_or_else(|| f[k].to_string());
                    (s("field"), s("problem"))
                })
                .collect()
        })
        .unwrap_or_default();
    let in_queue = matches!(r.state.as_str(), "dead" | "parked");
    let body = html! {
        div.two {
            div.card {
                h2 { "Envelope" }
                dl.kv {
                    dt { "Message id" } dd { code #message-id { (r.message_id) } }
                    dt { "Source" } dd { (r.source) }
                    dt { "Candidate" } dd { a #candidate-link href=(candidate_href(&r.moka_id)) { (r.moka_id) } " " (r.name.as_deref().unwrap_or("")) }
                    dt { "Received" } dd { (opt_time(&d.received_at)) }
                    dt { "Tonce" } dd { (d.tonce.map(|t| t.to_string()).unwrap_or_else(|| "—".into())) }
                    dt { "State" } dd { (state_badge(&r.state)) @if let Some(by) = &r.changed_by { " by " (by) " " (opt_time(&d.changed_at)) } }
                }
            }
            div.card {
                h2 { "Error" }
                dl.kv {
                    dt { "Reason" } dd { span.badge.dead #reason { (r.kind) } }
                    dt { "Message" } dd #error-message { (r.message) }
                    dt { "Attempts" } dd { (r.attempts) }
                    dt { "First failure" } dd { (opt_time(&r.first_failed_at)) }
                    dt { "Died" } dd { (time(&r.died_at)) }
                    dt { "Failed by" } dd { (d.failed_by.as_deref().unwrap_or("—")) }
                }
                @if !fields.is_empty() {
                    table #fields {
                        thead { tr { th { "Field" } th { "Problem" } } }
                        tbody { @for (field, problem) in &fields { tr { td { code { (field) } } td { (problem) } } } }
                    }
                }
            }
        }
        @if viewer.can_act() && in_queue {
            form.actions method="post" action="/dead-letters/confirm" {
                input type="hidden" name="csrf" value=(viewer.csrf);
                input type="hidden" name="id" value=(r.message_id);
                button type="submit" name="do" value="replay-selected" { "Replay" }
                button.danger type="submit" name="do" value="purge-selected" { "Purge" }
            }
        }
        div.card {
            h2 { "Payload" }
            pre #payload { (payload) }
        }
    };
    page("Dead letter", "/dead-letters", viewer, None, body)
}

/// The confirmation of `verb` (replay, purge) on `count` messages; posting it acts.
pub fn confirm(viewer: &Viewer<'_>, verb: &str, count: usize, carry: &[(&str, String)], sample: &[String]) -> Markup {
    let body = html! {
        div.card #confirm {
            p #confirm-text { strong { (verb) " " (count) " message" @if count != 1 { "s" } } " of the dead-letter queue?"
                @if verb == "Purge" { " Purged messages are gone for good." }
                @else { " Each goes back to be processed once; one that fails again comes back here once." }
            }
            @if !sample.is_empty() {
                ul { @for id in sample { li { code { (id) } } } }
                @if count > sample.len() { p.muted { "… and " (count - sample.len()) " more." } }
            }
            @if count == 0 { p.muted { "Nothing to do: no selected message is in the queue." } }
            form.actions method="post" action="/dead-letters/act" {
                input type="hidden" name="csrf" value=(viewer.csrf);
                (hidden(carry))
                @if count > 0 {
                    button.danger[verb == "Purge"] type="submit" #confirm-button { "Yes, " (verb.to_lowercase()) " " (count) }
                }
                a href="/dead-letters" { "Cancel" }
            }
        }
    };
    page(&format!("{verb} dead letters"), "/dead-letters", viewer, None, body)
}
