//! A real HTTP file server on 127.0.0.1 for attachment tests, serving real files and the
//! misbehaviours the downloader must survive; it counts requests per path.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::{Path, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use bytes::Bytes;
use futures_util::StreamExt;

/// A minimal valid PDF.
pub const PDF: &[u8] = b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n";

/// A 1x1 PNG.
pub const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4, 0x89, 0x00, 0x00, 0x00, 0x0d, 0x49,
    0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0xf0, 0x1f, 0x00, 0x05, 0x00, 0x01, 0xff, 0x89, 0x99, 0x3d,
    0x1d, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

/// A minimal DOCX (the parts Word needs, zipped; made with Python's `zipfile`, checked in).
pub const DOCX: &[u8] = include_bytes!("../fixtures/offer.docx");

#[derive(Default)]
struct Shared {
    hits: Mutex<HashMap<String, usize>>,
    /// When each request for a path arrived.
    times: Mutex<HashMap<String, Vec<Instant>>>,
    /// `/held…` requests being answered now, and the most at once.
    held_now: std::sync::atomic::AtomicUsize,
    held_peak: std::sync::atomic::AtomicUsize,
    /// When the client gave up on /slow (its body was dropped).
    slow_dropped: Mutex<Option<Instant>>,
    blocked_target: Mutex<String>,
    /// `/switch` answers 503 until this is set.
    switch_on: std::sync::atomic::AtomicBool,
}

pub struct FileServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

/// Sets the time the slow body was dropped.
struct DropClock(Arc<Shared>);
impl Drop for DropClock {
    fn drop(&mut self) {
        *self.0.slow_dropped.lock().unwrap() = Some(Instant::now());
    }
}

impl FileServer {
    /// Serves on 127.0.0.1; `/to-blocked` redirects to `blocked_target`.
    pub async fn start(blocked_target: &str) -> FileServer {
        let shared = Arc::new(Shared::default());
        *shared.blocked_target.lock().unwrap() = blocked_target.to_owned();
        let app = Router::new().route("/{*path}", get(serve)).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        FileServer { addr, shared }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    pub fn hits(&self, path: &str) -> usize {
        self.shared.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    /// Makes `/switch` answer 200 from now on.
    pub fn switch_on(&self) {
        self.shared.switch_on.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// When each request for `path` arrived.
    pub fn times(&self, path: &str) -> Vec<Instant> {
        self.shared.times.lock().unwrap().get(path).cloned().unwrap_or_default()
    }

    /// The most `/held…` requests answered at once.
    pub fn held_peak(&self) -> usize {
        self.shared.held_peak.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn slow_dropped_at(&self) -> Option<Instant> {
        *self.shared.slow_dropped.lock().unwrap()
    }
}

async fn serve(State(shared): State<Arc<Shared>>, Path(path): Path<String>) -> Response {
    let hit = {
        let mut hits = shared.hits.lock().unwrap();
        let n = hits.entry(path.clone()).or_default();
        *n += 1;
        *n
    };
    shared.times.lock().unwrap().entry(path.clone()).or_default().push(Instant::now());
    let redirect = |to: String| (StatusCode::FOUND, [(header::LOCATION, to)]).into_response();
    match path.as_str() {
        "cv.pdf" | "cv-copy.pdf" => {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, "application/octet-stream".parse().unwrap());
            h.insert(
                header::CONTENT_DISPOSITION,
                "attachment; filename*=UTF-8''%E7%AE%80%E5%8E%86.pdf".parse().unwrap(),
            );
            (h, PDF).into_response()
        }
        "offer.docx" => DOCX.into_response(),
        "photo.png" => ([(header::CONTENT_TYPE, "image/png")], PNG).into_response(),
        "feedback.html" => ([(header::CONTENT_TYPE, "text/html")], "<!DOCTYPE html><p>good</p>").into_response(),
        // Over any small cap, streamed in chunks with no Content-Length.
        "big.bin" => {
            let chunks =
                futures_util::stream::iter((0..64).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![7u8; 16 * 1024]))));
            Body::from_stream(chunks).into_response()
        }
        // A body that never ends: one small chunk every 100 ms.
        "slow" => {
            let clock = DropClock(shared.clone());
            let chunks = futures_util::stream::unfold(clock, |clock| async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Some((Ok::<_, std::io::Error>(Bytes::from_static(b"x")), clock))
            });
            Body::from_stream(chunks).into_response()
        }
        // A body that takes two seconds, then ends.
        "slow2s" => {
            let chunks = futures_util::stream::iter(0..20).then(|_| async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok::<_, std::io::Error>(Bytes::from_static(b"%PDF-1.4 slow but complete\n"))
            });
            Body::from_stream(chunks).into_response()
        }
        // Each takes 200 ms; the server counts how many it answers at once.
        p if p.starts_with("held") => {
            use std::sync::atomic::Ordering::SeqCst;
            let now = shared.held_now.fetch_add(1, SeqCst) + 1;
            shared.held_peak.fetch_max(now, SeqCst);
            tokio::time::sleep(Duration::from_millis(200)).await;
            shared.held_now.fetch_sub(1, SeqCst);
            ([(header::CONTENT_TYPE, "application/pdf")], PDF).into_response()
        }
        // Too many requests: come back in 2 s (once).
        "busy" if hit == 1 => (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "2")]).into_response(),
        "busy" => ([(header::CONTENT_TYPE, "application/pdf")], PDF).into_response(),
        "flaky3" if hit <= 3 => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        "flaky3" => ([(header::CONTENT_TYPE, "application/pdf")], PDF).into_response(),
        "switch" if !shared.switch_on.load(std::sync::atomic::Ordering::SeqCst) => {
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
        "switch" => ([(header::CONTENT_TYPE, "application/pdf")], PDF).into_response(),
        "missing" => StatusCode::NOT_FOUND.into_response(),
        "flaky" if hit == 1 => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        "flaky" => ([(header::CONTENT_TYPE, "application/pdf")], PDF).into_response(),
        "r1" => redirect("/r2".into()),
        "r2" => redirect("/r3".into()),
        "r3" => redirect("/cv-copy.pdf".into()),
        "loop1" => redirect("/loop2".into()),
        "loop2" => redirect("/loop3".into()),
        "loop3" => redirect("/loop4".into()),
        "loop4" => redirect("/cv.pdf".into()),
        "to-blocked" => redirect(shared.blocked_target.lock().unwrap().clone()),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A listener that counts the connections it receives (and answers none).
pub struct Tripwire {
    pub addr: SocketAddr,
    count: Arc<std::sync::atomic::AtomicUsize>,
}

impl Tripwire {
    pub async fn bind(addr: &str) -> Option<Tripwire> {
        let listener = tokio::net::TcpListener::bind(addr).await.ok()?;
        let addr = listener.local_addr().unwrap();
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = count.clone();
        tokio::spawn(async move {
            while let Ok((_s, _)) = listener.accept().await {
                c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        Some(Tripwire { addr, count })
    }

    pub fn connections(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::SeqCst)
    }
}
