//! Presence: a user's first open connection makes them `online`, their last
//! closed one `offline`, whatever the number of tabs. Each change is stored
//! as `user-status-changed` in the rooms that `realtime.presence(sub,
//! status)` names (the user's own room and their friends' in the demo).
//! Changes are applied one at a time, in order, by one task.
//!
//! Who is online is also kept in `realtime.online`: the task starts by
//! storing `offline` for users a previous relay left there (it crashed with
//! their connections open), before any change of its own. On shutdown the
//! relay waits for that task to store what the closing connections queued
//! before it stops capture, so their `offline` changes are not lost.

use std::collections::HashMap;
use std::sync::Mutex;

use deadpool_postgres::Pool;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use crate::event::Published;
use crate::ingest::PublishRequest;

/// Status changes waiting to be stored, at most.
const QUEUE: usize = 65_536;

/// Work for the presence task.
enum PresenceWork {
    /// A user's status changed.
    Change(String, &'static str),
    /// Answer once everything queued before is handled.
    Flush(oneshot::Sender<()>),
}

/// Counts open connections per user and queues status changes.
pub struct Presence {
    /// Open connections per user.
    counts: Mutex<HashMap<String, usize>>,
    /// Status changes for the presence task.
    changes: mpsc::Sender<PresenceWork>,
}

impl Presence {
    /// Starts the presence task.
    pub fn start(pool: Pool, publisher: mpsc::Sender<PublishRequest>) -> Self {
        let (changes, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, publisher, rx));
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
            self.change(user, "online");
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
            self.change(user, "offline");
        }
    }

    /// Resolves once every change queued so far has been handled.
    pub async fn flushed(&self) {
        let (done, handled) = oneshot::channel();
        if self.changes.send(PresenceWork::Flush(done)).await.is_ok() {
            let _ = handled.await;
        }
    }

    fn change(&self, user: &str, status: &'static str) {
        if self
            .changes
            .try_send(PresenceWork::Change(user.to_string(), status))
            .is_err()
        {
            tracing::warn!(status, "presence queue full; a status change was dropped");
        }
    }
}

async fn run(
    pool: Pool,
    publisher: mpsc::Sender<PublishRequest>,
    mut changes: mpsc::Receiver<PresenceWork>,
) {
    for user in left_online(&pool).await {
        if let Err(e) = store(&pool, &publisher, &user, "offline").await {
            tracing::warn!(error = %e, "offline presence of a previous run not stored");
        }
    }
    while let Some(item) = changes.recv().await {
        let (user, status) = match item {
            PresenceWork::Change(user, status) => (user, status),
            PresenceWork::Flush(done) => {
                let _ = done.send(());
                continue;
            }
        };
        if let Err(e) = store(&pool, &publisher, &user, status).await {
            if publisher.is_closed() {
                tracing::debug!(status, "presence change not stored: the relay is stopping");
            } else {
                tracing::warn!(error = %e, status, "presence change not stored");
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

async fn store(
    pool: &Pool,
    publisher: &mpsc::Sender<PublishRequest>,
    user: &str,
    status: &str,
) -> Result<(), String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    let track = match status {
        "online" => "INSERT INTO realtime.online (sub) VALUES ($1) ON CONFLICT DO NOTHING",
        _ => "DELETE FROM realtime.online WHERE sub = $1",
    };
    client
        .execute(track, &[&user])
        .await
        .map_err(|e| crate::db::describe_pg_error(&e))?;
    let rooms: Vec<String> = client
        .query_one("SELECT realtime.presence($1, $2)", &[&user, &status])
        .await
        .map_err(|e| crate::db::describe_pg_error(&e))?
        .get::<_, Option<Vec<String>>>(0)
        .unwrap_or_default();
    drop(client);
    if rooms.is_empty() {
        return Ok(());
    }
    let user_id = user
        .parse::<i64>()
        .map(Value::from)
        .unwrap_or_else(|_| Value::from(user));
    let (reply, answer) = oneshot::channel();
    let request = PublishRequest {
        event: Published {
            rooms,
            event: "user-status-changed".into(),
            data: json!({"user_id": user_id, "status": status}),
        },
        reply,
    };
    publisher
        .send(request)
        .await
        .map_err(|_| "the relay is stopping".to_string())?;
    answer
        .await
        .map_err(|_| "no answer".to_string())?
        .map(|_| ())
}
