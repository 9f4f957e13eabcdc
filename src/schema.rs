//! The relay's own schema (`realtime`), applied with sqlx migrations from
//! `migrations/` at `rowcast serve` startup and by `rowcast migrate`.
//!
//! Migrations run on one short-lived sqlx connection, never a pool; the
//! migration bookkeeping table lives in `realtime` with everything else.

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::config::DatabaseConfig;
use crate::db::Endpoint;

/// A migration that could not be applied.
#[derive(Debug, thiserror::Error)]
#[error("migrations: {0}")]
pub struct MigrateError(String);

/// Applies every pending migration. Safe to run concurrently from several
/// relays: an advisory lock serializes them.
pub async fn migrate(database: &DatabaseConfig) -> Result<(), MigrateError> {
    let endpoint = Endpoint::find(database)
        .await
        .map_err(|e| MigrateError(e.to_string()))?;
    let mut options = PgConnectOptions::new()
        .host(&endpoint.host)
        .port(endpoint.port)
        .username(&endpoint.user)
        .database(&endpoint.dbname)
        .application_name("rowcast migrate")
        .options([
            ("search_path", "realtime"),
            ("client_min_messages", "warning"),
        ])
        .log_statements(tracing::log::LevelFilter::Trace);
    if !endpoint.password.is_empty() {
        options = options.password(&endpoint.password);
    }
    let options = database.tls.sqlx(options);
    let mut conn = options.connect().await.map_err(describe)?;
    sqlx::query("SELECT pg_advisory_lock(hashtext('rowcast migrate'))")
        .execute(&mut conn)
        .await
        .map_err(describe)?;
    let result = async {
        sqlx::query("CREATE SCHEMA IF NOT EXISTS realtime")
            .execute(&mut conn)
            .await?;
        sqlx::migrate!("./migrations")
            .run(&mut conn)
            .await
            .map_err(sqlx::Error::from)?;
        Ok::<_, sqlx::Error>(())
    }
    .await;
    let _ = conn.close().await;
    result.map_err(describe)
}

fn describe(e: impl std::fmt::Display) -> MigrateError {
    MigrateError(e.to_string().lines().next().unwrap_or_default().to_string())
}
