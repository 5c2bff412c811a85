//! The operator console (`moka-ingest console`): server-rendered pages to see the pipeline, find
//! a candidate and its whole story, and replay, purge or park messages.
//!
//! - [`users`]: who may log in, and as what (`viewer` reads, `operator` also acts);
//! - [`session`]: logins, the session cookie, CSRF tokens, the slowdown of failed logins;
//! - [`queries`]: what the pages read from PostgreSQL (indexed, paged);
//! - [`queues`]: queue depths and consumers from the broker;
//! - [`actions`]: replay, purge, park, re-index, through the `dlq` code, each audited;
//! - [`views`] and [`chart`]: the HTML (maud: checked at compile time, escaping what it shows)
//!   and the SVG charts; [`assets`]: the stylesheet and the one small script;
//! - [`routes`]: the URLs, who may use each, and the security headers of every answer.
//!
//! The console holds no state of its own beyond a connection or two: sessions, the audit and
//! the dead-letter index are in PostgreSQL, so several consoles can run behind a load balancer.

pub mod actions;
pub mod assets;
pub mod chart;
pub mod queries;
pub mod queues;
pub mod routes;
pub mod session;
pub mod users;
pub mod views;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use deadpool_postgres::Pool;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    broker::topology::Topology,
    config::{BlobBackend, BrokerUrls, ConsoleSettings, Settings},
    store::{self, blobs::Blobs, DbError},
};

/// Why the console cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error(
        "the console does not start without users: set console.users_file (MOKA_INGEST_CONSOLE_USERS_FILE) \
         to a file of name:role:hash lines (moka-ingest console hash-password makes a hash)"
    )]
    NoUsers,
    #[error(transparent)]
    Users(#[from] users::UsersError),
    #[error("console database")]
    Db(#[from] DbError),
    #[error("console attachment storage")]
    Blobs(#[from] store::blobs::BlobError),
    #[error("console: cannot serve")]
    Serve(#[source] std::io::Error),
}

/// What every request handler shares.
pub struct Console {
    pub pool: Pool,
    /// For the walk lock's own connection (see [`crate::dlq::WalkLock`]).
    pub database_url: SecretString,
    pub queue_prefix: String,
    pub amqp_url: BrokerUrls,
    pub queues: queues::Queues,
    pub users: users::UsersFile,
    pub throttle: session::Throttle,
    pub settings: ConsoleSettings,
    /// Stored attachments, for downloads.
    pub blobs: Blobs,
    /// The `/readyz` of each role this deployment's settings name: (role, URL).
    pub readiness: Vec<(&'static str, String)>,
    pub http: reqwest::Client,
    /// Password checks at once: argon2 takes about 19 MiB and a core's worth of work each.
    pub verifying: tokio::sync::Semaphore,
    /// The 7-day chart, read at most once a minute (it reads up to a week of `submissions`).
    pub hourly: tokio::sync::Mutex<Option<(std::time::Instant, Vec<queries::Bucket>)>>,
}

impl Console {
    /// Checks the settings and opens what the console reads: refuses to start without users.
    pub async fn open(settings: &Settings) -> Result<Console, ConsoleError> {
        let path = settings.console.users_file.as_ref().ok_or(ConsoleError::NoUsers)?;
        let users = users::UsersFile::open(path)?;
        if settings.worker.migrate_on_start {
            store::migrate::run(&settings.database_url).await?;
        }
        let pool = store::pool(&settings.database_url, 8)?;
        let topology = Topology::from_settings(&settings.queue_prefix, &settings.broker, &settings.retry);
        let blobs = match &settings.attachments.backend {
            BlobBackend::Local { dir } => Blobs::local(dir)?,
            BlobBackend::S3 { bucket } => Blobs::s3(bucket)?,
        };
        let ready_url = |addr: SocketAddr| {
            // A role listening on every address answers on loopback too.
            let host = if addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { addr.ip().to_string() };
            let host = if addr.is_ipv6() && !addr.ip().is_unspecified() { format!("[{host}]") } else { host };
            format!("http://{host}:{}/readyz", addr.port())
        };
        Ok(Console {
            pool,
            database_url: settings.database_url.clone(),
            queue_prefix: settings.queue_prefix.clone(),
            amqp_url: settings.amqp_url.clone(),
            queues: queues::Queues::new(&settings.amqp_url, topology),
            users,
            throttle: session::Throttle::default(),
            settings: settings.console.clone(),
            blobs,
            readiness: vec![
                ("ingress", ready_url(settings.ingress.listen)),
                ("worker", ready_url(settings.worker.listen)),
            ],
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(1))
                .no_proxy()
                .build()
                .expect("a plain HTTP client builds"),
            verifying: tokio::sync::Semaphore::new(4),
            hourly: tokio::sync::Mutex::new(None),
        })
    }
}

/// Serves the console on `listener` until `shutdown`.
pub async fn serve(console: Console, listener: TcpListener, shutdown: CancellationToken) -> Result<(), ConsoleError> {
    let console = Arc::new(console);
    register_metrics();
    let app = routes::router(console.clone());
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await;
    console.queues.close().await;
    served.map_err(ConsoleError::Serve)
}

/// The console's metrics, at zero from the start (for dashboards and alerts).
fn register_metrics() {
    metrics::describe_counter!("moka_console_login_failures_total", "Failed console logins");
    metrics::counter!("moka_console_login_failures_total").increment(0);
    metrics::describe_counter!("moka_console_actions_total", "Dead-letter actions taken in the console, by action");
    crate::telemetry::zero_counters("moka_console_actions_total", "action", ["replay", "purge", "park"]);
}
