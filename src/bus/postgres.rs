//! The bus over Postgres: an ephemeral frame goes out as a NOTIFY on
//! `realtime_emit` (batched, from a bounded queue), and every node listens
//! on a session of its own and hands the frames of other nodes to its
//! members. At most once: a full queue, a frame larger than a notification
//! can carry, or a node that is reconnecting loses the frame (typing
//! indicators and messages are not replayed).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use deadpool_postgres::Pool;
use tokio::sync::mpsc;

use super::{next_batch, node_name, Envelope, Received};
use crate::db::{Backoff, DatabaseConfig, DbError, Session};
use crate::fanout::{Bus, Hub};
use crate::shutdown::Shutdown;

/// The notification channel.
pub const EMIT_CHANNEL: &str = "realtime_emit";

/// Frames waiting to be sent, at most.
const QUEUE: usize = 4096;

/// Frames sent in one statement, at most.
const BATCH: usize = 64;

/// Largest notification payload Postgres takes, with a margin.
const MAX_PAYLOAD: usize = 7900;

/// This node's end of the Postgres bus.
pub struct PgBus {
    /// This node's name on the bus.
    node: String,
    /// Payloads for the sender task.
    outbound: mpsc::Sender<String>,
}

impl PgBus {
    /// Starts sending and listening; frames of other nodes go to `hub`.
    pub fn start(
        database: DatabaseConfig,
        pool: Pool,
        hub: Arc<Hub>,
        shutdown: Shutdown,
    ) -> Arc<Self> {
        let node = node_name();
        let (outbound, queue) = mpsc::channel(QUEUE);
        tokio::spawn(send(pool, queue, shutdown.clone()));
        tokio::spawn(listen(database, node.clone(), hub, shutdown));
        Arc::new(Self { node, outbound })
    }
}

impl Bus for PgBus {
    fn emit(&self, room: &str, frame: &Utf8Bytes) {
        let payload = Envelope::encode(&self.node, room, frame.as_str());
        if payload.len() > MAX_PAYLOAD {
            tracing::debug!(%room, bytes = payload.len(), "ephemeral frame too large for other nodes");
            return;
        }
        if self.outbound.try_send(payload).is_err() {
            metrics::counter!("rowcast_bus_dropped_total").increment(1);
        }
    }
}

/// Sends queued frames, a batch per statement.
async fn send(pool: Pool, mut queue: mpsc::Receiver<String>, shutdown: Shutdown) {
    let mut batch = Vec::with_capacity(BATCH);
    while next_batch(&mut queue, &mut batch, BATCH, &shutdown).await {
        let sent = async {
            let client = pool.get().await?;
            client
                .execute(
                    "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p",
                    &[&EMIT_CHANNEL, &batch],
                )
                .await
                .map_err(DbError::from)
        }
        .await;
        if let Err(error) = sent {
            metrics::counter!("rowcast_bus_dropped_total").increment(batch.len() as u64);
            tracing::debug!(%error, "ephemeral frames not sent to other nodes");
        }
    }
}

/// Listens until shutdown, reconnecting with backoff.
async fn listen(database: DatabaseConfig, node: String, hub: Arc<Hub>, shutdown: Shutdown) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    loop {
        let (me, hub_for_frames) = (node.clone(), hub.clone());
        let session = Session::listen(
            &database,
            "rowcast bus",
            &[EMIT_CHANNEL],
            move |_, payload| {
                let Ok(received) = serde_json::from_str::<Received>(payload) else {
                    return;
                };
                if received.node != me {
                    hub_for_frames.emit_from_peer(&received.room, Utf8Bytes::from(received.frame));
                }
            },
        )
        .await;
        match session {
            Ok(mut session) => {
                backoff.reset();
                tokio::select! {
                    _ = session.closed() => tracing::warn!("the bus session closed; reconnecting"),
                    _ = shutdown.wait() => return,
                }
            }
            Err(error) => tracing::warn!(%error, "the bus could not listen; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = shutdown.wait() => return,
        }
    }
}
