//! The operator console in a real headless Chromium (Debian's chromium and chromedriver), against
//! the real broker, database, ingress and worker: what an operator sees and does, and what the
//! console refuses.

use std::{path::PathBuf, time::Duration};

use fantoccini::Locator;
use lapin::types::{AMQPValue, FieldTable};
use moka_ingest::{broker::envelope::Meta, config::Settings};

use crate::helpers::{
    browser::{screenshot_path, users_file, with_browser, TestConsole, OPERATOR, VIEWER},
    candidate_payload,
    files::FileServer,
    now, worker_settings, TestBroker, TestDb, TestIngress, TestWorker,
};

/// A directory for the test's users file, removed with the value.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("moka-console-test-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn console_settings(broker: &TestBroker, db: &TestDb, users: &std::path::Path, extra: &[(&str, &str)]) -> Settings {
    let users = users.to_str().unwrap().to_owned();
    let mut all: Vec<(&str, &str)> = vec![("console.users_file", users.as_str()), ("attachments.allow", "127.0.0.1")];
    all.extend_from_slice(extra);
    worker_settings(&broker.prefix, db, &all)
}

/// Settings whose role addresses are the test's own, so that the overview probes them.
fn with_roles(settings: &Settings, ingress: &TestIngress, worker: Option<&TestWorker>) -> Settings {
    let mut s = settings.clone();
    s.ingress.listen = ingress.addr;
    if let Some(w) = worker {
        s.worker.listen = w.handle.ops_addr;
    }
    s
}

async fn post_candidate(ingress: &TestIngress, payload: &str, tonce: i64) {
    let req = moka_ingest::sign::SignedRequest::new(
        crate::helpers::ACCESS_KEY,
        crate::helpers::SECRET,
        payload,
        tonce,
        moka_ingest::signing::Encoding::Raw,
    );
    let answer = ingress.post_form(req.form_body()).await;
    assert_eq!(answer.status, 200, "{answer:?}");
}

fn without(payload: &str, field: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(payload).unwrap();
    v.as_object_mut().unwrap().remove(field);
    v.to_string()
}

/// A POST made outside the browser with a session cookie (the CSRF and role checks are the
/// server's: the page not offering a button proves nothing).
async fn post_as(cookie: &str, url: &str, body: &str) -> (u16, String) {
    let r = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(url)
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn an_operator_logs_in_finds_dead_letters_by_reason_replays_a_fixed_one_and_a_viewer_or_a_forged_post_cannot() {
    let (broker, db, dir) = (TestBroker::new().await, TestDb::new().await, TempDir::new());
    let users = users_file(&dir.0);
    // Ids longer than 16 bytes are refused: the cause an operator fixes before replaying.
    let strict = console_settings(&broker, &db, &users, &[("limits.id_max_bytes", "16")]);
    let ingress = TestIngress::spawn(&strict).await;
    for i in 0..3 {
        post_candidate(&ingress, &candidate_payload(&format!("ok-{i}"), "张三"), now()).await;
    }
    broker.wait_depth(&broker.topology.queue, 3).await;
    let console = TestConsole::spawn(&with_roles(&strict, &ingress, None)).await;

    with_browser("operator_flow", |b| {
        let (console, ingress, broker, db, strict, users) = (&console, &ingress, &broker, &db, &strict, &users);
        async move {
            // Every page but the login form needs a session.
            b.goto(&console.url("/dead-letters")).await;
            assert_eq!(b.path().await, "/login");
            b.login(console, (OPERATOR.0, "not-the-password")).await;
            assert_eq!(b.text("#login-error").await, "Wrong user name or password.");
            assert_eq!(b.path().await, "/login");
            b.login(console, OPERATOR).await;
            assert_eq!(b.path().await, "/");
            // The three submissions this test queued, before any worker runs.
            assert_eq!(b.text("#depth-submissions .n").await, "3");

            // A worker with the strict cap: one invalid id, one missing name, one unreadable message.
            let worker = TestWorker::spawn(strict).await;
            let long_id = "cand-with-a-long-id-0001";
            post_candidate(ingress, &candidate_payload(long_id, "李四"), now()).await;
            post_candidate(ingress, &without(&candidate_payload("no-name", "x"), "name"), now()).await;
            let props =
                lapin::BasicProperties::default().with_message_id("not-an-envelope-1".into()).with_delivery_mode(2);
            broker.publish_raw(b"this is not an envelope", props).await;
            db.wait_count("SELECT 1 FROM dead_letters WHERE state = 'dead'", 3, Duration::from_secs(20)).await;
            db.wait_count("SELECT 1 FROM candidates", 3, Duration::from_secs(20)).await;

            b.goto(&console.url("/dead-letters")).await;
            assert_eq!(b.count("#dead-letters tbody tr").await, 3);
            let table = b.text("#dead-letters").await;
            assert!(table.contains(long_id) && table.contains("validation") && table.contains("envelope"), "{table}");
            // Filter by reason through the form.
            b.find("select[name=kind]").await.select_by_value("validation").await.unwrap();
            b.find("#filters button[type=submit]").await.click().await.unwrap();
            b.find("#dead-letters").await;
            assert_eq!(b.count("#dead-letters tbody tr").await, 2, "two validation failures");
            let causes = b.text("#causes").await;
            assert!(causes.contains("id") && causes.contains("name"), "grouped by cause: {causes}");
            // Narrowed to the field `id`: the one to replay once the cap is raised.
            b.goto(&console.url("/dead-letters?kind=validation&field=id")).await;
            assert_eq!(b.count("#dead-letters tbody tr").await, 1);

            // The fix: a worker with the default cap replaces the strict one.
            worker.stop().await;
            let fixed = TestWorker::spawn(&console_settings(broker, db, users, &[])).await;
            b.find("#dead-letters tbody input[name=id]").await.click().await.unwrap();
            b.find("#replay-selected").await.click().await.unwrap();
            let confirm = b.text("#confirm-text").await;
            assert!(confirm.contains("Replay 1 message"), "the confirmation states the count: {confirm}");
            b.find("#confirm-button").await.click().await.unwrap();
            b.find("#action").await;
            assert!(b.path().await.starts_with("/audit/"));
            let action_url = console.url(&b.path().await);
            let state = b.wait_text(&action_url, "#state", Duration::from_secs(20), |t| t.contains("finished")).await;
            assert!(state.contains("replayed 1, failed 0"), "{state}");
            let stored = format!("SELECT 1 FROM candidates WHERE moka_id = '{long_id}'");
            assert_eq!(db.wait_count(&stored, 1, Duration::from_secs(20)).await, 1, "the replayed candidate is stored");
            let replayed = format!(
                "SELECT 1 FROM dead_letters WHERE moka_id = '{long_id}' AND state = 'replayed' AND changed_by = '{}'",
                OPERATOR.0
            );
            assert_eq!(db.count(&replayed).await, 1);
            b.goto(&console.url("/audit")).await;
            let audit = b.text("#audit").await;
            assert!(audit.contains(OPERATOR.0) && audit.contains("replayed 1, failed 0"), "{audit}");
            assert_eq!(broker.wait_depth(&broker.topology.dead_queue, 2).await, 2, "the other two are still dead");

            // A POST without the CSRF token is refused, and touches nothing.
            let cookie = b.session_cookie().await;
            let (status, _) = post_as(&cookie, &console.url("/dead-letters/act"), "do=purge-all").await;
            assert_eq!(status, 403);
            let (status, _) = post_as(&cookie, &console.url("/dead-letters/act"), "do=purge-all&csrf=forged").await;
            assert_eq!(status, 403);
            assert_eq!(broker.depth(&broker.topology.dead_queue).await, 2);

            // A viewer sees the dead letters but is offered no action, and the server refuses one
            // even with the viewer's own valid token.
            b.find("form[action='/logout'] button").await.click().await.unwrap();
            assert_eq!(b.path_after_click("/login").await, "/login");
            b.login(console, VIEWER).await;
            b.goto(&console.url("/dead-letters")).await;
            assert_eq!(b.count("#dead-letters tbody tr").await, 2);
            assert_eq!(b.count("#replay-selected").await, 0);
            let csrf = b.find("form[action='/logout'] input[name=csrf]").await.attr("value").await.unwrap().unwrap();
            let cookie = b.session_cookie().await;
            let (status, body) =
                post_as(&cookie, &console.url("/dead-letters/act"), &format!("do=purge-all&csrf={csrf}")).await;
            assert_eq!(status, 403);
            assert!(body.contains("viewers cannot replay"), "{body}");
            assert_eq!(broker.depth(&broker.topology.dead_queue).await, 2);
            fixed.stop().await;
        }
    })
    .await;
    console.stop().await;
    ingress.stop().await;
}

#[tokio::test]
async fn hostile_names_show_as_text_a_timeline_shows_the_older_submission_stale_and_files_come_as_downloads() {
    let (broker, db, dir) = (TestBroker::new().await, TestDb::new().await, TempDir::new());
    let files = FileServer::start("http://127.0.0.1:9/").await;
    let users = users_file(&dir.0);
    let settings = console_settings(&broker, &db, &users, &[]);
    let ingress = TestIngress::spawn(&settings).await;
    let worker = TestWorker::spawn(&settings).await;
    let console = TestConsole::spawn(&with_roles(&settings, &ingress, Some(&worker))).await;

    let script = "<script>alert(1)</script>";
    let img = r#""><img src=x onerror=alert(1)>"#;
    // The candidate's résumé is an HTML page: it must never render in the console's origin.
    let mut first: serde_json::Value = serde_json::from_str(&candidate_payload("xss-1", script)).unwrap();
    first["resumeUrl"] = files.url("feedback.html").into();
    let t = now();
    post_candidate(&ingress, &first.to_string(), t).await;
    db.wait_count("SELECT 1 FROM candidate_attachments WHERE status = 'stored'", 1, Duration::from_secs(20)).await;
    // An older submission of the same candidate arrives later: stale.
    let older = candidate_payload("xss-1", "older name");
    post_candidate(&ingress, &older, t - 60).await;
    db.wait_count("SELECT 1 FROM submissions WHERE moka_id = 'xss-1'", 2, Duration::from_secs(20)).await;
    // A dead letter whose name is hostile too.
    post_candidate(&ingress, &without(&candidate_payload("xss-2", img), "phone"), now()).await;
    db.wait_count("SELECT 1 FROM dead_letters", 1, Duration::from_secs(20)).await;

    with_browser("hostile_names", |b| {
        let (console, script, img) = (&console, script, img);
        async move {
            b.login(console, OPERATOR).await;
            b.find("#queues").await;
            b.screenshot(&screenshot_path("overview")).await;

            b.goto(&console.url("/candidates?q=%3Cscript")).await;
            assert!(b.text("#candidates").await.contains(script), "the name is shown as text");
            b.find("#candidates a").await.click().await.unwrap();
            assert_eq!(b.text("h1").await, format!("{script} (xss-1)"));
            assert!(b.client.get_alert_text().await.is_err(), "no dialog opened");
            let outcomes: Vec<String> = {
                let mut out = Vec::new();
                for e in b.client.find_all(Locator::Css("#timeline [data-outcome]")).await.unwrap() {
                    out.push(e.text().await.unwrap());
                }
                out
            };
            assert_eq!(outcomes.len(), 2, "two submissions: {outcomes:?}");
            let rows = b.text("#timeline tbody").await;
            let stale_row = rows.lines().find(|l| l.contains("stale")).expect("a stale submission");
            assert!(stale_row.contains(&(t - 60).to_string()), "the older tonce is the stale one: {rows}");
            assert!(rows.lines().any(|l| l.contains("applied") && l.contains(&t.to_string())), "{rows}");
            assert_eq!(b.text("[data-column=name]").await, script);
            b.screenshot(&screenshot_path("candidate")).await;

            b.goto(&console.url("/dead-letters")).await;
            assert!(b.text("#dead-letters").await.contains("xss-2"));
            b.find("#dead-letters tbody a").await.click().await.unwrap();
            assert!(b.text("#payload").await.contains(img), "the payload shows the name as text");
            assert_eq!(b.count("img").await, 0, "no element was injected");
            assert!(b.client.get_alert_text().await.is_err(), "no dialog opened");

            // The stored HTML résumé comes as a download, never inline.
            b.goto(&console.url("/candidates/xss-1")).await;
            let href = b.find("#attachments a[download]").await.attr("href").await.unwrap().unwrap();
            let cookie = b.session_cookie().await;
            let r = reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap()
                .get(console.url(&href))
                .header("cookie", cookie)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let h = r.headers().clone();
            assert!(h["content-disposition"].to_str().unwrap().starts_with("attachment;"), "{h:?}");
            assert_eq!(h["x-content-type-options"], "nosniff");
            assert_eq!(h["content-type"], "application/octet-stream");
            assert!(h["content-security-policy"].to_str().unwrap().contains("sandbox"));
            assert_eq!(r.text().await.unwrap(), "<!DOCTYPE html><p>good</p>");
        }
    })
    .await;
    console.stop().await;
    worker.stop().await;
    ingress.stop().await;
}

#[tokio::test]
async fn an_operator_parks_a_message_waiting_to_retry_and_it_keeps_its_reason() {
    let broker = TestBroker::with_schedule("1h").await;
    let (db, dir) = (TestDb::new().await, TempDir::new());
    let users = users_file(&dir.0);
    let settings = console_settings(&broker, &db, &users, &[("retry.schedule", "1h")]);
    broker.declare().await;
    // A submission waiting an hour in the delay queue after a database failure.
    let meta = Meta::new(crate::helpers::ACCESS_KEY, now(), "waiting-1", chrono::Utc::now());
    let mut headers = FieldTable::default();
    headers.insert("x-retry-count".into(), AMQPValue::LongInt(1));
    headers.insert("x-last-error-kind".into(), AMQPValue::LongString("database".into()));
    headers.insert("x-last-error".into(), AMQPValue::LongString("database unavailable: connection refused".into()));
    headers.insert("x-last-failed-at".into(), AMQPValue::LongString(chrono::Utc::now().to_rfc3339().into()));
    let (queue, _) = broker.topology.retry_queue(0).unwrap();
    let props = meta.properties().with_headers(headers).with_expiration("3600000".into());
    let ch = broker._conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let body = meta.body(candidate_payload("waiting-1", "王五").as_bytes());
    ch.basic_publish("", &queue, Default::default(), &body, props).await.unwrap().await.unwrap();
    broker.wait_depth(&queue, 1).await;
    let console = TestConsole::spawn(&settings).await;
    let id = meta.message_id.to_string();

    with_browser("park", |b| {
        let (console, broker, db, queue, id) = (&console, &broker, &db, &queue, &id);
        async move {
            b.login(console, OPERATOR).await;
            b.goto(&console.url("/retrying")).await;
            let row = b.find(&format!("tr[data-id='{id}']")).await;
            let text = row.text().await.unwrap();
            assert!(text.contains("waiting-1") && text.contains("database unavailable"), "{text}");
            row.find(Locator::Css("button")).await.unwrap().click().await.unwrap();
            assert!(b.text("#notice").await.contains(id.as_str()));
            assert_eq!(broker.wait_depth(queue, 0).await, 0);
            assert_eq!(broker.wait_depth(&broker.topology.dead_queue, 1).await, 1);
            b.goto(&console.url(&format!("/dead-letters/{id}"))).await;
            assert_eq!(b.text("#reason").await, "database");
            assert!(b.text("#error-message").await.contains(&format!("parked by {}", OPERATOR.0)));
            let parked = format!(
                "SELECT 1 FROM dead_letters WHERE message_id = '{id}' AND state = 'parked' AND changed_by = '{}'",
                OPERATOR.0
            );
            assert_eq!(db.count(&parked).await, 1);
            b.goto(&console.url("/audit")).await;
            assert!(b.text("#audit").await.contains("park"));

            // The queue emptied behind the console's back (a purge on the broker itself): the
            // index still lists the message until a re-index walks the queue.
            broker.ch.queue_purge(&broker.topology.dead_queue, Default::default()).await.unwrap();
            b.goto(&console.url("/dead-letters")).await;
            assert_eq!((b.text("#queue-depth").await, b.text("#indexed").await), ("0".into(), "1".into()));
            b.find("form[action='/dead-letters/reindex'] button").await.click().await.unwrap();
            b.find("#action").await;
            let action = console.url(&b.path().await);
            let state = b.wait_text(&action, "#state", Duration::from_secs(20), |t| t.contains("finished")).await;
            assert!(state.contains("indexed 0, marked gone 1"), "{state}");
            let gone = format!("SELECT 1 FROM dead_letters WHERE message_id = '{id}' AND state = 'purged' AND changed_by LIKE 'reindex:%'");
            assert_eq!(db.count(&gone).await, 1);
        }
    })
    .await;
    console.stop().await;
}

#[tokio::test]
async fn the_console_does_not_start_without_users_and_says_which_setting() {
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    let settings = worker_settings(&broker.prefix, &db, &[]);
    let err = moka_ingest::console::Console::open(&settings).await.err().expect("refused").to_string();
    assert!(err.contains("console.users_file") && err.contains("MOKA_INGEST_CONSOLE_USERS_FILE"), "{err}");
    let dir = TempDir::new();
    let bad = dir.0.join("users");
    std::fs::write(&bad, "olga:admin:$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA\n").unwrap();
    let settings = worker_settings(&broker.prefix, &db, &[("console.users_file", bad.to_str().unwrap())]);
    let err = moka_ingest::console::Console::open(&settings).await.err().expect("refused");
    let err = moka_ingest::telemetry::chain(&err);
    assert!(err.contains("line 1") && !err.contains("aGFzaGhh"), "names the line, never the hash: {err}");
}
