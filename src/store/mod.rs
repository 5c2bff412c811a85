//! PostgreSQL: the connection pool, migrations, the batch writer of candidates, and the
//! classification of database errors into what retrying can cure and what it cannot.

pub mod attachments;
pub mod blobs;
pub mod candidates;
pub mod dead_letters;
pub mod migrate;
pub mod plan;
pub mod storable;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::NoTls;

/// Whatever a database failure came from (the driver, the pool, the migration runner).
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A database failure, classified for the retry decision; the cause is its source.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The data itself cannot be stored (a NUL in text, a key too long for its index, a broken
    /// constraint…): retrying won't help.
    #[error("database refused the data (SQLSTATE {code})")]
    Permanent {
        code: String,
        #[source]
        source: Cause,
    },
    /// Connection lost, database restarting, deadlock, pool exhausted…: retry later.
    #[error("database unavailable")]
    Transient(#[source] Cause),
    /// The deployment is wrong (an invalid `DATABASE_URL`, a migration history this binary does
    /// not know): an operator must act, retrying won't help.
    #[error("{what}")]
    Setup {
        what: &'static str,
        #[source]
        source: Cause,
    },
}

impl DbError {
    pub fn is_transient(&self) -> bool {
        matches!(self, DbError::Transient(_))
    }
}

/// Whether a SQLSTATE is about the data of the statement (`true`: the same data will be refused
/// again, whenever it is sent) or about this moment, the server or our deployment (`false`).
///
/// Permanent, the data's fault:
/// - `22` data exception: NUL in text (22021), untranslatable `\u0000` in JSON (22P05), a value out
///   of range (22003), invalid input syntax (22P02) for what we cast;
/// - `23` integrity constraint violation: the data breaks a check, not-null or unique rule;
/// - `54` program limit exceeded: an index row too large (54000, a key of thousands of bytes),
///   a JSON value nested too deep for the server's stack (54001);
/// - `21` cardinality violation: one statement touching the same key twice, which only a batch's
///   own contents can cause (two payloads whose ids differ only in surrounding spaces);
/// - `40002` an integrity constraint checked at commit.
///
/// Everything else retries: `08` connection, `40001`/`40P01` serialization and deadlock, `53`
/// out of resources (disk full, too many connections), `55` lock not available, `57` operator
/// intervention and shutdown, `58`/`XX` server-side I/O and internal errors, `25` read-only
/// transaction (a failover in progress). `42` (syntax, undefined table or column, missing
/// privilege) and `0A` are our code's or the deployment's fault, not the message's: dead-lettering
/// would throw away every message until an operator fixes it, so they retry through the delay
/// queues (a day) and alert through `moka_worker_db_errors_total` instead.
pub fn is_permanent_sqlstate(code: &str) -> bool {
    matches!(code.get(..2), Some("21" | "22" | "23" | "54")) || code == "40002"
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error().map(|db| db.code().code().to_owned()) {
            Some(code) if is_permanent_sqlstate(&code) => DbError::Permanent { code, source: e.into() },
            // No answer from the server (the connection, a timeout), or not the data's fault.
            _ => DbError::Transient(e.into()),
        }
    }
}

impl From<deadpool_postgres::PoolError> for DbError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => DbError::Transient(other.into()),
        }
    }
}

/// The worker's connection pool of `size` connections. Connections are made lazily, so a
/// database that is down at start only delays the first batch.
pub fn pool(database_url: &SecretString, size: usize) -> Result<Pool, DbError> {
    let mut config: tokio_postgres::Config = database_url
        .expose_secret()
        .parse()
        .map_err(|e: tokio_postgres::Error| DbError::Setup { what: "DATABASE_URL is invalid", source: e.into() })?;
    config.connect_timeout(Duration::from_secs(5));
    config.application_name("moka-ingest worker");
    // Fast recycling: a broken connection shows itself on use, and the batch is retried then.
    let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| DbError::Setup { what: "cannot build the connection pool", source: e.into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_error_keeps_its_cause_as_its_source() {
        let lost = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset by peer");
        let e = DbError::Transient(lost.into());
        assert!(e.is_transient());
        assert_eq!(e.to_string(), "database unavailable");
        let source = std::error::Error::source(&e).expect("the cause is the source");
        assert_eq!(source.to_string(), "connection reset by peer");
        let refused = DbError::Permanent { code: "22021".into(), source: "invalid byte sequence".into() };
        assert!(!refused.is_transient());
        assert_eq!(refused.to_string(), "database refused the data (SQLSTATE 22021)");
    }

    #[test]
    fn sqlstates_about_the_data_are_permanent_and_the_rest_retry() {
        for code in ["22021", "22P05", "22003", "22P02", "23505", "23502", "23514", "54000", "54001", "21000", "40002"]
        {
            assert!(is_permanent_sqlstate(code), "{code} is the data's fault");
        }
        for code in [
            "08006", "08001", "40001", "40P01", "40003", "53100", "53200", "53300", "55P03", "57014", "57P01", "57P03",
            "58030", "XX000", "25006", "42P01", "42501", "42601", "0A000", "",
        ] {
            assert!(!is_permanent_sqlstate(code), "{code} can go away");
        }
    }
}
