//! Logical replication capture. A persistent pgoutput slot streams committed
//! changes in commit order over the streaming replication protocol
//! (`pgwire-replication` handles the transport, keepalives and standby status
//! updates; [`pgoutput`] and [`stream`] decode; [`session`] stores).
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
//! Switching capture modes is lossless both ways. The transaction that
//! installs or drops the capture triggers also writes a message into WAL
//! (`to-trigger:<token>` or `to-logical`), so the stream knows, transaction
//! by transaction, whether the WAL or the triggers' capture rows carry the
//! changes; the stored position remembers which.
//!
//! No WAL pile-up: when nothing is pending, keepalives and a periodic
//! heartbeat message let the confirmed position follow the server's WAL even
//! if no routed table changes.

mod pgoutput;
mod session;
mod slot;
mod stream;
mod value;

use std::time::Duration;

use tracing::Instrument;

use super::{Capture, CaptureError};
use crate::config::CaptureConfig;
use crate::db::{Backoff, DbError};
use crate::outbox::Outbox;
use crate::route::Router;
use session::{Session, SessionError};

pub(crate) use slot::to_trigger_message;

/// Prepares logical capture: publications, replica identity, the slot, and
/// (when capture triggers exist) the switch away from them.
pub async fn install(
    pool: &deadpool_postgres::Pool,
    router: &Router,
    config: &CaptureConfig,
) -> Result<(), CaptureError> {
    slot::prepare_tables(pool, router, config).await?;
    let name = slot::slot_name(pool, config).await?;
    slot::ensure_slot(pool, &name).await?;
    slot::switch_from_triggers(pool).await?;
    Ok(())
}

/// Whether a slot for this database exists (trigger capture then has to
/// read it up to the switch before dropping it).
pub async fn slot_exists(
    pool: &deadpool_postgres::Pool,
    config: &CaptureConfig,
) -> Result<bool, DbError> {
    let name = slot::slot_name(pool, config).await?;
    slot::slot_exists(pool, &name).await
}

/// When trigger capture takes over from a slot: reads the slot up to the
/// switch message written with the triggers (`token`), so every change
/// committed before the triggers existed is stored, then drops the slot.
pub async fn retire(
    capture: &mut Capture,
    outbox: &mut Outbox,
    token: &str,
) -> Result<(), CaptureError> {
    let name = slot::slot_name(&capture.pool, &capture.config).await?;
    if !slot::slot_exists(&capture.pool, &name).await? {
        return Ok(());
    }
    tracing::info!(slot = %name, "reading the replication slot up to the switch to trigger capture");
    stream_until(capture, outbox, &name, Some(token)).await?;
    if capture.shutdown.is_triggered() {
        // Interrupted: the slot still holds changes nobody stored yet.
        return Ok(());
    }
    slot::drop_slot(&capture.pool, &name).await?;
    Ok(())
}

/// Streams changes from the slot into the outbox until shutdown.
pub(super) async fn run(mut capture: Capture, mut outbox: Outbox) -> Result<(), CaptureError> {
    let name = slot::slot_name(&capture.pool, &capture.config).await?;
    stream_until(&mut capture, &mut outbox, &name, None).await
}

/// Runs sessions with backoff until shutdown, or (with `stop_token`) until
/// the switch message carrying that token has been stored past.
async fn stream_until(
    capture: &mut Capture,
    outbox: &mut Outbox,
    slot: &str,
    stop_token: Option<&str>,
) -> Result<(), CaptureError> {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    loop {
        let result = Session::run(capture, outbox, slot, stop_token, &mut backoff)
            .instrument(tracing::info_span!("logical", %slot))
            .await;
        capture.status.set_running(false);
        match result {
            Ok(()) => return Ok(()),
            Err(SessionError::Fatal(e)) => return Err(e),
            Err(SessionError::Transient(reason)) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %reason, retry_in_ms = delay.as_millis() as u64, "logical capture interrupted");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = capture.shutdown.wait() => return Ok(()),
                }
            }
        }
    }
}
