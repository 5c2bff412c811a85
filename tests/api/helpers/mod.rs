//! Shared test fixtures: an isolated broker namespace, an in-process ingress, signed requests,
//! and a TCP proxy that can cut the broker off.

pub mod browser;
pub mod files;
pub mod poll;
pub mod process;
pub mod proxy;
pub mod sweep;

use std::{net::SocketAddr, time::Duration};

use lapin::{options::BasicGetOptions, Channel, Connection};
use moka_ingest::{
    broker::{self, envelope::Envelope, topology::Topology},
    config::Settings,
    ingress::{self, signature::Encoding},
    sign::SignedRequest,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Short retry delays, so that tests see the whole schedule in a few seconds.
pub const TEST_RETRY_SCHEDULE: &str = "200ms,400ms,800ms";
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const ACCESS_KEY: &str = "test-key";
pub const SECRET: &str = "test-secret-0123456789";
pub const PAYLOAD: &str = r#"{"id":"cand-1","name":"张 三","phone":"132 0303 0303","email":"a@b.com","jobTitle":"前端工程师","operator":{"name":"李四"}}"#;

pub use sweep::unique_prefix;

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A broker namespace for one test; deletes its queues and exchanges when dropped.
pub struct TestBroker {
    pub prefix: String,
    pub topology: Topology,
    /// Kept open for the channel's sake.
    pub _conn: Connection,
    pub ch: Channel,
}

impl TestBroker {
    pub async fn new() -> TestBroker {
        Self::with_schedule(TEST_RETRY_SCHEDULE).await
    }

    /// A namespace whose retry queues follow `schedule` (pass the same as `retry.schedule`; downloads
    /// always retry on the test schedule).
    pub async fn with_schedule(schedule: &str) -> TestBroker {
        sweep::once().await;
        let prefix = unique_prefix();
        let conn = broker::connect(AMQP_URL, "moka-ingest tests").await.expect("RabbitMQ on 127.0.0.1:5672");
        let ch = conn.create_channel().await.unwrap();
        let delays = moka_ingest::config::parse_schedule(schedule).unwrap();
        let download_delays = moka_ingest::config::parse_schedule(TEST_RETRY_SCHEDULE).unwrap();
        TestBroker { topology: Topology::new(&prefix, 5, delays, download_delays), prefix, _conn: conn, ch }
    }

    /// Messages ready in a queue.
    pub async fn depth(&self, queue: &str) -> u32 {
        let q = self
            .ch
            .queue_declare(
                queue,
                lapin::options::QueueDeclareOptions { passive: true, ..Default::default() },
                Default::default(),
            )
            .await
            .expect("queue exists");
        q.message_count()
    }

    /// Waits until `queue` holds `n` messages (quorum queue counts lag a little behind confirms).
    pub async fn wait_depth(&self, queue: &str, n: u32) -> u32 {
        poll::poll(Duration::from_secs(10), || self.depth(queue), |d| *d == n).await
    }

    /// Takes every message from `queue` (acknowledged), in order.
    pub async fn drain(&self, queue: &str) -> Vec<lapin::message::BasicGetMessage> {
        let mut out = Vec::new();
        while let Some(m) = self.ch.basic_get(queue, BasicGetOptions { no_ack: true }).await.unwrap() {
            out.push(m);
        }
        out
    }

    /// Every submission in `queue` (a group's each), taken from it.
    pub async fn envelopes(&self, queue: &str) -> Vec<Envelope> {
        self.drain(queue)
            .await
            .iter()
            .flat_map(|m| Envelope::read_all(&m.delivery.properties, &m.delivery.data).expect("an envelope"))
            .collect()
    }
}

/// Where a test's worker keeps attachments (removed with the test's broker namespace).
pub fn attachments_dir(prefix: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("moka-ingest-test-{prefix}"))
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(attachments_dir(&self.prefix));
        // Cleanup needs async I/O; run it on a runtime of its own so it also happens on panic.
        let topology = self.topology.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                if let Ok(conn) = broker::connect(AMQP_URL, "moka-ingest tests cleanup").await {
                    if let Ok(ch) = conn.create_channel().await {
                        let _ = topology.delete(&ch).await;
                    }
                    let _ = conn.close(200, "bye").await;
                }
            })
        })
        .join();
    }
}

/// Settings for a test: its own prefix, its own key, and `extra` overrides.
pub fn settings(prefix: &str, extra: &[(&str, &str)]) -> Settings {
    let keys = format!("{ACCESS_KEY}:{SECRET}");
    let mut overrides: Vec<(&str, &str)> = vec![
        ("queue_prefix", prefix),
        ("keys", keys.as_str()),
        ("amqp_url", AMQP_URL),
        ("broker.reconnect_min_ms", "50"),
        ("broker.reconnect_max_ms", "300"),
        ("retry.db_backoff_min_ms", "50"),
        ("retry.db_backoff_max_ms", "300"),
        ("retry.schedule", TEST_RETRY_SCHEDULE),
        ("retry.download_schedule", TEST_RETRY_SCHEDULE),
    ];
    overrides.extend_from_slice(extra);
    Settings::with_overrides(&overrides).expect("test settings are valid")
}

/// An ingress running in this process on 127.0.0.1:<random port>.
pub struct TestIngress {
    pub addr: SocketAddr,
    pub url: String,
    pub shutdown: CancellationToken,
    pub handle: ingress::Handle,
    pub client: reqwest::Client,
}

impl TestIngress {
    pub async fn spawn(settings: &Settings) -> TestIngress {
        moka_ingest::telemetry::metrics();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shutdown = CancellationToken::new();
        let handle = ingress::spawn(settings, listener, shutdown.clone()).unwrap();
        assert!(ingress::wait_ready(&handle, Duration::from_secs(10)).await, "ingress connects to the broker");
        let addr = handle.addr;
        TestIngress {
            addr,
            url: format!("http://{addr}/api/v2/moka_candidates"),
            shutdown,
            handle,
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    /// Posts a form body; returns status, the error code and the response headers.
    pub async fn post_form(&self, body: String) -> Answer {
        let r = self
            .client
            .post(&self.url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("ingress answers");
        Answer::read(r).await
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.task.await.unwrap().unwrap();
    }
}

/// What the ingress answered.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub code: u32,
    pub message: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    pub async fn read(r: reqwest::Response) -> Answer {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body: serde_json::Value = r.json().await.expect("a JSON answer");
        Answer {
            status,
            code: body["error_code"].as_u64().expect("error_code") as u32,
            message: body["error_message"].as_str().expect("error_message").to_owned(),
            headers,
        }
    }
}

/// A request signed with the test key in its (default, raw) encoding, tonce now.
pub fn signed(payload: &str) -> SignedRequest {
    SignedRequest::new(ACCESS_KEY, SECRET, payload, now(), Encoding::Raw)
}

/// A PostgreSQL schema of its own in the `test` database; dropped when the value is dropped.
pub struct TestDb {
    pub schema: String,
    pub url: String,
    pub client: tokio_postgres::Client,
}

pub const PG_ADMIN_URL: &str = "postgres://root@127.0.0.1:5432/test";

impl TestDb {
    pub async fn new() -> TestDb {
        sweep::once().await;
        let schema = format!("t_{}", &unique_prefix()[1..]);
        let admin = pg_connect(PG_ADMIN_URL).await;
        admin.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
        let url = Self::url_via(&schema, "127.0.0.1:5432");
        let client = pg_connect(&url).await;
        TestDb { schema, url, client }
    }

    /// The URL of this schema through another address (a proxy in front of PostgreSQL).
    pub fn url_via(schema: &str, addr: &str) -> String {
        format!("postgres://root@{addr}/test?options=-c%20search_path%3D{schema}")
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.client.query_one(&format!("SELECT count(*) FROM ({sql}) q"), &[]).await.unwrap().get(0)
    }

    /// Polls until `sql` counts `n` rows, for up to `within`; returns the last count.
    pub async fn wait_count(&self, sql: &str, n: i64, within: Duration) -> i64 {
        poll::poll(within, || self.count(sql), |got| *got == n).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let schema = self.schema.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                if let Ok((client, conn)) = tokio_postgres::connect(PG_ADMIN_URL, tokio_postgres::NoTls).await {
                    tokio::spawn(conn);
                    let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
                }
            })
        })
        .join();
    }
}

pub async fn pg_connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) =
        tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("PostgreSQL on 127.0.0.1:5432");
    tokio::spawn(conn);
    client
}

/// Settings for a test that runs the worker too.
pub fn worker_settings(prefix: &str, db: &TestDb, extra: &[(&str, &str)]) -> Settings {
    let dir = attachments_dir(prefix);
    let dir = dir.to_str().unwrap();
    let mut all: Vec<(&str, &str)> =
        vec![("database_url", db.url.as_str()), ("worker.batch_wait_ms", "5"), ("attachments.dir", dir)];
    all.extend_from_slice(extra);
    settings(prefix, &all)
}

/// A worker running in this process.
pub struct TestWorker {
    pub shutdown: CancellationToken,
    pub handle: moka_ingest::worker::Handle,
}

impl TestWorker {
    pub async fn spawn(settings: &Settings) -> TestWorker {
        moka_ingest::telemetry::metrics();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shutdown = CancellationToken::new();
        let handle = moka_ingest::worker::spawn(settings, listener, shutdown.clone()).await.expect("worker starts");
        TestWorker { shutdown, handle }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.handle.task).await.expect("worker stops").unwrap().unwrap();
    }
}

impl TestBroker {
    /// Declares the topology (as the services do at start).
    pub async fn declare(&self) {
        self.topology.declare(&self.ch).await.unwrap();
    }

    /// Publishes `payload` with `meta` straight to the submission exchange, confirmed.
    pub async fn publish(&self, meta: &moka_ingest::broker::envelope::Meta, payload: &str) {
        self.publish_raw(&meta.body(payload.as_bytes()), meta.properties()).await;
    }

    pub async fn publish_raw(&self, body: &[u8], props: lapin::BasicProperties) {
        let ch = self._conn.create_channel().await.unwrap();
        ch.confirm_select(Default::default()).await.unwrap();
        let confirm = ch
            .basic_publish(
                &self.topology.exchange,
                moka_ingest::broker::topology::SUBMISSION_KEY,
                Default::default(),
                body,
                props,
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack());
        let _ = ch.close(200, "bye").await;
    }
}

/// A payload for candidate `id` named `name`.
pub fn candidate_payload(id: &str, name: &str) -> String {
    serde_json::json!({
        "id": id, "name": name, "phone": "132-0303-0303", "email": " Zhang.San@Example.COM ",
        "gender": "male", "birthYear": "1990", "source": "拉勾网", "married": "单身",
        "educationInfo": [
            {"startDate": "2007.09", "endDate": "2011年7月", "school": "北京大学", "speciality": "数学", "academicDegree": "理学学士"},
            {"startDate": "2011-09", "endDate": "2014-07", "school": "清华大学", "speciality": "计算机", "academicDegree": "硕士研究生"}
        ],
        "experienceInfo": {"startDate": "201405", "endDate": "至今", "company": "腾讯", "title": "前端工程师"},
        "jobTitle": "高级前端工程师",
        "operator": {"name": "李四", "email": "LISI@a.com", "phone": "15828748567"},
        "offerAttachmentUrls": "", "offerInfo": ""
    })
    .to_string()
}

/// Name lookup for tests: `evil.test` resolves to 127.0.0.2, everything else as usual.
pub struct TestLookup;

impl moka_ingest::worker::attachments::guard::Lookup for TestLookup {
    fn lookup(
        &self,
        host: String,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Vec<std::net::IpAddr>>> + Send>> {
        Box::pin(async move {
            if host == "evil.test" {
                return Ok(vec!["127.0.0.2".parse().unwrap()]);
            }
            Ok(tokio::net::lookup_host((host.as_str(), 0)).await?.map(|a| a.ip()).collect())
        })
    }
}

impl TestWorker {
    /// A worker whose attachment downloads resolve names with [`TestLookup`].
    pub async fn spawn_with_test_lookup(settings: &Settings) -> TestWorker {
        moka_ingest::telemetry::metrics();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shutdown = CancellationToken::new();
        let handle = moka_ingest::worker::spawn_with_lookup(
            settings,
            listener,
            shutdown.clone(),
            std::sync::Arc::new(TestLookup),
        )
        .await
        .expect("worker starts");
        TestWorker { shutdown, handle }
    }
}

impl TestBroker {
    /// Messages waiting in the delay queues.
    pub async fn retry_depth(&self) -> u32 {
        let mut n = 0;
        for i in 0..self.topology.retry_delays.len() {
            n += self.depth(&self.topology.retry_queue(i).unwrap().0).await;
        }
        for i in 0..self.topology.download_delays.len() {
            n += self.depth(&self.topology.download_retry_queue(i).unwrap().0).await;
        }
        n
    }

    /// Every message sent is either stored (applied or stale, or recorded as a duplicate request)
    /// or dead, and nothing is left in flight: sent = stored + dead letters.
    pub async fn assert_accounted(&self, db: &TestDb, sent: u32) {
        assert_eq!(self.wait_depth(&self.topology.queue, 0).await, 0, "submission queue drained");
        assert_eq!(self.retry_depth().await, 0, "nothing waiting to be retried");
        assert_eq!(self.wait_depth(&self.topology.downloads, 0).await, 0, "downloads queue drained");
        // Queue counts trail the broker's confirms a little: poll until they settle.
        let counts = || async {
            let stored =
                db.count("SELECT 1 FROM submissions WHERE outcome IN ('applied', 'stale', 'duplicate')").await as u32;
            (stored, self.depth(&self.topology.dead_queue).await)
        };
        let (stored, dead) = poll::poll(Duration::from_secs(10), counts, |(s, d)| s + d == sent).await;
        assert_eq!(stored + dead, sent, "sent = stored ({stored}) + dead letters ({dead})");
    }
}
