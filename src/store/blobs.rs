//! Content-addressed attachment storage: a file's key is its SHA-256 (`sha256/ab/cd/<hex>`), so
//! the same file is stored once. Two backends: a local directory (the default), or an
//! S3-compatible bucket (through `object_store`) for deployments with several machines.
//!
//! A file reaches its key only once complete (the local backend renames the staged file into
//! place, atomically and without a copy; S3 makes a multipart upload visible on completion), and
//! its size is checked after; only then does the caller write a row that says `stored`.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use object_store::{path::Path as ObjectPath, ObjectStore, WriteMultipart};
use tokio::io::AsyncReadExt;

/// Why a file could not be stored (each variant carries its cause).
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("attachment storage: cannot create {}", dir.display())]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("attachment storage: {what}")]
    Store {
        what: &'static str,
        #[source]
        source: object_store::Error,
    },
    #[error("attachment storage: {what}")]
    File {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("attachment storage: {key} has {got} bytes after upload, expected {want}")]
    SizeMismatch { key: String, got: u64, want: u64 },
    /// The S3 backend's settings are incomplete (named, never shown: they hold secrets).
    #[error("attachment storage: attachments.backend = \"s3\" needs {0} in the environment")]
    S3Settings(&'static str),
}

/// An `object_store` failure while doing `what`.
fn store_err(what: &'static str) -> impl FnOnce(object_store::Error) -> BlobError {
    move |source| BlobError::Store { what, source }
}

/// A file system failure while doing `what`.
fn file_err(what: &'static str) -> impl FnOnce(std::io::Error) -> BlobError {
    move |source| BlobError::File { what, source }
}

enum Backend {
    /// Files under this directory; downloads are staged in its `.tmp` (same file system).
    Dir(PathBuf),
    /// Objects in a bucket.
    Bucket(Arc<dyn ObjectStore>),
}

pub struct Blobs {
    backend: Backend,
    /// Where downloads are staged before they are stored.
    pub tmp_dir: PathBuf,
}

impl Blobs {
    /// Files under the directory `dir` (created if missing).
    pub fn local(dir: &Path) -> Result<Blobs, BlobError> {
        std::fs::create_dir_all(dir).map_err(|source| BlobError::CreateDir { dir: dir.to_owned(), source })?;
        Ok(Blobs { backend: Backend::Dir(dir.to_owned()), tmp_dir: dir.join(".tmp") })
    }

    /// Objects in an S3-compatible `bucket`; credentials, region and endpoint from the process's
    /// `AWS_*` environment variables (see [`Blobs::s3_from`]).
    pub fn s3(bucket: &str) -> Result<Blobs, BlobError> {
        // vars_os: std::env::vars() panics on a variable that is not UTF-8 (anyone's, not ours).
        let vars = std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        Self::s3_from(bucket, vars)
    }

    /// Objects in an S3-compatible `bucket`, configured by the `AWS_*` variables among `vars`
    /// (object_store's names: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
    /// `AWS_REGION` or `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, ...).
    ///
    /// The key pair is required: without it object_store would ask the cloud's instance metadata
    /// service for credentials, traffic to a link-local address that a deployment configured by
    /// its environment never wants, and an error only at the first upload instead of at start.
    pub fn s3_from(bucket: &str, vars: impl IntoIterator<Item = (String, String)>) -> Result<Blobs, BlobError> {
        use object_store::{aws::AmazonS3Builder, BackoffConfig, ClientOptions, RetryConfig};
        // A bucket that does not answer fails the download within seconds, as a transient
        // failure that the download retry schedule spaces out (object_store's own default
        // retries for up to 3 minutes, holding a download slot all that time).
        let retry =
            RetryConfig { backoff: BackoffConfig::default(), max_retries: 2, retry_timeout: Duration::from_secs(20) };
        let client =
            ClientOptions::new().with_connect_timeout(Duration::from_secs(5)).with_timeout(Duration::from_secs(60));
        // The client options first: AWS_ALLOW_HTTP and the like below adjust them.
        let mut builder = AmazonS3Builder::new().with_client_options(client).with_retry(retry);
        let (mut key_id, mut secret) = (false, false);
        for (name, value) in vars {
            if !name.starts_with("AWS_") || value.is_empty() {
                continue;
            }
            key_id |= name == "AWS_ACCESS_KEY_ID";
            secret |= name == "AWS_SECRET_ACCESS_KEY";
            if let Ok(key) = name.to_ascii_lowercase().parse() {
                builder = builder.with_config(key, value);
            }
        }
        if !key_id {
            return Err(BlobError::S3Settings("AWS_ACCESS_KEY_ID"));
        }
        if !secret {
            return Err(BlobError::S3Settings("AWS_SECRET_ACCESS_KEY"));
        }
        let store = builder.with_bucket_name(bucket).build().map_err(store_err("configure the S3 bucket"))?;
        Ok(Blobs { backend: Backend::Bucket(Arc::new(store)), tmp_dir: std::env::temp_dir().join("moka-ingest") })
    }

    /// The key of a file with this SHA-256.
    pub fn key(sha256: &str) -> String {
        format!("sha256/{}/{}/{sha256}", &sha256[..2], &sha256[2..4])
    }

    /// The whole stored file of `key` (files are capped by `attachments.max_bytes`).
    pub async fn get(&self, key: &str) -> Result<Vec<u8>, BlobError> {
        match &self.backend {
            Backend::Dir(root) => tokio::fs::read(root.join(key)).await.map_err(file_err("reading a stored file")),
            Backend::Bucket(store) => {
                let got = store.get(&ObjectPath::from(key)).await.map_err(store_err("get a stored file"))?;
                Ok(got.bytes().await.map_err(store_err("read a stored file"))?.to_vec())
            }
        }
    }

    /// Stores the staged file at `tmp` (gone afterwards) under its content key, unless a file of
    /// that key and size is already there. Returns the key.
    pub async fn put_file(&self, tmp: &Path, sha256: &str, size: u64) -> Result<String, BlobError> {
        let key = Self::key(sha256);
        let result = match &self.backend {
            Backend::Dir(root) => rename_into(root, tmp, key, size).await,
            Backend::Bucket(store) => upload(store.as_ref(), tmp, key, size).await,
        };
        let _ = tokio::fs::remove_file(tmp).await;
        result
    }
}

/// The local backend: the staged file becomes the object by a rename.
async fn rename_into(root: &Path, tmp: &Path, key: String, size: u64) -> Result<String, BlobError> {
    let path = root.join(&key);
    if tokio::fs::metadata(&path).await.is_ok_and(|m| m.len() == size) {
        return Ok(key);
    }
    let dir = path.parent().expect("keys have directories");
    tokio::fs::create_dir_all(dir).await.map_err(|source| BlobError::CreateDir { dir: dir.to_owned(), source })?;
    tokio::fs::rename(tmp, &path).await.map_err(file_err("moving the staged file into place"))?;
    let stored = tokio::fs::metadata(&path).await.map_err(file_err("checking the stored size"))?.len();
    if stored != size {
        return Err(BlobError::SizeMismatch { key, got: stored, want: size });
    }
    Ok(key)
}

/// The S3 backend: a multipart upload, at most two parts (of S3's minimum, 5 MiB) in flight, so
/// memory stays bounded whatever the file size.
async fn upload(store: &dyn ObjectStore, tmp: &Path, key: String, size: u64) -> Result<String, BlobError> {
    const PART: usize = 5 << 20;
    let location = ObjectPath::from(key.as_str());
    if store.head(&location).await.is_ok_and(|m| m.size == size) {
        return Ok(key);
    }
    let upload = store.put_multipart(&location).await.map_err(store_err("start the upload"))?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
    let mut file = tokio::fs::File::open(tmp).await.map_err(file_err("reading the staged file"))?;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        writer.wait_for_capacity(2).await.map_err(store_err("upload a part"))?;
        let n = file.read(&mut buf).await.map_err(file_err("reading the staged file"))?;
        if n == 0 {
            break;
        }
        writer.write(&buf[..n]);
    }
    writer.finish().await.map_err(store_err("complete the upload"))?;
    let stored = store.head(&location).await.map_err(store_err("check the stored size"))?;
    if stored.size != size {
        return Err(BlobError::SizeMismatch { key, got: stored.size, want: size });
    }
    Ok(key)
}
