//! Retention: the outbox keeps the newest events, by age and by count, and
//! records the oldest seq it still has so replay can report a gap.

use deadpool_postgres::Pool;

use crate::config::Retention;
use crate::db::DbError;

/// Most events deleted per transaction, so retention never holds the
/// writer's lock for long.
const CHUNK: i64 = 10_000;

/// Deletes events outside the retention window; returns how many.
pub async fn retain(pool: &Pool, retention: &Retention) -> Result<u64, DbError> {
    let client = pool.get().await?;
    let max_age = retention.max_age.as_secs_f64();
    let keep = i64::try_from(retention.max_events).unwrap_or(i64::MAX);
    let row = client
        .query_one(
            "SELECT s.head, s.oldest,
                    coalesce((SELECT o.seq FROM realtime.outbox o
                              WHERE o.seq >= s.oldest
                                AND o.committed_at >= now() - make_interval(secs => $1)
                              ORDER BY o.seq LIMIT 1), s.head + 1)
             FROM realtime.state s",
            &[&max_age],
        )
        .await?;
    let (head, mut oldest, young): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    let cut = young.max(head.saturating_sub(keep) + 1).min(head + 1);
    let mut deleted = 0;
    while oldest < cut {
        let upto = cut.min(oldest + CHUNK);
        client
            .execute(
                "WITH gone AS (
                    DELETE FROM realtime.outbox WHERE seq >= $1 AND seq < $2 RETURNING seq
                 ), rooms AS (
                    DELETE FROM realtime.outbox_rooms WHERE seq >= $1 AND seq < $2
                 )
                 UPDATE realtime.state SET oldest = greatest(oldest, $2)",
                &[&oldest, &upto],
            )
            .await?;
        deleted += u64::try_from(upto - oldest).unwrap_or(0);
        oldest = upto;
    }
    if deleted > 0 {
        tracing::debug!(deleted, oldest, "retention removed old events");
    }
    Ok(deleted)
}
