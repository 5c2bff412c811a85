//! Attachment downloads against a real local HTTP server, into the local storage backend.

use std::time::{Duration, Instant};

use chrono::Utc;
use moka_ingest::broker::envelope::Meta;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::helpers::{
    self, attachments_dir,
    files::{FileServer, Tripwire, DOCX, PDF, PNG},
    poll::eventually,
    worker_settings, TestBroker, TestDb, TestWorker,
};

const WAIT: Duration = Duration::from_secs(20);

/// Test settings: files from 127.0.0.1 only, a 64 KiB cap and short deadlines.
fn settings(broker: &TestBroker, db: &TestDb) -> moka_ingest::config::Settings {
    worker_settings(
        &broker.prefix,
        db,
        &[
            ("attachments.allow", "127.0.0.1"),
            ("attachments.max_bytes", "65536"),
            ("attachments.total_timeout_ms", "1000"),
            ("attachments.read_timeout_ms", "800"),
            ("attachments.connect_timeout_ms", "500"),
        ],
    )
}

fn payload(id: &str, resume: &str, feedback: &str, offers: serde_json::Value) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&helpers::candidate_payload(id, "张三")).unwrap();
    v["resumeUrl"] = json!(resume);
    v["interviewFeedbackUrl"] = json!(feedback);
    v["offerAttachmentUrls"] = offers;
    v.to_string()
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// (url, status, sha256, content_type, file_name, storage_key, error) per row of a candidate.
async fn rows(
    db: &TestDb,
    id: &str,
) -> Vec<(String, String, Option<String>, Option<String>, Option<String>, Option<String>, Option<String>)> {
    db.client
        .query(
            "SELECT url, status, sha256, content_type, file_name, storage_key, error FROM candidate_attachments WHERE moka_id = $1 ORDER BY url",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6)))
        .collect()
}

fn stored_files(prefix: &str) -> usize {
    fn walk(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .map(|d| d.flatten().map(|e| if e.path().is_dir() { walk(&e.path()) } else { 1 }).sum())
            .unwrap_or(0)
    }
    walk(&attachments_dir(prefix).join("sha256"))
}

/// A test's broker namespace, schema, file server and worker (with `tune`d settings).
struct Setup {
    broker: TestBroker,
    db: TestDb,
    files: FileServer,
    worker: TestWorker,
}

impl Setup {
    async fn start(tune: impl FnOnce(&mut moka_ingest::config::Settings)) -> Setup {
        let (broker, db) = (TestBroker::new().await, TestDb::new().await);
        let files = FileServer::start("http://127.0.0.2:1/").await;
        broker.declare().await;
        let mut s = settings(&broker, &db);
        tune(&mut s);
        let worker = TestWorker::spawn_with_test_lookup(&s).await;
        Setup { broker, db, files, worker }
    }

    /// Publishes candidate `id` (its submission `newer` seconds after now) linking `resume` and `offers`.
    async fn publish(&self, id: &str, newer: i64, resume: &str, offers: serde_json::Value) {
        let meta = Meta::new("ak", helpers::now() + newer, id, Utc::now());
        self.broker.publish(&meta, &payload(id, resume, "", offers)).await;
    }
}

#[tokio::test]
async fn attachments_are_stored_by_content_with_hash_type_and_name_and_fetched_once() {
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    let files = FileServer::start("http://127.0.0.2:1/").await;
    broker.declare().await;
    let worker = TestWorker::spawn_with_test_lookup(&settings(&broker, &db)).await;
    let offers = json!([files.url("offer.docx"), files.url("photo.png"), files.url("r1")]);
    let body = payload("att-1", &files.url("cv.pdf"), &files.url("feedback.html"), offers);
    let meta = Meta::new("ak", helpers::now(), "att-1", Utc::now());
    broker.publish(&meta, &body).await;
    assert_eq!(db.wait_count("SELECT 1 FROM candidate_attachments WHERE status = 'stored'", 5, WAIT).await, 5);

    let got = rows(&db, "att-1").await;
    assert_eq!(got.len(), 5);
    assert!(got.iter().all(|r| r.1 == "stored"), "{got:?}");
    let row = |path: &str| got.iter().find(|r| r.0 == files.url(path)).unwrap().clone();
    let pdf = row("cv.pdf");
    assert_eq!(pdf.2.as_deref(), Some(sha(PDF).as_str()));
    assert_eq!(pdf.3.as_deref(), Some("application/pdf"), "from the bytes, not the octet-stream header");
    assert_eq!(pdf.4.as_deref(), Some("简历.pdf"), "from Content-Disposition");
    assert_eq!(
        row("offer.docx").3.as_deref(),
        Some("application/vnd.openxmlformats-officedocument.wordprocessingml.document")
    );
    assert_eq!(row("offer.docx").2.as_deref(), Some(sha(DOCX).as_str()));
    assert_eq!(row("photo.png").3.as_deref(), Some("image/png"));
    assert_eq!(row("photo.png").2.as_deref(), Some(sha(PNG).as_str()));
    assert_eq!(row("feedback.html").3.as_deref(), Some("text/html"));
    assert_eq!(row("r1").2, pdf.2, "three redirects are followed; same bytes, same hash");
    assert_eq!(row("r1").4.as_deref(), Some("简历.pdf"));
    assert_eq!(row("r1").5, pdf.5, "same content, same storage key");

    let key = pdf.5.clone().unwrap();
    assert_eq!(
        std::fs::read(attachments_dir(&broker.prefix).join(&key)).unwrap(),
        PDF,
        "the stored file is the download"
    );
    assert_eq!(stored_files(&broker.prefix), 4, "pdf, html, docx, png: the duplicate pdf is stored once");
    let kinds: Vec<String> = db
        .client
        .query("SELECT kind FROM candidate_attachments ORDER BY kind", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(kinds, ["interview_feedback", "offer", "offer", "offer", "resume"]);

    // Redelivery, and a newer submission with the same links: nothing is downloaded again.
    broker.publish(&meta, &body).await;
    broker.publish(&Meta::new("ak", helpers::now() + 1, "att-1", Utc::now()), &body).await;
    assert_eq!(db.wait_count("SELECT 1 FROM submissions", 2, WAIT).await, 2);
    assert_eq!(broker.wait_depth(&broker.topology.queue, 0).await, 0);
    assert_eq!(broker.wait_depth(&broker.topology.downloads, 0).await, 0);
    assert_eq!(db.count("SELECT 1 FROM candidate_attachments WHERE status = 'stored'").await, 5);
    assert_eq!((files.hits("cv.pdf"), files.hits("offer.docx"), files.hits("r1")), (1, 1, 1));
    worker.stop().await;
}

#[tokio::test]
async fn dead_links_are_recorded_as_failed_and_the_candidate_is_stored() {
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    let tripwire = Tripwire::bind("127.0.0.2:0").await.expect("bind 127.0.0.2");
    let files = FileServer::start(&format!("http://{}/cv.pdf", tripwire.addr)).await;
    broker.declare().await;
    let worker = TestWorker::spawn_with_test_lookup(&settings(&broker, &db)).await;
    let offers = json!([
        files.url("big.bin"),
        files.url("loop1"),
        files.url("to-blocked"),
        "ftp://127.0.0.1/x",
        format!("http://user:pw@{}/cv.pdf", files.addr)
    ]);
    broker
        .publish(
            &Meta::new("ak", helpers::now(), "dead-links", Utc::now()),
            &payload("dead-links", &files.url("missing"), "", offers),
        )
        .await;
    assert_eq!(db.wait_count("SELECT 1 FROM candidates", 1, WAIT).await, 1, "the candidate is stored anyway");
    assert_eq!(db.wait_count("SELECT 1 FROM candidate_attachments WHERE status = 'failed'", 6, WAIT).await, 6);

    let got = rows(&db, "dead-links").await;
    let error = |url: String| {
        let r = got.iter().find(|r| r.0 == url).unwrap_or_else(|| panic!("a row for {url}: {got:?}"));
        assert_eq!(r.1, "failed", "{r:?}");
        assert_eq!(r.5, None, "no storage key for a failed download");
        r.6.clone().unwrap()
    };
    assert!(error(files.url("missing")).contains("404"));
    assert!(error(files.url("big.bin")).contains("cap"), "cap enforced without Content-Length");
    assert!(error(files.url("loop1")).contains("redirect"));
    assert!(error(files.url("to-blocked")).contains("blocked"));
    assert!(error("ftp://127.0.0.1/x".into()).contains("scheme"));
    assert!(error(format!("http://user:pw@{}/cv.pdf", files.addr)).contains("user-info"));
    assert_eq!(tripwire.connections(), 0, "the redirect to 127.0.0.2 never connected");
    assert_eq!(stored_files(&broker.prefix), 0, "no partial file left behind");
    assert!(
        std::fs::read_dir(attachments_dir(&broker.prefix).join(".tmp")).map(|d| d.count()).unwrap_or(0) == 0,
        "temporary files are removed"
    );
    worker.stop().await;
}

#[tokio::test]
async fn blocked_addresses_are_refused_without_connecting() {
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    let v4 = Tripwire::bind("127.0.0.2:0").await.expect("bind 127.0.0.2");
    let p = v4.addr.port();
    let v6 = Tripwire::bind("[::1]:0").await;
    broker.declare().await;
    let worker = TestWorker::spawn_with_test_lookup(&settings(&broker, &db)).await;
    let mut urls = vec![
        format!("http://127.0.0.2:{p}/x"),
        format!("http://[::ffff:127.0.0.2]:{p}/x"),
        format!("http://2130706434:{p}/x"),
        format!("http://0x7f000002:{p}/x"),
        format!("http://evil.test:{p}/x"),
    ];
    if let Some(v6) = &v6 {
        urls.push(format!("http://[::1]:{}/x", v6.addr.port()));
    }
    broker.publish(&Meta::new("ak", helpers::now(), "ssrf", Utc::now()), &payload("ssrf", "", "", json!(urls))).await;
    let n = urls.len() as i64;
    assert_eq!(db.wait_count("SELECT 1 FROM candidate_attachments WHERE status = 'failed'", n, WAIT).await, n);
    let got = rows(&db, "ssrf").await;
    assert_eq!(got.len(), urls.len());
    for r in &got {
        assert_eq!(r.1, "failed", "{r:?}");
        assert!(r.6.as_deref().unwrap_or("").contains("blocked"), "{r:?}");
    }
    assert_eq!(v4.connections(), 0, "nothing reached 127.0.0.2");
    assert_eq!(v6.map(|t| t.connections()).unwrap_or(0), 0, "nothing reached ::1");
    worker.stop().await;
}

#[tokio::test]
async fn a_server_error_is_retried_and_then_stored() {
    let t = Setup::start(|_| {}).await;
    t.publish("flaky", 0, &t.files.url("flaky"), json!("")).await;
    assert_eq!(t.db.wait_count("SELECT 1 FROM candidate_attachments WHERE status = 'stored'", 1, WAIT).await, 1);
    assert_eq!(t.files.hits("flaky"), 2, "500 first, then 200 on the retry");
    assert_eq!(t.db.count("SELECT 1 FROM submissions WHERE outcome = 'applied'").await, 1);
    t.worker.stop().await;
}

#[tokio::test]
async fn an_endless_body_is_cut_at_the_deadline_and_retried_while_the_candidate_is_already_stored() {
    let t = Setup::start(|_| {}).await;
    let started = Instant::now();
    t.publish("slow", 0, &t.files.url("slow"), json!([])).await;
    assert_eq!(
        t.db.wait_count("SELECT 1 FROM candidates", 1, WAIT).await,
        1,
        "the candidate does not wait for its file"
    );
    assert!(t.files.slow_dropped_at().is_none(), "committed while the download is still running");
    assert_eq!(rows(&t.db, "slow").await[0].1, "pending");
    eventually(WAIT, "the slow download is abandoned", || async { t.files.slow_dropped_at().is_some() }).await;
    let took = t.files.slow_dropped_at().unwrap() - started;
    assert!(took < Duration::from_millis(2500), "cut at the 1 s deadline, took {took:?}");
    // Retried through the (short) schedule, each time cut at the deadline, then dead with its reason.
    assert_eq!(t.broker.wait_depth(&t.broker.topology.dead_queue, 1).await, 1);
    let dead = t.broker.drain(&t.broker.topology.dead_queue).await;
    let h = dead[0].delivery.properties.headers().clone().unwrap();
    assert_eq!(moka_ingest::broker::headers::text(&h, "x-error-kind").as_deref(), Some("attachment"));
    assert!(moka_ingest::broker::headers::text(&h, "x-error-message").unwrap().contains("gave up after 3 retries"));
    assert_eq!(t.files.hits("slow"), 4, "first attempt and three retries");
    let row = rows(&t.db, "slow").await.remove(0);
    assert_eq!(row.1, "failed");
    assert!(row.6.unwrap().contains("gave up after 3 retries"));
    assert_eq!(
        t.db.count("SELECT 1 FROM submissions WHERE outcome = 'applied'").await,
        1,
        "the candidate is untouched"
    );
    t.worker.stop().await;
}

#[tokio::test]
async fn a_burst_of_candidates_never_has_more_downloads_at_one_host_than_its_limit() {
    let t = Setup::start(|s| s.attachments.per_host = 3).await;
    for i in 0..20 {
        let id = format!("burst-{i}");
        let body =
            payload(&id, &t.files.url(&format!("held-cv-{i}")), &t.files.url(&format!("held-fb-{i}")), json!([]));
        t.broker.publish(&Meta::new("ak", helpers::now(), &id, Utc::now()), &body).await;
    }
    assert_eq!(t.db.wait_count("SELECT 1 FROM candidate_attachments WHERE status = 'stored'", 40, WAIT).await, 40);
    assert_eq!(t.files.held_peak(), 3, "never more than the per-host limit at once, and the limit is used");
    t.worker.stop().await;
}

#[tokio::test]
async fn a_host_that_answers_429_with_retry_after_is_not_asked_again_before_that() {
    let t = Setup::start(|_| {}).await;
    // The test schedule's delays (200, 400, 800 ms) are all shorter than the 2 s asked for.
    t.publish("busy", 0, &t.files.url("busy"), json!([])).await;
    assert_eq!(t.db.wait_count("SELECT 1 FROM candidate_attachments WHERE status = 'stored'", 1, WAIT).await, 1);
    let times = t.files.times("busy");
    assert_eq!(times.len(), 2, "429, then 200");
    let waited = times[1] - times[0];
    assert!(waited >= Duration::from_secs(2), "asked again after {waited:?}, before the 2 s of Retry-After");
    t.worker.stop().await;
}

#[tokio::test]
async fn a_newer_submission_while_downloads_are_pending_ends_with_its_own_links_only() {
    // The slow file completes, after 2 s.
    let t = Setup::start(|s| s.attachments.total_timeout_ms = 5000).await;
    let older = payload("newer", &t.files.url("slow2s"), "", json!([t.files.url("photo.png")]));
    t.broker.publish(&Meta::new("ak", helpers::now(), "newer", Utc::now()), &older).await;
    eventually(WAIT, "the older submission's slow download starts", || async { t.files.hits("slow2s") == 1 }).await;
    assert_eq!(t.db.wait_count("SELECT 1 FROM candidate_attachments WHERE status = 'stored'", 1, WAIT).await, 1);
    let newer = payload("newer", &t.files.url("cv.pdf"), "", json!([t.files.url("photo.png")]));
    t.broker.publish(&Meta::new("ak", helpers::now() + 1, "newer", Utc::now()), &newer).await;
    assert_eq!(t.db.wait_count("SELECT 1 FROM submissions WHERE outcome = 'applied'", 2, WAIT).await, 2);
    // The older download completes after the newer submission dropped its link: it finds no row to settle.
    eventually(WAIT, "the slow download is done", || async {
        t.files.times("slow2s").first().is_some_and(|t| t.elapsed() > Duration::from_millis(2500))
    })
    .await;
    assert_eq!(t.files.hits("slow2s"), 1, "downloaded once, completely");
    assert_eq!(t.broker.wait_depth(&t.broker.topology.downloads, 0).await, 0);
    let got = rows(&t.db, "newer").await;
    let urls: Vec<(&str, &str)> = got.iter().map(|r| (r.0.as_str(), r.1.as_str())).collect();
    let (cv, png) = (t.files.url("cv.pdf"), t.files.url("photo.png"));
    let mut want = vec![(cv.as_str(), "stored"), (png.as_str(), "stored")];
    want.sort();
    assert_eq!(urls, want, "the dropped link was not resurrected by its late download");
    assert_eq!(t.files.hits("photo.png"), 1, "a link kept by the newer submission is fetched once");
    t.worker.stop().await;
}
