//! What an operator's Prometheus sees: fresh processes export, at zero, every series that the
//! shipped dashboard (`deploy/grafana/`) and alert rules (`deploy/prometheus/`) query, and
//! latencies as histograms that can be summed across instances.

use std::{collections::BTreeSet, time::Duration};

use crate::helpers::{
    process::{free_port, service, sigterm_and_wait, wait_200},
    TestBroker, TestDb,
};

/// The PromQL expressions of a Grafana dashboard: every `expr` of its panels' targets.
fn dashboard_exprs(dashboard: &str) -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match v {
                        serde_json::Value::String(s) if k == "expr" => out.push(s.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&serde_json::from_str(dashboard).expect("the dashboard is JSON"), &mut out);
    out
}

/// The PromQL expressions of a rules file: each `expr:` value, inline or as an indented block.
fn rule_exprs(rules: &str) -> Vec<String> {
    let lines: Vec<&str> = rules.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(value) = line.trim_start().strip_prefix("expr:") else { continue };
        let value = value.trim();
        if !value.starts_with(['|', '>']) {
            out.push(value.to_owned());
            continue;
        }
        let block = lines[i + 1..].iter().take_while(|l| l.trim().is_empty() || indent(l) > indent(line));
        out.push(block.map(|l| l.trim()).collect::<Vec<_>>().join(" "));
    }
    out
}

/// The metric names an expression mentions.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("moka_") {
        let tail = &rest[at..];
        let end = tail.find(|c: char| !(c.is_ascii_lowercase() || c == '_')).unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// The series names of a `/metrics` page.
fn exported(page: &str) -> BTreeSet<String> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l[..l.find(['{', ' ']).unwrap_or(l.len())].to_owned())
        .collect()
}

async fn metrics_page(port: u16) -> String {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = client.get(format!("http://127.0.0.1:{port}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

fn deploy_file(path: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test]
async fn fresh_processes_export_at_zero_every_series_the_dashboard_and_the_alerts_query() {
    let (broker, db) = (TestBroker::new().await, TestDb::new().await);
    let users = std::env::temp_dir().join(format!("moka-users-monitoring-{}", broker.prefix));
    let hash = moka_ingest::console::users::hash_password("a passphrase for monitoring").unwrap();
    std::fs::write(&users, format!("ana:viewer:{hash}\n")).unwrap();
    let (ingress_port, worker_port, console_port) = (free_port(), free_port(), free_port());
    let ingress =
        service("ingress", &broker.prefix, &db, &[("MOKA_INGEST_LISTEN", format!("127.0.0.1:{ingress_port}"))]);
    let worker =
        service("worker", &broker.prefix, &db, &[("MOKA_INGEST_WORKER_LISTEN", format!("127.0.0.1:{worker_port}"))]);
    let console = service(
        "console",
        &broker.prefix,
        &db,
        &[
            ("MOKA_INGEST_CONSOLE_LISTEN", format!("127.0.0.1:{console_port}")),
            ("MOKA_INGEST_CONSOLE_USERS_FILE", users.to_str().unwrap().to_owned()),
        ],
    );
    for port in [ingress_port, worker_port, console_port] {
        assert!(wait_200(&format!("http://127.0.0.1:{port}/readyz"), Duration::from_secs(20)).await, "port {port}");
    }
    // Nothing has been sent: every series below exists only because it was made at zero.
    let (ingress_page, worker_page, console_page) =
        (metrics_page(ingress_port).await, metrics_page(worker_port).await, metrics_page(console_port).await);
    let all: BTreeSet<String> =
        [&ingress_page, &worker_page, &console_page].into_iter().flat_map(|p| exported(p)).collect();

    let dashboard = deploy_file("grafana/moka-ingest.json");
    let rules = deploy_file("prometheus/alerts.yml");
    let (panels, alerts) = (dashboard_exprs(&dashboard), rule_exprs(&rules));
    assert!(panels.len() >= 15 && alerts.len() >= 10, "{panels:#?}\n{alerts:#?}");
    let queried: BTreeSet<String> = panels.iter().chain(&alerts).flat_map(|e| metric_names(e)).collect();
    assert!(queried.len() >= 20, "the dashboard and the rules query the service's metrics: {queried:?}");
    // The one exception: its label is an attachment host's name, known only once a download from
    // that host has had to wait (scripts/check-monitoring.sh sees it under load).
    let by_host = ["moka_worker_downloads_waiting"];
    let missing: Vec<&String> =
        queried.iter().filter(|n| !all.contains(*n) && !by_host.contains(&n.as_str())).collect();
    assert!(
        missing.is_empty(),
        "queried but not exported by a fresh process: {missing:?}\n{ingress_page}\n{worker_page}"
    );

    for (page, series) in [
        (&ingress_page, r#"moka_ingress_requests_total{outcome="unavailable"} 0"#),
        (&ingress_page, r#"moka_ingress_requests_total{outcome="bad_signature"} 0"#),
        (&ingress_page, r#"moka_ingress_publish_seconds_bucket{le="0.001"} 0"#),
        (&ingress_page, r#"moka_ingress_group_size_bucket{le="+Inf"} 0"#),
        (&ingress_page, r#"moka_broker_reconnects_total{role="moka-ingest ingress"} 0"#),
        (&worker_page, r#"moka_worker_dead_letters_total{reason="delivery_limit"} 0"#),
        (&worker_page, r#"moka_worker_messages_total{outcome="applied"} 0"#),
        (&worker_page, r#"moka_worker_attachments_total{outcome="superseded"} 0"#),
        (&worker_page, r#"moka_worker_batch_seconds_bucket{le="0.1"} 0"#),
        (&worker_page, r#"moka_worker_attachment_seconds_count 0"#),
        (&worker_page, r#"moka_queue_messages{queue="dead"} 0"#),
        (&console_page, r#"moka_console_actions_total{action="replay"} 0"#),
    ] {
        assert!(page.lines().any(|l| l == series), "`{series}` is not exported at start:\n{page}");
    }
    // Histograms, not per-process summaries: no quantile series anywhere.
    assert!(!all.iter().any(|n| n.ends_with("_quantile")), "{all:?}");
    assert!(![&ingress_page, &worker_page].iter().any(|p| p.contains("quantile=")), "{ingress_page}{worker_page}");

    // The worker reads its queues from RabbitMQ: its own lanes show as consumers.
    let consumers = crate::helpers::poll::poll(
        Duration::from_secs(25),
        || async { metrics_page(worker_port).await },
        |p| p.lines().any(|l| l.starts_with(r#"moka_queue_consumers{queue="submissions"}"#) && !l.ends_with(" 0")),
    )
    .await;
    assert!(
        consumers.lines().any(|l| l.starts_with(r#"moka_queue_consumers{queue="submissions"}"#) && !l.ends_with(" 0")),
        "{consumers}"
    );
    for child in [ingress, worker, console] {
        sigterm_and_wait(child).await;
    }
    let _ = std::fs::remove_file(&users);
}

/// Runs `program args` in `dir`; its output, or a failure that says how to get the program.
fn run_tool(program: &str, args: &[&str], dir: &std::path::Path) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (Debian's `prometheus` package; `.ci/run` installs it)"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{program} {args:?} failed:\n{text}");
    text
}

#[test]
fn the_alert_rules_and_the_scrape_config_pass_promtool_and_the_rules_unit_tests() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus");
    let checked = run_tool("promtool", &["check", "rules", "alerts.yml"], &dir);
    assert!(checked.contains("SUCCESS"), "{checked}");
    run_tool("promtool", &["check", "config", "prometheus.yml"], &dir);
    // Each alert fires on series written for it, and stays quiet on their healthy twins.
    let tested = run_tool("promtool", &["test", "rules", "alerts_test.yml"], &dir);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[tokio::test]
async fn a_real_prometheus_scraping_a_loaded_deployment_answers_every_dashboard_and_rule_query() {
    // The script runs the three roles, a file server, a stream of candidates and Prometheus on
    // its own ports, schema and queue prefix, and stops them; see its header.
    let out = tokio::process::Command::new("bash")
        .arg("scripts/check-monitoring.sh")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("MOKA_BIN", crate::helpers::process::BIN)
        .env("SECONDS_OF_LOAD", "15")
        .output()
        .await
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("targets up: 3 of 3") && text.contains("; 0 failed"), "{text}");
    assert!(text.contains("alerts firing besides MokaIngressBadSignatures: none"), "{text}");
    // The load went through: candidates applied and their résumés stored, so the panels above
    // were fed by real traffic, not only by zeros.
    let applied = text.lines().find(|l| l.starts_with("applied: ")).unwrap_or_else(|| panic!("{text}"));
    let numbers: Vec<u64> = applied.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok()).collect();
    assert!(numbers.len() == 2 && numbers[0] > 100 && numbers[1] > 100, "{applied}");
}
