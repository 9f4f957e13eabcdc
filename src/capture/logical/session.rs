//! One replication connection's worth of streaming: source transactions are
//! read into a batch and stored in one outbox transaction together with the
//! position they reached; only then is the slot told to move.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::FutureExt;
use pgwire_replication::{Lsn, ReplicationClient, ReplicationConfig, ReplicationEvent};
use time::OffsetDateTime;

use super::super::{queued_requests, store_requests, trigger, Capture, CaptureError};
use super::pgoutput;
use super::slot::{self, Switch};
use super::stream::{Decoder, Item};
use crate::db::{Backoff, DbError, Endpoint};
use crate::outbox::{Outbox, SourcePosition};
use crate::route::{Captured, Change};

/// Why a session ended.
pub(super) enum SessionError {
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
    /// Whether capture triggers were active for it (their capture rows,
    /// not its table changes, then carry what it did).
    triggers: bool,
    /// The capture-mode switch it carries, if any.
    switch: Option<Switch>,
}

/// Most bytes of change messages one batch holds before it is stored, so
/// wide rows are stored in smaller batches than `batch_size` allows.
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Most replication events read ahead of the one being handled. Each may
/// be a whole row (up to the largest value Postgres stores), so this bounds
/// the memory of read-ahead rows; the socket applies backpressure beyond it.
const READ_AHEAD_EVENTS: usize = 64;

/// Changes read but not stored yet.
#[derive(Default)]
struct Batch {
    /// In stream order: the capture row to consume (if any) and the change
    /// to route (`None`: consume the capture row without an event).
    items: Vec<(Option<i64>, Option<Change>)>,
    /// Bytes of the change messages behind `items`.
    bytes: usize,
    /// The position reached by these items.
    position: Option<SourcePosition>,
    /// The end LSN to confirm once stored (a complete transaction).
    confirm: Option<u64>,
    /// Whether triggers are active after this batch, when that changed.
    triggers: Option<bool>,
    /// Whether it ends with the awaited switch to triggers.
    ends_stream: bool,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.items.is_empty() && self.position.is_none()
    }

    /// Whether it holds `max_items` changes, or [`MAX_BATCH_BYTES`].
    fn is_full(&self, max_items: usize) -> bool {
        self.items.len() >= max_items || self.bytes >= MAX_BATCH_BYTES
    }
}

/// Streaming state of one connection.
pub(super) struct Session<'a> {
    /// Routes, pool, settings, shutdown.
    capture: &'a mut Capture,
    /// The single writer.
    outbox: &'a mut Outbox,
    /// The replication connection.
    client: ReplicationClient,
    /// pgoutput decoding and the relation cache.
    decoder: Decoder,
    /// The stored position (what is already in the outbox).
    stored: Option<SourcePosition>,
    /// Whether capture triggers are active for the next transaction.
    triggers: bool,
    /// Stop at the switch message carrying this token (retiring the slot).
    stop_token: Option<&'a str>,
    /// Capture rows below this id may have been read from the table at
    /// start-up; the others are consumed only here.
    drain_before: i64,
    /// The source transaction being read.
    txn: Option<Txn>,
    /// Read, not yet stored.
    batch: Batch,
}

impl<'a> Session<'a> {
    /// Connects, catches up, and streams until shutdown, the awaited
    /// switch, or an error.
    pub(super) async fn run(
        capture: &'a mut Capture,
        outbox: &'a mut Outbox,
        slot: &str,
        stop_token: Option<&'a str>,
        backoff: &mut Backoff,
    ) -> Result<(), SessionError> {
        let state = read_state(capture).await?;
        let confirmed = slot::confirmed_flush(&capture.pool, slot).await?;
        let client = connect(capture, slot, confirmed).await?;
        outbox.resync().await?;
        if !state.drained {
            let bound = state.drain_before.unwrap_or(0);
            trigger::drain_before(capture, outbox, bound).await?;
            mark_drained(capture).await?;
        }
        capture.status.set_running(true);
        backoff.reset();
        tracing::info!(%slot, confirmed = %Lsn(confirmed), "logical capture streaming");
        let decoder = Decoder::new(capture.router.clone());
        let mut session = Session {
            capture,
            outbox,
            client,
            decoder,
            stored: state.stored,
            triggers: state.triggers,
            stop_token,
            drain_before: state.drain_before.unwrap_or(0),
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
            if self.batch.ends_stream {
                // Later transactions belong to trigger capture.
                self.store().await?;
                return Ok(());
            }
            if self.ready_to_store() {
                // Take what is already waiting into the same outbox
                // transaction; store when the stream pauses or the batch is full.
                match self.client.recv().now_or_never() {
                    Some(Ok(Some(event)))
                        if !self.batch.is_full(self.capture.config.batch_size) =>
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
                    triggers: self.triggers,
                    switch: None,
                });
            }
            ReplicationEvent::XLogData { data, .. } => self.change(&data).await?,
            ReplicationEvent::Message {
                transactional: true,
                prefix,
                content,
                ..
            } => {
                if let (Some(switch), Some(txn)) =
                    (Switch::parse(&prefix, &content), self.txn.as_mut())
                {
                    txn.switch = Some(switch);
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
            // With triggers active, their capture rows carry the changes.
            Some(Item::Row(_)) if txn.triggers => None,
            Some(Item::Row(row)) => Some((None, Some(Captured::Row(row)))),
            Some(Item::CaptureRow {
                id,
                captured: captured @ Captured::Published(_),
            }) => Some((Some(id), Some(captured))),
            Some(Item::CaptureRow { id, captured }) if txn.triggers => {
                Some((Some(id), Some(captured)))
            }
            // A trigger's row outside the trigger era: consumed, never routed twice.
            Some(Item::CaptureRow { id, .. }) => Some((Some(id), None)),
            None => None,
        };
        if let Some((id, captured)) = entry {
            let at = txn.at;
            self.batch
                .items
                .push((id, captured.map(|captured| Change { captured, at })));
            self.batch.bytes += data.len();
        }
        if self.batch.is_full(self.capture.config.batch_size) {
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
        let ends_stream = matches!((&txn.switch, self.stop_token), (Some(Switch::ToTrigger(t)), Some(stop)) if t == stop);
        let triggers_after = match &txn.switch {
            Some(Switch::ToTrigger(_)) => Some(true),
            Some(Switch::ToLogical) => Some(false),
            None => None,
        };
        if let Some(active) = triggers_after {
            self.triggers = active;
            tracing::info!(
                triggers = active,
                "capture-mode switch read from the stream"
            );
        }
        self.batch.ends_stream |= ends_stream;
        if txn.skip == i64::MAX {
            // Stored before, switch included.
            self.confirm_after_batch(end_lsn);
            return;
        }
        if self.batch.is_empty() && triggers_after.is_none() {
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
        if triggers_after.is_some() {
            self.batch.triggers = triggers_after;
        }
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
        let committed = {
            let mut client = self.outbox.pool().get().await.map_err(DbError::from)?;
            let mut writer = self.outbox.begin(&mut client).await?;
            let ids: Vec<i64> = batch.items.iter().filter_map(|(id, _)| *id).collect();
            let consumed =
                consume_capture_rows(writer.transaction(), &ids, self.drain_before).await?;
            for (id, change) in &batch.items {
                let fresh = id.is_none_or(|id| consumed.contains(&id));
                if let (true, Some(change)) = (fresh, change) {
                    writer.append(self.capture.router.route(change));
                }
            }
            if flush {
                writer.flush_due();
            }
            if let Some(active) = batch.triggers {
                writer
                    .transaction()
                    .execute("UPDATE realtime.state SET triggers_active = $1", &[&active])
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

/// Deletes the capture rows of a batch; returns those it deleted (the
/// others were stored already, by the start-up drain).
///
/// The stream can announce a commit a moment before the committed rows are
/// visible to other snapshots, so a row that is not found yet is looked for
/// again. Rows at or above `drain_before` were consumed by nobody else and
/// must appear; rows below it may have been drained and are given up on
/// after a short wait.
async fn consume_capture_rows(
    tx: &deadpool_postgres::Transaction<'_>,
    ids: &[i64],
    drain_before: i64,
) -> Result<HashSet<i64>, DbError> {
    const MAY_BE_DRAINED: Duration = Duration::from_millis(250);
    const MUST_APPEAR: Duration = Duration::from_secs(30);
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let take = tx
        .prepare_cached("SELECT realtime.consume_captured($1)")
        .await?;
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_micros(200);
    let mut consumed = HashSet::new();
    let mut missing = ids.to_vec();
    loop {
        consumed.extend(
            tx.query(&take, &[&missing])
                .await?
                .iter()
                .map(|r| r.get::<_, i64>(0)),
        );
        missing.retain(|id| !consumed.contains(id));
        let must_appear = missing.iter().any(|id| *id >= drain_before);
        let patience = if must_appear {
            MUST_APPEAR
        } else {
            MAY_BE_DRAINED
        };
        if missing.is_empty() || (!must_appear && started.elapsed() > patience) {
            return Ok(consumed);
        }
        if started.elapsed() > patience {
            return Err(DbError::Retry(format!(
                "committed capture rows {missing:?} did not become visible"
            )));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(20));
    }
}

/// What the outbox remembers of logical capture.
struct State {
    /// The stored position.
    stored: Option<SourcePosition>,
    /// Whether capture triggers were active at that position.
    triggers: bool,
    /// Capture rows below this id predate the slot.
    drain_before: Option<i64>,
    /// Whether those were read from the table already.
    drained: bool,
}

async fn read_state(capture: &Capture) -> Result<State, DbError> {
    let client = capture.pool.get().await?;
    let row = client
        .query_one(
            "SELECT source_lsn, source_changes, source_done, triggers_active, drain_before, drained FROM realtime.state",
            &[],
        )
        .await?;
    let lsn: Option<tokio_postgres::types::PgLsn> = row.get(0);
    Ok(State {
        stored: lsn.map(|lsn| SourcePosition {
            lsn: u64::from(lsn),
            changes: row.get(1),
            done: row.get(2),
        }),
        triggers: row.get(3),
        drain_before: row.get(4),
        drained: row.get(5),
    })
}

async fn mark_drained(capture: &Capture) -> Result<(), DbError> {
    let client = capture.pool.get().await?;
    client
        .execute("UPDATE realtime.state SET drained = true", &[])
        .await?;
    Ok(())
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
    .with_buffer_size(READ_AHEAD_EVENTS)
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
