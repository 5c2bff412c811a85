//! The `moka-ingest` binary as an operator runs it: settings from the environment, refusal to
//! start with bad keys, the `sign` helper, SIGTERM.

use std::{process::Stdio, time::Duration};

use moka_ingest::config::DEV_SECRET;
use tokio::{io::AsyncReadExt, process::Command};

use crate::helpers::{
    process::{
        free_port, service, service_command, service_command_under_ulimit, service_with_logs, sigterm_and_wait,
        sigterm_and_wait_child, wait_200, BIN,
    },
    TestBroker, TestDb, ACCESS_KEY, AMQP_URL, PAYLOAD, SECRET,
};

#[tokio::test]
async fn the_service_refuses_to_start_without_keys_or_with_a_short_secret() {
    for (keys, want) in [("", "no access key"), ("ak:too-short", "at least 16")] {
        let out = Command::new(BIN).arg("ingress").env("MOKA_INGEST_KEYS", keys).output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{keys:?}: {stderr}");
        assert!(stderr.contains(want), "{keys:?}: {stderr}");
        assert!(!stderr.contains("too-short"), "the secret is not echoed: {stderr}");
    }
}

#[tokio::test]
async fn the_service_refuses_a_bad_value_naming_the_setting_the_value_and_what_is_allowed() {
    let cases = [
        ("MOKA_INGEST_RETRY__SCHEDULE", "10s,later", ["retry.schedule", "\"later\"", "10s,1m,2h"]),
        ("MOKA_INGEST_LOG_FORMAT", "xml", ["log_format", "\"xml\"", "`text` or `json`"]),
        ("MOKA_INGEST_ATTACHMENTS__BACKEND", "ftp", ["attachments.backend", "\"ftp\"", "`local` or `s3`"]),
        ("MOKA_INGEST_ATTACHMENTS_ALLOW", "10.0.0.0/8,not a host", ["attachments.allow", "\"not a host\"", "CIDR"]),
    ];
    for (var, value, wants) in cases {
        let out = Command::new(BIN).arg("worker").env(var, value).output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {stderr}");
        for want in wants {
            assert!(stderr.contains(want), "{var}={value}: {want:?} missing in {stderr}");
        }
    }
}

#[tokio::test]
async fn an_old_setting_that_now_has_its_own_name_still_works_and_is_warned_about() {
    let db = TestDb::new().await;
    let out = Command::new(BIN)
        .arg("migrate")
        .env("DATABASE_URL", &db.url)
        .env("MOKA_INGEST_INGRESS__PUBLISH_CHANNELS", "4")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("ingress.publish_channels also sets worker.publish_channels (deprecated)"), "{stderr}");
}

#[tokio::test]
async fn a_misspelled_environment_variable_refuses_the_start_and_names_the_closest_setting() {
    let out = Command::new(BIN).arg("worker").env("MOKA_INGEST_WORKER_CONCURRENCY", "4").output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("MOKA_INGEST_WORKER_CONCURRENCY matches no setting"), "{stderr}");
    assert!(stderr.contains("did you mean MOKA_INGEST_WORKER__CONCURRENCY?"), "{stderr}");
}

#[tokio::test]
async fn the_binary_takes_its_settings_from_the_environment_signs_and_stops_on_sigterm() {
    let broker = TestBroker::new().await;
    let port = free_port();
    let keys = format!("{ACCESS_KEY}:{SECRET},moka-dev:{DEV_SECRET}");
    let mut child = Command::new(BIN)
        .arg("ingress")
        .env("MOKA_INGEST_LISTEN", format!("127.0.0.1:{port}"))
        .env("MOKA_INGEST_QUEUE_PREFIX", &broker.prefix)
        .env("MOKA_INGEST_KEYS", &keys)
        .env("AMQP_URL", AMQP_URL)
        .env("MOKA_INGEST_LOG_FORMAT", "json")
        .env("MOKA_INGEST_RETRY__SCHEDULE", crate::helpers::TEST_RETRY_SCHEDULE)
        .env("MOKA_INGEST_RETRY__DOWNLOAD_SCHEDULE", crate::helpers::TEST_RETRY_SCHEDULE)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    assert!(
        wait_200(&format!("http://127.0.0.1:{port}/readyz"), Duration::from_secs(15)).await,
        "ingress becomes ready"
    );

    let payload_file = std::env::temp_dir().join(format!("{}.json", broker.prefix));
    std::fs::write(&payload_file, PAYLOAD).unwrap();
    let out = Command::new(BIN)
        .args(["sign", "--access-key", ACCESS_KEY, "--secret", SECRET, "--send", "--url"])
        .arg(format!("http://127.0.0.1:{port}/api/v2/moka_candidates"))
        .arg("--payload-file")
        .arg(&payload_file)
        .output()
        .await
        .unwrap();
    std::fs::remove_file(&payload_file).unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed} {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(printed.trim(), r#"200 {"error_code":0,"error_message":"ok"}"#);
    assert_eq!(broker.wait_depth(&broker.topology.queue, 1).await, 1);

    // A rejected request is logged (at info) with its request id.
    let rejected = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("http://127.0.0.1:{port}/api/v2/moka_candidates"))
        .header("x-request-id", "req-for-the-log-check")
        .body("payload=%7B%7D")
        .send()
        .await
        .unwrap();
    assert_eq!(rejected.status(), 400);

    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().await.unwrap().success());
    let status =
        tokio::time::timeout(Duration::from_secs(10), child.wait()).await.expect("exits after SIGTERM").unwrap();
    assert!(status.success(), "{status}");
    let mut logs = String::new();
    child.stdout.take().unwrap().read_to_string(&mut logs).await.unwrap();
    assert!(logs.contains("DEVELOPMENT secret"), "the development key is warned about: {logs}");
    assert!(logs.contains("\"request_id\":\"req-for-the-log-check\""), "structured logs carry the request id: {logs}");
    assert!(!logs.contains(SECRET), "secrets are never logged");
}

async fn post_candidates(port: u16, n: usize, tag: &str) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for i in 0..n {
        let body =
            crate::helpers::signed(&crate::helpers::candidate_payload(&format!("{tag}-{i}"), "张三")).form_body();
        let r = client
            .post(format!("http://127.0.0.1:{port}/api/v2/moka_candidates"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

#[tokio::test]
async fn separate_ingress_and_two_worker_processes_store_every_candidate_once() {
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    let port = free_port();
    let ingress = service("ingress", &broker.prefix, &db, &[("MOKA_INGEST_LISTEN", format!("127.0.0.1:{port}"))]);
    let (w1, w2) = (free_port(), free_port());
    let workers = [w1, w2]
        .map(|p| service("worker", &broker.prefix, &db, &[("MOKA_INGEST_WORKER_LISTEN", format!("127.0.0.1:{p}"))]));
    assert!(wait_200(&format!("http://127.0.0.1:{port}/readyz"), Duration::from_secs(15)).await);
    for p in [w1, w2] {
        assert!(
            wait_200(&format!("http://127.0.0.1:{p}/readyz"), Duration::from_secs(15)).await,
            "worker on {p} ready"
        );
    }

    post_candidates(port, 40, "proc").await;
    assert_eq!(
        db.wait_count("SELECT 1 FROM submissions WHERE outcome = 'applied'", 40, Duration::from_secs(30)).await,
        40
    );
    assert_eq!(db.count("SELECT DISTINCT moka_id FROM candidates").await, 40);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let metrics = client.get(format!("http://127.0.0.1:{w1}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("moka_worker_batch_seconds"), "{metrics}");

    sigterm_and_wait(ingress).await;
    for w in workers {
        sigterm_and_wait(w).await;
    }
    assert_eq!(broker.depth(&broker.topology.queue).await, 0);
}

#[tokio::test]
async fn all_runs_ingress_and_worker_in_one_process_and_stops_cleanly() {
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    let (port, ops) = (free_port(), free_port());
    let mut all = service_with_logs(
        "all",
        &broker.prefix,
        &db,
        &[
            ("MOKA_INGEST_LISTEN", format!("127.0.0.1:{port}")),
            ("MOKA_INGEST_WORKER_LISTEN", format!("127.0.0.1:{ops}")),
            ("MOKA_INGEST_LOG_FORMAT", "json".into()),
        ],
    );
    let stdout = all.stdout.take().unwrap();
    let logs = tokio::spawn(async move {
        let mut text = String::new();
        let _ = tokio::io::BufReader::new(stdout).read_to_string(&mut text).await;
        text
    });
    assert!(wait_200(&format!("http://127.0.0.1:{port}/readyz"), Duration::from_secs(15)).await);
    assert!(wait_200(&format!("http://127.0.0.1:{ops}/readyz"), Duration::from_secs(15)).await);
    post_candidates(port, 5, "all").await;
    assert_eq!(db.wait_count("SELECT 1 FROM candidates", 5, Duration::from_secs(30)).await, 5);
    sigterm_and_wait(all).await;
    let logs = logs.await.unwrap();
    assert!(logs.contains("worker stopped"), "{logs}");
    // Issue 9: every normal shutdown logged an ERROR about the Tokio context.
    let errors: Vec<&str> = logs.lines().filter(|l| l.contains(r#""level":"ERROR""#)).collect();
    assert!(errors.is_empty(), "a clean shutdown logs no error: {errors:#?}");
}

#[tokio::test]
async fn the_ingress_raises_its_open_file_limit_to_the_hard_limit_and_says_so() {
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    let port = free_port();
    // Started from a shell whose soft limit is low, as on many systems (1024, or less).
    let listen = [("MOKA_INGEST_LISTEN", format!("127.0.0.1:{port}"))];
    let mut child = service_command_under_ulimit("-Sn 256", "ingress", &broker.prefix, &db, &listen)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_200(&format!("http://127.0.0.1:{port}/readyz"), Duration::from_secs(15)).await);
    let pid = child.id().unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (soft, hard) = (fields[3], fields[4]);
    assert_eq!(soft, hard, "{line}");
    assert_ne!(soft, "256", "{line}");
    sigterm_and_wait_child(&mut child).await;
    let mut logs = String::new();
    child.stdout.take().unwrap().read_to_string(&mut logs).await.unwrap();
    assert!(logs.contains("raised the open-file limit to its hard limit") && logs.contains("from=256"), "{logs}");
}

#[tokio::test]
async fn all_exits_at_once_naming_the_role_and_address_when_a_port_is_taken() {
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    for (role, variable) in [("ingress", "MOKA_INGEST_LISTEN"), ("worker", "MOKA_INGEST_WORKER_LISTEN")] {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let free = format!("127.0.0.1:{}", free_port());
        let other = if role == "ingress" { "MOKA_INGEST_WORKER_LISTEN" } else { "MOKA_INGEST_LISTEN" };
        let mut cmd = service_command("all", &broker.prefix, &db, &[(variable, addr.to_string()), (other, free)]);
        let out = tokio::time::timeout(Duration::from_secs(20), cmd.output())
            .await
            .unwrap_or_else(|_| panic!("{role}: `all` keeps running with its port taken"))
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{role}: {stderr}");
        assert!(stderr.contains(&format!("{role}: cannot listen on {addr}")), "{role}: {stderr}");
        assert!(stderr.contains("Address already in use"), "{role}: the OS error is shown: {stderr}");
    }
}

#[tokio::test]
async fn with_few_file_descriptors_idle_connections_are_refused_or_timed_out_and_requests_still_served() {
    // Issue 9: with the limit at 128, 150 idle connections made signed requests and /healthz time
    // out. The cap now stays below the limit, and connections that send nothing are closed.
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    let port = free_port();
    let envs = [
        ("MOKA_INGEST_LISTEN", format!("127.0.0.1:{port}")),
        ("MOKA_INGEST_INGRESS__HEADER_TIMEOUT_MS", "1000".into()),
    ];
    let mut child = service_command_under_ulimit("-n 128", "ingress", &broker.prefix, &db, &envs)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_200(&format!("http://127.0.0.1:{port}/readyz"), Duration::from_secs(15)).await);
    let mut idle = Vec::new();
    for _ in 0..150 {
        idle.push(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    // Within the header timeout (and some slack) the silent ones are gone and requests pass.
    let url = format!("http://127.0.0.1:{port}/api/v2/moka_candidates");
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(2)).build().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let answered = loop {
        let body = crate::helpers::signed(PAYLOAD).form_body();
        let sent =
            client.post(&url).header("content-type", "application/x-www-form-urlencoded").body(body).send().await;
        if let Ok(r) = sent {
            break r.status().as_u16();
        }
        assert!(tokio::time::Instant::now() < deadline, "no answer within 10 s: {sent:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(answered, 200);
    drop(idle);
    sigterm_and_wait_child(&mut child).await;
    let mut logs = String::new();
    child.stdout.take().unwrap().read_to_string(&mut logs).await.unwrap();
    assert!(logs.contains("using the lower figure"), "the cap is lowered, and said so: {logs}");
    assert!(!logs.contains("cannot accept a connection"), "accept never runs out of descriptors: {logs}");
}

#[tokio::test]
async fn dlq_commands_refuse_what_they_cannot_do_as_asked_before_touching_the_broker() {
    // The checks live with the commands (src/dlq/commands.rs): no broker is reached here.
    for (args, want) in [(&["dlq", "replay"][..], "say what to replay"), (&["dlq", "purge", "--all"][..], "add --yes")]
    {
        let out =
            Command::new(BIN).args(args).env("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f").output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}

/// `console hash-password`: the hash printed for a password read from standard input verifies that
/// password in a users file, and no other.
#[tokio::test]
async fn console_hash_password_prints_an_argon2id_hash_that_a_users_file_accepts() {
    use tokio::io::AsyncWriteExt;
    let hash = |input: &'static str| async move {
        let mut child = Command::new(BIN)
            .args(["console", "hash-password"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).await.unwrap();
        child.wait_with_output().await.unwrap()
    };
    let out = hash("correct horse battery staple\n").await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).unwrap();
    let phc = printed.trim();
    assert!(phc.starts_with("$argon2id$") && !phc.contains("correct horse"), "{phc}");

    let path = std::env::temp_dir().join(format!("moka-users-cli-{}", std::process::id()));
    std::fs::write(&path, format!("ana:operator:{phc}\n")).unwrap();
    let users = moka_ingest::console::users::Users::load(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(users.verify("ana", "correct horse battery staple"), Some(moka_ingest::console::users::Role::Operator));
    assert_eq!(users.verify("ana", "correct horse battery staple\n"), None, "the line end is not part of it");

    let empty = hash("\n").await;
    assert!(!empty.status.success(), "an empty password is refused");
    assert!(String::from_utf8_lossy(&empty.stderr).contains("no password"));
}

#[tokio::test]
async fn the_console_refuses_to_start_without_users_and_all_serves_it_once_a_users_file_is_set() {
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    let out = crate::helpers::process::service_command("console", &broker.prefix, &db, &[]).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("console.users_file"), "{stderr}");

    let users = std::env::temp_dir().join(format!("moka-users-all-{}", broker.prefix));
    let hash = moka_ingest::console::users::hash_password("a passphrase for all").unwrap();
    std::fs::write(&users, format!("ana:viewer:{hash}\n")).unwrap();
    let (port, ops, console) = (free_port(), free_port(), free_port());
    let all = service(
        "all",
        &broker.prefix,
        &db,
        &[
            ("MOKA_INGEST_LISTEN", format!("127.0.0.1:{port}")),
            ("MOKA_INGEST_WORKER_LISTEN", format!("127.0.0.1:{ops}")),
            ("MOKA_INGEST_CONSOLE_LISTEN", format!("127.0.0.1:{console}")),
            ("MOKA_INGEST_CONSOLE_USERS_FILE", users.to_str().unwrap().to_owned()),
        ],
    );
    assert!(wait_200(&format!("http://127.0.0.1:{console}/healthz"), Duration::from_secs(15)).await);
    let client = reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let home = client.get(format!("http://127.0.0.1:{console}/")).send().await.unwrap();
    assert_eq!((home.status().as_u16(), home.headers()["location"].to_str().unwrap()), (303, "/login"));
    let login = client
        .post(format!("http://127.0.0.1:{console}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("username=ana&password=a+passphrase+for+all")
        .send()
        .await
        .unwrap();
    assert_eq!(login.status().as_u16(), 303);
    assert!(login.headers()["set-cookie"].to_str().unwrap().contains("HttpOnly"));
    assert!(
        wait_200(&format!("http://127.0.0.1:{port}/readyz"), Duration::from_secs(15)).await,
        "the ingress runs too"
    );
    sigterm_and_wait(all).await;
    let _ = std::fs::remove_file(&users);
}
