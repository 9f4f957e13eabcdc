//! Fanout: stored events to the members of their rooms.
//!
//! The [`Hub`] is the outbox's [`Subscriber`]: it receives each committed
//! event once, in seq order, serializes it once per room, and hands the same
//! bytes to every member's bounded send queue. It never waits on a member: a
//! full queue marks that connection too slow (closed with 4008; the client
//! resumes with `since`). Rooms live in shards, each behind a lock that is
//! held only to look members up or change them, never across an await.
//!
//! Observers (`rowcast dev`, tests) can also tap the whole stream.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::broadcast;

use crate::event::{AccessChange, StoredEvent};
use crate::outbox::Subscriber;
use crate::protocol::frame;

/// The protocol's close code after which a client reconnects and resumes
/// with `since` (1001).
const RESUME_CLOSE: u16 = 1001;

/// Room shards; a power of two.
const SHARDS: usize = 64;

/// A connection's identity within this node.
pub type ConnId = u64;

/// A stored event's frame for one room, built once and shared by all the
/// room's members.
#[derive(Debug)]
pub struct RoomFrame {
    /// The room (shared name).
    pub room: Arc<str>,
    /// The event's seq, so the writer can drop what replay already sent.
    pub seq: i64,
    /// The event's name (for transports that name each message: SSE,
    /// Socket.IO).
    pub event: Arc<str>,
    /// The frame text.
    pub frame: Utf8Bytes,
}

/// What fanout hands a member: a stored event's frame for one room, or any
/// other frame (an ephemeral event), shared by every member it goes to.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// A stored event of a room.
    Event(Arc<RoomFrame>),
    /// An ephemeral frame.
    Frame(Arc<Utf8Bytes>),
}

/// A member's send queue as fanout sees it.
///
/// Contract: `offer` never waits. It queues the delivery, or (the queue
/// being full) starts closing the member as too slow and returns false;
/// the member then resyncs from the outbox with `since`. Fanout calls it
/// under a shard's read lock, in seq order per room.
pub trait Mailbox: Send + Sync + std::fmt::Debug + 'static {
    /// Queues a delivery without waiting; whether it was queued.
    fn offer(&self, delivery: Delivery) -> bool;
    /// Asks the member's connection to close with a protocol close code.
    fn close(&self, code: u16);
}

/// The other relay nodes, for ephemeral frames (stored events reach every
/// node through the outbox).
///
/// Contract: `emit` never waits, and delivers at most once: a frame that
/// cannot be sent is dropped, since ephemeral events are never replayed.
/// Frames received from other nodes come back through
/// [`Hub::emit_from_peer`], never to the node that sent them.
pub trait Bus: Send + Sync + 'static {
    /// Sends an ephemeral frame for `room` to the other nodes.
    fn emit(&self, room: &str, frame: &Utf8Bytes);
}

/// A member of a room: one connection's mailbox.
#[derive(Clone, Debug)]
pub struct Member {
    /// Its connection.
    pub conn: ConnId,
    /// Where its deliveries go.
    pub mailbox: Arc<dyn Mailbox>,
}

impl Member {
    /// Queues a delivery without waiting; whether it was queued.
    pub fn offer(&self, delivery: Delivery) -> bool {
        self.mailbox.offer(delivery)
    }
}

/// One shard of rooms.
type Shard = RwLock<HashMap<Arc<str>, Room>>;

/// The members of one room.
struct Room {
    /// Its shared name.
    name: Option<Arc<str>>,
    /// Its members (a member's position changes when another leaves).
    members: Vec<Member>,
    /// Where each member is in `members`, once the room is large (a small
    /// room is searched instead), so that joining and leaving `broadcast`
    /// with every connection in it costs O(1), not O(members).
    index: Option<HashMap<ConnId, usize>>,
}

/// Members a room holds before it keeps an index of them.
const INDEXED_FROM: usize = 32;

impl Room {
    fn position(&self, conn: ConnId) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(&conn).copied(),
            None => self.members.iter().position(|m| m.conn == conn),
        }
    }

    fn insert(&mut self, member: Member) {
        if let Some(at) = self.position(member.conn) {
            self.members[at] = member;
            return;
        }
        if let Some(index) = &mut self.index {
            index.insert(member.conn, self.members.len());
        }
        self.members.push(member);
        if self.index.is_none() && self.members.len() > INDEXED_FROM {
            let index = self
                .members
                .iter()
                .enumerate()
                .map(|(i, m)| (m.conn, i))
                .collect();
            self.index = Some(index);
        }
    }

    fn remove(&mut self, conn: ConnId) {
        let Some(at) = self.position(conn) else {
            return;
        };
        self.members.swap_remove(at);
        if let Some(index) = &mut self.index {
            index.remove(&conn);
            if let Some(moved) = self.members.get(at) {
                index.insert(moved.conn, at);
            }
        }
    }
}

/// Rooms, their members, open connections, and the stream of stored events.
pub struct Hub {
    /// Rooms by name, sharded.
    shards: Box<[Shard]>,
    /// Hasher for shard selection.
    hasher: std::collections::hash_map::RandomState,
    /// The highest seq handed to fanout. Set before an event is fanned out,
    /// so a joiner that reads it after subscribing misses nothing.
    head: AtomicI64,
    /// The highest seq known to be in the outbox. In logical capture an
    /// event is fanned out when its change is durable in the WAL, before
    /// its outbox row commits, so this can trail `head`; a replay up to
    /// `head` first waits for it ([`Hub::stored_through`]).
    durable: tokio::sync::watch::Sender<i64>,
    /// Open connections, to close them all on shutdown.
    connections: Mutex<HashMap<ConnId, Arc<dyn Mailbox>>>,
    /// Next connection id.
    next_conn: AtomicU64,
    /// Rooms with at least one member.
    rooms: AtomicUsize,
    /// Every stored event, for observers; lagging observers lose events.
    tap: broadcast::Sender<Arc<StoredEvent>>,
    /// Changes that may have taken rights away, for the gateway's
    /// re-check; a lagging receiver re-checks everything instead.
    access: broadcast::Sender<Arc<AccessChange>>,
    /// The other nodes, once connected.
    bus: std::sync::OnceLock<Arc<dyn Bus>>,
}

impl Hub {
    /// An empty hub starting after `head`.
    pub fn new(head: i64) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: Default::default(),
            head: AtomicI64::new(head),
            durable: tokio::sync::watch::channel(head).0,
            connections: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            rooms: AtomicUsize::new(0),
            tap: broadcast::channel(4096).0,
            access: broadcast::channel(1024).0,
            bus: std::sync::OnceLock::new(),
        }
    }

    /// The highest seq handed to fanout.
    pub fn head(&self) -> i64 {
        self.head.load(Ordering::Acquire)
    }

    /// Moves the head forward (when the outbox opens on existing events).
    pub fn advance_head(&self, seq: i64) {
        self.head.fetch_max(seq, Ordering::AcqRel);
        self.durable.send_if_modified(|d| raise(d, seq));
    }

    /// The highest seq known to be in the outbox, as it moves: the wake-up
    /// of readers that follow the outbox table (the sinks).
    pub fn durable_head(&self) -> tokio::sync::watch::Receiver<i64> {
        self.durable.subscribe()
    }

    /// Waits (at most `deadline`) until the outbox holds every event up to
    /// `seq`; whether it does.
    pub async fn stored_through(&self, seq: i64, deadline: std::time::Duration) -> bool {
        let mut durable = self.durable.subscribe();
        tokio::time::timeout(deadline, durable.wait_for(|d| *d >= seq))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Rooms with at least one member.
    pub fn room_count(&self) -> usize {
        self.rooms.load(Ordering::Relaxed)
    }

    /// Every stored event from now on (bounded; a slow observer skips ahead).
    pub fn tap(&self) -> broadcast::Receiver<Arc<StoredEvent>> {
        self.tap.subscribe()
    }

    /// Changes that may have taken rights away, from now on (bounded: a
    /// receiver that lags learns it and must re-check everything).
    pub fn access_changes(&self) -> broadcast::Receiver<Arc<AccessChange>> {
        self.access.subscribe()
    }

    /// The connections in a room.
    pub fn members(&self, room: &str) -> Vec<ConnId> {
        read(self.shard(room))
            .get(room)
            .map(|entry| entry.members.iter().map(|m| m.conn).collect())
            .unwrap_or_default()
    }

    fn shard(&self, room: &str) -> &Shard {
        &self.shards[self.hasher.hash_one(room) as usize & (SHARDS - 1)]
    }

    /// A new connection id.
    pub fn next_conn(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers a connection's mailbox under its id.
    pub fn connect(&self, conn: ConnId, mailbox: Arc<dyn Mailbox>) {
        let mut connections = lock(&self.connections);
        connections.insert(conn, mailbox);
        metrics::gauge!("rowcast_connections").set(connections.len() as f64);
    }

    /// Forgets a connection (its rooms must have been left).
    pub fn disconnect(&self, conn: ConnId) {
        let mut connections = lock(&self.connections);
        connections.remove(&conn);
        metrics::gauge!("rowcast_connections").set(connections.len() as f64);
    }

    /// Open connections.
    pub fn connection_count(&self) -> usize {
        lock(&self.connections).len()
    }

    /// Asks every connection to close with `code`.
    pub fn close_all(&self, code: u16) {
        for mailbox in lock(&self.connections).values() {
            mailbox.close(code);
        }
    }

    /// Adds a member to a room; returns the room's shared name.
    pub fn join(&self, room: &str, member: Member) -> Arc<str> {
        let mut shard = write(self.shard(room));
        let name: Arc<str> = match shard.get_key_value(room) {
            Some((name, _)) => name.clone(),
            None => Arc::from(room),
        };
        let entry = shard.entry(name.clone()).or_insert_with(|| {
            let rooms = self.rooms.fetch_add(1, Ordering::Relaxed) + 1;
            metrics::gauge!("rowcast_rooms").set(rooms as f64);
            Room {
                name: Some(name.clone()),
                members: Vec::new(),
                index: None,
            }
        });
        entry.insert(member);
        name
    }

    /// Removes a member from a room.
    pub fn leave(&self, room: &str, conn: ConnId) {
        let mut shard = write(self.shard(room));
        if let Some(entry) = shard.get_mut(room) {
            entry.remove(conn);
            if entry.members.is_empty() {
                shard.remove(room);
                let rooms = self.rooms.fetch_sub(1, Ordering::Relaxed) - 1;
                metrics::gauge!("rowcast_rooms").set(rooms as f64);
            }
        }
    }

    /// Connects the other nodes (once).
    pub fn connect_bus(&self, bus: Arc<dyn Bus>) {
        let _ = self.bus.set(bus);
    }

    /// Sends an ephemeral frame to a room's members except `from`, and to
    /// the other nodes; returns how many members of this node got it.
    pub fn emit(&self, room: &str, frame: Utf8Bytes, from: ConnId) -> usize {
        if let Some(bus) = self.bus.get() {
            bus.emit(room, &frame);
        }
        self.emit_here(room, frame, from)
    }

    /// An ephemeral frame another node sent: to this node's members only.
    pub fn emit_from_peer(&self, room: &str, frame: Utf8Bytes) -> usize {
        self.emit_here(room, frame, 0)
    }

    fn emit_here(&self, room: &str, frame: Utf8Bytes, from: ConnId) -> usize {
        let shard = read(self.shard(room));
        let Some(entry) = shard.get(room) else {
            return 0;
        };
        let frame = Arc::new(frame);
        entry
            .members
            .iter()
            .filter(|m| m.conn != from)
            .filter(|m| m.offer(Delivery::Frame(frame.clone())))
            .count()
    }

    /// Fans one stored event out to its rooms.
    fn fan_out(&self, event: &StoredEvent) {
        let tail = frame::event_tail(event);
        let mut delivered = 0u64;
        for room in &event.rooms {
            let shard = read(self.shard(room));
            let Some(entry) = shard.get(room.as_str()) else {
                continue;
            };
            let (Some(name), false) = (&entry.name, entry.members.is_empty()) else {
                continue;
            };
            let frame = Arc::new(RoomFrame {
                room: name.clone(),
                seq: event.seq,
                event: event.name.clone(),
                frame: frame::event_frame(room, &tail),
            });
            for member in &entry.members {
                if member.offer(Delivery::Event(frame.clone())) {
                    delivered += 1;
                }
            }
        }
        if delivered > 0 {
            metrics::counter!("rowcast_events_delivered_total").increment(delivered);
        }
    }
}

impl Subscriber for Hub {
    fn stored(&self, events: &[Arc<StoredEvent>]) {
        let now = time::OffsetDateTime::now_utc();
        for event in events {
            self.head.fetch_max(event.seq, Ordering::AcqRel);
            if event.is_gap_marker() {
                // Live members missed what the gap took: they reconnect,
                // resume with `since` and are told `gap: true`.
                self.close_all(RESUME_CLOSE);
                continue;
            }
            self.fan_out(event);
            let latency = (now - event.at).as_seconds_f64().max(0.0);
            metrics::histogram!("rowcast_delivery_latency_seconds").record(latency);
            let _ = self.tap.send(event.clone());
        }
    }

    fn access_changed(&self, changes: Vec<AccessChange>) {
        for change in changes {
            let _ = self.access.send(Arc::new(change));
        }
    }

    fn durable(&self, head: i64) {
        self.durable.send_if_modified(|d| raise(d, head));
    }
}

/// Raises `value` to `to`; whether it moved.
fn raise(value: &mut i64, to: i64) -> bool {
    let moved = to > *value;
    if moved {
        *value = to;
    }
    moved
}

/// Locks a mutex, recovering the data if a panic poisoned it (every update
/// under these locks is a single insert or remove).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;
