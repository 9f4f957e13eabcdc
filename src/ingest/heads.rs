//! What other nodes announce about the outbox: every outbox transaction
//! that stores events notifies `realtime_outbox` with the new head, and one
//! whose changes may take rights away notifies `realtime_access` with them.
//! A node that did not write those events reads the outbox up to the head,
//! then re-checks its own members. Notifications are only a wake-up: the
//! outbox is also read whenever a node becomes a follower or a leader, on
//! every follower round, and every membership is re-checked periodically.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::db::{DatabaseConfig, DbError, Session};
use crate::event::AccessChange;
use crate::outbox::{ACCESS_CHANNEL, HEAD_CHANNEL};

/// Access changes held at most before they fold into one "re-check
/// everyone".
const MAX_ACCESS: usize = 1024;

/// The newest head announced, the access changes announced since last
/// taken, and a wake-up when either moves.
pub(super) struct Heads {
    /// Where the LISTEN session goes.
    database: DatabaseConfig,
    /// The LISTEN session, while connected.
    session: Option<Session>,
    /// The newest head announced.
    latest: Arc<AtomicI64>,
    /// Access changes announced and not taken yet (bounded).
    access: Arc<Mutex<Vec<AccessChange>>>,
    /// Woken on every announcement.
    wake: Arc<Notify>,
}

impl Heads {
    /// Not listening yet.
    pub(super) fn new(database: DatabaseConfig) -> Self {
        Self {
            database,
            session: None,
            latest: Arc::new(AtomicI64::new(0)),
            access: Arc::new(Mutex::new(Vec::new())),
            wake: Arc::new(Notify::new()),
        }
    }

    /// Listens, (re)connecting when the session is gone.
    pub(super) async fn ensure(&mut self) -> Result<(), DbError> {
        if self.session.as_ref().is_some_and(|s| !s.is_closed()) {
            return Ok(());
        }
        let (latest, access, wake) = (self.latest.clone(), self.access.clone(), self.wake.clone());
        let session = Session::listen(
            &self.database,
            "rowcast heads",
            &[HEAD_CHANNEL, ACCESS_CHANNEL],
            move |channel, payload| {
                if channel == HEAD_CHANNEL {
                    if let Ok(head) = payload.parse::<i64>() {
                        latest.fetch_max(head, Ordering::AcqRel);
                    }
                } else {
                    hold(&access, payload);
                }
                wake.notify_one();
            },
        )
        .await?;
        self.session = Some(session);
        Ok(())
    }

    /// Resolves on the next announcement (cancel-safe).
    pub(super) async fn changed(&self) {
        self.wake.notified().await;
    }

    /// The newest head announced.
    pub(super) fn latest(&self) -> i64 {
        self.latest.load(Ordering::Acquire)
    }

    /// The access changes announced since the last call.
    pub(super) fn take_access(&self) -> Vec<AccessChange> {
        std::mem::take(&mut *self.access.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Keeps an announced access change; too many fold into "everyone".
fn hold(access: &Mutex<Vec<AccessChange>>, payload: &str) {
    let changes: Vec<AccessChange> = match payload {
        "*" => Vec::new(),
        json => serde_json::from_str(json).unwrap_or_default(),
    };
    let everyone = AccessChange {
        everyone: true,
        ..AccessChange::default()
    };
    let mut held = access.lock().unwrap_or_else(|e| e.into_inner());
    if changes.is_empty() || held.len() + changes.len() > MAX_ACCESS {
        *held = vec![everyone];
    } else if !held.first().is_some_and(|c| c.everyone) {
        held.extend(changes);
    }
}
