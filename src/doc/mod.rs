//! Collaborative documents: Yjs documents kept in Postgres and edited over
//! the y-websocket protocol (`gateway::docs` serves it).
//!
//! A document is loaded on its first open from `realtime.doc_updates` and
//! lives in memory while a session holds it; the last session to close it
//! unloads it. An update is stored before it is applied or relayed, so an
//! update any client saw survives a crash of the relay. When a document
//! loads with more than [`COMPACT_AFTER`] stored updates, they are merged
//! into one row in the same transaction that deletes them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use deadpool_postgres::Pool;
use tokio::sync::{broadcast, OnceCell};
use yrs::sync::Awareness;
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

use crate::db::DbError;

/// Stored updates of a document beyond which opening it merges them.
pub const COMPACT_AFTER: i64 = 500;

/// Messages relayed to a document's sessions, at most, before a session
/// that does not keep up is closed (it resyncs when it reconnects).
const RELAY_QUEUE: usize = 1024;

/// The open documents of this node.
pub struct Docs {
    pool: Pool,
    open: Mutex<HashMap<String, Weak<Slot>>>,
}

/// A document that is loading or loaded.
type Slot = OnceCell<Document>;

/// A handle on an open document; the document unloads when the last
/// handle is dropped.
#[derive(Clone)]
pub struct Handle(Arc<Slot>);

impl std::ops::Deref for Handle {
    type Target = Document;

    fn deref(&self) -> &Document {
        self.0
            .get()
            .expect("a handle is made once its document loaded")
    }
}

/// One open document.
pub struct Document {
    /// Its name (also the room its readers must be allowed to join).
    pub name: String,
    /// The CRDT and its awareness (cursors, names), behind a lock that is
    /// never held across an await.
    state: Mutex<Awareness>,
    /// Encoded y-protocol messages for every session, with the id of the
    /// session that sent them.
    relay: broadcast::Sender<(u64, Arc<[u8]>)>,
}

/// An update that could not be stored or was not an update.
#[derive(Debug, thiserror::Error)]
pub enum DocError {
    /// Not a Yjs update (v1 encoding).
    #[error("not a Yjs update: {0}")]
    Malformed(String),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] DbError),
}

impl Docs {
    /// Documents stored through `pool`.
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Opens `name`, loading it when no session holds it.
    pub async fn open(&self, name: &str) -> Result<Handle, DocError> {
        let slot = {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            open.retain(|_, slot| slot.strong_count() > 0);
            match open.get(name).and_then(Weak::upgrade) {
                Some(slot) => slot,
                None => {
                    let slot = Arc::new(Slot::new());
                    open.insert(name.to_string(), Arc::downgrade(&slot));
                    slot
                }
            }
        };
        slot.get_or_try_init(|| self.load(name)).await?;
        metrics::gauge!("rowcast_docs_open").set(self.open_count() as f64);
        Ok(Handle(slot))
    }

    /// Documents held by a session now.
    pub fn open_count(&self) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.values().filter(|slot| slot.strong_count() > 0).count()
    }

    /// Stores one update of `doc`; returns once it is committed.
    pub async fn store(&self, doc: &str, update: &[u8]) -> Result<(), DocError> {
        let client = self.pool.get().await.map_err(DbError::from)?;
        let statement = client
            .prepare_cached("INSERT INTO realtime.doc_updates (doc, data) VALUES ($1, $2)")
            .await
            .map_err(DbError::from)?;
        client
            .execute(&statement, &[&doc, &update])
            .await
            .map_err(DbError::from)?;
        Ok(())
    }

    /// Reads a document's stored updates, merging them when there are many.
    async fn load(&self, name: &str) -> Result<Document, DocError> {
        let mut client = self.pool.get().await.map_err(DbError::from)?;
        let tx = client.transaction().await.map_err(DbError::from)?;
        let rows = tx
            .query(
                "SELECT id, data FROM realtime.doc_updates WHERE doc = $1 ORDER BY id FOR UPDATE",
                &[&name],
            )
            .await
            .map_err(DbError::from)?;
        let doc = Doc::new();
        {
            let mut txn = doc.transact_mut();
            for row in &rows {
                let data: &[u8] = row.get(1);
                let update = Update::decode_v1(data)
                    .map_err(|e| DocError::Malformed(format!("stored update: {e}")))?;
                txn.apply_update(update)
                    .map_err(|e| DocError::Malformed(format!("stored update: {e}")))?;
            }
        }
        if rows.len() as i64 > COMPACT_AFTER {
            let last: i64 = rows.last().map_or(0, |row| row.get(0));
            let merged = doc
                .transact()
                .encode_state_as_update_v1(&StateVector::default());
            tx.execute(
                "DELETE FROM realtime.doc_updates WHERE doc = $1 AND id <= $2",
                &[&name, &last],
            )
            .await
            .map_err(DbError::from)?;
            tx.execute(
                "INSERT INTO realtime.doc_updates (doc, data) VALUES ($1, $2)",
                &[&name, &merged],
            )
            .await
            .map_err(DbError::from)?;
            tracing::debug!(doc = name, merged = rows.len(), "document compacted");
        }
        tx.commit().await.map_err(DbError::from)?;
        let (relay, _) = broadcast::channel(RELAY_QUEUE);
        Ok(Document {
            name: name.to_string(),
            state: Mutex::new(Awareness::new(doc)),
            relay,
        })
    }
}

impl Document {
    /// Runs `f` on the document and its awareness.
    pub fn with<T>(&self, f: impl FnOnce(&mut Awareness) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut state)
    }

    /// Applies an update that was stored.
    pub fn apply(&self, update: Update) -> Result<(), DocError> {
        self.with(|state| {
            state
                .doc()
                .transact_mut()
                .apply_update(update)
                .map_err(|e| DocError::Malformed(e.to_string()))
        })
    }

    /// Sends an encoded message to every session but `from`.
    pub fn relay(&self, from: u64, message: Arc<[u8]>) {
        let _ = self.relay.send((from, message));
    }

    /// What the other sessions relay.
    pub fn subscribe(&self) -> broadcast::Receiver<(u64, Arc<[u8]>)> {
        self.relay.subscribe()
    }
}
