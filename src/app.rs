//! The roles the binary runs (`ingress`, `worker`, `console`, `all`), each until SIGTERM/SIGINT.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::{config::Settings, console, ingress, store, worker};

/// Logs a warning for every access key that still uses the development secret.
pub fn warn_about_dev_keys(settings: &Settings) {
    for key in settings.keys.dev_keys() {
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
pub async fn run_ingress(settings: &Settings, shutdown: CancellationToken) -> Result<(), RoleError> {
    warn_about_dev_keys(settings);
    raise_open_file_limit();
    let addr = settings.ingress.listen;
    let listener =
        TcpListener::bind(addr).await.map_err(|source| RoleError::Listen { role: "ingress", addr, source })?;
    let ingress = ingress::prepare(settings, listener, shutdown).map_err(|source| RoleError::Listen {
        role: "ingress",
        addr,
        source,
    })?;
    info!(listen = %ingress.addr, prefix = %settings.queue_prefix, "ingress listening");
    ingress.serve.await.map_err(|source| RoleError::Serve { role: "ingress", source })
}

/// Runs the worker until `shutdown`.
pub async fn run_worker(settings: &Settings, shutdown: CancellationToken) -> Result<(), RoleError> {
    let addr = settings.worker.listen;
    let listener =
        TcpListener::bind(addr).await.map_err(|source| RoleError::Listen { role: "worker", addr, source })?;
    let handle = worker::spawn(settings, listener, shutdown).await?;
    info!(ops = %handle.ops_addr, "worker /metrics, /healthz, /readyz listening");
    // A panic of the task itself, or a lane's, which the task reports: both end the process.
    handle.task.await.map_err(|_| RoleError::Panicked { role: "worker" })?.map_err(RoleError::Worker)
}

/// Runs the console until `shutdown`; it does not start without users.
pub async fn run_console(settings: &Settings, shutdown: CancellationToken) -> Result<(), RoleError> {
    let console = console::Console::open(settings).await?;
    let addr = settings.console.listen;
    let listener =
        TcpListener::bind(addr).await.map_err(|source| RoleError::Listen { role: "console", addr, source })?;
    info!(listen = %addr, "console listening");
    console::serve(console, listener, shutdown).await.map_err(RoleError::Console)
}

/// Runs the ingress and the worker in one process until `shutdown`, and the console too when a
/// users file is configured. Any role failing, at start or later, stops the others and the
/// process: a half-alive process whose `/readyz` may still be green is worse than one an
/// orchestrator restarts.
pub async fn run_all(settings: &Settings, shutdown: CancellationToken) -> Result<(), RoleError> {
    let spawn = |role: &'static str| {
        let (settings, shutdown) = (settings.clone(), shutdown.clone());
        let task = tokio::spawn(async move {
            match role {
                "ingress" => run_ingress(&settings, shutdown).await,
                "worker" => run_worker(&settings, shutdown).await,
                _ => run_console(&settings, shutdown).await,
            }
        });
        (role, task)
    };
    let mut roles = vec![spawn("ingress"), spawn("worker")];
    if settings.console.users_file.is_some() {
        roles.push(spawn("console"));
    }
    let (names, tasks): (Vec<&'static str>, Vec<_>) = roles.into_iter().unzip();
    let (first, index, rest) = futures_util::future::select_all(tasks).await;
    let first = joined(names[index], first);
    if let Err(e) = &first {
        error!(error = %crate::telemetry::chain(e), "a role failed; stopping the process");
    }
    shutdown.cancel();
    let others: Vec<&'static str> = names.iter().enumerate().filter(|(i, _)| *i != index).map(|(_, n)| *n).collect();
    let mut result = first;
    for (role, task) in others.into_iter().zip(rest) {
        result = result.and(joined(role, task.await));
    }
    result
}

fn joined(role: &'static str, r: Result<Result<(), RoleError>, tokio::task::JoinError>) -> Result<(), RoleError> {
    r.unwrap_or(Err(RoleError::Panicked { role }))
}

/// Applies pending migrations (the `migrate` subcommand).
pub async fn migrate(settings: &Settings) -> Result<Vec<String>, store::DbError> {
    store::migrate::run(&settings.database_url).await
}

/// Why a role stopped with an error; the source chain says the rest.
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    #[error("{role}: cannot listen on {addr}")]
    Listen {
        role: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{role} stopped serving")]
    Serve {
        role: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("worker could not start")]
    WorkerStart(#[from] worker::StartError),
    #[error("{role} panicked")]
    Panicked { role: &'static str },
    #[error("worker failed")]
    Worker(#[source] worker::WorkerError),
    #[error("console failed")]
    Console(#[from] console::ConsoleError),
}
