//! Which node captures. Several relay nodes may share one database; the one
//! holding a Postgres advisory lock, on a session of its own, is the leader:
//! it alone installs capture, reads the source and stores captured changes.
//! The lock lives as long as that session, so a leader that dies (SIGKILL,
//! a lost connection) gives it up at once and another node takes over at
//! its next attempt (every second). A leader that loses its session stops
//! capturing before anything else can happen. Every node, leader or not,
//! stores its own explicit events and fans out from the outbox.

use std::time::Duration;

use crate::db::{DatabaseConfig, DbError, Session};

/// The advisory lock key ("rowcast" in ASCII).
const LOCK_KEY: i64 = 0x0072_6f77_6361_7374;

/// How often a follower tries to become the leader.
pub const ATTEMPT_EVERY: Duration = Duration::from_secs(1);

/// This node's claim on leadership.
pub struct Leadership {
    /// Where the lock session goes.
    database: DatabaseConfig,
    /// The session that holds (or tries for) the lock.
    session: Option<Session>,
}

impl Leadership {
    /// No claim yet.
    pub fn new(database: DatabaseConfig) -> Self {
        Self {
            database,
            session: None,
        }
    }

    /// Tries once to take the lock; whether this node now leads. Never
    /// cancel it: a lock taken by a query whose answer was dropped would
    /// be held without this node knowing.
    pub async fn try_acquire(&mut self) -> Result<bool, DbError> {
        if self.session.as_ref().is_none_or(Session::is_closed) {
            self.session =
                Some(Session::connect(&self.database, "rowcast leader", |_, _| {}).await?);
        }
        let Some(session) = &self.session else {
            return Ok(false);
        };
        let taken: bool = session
            .client()
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK_KEY])
            .await?
            .get(0);
        Ok(taken)
    }

    /// Resolves when the lock is gone (its session ended, or there is none).
    pub async fn lost(&mut self) {
        if let Some(session) = &mut self.session {
            session.closed().await;
        }
    }

    /// Gives the lock up (by ending its session).
    pub fn release(&mut self) {
        self.session = None;
    }
}
