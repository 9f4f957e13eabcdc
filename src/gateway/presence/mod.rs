//! Presence: a user's first open connection makes them `online`, their last
//! closed one `offline`, whatever the number of tabs and of relay nodes.
//! Each change is stored as `user-status-changed` in the rooms that
//! `realtime.presence(sub, status)` names (the user's own room and their
//! friends' in the demo).
//!
//! Connections are counted here, per node; across nodes the database
//! decides ([`store`]): each node holds a lease it renews, records which
//! users it has connections of, and a user goes `offline` only when no live
//! node has one, or when the lease of the dead node that had the last one
//! runs out ([`store::LEASE`]). Changes are applied in order by one task.
//!
//! A connection that drops and comes back within `ROWCAST_PRESENCE_GRACE`
//! (default 2 s) stores nothing: `offline` waits that long and a return
//! cancels it. A node that stops stores its waiting `offline`s at once and
//! gives its lease up.

mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::duration::sleep_until;

/// Status changes waiting to be stored, at most.
const QUEUE: usize = 65_536;

/// How often the lease is renewed and dead nodes' users are swept.
const TICK: Duration = Duration::from_secs(2);

/// Work for the presence task.
enum PresenceWork {
    /// A user's first connection opened (`true`) or last one closed.
    Change(String, bool),
    /// Store every waiting change now, give the lease up, then answer.
    Stop(oneshot::Sender<()>),
}

/// Open connections per user on this node (users at zero are removed).
type Counts = Arc<Mutex<HashMap<String, usize>>>;

/// Counts open connections per user and queues status changes.
pub struct Presence {
    /// Open connections per user.
    counts: Counts,
    /// Status changes for the presence task.
    changes: mpsc::Sender<PresenceWork>,
}

impl Presence {
    /// Starts the presence task of a new node.
    pub fn start(pool: Pool, grace: Duration) -> Self {
        let (changes, rx) = mpsc::channel(QUEUE);
        let counts = Counts::default();
        let node = format!("{:016x}", rand::random::<u64>());
        tokio::spawn(run(pool, node, grace, counts.clone(), rx));
        Self { counts, changes }
    }

    /// A connection of `user` opened.
    pub fn opened(&self, user: &str) {
        let first = {
            let mut counts = lock(&self.counts);
            let count = counts.entry(user.to_string()).or_insert(0);
            *count += 1;
            *count == 1
        };
        if first {
            self.change(user, true);
        }
    }

    /// A connection of `user` closed.
    pub fn closed(&self, user: &str) {
        let last = {
            let mut counts = lock(&self.counts);
            match counts.get_mut(user) {
                Some(count) if *count > 1 => {
                    *count -= 1;
                    false
                }
                Some(_) => {
                    counts.remove(user);
                    true
                }
                None => false,
            }
        };
        if last {
            self.change(user, false);
        }
    }

    /// Stores every waiting change now and gives the node's lease up (the
    /// node is stopping); resolves once that is done.
    pub async fn flushed(&self) {
        let (done, handled) = oneshot::channel();
        if self.changes.send(PresenceWork::Stop(done)).await.is_ok() {
            let _ = handled.await;
        }
    }

    fn change(&self, user: &str, online: bool) {
        if self
            .changes
            .try_send(PresenceWork::Change(user.to_string(), online))
            .is_err()
        {
            tracing::warn!(online, "presence queue full; a status change was dropped");
        }
    }
}

fn lock(counts: &Counts) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
    counts.lock().unwrap_or_else(|e| e.into_inner())
}

async fn run(
    pool: Pool,
    node: String,
    grace: Duration,
    counts: Counts,
    mut changes: mpsc::Receiver<PresenceWork>,
) {
    logged("lease", store::renew(&pool, &node).await.map(|_| ()));
    // Users whose last connection closed, and when their `offline` is due.
    let mut leaving: HashMap<String, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let due = leaving.values().min().copied();
        tokio::select! {
            work = changes.recv() => match work {
                Some(PresenceWork::Change(user, true)) => {
                    // Back within the grace period: nothing happened.
                    if leaving.remove(&user).is_none() {
                        logged("online", store::opened(&pool, &node, &user).await);
                    }
                }
                Some(PresenceWork::Change(user, false)) => {
                    leaving.insert(user, Instant::now() + grace);
                }
                Some(PresenceWork::Stop(done)) => {
                    for (user, _) in leaving.drain() {
                        logged("offline", store::closed(&pool, &node, &user).await);
                    }
                    logged("lease", store::deregister(&pool, &node).await);
                    let _ = done.send(());
                    return;
                }
                None => return,
            },
            _ = sleep_until(due) => {
                let now = Instant::now();
                let gone: Vec<String> = leaving
                    .iter()
                    .filter(|(_, at)| **at <= now)
                    .map(|(user, _)| user.clone())
                    .collect();
                for user in gone {
                    leaving.remove(&user);
                    logged("offline", store::closed(&pool, &node, &user).await);
                }
            }
            _ = tick.tick() => keep_lease(&pool, &node, &counts).await,
        }
    }
}

/// Renews this node's lease (recording its users again if other nodes had
/// given it up for dead), and sweeps the users of dead nodes.
async fn keep_lease(pool: &Pool, node: &str, counts: &Counts) {
    match store::renew(pool, node).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!("this node's presence lease had run out; recording its users again");
            let users: Vec<String> = lock(counts).keys().cloned().collect();
            for user in users {
                logged("online", store::opened(pool, node, &user).await);
            }
        }
        Err(e) => tracing::warn!(error = %e, "presence lease not renewed"),
    }
    logged("sweep", store::sweep(pool).await);
}

fn logged(step: &str, result: Result<(), crate::db::DbError>) {
    if let Err(e) = result {
        tracing::warn!(error = %e, step, "presence change not stored");
    }
}
