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
use futures_util::StreamExt;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, NoTls, Row};

use super::{queued_requests, store_requests, Capture, CaptureError};
use crate::db::{Backoff, DbError};
use crate::outbox::Outbox;
use crate::route::{Captured, Change, Op, Published, Router, RowChange, TableRoutes};

/// The NOTIFY channel the capture triggers signal.
pub const CHANNEL: &str = "realtime_capture";
/// The name of every capture trigger rowcast installs.
const TRIGGER: &str = "rowcast_capture";

/// Installs (or refreshes) the capture trigger on every routed table and
/// removes it from tables no route names any more, in one transaction.
/// With a `switch_token`, the same transaction writes the capture-mode
/// switch message into WAL, so a replication slot being retired can be read
/// exactly up to the first change the triggers capture.
pub async fn install(
    pool: &Pool,
    router: &Router,
    switch_token: Option<&str>,
) -> Result<(), DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let mut routed = Vec::new();
    for table in router.tables() {
        tx.batch_execute(&function_sql(table)).await?;
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
    if let Some(token) = switch_token {
        let message = super::logical::to_trigger_message(token);
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

/// Quotes an identifier for SQL.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal for SQL.
pub(crate) fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
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
        "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $rowcast$
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

/// Takes the oldest captured rows below an id bound, whatever the order
/// their transactions committed in (`realtime.take_captured` pins the plan,
/// so a batch costs the same however large the backlog grows).
const TAKE: &str = "SELECT id, tbl, op, old, new, captured_at
    FROM realtime.take_captured($1, $2)";

/// Consumes the capture table until shutdown; transient failures are
/// retried with backoff and jitter.
pub(super) async fn run(mut capture: Capture, mut outbox: Outbox) -> Result<(), CaptureError> {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    let wake = Arc::new(Notify::new());
    loop {
        let result = session(&mut capture, &mut outbox, &wake, &mut backoff).await;
        capture.status.set_running(false);
        match result {
            Ok(()) => return Ok(()),
            Err(e) if e.is_transient() => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "trigger capture interrupted");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = capture.shutdown.wait() => return Ok(()),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// One connected stretch: LISTEN, catch up, then drain on every wake-up.
async fn session(
    capture: &mut Capture,
    outbox: &mut Outbox,
    wake: &Arc<Notify>,
    backoff: &mut Backoff,
) -> Result<(), DbError> {
    let listener = Listener::start(&capture.database.pg, wake.clone()).await?;
    outbox.resync().await?;
    capture.status.set_running(true);
    tracing::info!("trigger capture running");
    set_sleeping(&capture.pool, false).await?;
    let mut awake = true;
    loop {
        if drain(capture, outbox).await? > 0 {
            // Busy: read again at once; writers need not notify.
            if !awake {
                set_sleeping(&capture.pool, false).await?;
                awake = true;
            }
            backoff.reset();
            continue;
        }
        let mut poll = capture.config.poll_interval;
        if awake {
            set_sleeping(&capture.pool, true).await?;
            awake = false;
            // A writer that read "awake" just before may commit after the
            // last read: wait for those writers, then read once more.
            if !writers_settled(&capture.pool).await? {
                poll = UNSETTLED_POLL;
            }
            if drain(capture, outbox).await? > 0 {
                set_sleeping(&capture.pool, false).await?;
                awake = true;
                continue;
            }
        }
        backoff.reset();
        if listener.is_closed() {
            return Err(DbError::Retry("the LISTEN connection closed".into()));
        }
        let flush_at = outbox.next_flush();
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(poll) => {}
            _ = sleep_until(flush_at) => {}
            request = capture.requests.recv() => {
                if let Some(first) = request {
                    let batch = queued_requests(first, &mut capture.requests, capture.config.batch_size);
                    store_requests(outbox, &capture.router, batch).await?;
                }
            }
            _ = capture.shutdown.wait() => return Ok(()),
        }
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

/// Sleeps until `deadline`, or forever without one.
pub(crate) async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Stores everything captured so far, one batch per transaction; returns
/// how many captured rows it took.
async fn drain(capture: &Capture, outbox: &mut Outbox) -> Result<usize, DbError> {
    drain_before(capture, outbox, i64::MAX).await
}

/// Stores the captured rows with an id below `bound`; returns how many.
pub(super) async fn drain_before(
    capture: &Capture,
    outbox: &mut Outbox,
    bound: i64,
) -> Result<usize, DbError> {
    let mut total = 0;
    loop {
        let flush = outbox
            .next_flush()
            .is_some_and(|d| d <= tokio::time::Instant::now());
        let taken = drain_batch(capture, outbox, flush, bound).await?;
        total += taken;
        if taken < capture.config.batch_size {
            return Ok(total);
        }
    }
}

async fn drain_batch(
    capture: &Capture,
    outbox: &mut Outbox,
    flush: bool,
    bound: i64,
) -> Result<usize, DbError> {
    let limit = capture.config.batch_size as i64;
    let (taken, committed) = {
        let mut client = outbox.pool().get().await?;
        let mut writer = outbox.begin(&mut client).await?;
        let take = writer.transaction().prepare_cached(TAKE).await?;
        let mut rows = writer.transaction().query(&take, &[&limit, &bound]).await?;
        rows.sort_by_key(|r| r.get::<_, i64>(0));
        for row in &rows {
            if let Some(change) = change_of(row, &capture.router) {
                writer.append(capture.router.route(&change));
            }
        }
        if flush {
            writer.flush_due();
        }
        if rows.is_empty() && !flush {
            return Ok(0);
        }
        (rows.len(), writer.commit(None).await?)
    };
    outbox.deliver(committed).await?;
    Ok(taken)
}

/// Reads one capture row. Rows that cannot be understood are logged and
/// dropped rather than blocking the table forever.
fn change_of(row: &Row, router: &Router) -> Option<Change> {
    let id: i64 = row.get(0);
    let table: &str = row.get(1);
    let op: i8 = row.get(2);
    let old: Option<Value> = row.get(3);
    let new: Option<Value> = row.get(4);
    let at: OffsetDateTime = row.get(5);
    let captured = if op as u8 == b'P' {
        published(new?)
    } else {
        let op = Op::from_code(op as u8)?;
        Some(Captured::Row(RowChange {
            table: router.table_name(table).unwrap_or_else(|| Arc::from(table)),
            op,
            old: old.and_then(into_object),
            new: new.and_then(into_object),
        }))
    };
    if captured.is_none() {
        tracing::warn!(id, "skipped a capture row that could not be read");
    }
    Some(Change {
        captured: captured?,
        at,
    })
}

fn into_object(value: Value) -> Option<serde_json::Map<String, Value>> {
    match value {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

fn published(new: Value) -> Option<Captured> {
    let Value::Object(mut fields) = new else {
        return None;
    };
    let rooms = match fields.remove("rooms")? {
        Value::Array(rooms) => rooms
            .into_iter()
            .filter_map(|r| r.as_str().map(str::to_string))
            .collect(),
        _ => return None,
    };
    let event = fields.remove("event")?.as_str()?.to_string();
    let data = fields
        .remove("data")
        .unwrap_or(Value::Object(Default::default()));
    Some(Captured::Published(Published { rooms, event, data }))
}

/// The dedicated LISTEN connection (a pool cannot deliver notifications).
struct Listener {
    /// Keeps the connection open.
    _client: tokio_postgres::Client,
    /// Forwards notifications to the wake-up; ends when the connection does.
    task: JoinHandle<()>,
}

impl Listener {
    async fn start(pg: &tokio_postgres::Config, wake: Arc<Notify>) -> Result<Self, DbError> {
        let mut pg = pg.clone();
        pg.application_name("rowcast listen");
        let (client, mut connection) = pg.connect(NoTls).await?;
        let task = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(_)) => wake.notify_one(),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            wake.notify_one();
        });
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        Ok(Self {
            _client: client,
            task,
        })
    }

    fn is_closed(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
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
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("o'k"), "'o''k'");
    }

    #[test]
    fn published_rows_read_back() {
        let value =
            serde_json::json!({"rooms": ["broadcast"], "event": "announcement", "data": {"x": 1}});
        let Some(Captured::Published(p)) = published(value) else {
            panic!("not read")
        };
        assert_eq!(p.rooms, vec!["broadcast"]);
        assert_eq!(p.event, "announcement");
    }
}
