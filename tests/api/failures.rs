//! Failures end to end: retries through delay queues, the dead-letter queue and replay, poison
//! messages, a killed worker. Each test ends by accounting for every message it sent.

use std::{process::Stdio, time::Duration};

use chrono::Utc;
use moka_ingest::{broker::envelope::Meta, dlq};
use serde_json::json;
use tokio::process::Command;

use crate::helpers::{
    self, candidate_payload,
    files::FileServer,
    poll::eventually,
    process::{free_port, service, wait_200, BIN},
    proxy::Proxy,
    worker_settings, TestBroker, TestDb, TestWorker, AMQP_URL, TEST_RETRY_SCHEDULE,
};

const WAIT: Duration = Duration::from_secs(30);

fn with_resume(id: &str, url: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&candidate_payload(id, "张三")).unwrap();
    v["resumeUrl"] = json!(url);
    v.to_string()
}

pub(crate) async fn publish(broker: &TestBroker, id: &str, payload: &str) -> Meta {
    let meta = Meta::new("ak", helpers::now(), id, Utc::now());
    broker.publish(&meta, payload).await;
    meta
}

/// Runs `moka-ingest dlq ARGS` against the test's namespace; returns (success, stdout, stderr).
async fn dlq_cli(broker: &TestBroker, db: &TestDb, schedule: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .arg("dlq")
        .args(args)
        .env("MOKA_INGEST_QUEUE_PREFIX", &broker.prefix)
        // The test's own schema: the commands move the console's index of dead letters too.
        .env("DATABASE_URL", &db.url)
        .env("AMQP_URL", AMQP_URL)
        .env("MOKA_INGEST_KEYS", format!("{}:{}", helpers::ACCESS_KEY, helpers::SECRET))
        .env("MOKA_INGEST_RETRY__SCHEDULE", schedule)
        .env("MOKA_INGEST_RETRY__DOWNLOAD_SCHEDULE", schedule)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What the dead-letter queue holds, without removing it.
pub(crate) async fn dead_messages(broker: &TestBroker) -> Vec<dlq::DeadMessage> {
    let ch = broker._conn.create_channel().await.unwrap();
    let mut out = Vec::new();
    while let Some(m) =
        ch.basic_get(&broker.topology.dead_queue, lapin::options::BasicGetOptions { no_ack: false }).await.unwrap()
    {
        out.push(dlq::describe(&m.delivery.properties, &m.delivery.data));
    }
    ch.close(200, "put back").await.unwrap();
    out
}

#[tokio::test]
async fn a_database_outage_is_retried_through_the_delay_queues_and_nothing_dies() {
    let schedule = "300ms,600ms,1200ms,2400ms,4800ms";
    let (broker, db) = (TestBroker::with_schedule(schedule).await, TestDb::new().await);
    moka_ingest::store::migrate::run(&worker_settings(&broker.prefix, &db, &[]).database_url).await.unwrap();
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let url = TestDb::url_via(&db.schema, &proxy.addr.to_string());
    let settings = worker_settings(
        &broker.prefix,
        &db,
        &[
            ("database_url", &url),
            ("worker.migrate_on_start", "false"),
            ("retry.schedule", schedule),
            ("retry.db_attempts", "2"),
        ],
    );
    broker.declare().await;
    let worker = TestWorker::spawn(&settings).await;
    for i in 0..5 {
        publish(&broker, &format!("db-{i}"), &candidate_payload(&format!("db-{i}"), "x")).await;
    }
    assert_eq!(db.wait_count("SELECT 1 FROM submissions", 5, WAIT).await, 5);

    proxy.cut();
    for i in 5..25 {
        publish(&broker, &format!("db-{i}"), &candidate_payload(&format!("db-{i}"), "x")).await;
    }
    // While the database is away the messages wait in the delay queues, not in the worker.
    eventually(WAIT, "messages move to the delay queues", || async { broker.retry_depth().await > 0 }).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(db.count("SELECT 1 FROM submissions").await, 5);
    proxy.restore();

    assert_eq!(db.wait_count("SELECT 1 FROM submissions WHERE outcome = 'applied'", 25, WAIT).await, 25);
    assert!(db.count("SELECT 1 FROM submissions WHERE attempts > 1").await > 0, "the outage cost retries");
    assert_eq!(broker.depth(&broker.topology.dead_queue).await, 0, "none dead");
    broker.assert_accounted(&db, 25).await;
    worker.stop().await;
}

#[tokio::test]
async fn an_attachment_server_that_recovers_within_the_schedule_is_stored() {
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    let files = FileServer::start("http://127.0.0.2:1/").await;
    broker.declare().await;
    let worker = TestWorker::spawn(&worker_settings(&broker.prefix, &db, &[("attachments.allow", "127.0.0.1")])).await;
    publish(&broker, "recovers", &with_resume("recovers", &files.url("flaky3"))).await;
    assert_eq!(db.wait_count("SELECT 1 FROM candidate_attachments WHERE status = 'stored'", 1, WAIT).await, 1);
    assert_eq!(files.hits("flaky3"), 4, "three 500s, retried after 200, 400 and 800 ms, then 200");
    let attempts: i32 = db.client.query_one("SELECT attempts FROM submissions", &[]).await.unwrap().get(0);
    assert_eq!(attempts, 1, "the candidate was stored at its first attempt; only the download was retried");
    broker.assert_accounted(&db, 1).await;
    worker.stop().await;
}

#[tokio::test]
async fn past_the_schedule_a_download_is_dead_with_its_reason_and_a_replay_stores_it() {
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    let files = FileServer::start("http://127.0.0.2:1/").await;
    broker.declare().await;
    let worker = TestWorker::spawn(&worker_settings(&broker.prefix, &db, &[("attachments.allow", "127.0.0.1")])).await;
    publish(&broker, "down", &with_resume("down", &files.url("switch"))).await;
    assert_eq!(broker.wait_depth(&broker.topology.dead_queue, 1).await, 1);
    assert_eq!(files.hits("switch"), 4, "first attempt and three retries");
    assert_eq!(db.count("SELECT 1 FROM submissions WHERE outcome = 'applied'").await, 1, "the candidate is stored");
    let failed =
        "SELECT 1 FROM candidate_attachments WHERE status = 'failed' AND error LIKE 'gave up after 3 retries%'";
    assert_eq!(db.wait_count(failed, 1, WAIT).await, 1, "its row says why");

    // The operator reads why…
    let (ok, out, err) = dlq_cli(&broker, &db, TEST_RETRY_SCHEDULE, &["list", "--json"]).await;
    assert!(ok, "{err}");
    let listed: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.len(), 1, "{out}");
    assert_eq!((listed[0]["moka_id"].as_str(), listed[0]["reason"].as_str()), (Some("down"), Some("attachment")));
    let id = listed[0]["message_id"].as_str().unwrap().to_owned();
    assert_eq!(broker.wait_depth(&broker.topology.dead_queue, 1).await, 1, "listing removes nothing");
    let (ok, out, _) = dlq_cli(&broker, &db, TEST_RETRY_SCHEDULE, &["show", &id]).await;
    assert!(ok);
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        shown["error"].as_str().unwrap().contains("gave up after 3 retries")
            && shown["error"].as_str().unwrap().contains("503"),
        "{shown}"
    );
    assert_eq!(shown["attempts"], 4);
    assert!(shown["first_failed_at"].as_str().is_some() && shown["failed_by"].as_str().is_some());
    assert!(shown["payload"].as_str().unwrap().contains(&files.url("switch")), "the link: {shown}");

    // …fixes the cause, and replays.
    files.switch_on();
    let (ok, _, err) =
        dlq_cli(&broker, &db, TEST_RETRY_SCHEDULE, &["replay", "--dry-run", "--reason", "attachment"]).await;
    assert!(ok && err.contains("dry run") && err.contains("replayed 0"), "{err}");
    assert_eq!(broker.wait_depth(&broker.topology.dead_queue, 1).await, 1, "a dry run changes nothing");
    let (ok, _, err) = dlq_cli(&broker, &db, TEST_RETRY_SCHEDULE, &["replay", "--candidate", "down"]).await;
    assert!(ok, "{err}");
    assert!(err.contains("replayed 1, failed to replay 0"), "{err}");
    assert_eq!(db.wait_count("SELECT 1 FROM candidate_attachments WHERE status = 'stored'", 1, WAIT).await, 1);
    assert_eq!(files.hits("switch"), 5);
    let (ok, _, err) = dlq_cli(&broker, &db, TEST_RETRY_SCHEDULE, &["show", &id]).await;
    assert!(!ok && err.contains("no dead message"), "gone from the dead-letter queue: {err}");
    broker.assert_accounted(&db, 1).await;
    worker.stop().await;
}

#[tokio::test]
async fn a_validation_failure_is_dead_at_once_with_every_reason_and_no_retry() {
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    broker.declare().await;
    let worker = TestWorker::spawn(&worker_settings(&broker.prefix, &db, &[])).await;
    let payload = r#"{"id":"invalid","phone":"1","operator":{}}"#;
    let meta = publish(&broker, "invalid", payload).await;
    assert_eq!(broker.wait_depth(&broker.topology.dead_queue, 1).await, 1);
    let dead = dead_messages(&broker).await;
    // What `dlq show` prints comes from the envelope: ids, tonce, receive time, the bare payload.
    assert_eq!(
        (dead[0].moka_id.as_str(), dead[0].tonce, dead[0].payload.as_str()),
        ("invalid", Some(meta.tonce), payload)
    );
    assert_eq!(dead[0].received_at, Some(meta.received_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)));
    assert_eq!(dead[0].reason, "validation");
    assert_eq!(dead[0].attempts, 1, "no retries");
    for field in ["name: is missing", "email: is missing", "jobTitle: is missing"] {
        assert!(dead[0].error.contains(field), "{}", dead[0].error);
    }
    assert_eq!(broker.retry_depth().await, 0);
    broker.assert_accounted(&db, 1).await;
    worker.stop().await;
}

async fn poison(fault: &str) {
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    broker.declare().await;
    for i in 0..5 {
        publish(&broker, &format!("n-{i}"), &candidate_payload(&format!("n-{i}"), "neighbour")).await;
    }
    let mut bad: serde_json::Value = serde_json::from_str(&candidate_payload("poison", "x")).unwrap();
    bad["__moka_fault"] = json!(fault);
    let poison = publish(&broker, "poison", &bad.to_string()).await;
    for i in 5..10 {
        publish(&broker, &format!("n-{i}"), &candidate_payload(&format!("n-{i}"), "neighbour")).await;
    }
    let worker = TestWorker::spawn(&worker_settings(&broker.prefix, &db, &[("worker.batch_timeout_ms", "500")])).await;
    assert_eq!(
        db.wait_count("SELECT 1 FROM submissions WHERE outcome = 'applied'", 10, WAIT).await,
        10,
        "neighbours unaffected"
    );
    assert_eq!(broker.wait_depth(&broker.topology.dead_queue, 1).await, 1);
    let dead = dead_messages(&broker).await;
    assert_eq!(
        (dead[0].message_id.as_str(), dead[0].reason.as_str()),
        (poison.message_id.to_string().as_str(), "delivery_limit")
    );
    let kind: String =
        db.client.query_one("SELECT error->>'kind' FROM submissions WHERE outcome = 'dead'", &[]).await.unwrap().get(0);
    assert_eq!(kind, "delivery_limit", "recorded before its last delivery");
    broker.assert_accounted(&db, 11).await;
    worker.stop().await;
}

#[tokio::test]
async fn a_lane_that_panics_ends_the_worker_role_with_an_error_instead_of_leaving_it_half_alive() {
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    broker.declare().await;
    let mut bad: serde_json::Value = serde_json::from_str(&candidate_payload("lane", "x")).unwrap();
    bad["__moka_fault"] = json!("lane");
    publish(&broker, "lane", &bad.to_string()).await;
    let settings = worker_settings(&broker.prefix, &db, &[("worker.listen", "127.0.0.1:0")]);
    let run = moka_ingest::app::run_worker(&settings, tokio_util::sync::CancellationToken::new());
    let err = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the worker stops by itself, without a shutdown signal")
        .expect_err("and says it failed");
    let chain = format!("{:#}", anyhow::Error::from(err));
    assert!(chain.contains("worker failed") && chain.contains("panicked"), "{chain}");
}

#[tokio::test]
async fn a_worker_process_whose_lane_panics_exits_with_an_error() {
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    broker.declare().await;
    let mut bad: serde_json::Value = serde_json::from_str(&candidate_payload("lane-p", "x")).unwrap();
    bad["__moka_fault"] = json!("lane");
    publish(&broker, "lane-p", &bad.to_string()).await;
    let listen = format!("127.0.0.1:{}", free_port());
    let mut child = service("worker", &broker.prefix, &db, &[("MOKA_INGEST_WORKER_LISTEN", listen)]);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the process ends by itself, so that an orchestrator restarts it")
        .unwrap();
    assert_eq!(status.code(), Some(1), "{status}");
}

#[tokio::test]
async fn a_message_that_crashes_the_worker_is_dead_after_the_delivery_limit_and_its_neighbours_are_stored() {
    poison("panic").await;
}

#[tokio::test]
async fn a_message_that_hangs_the_worker_is_dead_after_the_delivery_limit_and_its_neighbours_are_stored() {
    poison("hang").await;
}

#[tokio::test]
async fn a_replay_where_some_fail_again_replays_each_message_once() {
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    let files = FileServer::start("http://127.0.0.2:1/").await;
    broker.declare().await;
    let worker = TestWorker::spawn(&worker_settings(&broker.prefix, &db, &[("attachments.allow", "127.0.0.1")])).await;
    let again = [
        publish(&broker, "again-1", r#"{"id":"again-1"}"#).await,
        publish(&broker, "again-2", r#"{"id":"again-2"}"#).await,
    ];
    publish(&broker, "heal-1", &with_resume("heal-1", &files.url("switch"))).await;
    publish(&broker, "heal-2", &with_resume("heal-2", &files.url("switch"))).await;
    assert_eq!(broker.wait_depth(&broker.topology.dead_queue, 4).await, 4);

    files.switch_on();
    let (ok, _, err) = dlq_cli(&broker, &db, TEST_RETRY_SCHEDULE, &["replay", "--all"]).await;
    assert!(ok, "{err}");
    assert!(err.contains("replayed 4, failed to replay 0"), "{err}");
    assert_eq!(db.wait_count("SELECT 1 FROM submissions WHERE outcome = 'applied'", 2, WAIT).await, 2);
    assert_eq!(broker.wait_depth(&broker.topology.dead_queue, 2).await, 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut dead: Vec<String> = dead_messages(&broker).await.into_iter().map(|m| m.message_id).collect();
    dead.sort();
    let mut want: Vec<String> = again.iter().map(|m| m.message_id.to_string()).collect();
    want.sort();
    assert_eq!(dead, want, "the two that failed again are back once each, not replayed twice");
    let replayed = dead_messages(&broker).await;
    assert!(replayed.iter().all(|m| m.attempts == 1), "fresh attempt count after a replay");
    broker.assert_accounted(&db, 4).await;
    // The console's index moved with the queue: the healed two are replayed (by the command's
    // user), the two that failed again are dead again.
    let state =
        |id: &str, state: &str| format!("SELECT 1 FROM dead_letters WHERE moka_id = '{id}' AND state = '{state}'");
    assert_eq!(db.count(&state("heal-1", "replayed")).await + db.count(&state("heal-2", "replayed")).await, 2);
    assert_eq!(db.count("SELECT 1 FROM dead_letters WHERE state = 'replayed' AND changed_by LIKE 'cli:%'").await, 2);
    assert_eq!(db.wait_count(&state("again-1", "dead"), 1, WAIT).await + db.count(&state("again-2", "dead")).await, 2);

    let (ok, _, err) = dlq_cli(&broker, &db, TEST_RETRY_SCHEDULE, &["purge", "--all"]).await;
    assert!(!ok && err.contains("--yes"), "purge needs --yes: {err}");
    let (ok, _, err) =
        dlq_cli(&broker, &db, TEST_RETRY_SCHEDULE, &["purge", "--id", &again[0].message_id.to_string(), "--yes"]).await;
    assert!(ok && err.contains("purged 1"), "{err}");
    assert_eq!(broker.wait_depth(&broker.topology.dead_queue, 1).await, 1);
    assert_eq!(db.count(&state("again-1", "purged")).await, 1);
    worker.stop().await;
}

#[tokio::test]
async fn a_worker_killed_with_a_download_in_flight_loses_it_not_and_the_candidate_is_stored_once() {
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    let files = FileServer::start("http://127.0.0.2:1/").await;
    broker.declare().await;
    publish(&broker, "killed", &with_resume("killed", &files.url("slow2s"))).await;
    let spawn_worker = || {
        let port = free_port();
        let envs = [
            ("MOKA_INGEST_ATTACHMENTS_ALLOW", "127.0.0.1".to_string()),
            ("MOKA_INGEST_WORKER_LISTEN", format!("127.0.0.1:{port}")),
        ];
        (service("worker", &broker.prefix, &db, &envs), port)
    };
    let (mut first, _) = spawn_worker();
    eventually(WAIT, "the first worker starts the download", || async { files.hits("slow2s") > 0 }).await;
    assert_eq!(db.count("SELECT 1 FROM submissions WHERE outcome = 'applied'").await, 1, "committed before its file");
    first.start_kill().unwrap(); // SIGKILL
    first.wait().await.unwrap();
    assert_eq!(
        db.count("SELECT 1 FROM candidate_attachments WHERE status = 'pending'").await,
        1,
        "killed mid-download"
    );

    let (mut second, port) = spawn_worker();
    assert!(wait_200(&format!("http://127.0.0.1:{port}/readyz"), WAIT).await);
    assert_eq!(db.wait_count("SELECT 1 FROM candidate_attachments WHERE status = 'stored'", 1, WAIT).await, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(db.count("SELECT 1 FROM submissions").await, 1, "stored exactly once");
    assert_eq!(files.hits("slow2s"), 2, "the interrupted download is done again, once");
    broker.assert_accounted(&db, 1).await;
    second.start_kill().unwrap();
    second.wait().await.unwrap();
}
