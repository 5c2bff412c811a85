//! Group publishing (issue 14): many requests, fewer broker messages, every one stored once; a
//! group's submissions fail, retry and die on their own; a redelivered group is split; a replay
//! the ingress forgot (or another ingress never saw) is recorded as `duplicate`.

use std::time::Duration;

use chrono::Utc;
use moka_ingest::broker::envelope::{Group, Meta};
use serde_json::json;

use crate::{
    failures::dead_messages,
    helpers::{
        candidate_payload, now, settings, signed, worker_settings, TestBroker, TestDb, TestIngress, TestWorker,
        ACCESS_KEY,
    },
};

const WAIT: Duration = Duration::from_secs(30);

/// Publishes `items` as one group message, confirmed.
async fn publish_group(broker: &TestBroker, items: &[(Meta, String)]) {
    let body = Group::body(items.iter().map(|(m, p)| (m, p.as_bytes())), items.len());
    broker.publish_raw(&body, Group::properties()).await;
}

fn meta(id: &str) -> Meta {
    Meta::new(ACCESS_KEY, now(), id, Utc::now()).signed(id.as_bytes())
}

#[tokio::test]
async fn concurrent_requests_go_as_fewer_messages_and_each_is_stored_once() {
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    let ingress = std::sync::Arc::new(TestIngress::spawn(&settings(&broker.prefix, &[])).await);
    let n = 400;
    let mut requests = Vec::new();
    for i in 0..n {
        let ingress = ingress.clone();
        requests.push(tokio::spawn(async move {
            ingress.post_form(signed(&candidate_payload(&format!("g-{i}"), "组")).form_body()).await
        }));
    }
    for r in requests {
        let a = r.await.unwrap();
        assert_eq!((a.status, a.code), (200, 0), "{}", a.message);
    }
    // No worker yet: the queue holds what the ingress published.
    let messages = broker.depth(&broker.topology.queue).await;
    assert!(messages < n, "{n} requests went as {messages} messages");
    let worker = TestWorker::spawn(&worker_settings(&broker.prefix, &db, &[])).await;
    assert_eq!(db.wait_count("SELECT 1 FROM candidates", n as i64, WAIT).await, n as i64);
    assert_eq!(db.count("SELECT 1 FROM submissions WHERE outcome = 'applied'").await, n as i64, "each once");
    assert_eq!(db.count("SELECT DISTINCT signature FROM submissions WHERE signature IS NOT NULL").await, n as i64);
    broker.assert_accounted(&db, n).await;
    worker.stop().await;
    std::sync::Arc::into_inner(ingress).expect("requests are done").stop().await;
}

#[tokio::test]
async fn in_a_group_an_invalid_and_a_refused_submission_die_alone_and_their_neighbours_are_stored() {
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    broker.declare().await;
    let mut items: Vec<(Meta, String)> =
        (0..4).map(|i| (meta(&format!("ok-{i}")), candidate_payload(&format!("ok-{i}"), "邻居"))).collect();
    let mut invalid: serde_json::Value = serde_json::from_str(&candidate_payload("bad", "x")).unwrap();
    invalid.as_object_mut().unwrap().remove("name");
    items.insert(1, (meta("bad"), invalid.to_string()));
    // PostgreSQL refuses a NUL in text: a permanent database failure of this one submission.
    items.insert(3, (meta("nul"), candidate_payload("nul", "a\u{0}b")));
    publish_group(&broker, &items).await;
    let worker = TestWorker::spawn(&worker_settings(&broker.prefix, &db, &[])).await;
    assert_eq!(db.wait_count("SELECT 1 FROM submissions WHERE outcome = 'applied'", 4, WAIT).await, 4);
    assert_eq!(broker.wait_depth(&broker.topology.dead_queue, 2).await, 2, "two dead letters, one each");
    let mut dead: Vec<(String, String, String)> =
        dead_messages(&broker).await.into_iter().map(|m| (m.moka_id, m.reason, m.message_id)).collect();
    dead.sort();
    let id = |i: usize| items[i].0.message_id.to_string();
    assert_eq!(
        dead,
        vec![("bad".into(), "validation".into(), id(1)), ("nul".into(), "database".into(), id(3))],
        "each dead letter is that submission alone, under its own message id"
    );
    assert_eq!(db.count("SELECT 1 FROM submissions WHERE outcome = 'dead'").await, 2);
    assert_eq!(db.count("SELECT 1 FROM dead_letters WHERE state = 'dead'").await, 2);
    broker.assert_accounted(&db, 6).await;
    worker.stop().await;
}

#[tokio::test]
async fn a_redelivered_group_is_split_and_only_the_poisonous_submission_reaches_the_delivery_limit() {
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    broker.declare().await;
    let mut items: Vec<(Meta, String)> =
        (0..6).map(|i| (meta(&format!("n-{i}")), candidate_payload(&format!("n-{i}"), "邻居"))).collect();
    let mut bad: serde_json::Value = serde_json::from_str(&candidate_payload("poison", "x")).unwrap();
    bad["__moka_fault"] = json!("panic");
    items.insert(2, (meta("poison"), bad.to_string()));
    publish_group(&broker, &items).await;
    let worker = TestWorker::spawn(&worker_settings(&broker.prefix, &db, &[("worker.batch_timeout_ms", "500")])).await;
    assert_eq!(
        db.wait_count("SELECT 1 FROM submissions WHERE outcome = 'applied'", 6, WAIT).await,
        6,
        "its neighbours are stored"
    );
    assert_eq!(broker.wait_depth(&broker.topology.dead_queue, 1).await, 1);
    let dead = dead_messages(&broker).await;
    assert_eq!(
        (dead[0].message_id.clone(), dead[0].reason.as_str()),
        (items[2].0.message_id.to_string(), "delivery_limit"),
        "only the poisonous submission, alone"
    );
    broker.assert_accounted(&db, 7).await;
    worker.stop().await;
}

#[tokio::test]
async fn a_worker_killed_in_the_middle_of_a_group_stores_everything_exactly_once() {
    use crate::helpers::process::{free_port, service, sigterm_and_wait, wait_200};
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    broker.declare().await;
    let mut items: Vec<(Meta, String)> =
        (0..40).map(|i| (meta(&format!("k-{i}")), candidate_payload(&format!("k-{i}"), "组"))).collect();
    let mut hang: serde_json::Value = serde_json::from_str(&candidate_payload("hang", "x")).unwrap();
    hang["__moka_fault"] = json!("hang");
    items.insert(20, (meta("hang"), hang.to_string()));
    publish_group(&broker, &items).await;
    // The worker hangs in the middle of the group (a long batch timeout: it is killed first).
    let env = |ops: u16| vec![("MOKA_INGEST_WORKER_LISTEN", format!("127.0.0.1:{ops}"))];
    let ops = free_port();
    let mut first = service(
        "worker",
        &broker.prefix,
        &db,
        &[env(ops), vec![("MOKA_INGEST_WORKER__BATCH_TIMEOUT_MS", "60000".into())]].concat(),
    );
    assert!(wait_200(&format!("http://127.0.0.1:{ops}/readyz"), WAIT).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = first.id().unwrap().to_string();
    assert!(tokio::process::Command::new("kill").args(["-KILL", &pid]).status().await.unwrap().success());
    let _ = first.wait().await;
    // A second worker gets the group again, splits it, stores each submission once; the hanging
    // one meets the delivery limit alone.
    let ops = free_port();
    let second = service(
        "worker",
        &broker.prefix,
        &db,
        &[env(ops), vec![("MOKA_INGEST_WORKER__BATCH_TIMEOUT_MS", "500".into())]].concat(),
    );
    assert_eq!(db.wait_count("SELECT 1 FROM submissions WHERE outcome = 'applied'", 40, WAIT).await, 40);
    assert_eq!(broker.wait_depth(&broker.topology.dead_queue, 1).await, 1);
    assert_eq!(db.count("SELECT 1 FROM candidates").await, 40, "each stored once");
    assert_eq!(db.count("SELECT moka_id FROM submissions GROUP BY moka_id HAVING count(*) > 1").await, 0);
    broker.assert_accounted(&db, 41).await;
    sigterm_and_wait(second).await;
}

#[tokio::test]
async fn a_replay_the_cache_forgot_or_another_ingress_never_saw_is_recorded_as_duplicate() {
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    // A cache of two entries (two generations of one): the third request pushes the first out.
    let small = settings(&broker.prefix, &[("ingress.replay_cache_entries", "2")]);
    let (one, two) = (TestIngress::spawn(&small).await, TestIngress::spawn(&small).await);
    let worker = TestWorker::spawn(&worker_settings(&broker.prefix, &db, &[])).await;
    let a = signed(&candidate_payload("dup-a", "甲")).form_body();
    let b = signed(&candidate_payload("dup-b", "乙")).form_body();
    let c = signed(&candidate_payload("dup-c", "丙")).form_body();
    for (ingress, body) in [(&one, &a), (&one, &b), (&one, &c), (&one, &a), (&two, &b)] {
        let answer = ingress.post_form(body.clone()).await;
        assert_eq!((answer.status, answer.code), (200, 0), "{}", answer.message);
        assert!(answer.headers.get("x-moka-replay").is_none(), "neither cache remembers it");
    }
    let count = |outcome: &str| format!("SELECT 1 FROM submissions WHERE outcome = '{outcome}'");
    assert_eq!(db.wait_count(&count("duplicate"), 2, WAIT).await, 2, "both repeats recorded as duplicate");
    assert_eq!(db.count(&count("applied")).await, 3, "each request applied once");
    let unchanged =
        "SELECT 1 FROM candidates c JOIN submissions s ON s.message_id = c.last_message_id AND s.outcome = 'applied'";
    assert_eq!(db.count(unchanged).await, 3, "the candidates still point at the first copies");
    broker.assert_accounted(&db, 5).await;
    worker.stop().await;
    one.stop().await;
    two.stop().await;
}
