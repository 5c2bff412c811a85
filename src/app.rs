//! The roles the binary runs (`ingress`, `worker`, `all`), each until SIGTERM/SIGINT.

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{config::Settings, ingress};

/// Logs a warning for every access key that still uses the development secret.
pub fn warn_about_dev_keys(settings: &Settings) {
    for key in settings.key_ring().dev_keys() {
        warn!(access_key = %key, "access key uses the DEVELOPMENT secret from config/default.toml; set MOKA_INGEST_KEYS in production");
    }
}

/// Runs the ingress until `shutdown`.
pub async fn run_ingress(settings: &Settings, shutdown: CancellationToken) -> std::io::Result<()> {
    warn_about_dev_keys(settings);
    let listener = TcpListener::bind(settings.ingress.listen).await?;
    let ingress = ingress::prepare(settings, listener, shutdown)?;
    info!(listen = %ingress.addr, prefix = %settings.queue_prefix, "ingress listening");
    ingress.serve.await
}
