//! PostgreSQL: the connection pool, migrations, and the batch writer of candidates.

pub mod blobs;
pub mod candidates;
pub mod migrate;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use secrecy::ExposeSecret;
use tokio_postgres::{error::SqlState, NoTls};

use crate::config::Settings;

/// A database failure, classified for the retry decision.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The data itself cannot be stored (e.g. a JSON string PostgreSQL refuses): retrying won't help.
    #[error("database refused the data: {0}")]
    Permanent(String),
    /// Connection lost, database restarting, deadlock, pool exhausted…: retry later.
    #[error("database unavailable: {0}")]
    Transient(String),
}

impl DbError {
    pub fn is_transient(&self) -> bool {
        matches!(self, DbError::Transient(_))
    }
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        let text = match e.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => e.to_string(),
        };
        match e.code().map(SqlState::code) {
            // Class 22 (data exception) and 23 (integrity constraint): this data, not this moment.
            Some(code) if code.starts_with("22") || code.starts_with("23") => DbError::Permanent(text),
            _ => DbError::Transient(text),
        }
    }
}

impl From<deadpool_postgres::PoolError> for DbError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => DbError::Transient(other.to_string()),
        }
    }
}

/// The worker's connection pool. Connections are made lazily, so a database that is down at
/// start only delays the first batch.
pub fn pool(settings: &Settings) -> Result<Pool, DbError> {
    let mut config: tokio_postgres::Config = settings
        .database_url
        .expose_secret()
        .parse()
        .map_err(|e| DbError::Permanent(format!("DATABASE_URL is invalid: {e}")))?;
    config.connect_timeout(Duration::from_secs(5));
    config.application_name("moka-ingest worker");
    // Fast recycling: a broken connection shows itself on use, and the batch is retried then.
    let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(settings.worker.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| DbError::Permanent(e.to_string()))
}
