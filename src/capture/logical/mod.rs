//! Logical replication capture. A persistent pgoutput slot streams committed
//! changes in commit order over the streaming replication protocol
//! (`pgwire-replication` handles the transport, keepalives and standby status
//! updates; [`pgoutput`] and [`decode`] decode; [`source`] batches them for
//! the ingest loop; [`slot`] manages the slot and the publications).
//!
//! Exactly once: each outbox transaction stores, with its events, the source
//! position it reached (the commit LSN of the source transaction and how
//! many of its changes are stored). The slot is told the position is
//! flushed only after that transaction committed. After a crash the slot
//! resends from its confirmed position and everything at or below the stored
//! position is skipped, so a SIGKILL at any instant neither loses nor repeats
//! an event. A large source transaction is stored in batches bounded in
//! changes and in bytes, read ahead by a bounded number of messages, so
//! memory does not grow with the size of the transaction.
//!
//! No WAL pile-up: when nothing is pending, keepalives and a periodic
//! heartbeat message let the confirmed position follow the server's WAL even
//! if no routed table changes.

mod confirm;
mod continuity;
mod decode;
mod pgoutput;
mod session;
mod slot;
mod source;
mod value;

use deadpool_postgres::Pool;

use super::switch::{self, Retiring};
use super::CaptureError;
use crate::config::CaptureConfig;
use crate::db::DbError;
use crate::route::Router;

pub use source::LogicalSource;

/// Prepares logical capture: publications, replica identity, the slot, and
/// (when capture triggers exist) the switch away from them.
pub async fn install(
    pool: &Pool,
    router: &Router,
    config: &CaptureConfig,
) -> Result<(), CaptureError> {
    slot::prepare_tables(pool, router, config).await?;
    let name = slot::slot_name(pool, config).await?;
    slot::ensure_slot(pool, &name).await?;
    switch::drop_triggers(pool).await?;
    Ok(())
}

/// The slot of this database, when one exists (trigger capture then has to
/// read it up to the switch before dropping it).
pub async fn existing_slot(pool: &Pool, config: &CaptureConfig) -> Result<Option<String>, DbError> {
    let name = slot::slot_name(pool, config).await?;
    Ok(slot::slot_exists(pool, &name).await?.then_some(name))
}

/// Drops a slot that trigger capture read up to its switch, and forgets
/// it: a later switch back to logical starts a new slot, not a gap.
pub async fn drop_retired(pool: &Pool, retiring: &Retiring) -> Result<(), DbError> {
    slot::drop_slot(pool, &retiring.slot).await?;
    let client = pool.get().await?;
    client
        .execute(
            "UPDATE realtime.state
             SET slot_name = NULL, slot_confirmed = NULL,
                 source_lsn = NULL, source_changes = 0, source_done = true
             WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots
                               WHERE slot_name = $1 AND database = current_database())",
            &[&retiring.slot],
        )
        .await?;
    Ok(())
}
