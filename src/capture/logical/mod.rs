#![allow(dead_code)] // used by the logical capture loop (next commit)
//! Logical replication capture (pgoutput).

mod pgoutput;
mod value;

use deadpool_postgres::Pool;

use super::{Capture, CaptureError};
use crate::config::CaptureConfig;
use crate::db::DbError;
use crate::outbox::Outbox;

/// Drops the replication slot when trigger capture takes over, so an
/// abandoned slot cannot hold WAL forever.
pub async fn retire(pool: &Pool, config: &CaptureConfig) -> Result<(), DbError> {
    let client = pool.get().await?;
    let dropped = client
        .query(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
             WHERE slot_name = $1 AND database = current_database() AND NOT active",
            &[&config.slot],
        )
        .await?;
    if !dropped.is_empty() {
        tracing::warn!(slot = %config.slot, "dropped the logical replication slot: trigger capture is running now");
    }
    Ok(())
}

/// Creates the slot and publication (not available yet).
pub async fn install(
    _pool: &Pool,
    _router: &crate::route::Router,
    _config: &CaptureConfig,
) -> Result<(), CaptureError> {
    Err(CaptureError::Logical("not available yet".into()))
}

/// Streams changes from the slot into the outbox until shutdown.
pub(super) async fn run(_capture: Capture, _outbox: Outbox) -> Result<(), CaptureError> {
    Err(CaptureError::Logical("not available yet".into()))
}
