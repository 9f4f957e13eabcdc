//! Ingest: the single writer of the outbox. One loop, whatever the capture
//! source, owns the outbox transaction: it takes batches from a
//! [`Source`], stores their events and the source's progress in one
//! transaction, then hands the committed events to the fanout. The same
//! loop stores explicit events ([`PublishRequest`]s: HTTP publish,
//! presence) and coalesced bursts whose window closed, so every stored
//! event gets its `seq` from one place. Transient failures are retried
//! here, with backoff, for every source alike.

mod publish;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::mpsc;

use crate::capture::logical::{self, LogicalSource};
use crate::capture::switch::Retiring;
use crate::capture::trigger::TriggerSource;
use crate::capture::{CaptureError, CaptureStatus, Progress, Source, SourceKind};
use crate::config::CaptureConfig;
use crate::db::{Backoff, DatabaseConfig};
use crate::duration::sleep_until;
use crate::outbox::Outbox;
use crate::route::Router;
use crate::shutdown::Shutdown;

pub use publish::PublishRequest;

/// The single writer and what it serves.
pub struct Ingest {
    /// The outbox and its delivery bookkeeping.
    outbox: Outbox,
    /// Compiled routes.
    router: Arc<Router>,
    /// Explicit events to store.
    requests: mpsc::Receiver<PublishRequest>,
    /// Whether capture runs, for readiness.
    status: Arc<CaptureStatus>,
    /// Stops the loop between transactions.
    shutdown: Shutdown,
    /// Most publish requests per transaction.
    batch_size: usize,
}

/// Where capture reads from, for [`Ingest::run`].
pub struct Capture {
    /// The mechanism.
    pub kind: SourceKind,
    /// A slot to read up to its switch before trigger capture starts.
    pub retiring: Option<Retiring>,
    /// The runtime pool.
    pub pool: Pool,
    /// Where the sources' own connections go (LISTEN, replication).
    pub database: DatabaseConfig,
    /// Capture settings.
    pub config: CaptureConfig,
}

impl Ingest {
    /// The single writer over `outbox`.
    pub fn new(
        outbox: Outbox,
        router: Arc<Router>,
        requests: mpsc::Receiver<PublishRequest>,
        status: Arc<CaptureStatus>,
        shutdown: Shutdown,
        batch_size: usize,
    ) -> Self {
        Self {
            outbox,
            router,
            requests,
            status,
            shutdown,
            batch_size,
        }
    }

    /// Runs capture until shutdown or a fatal error: first a retiring slot
    /// up to its switch (then it is dropped), then the configured source.
    pub async fn run(mut self, capture: Capture) -> Result<(), CaptureError> {
        let Capture {
            kind,
            retiring,
            pool,
            database,
            config,
        } = capture;
        if let Some(retiring) = retiring {
            tracing::info!(slot = %retiring.slot, "reading the replication slot up to the switch to trigger capture");
            let slot = LogicalSource::new(
                pool.clone(),
                database.clone(),
                self.router.clone(),
                config.clone(),
            )
            .retiring(retiring.clone());
            if !self.ingest(slot).await? {
                // Interrupted: the slot still holds changes nobody stored yet.
                return Ok(());
            }
            logical::drop_retired(&pool, &retiring).await?;
        }
        if kind == SourceKind::Logical {
            let slot = LogicalSource::new(pool, database, self.router.clone(), config);
            self.ingest(slot).await?;
            return Ok(());
        }
        let trigger = TriggerSource::new(pool, database, self.router.clone(), &config);
        self.ingest(trigger).await?;
        Ok(())
    }

    /// Runs sessions of `source` with backoff until shutdown (false) or
    /// until the source finished (true).
    async fn ingest<S: Source>(&mut self, mut source: S) -> Result<bool, CaptureError> {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        loop {
            let result = self.session(&mut source, &mut backoff).await;
            source.close();
            self.status.set_running(false);
            match result {
                Ok(finished) => return Ok(finished),
                Err(e) if e.is_transient() => {
                    let delay = backoff.next_delay();
                    tracing::warn!(mode = source.kind().name(), error = %e, retry_in_ms = delay.as_millis() as u64, "capture interrupted");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.shutdown.wait() => return Ok(false),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One connected stretch: store what the source has, and between
    /// batches serve publish requests, coalescing deadlines and shutdown.
    async fn session<S: Source>(
        &mut self,
        source: &mut S,
        backoff: &mut Backoff,
    ) -> Result<bool, CaptureError> {
        source.open().await?;
        self.outbox.resync().await?;
        self.status.set_running(true);
        backoff.reset();
        loop {
            while let Some(batch) = source.poll()? {
                if self.store(source, batch).await? == Progress::Finished {
                    return Ok(true);
                }
                if self.shutdown.is_triggered() {
                    self.final_sweep(source).await?;
                    return Ok(false);
                }
                self.publish_queued().await?;
            }
            let flush_at = self.outbox.next_flush();
            tokio::select! {
                waited = source.wait() => waited?,
                request = self.requests.recv() => {
                    if let Some(first) = request {
                        self.publish(first).await?;
                    }
                }
                _ = sleep_until(flush_at) => self.store_due().await?,
                _ = self.shutdown.wait() => {
                    self.final_sweep(source).await?;
                    return Ok(false);
                }
            }
        }
    }

    /// On shutdown: stores what the source already has (bounded, so a
    /// large backlog is left for the next start), and queued publishes.
    async fn final_sweep<S: Source>(&mut self, source: &mut S) -> Result<(), CaptureError> {
        const FINAL_BATCHES: usize = 16;
        source.stopping();
        self.publish_queued().await?;
        for _ in 0..FINAL_BATCHES {
            let Some(batch) = source.poll()? else {
                break;
            };
            if self.store(source, batch).await? == Progress::Finished {
                break;
            }
        }
        Ok(())
    }

    /// Stores one batch of the source in one outbox transaction (with any
    /// coalesced bursts that are due), then delivers it.
    async fn store<S: Source>(
        &mut self,
        source: &mut S,
        mut batch: S::Batch,
    ) -> Result<Progress, CaptureError> {
        let flush = self
            .outbox
            .next_flush()
            .is_some_and(|due| due <= tokio::time::Instant::now());
        let committed = {
            let mut client = self.outbox.pool().get().await?;
            let mut tx = self.outbox.begin(&mut client).await?;
            let written = source.write(&mut batch, &mut tx).await?;
            if flush {
                tx.flush_due();
            }
            if !written.consumed && !flush {
                None
            } else {
                Some(tx.commit(written.position).await?)
            }
        };
        if let Some(committed) = committed {
            self.outbox.deliver(committed).await?;
        }
        source.committed(batch).await
    }

    /// Stores coalesced bursts whose window closed.
    async fn store_due(&mut self) -> Result<(), CaptureError> {
        let committed = {
            let mut client = self.outbox.pool().get().await?;
            let mut tx = self.outbox.begin(&mut client).await?;
            tx.flush_due();
            tx.commit(None).await?
        };
        self.outbox.deliver(committed).await?;
        Ok(())
    }
}
