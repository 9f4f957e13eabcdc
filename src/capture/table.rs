//! The capture table, `realtime.capture`: where the capture triggers and
//! `realtime.publish` write, one row per change or published event. Trigger
//! capture takes its rows in the ingest transaction; logical capture sees
//! the same rows as inserts in the stream and consumes them by id. Either
//! way a row is deleted in the transaction that stores its events, so it is
//! stored exactly once.

use std::collections::HashSet;
use std::time::Duration;

use deadpool_postgres::ClientWrapper;
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::db::DbError;
use crate::event::{Captured, Change, Op, Published, RowChange};
use crate::route::Router;

/// Takes the oldest captured rows below an id bound, whatever the order
/// their transactions committed in (`realtime.take_captured` pins the plan,
/// so a batch costs the same however large the backlog grows).
const TAKE: &str = "SELECT id, tbl, op, old, new, captured_at
    FROM realtime.take_captured($1, $2)";

/// Takes (deletes) up to `limit` captured rows with an id below `bound`
/// inside `tx`, in id order; returns how many rows it took and their
/// changes. Rows that cannot be read are logged and dropped rather than
/// blocking the table forever.
pub async fn take(
    tx: &ClientWrapper,
    router: &Router,
    limit: usize,
    bound: i64,
) -> Result<(usize, Vec<Change>), DbError> {
    let statement = tx.prepare_cached(TAKE).await?;
    let mut rows = tx.query(&statement, &[&(limit as i64), &bound]).await?;
    rows.sort_by_key(|r| r.get::<_, i64>(0));
    let changes = rows
        .iter()
        .filter_map(|row| {
            let id: i64 = row.get(0);
            let op: i8 = row.get(2);
            let at: OffsetDateTime = row.get(5);
            let captured = captured(router, row.get(1), op as u8, row.get(3), row.get(4));
            if captured.is_none() {
                tracing::warn!(id, "skipped a capture row that could not be read");
            }
            Some(Change {
                captured: captured?,
                at,
            })
        })
        .collect();
    Ok((rows.len(), changes))
}

/// Reads a capture row's fields: a row change (`I`/`U`/`D`) or a published
/// event (`P`, whose `new` holds `rooms`, `event` and `data`).
pub fn captured(
    router: &Router,
    table: &str,
    op: u8,
    old: Option<Value>,
    new: Option<Value>,
) -> Option<Captured> {
    if op == b'P' {
        return published(new?).map(Captured::Published);
    }
    Some(Captured::Row(RowChange {
        table: router.table_name(table).unwrap_or_else(|| table.into()),
        op: Op::from_code(op)?,
        old: old.and_then(into_object),
        new: new.and_then(into_object),
    }))
}

fn into_object(value: Value) -> Option<Map<String, Value>> {
    match value {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

fn published(new: Value) -> Option<Published> {
    let Value::Object(mut fields) = new else {
        return None;
    };
    let rooms = fields
        .remove("rooms")?
        .as_array()?
        .iter()
        .filter_map(|r| r.as_str().map(str::to_string))
        .collect();
    let event = fields.remove("event")?.as_str()?.to_string();
    let data = fields
        .remove("data")
        .unwrap_or(Value::Object(Default::default()));
    let reply = fields
        .remove("reply")
        .and_then(|r| r.as_str().map(str::to_string));
    Some(Published {
        rooms,
        event,
        data,
        reply,
    })
}

/// Deletes the capture rows with these ids inside `tx`; returns those it
/// deleted (the others were stored already, by an earlier drain).
///
/// A replication stream can announce a commit a moment before the
/// committed rows are visible to other snapshots, so a row that is not
/// found yet is looked for again. Rows at or above `drained_below` were
/// consumed by nobody else and must appear; rows below it may have been
/// drained and are given up on after a short wait.
pub async fn consume(
    tx: &ClientWrapper,
    ids: &[i64],
    drained_below: i64,
) -> Result<HashSet<i64>, DbError> {
    const MAY_BE_DRAINED: Duration = Duration::from_millis(250);
    const MUST_APPEAR: Duration = Duration::from_secs(30);
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let statement = tx
        .prepare_cached("SELECT realtime.consume_captured($1)")
        .await?;
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_micros(200);
    let mut consumed = HashSet::new();
    let mut missing = ids.to_vec();
    loop {
        consumed.extend(
            tx.query(&statement, &[&missing])
                .await?
                .iter()
                .map(|r| r.get::<_, i64>(0)),
        );
        missing.retain(|id| !consumed.contains(id));
        let must_appear = missing.iter().any(|id| *id >= drained_below);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_rows_read_back() {
        let router = Router::builtin().unwrap();
        let value =
            serde_json::json!({"rooms": ["broadcast"], "event": "announcement", "data": {"x": 1}});
        let Some(Captured::Published(p)) =
            captured(&router, "realtime.capture", b'P', None, Some(value))
        else {
            panic!("not read")
        };
        assert_eq!(p.rooms, vec!["broadcast"]);
        assert_eq!(p.event, "announcement");
    }

    #[test]
    fn row_changes_read_back_with_the_shared_table_name() {
        let router = Router::builtin().unwrap();
        let new = serde_json::json!({"id": 1});
        let Some(Captured::Row(row)) = captured(&router, "public.content", b'I', None, Some(new))
        else {
            panic!("not read")
        };
        assert_eq!((&*row.table, row.op), ("public.content", Op::Insert));
        assert!(row.old.is_none());
        assert!(captured(&router, "public.content", b'X', None, None).is_none());
    }
}
