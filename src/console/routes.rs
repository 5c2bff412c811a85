//! The console's URLs. Every page but `/login`, `/healthz`, `/readyz`, `/metrics` and the static
//! files needs a session ([`User`] redirects to `/login` without one). Every state-changing
//! request is a POST whose form carries the session's CSRF token, and only operators may act
//! ([`authorize`]: 403 otherwise). Every answer carries the security headers of
//! [`security_headers`].

use std::{collections::HashSet, sync::Arc};

use axum::{
    body::Bytes,
    extract::{FromRequestParts, Path, Query, State},
    http::{header, request::Parts, HeaderValue, StatusCode},
    middleware::map_response,
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
    Router,
};
use maud::Markup;
use serde::Deserialize;
use tracing::{info, warn};

use super::{
    actions, assets, queries,
    queries::DeadFilter,
    queues::Role as QueueRole,
    session,
    users::Role,
    views::{self, Viewer},
    Console,
};
use crate::{
    dlq::{Action, Dlq},
    health,
    store::DbError,
    telemetry,
};

type Shared = Arc<Console>;

pub fn router(console: Shared) -> Router {
    let pages = Router::new()
        .route("/", get(overview))
        .route("/dead-letters", get(dead_list))
        .route("/dead-letters/{id}", get(dead_detail))
        .route("/dead-letters/confirm", post(dead_confirm))
        .route("/dead-letters/act", post(dead_act))
        .route("/dead-letters/reindex", post(reindex))
        .route("/retrying", get(retrying))
        .route("/retrying/park", post(park))
        .route("/candidates", get(candidates))
        .route("/candidates/{id}", get(candidate))
        .route("/candidates/{id}/files/{sha256}", get(download))
        .route("/audit", get(audit))
        .route("/audit/{id}", get(audit_entry))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route(
            "/static/console.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], assets::CSS) }),
        )
        .route(
            "/static/console.js",
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], assets::JS) }),
        )
        .fallback(|| async { Fail::NotFound("No such page.".into()) })
        .with_state(console);
    pages.merge(health::router(Arc::new(|| Ok(())))).layer(map_response(security_headers))
}

/// On every answer: no inline script or style, nothing from elsewhere, not framed, not cached,
/// not sniffed. An answer that set its own policy (a download) keeps it.
async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    let mut set = |name: header::HeaderName, value: &'static str| {
        h.entry(name).or_insert(HeaderValue::from_static(value));
    };
    set(
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'",
    );
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::X_FRAME_OPTIONS, "DENY");
    set(header::REFERRER_POLICY, "no-referrer");
    set(header::CACHE_CONTROL, "no-store");
    res
}

/// Why a request failed, as the answer says it.
#[derive(Debug)]
enum Fail {
    Db(DbError),
    NotFound(String),
    Forbidden(String),
    BadRequest(String),
    Unavailable(String),
}

impl From<DbError> for Fail {
    fn from(e: DbError) -> Self {
        Fail::Db(e)
    }
}

impl From<deadpool_postgres::PoolError> for Fail {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Fail::Db(e.into())
    }
}

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            Fail::Db(e) => {
                warn!(error = %telemetry::chain(&e), "console: database error");
                (StatusCode::SERVICE_UNAVAILABLE, "Database unavailable", telemetry::chain(&e))
            }
            Fail::NotFound(m) => (StatusCode::NOT_FOUND, "Not found", m),
            Fail::Forbidden(m) => (StatusCode::FORBIDDEN, "Not allowed", m),
            Fail::BadRequest(m) => (StatusCode::BAD_REQUEST, "Bad request", m),
            Fail::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, "Unavailable", m),
        };
        (status, Html(views::problem(title, None, &message).into_string())).into_response()
    }
}

fn html(m: Markup) -> Html<String> {
    Html(m.into_string())
}

/// A logged-in user, from the session cookie; the role is read from the users file on every
/// request, so a user removed from the file is out at once.
pub struct User {
    pub name: String,
    pub role: Role,
    pub csrf: String,
}

impl User {
    fn viewer(&self) -> Viewer<'_> {
        Viewer { name: &self.name, role: self.role, csrf: &self.csrf }
    }
}

impl FromRequestParts<Shared> for User {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, console: &Shared) -> Result<User, Response> {
        let to_login = || Redirect::to("/login").into_response();
        let cookies = parts.headers.get(header::COOKIE).and_then(|v| v.to_str().ok());
        let Some(token) = session::token_from(cookies) else { return Err(to_login()) };
        let client = console.pool.get().await.map_err(|e| Fail::from(e).into_response())?;
        let Some(s) = session::lookup(&client, &token).await.map_err(|e| Fail::from(e).into_response())? else {
            return Err(to_login());
        };
        let Some(role) = console.users.users().role(&s.username) else { return Err(to_login()) };
        Ok(User { name: s.username, role, csrf: s.csrf })
    }
}

/// A form body: every pair, in order (checkboxes repeat their name).
struct Form(Vec<(String, String)>);

impl Form {
    fn parse(body: &[u8]) -> Form {
        Form(form_urlencoded::parse(body).into_owned().collect())
    }

    fn get(&self, name: &str) -> &str {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or("")
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect()
    }

    /// The dead-letter filter the form carries (hidden fields).
    fn filter(&self) -> DeadFilter {
        DeadFilter {
            kind: self.get("kind").into(),
            field: self.get("field").into(),
            candidate: self.get("candidate").into(),
            q: self.get("q").into(),
            window: self.get("window").into(),
            from: self.get("from").into(),
            to: self.get("to").into(),
            state: self.get("state").into(),
            until: self.get("until").into(),
            page: 0,
        }
    }
}

/// The CSRF token first (a forged request learns nothing else), then the role.
fn authorize(user: &User, form: &Form, needs_operator: bool) -> Result<(), Fail> {
    if !session::same_token(form.get("csrf"), &user.csrf) {
        warn!(user = %user.name, "console: POST without a valid CSRF token refused");
        return Err(Fail::Forbidden(
            "This form's CSRF token is missing or out of date: reload the page and try again.".into(),
        ));
    }
    if needs_operator && !user.role.can_act() {
        return Err(Fail::Forbidden(format!("{} is a viewer: viewers cannot replay, purge or park.", user.name)));
    }
    Ok(())
}

async fn login_form() -> Html<String> {
    html(views::login(None))
}

/// Longest user name and password looked at (longer ones fail at once, without hashing).
const MAX_CREDENTIAL_BYTES: usize = 256;

async fn login(State(console): State<Shared>, body: Bytes) -> Result<Response, Fail> {
    let form = Form::parse(&body);
    let (name, password) = (form.get("username").to_owned(), form.get("password").to_owned());
    if name.len() > MAX_CREDENTIAL_BYTES || password.len() > MAX_CREDENTIAL_BYTES {
        metrics::counter!("moka_console_login_failures_total").increment(1);
        return Ok((StatusCode::UNAUTHORIZED, html(views::login(Some("Wrong user name or password.")))).into_response());
    }
    // While a name waits after a failure, its attempts are refused without a hash: parallel
    // guesses are as slow as sequential ones.
    if let Some(wait) = console.throttle.waiting(&name) {
        metrics::counter!("moka_console_login_failures_total").increment(1);
        let message = format!("Too many failed logins for this user name: try again in {} s.", wait.as_secs() + 1);
        return Ok((StatusCode::TOO_MANY_REQUESTS, html(views::login(Some(&message)))).into_response());
    }
    let users = console.users.users();
    // argon2 is deliberately slow and large: a few at a time, off the async threads.
    let checked = {
        let _permit = console.verifying.acquire().await.map_err(|_| Fail::Unavailable("shutting down".into()))?;
        let name = name.clone();
        tokio::task::spawn_blocking(move || users.verify(&name, &password))
            .await
            .map_err(|_| Fail::Unavailable("the password check failed".into()))?
    };
    if checked.is_none() {
        let wait = console.throttle.failed(&name);
        metrics::counter!("moka_console_login_failures_total").increment(1);
        warn!(user = %name, wait_ms = wait.as_millis() as u64, "console: failed login");
        tokio::time::sleep(wait).await;
        return Ok((StatusCode::UNAUTHORIZED, html(views::login(Some("Wrong user name or password.")))).into_response());
    }
    console.throttle.succeeded(&name);
    let client = console.pool.get().await?;
    let token = session::create(&client, &name, console.settings.session_ttl).await?;
    info!(user = %name, "console: logged in");
    let cookie = session::set_cookie(&token, console.settings.session_ttl, console.settings.secure_cookie);
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response())
}

async fn logout(
    State(console): State<Shared>,
    user: User,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<Response, Fail> {
    authorize(&user, &Form::parse(&body), false)?;
    if let Some(token) = session::token_from(headers.get(header::COOKIE).and_then(|v| v.to_str().ok())) {
        session::end(&console.pool.get().await?, &token).await?;
    }
    Ok(([(header::SET_COOKIE, session::clear_cookie(console.settings.secure_cookie))], Redirect::to("/login"))
        .into_response())
}

async fn overview(State(console): State<Shared>, user: User) -> Result<Html<String>, Fail> {
    let counts = async { console.queues.counts().await.map_err(|e| e.to_string()) };
    let db = async {
        let client = console.pool.get().await?;
        let per_minute = queries::outcomes(&client, "minute", "1 hour").await?;
        let per_hour = hourly(&console, &client).await?;
        let latest = queries::latest_dead(&client, 10).await?;
        Ok::<_, Fail>((per_minute, per_hour, latest))
    };
    let ready = futures_util::future::join_all(console.readiness.iter().map(|(role, url)| {
        let http = console.http.clone();
        async move {
            let answer = match http.get(url).send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("{}: {}", r.status(), r.text().await.unwrap_or_default())),
                Err(e) => Err(if e.is_connect() { "not running (connection refused)".into() } else { e.to_string() }),
            };
            (*role, url.clone(), answer)
        }
    }));
    let (queues, db, readiness) = tokio::join!(counts, db, ready);
    let (per_minute, per_hour, latest_dead) = db?;
    let o = views::overview::Overview { queues, per_minute, per_hour, latest_dead, readiness };
    Ok(html(views::overview::render(&user.viewer(), &o)))
}

/// The 7-day chart, read again at most once a minute.
async fn hourly(console: &Console, client: &deadpool_postgres::Object) -> Result<Vec<queries::Bucket>, Fail> {
    let mut cached = console.hourly.lock().await;
    if let Some((at, buckets)) = cached.as_ref() {
        if at.elapsed() < std::time::Duration::from_secs(60) {
            return Ok(buckets.clone());
        }
    }
    let buckets = queries::outcomes(client, "hour", "7 days").await?;
    *cached = Some((std::time::Instant::now(), buckets.clone()));
    Ok(buckets)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Notice {
    parked: Option<String>,
}

async fn dead_list(
    State(console): State<Shared>,
    user: User,
    Query(mut filter): Query<DeadFilter>,
) -> Result<Html<String>, Fail> {
    filter.page = filter.page.clamp(0, queries::MAX_PAGE);
    // The page, the counts, the index's and the broker's totals: at once, each on its connection.
    let page = async { Ok::<_, Fail>(queries::dead_letters(&console.pool.get().await?, &filter).await?) };
    let summary = async { Ok::<_, Fail>(queries::summary(&console.pool.get().await?, &filter).await?) };
    let indexed = async { Ok::<_, Fail>(queries::indexed_in_queue(&console.pool.get().await?).await?) };
    let depth = async {
        let counts = console.queues.counts().await.ok()?;
        counts.into_iter().find(|q| q.role == QueueRole::Dead).map(|q| q.messages)
    };
    let (rows, summary, indexed, queue_depth) = tokio::join!(page, summary, indexed, depth);
    let (rows, (total, causes), indexed) = (rows?, summary?, indexed?);
    let list = views::dead::List { filter: &filter, rows: &rows, total, causes: &causes, queue_depth, indexed };
    Ok(html(views::dead::list(&user.viewer(), &list)))
}

async fn dead_detail(State(console): State<Shared>, user: User, Path(id): Path<String>) -> Result<Html<String>, Fail> {
    let client = console.pool.get().await?;
    let detail =
        queries::dead_letter(&client, &id).await?.ok_or_else(|| Fail::NotFound(format!("No dead letter {id}.")))?;
    Ok(html(views::dead::detail(&user.viewer(), &detail)))
}

/// What a dead-letter form asks: the action, and whether it names messages or a filter.
fn asked(form: &Form) -> Result<(Action, bool), Fail> {
    match form.get("do") {
        "replay-selected" => Ok((Action::Replay, false)),
        "purge-selected" => Ok((Action::Purge, false)),
        "replay-all" => Ok((Action::Replay, true)),
        "purge-all" => Ok((Action::Purge, true)),
        other => Err(Fail::BadRequest(format!("Unknown action {other:?}."))),
    }
}

/// The ids a dead-letter form selects that are in the queue now.
async fn selected_ids(console: &Console, form: &Form, all: bool) -> Result<Vec<String>, Fail> {
    let client = console.pool.get().await?;
    Ok(match all {
        true => queries::matching_ids(&client, &form.filter()).await?,
        false => queries::in_queue(&client, &form.all("id")).await?,
    })
}

async fn dead_confirm(State(console): State<Shared>, user: User, body: Bytes) -> Result<Html<String>, Fail> {
    let form = Form::parse(&body);
    authorize(&user, &form, true)?;
    let (action, all) = asked(&form)?;
    // "All that match" acts on what died up to now: what the count below counted.
    let mut filter = form.filter();
    if all && filter.until.is_empty() {
        filter.until = chrono::Utc::now().to_rfc3339();
    }
    let form = Form(
        form.0.into_iter().filter(|(k, _)| k != "until").chain([("until".into(), filter.until.clone())]).collect(),
    );
    let ids = selected_ids(&console, &form, all).await?;
    let mut carry: Vec<(&str, String)> = vec![("do", form.get("do").to_owned())];
    match all {
        true => carry.extend(filter.pairs()),
        false => carry.extend(ids.iter().map(|id| ("id", id.clone()))),
    }
    let verb = if action == Action::Replay { "Replay" } else { "Purge" };
    let sample: Vec<String> = ids.iter().take(10).cloned().collect();
    Ok(html(views::dead::confirm(&user.viewer(), verb, ids.len(), &carry, &sample)))
}

async fn dead_act(State(console): State<Shared>, user: User, body: Bytes) -> Result<Redirect, Fail> {
    let form = Form::parse(&body);
    authorize(&user, &form, true)?;
    let (action, all) = asked(&form)?;
    let ids = selected_ids(&console, &form, all).await?;
    if ids.is_empty() {
        return Err(Fail::BadRequest(
            "Nothing to do: none of the selected messages is in the dead-letter queue.".into(),
        ));
    }
    let filter = match all {
        true => {
            serde_json::json!({ "filter": form.filter().pairs().into_iter().collect::<std::collections::BTreeMap<_, _>>() })
        }
        false => serde_json::json!({ "ids": ids }),
    };
    let client = console.pool.get().await?;
    let audit = actions::audit_start(&client, &user.name, action.verb(), &filter, ids.len()).await?;
    info!(user = %user.name, action = action.verb(), messages = ids.len(), audit, "console action started");
    actions::spawn_act(console.clone(), user.name.clone(), action, ids.into_iter().collect::<HashSet<_>>(), audit);
    Ok(Redirect::to(&format!("/audit/{audit}")))
}

async fn reindex(State(console): State<Shared>, user: User, body: Bytes) -> Result<Redirect, Fail> {
    authorize(&user, &Form::parse(&body), true)?;
    let audit = actions::spawn_reindex(console.clone(), user.name.clone()).await.map_err(|e| match e {
        actions::ActionError::Busy => Fail::Unavailable(e.to_string()),
        other => Fail::Unavailable(telemetry::chain(&other)),
    })?;
    Ok(Redirect::to(&format!("/audit/{audit}")))
}

async fn retrying(
    State(console): State<Shared>,
    user: User,
    Query(notice): Query<Notice>,
) -> Result<Html<String>, Fail> {
    let queues = async {
        let counts = console.queues.counts().await.map_err(|e| e.to_string())?;
        let dlq = Dlq::open(&console.amqp_url, console.queues.topology.clone()).await.map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for count in counts.into_iter().filter(|q| matches!(q.role, QueueRole::Retry | QueueRole::DownloadRetry)) {
            let waiting = match count.messages {
                0 => Ok(Vec::new()),
                _ => dlq.peek(&count.name, views::retrying::SHOWN).await.map_err(|e| e.to_string()),
            };
            out.push(views::retrying::DelayQueue { count, waiting });
        }
        // Closing the session puts back what was looked at.
        dlq.close().await;
        Ok::<_, String>(out)
    }
    .await;
    let notice = notice.parked.map(|id| format!("Parked {id}: it is in the dead-letter queue now."));
    Ok(html(views::retrying::render(&user.viewer(), &queues, notice.as_deref())))
}

async fn park(State(console): State<Shared>, user: User, body: Bytes) -> Result<Redirect, Fail> {
    let form = Form::parse(&body);
    authorize(&user, &form, true)?;
    let (queue, id) = (form.get("queue"), form.get("id"));
    // Only this deployment's delay queues: the form must not name any queue of the broker.
    let delay_queue = console
        .queues
        .names()
        .into_iter()
        .any(|(name, role, _)| name == queue && matches!(role, QueueRole::Retry | QueueRole::DownloadRetry));
    if !delay_queue {
        return Err(Fail::BadRequest(format!("{queue:?} is not a delay queue of this deployment.")));
    }
    actions::park(&console, &user.name, queue, id).await.map_err(|e| match e {
        actions::ActionError::Gone(_) => Fail::NotFound(e.to_string()),
        other => Fail::Unavailable(telemetry::chain(&other)),
    })?;
    info!(user = %user.name, message_id = id, queue, "console: parked");
    Ok(Redirect::to(&views::link("/retrying", &[("parked", id.to_owned())])))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Search {
    q: String,
}

async fn candidates(State(console): State<Shared>, user: User, Query(s): Query<Search>) -> Result<Html<String>, Fail> {
    let client = console.pool.get().await?;
    let hits = queries::search_candidates(&client, &s.q).await?;
    Ok(html(views::candidates::search(&user.viewer(), &s.q, &hits)))
}

async fn candidate(State(console): State<Shared>, user: User, Path(id): Path<String>) -> Result<Html<String>, Fail> {
    let client = console.pool.get().await?;
    let detail = queries::candidate(&client, &id).await?;
    let timeline = queries::timeline(&client, &id).await?;
    let dead = queries::candidate_dead(&client, &id).await?;
    if detail.is_none() && timeline.is_empty() && dead.is_empty() {
        return Err(Fail::NotFound(format!("No candidate {id} and no submission of it.")));
    }
    Ok(html(views::candidates::detail(&user.viewer(), &id, detail.as_ref(), &timeline, &dead)))
}

/// A stored attachment, always as a download: never rendered in the console's origin (an HTML
/// "résumé" must not run here), whatever type it claims.
async fn download(
    State(console): State<Shared>,
    _user: User,
    Path((id, sha256)): Path<(String, String)>,
) -> Result<Response, Fail> {
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Fail::NotFound("No such file.".into()));
    }
    let client = console.pool.get().await?;
    let (key, name) = queries::stored_file(&client, &id, &sha256)
        .await?
        .ok_or_else(|| Fail::NotFound("No such stored file.".into()))?;
    drop(client);
    let bytes = console.blobs.get(&key).await.map_err(|e| Fail::Unavailable(telemetry::chain(&e)))?;
    let name = name.unwrap_or_else(|| sha256.clone());
    // A plain ASCII fallback name, and the real one percent-encoded (RFC 6266).
    let ascii: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
    let encoded = percent_encoding::utf8_percent_encode(&name, percent_encoding::NON_ALPHANUMERIC);
    let disposition = format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}");
    let mut res = bytes.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&disposition).map_err(|e| Fail::BadRequest(e.to_string()))?,
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox; default-src 'none'"));
    Ok(res)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PageNo {
    page: i64,
}

async fn audit(State(console): State<Shared>, user: User, Query(mut p): Query<PageNo>) -> Result<Html<String>, Fail> {
    p.page = p.page.clamp(0, queries::MAX_PAGE);
    let client = console.pool.get().await?;
    let entries = queries::audit(&client, p.page).await?;
    let more = entries.len() as i64 == queries::PAGE_SIZE;
    Ok(html(views::audit(&user.viewer(), &entries, p.page.max(0), more)))
}

async fn audit_entry(State(console): State<Shared>, user: User, Path(id): Path<i64>) -> Result<Html<String>, Fail> {
    let client = console.pool.get().await?;
    let entry = queries::audit_entry(&client, id).await?.ok_or_else(|| Fail::NotFound(format!("No action {id}.")))?;
    Ok(html(views::audit_entry(&user.viewer(), &entry)))
}
