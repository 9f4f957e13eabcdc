//! Rights that change while a member stays connected. A committed change
//! that an `[[access]]` rule of the routes file matches reaches this task
//! (after its own events were fanned out); the task authorizes the members
//! concerned again, with fresh answers, and removes those the rule now
//! refuses: they get `left` and nothing more of the room. A periodic
//! re-check of every membership is the backstop for changes that were
//! missed (a relay stopped between commit and delivery, a lagging task, a
//! rule the routes file does not describe).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::StreamExt;
use tokio::sync::broadcast::error::RecvError;

use super::connection::ConnState;
use super::{Live, LiveState};
use crate::event::AccessChange;
use crate::fanout::ConnId;

/// Memberships re-checked at once.
const CONCURRENCY: usize = 8;

/// The open connections, by id.
#[derive(Default)]
pub(crate) struct Connections {
    /// Every open connection's state.
    map: Mutex<HashMap<ConnId, Arc<ConnState>>>,
}

impl Connections {
    /// Registers an open connection.
    pub(crate) fn insert(&self, conn: Arc<ConnState>) {
        self.lock().insert(conn.conn(), conn);
    }

    /// Forgets a closed connection.
    pub(crate) fn remove(&self, conn: ConnId) {
        self.lock().remove(&conn);
    }

    fn get(&self, conn: ConnId) -> Option<Arc<ConnState>> {
        self.lock().get(&conn).cloned()
    }

    fn all(&self) -> Vec<Arc<ConnState>> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ConnId, Arc<ConnState>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One membership to authorize again.
type Membership = (Arc<ConnState>, Arc<str>);

/// Re-checks memberships until shutdown: on every access change, and every
/// `ROWCAST_AUTH_RECHECK_INTERVAL` for all of them.
pub(crate) async fn run(shared: Live) {
    let mut changes = shared.hub.access_changes();
    let period = shared.config.limits.auth_recheck;
    let mut backstop = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    backstop.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let memberships = tokio::select! {
            change = changes.recv() => match change {
                Ok(change) if change.everyone => everyone(&shared),
                Ok(change) => concerned(&shared, &change),
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "access changes came faster than re-checks; re-checking every membership");
                    everyone(&shared)
                }
                Err(RecvError::Closed) => return,
            },
            _ = backstop.tick() => everyone(&shared),
            _ = shared.shutdown.wait() => return,
        };
        recheck(&shared, memberships).await;
    }
}

/// The memberships a change concerns: every member of its rooms, and every
/// room its users joined.
fn concerned(shared: &LiveState, change: &AccessChange) -> Vec<Membership> {
    shared.reads.forget(&change.rooms);
    let mut memberships = Vec::new();
    for room in &change.rooms {
        for conn in shared.hub.members(room) {
            let Some(state) = shared.connections.get(conn) else {
                continue;
            };
            if let Some(name) = state.joined(room) {
                memberships.push((state, name));
            }
        }
    }
    if !change.users.is_empty() {
        for state in shared.connections.all() {
            if change.users.contains(&state.claims().sub) {
                let rooms = state.rooms();
                shared.reads.forget(&rooms);
                memberships.extend(rooms.into_iter().map(|room| (state.clone(), room)));
            }
        }
    }
    memberships
}

fn everyone(shared: &LiveState) -> Vec<Membership> {
    shared
        .connections
        .all()
        .into_iter()
        .flat_map(|state| {
            let rooms = state.rooms();
            rooms.into_iter().map(move |room| (state.clone(), room))
        })
        .collect()
}

/// Asks the rule again for each membership (fresh answers) and removes the
/// members it refuses. A failed check keeps the member: the next change or
/// the backstop asks again.
async fn recheck(shared: &LiveState, memberships: Vec<Membership>) {
    if memberships.is_empty() {
        return;
    }
    let started = std::time::Instant::now();
    let checked = memberships.len();
    futures_util::stream::iter(memberships)
        .for_each_concurrent(CONCURRENCY, |(state, room)| async move {
            let claims = state.claims();
            if claims.service {
                return;
            }
            match shared.reads.recheck(&claims, &room).await {
                Ok(true) => {}
                Ok(false) => {
                    state.revoke(&shared.hub, &room);
                }
                Err(error) => tracing::warn!(%error, %room, "re-checking a membership failed"),
            }
        })
        .await;
    metrics::histogram!("rowcast_access_recheck_seconds").record(started.elapsed().as_secs_f64());
    tracing::debug!(checked, "memberships re-checked");
}
