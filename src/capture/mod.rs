//! Capture: the first stage. Committed row changes on the routed tables are
//! read from Postgres by a [`Source`], and the ingest loop stores them in
//! the outbox, exactly once.
//!
//! Two sources feed the same routes and the same outbox:
//! - [`trigger`]: row triggers write each change to `realtime.capture`
//!   ([`table`]) in the writer's own transaction; the source takes those
//!   rows in the transaction that stores their events. NOTIFY only wakes it.
//! - [`logical`]: a logical replication slot streams committed changes
//!   (pgoutput); the source position is stored with each outbox batch and
//!   confirmed to the slot only after that batch committed.
//!
//! Switching between them is lossless ([`switch`]).

pub mod logical;
pub mod switch;
pub mod table;
pub mod trigger;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

use deadpool_postgres::Pool;

use crate::config::{CaptureConfig, CaptureMode};
use crate::db::DbError;
use crate::outbox::{OutboxTx, SourcePosition};
use crate::route::{Catalog, Router};

/// A capture failure. [`CaptureError::is_transient`] is the one place that
/// decides whether the ingest loop retries (after a backoff) or stops.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// A database query failed; retried when the database says so.
    #[error("capture: {0}")]
    Db(#[from] DbError),
    /// The replication or LISTEN connection broke: retried.
    #[error("capture interrupted: {0}")]
    Interrupted(String),
    /// Logical replication cannot run against this server: fatal.
    #[error("logical capture: {0}")]
    Logical(String),
    /// Changes were lost before capture could read them, and the relay is
    /// set to stop on that (`ROWCAST_ON_CAPTURE_GAP=stop`): fatal.
    #[error("{0}")]
    Gap(String),
}

impl CaptureError {
    /// Whether retrying after a backoff can succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Db(e) => e.is_transient(),
            Self::Interrupted(_) => true,
            Self::Logical(_) | Self::Gap(_) => false,
        }
    }
}

impl From<deadpool_postgres::PoolError> for CaptureError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::Db(e.into())
    }
}

impl From<tokio_postgres::Error> for CaptureError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(e.into())
    }
}

/// What a source wrote into one ingest transaction.
#[derive(Debug, Default)]
pub struct Written {
    /// Whether it consumed input (then the transaction must commit even if
    /// no event came of it).
    pub consumed: bool,
    /// The source position reached, stored in the same transaction.
    pub position: Option<SourcePosition>,
    /// Whether the events it routed are a function of the stream alone
    /// (their order and content fixed by the WAL, not by this
    /// transaction), so they may be delivered before it commits.
    pub ahead: bool,
}

/// What the ingest loop does after a batch committed.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// Keep going.
    Continue,
    /// The source has nothing more to give (a retiring slot reached the
    /// switch to triggers).
    Finished,
}

/// A source of committed changes for the ingest loop.
///
/// Contract:
/// - Ordering: batches come in commit order, and within a batch changes
///   are in commit order.
/// - Exactly once: [`write`](Self::write) consumes the batch's input inside
///   the ingest transaction (deleting capture rows, or returning the
///   position to store), so the input is gone if and only if its events
///   are stored.
/// - Progress: the source may tell the server it is done with the input
///   (confirm an LSN) only in [`committed`](Self::committed), after the
///   transaction committed.
/// - [`wait`](Self::wait) is cancel-safe: the loop also waits for publish
///   requests, coalescing deadlines and shutdown.
pub trait Source: Send {
    /// One batch of input.
    type Batch: Send;

    /// The mechanism, for logs and metrics.
    fn kind(&self) -> SourceKind;

    /// Connects and catches up; called again after every transient failure.
    fn open(&mut self) -> impl Future<Output = Result<(), CaptureError>> + Send;

    /// A batch ready to store, without waiting for more input.
    fn poll(&mut self) -> Result<Option<Self::Batch>, CaptureError>;

    /// Waits until more input may be there. Cancel-safe.
    fn wait(&mut self) -> impl Future<Output = Result<(), CaptureError>> + Send;

    /// Routes the batch into the ingest transaction and consumes its input.
    fn write(
        &mut self,
        batch: &mut Self::Batch,
        tx: &mut OutboxTx,
    ) -> impl Future<Output = Result<Written, CaptureError>> + Send;

    /// The batch's transaction committed (or, with nothing consumed, was
    /// not needed).
    fn committed(
        &mut self,
        batch: Self::Batch,
    ) -> impl Future<Output = Result<Progress, CaptureError>> + Send;

    /// The relay is stopping: what [`poll`](Self::poll) returns from now on
    /// is stored before the loop ends (input already waiting, not more).
    fn stopping(&mut self) {}

    /// The relay is stopping with every event it delivered stored (so
    /// nothing delivered ahead of its commit is left to derive again).
    fn stopped(&mut self) -> impl Future<Output = Result<(), CaptureError>> + Send {
        async { Ok(()) }
    }

    /// Closes the session's connections (after an error or at the end).
    fn close(&mut self);
}

/// The capture mechanism actually running (`auto` resolved).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// Triggers and the capture table.
    Trigger,
    /// A logical replication slot.
    Logical,
}

impl SourceKind {
    /// The name used in logs and `realtime.state`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Trigger => "trigger",
            Self::Logical => "logical",
        }
    }
}

/// Resolves `auto` against the server's `wal_level` and says why.
pub async fn resolve_kind(
    pool: &Pool,
    configured: CaptureMode,
) -> Result<(SourceKind, String), DbError> {
    let client = pool.get().await?;
    let wal_level: String = client.query_one("SHOW wal_level", &[]).await?.get(0);
    Ok(match configured {
        CaptureMode::Trigger => (SourceKind::Trigger, "ROWCAST_CAPTURE=trigger".into()),
        CaptureMode::Logical => (SourceKind::Logical, "ROWCAST_CAPTURE=logical".into()),
        CaptureMode::Auto if wal_level == "logical" => (
            SourceKind::Logical,
            "auto: the server has wal_level=logical".into(),
        ),
        CaptureMode::Auto => (
            SourceKind::Trigger,
            format!("auto: the server has wal_level={wal_level}, not logical"),
        ),
    })
}

/// The columns of every routed table, for [`Router::check`].
pub async fn catalog(pool: &Pool, router: &Router) -> Result<Catalog, DbError> {
    let client = pool.get().await?;
    let tables: Vec<String> = router.tables().map(|t| t.qualified()).collect();
    let rows = client
        .query(
            "SELECT n.nspname || '.' || c.relname, a.attname
             FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
             WHERE c.relkind IN ('r', 'p') AND n.nspname || '.' || c.relname = ANY($1)
             ORDER BY a.attnum",
            &[&tables],
        )
        .await?;
    let mut catalog = Catalog::new();
    for row in rows {
        catalog.entry(row.get(0)).or_default().push(row.get(1));
    }
    Ok(catalog)
}

/// Whether capture is running, for `/readyz`.
#[derive(Debug, Default)]
pub struct CaptureStatus {
    /// True while capture is connected and consuming.
    running: AtomicBool,
}

impl CaptureStatus {
    /// Marks capture up or down.
    pub fn set_running(&self, running: bool) {
        self.running.store(running, Ordering::Relaxed);
        metrics::gauge!("rowcast_capture_up").set(if running { 1.0 } else { 0.0 });
    }

    /// Whether capture is up.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }
}

/// Installs capture for `kind`, idempotently. Once this returns, every
/// committed change to a routed table is captured. In trigger mode, when a
/// replication slot is still there, returns it: the slot must be read up to
/// the switch (written with the triggers) before the triggers take over.
pub async fn install(
    kind: SourceKind,
    pool: &Pool,
    router: &Router,
    config: &CaptureConfig,
) -> Result<Option<switch::Retiring>, CaptureError> {
    record_kind(pool, kind).await?;
    match kind {
        SourceKind::Trigger => {
            let retiring = logical::existing_slot(pool, config)
                .await?
                .map(switch::Retiring::new);
            trigger::install(pool, router, retiring.as_ref()).await?;
            Ok(retiring)
        }
        SourceKind::Logical => {
            logical::install(pool, router, config).await?;
            Ok(None)
        }
    }
}

async fn record_kind(pool: &Pool, kind: SourceKind) -> Result<(), DbError> {
    let client = pool.get().await?;
    client
        .execute(
            "UPDATE realtime.state SET capture_mode = $1",
            &[&kind.name()],
        )
        .await?;
    Ok(())
}
