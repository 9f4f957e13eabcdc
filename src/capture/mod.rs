//! Capture: the first stage. Committed row changes on the routed tables are
//! read from Postgres, routed, and stored in the outbox, exactly once.
//!
//! Two mechanisms feed the same routes and the same outbox:
//! - [`trigger`]: row triggers write each change to `realtime.capture` in
//!   the writer's own transaction; the relay consumes those rows in the
//!   transaction that stores their events. NOTIFY only wakes it up.
//! - [`logical`]: a logical replication slot streams committed changes
//!   (pgoutput); the source position is stored with each outbox batch and
//!   confirmed to the slot only after that batch committed.
//!
//! Explicit events (HTTP publish, presence) enter the same single writer
//! through [`PublishRequest`]s, so every stored event gets its `seq` from
//! one place.

pub mod logical;
pub mod trigger;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use deadpool_postgres::Pool;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use crate::config::{CaptureConfig, CaptureMode, DatabaseConfig};
use crate::db::DbError;
use crate::outbox::Outbox;
use crate::route::{Captured, Catalog, Change, Published, Router};
use crate::shutdown::Shutdown;

/// A capture failure that ends the relay.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The database refused something that retrying cannot fix.
    #[error("capture: {0}")]
    Db(#[from] DbError),
    /// Logical replication cannot run against this server.
    #[error("logical capture: {0}")]
    Logical(String),
}

/// The capture mode actually running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Triggers and the capture table.
    Trigger,
    /// A logical replication slot.
    Logical,
}

impl Mode {
    /// The name used in logs and `realtime.state`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Trigger => "trigger",
            Self::Logical => "logical",
        }
    }
}

/// Resolves `auto` against the server's `wal_level` and says why.
pub async fn resolve_mode(pool: &Pool, configured: CaptureMode) -> Result<(Mode, String), DbError> {
    let client = pool.get().await?;
    let wal_level: String = client.query_one("SHOW wal_level", &[]).await?.get(0);
    Ok(match configured {
        CaptureMode::Trigger => (Mode::Trigger, "ROWCAST_CAPTURE=trigger".into()),
        CaptureMode::Logical => (Mode::Logical, "ROWCAST_CAPTURE=logical".into()),
        CaptureMode::Auto if wal_level == "logical" => (
            Mode::Logical,
            "auto: the server has wal_level=logical".into(),
        ),
        CaptureMode::Auto => (
            Mode::Trigger,
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

/// An explicit event for the single writer, answered with its seq.
pub struct PublishRequest {
    /// The event.
    pub event: Published,
    /// Receives the stored seq, or the failure.
    pub reply: oneshot::Sender<Result<i64, String>>,
}

/// Whether capture is running, for `/readyz`.
#[derive(Debug, Default)]
pub struct CaptureStatus {
    /// True while capture is connected and consuming.
    running: AtomicBool,
}

impl From<deadpool_postgres::PoolError> for CaptureError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::Db(e.into())
    }
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

/// Everything a capture loop needs.
pub struct Capture {
    /// The runtime pool.
    pub pool: Pool,
    /// Database settings (the loops open their own LISTEN or replication connection).
    pub database: DatabaseConfig,
    /// Compiled routes.
    pub router: Arc<Router>,
    /// Capture settings.
    pub config: CaptureConfig,
    /// Readiness flag.
    pub status: Arc<CaptureStatus>,
    /// Explicit events to store.
    pub requests: mpsc::Receiver<PublishRequest>,
    /// Stop signal.
    pub shutdown: Shutdown,
    /// Trigger mode taking over from a slot: the switch message's token.
    pub retire_token: Option<String>,
}

/// Installs capture for `mode`, idempotently. Once this returns, every
/// committed change to a routed table is captured. In trigger mode, when a
/// replication slot is still there, returns the token of the switch message
/// up to which [`run`] reads the slot before dropping it.
pub async fn install(
    mode: Mode,
    pool: &Pool,
    router: &Router,
    config: &CaptureConfig,
) -> Result<Option<String>, CaptureError> {
    record_mode(pool, mode).await?;
    match mode {
        Mode::Trigger => {
            let token = logical::slot_exists(pool, config)
                .await?
                .then(|| format!("{:016x}", rand::random::<u64>()));
            trigger::install(pool, router, token.as_deref()).await?;
            Ok(token)
        }
        Mode::Logical => {
            logical::install(pool, router, config).await?;
            Ok(None)
        }
    }
}

/// Runs installed capture until shutdown or a fatal error. Transient
/// failures are retried with backoff inside.
pub async fn run(mode: Mode, mut capture: Capture, mut outbox: Outbox) -> Result<(), CaptureError> {
    match mode {
        Mode::Trigger => {
            if let Some(token) = capture.retire_token.take() {
                logical::retire(&mut capture, &mut outbox, &token).await?;
                if capture.shutdown.is_triggered() {
                    return Ok(());
                }
            }
            trigger::run(capture, outbox).await
        }
        Mode::Logical => logical::run(capture, outbox).await,
    }
}

async fn record_mode(pool: &Pool, mode: Mode) -> Result<(), DbError> {
    let client = pool.get().await?;
    client
        .execute(
            "UPDATE realtime.state SET capture_mode = $1",
            &[&mode.name()],
        )
        .await?;
    Ok(())
}

/// Stores a batch of explicit events in one outbox transaction and answers
/// each request with its seq.
pub(crate) async fn store_requests(
    outbox: &mut Outbox,
    router: &Router,
    batch: Vec<PublishRequest>,
) -> Result<(), DbError> {
    let (batch, refused): (Vec<_>, Vec<_>) = batch.into_iter().partition(|r| {
        r.event
            .rooms
            .iter()
            .all(|room| crate::route::is_room_name(room))
            && !r.event.rooms.is_empty()
    });
    for request in refused {
        let _ = request.reply.send(Err("invalid rooms".into()));
    }
    if batch.is_empty() {
        return Ok(());
    }
    let now = OffsetDateTime::now_utc();
    let result = async {
        let mut client = outbox.pool().get().await?;
        store_batch(outbox, &mut client, router, &batch, now).await
    }
    .await;
    match result {
        Ok(committed) => {
            let seqs: Vec<i64> = committed.events.iter().map(|e| e.seq).collect();
            outbox.deliver(committed).await?;
            for (request, seq) in batch.into_iter().zip(seqs) {
                let _ = request.reply.send(Ok(seq));
            }
            Ok(())
        }
        Err(e) => {
            for request in batch {
                let _ = request
                    .reply
                    .send(Err("the event could not be stored".into()));
            }
            Err(e)
        }
    }
}

async fn store_batch(
    outbox: &Outbox,
    client: &mut deadpool_postgres::Client,
    router: &Router,
    batch: &[PublishRequest],
    at: OffsetDateTime,
) -> Result<crate::outbox::Committed, DbError> {
    let mut writer = outbox.begin(client).await?;
    for request in batch {
        writer.append(router.route(&Change {
            captured: Captured::Published(request.event.clone()),
            at,
        }));
    }
    writer.commit(None).await
}

/// Takes the requests already queued, up to `max`, after `first`.
pub(crate) fn queued_requests(
    first: PublishRequest,
    requests: &mut mpsc::Receiver<PublishRequest>,
    max: usize,
) -> Vec<PublishRequest> {
    let mut batch = vec![first];
    while batch.len() < max {
        match requests.try_recv() {
            Ok(request) => batch.push(request),
            Err(_) => break,
        }
    }
    batch
}
