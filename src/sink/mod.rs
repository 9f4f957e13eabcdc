//! Sinks: deliveries beyond the open socket (signed webhooks, Web Push),
//! read from the outbox through durable cursors.
//!
//! One node drives the sinks: the one holding the sinks' advisory lock on
//! a session of its own ([`run`]). Every node tries for it every second, so
//! a node that dies hands the sinks to another at once, and the new driver
//! resumes each sink after its cursor (`realtime.sink_cursors`). A cursor
//! moves only after its events were delivered (or given up on), so
//! delivery is at least once; the event's seq is its idempotency key.
//! Each sink is a task of its own, so a slow receiver holds up nothing but
//! itself, and none of it runs on the relay's socket or capture paths.

pub mod client;
mod cursor;
pub mod journal;
mod push;
mod push_crypto;
pub mod retry;
pub mod subscriptions;
mod webhook;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::db::{DatabaseConfig, DbError, Session};
use crate::fanout::Hub;
use crate::shutdown::Shutdown;

pub use cursor::register;
pub use push::PushSink;
pub use webhook::{SigningSecret, WebhookSink};

/// The advisory lock key of the sinks' driver ("rcsinks" in ASCII).
const LOCK_KEY: i64 = 0x0072_6373_696e_6b73;

/// How often a node that does not drive the sinks tries to.
const ATTEMPT_EVERY: Duration = Duration::from_secs(1);

/// Events one read of a cursor takes.
pub const PAGE: i64 = 100;

/// How often a sink looks at the outbox when nothing woke it (a follower's
/// outbox advances without this node's writer).
pub const POLL_EVERY: Duration = Duration::from_secs(1);

/// A sink the driver runs: its own loop over its own cursor, until the
/// session fails (an error) or the relay stops (`Ok`).
pub enum Sink {
    /// A `[[webhook]]`.
    Webhook(Box<WebhookSink>),
    /// Web Push.
    Push(PushSink),
}

impl Sink {
    async fn run(
        self,
        session: Arc<Session>,
        hub: Arc<Hub>,
        stop: Shutdown,
    ) -> Result<(), DbError> {
        match self {
            Self::Webhook(sink) => sink.run(session, hub, stop).await,
            Self::Push(sink) => sink.run(session, hub, stop).await,
        }
    }
}

/// Drives `sinks` whenever this node holds the sinks' lock, until
/// `shutdown`.
pub async fn run(
    database: DatabaseConfig,
    hub: Arc<Hub>,
    sinks: impl Fn() -> Vec<Sink> + Send + 'static,
    shutdown: Shutdown,
) {
    loop {
        let session = match Session::connect(&database, "rowcast sinks", |_, _| {}).await {
            Ok(session) => Arc::new(session),
            Err(e) => {
                tracing::warn!(error = %e, "sinks: cannot reach the database; will retry");
                if shutdown.sleep(ATTEMPT_EVERY).await {
                    return;
                }
                continue;
            }
        };
        loop {
            // Never cancelled: a lock taken by a query whose answer was
            // dropped would be held without this node knowing.
            let taken = session
                .client()
                .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK_KEY])
                .await
                .map(|row| row.get::<_, bool>(0));
            match taken {
                Ok(true) => break,
                Ok(false) => {
                    if shutdown.sleep(ATTEMPT_EVERY).await {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "sinks: lock attempt failed; will retry");
                    break;
                }
            }
        }
        if session.is_closed() {
            continue;
        }
        tracing::info!("this node drives the sinks");
        let stop = Shutdown::new();
        let mut tasks = JoinSet::new();
        for sink in sinks() {
            tasks.spawn(sink.run(session.clone(), hub.clone(), stop.clone()));
        }
        let failed = tokio::select! {
            _ = shutdown.wait() => None,
            Some(result) = tasks.join_next() => Some(result),
        };
        stop.trigger();
        while tasks.join_next().await.is_some() {}
        match failed {
            None => return,
            Some(Ok(Ok(()))) => {}
            Some(Ok(Err(e))) => tracing::warn!(error = %e, "sinks stopped; will resume"),
            Some(Err(e)) => tracing::error!(error = %e, "a sink task ended abnormally"),
        }
        drop(session);
        if shutdown.sleep(ATTEMPT_EVERY).await {
            return;
        }
    }
}
