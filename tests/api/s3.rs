//! The S3 attachment backend against a real S3-compatible server: moto's server mode (from the
//! test venv, `tests/requirements.txt`) on a loopback port of the test's own, one bucket per test.

use std::{path::PathBuf, process::Stdio, time::Duration};

use chrono::Utc;
use moka_ingest::{broker::envelope::Meta, store::blobs::Blobs};
use sha2::{Digest, Sha256};

use crate::helpers::{
    self,
    files::FileServer,
    poll::eventually,
    process::{free_port, service, sigterm_and_wait, venv_tool},
    TestBroker, TestDb,
};

/// A moto S3 server, stopped (by its pid) when dropped.
struct Moto {
    endpoint: String,
    child: tokio::process::Child,
    http: reqwest::Client,
}

impl Moto {
    async fn start() -> Moto {
        let port = free_port();
        let child = tokio::process::Command::new(venv_tool("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let endpoint = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let up = || async { http.get(format!("{endpoint}/moto-api/")).send().await.is_ok() };
        eventually(Duration::from_secs(30), "moto's S3 server answers", up).await;
        Moto { endpoint, child, http }
    }

    /// The `AWS_*` variables of a deployment that uses this server.
    fn vars(&self) -> Vec<(String, String)> {
        owned(&[
            ("AWS_ACCESS_KEY_ID", "moka-test-key"),
            ("AWS_SECRET_ACCESS_KEY", "moka-test-secret"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", &self.endpoint),
            ("AWS_ALLOW_HTTP", "true"),
        ])
    }

    async fn create_bucket(&self, bucket: &str) {
        let r = self.http.put(format!("{}/{bucket}", self.endpoint)).send().await.unwrap();
        assert!(r.status().is_success(), "create bucket: {}", r.status());
    }

    /// The keys in `bucket` and their sizes (ListObjectsV2, read from its XML by hand).
    async fn objects(&self, bucket: &str) -> Vec<(String, u64)> {
        let xml = self.http.get(format!("{}/{bucket}?list-type=2", self.endpoint)).send().await.unwrap();
        let xml = xml.text().await.unwrap();
        let field = |s: &str, tag: &str| -> String {
            let open = format!("<{tag}>");
            let from = s.find(&open).map(|i| i + open.len()).unwrap_or_else(|| panic!("{tag} in {s}"));
            s[from..from + s[from..].find('<').unwrap()].to_owned()
        };
        xml.split("<Contents>").skip(1).map(|c| (field(c, "Key"), field(c, "Size").parse().unwrap())).collect()
    }

    async fn stop(mut self) {
        let pid = self.child.id().unwrap().to_string();
        let _ = tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// Environment variables as `Blobs::s3_from` takes them.
fn owned(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// A staged file of `bytes`, and its SHA-256.
fn staged(dir: &std::path::Path, name: &str, bytes: &[u8]) -> (PathBuf, String) {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    (path, hex::encode(Sha256::digest(bytes)))
}

#[tokio::test]
async fn s3_stores_a_file_by_content_once_checks_its_size_and_takes_20_mib() {
    let moto = Moto::start().await;
    moto.create_bucket("moka-files").await;
    let blobs = Blobs::s3_from("moka-files", moto.vars()).unwrap();
    let dir = std::env::temp_dir().join(format!("moka-s3-{}", std::process::id()));

    let (tmp, sha) = staged(&dir, "a", b"%PDF-1.4 a resume");
    let key = blobs.put_file(&tmp, &sha, 17).await.unwrap();
    assert_eq!(key, Blobs::key(&sha));
    assert!(!tmp.exists(), "the staged file is gone once stored");
    assert_eq!(blobs.get(&key).await.unwrap(), b"%PDF-1.4 a resume");
    // The same content again (another link, another candidate): the same object, stored once.
    let (tmp, _) = staged(&dir, "b", b"%PDF-1.4 a resume");
    assert_eq!(blobs.put_file(&tmp, &sha, 17).await.unwrap(), key);
    assert_eq!(moto.objects("moka-files").await, vec![(key.clone(), 17)]);

    // The size check: an object whose stored size is not the downloaded size is an error.
    let (tmp, sha2) = staged(&dir, "c", b"twelve bytes");
    let err = blobs.put_file(&tmp, &sha2, 13).await.unwrap_err();
    assert!(err.to_string().contains("has 12 bytes after upload, expected 13"), "{err}");

    // The largest file the default cap lets through, in 5 MiB parts.
    let big: Vec<u8> = (0..20u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let (tmp, sha3) = staged(&dir, "big", &big);
    let key3 = blobs.put_file(&tmp, &sha3, big.len() as u64).await.unwrap();
    assert_eq!(blobs.get(&key3).await.unwrap(), big);
    let objects = moto.objects("moka-files").await;
    assert!(objects.contains(&(key3, 20 << 20)), "{objects:?}");
    moto.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn s3_without_credentials_in_the_environment_is_refused_naming_what_is_missing() {
    let err = Blobs::s3_from("b", owned(&[("AWS_SECRET_ACCESS_KEY", "s3cret")])).err().unwrap();
    assert!(err.to_string().contains("needs AWS_ACCESS_KEY_ID in the environment"), "{err}");
    let err = Blobs::s3_from("b", owned(&[("AWS_ACCESS_KEY_ID", "k")])).err().unwrap();
    assert!(err.to_string().contains("needs AWS_SECRET_ACCESS_KEY"), "{err}");
}

#[tokio::test]
async fn s3_a_server_that_refuses_connections_is_an_error_within_seconds() {
    // A loopback port nobody listens on.
    let vars = owned(&[
        ("AWS_ACCESS_KEY_ID", "k"),
        ("AWS_SECRET_ACCESS_KEY", "s"),
        ("AWS_ENDPOINT_URL", &format!("http://127.0.0.1:{}", free_port())),
        ("AWS_ALLOW_HTTP", "true"),
    ]);
    let blobs = Blobs::s3_from("nowhere", vars).unwrap();
    let dir = std::env::temp_dir().join(format!("moka-s3-down-{}", std::process::id()));
    let (tmp, sha) = staged(&dir, "a", b"x");
    let started = std::time::Instant::now();
    assert!(blobs.put_file(&tmp, &sha, 1).await.is_err());
    assert!(started.elapsed() < Duration::from_secs(25), "took {:?}", started.elapsed());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_worker_configured_by_its_environment_retries_while_the_bucket_refuses_then_stores_in_it() {
    let (mut broker, db, moto) = (TestBroker::new().await, TestDb::new().await, Moto::start().await);
    // The worker's download schedule below (1 s steps: one delay queue), so that the broker's
    // cleanup deletes that queue too.
    broker.topology.download_delays = vec![Duration::from_secs(1)];
    let files = FileServer::start("http://127.0.0.2:1/").await;
    let bucket = format!("b-{}", broker.prefix.replace('_', "-"));
    let ops = free_port();
    let vars = moto.vars();
    // The worker stages downloads under $TMPDIR/moka-ingest: inside the test broker's own
    // directory, which the broker removes when dropped (also when the test fails).
    let tmp = helpers::attachments_dir(&broker.prefix).join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let mut env: Vec<(&str, String)> = vars.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    env.extend([
        ("TMPDIR", tmp.display().to_string()),
        ("MOKA_INGEST_WORKER_LISTEN", format!("127.0.0.1:{ops}")),
        ("MOKA_INGEST_ATTACHMENTS__BACKEND", "s3".to_owned()),
        ("MOKA_INGEST_ATTACHMENTS__S3_BUCKET", bucket.clone()),
        ("MOKA_INGEST_ATTACHMENTS_ALLOW", "127.0.0.1".to_owned()),
        // Time to see retries and then fix the bucket before the schedule runs out.
        ("MOKA_INGEST_RETRY__DOWNLOAD_SCHEDULE", ["1s"; 20].join(",")),
    ]);
    let worker = service("worker", &broker.prefix, &db, &env);
    assert!(helpers::process::wait_200(&format!("http://127.0.0.1:{ops}/readyz"), Duration::from_secs(20)).await);

    // The bucket does not exist yet: S3 refuses every upload (NoSuchBucket).
    let mut payload: serde_json::Value = serde_json::from_str(&helpers::candidate_payload("s3-1", "张三")).unwrap();
    payload["resumeUrl"] = serde_json::json!(files.url("cv.pdf"));
    let payload = payload.to_string();
    broker.publish(&Meta::new("ak", helpers::now(), "s3-1", Utc::now()), &payload).await;
    let status = || db.count("SELECT 1 FROM candidate_attachments WHERE moka_id = 's3-1' AND status = 'pending'");
    eventually(Duration::from_secs(20), "the candidate is stored with a pending résumé", || async {
        status().await == 1
    })
    .await;
    eventually(Duration::from_secs(20), "the download is fetched again (retried)", || async {
        files.hits("cv.pdf") >= 3
    })
    .await;
    assert_eq!(status().await, 1, "a refusing bucket is transient: the row stays pending, never failed");

    moto.create_bucket(&bucket).await;
    let stored = "SELECT 1 FROM candidate_attachments WHERE moka_id = 's3-1' AND status = 'stored'";
    assert_eq!(db.wait_count(stored, 1, Duration::from_secs(30)).await, 1);
    let key = Blobs::key(&hex::encode(Sha256::digest(helpers::files::PDF)));
    assert_eq!(moto.objects(&bucket).await, vec![(key, helpers::files::PDF.len() as u64)]);
    assert_eq!(db.count("SELECT 1 FROM candidate_attachments WHERE status = 'failed'").await, 0);
    sigterm_and_wait(worker).await;
    moto.stop().await;
    assert!(tmp.join("moka-ingest").is_dir(), "the worker staged its downloads under its own TMPDIR");
}
