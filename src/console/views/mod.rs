//! The console's HTML. maud checks the templates at compile time and escapes every value it
//! interpolates, so a candidate named `<script>…` is shown as text, wherever it appears. No page
//! has an inline script or style (the Content-Security-Policy forbids them).

pub mod candidates;
pub mod dead;
pub mod overview;
pub mod retrying;

use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};

use super::{queries::AuditEntry, users::Role};

/// Who is looking, for the header and for what the page offers.
pub struct Viewer<'a> {
    pub name: &'a str,
    pub role: Role,
    pub csrf: &'a str,
}

impl Viewer<'_> {
    pub fn can_act(&self) -> bool {
        self.role.can_act()
    }
}

/// The page around `body`: navigation, who is logged in, logout. `refresh`: reload every so many
/// seconds (the overview, a running action), by a meta tag rather than a script.
pub fn page(title: &str, here: &str, viewer: &Viewer<'_>, refresh: Option<u32>, body: Markup) -> Markup {
    let links = [
        ("/", "Overview"),
        ("/dead-letters", "Dead letters"),
        ("/retrying", "Retrying"),
        ("/candidates", "Candidates"),
        ("/audit", "Audit"),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(secs) = refresh { meta http-equiv="refresh" content=(secs); }
                title { (title) " · moka-ingest" }
                link rel="stylesheet" href="/static/console.css";
                script src="/static/console.js" defer {}
            }
            body {
                header {
                    nav {
                        a.brand href="/" { "moka-ingest" }
                        @for (href, label) in links {
                            a.here[href == here] href=(href) { (label) }
                        }
                        span.who {
                            span #whoami { (viewer.name) " (" (role_name(viewer.role)) ")" }
                            form method="post" action="/logout" {
                                input type="hidden" name="csrf" value=(viewer.csrf);
                                button.secondary type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Viewer => "viewer",
        Role::Operator => "operator",
    }
}

/// The login form, with `problem` above it.
pub fn login(problem: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Log in · moka-ingest" }
                link rel="stylesheet" href="/static/console.css";
            }
            body {
                main.login {
                    h1 { "moka-ingest console" }
                    @if let Some(p) = problem { p.error #login-error { (p) } }
                    form.card method="post" action="/login" {
                        label { "User name" input type="text" name="username" autocomplete="username" required autofocus; }
                        label { "Password" input type="password" name="password" autocomplete="current-password" required; }
                        button type="submit" { "Log in" }
                    }
                }
            }
        }
    }
}

/// A page that only says what went wrong.
pub fn problem(title: &str, viewer: Option<&Viewer<'_>>, message: &str) -> Markup {
    let body = html! { p.error #problem { (message) } p { a href="/" { "Back to the overview" } } };
    match viewer {
        Some(v) => page(title, "", v, None, body),
        None => html! { (DOCTYPE) html lang="en" { head { meta charset="utf-8"; title { (title) }
        link rel="stylesheet" href="/static/console.css"; } body { main { h1 { (title) } (body) } } } },
    }
}

/// A time as operators read it: UTC, to the second.
pub fn time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

pub fn opt_time(t: &Option<DateTime<Utc>>) -> String {
    t.as_ref().map(time).unwrap_or_else(|| "—".into())
}

/// `/path?k=v&…` with the values percent-encoded.
pub fn link(path: &str, pairs: &[(&str, String)]) -> String {
    if pairs.is_empty() {
        return path.to_owned();
    }
    let query: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
    format!("{path}?{query}")
}

/// Hidden form fields carrying `pairs`.
pub fn hidden(pairs: &[(&str, String)]) -> Markup {
    html! { @for (k, v) in pairs { input type="hidden" name=(k) value=(v); } }
}

/// `path` of the candidate page of `moka_id`.
pub fn candidate_href(moka_id: &str) -> String {
    format!("/candidates/{}", percent_encoding::utf8_percent_encode(moka_id, percent_encoding::NON_ALPHANUMERIC))
}

/// `path` of the page of the dead letter `message_id`.
pub fn dead_href(message_id: &str) -> String {
    format!("/dead-letters/{}", percent_encoding::utf8_percent_encode(message_id, percent_encoding::NON_ALPHANUMERIC))
}

/// The audit table.
pub fn audit(viewer: &Viewer<'_>, entries: &[AuditEntry], page_no: i64, more: bool) -> Markup {
    let body = html! {
        div.card {
            table #audit {
                thead { tr { th { "When" } th { "Who" } th { "Action" } th { "Selection" } th.num { "Asked" } th.num { "Done" } th.num { "Failed" } th { "Result" } } }
                tbody {
                    @for e in entries {
                        tr {
                            td { a href=(format!("/audit/{}", e.id)) { (time(&e.at)) } }
                            td { (e.username) }
                            td { (e.action) }
                            td.msg { code { (e.filter.to_string()) } }
                            td.num { (e.requested) }
                            td.num { (e.done) }
                            td.num { (e.failed) }
                            td { @if e.finished_at.is_some() { (e.detail.as_deref().unwrap_or("")) } @else { span.badge.pending { "running" } } }
                        }
                    }
                }
            }
            @if entries.is_empty() { p.muted { "No operator action yet." } }
            div.pager {
                @if page_no > 0 { a href=(link("/audit", &[("page", (page_no - 1).to_string())])) { "← Newer" } }
                @if more { a href=(link("/audit", &[("page", (page_no + 1).to_string())])) { "Older →" } }
            }
        }
    };
    page("Audit", "/audit", viewer, None, body)
}

/// One audit entry; reloads itself while the action runs.
pub fn audit_entry(viewer: &Viewer<'_>, e: &AuditEntry) -> Markup {
    let running = e.finished_at.is_none();
    let body = html! {
        div.card #action {
            dl.kv {
                dt { "Action" } dd #action-name { (e.action) }
                dt { "By" } dd { (e.username) }
                dt { "Started" } dd { (time(&e.at)) }
                dt { "Selection" } dd { code { (e.filter.to_string()) } }
                dt { "Messages asked" } dd { (e.requested) }
                dt { "Progress" } dd #progress { (e.done) " done, " (e.failed) " failed" }
                dt { "State" } dd #state {
                    @if running { span.badge.pending { "running" } " (this page reloads itself)" }
                    @else { span.badge.applied { "finished" } " " (opt_time(&e.finished_at)) ": " (e.detail.as_deref().unwrap_or("")) }
                }
            }
        }
        p { a href="/audit" { "All operator actions" } " · " a href="/dead-letters" { "Dead letters" } }
    };
    page(&format!("Action #{}", e.id), "/audit", viewer, running.then_some(2), body)
}
