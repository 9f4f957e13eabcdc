//! Dedicated sessions outside the pool: a LISTEN session (a pool cannot
//! deliver notifications) and a plain long-lived session (the leader lock
//! lives as long as its session). Both use the relay's TLS setting and
//! pinned search path, and say when their connection ended.

use futures_util::StreamExt;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client};

use super::{pinned, DatabaseConfig, DbError};

/// A session of its own, named `name`; `on_notify` gets the channel and
/// payload of every notification it receives.
pub struct Session {
    /// The client.
    client: Client,
    /// Drives the connection; ends when the connection does.
    task: JoinHandle<()>,
}

impl Session {
    /// Connects.
    pub async fn connect(
        database: &DatabaseConfig,
        name: &str,
        on_notify: impl Fn(&str, &str) + Send + 'static,
    ) -> Result<Self, DbError> {
        let mut pg = pinned(&database.pg);
        pg.application_name(name);
        let tls = database.tls.connector()?;
        let (client, mut connection) = pg.connect(tls).await?;
        let task = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => on_notify(n.channel(), n.payload()),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        Ok(Self { client, task })
    }

    /// A session that listens on `channels`.
    pub async fn listen(
        database: &DatabaseConfig,
        name: &str,
        channels: &[&str],
        on_notify: impl Fn(&str, &str) + Send + 'static,
    ) -> Result<Self, DbError> {
        let session = Self::connect(database, name, on_notify).await?;
        for channel in channels {
            session
                .client
                .batch_execute(&format!("LISTEN {}", crate::quote::ident(channel)))
                .await?;
        }
        Ok(session)
    }

    /// The client, for queries on this session.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Whether the connection ended.
    pub fn is_closed(&self) -> bool {
        self.task.is_finished()
    }

    /// Resolves when the connection ends.
    pub async fn closed(&mut self) {
        let _ = (&mut self.task).await;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}
