//! Downloads one attachment to a temporary file, streaming: the body is hashed, sniffed and
//! written chunk by chunk, never held whole in memory. Limits: a size cap on the bytes actually
//! read, connect and read timeouts, a total deadline, and a bounded number of redirects, each
//! checked by the SSRF guard like the first URL.

use std::{path::PathBuf, sync::Arc, time::Duration};

use futures_util::StreamExt;
use reqwest::{header, redirect, StatusCode, Url};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::guard::{AllowList, Blocked, GuardedResolver, Lookup};

/// Download limits (from `[attachments]` in the configuration).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_bytes: u64,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub total_timeout: Duration,
    pub max_redirects: usize,
    /// Idle connections kept per host, for reuse (the per-host download limit).
    pub idle_per_host: usize,
}

/// A downloaded file, in a temporary file the caller moves into storage (or deletes).
#[derive(Debug)]
pub struct Fetched {
    pub tmp_path: PathBuf,
    pub sha256: String,
    pub size: u64,
    pub content_type: String,
    pub file_name: Option<String>,
}

/// What a download failure came from (the HTTP client, the file system).
type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a download failed: transient failures are retried later, permanent ones are recorded.
/// The underlying error, if any, is the source (render with `telemetry::chain`).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{what}")]
    Transient {
        what: String,
        #[source]
        source: Option<Cause>,
        /// The host's `Retry-After` (429, 503): not before then.
        retry_after: Option<Duration>,
    },
    #[error("{what}")]
    Permanent {
        what: String,
        #[source]
        source: Option<Cause>,
    },
}

impl FetchError {
    fn permanent(what: impl Into<String>) -> FetchError {
        FetchError::Permanent { what: what.into(), source: None }
    }

    fn transient_from(what: &str, source: impl Into<Cause>) -> FetchError {
        FetchError::Transient { what: what.to_owned(), source: Some(source.into()), retry_after: None }
    }
}

pub struct Downloader {
    client: reqwest::Client,
    allow: Arc<AllowList>,
    limits: Limits,
    tmp_dir: PathBuf,
}

impl Downloader {
    pub fn new(
        allow: AllowList,
        lookup: Arc<dyn Lookup>,
        limits: Limits,
        tmp_dir: PathBuf,
    ) -> Result<Downloader, reqwest::Error> {
        let allow = Arc::new(allow);
        let policy_allow = allow.clone();
        let max_redirects = limits.max_redirects;
        // Every redirect target passes the same checks as the first URL (names are checked again
        // by the resolver when the client connects).
        let policy = redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > max_redirects {
                return attempt.error(Blocked(format!("more than {max_redirects} redirects")));
            }
            match check_url(attempt.url(), &policy_allow) {
                Ok(()) => attempt.follow(),
                Err(why) => attempt.error(Blocked(why)),
            }
        });
        let client = reqwest::Client::builder()
            // Proxy settings from the environment would send the request somewhere unchecked.
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver { lookup, allow: allow.clone() }))
            .redirect(policy)
            .connect_timeout(limits.connect_timeout)
            .read_timeout(limits.read_timeout)
            .timeout(limits.total_timeout)
            .pool_max_idle_per_host(limits.idle_per_host)
            .user_agent(concat!("moka-ingest/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Downloader { client, allow, limits, tmp_dir })
    }

    /// Downloads `url` into a temporary file.
    pub async fn fetch(&self, url: &str) -> Result<Fetched, FetchError> {
        let parsed = Url::parse(url.trim())
            .map_err(|e| FetchError::Permanent { what: "bad URL".into(), source: Some(e.into()) })?;
        check_url(&parsed, &self.allow).map_err(FetchError::permanent)?;
        let response = self.client.get(parsed).send().await.map_err(classify)?;
        let status = response.status();
        if !status.is_success() {
            return Err(status_error(status, response.headers()));
        }
        let hint = response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let file_name = response
            .headers()
            .get(header::CONTENT_DISPOSITION)
            .and_then(|v| v.to_str().ok())
            .and_then(disposition_file_name)
            .or_else(|| url_file_name(response.url()));
        if response.content_length().is_some_and(|n| n > self.limits.max_bytes) {
            return Err(FetchError::permanent(format!(
                "larger than the {} byte cap (Content-Length)",
                self.limits.max_bytes
            )));
        }

        tokio::fs::create_dir_all(&self.tmp_dir)
            .await
            .map_err(|e| FetchError::transient_from("cannot create the temporary directory", e))?;
        let tmp_path = self.tmp_dir.join(format!("{}.part", uuid::Uuid::now_v7()));
        let result = self.stream_to(&tmp_path, response).await;
        match result {
            Ok((sha256, size, head)) => {
                Ok(Fetched { tmp_path, sha256, size, content_type: sniff(&head, hint.as_deref()), file_name })
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp_path).await;
                Err(e)
            }
        }
    }

    /// Writes the body to `path`, returning its SHA-256, its size and its first bytes (for sniffing).
    async fn stream_to(
        &self,
        path: &PathBuf,
        response: reqwest::Response,
    ) -> Result<(String, u64, Vec<u8>), FetchError> {
        let io = |e: std::io::Error| FetchError::transient_from("writing the temporary file", e);
        let mut file = tokio::fs::File::create(path).await.map_err(io)?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut head = Vec::with_capacity(8192);
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(classify)?;
            size += chunk.len() as u64;
            // The cap counts the bytes actually read, whatever Content-Length said (or didn't).
            if size > self.limits.max_bytes {
                return Err(FetchError::permanent(format!("larger than the {} byte cap", self.limits.max_bytes)));
            }
            if head.len() < 8192 {
                head.extend_from_slice(&chunk[..chunk.len().min(8192 - head.len())]);
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.sync_all().await.map_err(io)?;
        Ok((hex::encode(hasher.finalize()), size, head))
    }
}

/// Scheme, user-info and (for address literals) the address itself.
pub fn check_url(url: &Url, allow: &AllowList) -> Result<(), String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("scheme {:?} is not allowed (only http and https)", url.scheme()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("URLs with user-info are not allowed".into());
    }
    match url.host() {
        None => Err("URL has no host".into()),
        Some(url::Host::Ipv4(ip)) => {
            super::guard::check(allow, None, ip.into()).map_err(|why| format!("blocked: {why}"))
        }
        Some(url::Host::Ipv6(ip)) => {
            super::guard::check(allow, None, ip.into()).map_err(|why| format!("blocked: {why}"))
        }
        // Names are checked when resolved, on every connection.
        Some(url::Host::Domain(_)) => Ok(()),
    }
}

fn status_error(status: StatusCode, headers: &header::HeaderMap) -> FetchError {
    let text = format!("HTTP {status}");
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT {
        let retry_after = headers
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(v, std::time::SystemTime::now()));
        FetchError::Transient { what: text, source: None, retry_after }
    } else {
        FetchError::permanent(text)
    }
}

/// `Retry-After`: delay seconds, or an HTTP date (a date in the past means now). Capped at a day:
/// a host asking for more is retried through the schedule as if it had said a day.
pub fn retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    const DAY: Duration = Duration::from_secs(86_400);
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(value).ok()?.duration_since(now).unwrap_or(Duration::ZERO),
    };
    Some(wait.min(DAY))
}

/// Network errors are transient, except a refusal by the guard, a redirect loop or a bad URL.
fn classify(e: reqwest::Error) -> FetchError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if let Some(blocked) = s.downcast_ref::<Blocked>() {
            return FetchError::permanent(blocked.to_string());
        }
        source = s.source();
    }
    if e.is_redirect() || e.is_builder() {
        FetchError::Permanent { what: "cannot be fetched".into(), source: Some(e.into()) }
    } else if e.is_timeout() {
        FetchError::transient_from("timed out", e)
    } else {
        FetchError::transient_from("download failed", e)
    }
}

/// The content type from the bytes (the header only as a fallback hint).
pub fn sniff(head: &[u8], hint: Option<&str>) -> String {
    if let Some(kind) = infer::get(head) {
        // Office Open XML files are zips; infer's generic zip matcher comes first, so ask for them.
        if kind.mime_type() == "application/zip" {
            type Matcher = (fn(&[u8]) -> bool, &'static str);
            let ooxml: [Matcher; 3] = [
                (infer::doc::is_docx, "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
                (infer::doc::is_xlsx, "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
                (infer::doc::is_pptx, "application/vnd.openxmlformats-officedocument.presentationml.presentation"),
            ];
            if let Some((_, mime)) = ooxml.iter().find(|(is, _)| is(head)) {
                return (*mime).to_owned();
            }
        }
        return kind.mime_type().to_owned();
    }
    let text = String::from_utf8_lossy(&head[..head.len().min(512)]).trim_start().to_ascii_lowercase();
    if text.starts_with("<!doctype html") || text.starts_with("<html") {
        return "text/html".into();
    }
    match hint.map(|h| h.split(';').next().unwrap_or("").trim().to_ascii_lowercase()) {
        Some(h) if !h.is_empty() => h,
        _ => "application/octet-stream".into(),
    }
}

/// `filename*=UTF-8''…` (preferred) or `filename="…"` from a Content-Disposition header.
pub fn disposition_file_name(value: &str) -> Option<String> {
    let mut plain = None;
    for part in value.split(';').map(str::trim) {
        let Some((key, v)) = part.split_once('=') else { continue };
        match key.trim().to_ascii_lowercase().as_str() {
            "filename*" => {
                let encoded = v.trim().splitn(3, '\'').nth(2)?;
                let decoded = percent_encoding::percent_decode_str(encoded).decode_utf8().ok()?;
                return Some(clean_name(&decoded)).filter(|n| !n.is_empty());
            }
            "filename" => plain = Some(clean_name(v.trim().trim_matches('"'))),
            _ => {}
        }
    }
    plain.filter(|n| !n.is_empty())
}

fn url_file_name(url: &Url) -> Option<String> {
    let last = url.path_segments()?.next_back()?;
    let decoded = percent_encoding::percent_decode_str(last).decode_utf8_lossy();
    Some(clean_name(&decoded)).filter(|n| !n.is_empty())
}

/// A file name, never a path.
fn clean_name(name: &str) -> String {
    name.rsplit(['/', '\\']).next().unwrap_or("").trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates_and_is_capped() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_764_400_000);
        assert_eq!(retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(retry_after(&later, now), Some(Duration::from_secs(90)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(retry_after("999999999", now), Some(Duration::from_secs(86_400)));
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-1", now), None);
    }

    #[test]
    fn url_checks() {
        let allow = AllowList::parse("127.0.0.1").unwrap();
        let check = |u: &str| check_url(&Url::parse(u).unwrap(), &allow);
        assert!(check("http://127.0.0.1:8/x").is_ok());
        assert!(check("https://example.com/x").is_ok());
        for bad in [
            "ftp://example.com/x",
            "file:///etc/passwd",
            "http://user:pw@example.com/",
            "http://127.0.0.2/",
            "http://2130706434/",
            "http://0x7f000002/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.2]/",
            "http://169.254.169.254/latest/meta-data",
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn file_names() {
        assert_eq!(disposition_file_name(r#"attachment; filename="cv.pdf""#).as_deref(), Some("cv.pdf"));
        assert_eq!(
            disposition_file_name("attachment; filename*=UTF-8''%E7%AE%80%E5%8E%86.pdf; filename=\"x.pdf\"").as_deref(),
            Some("简历.pdf")
        );
        assert_eq!(disposition_file_name(r#"attachment; filename="../../etc/passwd""#).as_deref(), Some("passwd"));
        assert_eq!(disposition_file_name("inline").as_deref(), None);
        assert_eq!(
            url_file_name(&Url::parse("http://a/files/%E7%AE%80.docx?x=1").unwrap()).as_deref(),
            Some("简.docx")
        );
        assert_eq!(url_file_name(&Url::parse("http://a/").unwrap()), None);
    }

    #[test]
    fn content_types_come_from_the_bytes() {
        assert_eq!(sniff(b"%PDF-1.7\n...", Some("text/plain")), "application/pdf");
        assert_eq!(sniff(&[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0], None), "image/png");
        assert_eq!(sniff(b"  <!DOCTYPE html><p>hi", None), "text/html");
        assert_eq!(sniff(b"hello", Some("text/plain; charset=utf-8")), "text/plain");
        assert_eq!(sniff(b"hello", None), "application/octet-stream");
    }
}
