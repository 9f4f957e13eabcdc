//! The bus between relay nodes. Stored events need none: every node reads
//! them from the outbox, woken by the head each outbox transaction
//! notifies. What the bus must carry is what is never stored: ephemeral
//! frames (`emit`), so that members on every node get them.
//!
//! Two implementations, chosen by `ROWCAST_BUS`: [`postgres`] (the
//! default) needs no infrastructure beyond Postgres; `nats` (the `nats`
//! cargo feature) also carries stored events on a JetStream stream, a fast
//! path beside the outbox (see [`crate::outbox::EventStream`]).

#[cfg(feature = "nats")]
pub mod nats;
pub mod postgres;

use std::sync::Arc;

use deadpool_postgres::Pool;
use serde::{Deserialize, Serialize};

use crate::config::{BusConfig, DatabaseConfig};
use crate::fanout::Hub;
use crate::outbox::EventStream;
use crate::shutdown::Shutdown;

pub use postgres::PgBus;

/// Why the bus could not start.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The NATS server could not be reached, or refused a request.
    #[error("NATS bus: {0}")]
    Nats(String),
    /// `ROWCAST_BUS` names NATS and this build has no NATS bus.
    #[error(
        "ROWCAST_BUS: this build of rowcast has no NATS bus (build it with the `nats` feature)"
    )]
    Unsupported,
}

/// Connects this node to the others through the configured bus (ephemeral
/// frames go to `hub`); a bus that carries stored events returns its
/// [`EventStream`] for the outbox.
pub async fn start(
    config: &BusConfig,
    database: &DatabaseConfig,
    pool: &Pool,
    hub: &Arc<Hub>,
    shutdown: &Shutdown,
) -> Result<Option<EventStream>, BusError> {
    match config {
        BusConfig::Postgres => {
            let bus = PgBus::start(
                database.clone(),
                pool.clone(),
                hub.clone(),
                shutdown.clone(),
            );
            hub.connect_bus(bus);
            Ok(None)
        }
        #[cfg(feature = "nats")]
        BusConfig::Nats(nats) => {
            let (bus, stream) =
                nats::NatsBus::start(nats, database.startup_timeout, hub.clone(), shutdown).await?;
            hub.connect_bus(bus);
            Ok(Some(stream))
        }
        #[cfg(not(feature = "nats"))]
        BusConfig::Nats(_) => Err(BusError::Unsupported),
    }
}

/// Refills `batch` with up to `limit` queued items, waiting for at least
/// one; false once the queue is closed or the relay stops.
async fn next_batch<T>(
    queue: &mut tokio::sync::mpsc::Receiver<T>,
    batch: &mut Vec<T>,
    limit: usize,
    shutdown: &Shutdown,
) -> bool {
    batch.clear();
    tokio::select! {
        received = queue.recv_many(batch, limit) => received > 0,
        _ = shutdown.wait() => false,
    }
}

/// This node's name on the bus, so it skips its own frames.
fn node_name() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// One ephemeral frame on the wire (as sent), whatever the bus.
#[derive(Serialize)]
struct Envelope<'a> {
    /// The sending node, so it skips its own frames.
    node: &'a str,
    /// The room.
    room: &'a str,
    /// The protocol frame, as clients get it.
    frame: &'a str,
}

impl<'a> Envelope<'a> {
    /// The wire form of `frame` for `room`, sent by `node`.
    fn encode(node: &'a str, room: &'a str, frame: &'a str) -> String {
        // Three strings always serialise.
        serde_json::to_string(&Envelope { node, room, frame }).unwrap_or_default()
    }
}

/// One ephemeral frame on the wire (as received: frames hold escaped
/// quotes, so the strings are owned).
#[derive(Deserialize)]
struct Received {
    /// The sending node.
    node: String,
    /// The room.
    room: String,
    /// The protocol frame.
    frame: String,
}
