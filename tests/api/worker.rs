//! The worker end to end, against the real RabbitMQ and PostgreSQL.

use std::time::Duration;

use chrono::{NaiveDate, Utc};
use moka_ingest::{broker::envelope::Meta, store};

use crate::helpers::{self, candidate_payload, signed, worker_settings, TestBroker, TestDb, TestIngress, TestWorker};

const INVALID: &str = r#"{"id":"bad-1","name":"","email":["x"],"operator":"李四","jobTitle":"dev"}"#;
const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_signed_request_becomes_a_normalized_candidate_through_ingress_and_worker() {
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    let settings = worker_settings(&broker.prefix, &db, &[]);
    let ingress = TestIngress::spawn(&settings).await;
    let worker = TestWorker::spawn(&settings).await;

    let answer = ingress.post_form(signed(&candidate_payload("c-1", "张三")).form_body()).await;
    assert_eq!(answer.code, 0);
    assert_eq!(db.wait_count("SELECT 1 FROM submissions WHERE outcome = 'applied'", 1, WAIT).await, 1);

    let row = db
        .client
        .query_one(
            "SELECT name, phone, phone_raw, email, gender, birth_year, married, academic_degree, academic_degree_raw,
                    job_title, operator_email, operator_phone, offer_info, warnings::text, raw_payload->>'name'
             FROM candidates WHERE moka_id = 'c-1'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "张三");
    assert_eq!((row.get::<_, String>(1), row.get::<_, String>(2)), ("+8613203030303".into(), "132-0303-0303".into()));
    assert_eq!(row.get::<_, String>(3), "zhang.san@example.com");
    assert_eq!(row.get::<_, Option<String>>(4).as_deref(), Some("男"));
    assert_eq!(row.get::<_, Option<i32>>(5), Some(1990));
    assert_eq!(row.get::<_, Option<String>>(6).as_deref(), Some("未婚"));
    assert_eq!(row.get::<_, Option<String>>(7).as_deref(), Some("硕士"), "derived from the highest education");
    assert_eq!(row.get::<_, Option<String>>(8), None);
    assert_eq!(row.get::<_, String>(9), "高级前端工程师");
    assert_eq!(row.get::<_, Option<String>>(10).as_deref(), Some("lisi@a.com"));
    assert_eq!(row.get::<_, Option<String>>(11).as_deref(), Some("+8615828748567"));
    assert_eq!(row.get::<_, Option<serde_json::Value>>(12), None, "offerInfo \"\" is null");
    assert_eq!(row.get::<_, String>(13), "[]");
    assert_eq!(row.get::<_, Option<String>>(14).as_deref(), Some("张三"));

    let edu = db
        .client
        .query("SELECT position, start_date, end_date, academic_degree, academic_degree_raw FROM candidate_educations WHERE moka_id = 'c-1' ORDER BY position", &[])
        .await
        .unwrap();
    assert_eq!(edu.len(), 2);
    assert_eq!(edu[0].get::<_, Option<NaiveDate>>(1), NaiveDate::from_ymd_opt(2007, 9, 1));
    assert_eq!(edu[0].get::<_, Option<NaiveDate>>(2), NaiveDate::from_ymd_opt(2011, 7, 1));
    assert_eq!(edu[0].get::<_, Option<String>>(3).as_deref(), Some("本科"));
    assert_eq!(edu[1].get::<_, Option<String>>(4).as_deref(), Some("硕士研究生"));
    let exp = db
        .client
        .query_one("SELECT start_date, is_current, end_raw FROM candidate_experiences WHERE moka_id = 'c-1'", &[])
        .await
        .unwrap();
    assert_eq!(exp.get::<_, Option<NaiveDate>>(0), NaiveDate::from_ymd_opt(2014, 5, 1));
    assert!(exp.get::<_, bool>(1), "至今 means current");
    assert_eq!(exp.get::<_, Option<String>>(2).as_deref(), Some("至今"));

    let sub = db.client.query_one("SELECT message_id::text, access_key, attempts FROM submissions", &[]).await.unwrap();
    assert_eq!(sub.get::<_, String>(0), answer.headers["x-moka-message-id"].to_str().unwrap());
    assert_eq!((sub.get::<_, String>(1), sub.get::<_, i32>(2)), (helpers::ACCESS_KEY.to_string(), 1));
    assert_eq!(broker.wait_depth(&broker.topology.queue, 0).await, 0, "acknowledged");
    ingress.stop().await;
    worker.stop().await;
}

#[tokio::test]
async fn the_same_message_delivered_twice_changes_nothing() {
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    let settings = worker_settings(&broker.prefix, &db, &[]);
    broker.declare().await;
    let meta = Meta::new("ak", helpers::now(), "dup-1", Utc::now());
    broker.publish(&meta, &candidate_payload("dup-1", "First")).await;
    let worker = TestWorker::spawn(&settings).await;
    assert_eq!(db.wait_count("SELECT 1 FROM submissions", 1, WAIT).await, 1);
    let before: chrono::DateTime<Utc> =
        db.client.query_one("SELECT updated_at FROM candidates", &[]).await.unwrap().get(0);

    broker.publish(&meta, &candidate_payload("dup-1", "First")).await;
    assert_eq!(broker.wait_depth(&broker.topology.queue, 0).await, 0, "the redelivery is consumed");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(db.count("SELECT 1 FROM submissions").await, 1);
    let after: chrono::DateTime<Utc> =
        db.client.query_one("SELECT updated_at FROM candidates", &[]).await.unwrap().get(0);
    assert_eq!(before, after, "the candidate was not touched");
    assert_eq!(db.count("SELECT 1 FROM candidate_educations").await, 2);
    worker.stop().await;
}

#[tokio::test]
async fn an_older_submission_after_a_newer_one_is_recorded_stale() {
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    let settings = worker_settings(&broker.prefix, &db, &[]);
    broker.declare().await;
    let worker = TestWorker::spawn(&settings).await;
    let t = helpers::now();
    let newer = Meta::new("ak", t, "ord-1", Utc::now());
    broker.publish(&newer, &candidate_payload("ord-1", "Newer")).await;
    assert_eq!(db.wait_count("SELECT 1 FROM submissions", 1, WAIT).await, 1);
    let older = Meta::new("ak", t - 10, "ord-1", Utc::now());
    broker.publish(&older, &candidate_payload("ord-1", "Older")).await;
    assert_eq!(db.wait_count("SELECT 1 FROM submissions", 2, WAIT).await, 2);

    let name: String =
        db.client.query_one("SELECT name FROM candidates WHERE moka_id = 'ord-1'", &[]).await.unwrap().get(0);
    assert_eq!(name, "Newer");
    let outcome: String = db
        .client
        .query_one(
            "SELECT outcome FROM submissions WHERE message_id = $1::text::uuid",
            &[&older.message_id.to_string()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(outcome, "stale");
    // Same tonce, later receive time: newer wins.
    let same_tonce_later = Meta::new("ak", t, "ord-1", Utc::now() + chrono::Duration::seconds(1));
    broker.publish(&same_tonce_later, &candidate_payload("ord-1", "Latest")).await;
    assert_eq!(db.wait_count("SELECT 1 FROM candidates WHERE name = 'Latest'", 1, WAIT).await, 1);
    worker.stop().await;
}

#[tokio::test]
async fn concurrent_updates_of_the_same_candidates_on_several_workers_neither_deadlock_nor_fail() {
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    let settings = worker_settings(&broker.prefix, &db, &[("worker.batch_size", "20"), ("worker.concurrency", "3")]);
    broker.declare().await;
    let base = helpers::now();
    let ids = ["hot-a", "hot-b", "hot-c", "hot-d"];
    let mut expected = std::collections::HashMap::new();
    // Tonces in a shuffled order, so that newer and older updates interleave across batches.
    for n in 0..400i64 {
        let id = ids[(n % 4) as usize];
        let tonce = base + (n * 7919) % 400;
        let name = format!("{id}-{tonce}");
        let e = expected.entry(id).or_insert((i64::MIN, String::new()));
        if tonce > e.0 {
            *e = (tonce, name.clone());
        }
        let meta = Meta::new("ak", tonce, id, Utc::now());
        broker.publish(&meta, &candidate_payload(id, &name)).await;
    }
    let workers = [TestWorker::spawn(&settings).await, TestWorker::spawn(&settings).await];
    assert_eq!(db.wait_count("SELECT 1 FROM submissions", 400, Duration::from_secs(60)).await, 400);
    assert_eq!(db.count("SELECT 1 FROM submissions WHERE outcome = 'dead'").await, 0);
    for (id, (_, name)) in expected {
        let got: String =
            db.client.query_one("SELECT name FROM candidates WHERE moka_id = $1", &[&id]).await.unwrap().get(0);
        assert_eq!(got, name, "{id} holds its newest submission");
    }
    assert!(db.count("SELECT 1 FROM submissions WHERE outcome = 'applied'").await >= 4);
    assert_eq!(db.count("SELECT 1 FROM candidate_educations").await, 8, "children replaced, not accumulated");
    for w in workers {
        w.stop().await;
    }
}

#[tokio::test]
async fn permanent_failures_go_to_the_dead_letter_queue_with_their_reason() {
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    let settings = worker_settings(&broker.prefix, &db, &[]);
    broker.declare().await;
    // 1. Validation: every bad field is named.
    let invalid = Meta::new("ak", helpers::now(), "bad-1", Utc::now());
    broker.publish(&invalid, INVALID).await;
    // 2. Not an envelope at all.
    broker.publish_raw(b"hello", lapin::BasicProperties::default()).await;
    // 3. Refused by PostgreSQL (jsonb cannot hold \u0000), while its batch neighbour is stored.
    let refused = Meta::new("ak", helpers::now(), "nul-1", Utc::now());
    broker.publish(&refused, &candidate_payload("nul-1", "a\u{0}b")).await;
    let fine = Meta::new("ak", helpers::now(), "ok-1", Utc::now());
    broker.publish(&fine, &candidate_payload("ok-1", "Fine")).await;

    let worker = TestWorker::spawn(&settings).await;
    assert_eq!(broker.wait_depth(&broker.topology.dead_queue, 3).await, 3);
    assert_eq!(db.wait_count("SELECT 1 FROM submissions", 3, WAIT).await, 3);
    assert_eq!(db.count("SELECT 1 FROM candidates WHERE moka_id = 'ok-1'").await, 1);

    let dead = broker.drain(&broker.topology.dead_queue).await;
    let header = |m: &lapin::message::BasicGetMessage, k: &str| {
        moka_ingest::broker::headers::text(m.delivery.properties.headers().as_ref().unwrap(), k).unwrap_or_default()
    };
    let by_kind = |kind: &str| {
        dead.iter().find(|m| header(m, "x-error-kind") == kind).unwrap_or_else(|| panic!("a {kind} dead letter"))
    };
    let v = by_kind("validation");
    let message = header(v, "x-error-message");
    for field in ["name: is empty", "phone: is missing", "email: must be a string", "operator: must be an object"] {
        assert!(message.contains(field), "{message}");
    }
    assert!(!message.contains("jobTitle"), "jobTitle was fine: {message}");
    assert_eq!(v.delivery.data, invalid.body(INVALID.as_bytes()), "body unchanged");
    assert_eq!(v.delivery.properties.message_id().as_ref().unwrap().as_str(), invalid.message_id.to_string());
    assert!(!header(v, "x-failed-by").is_empty());
    assert_eq!(by_kind("envelope").delivery.data, b"hello");
    let refused_why = header(by_kind("database"), "x-error-message");
    assert!(
        refused_why.contains("22021") || refused_why.contains("22P05"),
        "PostgreSQL's data-exception code: {refused_why}"
    );

    let recorded: Vec<(String, String)> = db
        .client
        .query("SELECT moka_id, error->>'kind' FROM submissions WHERE outcome = 'dead' ORDER BY moka_id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        recorded,
        [("bad-1".to_string(), "validation".to_string()), ("nul-1".to_string(), "database".to_string())]
    );
    assert_eq!(broker.depth(&broker.topology.queue).await, 0, "nothing left looping");
    worker.stop().await;
}

#[tokio::test]
async fn migrations_are_safe_when_several_workers_start_at_once() {
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    let settings = worker_settings(&broker.prefix, &db, &[]);
    let runs = futures_util::future::join_all((0..4).map(|_| store::migrate::run(&settings.database_url))).await;
    let mut applied: Vec<String> = runs.into_iter().flat_map(|r| r.expect("every migrate succeeds")).collect();
    applied.sort();
    assert_eq!(
        applied,
        [
            "V1__candidates",
            "V2__attachments",
            "V3__pending_attachments",
            "V4__console",
            "V5__duplicates",
            "V6__payload_compression"
        ],
        "each migration applied exactly once"
    );
    assert_eq!(db.count("SELECT 1 FROM refinery_schema_history").await, 6);
}

#[tokio::test]
async fn a_long_resume_is_stored_whole_and_compressed_with_lz4() {
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    let settings = worker_settings(&broker.prefix, &db, &[]);
    let ingress = TestIngress::spawn(&settings).await;
    let worker = TestWorker::spawn(&settings).await;

    // Long enough (over PostgreSQL's 2 KB threshold) for the row's payload to be compressed.
    let mut payload: serde_json::Value = serde_json::from_str(&candidate_payload("c-long", "张三")).unwrap();
    payload["selfEvaluation"] = "熟悉分布式系统与前端工程化，带领团队完成多个大型项目。".repeat(60).into();
    let payload = payload.to_string();
    assert!(payload.len() > 4096);
    assert_eq!(ingress.post_form(signed(&payload).form_body()).await.code, 0);
    assert_eq!(db.wait_count("SELECT 1 FROM submissions WHERE outcome = 'applied'", 1, WAIT).await, 1);

    let row = db
        .client
        .query_one(
            "SELECT raw_payload, pg_column_compression(raw_payload) FROM candidates WHERE moka_id = 'c-long'",
            &[],
        )
        .await
        .unwrap();
    let stored: serde_json::Value = row.get(0);
    assert_eq!(stored, serde_json::from_str::<serde_json::Value>(&payload).unwrap(), "the payload as received");
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("lz4"));
    ingress.stop().await;
    worker.stop().await;
}

#[tokio::test]
async fn a_worker_that_loses_the_broker_reconnects_and_loses_nothing() {
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    let proxy = crate::helpers::proxy::Proxy::start("127.0.0.1:5672").await;
    let url = proxy.url();
    let settings = worker_settings(&broker.prefix, &db, &[("amqp_url", &url)]);
    broker.declare().await;
    let worker = TestWorker::spawn(&settings).await;
    for i in 0..5 {
        broker
            .publish(
                &Meta::new("ak", helpers::now(), &format!("b-{i}"), Utc::now()),
                &candidate_payload(&format!("b-{i}"), "x"),
            )
            .await;
    }
    assert_eq!(db.wait_count("SELECT 1 FROM submissions", 5, WAIT).await, 5);

    proxy.cut();
    for i in 5..15 {
        broker
            .publish(
                &Meta::new("ak", helpers::now(), &format!("b-{i}"), Utc::now()),
                &candidate_payload(&format!("b-{i}"), "x"),
            )
            .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(db.count("SELECT 1 FROM submissions").await, 5, "nothing consumed while cut off");
    proxy.restore();
    assert_eq!(db.wait_count("SELECT 1 FROM submissions WHERE outcome = 'applied'", 15, WAIT).await, 15);
    assert_eq!(db.count("SELECT 1 FROM candidates").await, 15);
    broker.assert_accounted(&db, 15).await;
    worker.stop().await;
}

#[tokio::test]
async fn with_several_broker_addresses_a_worker_moves_on_to_the_next_node_and_loses_nothing() {
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    // Two "nodes" (proxies to the one real broker); the worker's lanes and publisher pick one.
    let (a, b) = (
        crate::helpers::proxy::Proxy::start("127.0.0.1:5672").await,
        crate::helpers::proxy::Proxy::start("127.0.0.1:5672").await,
    );
    let urls = format!("{},{}", a.url(), b.url());
    let settings = worker_settings(&broker.prefix, &db, &[("amqp_url", &urls)]);
    broker.declare().await;
    let worker = TestWorker::spawn(&settings).await;
    let publish = |range: std::ops::Range<i32>| {
        let broker = &broker;
        async move {
            for i in range {
                let id = format!("n-{i}");
                broker.publish(&Meta::new("ak", helpers::now(), &id, Utc::now()), &candidate_payload(&id, "x")).await;
            }
        }
    };
    publish(0..5).await;
    assert_eq!(db.wait_count("SELECT 1 FROM submissions", 5, WAIT).await, 5);

    // Each node goes away in turn and stays away; every connection moves on to the other.
    for (down, back) in [(&a, &b), (&b, &a)] {
        back.restore();
        down.cut();
        let before = db.count("SELECT 1 FROM submissions").await;
        publish(before as i32..before as i32 + 5).await;
        assert_eq!(db.wait_count("SELECT 1 FROM submissions", before + 5, WAIT).await, before + 5);
    }
    assert_eq!(db.count("SELECT 1 FROM candidates").await, 15);
    broker.assert_accounted(&db, 15).await;
    worker.stop().await;
}

#[tokio::test]
async fn a_migration_history_that_disagrees_with_the_binary_stops_the_worker_with_a_clear_error() {
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    let settings = worker_settings(&broker.prefix, &db, &[]);
    store::migrate::run(&settings.database_url).await.unwrap();
    db.client.execute("UPDATE refinery_schema_history SET checksum = '1' WHERE version = 1", &[]).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let started = tokio::time::timeout(
        Duration::from_secs(10),
        moka_ingest::worker::spawn(&settings, listener, tokio_util::sync::CancellationToken::new()),
    )
    .await
    .expect("refuses at once instead of retrying forever");
    let err = started.err().expect("the worker does not start");
    // The error names what failed; its sources say why, and a log line shows them all.
    let chain = moka_ingest::telemetry::chain(&err);
    assert!(chain.starts_with("database: migration failed"), "{chain}");
    assert!(chain.contains("V1__candidates") && chain.contains("different"), "{chain}");
}

#[tokio::test]
async fn ids_that_differ_only_in_surrounding_spaces_are_one_candidate_and_the_newer_wins_in_one_pass() {
    // The payload's id is trimmed when normalized, so " spaced-1" and "spaced-1" name one row; a
    // batch that took them for two candidates wrote that row twice in one statement (SQLSTATE
    // 21000) and had to be split.
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    broker.declare().await;
    let older = Meta::new("ak", helpers::now() - 10, " spaced-1", Utc::now());
    let newer = Meta::new("ak", helpers::now(), "spaced-1", Utc::now());
    broker.publish(&older, &candidate_payload(" spaced-1", "旧名")).await;
    broker.publish(&newer, &candidate_payload("spaced-1", "新名")).await;
    let worker = TestWorker::spawn(&worker_settings(&broker.prefix, &db, &[])).await;
    assert_eq!(db.wait_count("SELECT 1 FROM submissions", 2, WAIT).await, 2);
    let rows = db.client.query("SELECT moka_id, name FROM candidates", &[]).await.unwrap();
    let rows: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(rows, [("spaced-1".to_string(), "新名".to_string())]);
    let db = &db;
    let outcome = |id: uuid::Uuid| async move {
        let sql = "SELECT outcome FROM submissions WHERE message_id = $1::text::uuid";
        let row = db.client.query_one(sql, &[&id.to_string()]).await.unwrap();
        row.get::<_, String>(0)
    };
    assert_eq!(outcome(newer.message_id).await, "applied");
    assert_eq!(outcome(older.message_id).await, "stale", "decided in the batch, not by writing the row twice");
    worker.stop().await;
}
