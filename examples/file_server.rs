//! A fast file server for `scripts/bench-attachment-pipeline.sh`: answers every `GET /<path>`
//! after a fixed latency with a distinct file of about `--size` bytes (a PDF header, the path,
//! filler), on each of the given loopback addresses. Tokio-based, so that the server is not the
//! limit. Counts requests, connections and the most answered at once, printed at SIGTERM/SIGINT.
//!
//! ```sh
//! cargo run --release --example file_server -- 127.0.0.1:18101,127.0.0.2:18101 100 51200
//! ```

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{
    extract::{Path, State},
    http::header,
    response::IntoResponse,
    routing::get,
    serve::ListenerExt,
    Router,
};
use bytes::Bytes;

struct Shared {
    latency: Duration,
    filler: Bytes,
    now: AtomicUsize,
    peak: AtomicUsize,
    total: AtomicUsize,
    /// Connections accepted: far fewer than requests when the client reuses them.
    connections: AtomicUsize,
}

async fn file(State(s): State<Arc<Shared>>, Path(path): Path<String>) -> impl IntoResponse {
    let n = s.now.fetch_add(1, Ordering::Relaxed) + 1;
    s.peak.fetch_max(n, Ordering::Relaxed);
    tokio::time::sleep(s.latency).await;
    s.now.fetch_sub(1, Ordering::Relaxed);
    s.total.fetch_add(1, Ordering::Relaxed);
    let mut body = Vec::with_capacity(s.filler.len() + path.len() + 16);
    body.extend_from_slice(b"%PDF-1.4\n% ");
    body.extend_from_slice(path.as_bytes());
    body.push(b'\n');
    body.extend_from_slice(&s.filler);
    ([(header::CONTENT_TYPE, "application/pdf")], body)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(addrs), Some(latency), Some(size)) = (
        args.first(),
        args.get(1).and_then(|v| v.parse::<u64>().ok()),
        args.get(2).and_then(|v| v.parse::<usize>().ok()),
    ) else {
        anyhow::bail!("usage: file_server ADDR[,ADDR…] LATENCY_MS SIZE_BYTES");
    };
    let shared = Arc::new(Shared {
        latency: Duration::from_millis(latency),
        filler: Bytes::from(vec![b'x'; size]),
        now: AtomicUsize::new(0),
        peak: AtomicUsize::new(0),
        total: AtomicUsize::new(0),
        connections: AtomicUsize::new(0),
    });
    let app = Router::new().route("/{*path}", get(file)).with_state(shared.clone());
    for addr in addrs.split(',') {
        let ip: std::net::SocketAddr = addr.parse()?;
        anyhow::ensure!(ip.ip().is_loopback(), "{addr}: loopback addresses only");
        let counted = shared.clone();
        let listener = tokio::net::TcpListener::bind(ip).await?.tap_io(move |_| {
            counted.connections.fetch_add(1, Ordering::Relaxed);
        });
        let app = app.clone();
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    eprintln!("serving on {addrs}");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    eprintln!(
        "file_server: {} requests on {} connections, at most {} at once",
        shared.total.load(Ordering::Relaxed),
        shared.connections.load(Ordering::Relaxed),
        shared.peak.load(Ordering::Relaxed)
    );
    Ok(())
}
