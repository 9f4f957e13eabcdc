//! The values that cross the stages. Capture yields a [`Change`] (a
//! [`RowChange`] or a [`Published`] event); routing turns it into
//! [`Event`]s; the outbox stores each as a [`StoredEvent`] under its `seq`;
//! fanout and the gateway render stored events into frames. Every stage
//! speaks these types, so no stage imports another's internals.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

/// A row as captured: column name to JSON value.
pub type Row = Map<String, Value>;

/// The kind of row change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// A new row.
    Insert,
    /// A changed row; both versions are known.
    Update,
    /// A removed row; the old version is known.
    Delete,
}

impl Op {
    /// Reads the capture table's one-letter code.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            b'I' => Some(Self::Insert),
            b'U' => Some(Self::Update),
            b'D' => Some(Self::Delete),
            _ => None,
        }
    }
}

/// One committed change of one row, from either capture mode.
#[derive(Clone, Debug, PartialEq)]
pub struct RowChange {
    /// `schema.table`.
    pub table: Arc<str>,
    /// What happened.
    pub op: Op,
    /// The previous row (updates and deletes).
    pub old: Option<Row>,
    /// The new row (inserts and updates).
    pub new: Option<Row>,
}

/// An event published explicitly (`realtime.publish`, HTTP publish, presence).
#[derive(Clone, Debug, PartialEq)]
pub struct Published {
    /// Rooms it goes to.
    pub rooms: Vec<String>,
    /// Its name.
    pub event: String,
    /// Its payload, a JSON object.
    pub data: Value,
    /// Set by a relay node that handed the event to the leader through
    /// `realtime.capture`: the token it waits on for the event's seq.
    pub reply: Option<String>,
}

/// What capture hands to routing.
#[derive(Clone, Debug, PartialEq)]
pub enum Captured {
    /// A row change, to be matched against the routes.
    Row(RowChange),
    /// An explicit event, stored as given.
    Published(Published),
}

/// A captured change together with when it happened.
#[derive(Clone, Debug)]
pub struct Change {
    /// The change.
    pub captured: Captured,
    /// When it was committed (logical mode) or captured (trigger mode).
    pub at: OffsetDateTime,
}

/// What routing produces and the outbox stores: one named event for one
/// or more rooms, its JSON already rendered so it is serialized only once.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The event name, e.g. `content-created`.
    pub name: Arc<str>,
    /// Distinct rooms, in the route's order.
    pub rooms: Vec<String>,
    /// The row's exposed columns, as a JSON object.
    pub data: String,
    /// On updates, the previous values of the exposed columns that changed.
    pub old: Option<String>,
    /// Commit (or capture) time.
    pub at: OffsetDateTime,
    /// How many changes a coalesced event stands for.
    pub count: Option<i32>,
    /// Set when the route coalesces bursts within this window.
    pub coalesce: Option<Duration>,
}

/// The name of a gap marker: an outbox row that takes a seq, goes to no
/// room, and tells every resume from before it that something is missing
/// (`gap: true`). A slash is never part of a routed or published name.
pub const GAP_MARKER: &str = "rowcast/gap";

impl Event {
    /// A gap marker (see [`GAP_MARKER`]) for `gap`.
    pub fn gap_marker(gap: &CaptureGap) -> Self {
        let data = serde_json::json!({ "reason": gap.reason, "slot": gap.slot });
        Self {
            name: GAP_MARKER.into(),
            rooms: Vec::new(),
            data: data.to_string(),
            old: None,
            at: OffsetDateTime::now_utc(),
            count: None,
            coalesce: None,
        }
    }

    /// Whether this is a gap marker rather than an event for rooms.
    pub fn is_gap_marker(&self) -> bool {
        self.rooms.is_empty() && &*self.name == GAP_MARKER
    }
}

/// Changes that were committed but will never be stored: a replication
/// slot lost in a failover, invalidated, or consumed by someone else, or
/// an outbox whose newest events a failover took away. Stored as a gap
/// marker, logged and counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureGap {
    /// The slot, for a slot gap.
    pub slot: Option<String>,
    /// The last position the relay had (an LSN), when there is one.
    pub last_lsn: Option<u64>,
    /// What happened, in words.
    pub reason: String,
}

/// Whether a string can be an event name.
pub fn is_event_name(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// An event as stored: the routed [`Event`] and the `seq` the outbox gave
/// it. It reads as its event (`stored.name`, `stored.rooms`, ...).
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    /// Global and increasing in commit order; without holes, except that
    /// a failover that lost the newest events resumes above every seq
    /// already handed out.
    pub seq: i64,
    /// The event itself.
    pub event: Event,
}

impl StoredEvent {
    /// A `tick` event with empty data in one room, for tests of what
    /// reads and sends stored events.
    #[cfg(test)]
    pub(crate) fn tick(seq: i64, room: &str) -> Self {
        Self {
            seq,
            event: Event {
                name: Arc::from("tick"),
                rooms: vec![room.to_string()],
                data: "{}".into(),
                old: None,
                at: OffsetDateTime::UNIX_EPOCH,
                count: None,
                coalesce: None,
            },
        }
    }
}

impl Deref for StoredEvent {
    type Target = Event;

    fn deref(&self) -> &Event {
        &self.event
    }
}

/// A committed change that may have taken a right away: the rooms whose
/// members, and the users whose joined rooms, must be authorized again.
/// Declared by the `[[access]]` rules of the routes file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessChange {
    /// Re-ask for every member of these rooms.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rooms: Vec<String>,
    /// Re-ask for every room these users (`sub`) joined.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Re-ask for every membership (too many changes to name).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub everyone: bool,
}

impl AccessChange {
    /// Whether it names nothing.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty() && self.users.is_empty() && !self.everyone
    }
}
