//! The gateway's reads: the SQL authorization rule (with a short cache that
//! access changes empty) and room history, on the pool of client requests.
//! Pages of history are bounded by a semaphore below the pool's size, so a
//! burst of replays cannot starve authorization.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio::sync::Semaphore;

use super::auth::Claims;
use super::connection::{Authorize, History};
use crate::db::DbError;
use crate::fanout::Hub;
use crate::outbox::{RoomPage, Span};

/// How long a replay waits for the outbox to hold the events it must
/// include (events fanned out at WAL durability, whose rows are being
/// written); past this the replay fails and the client resumes again.
const STORED_DEADLINE: Duration = Duration::from_secs(10);

/// Authorization (with a short cache) and history, from the database.
pub(crate) struct RoomReads {
    /// The pool of client requests.
    pool: Pool,
    /// Replay and history pages read at once, at most: fewer than the
    /// pool's sessions, so authorization always finds one.
    pages: Semaphore,
    /// How long an answer is reused.
    ttl: Duration,
    /// Recent answers by (claims, room).
    cache: Mutex<HashMap<(String, String), (bool, Instant)>>,
    /// How far the outbox holds what was fanned out.
    hub: Arc<Hub>,
}

/// Most cached authorization answers before the cache is emptied.
const AUTH_CACHE_MAX: usize = 100_000;

impl RoomReads {
    /// The pool of client requests.
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    pub(crate) fn new(pool: Pool, ttl: Duration, hub: Arc<Hub>) -> Self {
        let sessions = pool.status().max_size;
        Self {
            pages: Semaphore::new(sessions.saturating_sub(2).max(1)),
            pool,
            ttl,
            cache: Mutex::new(HashMap::new()),
            hub,
        }
    }

    /// The cache key of a token's claims: everything but the time claims,
    /// so a refreshed token keeps its cached answers.
    fn identity(claims: &Claims) -> String {
        match &claims.all {
            serde_json::Value::Object(map) => {
                let mut map = map.clone();
                for time in ["exp", "iat", "nbf", "jti"] {
                    map.remove(time);
                }
                serde_json::Value::Object(map).to_string()
            }
            other => other.to_string(),
        }
    }
}

impl RoomReads {
    /// Asks the rule, bypassing the cache, and caches the answer.
    async fn ask(&self, claims: &Claims, room: &str) -> Result<bool, DbError> {
        let answer = self.query(claims, room).await?;
        self.remember(claims, room, answer);
        Ok(answer)
    }

    /// Asks the rule again for a member (an access re-check), bypassing the
    /// cache. Only a yes is cached: the no that removes the member must not
    /// outlive the commit that gives the right back, whose own re-check
    /// comes after the member's next join.
    pub(crate) async fn recheck(&self, claims: &Claims, room: &str) -> Result<bool, DbError> {
        let answer = self.query(claims, room).await?;
        if answer {
            self.remember(claims, room, true);
        }
        Ok(answer)
    }

    /// Whether the token may edit document `name`
    /// (`realtime.authorize_edit`), asked on each open.
    pub(crate) async fn authorize_edit(
        &self,
        claims: &Claims,
        name: &str,
    ) -> Result<bool, DbError> {
        self.rule(
            "SELECT coalesce(realtime.authorize_edit($1, $2, $3::jsonb), false)",
            claims,
            name,
        )
        .await
    }

    async fn query(&self, claims: &Claims, room: &str) -> Result<bool, DbError> {
        self.rule(
            "SELECT coalesce(realtime.authorize($1, $2, $3::jsonb), false)",
            claims,
            room,
        )
        .await
    }

    /// Asks a rule (`sql` over `$1` sub, `$2` name, `$3` claims) for a yes.
    async fn rule(&self, sql: &str, claims: &Claims, name: &str) -> Result<bool, DbError> {
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(sql).await?;
        Ok(client
            .query_one(&statement, &[&claims.sub, &name, &claims.all])
            .await?
            .get(0))
    }

    fn remember(&self, claims: &Claims, room: &str, answer: bool) {
        let mut cache = self.lock_cache();
        if cache.len() >= AUTH_CACHE_MAX {
            cache.clear();
        }
        cache.insert(
            (Self::identity(claims), room.to_string()),
            (answer, Instant::now()),
        );
    }

    /// Drops answers older than the cache's lifetime, so the cache holds
    /// only what joins asked for recently.
    pub(crate) fn prune(&self) {
        let ttl = self.ttl;
        self.lock_cache().retain(|_, (_, at)| at.elapsed() < ttl);
    }

    /// Forgets the cached answers for these rooms (their rights changed).
    pub(crate) fn forget<R: AsRef<str>>(&self, rooms: &[R]) {
        if rooms.is_empty() {
            return;
        }
        self.lock_cache()
            .retain(|(_, room), _| !rooms.iter().any(|r| r.as_ref() == room));
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), (bool, Instant)>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Authorize for RoomReads {
    async fn authorize(&self, claims: &Claims, room: &str) -> Result<bool, DbError> {
        let key = (Self::identity(claims), room.to_string());
        if let Some((answer, at)) = self.lock_cache().get(&key) {
            if at.elapsed() < self.ttl {
                return Ok(*answer);
            }
        }
        self.ask(claims, room).await
    }
}

impl RoomReads {
    /// A page of a room's history, read under the pages semaphore.
    /// A page of a room's history. A page bounded by `until` (a replay up
    /// to what was fanned out) first waits until the outbox holds `until`,
    /// so the replay and the live events that follow it leave no hole.
    pub(crate) async fn room_page(&self, room: &str, span: Span) -> Result<RoomPage, DbError> {
        if let Some(until) = span.until {
            if !self.hub.stored_through(until, STORED_DEADLINE).await {
                return Err(DbError::Retry(format!(
                    "the outbox did not reach seq {until} in time"
                )));
            }
        }
        let _permit = self
            .pages
            .acquire()
            .await
            .map_err(|_| DbError::Pool("history pages closed".into()))?;
        let client = self.pool.get().await?;
        crate::outbox::room_events(&client, room, span).await
    }
}

impl History for RoomReads {
    async fn page(&self, room: &str, span: Span) -> Result<RoomPage, DbError> {
        self.room_page(room, span).await
    }
}
