//! Stored events carried by a bus between nodes (the NATS bus), as a fast
//! path beside the outbox: the leader forwards every event it delivers,
//! and every node receives what the leader forwarded. The outbox stays the
//! truth: a received event is delivered only when it follows what was
//! delivered, and any gap before it is read from the table, so a lost,
//! late or repeated message changes nothing but speed.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::{Outbox, Subscriber};
use crate::db::DbError;
use crate::event::StoredEvent;

/// A node's end of a bus that carries stored events.
pub struct EventStream {
    /// Publishes what this node delivers, while it leads (same contract as
    /// a [`Subscriber`]: seq order, no gap, never waits).
    pub forward: Arc<dyn Subscriber>,
    /// Events the leader published, in the order received (bounded: when
    /// full, the bus drops and the outbox fills the gap).
    pub received: mpsc::Receiver<Arc<StoredEvent>>,
}

impl Outbox {
    /// Forwards every delivered event to `forward` from now on (the
    /// leader), or stops forwarding (`None`).
    pub fn forward_to(&mut self, forward: Option<Arc<dyn Subscriber>>) {
        self.forward = forward;
    }

    /// Delivers events received from the bus: those already delivered are
    /// skipped, and a gap before them is read from the table first.
    pub async fn receive(&mut self, events: Vec<Arc<StoredEvent>>) -> Result<(), DbError> {
        let fresh = self.deliver_events(events).await?;
        metrics::counter!("rowcast_events_streamed_total").increment(fresh as u64);
        Ok(())
    }
}
