//! Hostile and broken input, and a database that stays away: every message ends stored or dead
//! with the right reason, at once, without dragging its neighbours through retries, and the
//! worker's memory follows its configuration, not the payload's shape.

use std::time::Duration;

use rand::{distributions::Alphanumeric, Rng};
use serde_json::json;

use crate::{
    failures::{dead_messages, publish},
    helpers::{
        candidate_payload,
        poll::eventually,
        process::{free_port, service, wait_200},
        proxy::Proxy,
        worker_settings, TestBroker, TestDb, TestWorker,
    },
};

const WAIT: Duration = Duration::from_secs(30);

/// One lane, so that the messages published before the worker starts share a batch.
const ONE_LANE: (&str, &str) = ("worker.concurrency", "1");

/// Publishes three neighbours, `bad`, three more neighbours; returns the bad one's meta.
async fn sandwich(broker: &TestBroker, bad_id: &str, bad: &str) -> moka_ingest::broker::envelope::Meta {
    for i in 0..3 {
        publish(broker, &format!("n-{i}"), &candidate_payload(&format!("n-{i}"), "neighbour")).await;
    }
    let meta = publish(broker, bad_id, bad).await;
    for i in 3..6 {
        publish(broker, &format!("n-{i}"), &candidate_payload(&format!("n-{i}"), "neighbour")).await;
    }
    meta
}

/// The six neighbours were applied at their first attempt, and nothing waits for a retry.
async fn neighbours_applied_first_time(broker: &TestBroker, db: &TestDb) {
    let applied = "SELECT 1 FROM submissions WHERE outcome = 'applied' AND moka_id LIKE 'n-%'";
    assert_eq!(db.wait_count(applied, 6, WAIT).await, 6, "neighbours applied");
    assert_eq!(db.count(&format!("{applied} AND attempts = 1")).await, 6, "neighbours applied at the first attempt");
    assert_eq!(broker.retry_depth().await, 0, "nothing waits for a retry");
}

fn random_text(len: usize) -> String {
    rand::thread_rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect()
}

#[tokio::test]
async fn a_nul_in_the_id_is_dead_at_once_as_database_with_its_sqlstate_and_a_submissions_row() {
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    broker.declare().await;
    let id = "nul\0id";
    let bad = sandwich(&broker, id, &candidate_payload(id, "张三")).await;
    let worker = TestWorker::spawn(&worker_settings(&broker.prefix, &db, &[ONE_LANE])).await;

    assert_eq!(broker.wait_depth(&broker.topology.dead_queue, 1).await, 1, "dead-lettered within seconds");
    let dead = dead_messages(&broker).await;
    assert_eq!(dead[0].message_id, bad.message_id.to_string());
    assert_eq!(dead[0].reason, "database", "{dead:?}");
    assert!(dead[0].error.contains("22021"), "the SQLSTATE is named: {}", dead[0].error);
    assert_eq!(dead[0].attempts, 1, "no retry");
    neighbours_applied_first_time(&broker, &db).await;
    let row = db
        .client
        .query_one("SELECT moka_id, error->>'kind', error->>'message' FROM submissions WHERE outcome = 'dead'", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), r"nul\u0000id", "the id, NUL escaped");
    assert_eq!(row.get::<_, String>(1), "database");
    assert!(row.get::<_, String>(2).contains("22021"));
    broker.assert_accounted(&db, 7).await;
    worker.stop().await;
}

#[tokio::test]
async fn an_id_the_index_cannot_hold_is_dead_at_once_and_its_neighbours_are_applied_at_the_first_attempt() {
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    broker.declare().await;
    // Random text, which PostgreSQL cannot compress below the index's 2704-byte row limit.
    let id = random_text(3000);
    sandwich(&broker, &id, &candidate_payload(&id, "张三")).await;
    // The id cap would refuse this id before the database sees it: raised, to reach the database.
    let settings = worker_settings(&broker.prefix, &db, &[ONE_LANE, ("limits.id_max_bytes", "5000")]);
    let worker = TestWorker::spawn(&settings).await;

    assert_eq!(broker.wait_depth(&broker.topology.dead_queue, 1).await, 1, "dead-lettered within seconds");
    let dead = dead_messages(&broker).await;
    assert_eq!((dead[0].reason.as_str(), dead[0].attempts), ("database", 1), "{}", dead[0].error);
    assert!(dead[0].error.contains("54000"), "the SQLSTATE is named: {}", dead[0].error);
    neighbours_applied_first_time(&broker, &db).await;
    let recorded: String = db
        .client
        .query_one("SELECT moka_id FROM submissions WHERE outcome = 'dead' AND error->>'message' LIKE '%54000%'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(recorded.starts_with(&id[..100]) && recorded.len() < 2000, "recorded, the id shortened to fit");
    broker.assert_accounted(&db, 7).await;
    worker.stop().await;
}

#[tokio::test]
async fn an_id_longer_than_the_cap_is_a_validation_failure_naming_the_id() {
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    broker.declare().await;
    let id = random_text(3000);
    sandwich(&broker, &id, &candidate_payload(&id, "张三")).await;
    let worker = TestWorker::spawn(&worker_settings(&broker.prefix, &db, &[ONE_LANE])).await;
    assert_eq!(broker.wait_depth(&broker.topology.dead_queue, 1).await, 1);
    let dead = dead_messages(&broker).await;
    assert_eq!((dead[0].reason.as_str(), dead[0].attempts), ("validation", 1), "{}", dead[0].error);
    assert!(dead[0].error.contains("id: is 3000 bytes long, at most 128"), "{}", dead[0].error);
    neighbours_applied_first_time(&broker, &db).await;
    broker.assert_accounted(&db, 7).await;
    worker.stop().await;
}

/// The value of a counter on a /metrics page (0 when absent).
fn counter(metrics: &str, name: &str) -> f64 {
    metrics.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

#[tokio::test]
async fn with_the_database_away_past_the_schedule_a_message_is_dead_as_database_and_not_as_poison() {
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    moka_ingest::store::migrate::run(&worker_settings(&broker.prefix, &db, &[]).database_url).await.unwrap();
    broker.declare().await;
    let proxy = Proxy::start("127.0.0.1:5432").await;
    proxy.cut();
    let metrics_port = free_port();
    // A process of its own, so that its /metrics counts only this test's messages.
    let mut worker = service(
        "worker",
        &broker.prefix,
        &db,
        &[
            ("DATABASE_URL", TestDb::url_via(&db.schema, &proxy.addr.to_string())),
            ("MOKA_INGEST_WORKER__MIGRATE_ON_START", "false".into()),
            ("MOKA_INGEST_RETRY__DB_ATTEMPTS", "1".into()),
            ("MOKA_INGEST_WORKER_LISTEN", format!("127.0.0.1:{metrics_port}")),
        ],
    );
    assert!(wait_200(&format!("http://127.0.0.1:{metrics_port}/readyz"), WAIT).await);
    for i in 0..2 {
        publish(&broker, &format!("away-{i}"), &candidate_payload(&format!("away-{i}"), "x")).await;
    }
    let dead_letters = || broker.depth(&broker.topology.dead_queue);
    eventually(WAIT, "both dead after the schedule", || async { dead_letters().await >= 2 }).await;
    let dead = dead_messages(&broker).await;
    for d in &dead {
        assert_eq!(d.reason, "database", "{d:?}");
        assert!(d.error.contains("gave up after 3 retries"), "{}", d.error);
        assert_eq!(d.attempts, 4, "the first attempt and three retries: {d:?}");
    }
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let metrics =
        client.get(format!("http://127.0.0.1:{metrics_port}/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(counter(&metrics, "moka_worker_poison_returns_total"), 0.0, "no panic, no poison: {metrics}");
    assert_eq!(counter(&metrics, "moka_worker_dead_letters_total{reason=\"database\"}"), 2.0, "{metrics}");
    assert_eq!(broker.retry_depth().await, 0);
    worker.start_kill().unwrap();
    worker.wait().await.unwrap();
}

#[tokio::test]
async fn a_hundred_thousand_empty_education_entries_are_a_validation_failure_naming_the_field() {
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    broker.declare().await;
    let mut v: serde_json::Value = serde_json::from_str(&candidate_payload("many", "张三")).unwrap();
    v["educationInfo"] = serde_json::Value::Array(vec![json!({}); 100_000]);
    sandwich(&broker, "many", &v.to_string()).await;
    let worker = TestWorker::spawn(&worker_settings(&broker.prefix, &db, &[ONE_LANE])).await;
    assert_eq!(broker.wait_depth(&broker.topology.dead_queue, 1).await, 1);
    let dead = dead_messages(&broker).await;
    assert_eq!(dead[0].reason, "validation", "{dead:?}");
    assert!(dead[0].error.contains("educationInfo: has 100000 entries, at most 50"), "{}", dead[0].error);
    neighbours_applied_first_time(&broker, &db).await;
    assert_eq!(db.count("SELECT 1 FROM candidate_educations WHERE moka_id = 'many'").await, 0);
    broker.assert_accounted(&db, 7).await;
    worker.stop().await;
}

#[tokio::test]
async fn warnings_are_capped_with_a_last_one_that_counts_the_rest_and_a_500_digit_phone_is_warned_about() {
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    broker.declare().await;
    let mut v: serde_json::Value = serde_json::from_str(&candidate_payload("odd", "张三")).unwrap();
    // 50 entries (the cap), two unreadable dates each: 100 warnings.
    v["educationInfo"] = serde_json::Value::Array(vec![json!({"startDate": "x", "endDate": "y"}); 50]);
    let phone = "1".repeat(500);
    v["phone"] = json!(phone);
    let long_name = "名".repeat(3000);
    v["name"] = json!(long_name);
    publish(&broker, "odd", &v.to_string()).await;
    let worker = TestWorker::spawn(&worker_settings(&broker.prefix, &db, &[])).await;
    assert_eq!(db.wait_count("SELECT 1 FROM submissions WHERE outcome = 'applied'", 1, WAIT).await, 1);
    let row = db
        .client
        .query_one("SELECT phone, phone_raw, name, warnings, raw_payload->>'name' FROM candidates", &[])
        .await
        .unwrap();
    assert_eq!((row.get::<_, String>(0), row.get::<_, String>(1)), (phone.clone(), phone), "kept as given");
    assert_eq!(row.get::<_, String>(2).chars().count(), 1000, "a long text is cut");
    assert_eq!(row.get::<_, String>(4), long_name, "the raw payload keeps it whole");
    let warnings: Vec<serde_json::Value> = serde_json::from_value(row.get(3)).unwrap();
    assert_eq!(warnings.len(), 51, "50 warnings and one that counts the rest");
    let first: Vec<(&str, &str)> =
        warnings[..2].iter().map(|w| (w["field"].as_str().unwrap(), w["message"].as_str().unwrap())).collect();
    assert_eq!(first[0].0, "name");
    assert_eq!(first[1], ("phone", "is not a phone number"));
    assert_eq!(warnings[50], json!({"field": "warnings", "message": "52 more warnings not shown"}));
    assert_eq!(db.count("SELECT 1 FROM candidate_educations WHERE moka_id = 'odd'").await, 50);
    broker.assert_accounted(&db, 1).await;
    worker.stop().await;
}

#[tokio::test]
async fn a_batch_stops_growing_once_its_bodies_reach_the_byte_budget() {
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    broker.declare().await;
    for i in 0..10 {
        let mut v: serde_json::Value = serde_json::from_str(&candidate_payload(&format!("big-{i}"), "x")).unwrap();
        v["notes"] = json!("x".repeat(300_000));
        publish(&broker, &format!("big-{i}"), &v.to_string()).await;
    }
    let settings = worker_settings(
        &broker.prefix,
        &db,
        &[ONE_LANE, ("worker.batch_wait_ms", "300"), ("limits.batch_max_bytes", "1048576")],
    );
    let worker = TestWorker::spawn(&settings).await;
    assert_eq!(db.wait_count("SELECT 1 FROM submissions WHERE outcome = 'applied'", 10, WAIT).await, 10);
    // A batch is one transaction, and now() is its start: one processed_at per batch.
    let largest: i64 = db
        .client
        .query_one("SELECT max(n) FROM (SELECT count(*) AS n FROM submissions GROUP BY processed_at) b", &[])
        .await
        .unwrap()
        .get(0);
    assert!(largest <= 4, "at most 4 bodies of 300 kB reach 1 MiB; a batch took {largest}");
    broker.assert_accounted(&db, 10).await;
    worker.stop().await;
}
