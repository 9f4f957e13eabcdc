//! Trigger capture. A row trigger on every routed table writes the change
//! (only the columns the routes read) to `realtime.capture` inside the
//! writer's own transaction, then sends a NOTIFY. The relay deletes capture
//! rows in the same transaction that stores their events: a row is either
//! still in the table or stored, never both and never neither. Rows are
//! taken whatever their id, so a sequence value handed out before a slow
//! commit can never be skipped.
//!
//! NOTIFY is only a wake-up: the loop also polls, and drains everything
//! after every (re)connect, so a missed notification only delays delivery.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::Notify;

use super::switch::Retiring;
use super::{table, CaptureError, Progress, Source, SourceKind, Written};
use crate::db::{DatabaseConfig, DbError, Session};
use crate::outbox::OutboxTx;
use crate::quote::{ident, literal};
use crate::route::{Router, TableRoutes};

/// The NOTIFY channel the capture triggers signal.
pub const CHANNEL: &str = "realtime_capture";
/// The name of every capture trigger rowcast installs.
const TRIGGER: &str = "rowcast_capture";

/// Installs (or refreshes) the capture trigger on every routed table and
/// removes it from tables no route names any more, in one transaction.
/// With a `retiring` slot, the same transaction writes the capture-mode
/// switch message into WAL, so the slot can be read exactly up to the first
/// change the triggers capture.
pub async fn install(
    pool: &Pool,
    router: &Router,
    retiring: Option<&Retiring>,
) -> Result<(), DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let mut routed = Vec::new();
    for table in router.tables() {
        tx.batch_execute(&function_sql(table)).await?;
        tx.batch_execute(&format!(
            "REVOKE ALL ON FUNCTION {}() FROM PUBLIC",
            function_name(table)
        ))
        .await?;
        tx.batch_execute(&trigger_sql(table)).await?;
        routed.push(table.qualified());
    }
    let stale = tx
        .query(
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
             FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE t.tgname = $1 AND NOT (n.nspname || '.' || c.relname = ANY($2))",
            &[&TRIGGER, &routed],
        )
        .await?;
    for row in stale {
        let table: String = row.get(0);
        tx.batch_execute(&format!("DROP TRIGGER IF EXISTS {TRIGGER} ON {table}"))
            .await?;
        tracing::info!(%table, "removed capture trigger from a table no route names");
    }
    if let Some(retiring) = retiring {
        let message = retiring.message();
        tx.execute(
            "SELECT pg_logical_emit_message(true, 'rowcast', $1)",
            &[&message],
        )
        .await?;
    }
    tx.commit().await?;
    tracing::info!(tables = routed.len(), "capture triggers installed");
    Ok(())
}

fn function_name(table: &TableRoutes) -> String {
    let mut name = format!("capture {}.{}", table.schema, table.name);
    if name.len() > 63 {
        let hash = name
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
        name.truncate(54);
        name.push_str(&format!(" {hash:08x}"));
    }
    format!("realtime.{}", ident(&name))
}

/// `jsonb_build_object(...)` of the captured columns of `row`, a jsonb
/// variable holding `to_jsonb(NEW)` or `to_jsonb(OLD)`. Reading the columns
/// out of jsonb (rather than as `NEW.col`) keeps the function's cached plans
/// valid when a column's type changes. Groups are chained because a function
/// takes at most 100 arguments.
fn row_json(table: &TableRoutes, row: &str) -> String {
    let parts: Vec<String> = table
        .columns
        .chunks(50)
        .map(|chunk| {
            let pairs: Vec<String> = chunk
                .iter()
                .map(|c| format!("{name}, {row} -> {name}", name = literal(c)))
                .collect();
            format!("jsonb_build_object({})", pairs.join(", "))
        })
        .collect();
    parts.join(" || ")
}

fn function_sql(table: &TableRoutes) -> String {
    let name = literal(&table.qualified());
    format!(
        "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $rowcast$
DECLARE
    r jsonb;
    o jsonb;
    n jsonb;
BEGIN
    IF TG_OP <> 'DELETE' THEN
        r := to_jsonb(NEW);
        n := {pick};
    END IF;
    IF TG_OP <> 'INSERT' THEN
        r := to_jsonb(OLD);
        o := {pick};
    END IF;
    IF TG_OP = 'UPDATE' AND o = n THEN
        RETURN NULL;
    END IF;
    INSERT INTO realtime.capture (tbl, op, old, new) VALUES ({name}, left(TG_OP, 1), o, n);
    PERFORM realtime.wake();
    RETURN NULL;
END
$rowcast$",
        function = function_name(table),
        pick = row_json(table, "r"),
    )
}

fn trigger_sql(table: &TableRoutes) -> String {
    format!(
        "CREATE OR REPLACE TRIGGER {TRIGGER} AFTER INSERT OR UPDATE OR DELETE ON {}.{}
         FOR EACH ROW EXECUTE FUNCTION {}()",
        ident(&table.schema),
        ident(&table.name),
        function_name(table)
    )
}

/// Consumes the capture table for the ingest loop.
///
/// Writers notify only while the relay sleeps: while rows keep coming it
/// takes batch after batch without waiting; when a batch comes back empty
/// it marks itself sleeping, waits for the writers that may have read
/// "awake", and reads once more before it waits for a NOTIFY (or the poll
/// interval).
pub struct TriggerSource {
    /// The runtime pool (the wake-up flag, the settle check).
    pool: Pool,
    /// Where the LISTEN connection goes, and its TLS.
    database: DatabaseConfig,
    /// Routes, for routing the taken rows.
    router: Arc<Router>,
    /// Most rows per transaction.
    batch_size: usize,
    /// How long to wait without a NOTIFY.
    poll_interval: Duration,
    /// The NOTIFY wake-up.
    wake: Arc<Notify>,
    /// The LISTEN session (NOTIFY wakes the source).
    listener: Option<Session>,
    /// Whether writers are told not to notify.
    awake: bool,
    /// Whether rows may be waiting (read before waiting again).
    pending: bool,
    /// The next wait's poll interval.
    next_poll: Duration,
}

/// One transaction's worth of capture rows: how many were taken.
#[derive(Debug, Default)]
pub struct Take {
    /// Rows taken.
    taken: usize,
}

impl TriggerSource {
    /// A source reading the capture table of `pool`'s database.
    pub fn new(
        pool: Pool,
        database: DatabaseConfig,
        router: Arc<Router>,
        config: &crate::config::CaptureConfig,
    ) -> Self {
        Self {
            pool,
            database,
            router,
            batch_size: config.batch_size,
            poll_interval: config.poll_interval,
            wake: Arc::new(Notify::new()),
            listener: None,
            awake: false,
            pending: false,
            next_poll: config.poll_interval,
        }
    }
}

impl Source for TriggerSource {
    type Batch = Take;

    fn kind(&self) -> SourceKind {
        SourceKind::Trigger
    }

    async fn open(&mut self) -> Result<(), CaptureError> {
        let wake = self.wake.clone();
        let listener =
            Session::listen(&self.database, "rowcast listen", &[CHANNEL], move |_, _| {
                wake.notify_one();
            })
            .await?;
        self.listener = Some(listener);
        set_sleeping(&self.pool, false).await?;
        self.awake = true;
        self.pending = true;
        tracing::info!("trigger capture running");
        Ok(())
    }

    fn poll(&mut self) -> Result<Option<Take>, CaptureError> {
        Ok(self.pending.then(Take::default))
    }

    async fn wait(&mut self) -> Result<(), CaptureError> {
        if self.listener.as_ref().is_none_or(Session::is_closed) {
            return Err(CaptureError::Interrupted(
                "the LISTEN connection closed".into(),
            ));
        }
        tokio::select! {
            _ = self.wake.notified() => {}
            _ = tokio::time::sleep(self.next_poll) => {}
        }
        self.pending = true;
        Ok(())
    }

    async fn write(&mut self, take: &mut Take, tx: &mut OutboxTx) -> Result<Written, CaptureError> {
        let (taken, changes) =
            table::take(tx.transaction(), &self.router, self.batch_size, i64::MAX).await?;
        for change in &changes {
            tx.route(&self.router, change);
        }
        take.taken = taken;
        Ok(Written {
            consumed: taken > 0,
            ..Written::default()
        })
    }

    async fn committed(&mut self, take: Take) -> Result<Progress, CaptureError> {
        if take.taken > 0 {
            // Busy: read again at once; writers need not notify.
            if !self.awake {
                set_sleeping(&self.pool, false).await?;
                self.awake = true;
            }
            self.pending = true;
        } else if self.awake {
            set_sleeping(&self.pool, true).await?;
            self.awake = false;
            // A writer that read "awake" just before may commit after the
            // last read: wait for those writers, then read once more.
            self.next_poll = if writers_settled(&self.pool).await? {
                self.poll_interval
            } else {
                UNSETTLED_POLL
            };
            self.pending = true;
        } else {
            self.pending = false;
        }
        Ok(Progress::Continue)
    }

    fn stopping(&mut self) {
        // Rows committed up to now (the closing connections' presence
        // among them) are taken once more.
        self.pending = true;
    }

    fn close(&mut self) {
        self.listener = None;
    }
}

/// Polling interval while writers that may not have notified are still
/// running (a long transaction); normally the relay waits for a NOTIFY.
const UNSETTLED_POLL: Duration = Duration::from_millis(20);

/// How long the relay waits for in-flight writers before it sleeps.
const SETTLE_PATIENCE: Duration = Duration::from_millis(100);

/// Tells writers whether to send a NOTIFY (only while the relay sleeps).
async fn set_sleeping(pool: &Pool, sleeping: bool) -> Result<(), DbError> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(
            "INSERT INTO realtime.wakeup (id, sleeping) VALUES (true, $1)
             ON CONFLICT (id) DO UPDATE SET sleeping = excluded.sleeping",
        )
        .await?;
    client.execute(&statement, &[&sleeping]).await?;
    Ok(())
}

/// Waits until every transaction running when the relay went to sleep has
/// ended; false when some are still running after [`SETTLE_PATIENCE`].
async fn writers_settled(pool: &Pool) -> Result<bool, DbError> {
    let client = pool.get().await?;
    let snapshot: String = client
        .query_one("SELECT pg_current_snapshot()::text", &[])
        .await?
        .get(0);
    let running = client
        .prepare_cached(
            "SELECT count(*) FROM pg_snapshot_xip($1::text::pg_snapshot) AS x
             WHERE x IN (SELECT pg_snapshot_xip(pg_current_snapshot()))",
        )
        .await?;
    let started = tokio::time::Instant::now();
    loop {
        let count: i64 = client.query_one(&running, &[&snapshot]).await?.get(0);
        if count == 0 {
            return Ok(true);
        }
        if started.elapsed() > SETTLE_PATIENCE {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_sql_quotes_names_and_captures_only_routed_columns() {
        let router = Router::builtin().unwrap();
        let users = router.tables().find(|t| t.name == "users").unwrap();
        let sql = function_sql(users);
        assert!(sql.contains("'username', r -> 'username'"));
        assert!(!sql.contains("email") && !sql.contains("password_hash"));
        assert!(sql.contains("realtime.\"capture public.users\""));
    }
}
