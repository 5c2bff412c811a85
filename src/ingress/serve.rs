//! Serving HTTP connections: the accept loop with a cap on open connections, the per-connection
//! idle and header timeouts, and the JSON error shape even for the answers hyper writes itself.
//!
//! A connection is in one of four phases, tracked by [`Guarded`], the wrapper around its socket:
//!
//! - `Idle`: waiting for a request (a keep-alive connection between requests): closed after
//!   `idle_timeout`;
//! - `Head`: the first bytes of a request arrived (a new connection starts here): the whole head
//!   must arrive within `header_timeout`, so a client sending headers a byte at a time is cut off;
//! - `Busy`: the handler runs; it bounds the body read itself (`body_timeout`, answered 408) and
//!   the publish (`confirm_timeout`);
//! - `Responding`: the answer is being written; back to `Idle` once it is flushed.
//!
//! hyper answers a request it cannot parse (bad `Content-Length`, head too large, URI too long)
//! on its own, with an empty body, before any handler runs. Such a write happens while the phase
//! is still `Idle` or `Head`, which is how the wrapper recognizes it and replaces it with the
//! ingress's `{"error_code":…,"error_message":…}` answer of the same status.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc,
    },
    task::{ready, Context, Poll},
    time::{Duration, Instant},
};

use axum::{extract::Request, Router};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    time::Sleep,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower_service::Service;
use tracing::{debug, info, warn};

use super::error::Rejection;

/// How connections are bounded (`ingress.*` settings).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections at most; more are closed at once and counted.
    pub max_connections: usize,
    /// From the first byte of a request (or the connection's start) to the end of its head.
    pub header_timeout: Duration,
    /// A keep-alive connection waiting for its next request.
    pub idle_timeout: Duration,
}

const IDLE: u8 = 0;
const HEAD: u8 = 1;
const BUSY: u8 = 2;
const RESPONDING: u8 = 3;

/// Serves `router` on `listener` until `shutdown`; then stops accepting, lets every connection
/// finish the request it is in, and returns once all are closed.
pub async fn serve(listener: TcpListener, router: Router, mut limits: Limits, shutdown: CancellationToken) {
    // Past the open-file limit, accept() itself fails and nothing can be refused cleanly: keep the
    // cap below it, leaving room for the broker connection, logs and the like.
    let budget = open_file_budget();
    if limits.max_connections > budget {
        warn!(
            max_connections = limits.max_connections,
            open_file_budget = budget,
            "ingress.max_connections is above what the open-file limit allows; using the lower figure"
        );
        limits.max_connections = budget;
    }
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    let open = metrics::gauge!("moka_ingress_connections_open");
    let refused = metrics::counter!("moka_ingress_connections_refused_total");
    let mut last_refusal_log: Option<Instant> = None;
    let mut refused_since_log = 0u64;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Over the cap: closing at once costs the least and tells the client to go elsewhere.
            drop(stream);
            refused.increment(1);
            refused_since_log += 1;
            if last_refusal_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                warn!(
                    max_connections = limits.max_connections,
                    refused = refused_since_log,
                    "connection cap reached; closing new connections"
                );
                last_refusal_log = Some(Instant::now());
                refused_since_log = 0;
            }
            continue;
        };
        // Small request/response pairs: don't wait for Nagle.
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let shutdown = shutdown.clone();
        let open = open.clone();
        open.increment(1.0);
        connections.spawn(async move {
            serve_connection(stream, router, limits, shutdown).await;
            debug!(%peer, "connection closed");
            open.decrement(1.0);
            drop(permit);
        });
    }
    connections.close();
    connections.wait().await;
}

/// Largest request head (request line and header fields) accepted.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The size of a request's head as sent, near enough (names, values, separators).
fn head_bytes<B>(request: &Request<B>) -> usize {
    let line = request.method().as_str().len() + request.uri().to_string().len() + 12;
    line + request.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum::<usize>()
}

/// File descriptors this process may give to connections: the soft limit less a reserve.
fn open_file_budget() -> usize {
    const RESERVE: u64 = 64;
    match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok((soft, _)) => soft.saturating_sub(RESERVE).max(1).try_into().unwrap_or(usize::MAX),
        Err(_) => usize::MAX,
    }
}

async fn serve_connection(stream: TcpStream, router: Router, limits: Limits, shutdown: CancellationToken) {
    let phase = Arc::new(AtomicU8::new(HEAD));
    let io = Guarded::new(stream, phase.clone(), limits);
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        phase.store(BUSY, Ordering::Relaxed);
        // hyper's own cap on the head depends on how the bytes arrived (one read may bring more
        // than its buffer limit): this one does not.
        let too_large = head_bytes(&request) > MAX_HEAD_BYTES;
        let answer = (!too_large).then(|| router.clone().call(request.map(axum::body::Body::new)));
        async move {
            match answer {
                Some(answer) => answer.await,
                None => {
                    Ok(super::refuse(Rejection::Unparsable(axum::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)))
                }
            }
        }
    });
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            // Finish the request in progress, answer it, then close.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        debug!(error = %e, "connection ended with an error");
    }
}

/// The socket of one connection, with its phase, its deadline and the rewrite of hyper's own
/// error answers.
struct Guarded {
    inner: TcpStream,
    phase: Arc<AtomicU8>,
    limits: Limits,
    deadline: Pin<Box<Sleep>>,
    /// A replacement answer still to be written, and how much of it is written.
    pending: Option<(Vec<u8>, usize)>,
}

impl Guarded {
    fn new(inner: TcpStream, phase: Arc<AtomicU8>, limits: Limits) -> Guarded {
        let deadline = Box::pin(tokio::time::sleep(limits.header_timeout));
        Guarded { inner, phase, limits, deadline, pending: None }
    }

    fn rearm(&mut self, after: Duration) {
        self.deadline.as_mut().reset(tokio::time::Instant::now() + after);
    }

    /// Writes what is left of a replacement answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.pending {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
            if *written == bytes.len() {
                self.pending = None;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Guarded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before
                    && this.phase.compare_exchange(IDLE, HEAD, Ordering::Relaxed, Ordering::Relaxed).is_ok()
                {
                    let after = this.limits.header_timeout;
                    this.rearm(after);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                // Only while waiting for a request or its head: the handler bounds the body itself.
                let phase = this.phase.load(Ordering::Relaxed);
                if (phase == IDLE || phase == HEAD) && this.deadline.as_mut().poll(cx).is_ready() {
                    let reason = if phase == IDLE { "idle_timeout" } else { "header_timeout" };
                    metrics::counter!("moka_ingress_connections_closed_total", "reason" => reason).increment(1);
                    debug!(reason, "closing a connection");
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, reason)));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        match this.phase.load(Ordering::Relaxed) {
            IDLE | HEAD if buf.starts_with(b"HTTP/1.1 ") || buf.starts_with(b"HTTP/1.0 ") => {
                // No handler ran for this request: hyper refused it and answers by itself.
                // Taken as written whatever happens next; what is left goes out with the flush.
                this.pending = Some((json_answer(buf), 0));
                match this.poll_pending(cx) {
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    _ => Poll::Ready(Ok(buf.len())),
                }
            }
            BUSY if !buf.starts_with(b"HTTP/1.1 100 ") => {
                this.phase.store(RESPONDING, Ordering::Relaxed);
                Pin::new(&mut this.inner).poll_write(cx, buf)
            }
            _ => Pin::new(&mut this.inner).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        if this.phase.compare_exchange(RESPONDING, IDLE, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            let after = this.limits.idle_timeout;
            this.rearm(after);
            // hyper may not read again until the client sends something: arm the timer with this
            // task's waker, so that the idle deadline wakes it and the next read sees it passed.
            let _ = this.deadline.as_mut().poll(cx);
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// The ingress's JSON answer in place of hyper's bodiless one, with the same status.
fn json_answer(hyper_head: &[u8]) -> Vec<u8> {
    let status = hyper_head
        .get(9..12)
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| axum::http::StatusCode::from_u16(s).ok())
        .unwrap_or(axum::http::StatusCode::BAD_REQUEST);
    let rejection = Rejection::Unparsable(status);
    metrics::counter!("moka_ingress_requests_total", "outcome" => rejection.kind()).increment(1);
    info!(code = rejection.code(), status = status.as_u16(), reason = %rejection, "request rejected before parsing");
    let body = rejection.body();
    let mut id = uuid::Uuid::encode_buffer();
    let id = uuid::Uuid::now_v7().hyphenated().encode_lower(&mut id).to_owned();
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nx-request-id: {id}\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
    )
    .into_bytes()
}
