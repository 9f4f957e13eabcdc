//! The server side of logical capture: the publications, the routed
//! tables' replica identity, the replication slot, the switch between
//! capture modes, slot lag, and the heartbeat that keeps an idle slot moving.

use std::time::Duration;

use deadpool_postgres::Pool;

use crate::capture::switch::MESSAGE_PREFIX;
use crate::capture::CaptureError;
use crate::config::CaptureConfig;
use crate::db::DbError;
use crate::quote::{ident, literal};
use crate::route::Router;
use tokio_postgres::types::PgLsn;

/// The slot's name: configured, or `rowcast_<database>`.
pub(super) async fn slot_name(pool: &Pool, config: &CaptureConfig) -> Result<String, DbError> {
    if let Some(slot) = &config.slot {
        return Ok(slot.clone());
    }
    let client = pool.get().await?;
    let database: String = client
        .query_one("SELECT current_database()", &[])
        .await?
        .get(0);
    let mut name: String = format!("rowcast_{database}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    name.truncate(63);
    Ok(name)
}

/// The publication carrying `realtime.publish` events (inserts only).
pub(super) fn publish_publication(config: &CaptureConfig) -> String {
    format!("{}_publish", config.publication)
}

/// Makes the publications cover exactly the routed tables (and the capture
/// table for published events), with full old rows on updates and deletes.
pub(super) async fn prepare_tables(
    pool: &Pool,
    router: &Router,
    config: &CaptureConfig,
) -> Result<(), CaptureError> {
    let client = pool.get().await.map_err(DbError::from)?;
    let wal_level: String = client
        .query_one("SHOW wal_level", &[])
        .await
        .map_err(DbError::from)?
        .get(0);
    if wal_level != "logical" {
        return Err(CaptureError::Logical(format!(
            "the server has wal_level={wal_level}; set wal_level=logical and restart Postgres, or use ROWCAST_CAPTURE=trigger"
        )));
    }
    let tables: Vec<String> = router
        .tables()
        .map(|t| format!("{}.{}", ident(&t.schema), ident(&t.name)))
        .collect();
    for table in &tables {
        let identity: i8 = client
            .query_one(
                "SELECT relreplident FROM pg_class WHERE oid = $1::text::regclass",
                &[table],
            )
            .await
            .map_err(DbError::from)?
            .get(0);
        if identity as u8 != b'f' {
            client
                .batch_execute(&format!("ALTER TABLE {table} REPLICA IDENTITY FULL"))
                .await
                .map_err(DbError::from)?;
        }
    }
    let list = tables.join(", ");
    ensure_publication(
        &client,
        &config.publication,
        &list,
        "insert, update, delete, truncate",
    )
    .await?;
    ensure_publication(
        &client,
        &publish_publication(config),
        "realtime.capture",
        "insert",
    )
    .await?;
    Ok(())
}

async fn ensure_publication(
    client: &deadpool_postgres::Client,
    name: &str,
    tables: &str,
    publish: &str,
) -> Result<(), DbError> {
    let exists = client
        .query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&name])
        .await?
        .is_some();
    let sql = if exists {
        format!(
            "ALTER PUBLICATION {name} SET TABLE {tables}; ALTER PUBLICATION {name} SET (publish = {publish})",
            name = ident(name),
            publish = literal(publish)
        )
    } else {
        format!(
            "CREATE PUBLICATION {} FOR TABLE {tables} WITH (publish = {})",
            ident(name),
            literal(publish)
        )
    };
    client.batch_execute(&sql).await?;
    Ok(())
}

/// Creates the slot when it does not exist and logical capture never
/// streamed one here. A slot of the same name in another database, or
/// with another plugin, is refused. A slot that was streamed before and is
/// gone is left for the stream to find: that is a capture gap, reported
/// when the stream opens ([`super::continuity`]).
pub(super) async fn ensure_slot(pool: &Pool, slot: &str) -> Result<(), CaptureError> {
    let client = pool.get().await.map_err(DbError::from)?;
    let row = client
        .query_opt(
            "SELECT database = current_database(), plugin, slot_type FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(DbError::from)?;
    match row {
        Some(row) => {
            let (same_db, plugin, kind): (Option<bool>, Option<String>, String) =
                (row.get(0), row.get(1), row.get(2));
            if kind != "logical" || plugin.as_deref() != Some("pgoutput") || same_db != Some(true) {
                return Err(CaptureError::Logical(format!(
                    "replication slot `{slot}` exists but is not a pgoutput slot of this database; set ROWCAST_SLOT to another name"
                )));
            }
        }
        None => {
            let streamed: bool = client
                .query_one(
                    "SELECT slot_name IS NOT NULL OR source_lsn IS NOT NULL FROM realtime.state",
                    &[],
                )
                .await
                .map_err(DbError::from)?
                .get(0);
            if !streamed {
                create_slot(pool, slot).await?;
            }
        }
    }
    Ok(())
}

/// Creates the slot (kept on standbys that synchronise slots, on 17+) and
/// records it: capture rows written before it are not in its stream, so
/// they are read once from the table; and whether capture triggers are
/// active tells the stream where its changes are. Returns where it starts.
pub(super) async fn create_slot(pool: &Pool, slot: &str) -> Result<u64, DbError> {
    let client = pool.get().await?;
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await?
        .get(0);
    let create = if version >= 170_000 {
        "SELECT lsn FROM pg_create_logical_replication_slot($1, 'pgoutput', false, false, true)"
    } else {
        "SELECT lsn FROM pg_create_logical_replication_slot($1, 'pgoutput')"
    };
    let lsn: PgLsn = client.query_one(create, &[&slot]).await?.get(0);
    client
        .execute(
            "UPDATE realtime.state
             SET drain_before = (SELECT coalesce(max(id), 0) + 1 FROM realtime.capture),
                 drained = false,
                 triggers_active = EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'rowcast_capture'),
                 slot_name = $1,
                 slot_confirmed = $2",
            &[&slot, &lsn],
        )
        .await?;
    tracing::info!(%slot, at = %lsn, "created the logical replication slot");
    Ok(u64::from(lsn))
}

/// Whether a slot of this name exists in this database.
pub(super) async fn slot_exists(pool: &Pool, slot: &str) -> Result<bool, DbError> {
    let client = pool.get().await?;
    Ok(client
        .query_opt(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()",
            &[&slot],
        )
        .await?
        .is_some())
}

/// Drops the slot (when trigger capture takes over), so it cannot hold WAL.
///
/// The walsender of the stream that has just read the slot releases it a
/// moment after that stream stopped, so a slot still in use is waited for.
/// One still in use after `IN_USE_PATIENCE` belongs to another consumer and
/// is left alone (the next start in trigger mode tries again).
pub(super) async fn drop_slot(pool: &Pool, slot: &str) -> Result<(), DbError> {
    const IN_USE_PATIENCE: Duration = Duration::from_secs(10);
    let client = pool.get().await?;
    let started = tokio::time::Instant::now();
    loop {
        let dropped = client
            .query(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
                 WHERE slot_name = $1 AND database = current_database() AND NOT active",
                &[&slot],
            )
            .await?;
        if !dropped.is_empty() {
            tracing::info!(%slot, "dropped the logical replication slot");
            return Ok(());
        }
        let exists = client
            .query_opt(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()",
                &[&slot],
            )
            .await?
            .is_some();
        if !exists {
            return Ok(());
        }
        if started.elapsed() > IN_USE_PATIENCE {
            tracing::warn!(%slot, "the replication slot is in use by another session; not dropped");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Where the slot has confirmed up to.
pub(super) async fn confirmed_flush(pool: &Pool, slot: &str) -> Result<u64, DbError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?;
    Ok(row
        .and_then(|r| r.get::<_, Option<tokio_postgres::types::PgLsn>>(0))
        .map(u64::from)
        .unwrap_or(0))
}

/// Writes a non-transactional logical message so an idle slot sees WAL it
/// can confirm, and exports how far behind the slot is.
pub(super) async fn heartbeat(pool: &Pool, slot: &str) -> Result<(), DbError> {
    let client = pool.get().await?;
    client
        .execute(
            "SELECT pg_logical_emit_message(false, $1, 'heartbeat')",
            &[&MESSAGE_PREFIX],
        )
        .await?;
    let lag: Option<f64> = client
        .query_one(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::float8
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?
        .get(0);
    metrics::gauge!("rowcast_slot_lag_bytes").set(lag.unwrap_or(0.0));
    Ok(())
}
