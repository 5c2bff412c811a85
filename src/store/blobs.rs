//! Content-addressed attachment storage: a file's key is its SHA-256 (`sha256/ab/cd/<hex>`), so
//! the same file is stored once. The backend is an `object_store`: a local directory by default,
//! or an S3-compatible bucket for deployments with several machines.
//!
//! A file reaches its key only once complete (the local backend writes to a staging file and
//! renames; S3 makes a multipart upload visible on completion), and its size is checked after;
//! only then does the caller write a row that says `stored`.

use std::{path::PathBuf, sync::Arc};

use object_store::{local::LocalFileSystem, path::Path as ObjectPath, ObjectStore, WriteMultipart};
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
    #[error("attachment storage: reading the staged file")]
    Staged(#[source] std::io::Error),
    #[error("attachment storage: {key} has {got} bytes after upload, expected {want}")]
    SizeMismatch { key: String, got: u64, want: u64 },
}

/// An `object_store` failure while doing `what`.
fn store_err(what: &'static str) -> impl FnOnce(object_store::Error) -> BlobError {
    move |source| BlobError::Store { what, source }
}

pub struct Blobs {
    store: Arc<dyn ObjectStore>,
    /// Where downloads are staged before they are stored.
    pub tmp_dir: PathBuf,
    /// Upload part size: S3 needs at least 5 MiB parts; local files stream in 256 KiB parts.
    part_size: usize,
}

impl Blobs {
    /// Files under the directory `dir` (created if missing).
    pub fn local(dir: &std::path::Path) -> Result<Blobs, BlobError> {
        std::fs::create_dir_all(dir).map_err(|source| BlobError::CreateDir { dir: dir.to_owned(), source })?;
        let store = LocalFileSystem::new_with_prefix(dir).map_err(store_err("open the local directory"))?;
        Ok(Blobs { store: Arc::new(store), tmp_dir: dir.join(".tmp"), part_size: 256 << 10 })
    }

    /// Objects in an S3-compatible `bucket`; credentials, region and endpoint from `AWS_*`.
    pub fn s3(bucket: &str) -> Result<Blobs, BlobError> {
        let store = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()
            .map_err(store_err("configure the S3 bucket"))?;
        Ok(Blobs { store: Arc::new(store), tmp_dir: std::env::temp_dir().join("moka-ingest"), part_size: 5 << 20 })
    }

    /// The key of a file with this SHA-256.
    pub fn key(sha256: &str) -> String {
        format!("sha256/{}/{}/{sha256}", &sha256[..2], &sha256[2..4])
    }

    /// Stores the staged file at `tmp` (deleted afterwards) under its content key, unless a file
    /// of that key and size is already there. Returns the key.
    pub async fn put_file(&self, tmp: &std::path::Path, sha256: &str, size: u64) -> Result<String, BlobError> {
        let result = self.put_inner(tmp, sha256, size).await;
        let _ = tokio::fs::remove_file(tmp).await;
        result
    }

    async fn put_inner(&self, tmp: &std::path::Path, sha256: &str, size: u64) -> Result<String, BlobError> {
        let key = Self::key(sha256);
        let location = ObjectPath::from(key.as_str());
        if self.store.head(&location).await.is_ok_and(|m| m.size == size) {
            return Ok(key);
        }
        let upload = self.store.put_multipart(&location).await.map_err(store_err("start the upload"))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.part_size);
        let mut file = tokio::fs::File::open(tmp).await.map_err(BlobError::Staged)?;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            // At most two parts in flight: memory stays bounded whatever the file size.
            writer.wait_for_capacity(2).await.map_err(store_err("upload a part"))?;
            let n = file.read(&mut buf).await.map_err(BlobError::Staged)?;
            if n == 0 {
                break;
            }
            writer.write(&buf[..n]);
        }
        writer.finish().await.map_err(store_err("complete the upload"))?;
        let stored = self.store.head(&location).await.map_err(store_err("check the stored size"))?;
        if stored.size != size {
            return Err(BlobError::SizeMismatch { key, got: stored.size, want: size });
        }
        Ok(key)
    }
}
