//! Presence: a user's first open connection makes them `online`, their last
//! closed one `offline`, whatever the number of tabs. Each change is stored
//! as `user-status-changed` in the rooms that `realtime.presence(sub,
//! status)` names (the user's own room and their friends' in the demo).
//!
//! Each change is one transaction: `realtime.online` changes, and the event
//! is published with `realtime.publish` (the path any writer uses), only if
//! the row really changed, so every transition is stored exactly once and
//! never without its event. Changes are applied in order by one task.
//!
//! A connection that drops and comes back within `ROWCAST_PRESENCE_GRACE`
//! (default 2 s) stores nothing: `offline` waits that long and a return
//! cancels it. A relay that stops flushes the waiting `offline`s at once; one
//! that crashed leaves its users in `realtime.online`, and the next one
//! stores their `offline` before any change of its own (only a node that
//! leads when it starts: presence is counted per node, see docs/scaling.md).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use deadpool_postgres::Pool;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::duration::sleep_until;

/// Status changes waiting to be stored, at most.
const QUEUE: usize = 65_536;

/// Work for the presence task.
enum PresenceWork {
    /// A user's first connection opened (`true`) or last one closed.
    Change(String, bool),
    /// Store every waiting change now, then answer.
    Flush(oneshot::Sender<()>),
}

/// Counts open connections per user and queues status changes.
pub struct Presence {
    /// Open connections per user (users at zero are removed).
    counts: Mutex<HashMap<String, usize>>,
    /// Status changes for the presence task.
    changes: mpsc::Sender<PresenceWork>,
}

impl Presence {
    /// Starts the presence task.
    pub fn start(pool: Pool, grace: Duration, clean_up: bool) -> Self {
        let (changes, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, grace, clean_up, rx));
        Self {
            counts: Mutex::new(HashMap::new()),
            changes,
        }
    }

    /// A connection of `user` opened.
    pub fn opened(&self, user: &str) {
        let first = {
            let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
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
            let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
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

    /// Stores every waiting change now; resolves once that is done.
    pub async fn flushed(&self) {
        let (done, handled) = oneshot::channel();
        if self.changes.send(PresenceWork::Flush(done)).await.is_ok() {
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

async fn run(
    pool: Pool,
    grace: Duration,
    clean_up: bool,
    mut changes: mpsc::Receiver<PresenceWork>,
) {
    if clean_up {
        for user in left_online(&pool).await {
            store_logged(&pool, &user, "offline").await;
        }
    }
    // Users whose last connection closed, and when their `offline` is due.
    let mut leaving: HashMap<String, Instant> = HashMap::new();
    loop {
        let due = leaving.values().min().copied();
        tokio::select! {
            work = changes.recv() => match work {
                Some(PresenceWork::Change(user, true)) => {
                    // Back within the grace period: nothing happened.
                    if leaving.remove(&user).is_none() {
                        store_logged(&pool, &user, "online").await;
                    }
                }
                Some(PresenceWork::Change(user, false)) => {
                    leaving.insert(user, Instant::now() + grace);
                }
                Some(PresenceWork::Flush(done)) => {
                    for (user, _) in leaving.drain() {
                        store_logged(&pool, &user, "offline").await;
                    }
                    let _ = done.send(());
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
                    store_logged(&pool, &user, "offline").await;
                }
            }
        }
    }
}

/// Users a previous run of the relay left online.
async fn left_online(pool: &Pool) -> Vec<String> {
    let rows = match pool.get().await {
        Ok(client) => client
            .query("SELECT sub FROM realtime.online ORDER BY since, sub", &[])
            .await
            .map_err(|e| crate::db::describe_pg_error(&e)),
        Err(e) => Err(e.to_string()),
    };
    match rows {
        Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "could not read who a previous run left online");
            Vec::new()
        }
    }
}

async fn store_logged(pool: &Pool, user: &str, status: &str) {
    if let Err(e) = store(pool, user, status).await {
        tracing::warn!(error = %e, status, "presence change not stored");
    }
}

/// One transaction: the `realtime.online` row changes, and only if it did,
/// `user-status-changed` is published to the rooms `realtime.presence`
/// names.
async fn store(pool: &Pool, user: &str, status: &str) -> Result<(), String> {
    let describe = |e: tokio_postgres::Error| crate::db::describe_pg_error(&e);
    let mut client = pool.get().await.map_err(|e| e.to_string())?;
    let tx = client.transaction().await.map_err(describe)?;
    let track = match status {
        "online" => "INSERT INTO realtime.online (sub) VALUES ($1) ON CONFLICT DO NOTHING",
        _ => "DELETE FROM realtime.online WHERE sub = $1",
    };
    if tx.execute(track, &[&user]).await.map_err(describe)? == 0 {
        return Ok(());
    }
    let rooms: Vec<String> = tx
        .query_one("SELECT realtime.presence($1, $2)", &[&user, &status])
        .await
        .map_err(describe)?
        .get::<_, Option<Vec<String>>>(0)
        .unwrap_or_default();
    if !rooms.is_empty() {
        let user_id = user
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::from(user));
        let data = json!({"user_id": user_id, "status": status});
        tx.execute(
            "SELECT realtime.publish($1, 'user-status-changed', $2)",
            &[&rooms, &data],
        )
        .await
        .map_err(describe)?;
    }
    tx.commit().await.map_err(describe)
}
