//! Coalescing: events of a route with a `coalesce` window are held in
//! `realtime.pending`, one row per (event, rooms), durably and in the same
//! transaction that consumed their changes. When the window closes, the
//! burst is stored as one event carrying the latest row and a `count`.

use std::collections::HashMap;
use std::time::Duration;

use deadpool_postgres::ClientWrapper;
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::db::DbError;
use crate::event::Event;

/// A deadline `seconds` from now (never in the past).
pub(super) fn deadline_in(seconds: f64) -> Instant {
    Instant::now() + Duration::from_secs_f64(seconds.max(0.0))
}

/// Holds a batch's coalescing events; returns when the earliest new burst
/// is due.
pub(super) async fn hold(tx: &ClientWrapper, held: &[Event]) -> Result<Option<Instant>, DbError> {
    if held.is_empty() {
        return Ok(None);
    }
    let merged = merge(held);
    let mut keys = Vec::with_capacity(merged.len());
    let mut names = Vec::with_capacity(merged.len());
    let mut rooms = Vec::with_capacity(merged.len());
    let mut data = Vec::with_capacity(merged.len());
    let mut old = Vec::with_capacity(merged.len());
    let mut counts = Vec::with_capacity(merged.len());
    let mut at: Vec<OffsetDateTime> = Vec::with_capacity(merged.len());
    let mut windows = Vec::with_capacity(merged.len());
    for (key, (event, count)) in &merged {
        keys.push(key.as_str());
        names.push(&*event.name);
        rooms.push(super::array_literal(&event.rooms));
        data.push(event.data.as_str());
        old.push(event.old.as_deref());
        counts.push(*count);
        at.push(event.at);
        windows.push(event.coalesce.unwrap_or_default().as_secs_f64());
    }
    let statement = tx.prepare_cached(HOLD).await?;
    tx.execute(
        &statement,
        &[&keys, &names, &rooms, &data, &old, &counts, &at, &windows],
    )
    .await?;
    let shortest = windows.iter().copied().fold(f64::INFINITY, f64::min);
    Ok(Some(deadline_in(shortest)))
}

const HOLD: &str = "
INSERT INTO realtime.pending AS p (key, event, rooms, data, old, count, committed_at, flush_at)
SELECT k, e, r::text[], d::json, o::json, c, t, clock_timestamp() + make_interval(secs => w)
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::timestamptz[], $8::float8[])
     AS x(k, e, r, d, o, c, t, w)
ON CONFLICT (key) DO UPDATE
SET data = excluded.data, old = excluded.old, count = p.count + excluded.count,
    committed_at = excluded.committed_at";

/// Merges a batch per key: the latest event wins, counts add up.
fn merge(held: &[Event]) -> Vec<(String, (&Event, i32))> {
    let mut order: Vec<String> = Vec::new();
    let mut by_key: HashMap<String, (&Event, i32)> = HashMap::new();
    for event in held {
        let key = format!("{}\n{}", event.name, event.rooms.join(","));
        match by_key.get_mut(&key) {
            Some(entry) => *entry = (event, entry.1 + event.count.unwrap_or(1)),
            None => {
                order.push(key.clone());
                by_key.insert(key, (event, event.count.unwrap_or(1)));
            }
        }
    }
    order
        .into_iter()
        .filter_map(|k| by_key.remove(&k).map(|v| (k, v)))
        .collect()
}

/// Takes the bursts whose window closed, as events to store, and the next
/// deadline.
pub(super) async fn take_due(tx: &ClientWrapper) -> Result<(Vec<Event>, Option<Instant>), DbError> {
    let statement = tx
        .prepare_cached(
            "DELETE FROM realtime.pending WHERE flush_at <= clock_timestamp()
             RETURNING event, rooms, data::text, old::text, count, committed_at, flush_at",
        )
        .await?;
    let mut rows = tx.query(&statement, &[]).await?;
    rows.sort_by_key(|r| r.get::<_, OffsetDateTime>(6));
    let events = rows
        .iter()
        .map(|row| Event {
            name: row.get::<_, &str>(0).into(),
            rooms: row.get(1),
            data: row.get(2),
            old: row.get(3),
            count: Some(row.get(4)),
            at: row.get(5),
            coalesce: None,
        })
        .collect();
    let next: Option<f64> = tx
        .query_one(
            "SELECT extract(epoch FROM min(flush_at) - clock_timestamp())::float8 FROM realtime.pending",
            &[],
        )
        .await?
        .get(0);
    Ok((events, next.map(deadline_in)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn event(name: &str, room: &str, data: &str) -> Event {
        Event {
            name: Arc::from(name),
            rooms: vec![room.into()],
            data: data.into(),
            old: None,
            at: OffsetDateTime::UNIX_EPOCH,
            count: None,
            coalesce: Some(Duration::from_secs(1)),
        }
    }

    #[test]
    fn bursts_merge_per_event_and_rooms_keeping_the_latest() {
        let held = vec![
            event("content-viewed", "content_1", "{\"id\":1}"),
            event("content-viewed", "content_2", "{\"id\":2}"),
            event("content-viewed", "content_1", "{\"id\":3}"),
        ];
        let merged = merge(&held);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].1 .0.data, "{\"id\":3}");
        assert_eq!(merged[0].1 .1, 2);
        assert_eq!(merged[1].1 .1, 1);
    }
}
