//! Attachments: the résumé, interview feedback and offer files a submission links to, off the
//! candidate's path. A candidate is committed with one `pending` row per link
//! ([`crate::store::attachments`]); the batch then queues a download job ([`jobs`]), and this
//! module's own consumer ([`consumer`]) fetches the files, many at once but politely per host
//! ([`hosts`]), keeps them in content-addressed storage ([`crate::store::blobs`]) and settles the
//! rows in batches ([`results`]).
//!
//! A permanent failure (404, 403, over the cap, a blocked address, a bad URL) settles the row as
//! `failed`; a transient one (refused, reset, timeout, 5xx, 429, and any failure of the storage
//! itself, such as a bucket that is unreachable or refuses) is retried through the download
//! delay queues, no earlier than the host's `Retry-After`, and dead-lettered (reason `attachment`)
//! when the schedule is used up.

pub mod consumer;
pub mod fetch;
pub mod guard;
pub mod hosts;
pub mod jobs;
pub mod results;

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use tracing::debug;

use crate::{
    config::{AttachmentSettings, BlobBackend},
    store::blobs::{BlobError, Blobs},
};
use fetch::{Downloader, FetchError, Limits};
use guard::{Lookup, SystemLookup};

pub use crate::store::attachments::{Kind, Link, Record};

/// A download that failed for now: why, and how long the host asked us to wait.
#[derive(Debug, Clone)]
pub struct Transient {
    pub why: String,
    pub retry_after: Option<Duration>,
}

/// Why attachment handling cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("attachment storage")]
    Storage(#[from] BlobError),
    #[error("HTTP client")]
    Client(#[from] reqwest::Error),
}

/// Downloads and stores one file at a time (the consumer runs many at once).
pub struct Attachments {
    downloader: Downloader,
    blobs: Blobs,
}

impl Attachments {
    pub fn new(settings: &AttachmentSettings) -> Result<Attachments, SetupError> {
        Self::with_lookup(settings, Arc::new(SystemLookup))
    }

    /// As `new`, resolving names with `lookup` (tests map names to loopback addresses).
    pub fn with_lookup(settings: &AttachmentSettings, lookup: Arc<dyn Lookup>) -> Result<Attachments, SetupError> {
        let blobs = match &settings.backend {
            BlobBackend::Local { dir } => Blobs::local(dir),
            BlobBackend::S3 { bucket } => Blobs::s3(bucket),
        }?;
        let limits = Limits {
            max_bytes: settings.max_bytes,
            connect_timeout: Duration::from_millis(settings.connect_timeout_ms),
            read_timeout: Duration::from_millis(settings.read_timeout_ms),
            total_timeout: Duration::from_millis(settings.total_timeout_ms),
            max_redirects: settings.max_redirects,
            idle_per_host: settings.per_host,
        };
        let allow = settings.allow.clone();
        let downloader = Downloader::new(allow, lookup, limits, blobs.tmp_dir.clone())?;
        Ok(Attachments { downloader, blobs })
    }

    /// Downloads `link` and stores the file. `Ok`: the row's final state (`stored`, or `failed`
    /// for a dead link); `Err`: try again later.
    pub async fn fetch(&self, link: Link) -> Result<Record, Transient> {
        let started = std::time::Instant::now();
        let result = self.fetch_and_store(link).await;
        // Every fetch, failed ones too: a slow host shows as slow whatever it finally answers.
        metrics::histogram!("moka_worker_attachment_seconds").record(started.elapsed().as_secs_f64());
        result
    }

    async fn fetch_and_store(&self, link: Link) -> Result<Record, Transient> {
        match self.downloader.fetch(&link.url).await {
            Ok(f) => {
                let key = self
                    .blobs
                    .put_file(&f.tmp_path, &f.sha256, f.size)
                    .await
                    .map_err(|e| Transient { why: crate::telemetry::chain(&e), retry_after: None })?;
                debug!(size = f.size, content_type = %f.content_type, "attachment stored");
                metrics::counter!("moka_worker_attachment_bytes_total").increment(f.size);
                Ok(Record {
                    link,
                    stored: true,
                    sha256: Some(f.sha256),
                    size_bytes: i64::try_from(f.size).ok(),
                    content_type: Some(f.content_type),
                    file_name: f.file_name,
                    storage_key: Some(key),
                    error: None,
                    fetched_at: Utc::now(),
                })
            }
            Err(e @ FetchError::Permanent { .. }) => {
                let why = crate::telemetry::chain(&e);
                tracing::info!(reason = %why, "attachment failed permanently; the candidate keeps the link");
                Ok(Record::failed(link, why))
            }
            Err(e @ FetchError::Transient { .. }) => {
                let retry_after = match &e {
                    FetchError::Transient { retry_after, .. } => *retry_after,
                    FetchError::Permanent { .. } => None,
                };
                Err(Transient { why: crate::telemetry::chain(&e), retry_after })
            }
        }
    }
}
