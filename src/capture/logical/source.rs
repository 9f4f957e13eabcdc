//! The logical source: one replication connection's worth of streaming.
//! Source transactions are read into a batch; the ingest loop stores the
//! batch and the position it reached in one outbox transaction; only then
//! is the slot told to move.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use futures_util::FutureExt;
use pgwire_replication::{Lsn, ReplicationClient, ReplicationEvent};
use time::OffsetDateTime;
use tokio_postgres::types::PgLsn;

use super::confirm::Confirmations;
use super::continuity::{self, lsn, Record, Verdict};
use super::decode::{ChangeItem, Decoder};
use super::session::{self, Server};
use super::{pgoutput, slot};
use crate::capture::switch::{Retiring, Switch};
use crate::capture::{table, CaptureError, Progress, Source, SourceKind, Written};
use crate::config::{CaptureConfig, DeliverAt, OnCaptureGap};
use crate::db::{DatabaseConfig, DbError};
use crate::event::{CaptureGap, Captured, Change};
use crate::outbox::{OutboxTx, SourcePosition};
use crate::route::Router;

impl From<pgwire_replication::PgWireError> for CaptureError {
    fn from(e: pgwire_replication::PgWireError) -> Self {
        if e.is_auth() || e.is_tls() || e.is_message_too_large() {
            Self::Logical(e.to_string())
        } else {
            Self::Interrupted(e.to_string())
        }
    }
}

impl From<pgoutput::DecodeError> for CaptureError {
    fn from(e: pgoutput::DecodeError) -> Self {
        Self::Logical(format!("undecodable replication message: {e}"))
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

/// Changes read but not stored yet.
#[derive(Default)]
pub struct StreamBatch {
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
    /// Whether it filled up inside a source transaction (stored at once,
    /// with a partial position).
    full: bool,
    /// Whether it reaches the position up to which the recorded routes
    /// read the stream: the session ends after it, and the next reads on
    /// with the routes file.
    switch_routes: bool,
}

impl StreamBatch {
    fn is_empty(&self) -> bool {
        self.items.is_empty() && self.position.is_none() && !self.switch_routes
    }

    /// Whether it holds `max_items` changes, or [`MAX_BATCH_BYTES`].
    fn is_full(&self, max_items: usize) -> bool {
        self.items.len() >= max_items || self.bytes >= MAX_BATCH_BYTES
    }
}

/// What one ingest transaction of the logical source does.
pub enum LogicalBatch {
    /// Stores the capture rows below `bound` that triggers wrote before
    /// the slot took over (at the first start after a switch to logical).
    Drain {
        /// Capture rows below this id predate the slot.
        bound: i64,
        /// How many rows the transaction took.
        taken: usize,
    },
    /// Stores changes read from the stream.
    Stream(StreamBatch),
    /// Records the slot streamed and the server streamed from (after a
    /// first start, a promotion, or a capture gap, whose marker it stores).
    Record(Recording),
    /// Records a position handled without storing anything, so the slot
    /// may confirm it.
    Confirm(u64),
}

/// What the first outbox transaction of a session records about the slot.
#[derive(Clone, Debug)]
pub struct Recording {
    /// The slot streamed.
    slot: String,
    /// Where it stands.
    confirmed: u64,
    /// The system identifier streamed from.
    system: String,
    /// Its timeline.
    timeline: u32,
    /// The capture gap found, if any: its marker is stored, and the stored
    /// position (which the lost changes made meaningless) is forgotten.
    gap: Option<CaptureGap>,
}

/// Streams a slot into the ingest loop.
pub struct LogicalSource {
    /// The runtime pool (state, slot bookkeeping, heartbeats).
    pool: Pool,
    /// Where the replication connection goes, and its TLS.
    database: DatabaseConfig,
    /// Routes, for decoding and routing.
    router: Arc<Router>,
    /// Capture settings.
    config: CaptureConfig,
    /// The slot, when it is being retired: stop at the switch message
    /// carrying its token.
    retiring: Option<Retiring>,
    /// Heartbeats keep an idle slot's confirmed position moving.
    heartbeat: tokio::time::Interval,
    /// The open session, if any.
    stream: Option<Stream>,
}

/// Streaming state of one replication connection.
struct Stream {
    /// The slot.
    slot: String,
    /// The replication connection.
    client: ReplicationClient,
    /// pgoutput decoding and the relation cache.
    decoder: Decoder,
    /// The stored position (what is already in the outbox).
    stored: Option<SourcePosition>,
    /// Whether capture triggers are active for the next transaction.
    triggers: bool,
    /// Capture rows below this id may have been read from the table at
    /// start-up; the others are consumed only from the stream.
    drain_before: i64,
    /// Whether those rows are still to be read from the table.
    draining: bool,
    /// The source transaction being read.
    txn: Option<Txn>,
    /// Read, not yet stored.
    batch: StreamBatch,
    /// An event received by `wait`, not handled yet.
    next: Option<ReplicationEvent>,
    /// When the slot may be told a position.
    confirmations: Confirmations,
    /// What the session's first transaction records, until it is stored.
    recording: Option<Recording>,
    /// The routes this session reads the stream with.
    router: Arc<Router>,
    /// While reading with the recorded routes of a previous run: the WAL
    /// position past which the routes file takes over.
    switch_at: Option<u64>,
    /// The routes to record as those events are delivered under, when the
    /// record is not that already (`Some(None)`: record none).
    record_routes: Option<Option<String>>,
}

impl LogicalSource {
    /// Streams the slot of this database until shutdown.
    pub fn new(
        pool: Pool,
        database: DatabaseConfig,
        router: Arc<Router>,
        config: CaptureConfig,
    ) -> Self {
        let heartbeat = heartbeat(config.heartbeat);
        Self {
            pool,
            database,
            router,
            config,
            retiring: None,
            heartbeat,
            stream: None,
        }
    }

    /// Reads a retiring slot up to its switch to triggers, then finishes.
    pub fn retiring(mut self, retiring: Retiring) -> Self {
        self.config.slot = Some(retiring.slot.clone());
        self.retiring = Some(retiring);
        self
    }

    /// Acts on the continuity verdict before streaming: creates a missing
    /// slot, and reports a gap (exiting on it with
    /// `ROWCAST_ON_CAPTURE_GAP=stop`). Returns the gap to record and
    /// whether a slot was created.
    async fn settle(
        &self,
        verdict: Verdict,
        slot: &str,
        record: &Record,
        server: &Server,
    ) -> Result<(Option<CaptureGap>, bool), CaptureError> {
        let exists = server.observed.slot.is_some();
        match verdict {
            Verdict::Fresh if !exists => {
                slot::create_slot(&self.pool, slot).await?;
                Ok((None, true))
            }
            Verdict::Fresh => Ok((None, false)),
            Verdict::Continuous => {
                if let Some(was) = record.timeline.filter(|t| *t != server.observed.timeline) {
                    tracing::info!(%slot, timeline = server.observed.timeline, was, "resuming the slot on a promoted server; what is stored already is skipped");
                }
                Ok((None, false))
            }
            Verdict::Gap { gap, recreate } => {
                let last = gap.last_lsn.map_or_else(|| "none recorded".into(), lsn);
                let line = format!(
                    "capture gap on slot `{slot}` (last position {last}): {}; changes committed since may never be delivered",
                    gap.reason
                );
                if self.config.on_gap == OnCaptureGap::Stop {
                    tracing::error!("{line}; exiting (ROWCAST_ON_CAPTURE_GAP=stop)");
                    return Err(CaptureError::Gap(line));
                }
                tracing::error!("{line}; a gap marker is stored (clients resuming from before it get gap: true) and capture goes on");
                if recreate {
                    if exists {
                        slot::drop_slot(&self.pool, slot).await?;
                    }
                    slot::create_slot(&self.pool, slot).await?;
                }
                Ok((Some(gap), recreate))
            }
        }
    }

    /// The routes events are delivered under ahead of their commit, as
    /// recorded: the routes file's text, or none when delivering after the
    /// commit.
    fn delivered_under(&self) -> Option<String> {
        (self.config.deliver == DeliverAt::Wal).then(|| self.router.text().to_string())
    }

    /// The routes this session reads the stream with. Events may have been
    /// delivered under the recorded routes before their outbox rows
    /// committed; if the routes file changed since, the stream is read with
    /// the recorded routes up to the WAL position now (past anything that
    /// was delivered), so those events come again exactly as delivered,
    /// and with the file after that.
    async fn session_routes(
        &self,
        recorded: Option<&str>,
    ) -> Result<(Arc<Router>, Option<u64>), CaptureError> {
        let Some(recorded) = recorded.filter(|r| *r != self.router.text()) else {
            return Ok((self.router.clone(), None));
        };
        let previous = match Router::from_text(recorded, "the routes recorded in realtime.state") {
            Ok(previous) => Arc::new(previous),
            Err(e) => {
                tracing::error!(error = %e, "the recorded routes do not load: the stream is read with the routes file at once, and events delivered before the last stop may differ from those stored");
                return Ok((self.router.clone(), None));
            }
        };
        let client = self.pool.get().await?;
        let now: PgLsn = client
            .query_one("SELECT pg_current_wal_lsn()", &[])
            .await?
            .get(0);
        let now = u64::from(now);
        tracing::warn!(until = %Lsn(now), "the routes file changed since the relay last stopped with events delivered ahead of their commit: changes up to the WAL position now are routed by the routes recorded then (as they were delivered), later ones by the routes file");
        Ok((previous, Some(now)))
    }

    fn stream(&mut self) -> Result<&mut Stream, CaptureError> {
        self.stream
            .as_mut()
            .ok_or_else(|| CaptureError::Interrupted("not connected".into()))
    }
}

fn heartbeat(period: Duration) -> tokio::time::Interval {
    let mut heartbeat = tokio::time::interval(period);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat
}

impl Source for LogicalSource {
    type Batch = LogicalBatch;

    fn kind(&self) -> SourceKind {
        SourceKind::Logical
    }

    async fn open(&mut self) -> Result<(), CaptureError> {
        let slot = slot::slot_name(&self.pool, &self.config).await?;
        let state = read_state(&self.pool).await?;
        let mut client = session::open(&self.database, &self.config, &slot).await?;
        let server = session::observe(&mut client, &slot).await?;
        let record = state.record(&slot);
        let verdict = continuity::judge(&slot, &record, &server.observed);
        let (gap, created) = self.settle(verdict, &slot, &record, &server).await?;
        // A new slot changed what is to be read from the capture table.
        let state = if created {
            read_state(&self.pool).await?
        } else {
            state
        };
        if server.has_failover_slots() && !server.observed.slot.as_ref().is_some_and(|s| s.failover)
        {
            session::enable_failover(&mut client, &slot).await?;
        }
        let confirmed = slot::confirmed_flush(&self.pool, &slot).await?;
        let recording = needs_recording(&record, &server, gap.is_some()).then(|| Recording {
            slot: slot.clone(),
            confirmed,
            system: server.observed.system.clone(),
            timeline: server.observed.timeline,
            gap,
        });
        warn_unless_kept_on_standbys(&slot, &server);
        client.update_applied_lsn(Lsn(confirmed));
        client.start().await?;
        client.wait_started().await?;
        tracing::info!(%slot, confirmed = %Lsn(confirmed), timeline = server.observed.timeline, "logical capture streaming");
        self.heartbeat = heartbeat(self.config.heartbeat);
        let recorded = record.confirmed.unwrap_or(confirmed);
        let (router, switch_at) = self.session_routes(state.ahead_routes.as_deref()).await?;
        let delivered_under = self.delivered_under();
        let record_routes = (switch_at.is_none() && state.ahead_routes != delivered_under)
            .then_some(delivered_under);
        self.stream = Some(Stream {
            slot,
            client,
            decoder: Decoder::new(router.clone()),
            stored: state.stored,
            triggers: state.triggers,
            drain_before: state.drain_before.unwrap_or(0),
            draining: !state.drained,
            txn: None,
            batch: StreamBatch::default(),
            next: None,
            confirmations: Confirmations::new(recorded, server.standbys),
            recording,
            router,
            switch_at,
            record_routes,
        });
        Ok(())
    }

    fn poll(&mut self) -> Result<Option<LogicalBatch>, CaptureError> {
        let max = self.config.batch_size;
        let stop = self.retiring.as_ref().map(|r| r.token.clone());
        let stream = self.stream()?;
        if let Some(recording) = stream.recording.clone() {
            return Ok(Some(LogicalBatch::Record(recording)));
        }
        if stream.draining {
            return Ok(Some(LogicalBatch::Drain {
                bound: stream.drain_before,
                taken: 0,
            }));
        }
        loop {
            if stream.must_store(max) {
                return Ok(Some(LogicalBatch::Stream(std::mem::take(
                    &mut stream.batch,
                ))));
            }
            let event = match stream.next.take() {
                Some(event) => event,
                None => match stream.client.recv().now_or_never() {
                    // The stream paused: store what is complete, or record
                    // what was handled without storing.
                    None => {
                        if stream.ready_to_store() {
                            let batch = std::mem::take(&mut stream.batch);
                            return Ok(Some(LogicalBatch::Stream(batch)));
                        }
                        let idle = stream.batch.is_empty() && stream.txn.is_none();
                        let due = stream.confirmations.idle_due().filter(|_| idle);
                        return Ok(due.map(LogicalBatch::Confirm));
                    }
                    Some(Ok(Some(event))) => event,
                    Some(Ok(None)) => {
                        return Err(CaptureError::Interrupted("replication stream ended".into()))
                    }
                    Some(Err(e)) => return Err(e.into()),
                },
            };
            stream.handle(event, max, stop.as_deref())?;
        }
    }

    async fn wait(&mut self) -> Result<(), CaptureError> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(CaptureError::Interrupted("not connected".into()));
        };
        tokio::select! {
            event = stream.client.recv() => match event {
                Ok(Some(event)) => stream.next = Some(event),
                Ok(None) => return Err(CaptureError::Interrupted("replication stream ended".into())),
                Err(e) => return Err(e.into()),
            },
            released = stream.confirmations.poll_standbys(&self.pool),
                if stream.confirmations.is_waiting() => {
                if let Some(lsn) = released? {
                    stream.client.update_applied_lsn(Lsn(lsn));
                }
            }
            _ = self.heartbeat.tick() => {
                let (pool, slot) = (self.pool.clone(), stream.slot.clone());
                tokio::spawn(async move {
                    if let Err(e) = slot::heartbeat(&pool, &slot).await {
                        tracing::debug!(error = %e, "heartbeat failed");
                    }
                });
            }
        }
        Ok(())
    }

    async fn write(
        &mut self,
        batch: &mut LogicalBatch,
        tx: &mut OutboxTx,
    ) -> Result<Written, CaptureError> {
        let limit = self.config.batch_size;
        let delivered_under = self.delivered_under();
        let stream = self.stream()?;
        let router = stream.router.clone();
        match batch {
            LogicalBatch::Drain { bound, taken } => {
                let (count, changes) =
                    table::take(tx.transaction(), &router, limit, *bound).await?;
                for change in &changes {
                    tx.route(&router, change);
                }
                *taken = count;
                if count < limit {
                    tx.transaction()
                        .execute("UPDATE realtime.state SET drained = true", &[])
                        .await
                        .map_err(DbError::from)?;
                }
                Ok(Written {
                    consumed: true,
                    ..Written::default()
                })
            }
            LogicalBatch::Record(recording) => {
                record(tx, recording).await?;
                Ok(Written {
                    consumed: true,
                    ..Written::default()
                })
            }
            LogicalBatch::Confirm(lsn) => {
                tx.confirm_slot(*lsn);
                Ok(Written {
                    consumed: true,
                    ..Written::default()
                })
            }
            LogicalBatch::Stream(batch) => {
                if let Some(end) = batch.confirm {
                    tx.confirm_slot(stream.confirmations.to_record(end));
                }
                let ids: Vec<i64> = batch.items.iter().filter_map(|(id, _)| *id).collect();
                let consumed = table::consume(tx.transaction(), &ids, stream.drain_before).await?;
                for (id, change) in &batch.items {
                    let fresh = id.is_none_or(|id| consumed.contains(&id));
                    if let (true, Some(change)) = (fresh, change) {
                        tx.route(&router, change);
                    }
                }
                if let Some(active) = batch.triggers {
                    tx.transaction()
                        .execute("UPDATE realtime.state SET triggers_active = $1", &[&active])
                        .await
                        .map_err(DbError::from)?;
                }
                let routes = match (&stream.record_routes, batch.switch_routes) {
                    (_, true) => Some(&delivered_under),
                    (Some(routes), false) => Some(routes),
                    (None, false) => None,
                };
                if let Some(routes) = routes {
                    tx.transaction()
                        .execute("UPDATE realtime.state SET ahead_routes = $1", &[routes])
                        .await
                        .map_err(DbError::from)?;
                }
                Ok(Written {
                    consumed: true,
                    position: batch.position,
                    ahead: true,
                })
            }
        }
    }

    async fn committed(&mut self, batch: LogicalBatch) -> Result<Progress, CaptureError> {
        let limit = self.config.batch_size;
        let pool = self.pool.clone();
        let stream = self.stream()?;
        match batch {
            LogicalBatch::Drain { taken, .. } => {
                stream.draining = taken >= limit;
            }
            LogicalBatch::Record(recording) => {
                if recording.gap.is_some() {
                    stream.stored = None;
                }
                stream.confirmations.reset(recording.confirmed);
                stream.recording = None;
            }
            LogicalBatch::Confirm(lsn) => {
                stream.confirm(lsn, &pool).await?;
            }
            LogicalBatch::Stream(batch) => {
                stream.record_routes = None;
                if batch.position.is_some() {
                    stream.stored = batch.position;
                }
                if let Some(end) = batch.confirm {
                    let lsn = stream.confirmations.to_record(end);
                    stream.confirm(lsn, &pool).await?;
                }
                if batch.ends_stream {
                    return Ok(Progress::Finished);
                }
                if batch.switch_routes {
                    tracing::info!("the stream caught up with the recorded routes; reading on with the routes file");
                    return Err(CaptureError::Interrupted(
                        "switching to the routes file".into(),
                    ));
                }
            }
        }
        Ok(Progress::Continue)
    }

    /// Every delivered event is stored: no routes are needed to derive
    /// them again (unless this session still reads with recorded routes,
    /// which apply up to a position it has not reached).
    async fn stopped(&mut self) -> Result<(), CaptureError> {
        if self.stream.as_ref().is_some_and(|s| s.switch_at.is_some()) {
            return Ok(());
        }
        let client = self.pool.get().await?;
        client
            .execute("UPDATE realtime.state SET ahead_routes = NULL", &[])
            .await?;
        Ok(())
    }

    fn close(&mut self) {
        if let Some(stream) = self.stream.take() {
            stream.client.stop();
        }
    }
}

impl Stream {
    /// `lsn` is recorded: tell the slot, now or once standbys have it.
    async fn confirm(&mut self, lsn: u64, pool: &Pool) -> Result<(), CaptureError> {
        self.confirmations
            .recorded(lsn, &self.client, pool)
            .await
            .map_err(CaptureError::from)
    }

    /// Whether the batch must be stored before reading on: it filled up,
    /// or it ends with the awaited switch (of capture mode or of routes).
    fn must_store(&self, max: usize) -> bool {
        self.batch.full
            || self.batch.ends_stream
            || self.batch.switch_routes
            || (self.txn.is_none() && !self.batch.is_empty() && self.batch.is_full(max))
    }

    /// Whether a transaction boundary was reached with something to store.
    fn ready_to_store(&self) -> bool {
        self.txn.is_none() && !self.batch.is_empty()
    }

    /// Applies one replication event to the transaction and batch state.
    fn handle(
        &mut self,
        event: ReplicationEvent,
        max: usize,
        stop: Option<&str>,
    ) -> Result<(), CaptureError> {
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
            ReplicationEvent::XLogData { data, .. } => self.change(&data, max)?,
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
            ReplicationEvent::Commit { end_lsn, .. } => {
                self.commit(end_lsn.0, stop);
                self.switch_routes_at(end_lsn.0);
            }
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

    fn change(&mut self, data: &bytes::Bytes, max: usize) -> Result<(), CaptureError> {
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
            Some(ChangeItem::Row(_)) if txn.triggers => None,
            Some(ChangeItem::Row(row)) => Some((None, Some(Captured::Row(row)))),
            Some(ChangeItem::CaptureRow {
                id,
                captured: captured @ Captured::Published(_),
            }) => Some((Some(id), Some(captured))),
            Some(ChangeItem::CaptureRow { id, captured }) if txn.triggers => {
                Some((Some(id), Some(captured)))
            }
            // A trigger's row outside the trigger era: consumed, never routed twice.
            Some(ChangeItem::CaptureRow { id, .. }) => Some((Some(id), None)),
            None => None,
        };
        if let Some((id, captured)) = entry {
            let at = txn.at;
            self.batch
                .items
                .push((id, captured.map(|captured| Change { captured, at })));
            self.batch.bytes += data.len();
        }
        if self.batch.is_full(max) {
            self.batch.position = Some(SourcePosition {
                lsn: txn.final_lsn,
                changes: txn.seen,
                done: false,
            });
            self.batch.full = true;
        }
        Ok(())
    }

    fn commit(&mut self, end_lsn: u64, stop: Option<&str>) {
        let Some(txn) = self.txn.take() else {
            return;
        };
        let lag = (OffsetDateTime::now_utc() - txn.at)
            .as_seconds_f64()
            .max(0.0);
        metrics::gauge!("rowcast_slot_lag_seconds").set(lag);
        let ends_stream =
            matches!((&txn.switch, stop), (Some(Switch::ToTrigger(t)), Some(stop)) if t == stop);
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
            self.confirmations.handled(end_lsn);
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

    /// Confirms `lsn` with the next record if nothing is pending, else
    /// after the batch.
    fn confirm_after_batch(&mut self, lsn: u64) {
        if self.batch.is_empty() {
            self.confirmations.handled(lsn);
        } else {
            self.batch.confirm = Some(lsn);
        }
    }

    /// Keepalives and heartbeats: with nothing pending, everything the
    /// server sent up to `lsn` is handled, so the slot may move there once
    /// that is recorded.
    fn confirm_idle(&mut self, lsn: u64) {
        if self.txn.is_none() && self.batch.is_empty() && lsn > 0 {
            self.confirmations.handled(lsn);
            metrics::gauge!("rowcast_slot_lag_seconds").set(0.0);
            self.switch_routes_at(lsn);
        }
    }

    /// Everything up to `lsn` is read: past the position up to which the
    /// recorded routes apply, the batch ends there.
    fn switch_routes_at(&mut self, lsn: u64) {
        if self.switch_at.is_some_and(|at| lsn >= at) {
            self.switch_at = None;
            self.batch.switch_routes = true;
        }
    }
}

/// What the outbox remembers of logical capture.
struct State {
    /// The slot last streamed.
    slot: Option<String>,
    /// The highest position that slot may have confirmed.
    slot_confirmed: Option<u64>,
    /// The system identifier streamed from.
    system: Option<String>,
    /// Its timeline.
    timeline: Option<u32>,
    /// The stored position.
    stored: Option<SourcePosition>,
    /// Whether capture triggers were active at that position.
    triggers: bool,
    /// Capture rows below this id predate the slot.
    drain_before: Option<i64>,
    /// Whether those were read from the table already.
    drained: bool,
    /// The routes events may have been delivered under ahead of their
    /// commit.
    ahead_routes: Option<String>,
}

async fn read_state(pool: &Pool) -> Result<State, DbError> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            "SELECT source_lsn, source_changes, source_done, triggers_active, drain_before, drained,
                    slot_name, slot_confirmed, system_id, timeline, ahead_routes
             FROM realtime.state",
            &[],
        )
        .await?;
    let lsn: Option<PgLsn> = row.get(0);
    Ok(State {
        slot: row.get(6),
        slot_confirmed: row.get::<_, Option<PgLsn>>(7).map(u64::from),
        system: row.get(8),
        timeline: row.get::<_, Option<i32>>(9).map(|t| t as u32),
        stored: lsn.map(|lsn| SourcePosition {
            lsn: u64::from(lsn),
            changes: row.get(1),
            done: row.get(2),
        }),
        triggers: row.get(3),
        drain_before: row.get(4),
        drained: row.get(5),
        ahead_routes: row.get(10),
    })
}

impl State {
    /// The continuity record. A position stored before slots were
    /// recorded by name stands for the configured slot.
    fn record(&self, configured: &str) -> Record {
        let slot = self
            .slot
            .clone()
            .or_else(|| self.stored.map(|_| configured.to_string()));
        Record {
            slot,
            confirmed: self.slot_confirmed,
            system: self.system.clone(),
            timeline: self.timeline,
        }
    }
}

/// Whether the session's first transaction must record the slot: a gap,
/// a first start, or a server that is not the one recorded (a promotion
/// changes the timeline).
fn needs_recording(record: &Record, server: &Server, gap: bool) -> bool {
    gap || record.slot.is_none()
        || record.confirmed.is_none()
        || record.system.as_deref() != Some(server.observed.system.as_str())
        || record.timeline != Some(server.observed.timeline)
}

/// Records the slot and server (and a gap's marker) in the transaction.
async fn record(tx: &mut OutboxTx, recording: &Recording) -> Result<(), DbError> {
    if let Some(gap) = &recording.gap {
        tx.capture_gap(gap.clone());
        tx.transaction()
            .execute(
                "UPDATE realtime.state SET source_lsn = NULL, source_changes = 0, source_done = true",
                &[],
            )
            .await?;
    }
    tx.transaction()
        .execute(
            "UPDATE realtime.state
             SET slot_name = $1, slot_confirmed = $2, system_id = $3, timeline = $4",
            &[
                &recording.slot,
                &PgLsn::from(recording.confirmed),
                &recording.system,
                &(recording.timeline as i32),
            ],
        )
        .await?;
    Ok(())
}

/// On 17+, a slot kept on standbys still loses its position in a failover
/// if changes may reach the relay before a standby has them.
fn warn_unless_kept_on_standbys(slot: &str, server: &Server) {
    if server.has_failover_slots() && server.standbys.is_empty() {
        tracing::warn!(%slot, "synchronized_standby_slots is not set on this server: a failover to a standby may lose the slot's position (a capture gap); see docs/capture.md");
    }
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
