//! Ingest: the single writer of the outbox. One loop, whatever the capture
//! source, owns the outbox transaction: it takes batches from a
//! [`Source`], stores their events and the source's progress in one
//! transaction, then hands the committed events to the fanout. The same
//! loop stores explicit events ([`PublishRequest`]s: HTTP publish,
//! presence) and coalesced bursts whose window closed, so every stored
//! event gets its `seq` from one place. Transient failures are retried
//! here, with backoff, for every source alike.

mod heads;
mod leader;
mod publish;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::mpsc;

use crate::capture::logical::{self, LogicalSource};
use crate::capture::switch::Retiring;
use crate::capture::trigger::TriggerSource;
use crate::capture::{self, CaptureError, CaptureStatus, Progress, Source, SourceKind};
use crate::config::{CaptureConfig, DeliverAt};
use crate::db::{Backoff, DatabaseConfig};
use crate::duration::sleep_until;
use crate::event::StoredEvent;
use crate::outbox::{EventStream, Outbox};
use crate::route::Router;
use crate::shutdown::Shutdown;

use heads::Heads;
pub use leader::{Leadership, ATTEMPT_EVERY};
pub use publish::{PublishError, PublishRequest};

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
    /// Stored events carried by the bus, when it carries them.
    stream: Option<EventStream>,
    /// A follower with a stream: when the outbox is read anyway if the
    /// stream has not brought the head announced by then.
    stalled_until: Option<tokio::time::Instant>,
    /// Whether events the stream alone decides are delivered before their
    /// outbox transaction commits (`ROWCAST_DELIVER=wal`).
    deliver_ahead: bool,
    /// This process's prefix of hand-off tokens.
    node: String,
    /// Explicit events handed to the leader so far.
    handed: u64,
}

/// How long a follower waits for the stream to bring an announced head
/// before it reads the outbox.
const STREAM_GRACE: Duration = Duration::from_millis(250);

/// Where capture reads from, for [`Ingest::run`].
pub struct Capture {
    /// The mechanism.
    pub kind: SourceKind,
    /// The runtime pool.
    pub pool: Pool,
    /// Where the sources' own connections go (LISTEN, replication).
    pub database: DatabaseConfig,
    /// Capture settings.
    pub config: CaptureConfig,
    /// This node's claim on leadership.
    pub leadership: Leadership,
    /// Whether this node starts as the leader (capture already installed)
    /// or follows another.
    pub start: Start,
    /// Stored events carried by the bus (the NATS bus), if it does.
    pub stream: Option<EventStream>,
}

/// How a node starts.
pub enum Start {
    /// It holds the lock and installed capture; a retiring slot, if any,
    /// is read up to its switch first.
    Leading(Option<Retiring>),
    /// Another node leads.
    Following,
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
            stream: None,
            stalled_until: None,
            deliver_ahead: false,
            node: node_token(),
            handed: 0,
        }
    }

    /// Runs this node until shutdown or a fatal error: while another node
    /// leads, it follows the outbox (and stores its own explicit events);
    /// while it leads, it captures. Losing the lock stops capture at once.
    pub async fn run(mut self, capture: Capture) -> Result<(), CaptureError> {
        let Capture {
            kind,
            pool,
            database,
            config,
            mut leadership,
            start,
            stream,
        } = capture;
        self.stream = stream;
        self.deliver_ahead = config.deliver == DeliverAt::Wal;
        let mut heads = Heads::new(database.clone());
        let mut installed = match start {
            Start::Leading(retiring) => Some(retiring),
            Start::Following => None,
        };
        loop {
            let retiring = match installed.take() {
                Some(retiring) => retiring,
                None => {
                    if !self.follow(&mut leadership, &mut heads).await? {
                        return Ok(());
                    }
                    match capture::install(kind, &pool, &self.router, &config).await {
                        Ok(retiring) => retiring,
                        Err(e) if e.is_transient() => {
                            tracing::warn!(error = %e, "capture could not be installed; following again");
                            leadership.release();
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                }
            };
            tracing::info!(mode = kind.name(), "this node leads: it captures");
            metrics::gauge!("rowcast_leader").set(1.0);
            let forward = self.stream.as_ref().map(|s| s.forward.clone());
            self.outbox.forward_to(forward);
            let led = tokio::select! {
                result = self.lead(kind, retiring, &pool, &database, &config, &mut heads) => Some(result),
                _ = leadership.lost() => None,
            };
            metrics::gauge!("rowcast_leader").set(0.0);
            self.outbox.release().await;
            self.outbox.forward_to(None);
            self.status.set_running(false);
            match led {
                Some(result) => return result,
                None => {
                    tracing::warn!("lost the leader lock: capture stopped; following the outbox")
                }
            }
        }
    }

    /// Captures, as the leader: first a retiring slot up to its switch
    /// (then it is dropped), then the configured source.
    async fn lead(
        &mut self,
        kind: SourceKind,
        retiring: Option<Retiring>,
        pool: &Pool,
        database: &DatabaseConfig,
        config: &CaptureConfig,
        heads: &mut Heads,
    ) -> Result<(), CaptureError> {
        if let Some(retiring) = retiring {
            tracing::info!(slot = %retiring.slot, "reading the replication slot up to the switch to trigger capture");
            let slot = LogicalSource::new(
                pool.clone(),
                database.clone(),
                self.router.clone(),
                config.clone(),
            )
            .retiring(retiring.clone());
            if !self.ingest(slot, heads).await? {
                // Interrupted: the slot still holds changes nobody stored yet.
                return Ok(());
            }
            logical::drop_retired(pool, &retiring).await?;
        }
        if kind == SourceKind::Logical {
            let slot = LogicalSource::new(
                pool.clone(),
                database.clone(),
                self.router.clone(),
                config.clone(),
            );
            self.ingest(slot, heads).await?;
            return Ok(());
        }
        let trigger =
            TriggerSource::new(pool.clone(), database.clone(), self.router.clone(), config);
        self.ingest(trigger, heads).await?;
        Ok(())
    }

    /// Follows the outbox until this node takes the lead (true) or shuts
    /// down (false); transient failures are retried with backoff.
    async fn follow(
        &mut self,
        leadership: &mut Leadership,
        heads: &mut Heads,
    ) -> Result<bool, CaptureError> {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        loop {
            match self.follow_round(leadership, heads).await {
                Ok(Some(lead)) => return Ok(lead),
                Ok(None) => backoff.reset(),
                Err(e) if e.is_transient() => {
                    self.status.set_running(false);
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "following the outbox interrupted");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.shutdown.wait() => return Ok(false),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One attempt to lead, then [`ATTEMPT_EVERY`] of following: the
    /// outbox is read on every head notification, and this node's explicit
    /// events are stored. `Some(true)`: lead now; `Some(false)`: shutdown.
    async fn follow_round(
        &mut self,
        leadership: &mut Leadership,
        heads: &mut Heads,
    ) -> Result<Option<bool>, CaptureError> {
        if leadership.try_acquire().await? {
            return Ok(Some(true));
        }
        heads.ensure().await?;
        self.outbox.resync().await?;
        self.status.set_running(true);
        let until = tokio::time::Instant::now() + ATTEMPT_EVERY;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return Ok(None),
                _ = heads.changed() => self.follow_head(heads, false).await?,
                _ = sleep_until(self.stalled_until) => {
                    self.stalled_until = None;
                    self.follow_head(heads, false).await?;
                }
                event = received(&mut self.stream) => {
                    self.receive(event).await?;
                    if self.stalled_until.is_some() && self.outbox.delivered() >= heads.latest() {
                        self.follow_head(heads, false).await?;
                    }
                }
                request = self.requests.recv() => {
                    if let Some(first) = request {
                        self.hand_to_leader(first, heads.replies());
                    }
                }
                _ = self.shutdown.wait() => return Ok(Some(false)),
            }
        }
    }

    /// Reads the outbox up to the newest head another node announced,
    /// then hands on the access changes it announced (a leader found those
    /// itself while storing, so it drops them). A follower whose bus
    /// carries stored events first gives the stream [`STREAM_GRACE`] to
    /// bring them (the access changes wait with the events).
    async fn follow_head(&mut self, heads: &Heads, leading: bool) -> Result<(), CaptureError> {
        let lag = heads.latest() - self.outbox.delivered();
        metrics::gauge!("rowcast_outbox_lag").set(lag.max(0) as f64);
        if lag > 0 {
            if !leading && self.stream.is_some() {
                let now = tokio::time::Instant::now();
                let until = *self.stalled_until.get_or_insert(now + STREAM_GRACE);
                if until > now {
                    return Ok(());
                }
            }
            self.outbox.resync().await?;
        }
        self.stalled_until = None;
        self.outbox.known_stored(heads.latest());
        let access = heads.take_access();
        if !leading {
            self.outbox.announce_access(access);
        }
        Ok(())
    }

    /// Delivers an event received from the stream, with any others
    /// already waiting (a gap before them is read from the outbox).
    async fn receive(&mut self, first: Arc<StoredEvent>) -> Result<(), CaptureError> {
        let mut events = vec![first];
        if let Some(stream) = &mut self.stream {
            while events.len() < self.batch_size {
                match stream.received.try_recv() {
                    Ok(event) => events.push(event),
                    Err(_) => break,
                }
            }
        }
        self.outbox.receive(events).await?;
        Ok(())
    }

    /// Runs sessions of `source` with backoff until shutdown (false) or
    /// until the source finished (true).
    async fn ingest<S: Source>(
        &mut self,
        mut source: S,
        heads: &mut Heads,
    ) -> Result<bool, CaptureError> {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        loop {
            let result = self.session(&mut source, &mut backoff, heads).await;
            self.outbox.release().await;
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
        heads: &mut Heads,
    ) -> Result<bool, CaptureError> {
        source.open().await?;
        heads.ensure().await?;
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
            let settled = self.outbox.settled();
            let ahead_idle = self.outbox.ahead_idle_at();
            tokio::select! {
                waited = source.wait() => waited?,
                _ = sleep_until(ahead_idle) => self.outbox.release().await,
                // Until the stream has brought again what was delivered
                // ahead of a failed commit, only it may take seqs.
                request = self.requests.recv(), if settled => {
                    if let Some(first) = request {
                        self.publish(first).await?;
                    }
                }
                _ = sleep_until(flush_at) => self.store_due().await?,
                // Another node stored an explicit event.
                _ = heads.changed() => self.follow_head(heads, true).await?,
                // Its own events, back from the stream (or a former
                // leader's, still in flight).
                event = received(&mut self.stream) => self.receive(event).await?,
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
        self.outbox.release().await;
        if self.outbox.settled() {
            source.stopped().await?;
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
        let mut tx = self.outbox.begin().await?;
        let written = source.write(&mut batch, &mut tx).await?;
        let ahead = written.ahead && self.deliver_ahead;
        if ahead {
            self.outbox.deliver_ahead(&mut tx);
            // The connections' writers just woken run before the outbox
            // write is built and sent: delivery first, storage behind.
            tokio::task::yield_now().await;
        }
        if flush {
            tx.flush_due();
        }
        if !written.consumed && !flush {
            tx.rollback().await;
        } else {
            let (committed, reopened) = if ahead {
                tx.commit_reopening(written.position).await?
            } else {
                (tx.commit(written.position).await?, None)
            };
            self.outbox.deliver(committed).await?;
            if ahead {
                // The next batch of the stream then finds the lock taken.
                self.outbox.prelock(reopened).await?;
            }
        }
        source.committed(batch).await
    }

    /// Stores coalesced bursts whose window closed.
    async fn store_due(&mut self) -> Result<(), CaptureError> {
        let mut tx = self.outbox.begin().await?;
        tx.flush_due();
        let committed = tx.commit(None).await?;
        self.outbox.deliver(committed).await?;
        Ok(())
    }
}

/// The next event received from the stream; never resolves without one.
async fn received(stream: &mut Option<EventStream>) -> Arc<StoredEvent> {
    match stream {
        Some(stream) => match stream.received.recv().await {
            Some(event) => event,
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// A token no other relay process uses: its pid and a random number.
fn node_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    format!("{}-{:x}", std::process::id(), hasher.finish())
}
