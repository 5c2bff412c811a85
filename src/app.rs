//! The roles the binary runs (`ingress`, `worker`, `all`), each until SIGTERM/SIGINT.

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{config::Settings, ingress, store, worker};

/// Logs a warning for every access key that still uses the development secret.
pub fn warn_about_dev_keys(settings: &Settings) {
    for key in settings.key_ring().dev_keys() {
        warn!(access_key = %key, "access key uses the DEVELOPMENT secret from config/default.toml; set MOKA_INGEST_KEYS in production");
    }
}

/// Raises the soft limit of open files to the hard limit: each connection is a file descriptor,
/// and the common default soft limit (1024, or less) is far below `ingress.max_connections`.
pub fn raise_open_file_limit() {
    match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok((soft, hard)) if soft < hard => match rlimit::setrlimit(rlimit::Resource::NOFILE, hard, hard) {
            Ok(()) => info!(from = soft, to = hard, "raised the open-file limit to its hard limit"),
            Err(e) => warn!(soft, hard, error = %e, "cannot raise the open-file limit"),
        },
        Ok((soft, _)) => info!(limit = soft, "open-file limit already at its hard limit"),
        Err(e) => warn!(error = %e, "cannot read the open-file limit"),
    }
}

/// Runs the ingress until `shutdown`.
pub async fn run_ingress(settings: &Settings, shutdown: CancellationToken) -> std::io::Result<()> {
    warn_about_dev_keys(settings);
    raise_open_file_limit();
    let listener = TcpListener::bind(settings.ingress.listen).await?;
    let ingress = ingress::prepare(settings, listener, shutdown)?;
    info!(listen = %ingress.addr, prefix = %settings.queue_prefix, "ingress listening");
    ingress.serve.await
}

/// Runs the worker until `shutdown`.
pub async fn run_worker(settings: &Settings, shutdown: CancellationToken) -> Result<(), worker::StartError> {
    worker::run(settings, shutdown).await
}

/// Runs the ingress and the worker in one process until `shutdown`.
pub async fn run_all(settings: &Settings, shutdown: CancellationToken) -> Result<(), AllError> {
    let (ingress, worker) = tokio::join!(run_ingress(settings, shutdown.clone()), async {
        let result = run_worker(settings, shutdown.clone()).await;
        if result.is_err() {
            // A worker that cannot start takes the process down rather than leave a half service.
            shutdown.cancel();
        }
        result
    });
    ingress?;
    worker?;
    Ok(())
}

/// Applies pending migrations (the `migrate` subcommand).
pub async fn migrate(settings: &Settings) -> Result<Vec<String>, store::DbError> {
    store::migrate::run(settings).await
}

/// Why `all` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AllError {
    #[error("ingress: {0}")]
    Ingress(#[from] std::io::Error),
    #[error("worker: {0}")]
    Worker(#[from] worker::StartError),
}
