//! Logical replication capture. A persistent pgoutput slot streams committed
//! changes in commit order over the streaming replication protocol
//! (`pgwire-replication` handles the transport, keepalives and standby status
//! updates; [`pgoutput`] and [`stream`] decode).
//!
//! Exactly once: each outbox transaction stores, with its events, the source
//! position it reached (the commit LSN of the source transaction and how
//! many of its changes are stored). The slot is told the position is
//! flushed only after that transaction committed. After a crash the slot
//! resends from its confirmed position and everything at or below the stored
//! position is skipped, so a SIGKILL at any instant neither loses nor repeats
//! an event. A large source transaction is stored in batches, so memory
//! stays bounded.
//!
//! No WAL pile-up: when nothing is pending, keepalives and a periodic
//! heartbeat message let the confirmed position follow the server's WAL even
//! if no routed table changes.

mod pgoutput;
mod slot;
mod stream;
mod value;

use std::collections::HashSet;
use std::time::Duration;

use futures_util::FutureExt;
use pgwire_replication::{Lsn, ReplicationClient, ReplicationConfig, ReplicationEvent};
use time::OffsetDateTime;

use super::{queued_requests, store_requests, trigger, Capture, CaptureError};
use crate::config::CaptureConfig;
use crate::db::{Backoff, DbError, Endpoint};
use crate::outbox::{Outbox, SourcePosition};
use crate::route::{Change, Router};
use stream::{Decoder, Item};

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

/// When trigger capture takes over: reads the slot up to the switch message
/// written with the triggers, so every change committed before the triggers
/// existed is stored, then drops the slot.
pub async fn retire(capture: &mut Capture, outbox: &mut Outbox) -> Result<(), CaptureError> {
    let name = slot::slot_name(&capture.pool, &capture.config).await?;
    if !slot::slot_exists(&capture.pool, &name).await? {
        return Ok(());
    }
    tracing::info!(slot = %name, "reading the replication slot up to the switch to trigger capture");
    stream_until(capture, outbox, &name, true).await?;
    slot::drop_slot(&capture.pool, &name).await?;
    Ok(())
}

/// Streams changes from the slot into the outbox until shutdown.
pub(super) async fn run(mut capture: Capture, mut outbox: Outbox) -> Result<(), CaptureError> {
    let name = slot::slot_name(&capture.pool, &capture.config).await?;
    stream_until(&mut capture, &mut outbox, &name, false).await
}

/// Runs sessions with backoff until shutdown, or (with `stop_at_switch`)
/// until the capture-mode switch message has been stored past.
async fn stream_until(
    capture: &mut Capture,
    outbox: &mut Outbox,
    slot: &str,
    stop_at_switch: bool,
) -> Result<(), CaptureError> {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    loop {
        let result = Session::run(capture, outbox, slot, stop_at_switch, &mut backoff).await;
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

/// Why a session ended.
enum SessionError {
    /// Worth retrying after a backoff.
    Transient(String),
    /// The relay must stop.
    Fatal(CaptureError),
}

impl From<DbError> for SessionError {
    fn from(e: DbError) -> Self {
        if e.is_transient() {
            Self::Transient(e.to_string())
        } else {
            Self::Fatal(CaptureError::Db(e))
        }
    }
}

impl From<pgwire_replication::PgWireError> for SessionError {
    fn from(e: pgwire_replication::PgWireError) -> Self {
        if e.is_auth() || e.is_message_too_large() {
            Self::Fatal(CaptureError::Logical(e.to_string()))
        } else {
            Self::Transient(e.to_string())
        }
    }
}

impl From<pgoutput::DecodeError> for SessionError {
    fn from(e: pgoutput::DecodeError) -> Self {
        Self::Fatal(CaptureError::Logical(format!(
            "undecodable replication message: {e}"
        )))
    }
}

/// The source transaction being read.
struct Txn {
    /// Its commit LSN.
    final_lsn: u64,
    /// Its commit time.
    at: OffsetDateTime,
    /// Change messages seen so far.
    seen: i64,
    /// Change messages to skip because they are stored already.
    skip: i64,
    /// Whether it carried the capture-mode switch message.
    switch: bool,
}

/// Changes read but not stored yet.
#[derive(Default)]
struct Batch {
    /// Changes in stream order, with the capture row id for capture rows.
    items: Vec<(Option<i64>, Change)>,
    /// The position reached by these items.
    position: Option<SourcePosition>,
    /// The end LSN to confirm once stored (a complete transaction).
    confirm: Option<u64>,
    /// Whether storing it passes the switch message.
    passes_switch: bool,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.items.is_empty() && self.position.is_none()
    }
}

/// One replication connection's worth of streaming.
struct Session<'a> {
    capture: &'a mut Capture,
    outbox: &'a mut Outbox,
    client: ReplicationClient,
    decoder: Decoder,
    /// The stored position (what is already in the outbox).
    stored: Option<SourcePosition>,
    /// Whether the triggers' capture rows, not the WAL, carry changes (until
    /// the switch message).
    switch_pending: bool,
    /// Stop once the switch message is stored past (retiring the slot).
    stop_at_switch: bool,
    /// Set once the switch message was stored past with nothing pending.
    passed_switch: bool,
    /// The source transaction being read.
    txn: Option<Txn>,
    /// Read, not yet stored.
    batch: Batch,
}

impl<'a> Session<'a> {
    async fn run(
        capture: &'a mut Capture,
        outbox: &'a mut Outbox,
        slot: &str,
        stop_at_switch: bool,
        backoff: &mut Backoff,
    ) -> Result<(), SessionError> {
        let (stored, switch_pending) = read_state(capture).await?;
        let confirmed = slot::confirmed_flush(&capture.pool, slot).await?;
        let client = connect(capture, slot, confirmed).await?;
        outbox.resync().await?;
        trigger::drain(capture, outbox).await?;
        capture.status.set_running(true);
        backoff.reset();
        tracing::info!(%slot, confirmed = %Lsn(confirmed), "logical capture streaming");
        let decoder = Decoder::new(capture.router.clone());
        let mut session = Session {
            capture,
            outbox,
            client,
            decoder,
            stored,
            switch_pending,
            stop_at_switch,
            passed_switch: false,
            txn: None,
            batch: Batch::default(),
        };
        let result = session.stream(slot).await;
        session.client.stop();
        result
    }

    async fn stream(&mut self, slot: &str) -> Result<(), SessionError> {
        let mut heartbeat = tokio::time::interval(self.capture.config.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next: Option<ReplicationEvent> = None;
        loop {
            let event = match next.take() {
                Some(event) => event,
                None => match self.wait(&mut heartbeat, slot).await? {
                    Some(event) => event,
                    None => return Ok(()),
                },
            };
            self.handle(event).await?;
            if self.stop_at_switch && self.passed_switch {
                return Ok(());
            }
            if self.ready_to_store() {
                // Take what is already waiting into the same outbox
                // transaction; store when the stream pauses or the batch is full.
                match self.client.recv().now_or_never() {
                    Some(Ok(Some(event)))
                        if self.batch.items.len() < self.capture.config.batch_size =>
                    {
                        next = Some(event);
                    }
                    Some(Ok(Some(event))) => {
                        self.store().await?;
                        next = Some(event);
                    }
                    Some(Ok(None)) => {
                        return Err(SessionError::Transient("replication stream ended".into()))
                    }
                    Some(Err(e)) => return Err(e.into()),
                    None => self.store().await?,
                }
            }
        }
    }
}

impl Session<'_> {
    /// Waits for the next replication event, serving explicit publishes,
    /// the heartbeat and coalescing deadlines meanwhile. `None`: shutdown.
    async fn wait(
        &mut self,
        heartbeat: &mut tokio::time::Interval,
        slot: &str,
    ) -> Result<Option<ReplicationEvent>, SessionError> {
        loop {
            let flush_at = self.outbox.next_flush();
            tokio::select! {
                event = self.client.recv() => return match event {
                    Ok(Some(event)) => Ok(Some(event)),
                    Ok(None) => Err(SessionError::Transient("replication stream ended".into())),
                    Err(e) => Err(e.into()),
                },
                request = self.capture.requests.recv() => {
                    if let Some(first) = request {
                        let batch = queued_requests(first, &mut self.capture.requests, self.capture.config.batch_size);
                        store_requests(self.outbox, &self.capture.router, batch).await?;
                    }
                }
                _ = heartbeat.tick() => {
                    let (pool, slot) = (self.capture.pool.clone(), slot.to_string());
                    tokio::spawn(async move {
                        if let Err(e) = slot::heartbeat(&pool, &slot).await {
                            tracing::debug!(error = %e, "heartbeat failed");
                        }
                    });
                }
                _ = trigger::sleep_until(flush_at) => self.store_due().await?,
                _ = self.capture.shutdown.wait() => {
                    if self.txn.is_none() && !self.batch.is_empty() {
                        self.store().await?;
                    }
                    return Ok(None);
                }
            }
        }
    }

    /// Applies one replication event to the transaction and batch state.
    async fn handle(&mut self, event: ReplicationEvent) -> Result<(), SessionError> {
        match event {
            ReplicationEvent::Begin {
                final_lsn,
                commit_time_micros,
                ..
            } => {
                self.txn = Some(Txn {
                    final_lsn: final_lsn.0,
                    at: pg_time(commit_time_micros),
                    seen: 0,
                    skip: self.already_stored(final_lsn.0),
                    switch: false,
                });
            }
            ReplicationEvent::XLogData { data, .. } => self.change(&data).await?,
            ReplicationEvent::Message {
                transactional: true,
                prefix,
                content,
                ..
            } => {
                if prefix == slot::MESSAGE_PREFIX && content.as_ref() == slot::SWITCH.as_bytes() {
                    if let Some(txn) = self.txn.as_mut() {
                        txn.switch = true;
                    }
                }
            }
            ReplicationEvent::Commit { end_lsn, .. } => self.commit(end_lsn.0),
            ReplicationEvent::Message {
                transactional: false,
                lsn,
                ..
            } => self.confirm_idle(lsn.0),
            ReplicationEvent::KeepAlive { wal_end, .. } => self.confirm_idle(wal_end.0),
            ReplicationEvent::StoppedAt { .. } => {}
        }
        Ok(())
    }

    /// How many changes of the transaction committed at `final_lsn` are
    /// stored already (`i64::MAX`: all of them).
    fn already_stored(&self, final_lsn: u64) -> i64 {
        match self.stored {
            Some(p) if final_lsn < p.lsn => i64::MAX,
            Some(p) if final_lsn == p.lsn && p.done => i64::MAX,
            Some(p) if final_lsn == p.lsn => p.changes,
            _ => 0,
        }
    }

    async fn change(&mut self, data: &bytes::Bytes) -> Result<(), SessionError> {
        let decoded = self.decoder.decode(data)?;
        let Some(txn) = self.txn.as_mut() else {
            return Ok(());
        };
        if decoded.is_change {
            txn.seen += 1;
        }
        if txn.seen <= txn.skip {
            return Ok(());
        }
        let entry = match decoded.item {
            // Until the switch, the capture triggers' rows carry the changes.
            Some(Item::Row(_)) if self.switch_pending => None,
            Some(Item::Row(row)) => Some((None, crate::route::Captured::Row(row))),
            Some(Item::CaptureRow { id, captured }) => Some((Some(id), captured)),
            None => None,
        };
        if let Some((id, captured)) = entry {
            self.batch.items.push((
                id,
                Change {
                    captured,
                    at: txn.at,
                },
            ));
        }
        if self.batch.items.len() >= self.capture.config.batch_size {
            self.batch.position = Some(SourcePosition {
                lsn: txn.final_lsn,
                changes: txn.seen,
                done: false,
            });
            self.store().await?;
        }
        Ok(())
    }

    fn commit(&mut self, end_lsn: u64) {
        let Some(txn) = self.txn.take() else {
            return;
        };
        let lag = (OffsetDateTime::now_utc() - txn.at)
            .as_seconds_f64()
            .max(0.0);
        metrics::gauge!("rowcast_slot_lag_seconds").set(lag);
        if txn.skip == i64::MAX {
            self.confirm_after_batch(end_lsn);
            return;
        }
        if self.batch.items.is_empty() && self.batch.position.is_none() && !txn.switch {
            // Nothing of it is stored: nothing to remember either.
            self.client.update_applied_lsn(Lsn(end_lsn));
            return;
        }
        self.batch.position = Some(SourcePosition {
            lsn: txn.final_lsn,
            changes: txn.seen,
            done: true,
        });
        self.batch.confirm = Some(end_lsn);
        self.batch.passes_switch |= txn.switch;
    }

    /// Confirms `lsn` now if nothing is pending, else after the batch.
    fn confirm_after_batch(&mut self, lsn: u64) {
        if self.batch.is_empty() {
            self.client.update_applied_lsn(Lsn(lsn));
        } else {
            self.batch.confirm = Some(lsn);
        }
    }

    /// Keepalives and heartbeats: with nothing pending, everything the
    /// server sent up to `lsn` is handled, so the slot may move there.
    fn confirm_idle(&mut self, lsn: u64) {
        if self.txn.is_none() && self.batch.is_empty() && lsn > 0 {
            self.client.update_applied_lsn(Lsn(lsn));
            metrics::gauge!("rowcast_slot_lag_seconds").set(0.0);
        }
    }

    /// Whether a transaction boundary was reached with something to store.
    fn ready_to_store(&self) -> bool {
        self.txn.is_none() && !self.batch.is_empty()
    }

    /// Stores the batch and its position in one outbox transaction, then
    /// confirms the position to the slot.
    async fn store(&mut self) -> Result<(), SessionError> {
        let batch = std::mem::take(&mut self.batch);
        let flush = self
            .outbox
            .next_flush()
            .is_some_and(|d| d <= tokio::time::Instant::now());
        let clear_switch = batch.passes_switch && self.switch_pending;
        let committed = {
            let mut client = self.outbox.pool().get().await.map_err(DbError::from)?;
            let mut writer = self.outbox.begin(&mut client).await?;
            let ids: Vec<i64> = batch.items.iter().filter_map(|(id, _)| *id).collect();
            let consumed: HashSet<i64> = if ids.is_empty() {
                HashSet::new()
            } else {
                let take = writer
                    .transaction()
                    .prepare_cached("DELETE FROM realtime.capture WHERE id = ANY($1) RETURNING id")
                    .await
                    .map_err(DbError::from)?;
                writer
                    .transaction()
                    .query(&take, &[&ids])
                    .await
                    .map_err(DbError::from)?
                    .iter()
                    .map(|r| r.get(0))
                    .collect()
            };
            for (id, change) in &batch.items {
                if id.is_none_or(|id| consumed.contains(&id)) {
                    writer.append(self.capture.router.route(change));
                }
            }
            if flush {
                writer.flush_due();
            }
            if clear_switch {
                writer
                    .transaction()
                    .execute("UPDATE realtime.state SET switch_pending = false", &[])
                    .await
                    .map_err(DbError::from)?;
            }
            writer.commit(batch.position).await?
        };
        self.outbox.deliver(committed).await?;
        if batch.position.is_some() {
            self.stored = batch.position;
        }
        if let Some(end) = batch.confirm {
            self.client.update_applied_lsn(Lsn(end));
        }
        if batch.passes_switch {
            if self.switch_pending {
                self.switch_pending = false;
                tracing::info!("capture switched from triggers to the replication slot");
            } else {
                self.passed_switch = true;
            }
        }
        Ok(())
    }

    /// Stores coalesced bursts whose window closed.
    async fn store_due(&mut self) -> Result<(), SessionError> {
        let committed = {
            let mut client = self.outbox.pool().get().await.map_err(DbError::from)?;
            let mut writer = self.outbox.begin(&mut client).await?;
            writer.flush_due();
            writer.commit(None).await?
        };
        self.outbox.deliver(committed).await?;
        Ok(())
    }
}

/// Reads the stored position and whether a trigger switch is pending.
async fn read_state(capture: &Capture) -> Result<(Option<SourcePosition>, bool), DbError> {
    let client = capture.pool.get().await?;
    let row = client
        .query_one(
            "SELECT source_lsn, source_changes, source_done, switch_pending FROM realtime.state",
            &[],
        )
        .await?;
    let lsn: Option<tokio_postgres::types::PgLsn> = row.get(0);
    Ok((
        lsn.map(|lsn| SourcePosition {
            lsn: u64::from(lsn),
            changes: row.get(1),
            done: row.get(2),
        }),
        row.get(3),
    ))
}

/// Opens the replication connection and starts streaming from the slot.
async fn connect(
    capture: &Capture,
    slot: &str,
    confirmed: u64,
) -> Result<ReplicationClient, SessionError> {
    let endpoint = Endpoint::of(&capture.database.pg);
    let publications = vec![
        capture.config.publication.clone(),
        slot::publish_publication(&capture.config),
    ];
    let config = ReplicationConfig::new(
        endpoint.host,
        endpoint.user,
        endpoint.password,
        endpoint.dbname,
        slot,
        publications,
    )
    .with_port(endpoint.port)
    .with_start_lsn(Lsn(confirmed))
    .with_ack_lsn(Lsn(confirmed))
    .with_status_interval(Duration::from_millis(500))
    .with_wakeup_interval(Duration::from_secs(5))
    .with_buffer_size(4096)
    .with_options("-c datestyle=ISO -c intervalstyle=postgres -c extra_float_digits=1")
    .with_application_name("rowcast");
    let mut client = ReplicationClient::connect(config).await?;
    client.wait_started().await?;
    Ok(client)
}

/// Postgres timestamps count microseconds from 2000-01-01 UTC.
fn pg_time(micros: i64) -> OffsetDateTime {
    const POSTGRES_EPOCH: i64 = 946_684_800;
    OffsetDateTime::from_unix_timestamp(POSTGRES_EPOCH)
        .map(|epoch| epoch + time::Duration::microseconds(micros))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_time_starts_in_2000() {
        assert_eq!(pg_time(0).year(), 2000);
        assert_eq!(pg_time(1_000_000).second(), 1);
    }
}
