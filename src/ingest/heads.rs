//! What other nodes announce about the outbox: every outbox transaction
//! that stores events notifies `realtime_outbox` with the new head, and one
//! whose changes may take rights away notifies `realtime_access` with them.
//! A node that did not write those events reads the outbox up to the head,
//! then re-checks its own members. Notifications are only a wake-up: the
//! outbox is also read whenever a node becomes a follower or a leader, on
//! every follower round, and every membership is re-checked periodically.
//!
//! A leader that stored events another node handed to it through
//! `realtime.capture` notifies `realtime_published` with their seqs; the
//! node waiting for them answers its publish requests ([`Replies`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, Notify};

use crate::db::{DatabaseConfig, DbError, Session};
use crate::event::AccessChange;
use crate::outbox::{ACCESS_CHANNEL, HEAD_CHANNEL, PUBLISHED_CHANNEL};

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
    /// Publish requests this node handed to the leader, by token.
    replies: Replies,
}

/// Publish requests handed to the leader, waiting for their seqs.
#[derive(Clone, Default)]
pub(super) struct Replies(Arc<Mutex<HashMap<String, oneshot::Sender<i64>>>>);

impl Replies {
    /// Waits for the seq of the event handed over under `token`.
    pub(super) fn expect(&self, token: String) -> oneshot::Receiver<i64> {
        let (sender, receiver) = oneshot::channel();
        lock(&self.0).insert(token, sender);
        receiver
    }

    /// Stops waiting for `token` (its request timed out or failed).
    pub(super) fn forget(&self, token: &str) {
        lock(&self.0).remove(token);
    }

    /// Answers the waiting requests a leader announced.
    fn answer(&self, payload: &str) {
        let Ok(answers) = serde_json::from_str::<Vec<(String, i64)>>(payload) else {
            return;
        };
        let mut waiting = lock(&self.0);
        for (token, seq) in answers {
            if let Some(sender) = waiting.remove(&token) {
                let _ = sender.send(seq);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
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
            replies: Replies::default(),
        }
    }

    /// The publish requests waiting for a leader's answer.
    pub(super) fn replies(&self) -> &Replies {
        &self.replies
    }

    /// Listens, (re)connecting when the session is gone.
    pub(super) async fn ensure(&mut self) -> Result<(), DbError> {
        if self.session.as_ref().is_some_and(|s| !s.is_closed()) {
            return Ok(());
        }
        let (latest, access, wake) = (self.latest.clone(), self.access.clone(), self.wake.clone());
        let replies = self.replies.clone();
        let session = Session::listen(
            &self.database,
            "rowcast heads",
            &[HEAD_CHANNEL, ACCESS_CHANNEL, PUBLISHED_CHANNEL],
            move |channel, payload| {
                if channel == PUBLISHED_CHANNEL {
                    replies.answer(payload);
                    return;
                }
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
        std::mem::take(&mut *lock(&self.access))
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
    let mut held = lock(access);
    if changes.is_empty() || held.len() + changes.len() > MAX_ACCESS {
        *held = vec![everyone];
    } else if !held.first().is_some_and(|c| c.everyone) {
        held.extend(changes);
    }
}
