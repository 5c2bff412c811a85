//! Attachments: the resume, interview feedback and offer files a submission links to. Links
//! often expire within hours, so the worker fetches them while it processes the message, before
//! it commits, and keeps them in content-addressed storage ([`crate::store::blobs`]).
//!
//! A permanent failure (404, 403, over the cap, a blocked address, a bad URL) is recorded as a
//! `failed` row and the candidate is stored anyway; a transient one (refused, reset, timeout, 5xx,
//! 429) fails the message as transient, so it is retried later.

pub mod fetch;
pub mod guard;

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use futures_util::{stream, StreamExt};
use tracing::{debug, Instrument};

use crate::{
    config::{AttachmentSettings, BlobBackend},
    domain::candidate::Candidate,
    store::blobs::{BlobError, Blobs},
};
use fetch::{Downloader, FetchError, Limits};
use guard::{Lookup, SystemLookup};

pub use crate::store::attachments::{Kind, Record};

/// The links of a candidate, in payload order, without repeats.
pub fn wanted(c: &Candidate) -> Vec<(Kind, String)> {
    let mut out: Vec<(Kind, String)> = Vec::new();
    let links = c
        .resume_url
        .iter()
        .map(|u| (Kind::Resume, u))
        .chain(c.interview_feedback_url.iter().map(|u| (Kind::InterviewFeedback, u)))
        .chain(c.offer_attachment_urls.iter().map(|u| (Kind::Offer, u)));
    for (kind, url) in links {
        let url = url.trim().to_owned();
        if !url.is_empty() && !out.iter().any(|(k, u)| *k == kind && *u == url) {
            out.push((kind, url));
        }
    }
    out
}

/// Why attachment handling cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("attachment storage")]
    Storage(#[from] BlobError),
    #[error("HTTP client")]
    Client(#[from] reqwest::Error),
}

/// Downloads and stores attachments.
pub struct Attachments {
    downloader: Downloader,
    blobs: Blobs,
    concurrency: usize,
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
        };
        let allow = settings.allow.clone();
        let downloader = Downloader::new(allow, lookup, limits, blobs.tmp_dir.clone())?;
        Ok(Attachments { downloader, blobs, concurrency: settings.concurrency.max(1) })
    }

    /// Fetches `jobs` (an owner index, the candidate id, kind, URL) at most `concurrency` at a
    /// time. Returns, per job, the record or the transient error that must make its message retry.
    pub async fn fetch_all(&self, jobs: Vec<(usize, String, Kind, String)>) -> Vec<(usize, Result<Record, String>)> {
        stream::iter(jobs)
            .map(|(owner, moka_id, kind, url)| async move {
                let span = tracing::info_span!("attachment", %moka_id, kind = kind.as_str(), %url);
                (owner, self.fetch_one(moka_id, kind, url).instrument(span).await)
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await
    }

    async fn fetch_one(&self, moka_id: String, kind: Kind, url: String) -> Result<Record, String> {
        let started = std::time::Instant::now();
        let mut record = Record {
            moka_id,
            kind,
            url,
            stored: false,
            sha256: None,
            size_bytes: None,
            content_type: None,
            file_name: None,
            storage_key: None,
            error: None,
            fetched_at: Utc::now(),
        };
        match self.downloader.fetch(&record.url).await {
            Ok(f) => {
                let key = self
                    .blobs
                    .put_file(&f.tmp_path, &f.sha256, f.size)
                    .await
                    .map_err(|e| crate::telemetry::chain(&e))?;
                debug!(size = f.size, content_type = %f.content_type, "attachment stored");
                metrics::counter!("moka_worker_attachments_total", "outcome" => "stored").increment(1);
                metrics::histogram!("moka_worker_attachment_seconds").record(started.elapsed().as_secs_f64());
                record.stored = true;
                record.sha256 = Some(f.sha256);
                record.size_bytes = Some(f.size as i64);
                record.content_type = Some(f.content_type);
                record.file_name = f.file_name;
                record.storage_key = Some(key);
                Ok(record)
            }
            Err(e @ FetchError::Permanent { .. }) => {
                let why = crate::telemetry::chain(&e);
                tracing::info!(reason = %why, "attachment failed permanently; the candidate is stored without it");
                metrics::counter!("moka_worker_attachments_total", "outcome" => "failed").increment(1);
                record.error = Some(why);
                Ok(record)
            }
            Err(e @ FetchError::Transient { .. }) => {
                let why = crate::telemetry::chain(&e);
                metrics::counter!("moka_worker_attachments_total", "outcome" => "transient").increment(1);
                Err(format!("{} {}: {why}", record.kind.as_str(), record.url))
            }
        }
    }
}
