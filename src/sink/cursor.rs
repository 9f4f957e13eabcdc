//! A sink's durable cursor: the last seq it is done with, in
//! `realtime.sink_cursors`, read and moved on the sinks' own session.

use std::sync::Arc;

use time::OffsetDateTime;
use tokio_postgres::{Client, Statement};

use crate::db::DbError;
use crate::event::StoredEvent;
use crate::fanout::Hub;
use crate::shutdown::Shutdown;

/// Where one sink stands in the outbox.
pub struct Cursor {
    /// `webhook:<name>`, `push`.
    sink: String,
    /// Every event up to it is done.
    seq: i64,
    /// The outbox read, prepared once per session.
    read: Statement,
}

/// Creates the cursors of sinks seen for the first time at the outbox's
/// head: a new sink gets what is stored from now on, not history. Run at
/// startup, before anything is captured, so that nothing stored after
/// `Relay::start` returns is skipped.
pub async fn register(client: &deadpool_postgres::Client, sinks: &[String]) -> Result<(), DbError> {
    client
        .execute(
            "INSERT INTO realtime.sink_cursors (sink, seq)
             SELECT name, s.head FROM unnest($1::text[]) AS name, realtime.state s
             ON CONFLICT (sink) DO NOTHING",
            &[&sinks],
        )
        .await?;
    Ok(())
}

impl Cursor {
    /// The sink's cursor; a sink seen for the first time starts at the
    /// outbox's head (it gets what is stored from now on, not history).
    pub async fn open(client: &Client, sink: &str) -> Result<Self, DbError> {
        let row = client
            .query_one(
                "WITH new AS (
                    INSERT INTO realtime.sink_cursors (sink, seq)
                    SELECT $1, head FROM realtime.state
                    ON CONFLICT (sink) DO NOTHING RETURNING seq
                 )
                 SELECT seq FROM new
                 UNION ALL SELECT seq FROM realtime.sink_cursors WHERE sink = $1",
                &[&sink],
            )
            .await?;
        let read = client.prepare(crate::outbox::EVENTS_AFTER).await?;
        Ok(Self {
            sink: sink.to_string(),
            seq: row.get(0),
            read,
        })
    }

    /// The last seq done.
    pub fn seq(&self) -> i64 {
        self.seq
    }

    /// The next events after the cursor, at most `limit`.
    pub async fn next(
        &mut self,
        client: &Client,
        hub: &Hub,
        limit: i64,
    ) -> Result<Vec<Arc<StoredEvent>>, DbError> {
        self.read_after(client, hub, self.seq, limit).await
    }

    /// The next events after `after` (at or past the cursor: a sink with
    /// deliveries in flight reads ahead of it), at most `limit`. Events
    /// that retention deleted before the sink got to them are skipped,
    /// with a warning and `rowcast_sink_skipped_total`.
    pub async fn read_after(
        &mut self,
        client: &Client,
        hub: &Hub,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Arc<StoredEvent>>, DbError> {
        let rows = client.query(&self.read, &[&after, &limit]).await?;
        let events: Vec<_> = rows.iter().map(crate::outbox::stored).collect();
        if events.first().is_some_and(|e| e.seq > after + 1) {
            self.skip_retained(client, after).await?;
        }
        let lag_events = (*hub.durable_head().borrow() - self.seq).max(0);
        let lag_seconds = events.first().map_or(0.0, |e| {
            (OffsetDateTime::now_utc() - e.at).as_seconds_f64().max(0.0)
        });
        let sink = self.sink.clone();
        metrics::gauge!("rowcast_sink_lag_events", "sink" => sink.clone()).set(lag_events as f64);
        metrics::gauge!("rowcast_sink_lag_seconds", "sink" => sink).set(lag_seconds);
        Ok(events)
    }

    /// Moves the cursor to `seq`, durably.
    pub async fn advance(&mut self, client: &Client, seq: i64) -> Result<(), DbError> {
        if seq <= self.seq {
            return Ok(());
        }
        client
            .execute(
                "UPDATE realtime.sink_cursors SET seq = $2, updated_at = now() WHERE sink = $1",
                &[&self.sink, &seq],
            )
            .await?;
        self.seq = seq;
        Ok(())
    }

    /// Waits until the outbox may hold an event after the cursor: its
    /// durable head moved past it, [`POLL_EVERY`](super::POLL_EVERY)
    /// passed, or `stop` fired (then true).
    pub async fn wait(&self, hub: &Hub, stop: &Shutdown) -> bool {
        let mut head = hub.durable_head();
        let seq = self.seq;
        tokio::select! {
            _ = head.wait_for(|h| *h > seq) => false,
            _ = tokio::time::sleep(super::POLL_EVERY) => false,
            _ = stop.wait() => true,
        }
    }

    /// Counts and logs what retention deleted between `after` and the
    /// oldest retained event.
    async fn skip_retained(&mut self, client: &Client, after: i64) -> Result<(), DbError> {
        let oldest: i64 = client
            .query_one("SELECT oldest FROM realtime.state", &[])
            .await?
            .get(0);
        let lost = oldest - 1 - after;
        if lost > 0 {
            tracing::warn!(sink = %self.sink, after, lost,
                "retention deleted events this sink had not delivered: they are skipped \
                 (raise ROWCAST_RETENTION_AGE and ROWCAST_RETENTION_EVENTS, or fix the receiver sooner)");
            metrics::counter!("rowcast_sink_skipped_total", "sink" => self.sink.clone())
                .increment(lost as u64);
        }
        Ok(())
    }
}
