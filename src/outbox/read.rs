//! Reading stored events back: a room's history for replay and the HTTP
//! API, and a seq range for catching the fanout up after a reconnect.

use std::sync::Arc;

use tokio_postgres::Row;

use crate::db::DbError;
use crate::event::{Event, StoredEvent};

/// One page of a room's history.
#[derive(Debug, Clone)]
pub struct RoomPage {
    /// Events of the room with `after < seq <= until`, in seq order.
    pub events: Vec<Arc<StoredEvent>>,
    /// The stored head when the page was read.
    pub head: i64,
    /// Whether the reader missed something and must reload its state:
    /// events after `after` were already deleted by retention, or `after`
    /// is older than a gap marker (changes no one will ever store).
    pub gap: bool,
    /// Whether the page was cut (by count or by bytes) before `until`:
    /// read on after its last event.
    pub more: bool,
}

/// Most bytes of `data` and `old` in one page (at least one event is
/// always returned, however large).
pub const MAX_PAGE_BYTES: i64 = 1024 * 1024;

/// Events after a seq, in all rooms and in seq order, for a reader with a
/// session of its own (`$1`: after, `$2`: most rows); [`stored`] reads
/// its rows.
pub const EVENTS_AFTER: &str =
    "SELECT seq, event, rooms, data::text, old::text, count, committed_at
     FROM realtime.outbox WHERE seq > $1 ORDER BY seq LIMIT $2";

/// A stored event from a row of [`EVENTS_AFTER`] (or of the same columns).
pub fn stored(row: &Row) -> Arc<StoredEvent> {
    Arc::new(StoredEvent {
        seq: row.get(0),
        event: Event {
            name: row.get::<_, &str>(1).into(),
            rooms: row.get(2),
            data: row.get(3),
            old: row.get(4),
            count: row.get(5),
            at: row.get(6),
            coalesce: None,
        },
    })
}

/// Whether a reader that has everything up to `after` missed something:
/// retention deleted events after it (the oldest retained is past
/// `after + 1`), or the newest gap marker (`gap_seq`, 0 for none) came
/// after it.
fn is_gap(after: i64, oldest: i64, gap_seq: i64) -> bool {
    after.saturating_add(1) < oldest || after < gap_seq
}

/// Events with `after < seq <= until` (all rooms), at most `limit`.
pub(super) async fn range(
    client: &deadpool_postgres::Client,
    after: i64,
    until: i64,
    limit: i64,
) -> Result<Vec<Arc<StoredEvent>>, DbError> {
    let statement = client
        .prepare_cached(
            "SELECT seq, event, rooms, data::text, old::text, count, committed_at
             FROM realtime.outbox WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3",
        )
        .await?;
    let rows = client.query(&statement, &[&after, &until, &limit]).await?;
    Ok(rows.iter().map(stored).collect())
}

/// Which events of a room a page holds: `after < seq <= until` (`until`:
/// `None` for the current head), at most `limit` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub after: i64,
    pub until: Option<i64>,
    pub limit: i64,
}

impl Span {
    /// At most `limit` events after `after`, up to `until`.
    pub fn until(after: i64, until: i64, limit: i64) -> Self {
        Self {
            after,
            until: Some(until),
            limit,
        }
    }

    /// At most `limit` events after `after`, up to the head.
    pub fn to_head(after: i64, limit: i64) -> Self {
        Self {
            after,
            until: None,
            limit,
        }
    }
}

/// One page of a room's events in `span`, and whether events after
/// `span.after` are gone. Each event's `rooms` is just this room: replay and
/// history frames need no more.
///
/// The page and the `oldest` it is judged against come from one statement,
/// so from one snapshot: retention committing in between cannot remove
/// events from the page without the page saying `gap`. A replay checks
/// every page, not only the first. `realtime.room_page` pins the plan, so
/// every page costs the same.
pub async fn room_events(
    client: &deadpool_postgres::Client,
    room: &str,
    span: Span,
) -> Result<RoomPage, DbError> {
    let Span {
        after,
        until,
        limit,
    } = span;
    let statement = client
        .prepare_cached(
            "SELECT s.head, s.oldest, s.gap_seq, p.seq, p.event, p.data, p.old, p.count, p.committed_at, p.read
             FROM realtime.state s
             LEFT JOIN LATERAL (
                 SELECT q.*, count(*) OVER () AS read,
                        sum(octet_length(q.data) + coalesce(octet_length(q.old), 0))
                            OVER (ORDER BY q.seq) AS bytes,
                        octet_length(q.data) + coalesce(octet_length(q.old), 0) AS own
                 FROM realtime.room_page($1, $2, least(coalesce($3, s.head), s.head), $4) q
             ) p ON p.bytes - p.own < $5
             ORDER BY p.seq",
        )
        .await?;
    let rows = client
        .query(
            &statement,
            &[&room, &after, &until, &limit, &MAX_PAGE_BYTES],
        )
        .await?;
    let Some(first) = rows.first() else {
        return Err(DbError::Retry("realtime.state has no row".into()));
    };
    let (head, oldest, gap_seq): (i64, i64, i64) = (first.get(0), first.get(1), first.get(2));
    let events: Vec<Arc<StoredEvent>> = rows
        .iter()
        .filter(|row| row.get::<_, Option<i64>>(3).is_some())
        .map(|row| {
            Arc::new(StoredEvent {
                seq: row.get(3),
                event: Event {
                    name: row.get::<_, &str>(4).into(),
                    rooms: vec![room.to_string()],
                    data: row.get(5),
                    old: row.get(6),
                    count: row.get(7),
                    at: row.get(8),
                    coalesce: None,
                },
            })
        })
        .collect();
    let read: i64 = first.get::<_, Option<i64>>(9).unwrap_or(0);
    Ok(RoomPage {
        more: read == limit || (events.len() as i64) < read,
        events,
        head,
        gap: is_gap(after, oldest, gap_seq),
    })
}

#[cfg(test)]
mod tests {
    use super::is_gap;

    #[test]
    fn a_resume_from_before_retention_or_a_gap_marker_is_a_gap() {
        // Nothing deleted, no marker.
        assert!(!is_gap(0, 1, 0));
        assert!(!is_gap(41, 42, 0));
        // Retention deleted seq 42.
        assert!(is_gap(41, 43, 0));
        // A marker at seq 50: everything before it missed what it stands for.
        assert!(is_gap(49, 1, 50));
        assert!(is_gap(0, 1, 50));
        // A reader that saw the marker's seq, or anything after, did not.
        assert!(!is_gap(50, 1, 50));
        assert!(!is_gap(60, 1, 50));
    }
}
