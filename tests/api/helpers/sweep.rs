//! Leftovers of killed test runs: queues, exchanges and schemas that a test never got to delete
//! (a test process killed mid-run skips its `Drop`s). Swept once per run, before the first test
//! declares anything. A name carries its creation time (see [`unique_prefix`]), so only what is
//! over an hour old is removed, never what a concurrent run is using.

use std::time::Duration;

use tokio::sync::OnceCell;

use super::{pg_connect, AMQP_URL, PG_ADMIN_URL};

/// Older than this, a test namespace is a leftover.
const STALE: Duration = Duration::from_secs(3600);

/// A queue prefix no other test uses: `t`, 12 hex digits of milliseconds since the epoch (a
/// UUIDv7's time), 6 random hex digits.
pub fn unique_prefix() -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("t{}{}", &id[..12], &id[26..32])
}

/// Whether a test namespace (without its `t` or `t_`) is a leftover at `now_ms`.
fn stale(stem: &str, now_ms: u64) -> bool {
    let hex = |s: &str| s.len() == s.bytes().filter(u8::is_ascii_hexdigit).count();
    match (stem.len(), u64::from_str_radix(stem.get(..12).unwrap_or(""), 16)) {
        (18, Ok(created)) if hex(stem) => now_ms.saturating_sub(created) > STALE.as_millis() as u64,
        _ => false,
    }
}

/// Sweeps once per test process.
pub async fn once() {
    static SWEPT: OnceCell<()> = OnceCell::const_new();
    SWEPT.get_or_init(sweep).await;
}

async fn sweep() {
    let now_ms = chrono::Utc::now().timestamp_millis() as u64;
    let db = pg_connect(PG_ADMIN_URL).await;
    for row in db.query("SELECT nspname FROM pg_namespace WHERE nspname LIKE 't\\_%'", &[]).await.unwrap() {
        let schema: String = row.get(0);
        if stale(&schema[2..], now_ms) {
            let _ = db.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")).await;
        }
    }
    let names = |what: &str| {
        let out = std::process::Command::new("rabbitmqctl").args(["-q", what, "name"]).output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).lines().map(str::to_owned).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let ours = |name: &String| {
        name.strip_prefix('t').and_then(|rest| rest.split_once('.')).is_some_and(|(stem, _)| stale(stem, now_ms))
    };
    let Ok(conn) = moka_ingest::broker::connect(AMQP_URL, "moka-ingest tests sweep").await else { return };
    let ch = conn.create_channel().await.unwrap();
    for queue in names("list_queues").iter().filter(|n| ours(n)) {
        let _ = ch.queue_delete(queue, Default::default()).await;
    }
    for exchange in names("list_exchanges").iter().filter(|n| ours(n)) {
        let _ = ch.exchange_delete(exchange, Default::default()).await;
    }
    let _ = conn.close(200, "bye").await;
}

#[test]
fn only_what_is_over_an_hour_old_is_a_leftover() {
    let now = 0x0190_0000_0000u64;
    let fresh = format!("{:012x}abcdef", now - 1000);
    let old = format!("{:012x}abcdef", now - 2 * 3_600_000);
    assert!(!stale(&fresh, now));
    assert!(stale(&old, now));
    // Other names, and the older format without a time (which cannot be dated), are left alone.
    for other in ["", "xyz", "0123456789ab", "0123456789abcdef", "0123456789abcdeg", "0123456789abcdef01x"] {
        assert!(!stale(other, now), "{other}");
    }
}
