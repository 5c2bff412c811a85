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

#[derive(Debug, thiserror::Error)]
#[error("attachment storage: {0}")]
pub struct BlobError(pub String);

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
        std::fs::create_dir_all(dir).map_err(|e| BlobError(format!("{}: {e}", dir.display())))?;
        let store = LocalFileSystem::new_with_prefix(dir).map_err(|e| BlobError(e.to_string()))?;
        Ok(Blobs { store: Arc::new(store), tmp_dir: dir.join(".tmp"), part_size: 256 << 10 })
    }

    /// Objects in an S3-compatible `bucket`; credentials, region and endpoint from `AWS_*`.
    pub fn s3(bucket: &str) -> Result<Blobs, BlobError> {
        let store = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()
            .map_err(|e| BlobError(e.to_string()))?;
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
        let err = |e: &dyn std::fmt::Display| BlobError(e.to_string());
        let upload = self.store.put_multipart(&location).await.map_err(|e| err(&e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.part_size);
        let mut file = tokio::fs::File::open(tmp).await.map_err(|e| err(&e))?;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            // At most two parts in flight: memory stays bounded whatever the file size.
            writer.wait_for_capacity(2).await.map_err(|e| err(&e))?;
            let n = file.read(&mut buf).await.map_err(|e| err(&e))?;
            if n == 0 {
                break;
            }
            writer.write(&buf[..n]);
        }
        writer.finish().await.map_err(|e| err(&e))?;
        let stored = self.store.head(&location).await.map_err(|e| err(&e))?;
        if stored.size != size {
            return Err(BlobError(format!("{key} has {} bytes after upload, expected {size}", stored.size)));
        }
        Ok(key)
    }
}
