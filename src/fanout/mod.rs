//! Fanout: stored events to the members of their rooms.
//!
//! The [`Hub`] is the outbox's [`Subscriber`]: it receives each committed
//! event once, in seq order, and hands it to every member of its rooms.
//! Observers (`rowcast dev`, tests) can also tap the whole stream.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::outbox::{StoredEvent, Subscriber};

/// Rooms, their members, and the stream of stored events.
pub struct Hub {
    /// Last seq delivered.
    head: AtomicI64,
    /// Every stored event, for observers; lagging observers lose events.
    tap: broadcast::Sender<Arc<StoredEvent>>,
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Self {
        Self {
            head: AtomicI64::new(0),
            tap: broadcast::channel(4096).0,
        }
    }

    /// Last seq delivered.
    pub fn head(&self) -> i64 {
        self.head.load(Ordering::Acquire)
    }

    /// Every stored event from now on (bounded; a slow observer skips ahead).
    pub fn tap(&self) -> broadcast::Receiver<Arc<StoredEvent>> {
        self.tap.subscribe()
    }
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Subscriber for Hub {
    fn stored(&self, events: &[Arc<StoredEvent>]) {
        for event in events {
            let _ = self.tap.send(event.clone());
        }
        if let Some(last) = events.last() {
            self.head.store(last.seq, Ordering::Release);
        }
    }
}
