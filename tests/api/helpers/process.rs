//! `moka-ingest` as a process, for the tests that run the binary: spawning it with a test's
//! namespace, waiting for it, stopping it by its pid.

use std::{process::Stdio, time::Duration};

use tokio::process::Command;

use super::{TestDb, ACCESS_KEY, AMQP_URL, SECRET};

pub const BIN: &str = env!("CARGO_BIN_EXE_moka-ingest");

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until `url` answers 200.
pub async fn wait_200(url: &str, within: Duration) -> bool {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let ok = || async { client.get(url).send().await.is_ok_and(|r| r.status() == 200) };
    super::poll::poll(within, ok, |ok| *ok).await
}

/// A `moka-ingest` process with the test's broker prefix, database and key.
pub fn service(role: &str, prefix: &str, db: &TestDb, envs: &[(&str, String)]) -> tokio::process::Child {
    service_command(role, prefix, db, envs).stdout(Stdio::null()).spawn().unwrap()
}

/// As [`service`], its logs read by the caller (read them: a full pipe stalls the process).
pub fn service_with_logs(role: &str, prefix: &str, db: &TestDb, envs: &[(&str, String)]) -> tokio::process::Child {
    service_command(role, prefix, db, envs).stdout(Stdio::piped()).spawn().unwrap()
}

/// The command of [`service`], not started.
pub fn service_command(role: &str, prefix: &str, db: &TestDb, envs: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg(role);
    with_test_env(cmd, prefix, db, envs)
}

/// As [`service_command`], started from a shell after `ulimit {limits}` (e.g. `-Sn 256`).
pub fn service_command_under_ulimit(
    limits: &str,
    role: &str,
    prefix: &str,
    db: &TestDb,
    envs: &[(&str, String)],
) -> Command {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &format!("ulimit {limits} && exec {BIN} {role}")]);
    with_test_env(cmd, prefix, db, envs)
}

fn with_test_env(mut cmd: Command, prefix: &str, db: &TestDb, envs: &[(&str, String)]) -> Command {
    cmd.env("MOKA_INGEST_QUEUE_PREFIX", prefix)
        .env("MOKA_INGEST_KEYS", format!("{ACCESS_KEY}:{SECRET}"))
        .env("AMQP_URL", AMQP_URL)
        .env("DATABASE_URL", &db.url)
        .env("MOKA_INGEST_ATTACHMENTS_DIR", super::attachments_dir(prefix))
        .env("MOKA_INGEST_RETRY__SCHEDULE", super::TEST_RETRY_SCHEDULE)
        .env("MOKA_INGEST_RETRY__DOWNLOAD_SCHEDULE", super::TEST_RETRY_SCHEDULE)
        .kill_on_drop(true);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd
}

pub async fn sigterm_and_wait(mut child: tokio::process::Child) {
    sigterm_and_wait_child(&mut child).await;
}

pub async fn sigterm_and_wait_child(child: &mut tokio::process::Child) {
    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().await.unwrap().success());
    let status =
        tokio::time::timeout(Duration::from_secs(20), child.wait()).await.expect("exits after SIGTERM").unwrap();
    assert!(status.success(), "{status}");
}

/// A tool of the test suite's Python virtual environment (`tests/requirements.txt`), made by
/// `.ci/run` at `$MOKA_VENV` (default `~/.cache/moka-ingest/venv`); a missing one fails the test
/// saying how to make it.
pub fn venv_tool(name: &str) -> std::path::PathBuf {
    let venv = std::env::var_os("MOKA_VENV").map(std::path::PathBuf::from).unwrap_or_else(|| {
        std::path::PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/moka-ingest/venv")
    });
    let tool = venv.join("bin").join(name);
    assert!(
        tool.exists(),
        "{} is missing: python3 -m venv {1} && {1}/bin/pip install -r tests/requirements.txt (.ci/run does it)",
        tool.display(),
        venv.display()
    );
    tool
}
