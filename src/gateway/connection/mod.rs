//! One client connection: its [`ConnReader`] (reads frames, answers
//! requests), its [`ConnWriter`] (alone writes to the socket) and the
//! bounded send queue between them, which is also the connection's
//! [`Mailbox`] in the fanout. Both halves are generic over the socket's
//! `Stream`/`Sink`, so they are tested with channels.

pub mod close;
pub mod reader;
pub mod writer;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::{mpsc, Notify};

use crate::fanout::{ConnId, Delivery, Hub, Mailbox, Member, RoomFrame};
use crate::gateway::auth::Claims;

pub use reader::{Authorize, ConnReader, Ended, ReaderConfig};

#[cfg(test)]
pub use writer::MemoryHistory;
pub use writer::{ConnWriter, History, SLOW_CLOSE_GRACE};

/// What goes down a connection's send queue. Every variant is one pointer:
/// every slot of every send queue is as large as the largest variant, and a
/// client that stops reading fills its whole queue.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// A stored event of a room.
    Event(Arc<RoomFrame>),
    /// Any other frame (an ephemeral event, a reply), shared when it goes
    /// to several members.
    Frame(Arc<Utf8Bytes>),
    /// The reader asks the writer to act, in queue order.
    Control(Box<Control>),
}

impl Outgoing {
    /// A frame for one connection.
    pub fn frame(frame: Utf8Bytes) -> Self {
        Self::Frame(Arc::new(frame))
    }
}

impl From<Control> for Outgoing {
    fn from(control: Control) -> Self {
        Self::Control(Box::new(control))
    }
}

impl From<Delivery> for Outgoing {
    fn from(delivery: Delivery) -> Self {
        match delivery {
            Delivery::Event(frame) => Self::Event(frame),
            Delivery::Frame(frame) => Self::Frame(frame),
        }
    }
}

/// Requests from a connection's reader to its writer.
#[derive(Debug, Clone)]
pub enum Control {
    /// A room was joined: hold its live events until `Replay` (or start
    /// delivering at once when `replay` is false).
    Join {
        /// The room.
        room: Arc<str>,
        /// Whether a replay follows.
        replay: bool,
    },
    /// Replay a room's stored events with `after < seq <= until`, then the
    /// held live events that are newer, then send `reply` (its `replayed`
    /// and `gap` fields are filled in by the writer).
    Replay {
        /// The room.
        room: Arc<str>,
        /// Last seq the client has.
        after: i64,
        /// Head when the room was joined.
        until: i64,
        /// The join reply, completed after the replay.
        reply: serde_json::Map<String, serde_json::Value>,
    },
    /// The room was left: drop anything still queued for it.
    Leave(Arc<str>),
    /// The rule refused the member: drop anything still queued for the
    /// room and tell the client (`left`).
    Left(Arc<str>),
}

/// Why a connection must close, shared by its tasks and the hub.
#[derive(Debug, Default)]
pub struct Closer {
    /// The close code (0: open).
    code: AtomicU16,
    /// Wakes the connection's tasks.
    notify: Notify,
}

impl Closer {
    /// Asks the connection to close with `code`; the first code wins.
    pub fn close(&self, code: u16) {
        if self
            .code
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.notify.notify_waiters();
            self.notify.notify_one();
        }
    }

    /// The requested close code, if any.
    pub fn code(&self) -> Option<u16> {
        match self.code.load(Ordering::Acquire) {
            0 => None,
            code => Some(code),
        }
    }

    /// Resolves once a close was requested.
    pub async fn closed(&self) -> u16 {
        loop {
            let notified = self.notify.notified();
            if let Some(code) = self.code() {
                return code;
            }
            notified.await;
        }
    }
}

/// A connection's bounded send queue and how to close it.
#[derive(Debug)]
pub struct ConnQueue {
    /// The connection.
    pub conn: ConnId,
    /// The writer's queue.
    queue: mpsc::Sender<Outgoing>,
    /// Shared with both halves.
    pub closer: Arc<Closer>,
}

impl ConnQueue {
    /// A queue of `capacity` items for connection `conn`, and its
    /// receiving end for the writer.
    pub fn new(conn: ConnId, capacity: usize) -> (Arc<Self>, mpsc::Receiver<Outgoing>) {
        let (queue, rx) = mpsc::channel(capacity);
        let closer = Arc::new(Closer::default());
        (
            Arc::new(Self {
                conn,
                queue,
                closer,
            }),
            rx,
        )
    }

    /// Queues an item without waiting; a full queue closes the connection
    /// with 4008. Returns whether it was queued.
    pub fn offer(&self, item: Outgoing) -> bool {
        match self.queue.try_send(item) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if self.closer.code().is_none() {
                    metrics::counter!("rowcast_queue_overflows_total").increment(1);
                    tracing::debug!(conn = self.conn, "send queue full: closing as too slow");
                }
                self.closer.close(close::TOO_SLOW);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// This connection as a room member.
    pub fn member(self: &Arc<Self>) -> Member {
        Member {
            conn: self.conn,
            mailbox: self.clone(),
        }
    }
}

/// What the gateway knows of an open connection beyond its queue: who it
/// is and which rooms it joined, so that its rights can be checked again
/// while it stays connected. The reader changes it; the access re-check
/// reads it and removes rooms the rule now refuses.
#[derive(Debug)]
pub struct ConnState {
    /// The send queue.
    pub queue: Arc<ConnQueue>,
    /// The claims of the current token.
    claims: Mutex<Claims>,
    /// Joined rooms (besides `broadcast`).
    rooms: Mutex<HashSet<Arc<str>>>,
}

impl ConnState {
    /// The state of a new connection.
    pub fn new(queue: Arc<ConnQueue>, claims: Claims) -> Arc<Self> {
        Arc::new(Self {
            queue,
            claims: Mutex::new(claims),
            rooms: Mutex::new(HashSet::new()),
        })
    }

    /// The connection's id.
    pub fn conn(&self) -> ConnId {
        self.queue.conn
    }

    /// The claims of the current token.
    pub fn claims(&self) -> Claims {
        lock(&self.claims).clone()
    }

    /// Replaces the claims (after `auth`).
    pub fn set_claims(&self, claims: Claims) {
        *lock(&self.claims) = claims;
    }

    /// The joined rooms.
    pub fn rooms(&self) -> Vec<Arc<str>> {
        lock(&self.rooms).iter().cloned().collect()
    }

    /// The shared name of a joined room.
    pub fn joined(&self, room: &str) -> Option<Arc<str>> {
        lock(&self.rooms).get(room).cloned()
    }

    /// How many rooms are joined.
    pub fn room_count(&self) -> usize {
        lock(&self.rooms).len()
    }

    /// Records a joined room.
    pub fn add_room(&self, room: Arc<str>) {
        lock(&self.rooms).insert(room);
    }

    /// Forgets a joined room; returns its shared name if it was joined.
    pub fn take_room(&self, room: &str) -> Option<Arc<str>> {
        lock(&self.rooms).take(room)
    }

    /// Forgets every joined room.
    pub fn take_rooms(&self) -> Vec<Arc<str>> {
        lock(&self.rooms).drain().collect()
    }

    /// Removes the connection from a room the rule now refuses it: nothing
    /// more of the room is delivered, and the client gets `left`. Returns
    /// whether it was still a member.
    pub fn revoke(&self, hub: &Hub, room: &str) -> bool {
        let Some(name) = self.take_room(room) else {
            return false;
        };
        hub.leave(&name, self.conn());
        self.queue.offer(Outgoing::from(Control::Left(name)));
        metrics::counter!("rowcast_revocations_total").increment(1);
        tracing::debug!(conn = self.conn(), %room, "removed from a room the rule now refuses");
        true
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Mailbox for ConnQueue {
    fn offer(&self, delivery: Delivery) -> bool {
        ConnQueue::offer(self, delivery.into())
    }

    fn close(&self, code: u16) {
        self.closer.close(code);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::Hub;

    #[test]
    fn a_full_queue_closes_its_connection_as_too_slow() {
        let hub = Hub::new(0);
        let (slow, _slow_rx) = ConnQueue::new(1, 2);
        hub.join("room_1", slow.member());
        for seq in 1..=3 {
            let frame = Arc::new(RoomFrame {
                room: Arc::from("room_1"),
                seq,
                event: Arc::from("test-event"),
                frame: Utf8Bytes::from("{}"),
            });
            slow.member().offer(Delivery::Event(frame));
        }
        assert_eq!(slow.closer.code(), Some(close::TOO_SLOW));
    }

    #[test]
    fn a_send_queue_slot_is_two_words() {
        // A stalled client fills its whole queue: each slot must stay small.
        assert!(std::mem::size_of::<Outgoing>() <= 16);
    }
}
