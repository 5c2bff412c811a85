//! Applies `migrations/` (embedded in the binary) with refinery, which records them in
//! `refinery_schema_history`. An advisory lock makes it safe for many workers to start at once.

use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::NoTls;
use tracing::info;

use super::DbError;

refinery::embed_migrations!("migrations");

/// Arbitrary first key of the advisory lock (the second is the schema's hash), so that
/// migrations of different schemas in one database don't wait for each other.
const LOCK_CLASS: i32 = 0x6d6f6b61; // "moka"

/// Runs pending migrations; returns the names of those applied now.
/// `database_url` may hold a password: it is never logged.
pub async fn run(database_url: &SecretString) -> Result<Vec<String>, DbError> {
    let (mut client, connection) = tokio_postgres::connect(database_url.expose_secret(), NoTls).await?;
    let connection = tokio::spawn(connection);
    client.execute("SELECT pg_advisory_lock($1, hashtext(current_schema()))", &[&LOCK_CLASS]).await?;
    let report = migrations::runner().run_async(&mut client).await;
    // The lock is also released when the session ends; unlocking explicitly lets the next worker go now.
    let unlocked = client.execute("SELECT pg_advisory_unlock($1, hashtext(current_schema()))", &[&LOCK_CLASS]).await;
    let report = report.map_err(|e| match e.kind() {
        // The database is unreachable or busy: waiting may help.
        refinery::error::Kind::Connection(..) => DbError::Transient(e.into()),
        // The history disagrees with the migrations in this binary: an operator must look.
        _ => DbError::Setup { what: "migration failed", source: e.into() },
    })?;
    unlocked?;
    drop(client);
    let _ = connection.await;
    let applied: Vec<String> = report.applied_migrations().iter().map(|m| m.to_string()).collect();
    info!(applied = ?applied, "migrations up to date");
    Ok(applied)
}
