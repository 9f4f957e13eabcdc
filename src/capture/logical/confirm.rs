//! When the slot may be told a position.
//!
//! Two rules keep a slot from ever being ahead of what the outbox knows:
//! - **Record first.** A position is confirmed to the slot only after a
//!   committed outbox transaction recorded it (`realtime.state.slot_confirmed`).
//!   A slot found ahead of that record at the next connect was therefore
//!   consumed by someone else ([`super::continuity`]). Positions reached
//!   without storing anything (keepalives, heartbeats, transactions no route
//!   matches) are recorded at most once per [`RECORD_EVERY`].
//! - **Standbys first** (PostgreSQL 17+, with `synchronized_standby_slots`).
//!   A failover slot is synchronised to standbys from the primary's
//!   confirmed position. If the slot confirmed a position whose outbox
//!   transaction had not reached the standby yet, a promotion would keep
//!   the slot's position but lose the events: a silent hole. So a recorded
//!   position is confirmed only once every listed standby's physical slot
//!   has flushed past that record's commit.

use std::collections::VecDeque;
use std::time::Duration;

use deadpool_postgres::Pool;
use pgwire_replication::{Lsn, ReplicationClient};
use tokio::time::Instant;
use tokio_postgres::types::PgLsn;

use crate::db::DbError;

/// How often positions reached without storing anything are recorded.
pub(super) const RECORD_EVERY: Duration = Duration::from_secs(1);

/// How often recorded positions waiting for standbys are looked at again.
const STANDBY_POLL: Duration = Duration::from_millis(100);

/// Confirmation bookkeeping of one replication session.
pub(super) struct Confirmations {
    /// The highest position a committed outbox transaction recorded.
    recorded: u64,
    /// The highest position handled without storing anything, once it is
    /// past `recorded`.
    idle: u64,
    /// When `idle` was last recorded.
    last_recorded: Instant,
    /// The physical slots of the standbys that must have a record before
    /// the slot may confirm it; empty when none are listed.
    standbys: Vec<String>,
    /// Recorded positions waiting for the standbys: the WAL position after
    /// the record's commit, and the position to confirm.
    waiting: VecDeque<(u64, u64)>,
    /// When the oldest waiting position started waiting, for a warning.
    waiting_since: Option<Instant>,
}

impl Confirmations {
    /// Starts from what `realtime.state` recorded.
    pub(super) fn new(recorded: u64, standbys: Vec<String>) -> Self {
        Self {
            recorded,
            idle: 0,
            last_recorded: Instant::now(),
            standbys,
            waiting: VecDeque::new(),
            waiting_since: None,
        }
    }

    /// Everything up to `lsn` is handled, and none of it needs storing.
    pub(super) fn handled(&mut self, lsn: u64) {
        self.idle = self.idle.max(lsn);
    }

    /// A position handled without storing, due to be recorded now.
    pub(super) fn idle_due(&self) -> Option<u64> {
        (self.idle > self.recorded && self.last_recorded.elapsed() >= RECORD_EVERY)
            .then_some(self.idle)
    }

    /// What an outbox transaction that confirms `lsn` records: that, or a
    /// later idle position.
    pub(super) fn to_record(&self, lsn: u64) -> u64 {
        lsn.max(self.idle)
    }

    /// A fresh record, assigned rather than raised (a new slot starts
    /// where it was made).
    pub(super) fn reset(&mut self, recorded: u64) {
        self.recorded = recorded;
        self.idle = 0;
        self.last_recorded = Instant::now();
    }

    /// An outbox transaction recording `lsn` committed: confirm it now, or
    /// once the standbys have that commit.
    pub(super) async fn recorded(
        &mut self,
        lsn: u64,
        client: &ReplicationClient,
        pool: &Pool,
    ) -> Result<(), DbError> {
        self.recorded = self.recorded.max(lsn);
        self.last_recorded = Instant::now();
        if self.standbys.is_empty() {
            client.update_applied_lsn(Lsn(lsn));
            return Ok(());
        }
        let (wal, flushed) = self.standby_positions(pool).await?;
        self.waiting.push_back((wal, lsn));
        self.waiting_since.get_or_insert_with(Instant::now);
        if let Some(lsn) = self.release(flushed) {
            client.update_applied_lsn(Lsn(lsn));
        }
        Ok(())
    }

    /// Whether recorded positions wait for the standbys.
    pub(super) fn is_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Waits a moment, then returns the position the slot may now confirm,
    /// if the standbys received more records since. Cancel-safe: nothing
    /// changes until the answer is in.
    pub(super) async fn poll_standbys(&mut self, pool: &Pool) -> Result<Option<u64>, DbError> {
        tokio::time::sleep(STANDBY_POLL).await;
        let (_, flushed) = self.standby_positions(pool).await?;
        let released = self.release(flushed);
        if let Some(since) = self.waiting_since {
            if since.elapsed() > Duration::from_secs(30) {
                tracing::warn!(standbys = ?self.standbys, "the replication slot has waited 30 s for the standbys in synchronized_standby_slots to receive the relay's commits; WAL is kept until they do");
                self.waiting_since = Some(Instant::now());
            }
        }
        Ok(released)
    }

    /// The current WAL position, and how far every listed standby has
    /// flushed (`None` while one of them has no slot or never connected).
    async fn standby_positions(&self, pool: &Pool) -> Result<(u64, Option<u64>), DbError> {
        let client = pool.get().await?;
        let row = client
            .query_one(
                "SELECT pg_current_wal_lsn(), count(restart_lsn), min(restart_lsn)
                 FROM pg_replication_slots WHERE slot_type = 'physical' AND slot_name = ANY($1)",
                &[&self.standbys],
            )
            .await?;
        let wal: PgLsn = row.get(0);
        let (found, flushed): (i64, Option<PgLsn>) = (row.get(1), row.get(2));
        let flushed = (found as usize >= self.standbys.len())
            .then_some(flushed)
            .flatten()
            .map(u64::from);
        Ok((u64::from(wal), flushed))
    }

    /// Takes every waiting position whose record the standbys flushed;
    /// returns the highest, to confirm.
    fn release(&mut self, flushed: Option<u64>) -> Option<u64> {
        let flushed = flushed?;
        let mut confirm = None;
        while let Some(&(wal, lsn)) = self.waiting.front() {
            if wal > flushed {
                break;
            }
            confirm = Some(lsn);
            self.waiting.pop_front();
        }
        if self.waiting.is_empty() {
            self.waiting_since = None;
        }
        confirm
    }
}
