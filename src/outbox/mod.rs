//! The outbox: every event stored once, under a global `seq`, by a single
//! writer.
//!
//! An [`OutboxTx`] is one outbox transaction. It locks the one-row
//! `realtime.state`, which serializes writers and yields the current head,
//! so `seq` is assigned in commit order with no hole, even if a second relay
//! ran against the same database. Capture consumes its input inside the same
//! transaction (trigger mode deletes the capture rows, logical mode stores
//! the source position), so each committed change is stored exactly once
//! whatever crashes happen. Only after COMMIT succeeds are the events handed
//! to the [`Subscriber`] (the fanout).

mod pending;
mod read;
mod retention;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{ClientWrapper, Pool};
use time::OffsetDateTime;
use tokio::time::Instant;
use tokio_postgres::types::PgLsn;

use crate::db::DbError;
use crate::event::{AccessChange, CaptureGap, Captured, Change, Event, Published, StoredEvent};
use crate::route::Router;

pub use read::{room_events, stored, RoomPage, Span, EVENTS_AFTER};
pub use stream::EventStream;

/// The channel every outbox transaction that stored events notifies, with
/// the new head as payload: other nodes' wake-up to read the outbox (a
/// wake-up only; they also read it periodically).
pub const HEAD_CHANNEL: &str = "realtime_outbox";

/// The channel an outbox transaction whose changes may take rights away
/// notifies, with those changes as JSON (`"*"` when they do not fit in a
/// notification): other nodes re-check their own members.
pub const ACCESS_CHANNEL: &str = "realtime_access";

/// The channel an outbox transaction that stored events another node
/// handed to the leader notifies, with `[[token, seq], ...]`: that node
/// answers its publish requests.
pub const PUBLISHED_CHANNEL: &str = "realtime_published";

/// Largest notification payload Postgres takes, with a margin.
const MAX_PAYLOAD: usize = 7900;
pub use retention::retain;

/// Receives stored events after the transaction that stored them committed.
///
/// Contract: called from the single writer, in `seq` order, each `seq`
/// exactly once per process and with no gap (a gap left by a commit whose
/// outcome was unknown is filled from the table first). Must not block: it
/// runs on the writer's path.
pub trait Subscriber: Send + Sync + 'static {
    /// Takes a batch of newly stored events.
    fn stored(&self, events: &[Arc<StoredEvent>]);

    /// After the events of the same transaction: changes that may have
    /// taken rights away. At most once (lost if the relay stops between
    /// commit and delivery; the periodic re-check covers that).
    fn access_changed(&self, _changes: Vec<AccessChange>) {}

    /// Every event up to `head` is in the outbox (called after a commit,
    /// and after events were read back from it). Events may be handed to
    /// [`stored`](Self::stored) before their commit (logical capture
    /// delivers at WAL durability); this says when their rows are there.
    fn durable(&self, _head: i64) {}
}

/// Where the logical capture stood after a transaction: which source
/// transaction (by its commit LSN) and how many of its changes are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourcePosition {
    /// Commit LSN of the source transaction.
    pub lsn: u64,
    /// Changes of it already stored.
    pub changes: i64,
    /// Whether all of it is stored.
    pub done: bool,
}

/// The outbox writer's long-lived side: delivery bookkeeping and the
/// coalescing deadline.
pub struct Outbox {
    /// The runtime pool.
    pool: Pool,
    /// The fanout.
    subscriber: Arc<dyn Subscriber>,
    /// Also gets every delivered event, on the leader of a bus that
    /// carries stored events (it publishes them to the other nodes).
    forward: Option<Arc<dyn Subscriber>>,
    /// Last seq handed to the subscriber.
    delivered: i64,
    /// Last seq known to be in the outbox. Below `delivered` while events
    /// delivered at WAL durability are being written, or after a write of
    /// them failed: the stream derives them again, with the same seqs.
    stored: i64,
    /// When the earliest held coalesced burst is due.
    next_flush: Option<Instant>,
    /// A transaction opened ahead of the next batch, already holding the
    /// state row lock, and when it was opened (see [`prelock`](Self::prelock)).
    ahead: Option<(OutboxTx, Instant)>,
}

impl Outbox {
    /// Opens the outbox: the subscriber starts after the current head.
    pub async fn open(pool: Pool, subscriber: Arc<dyn Subscriber>) -> Result<Self, DbError> {
        let client = pool.get().await?;
        let row = client
            .query_one(
                "SELECT head, (SELECT extract(epoch FROM min(flush_at) - clock_timestamp())::float8 FROM realtime.pending) FROM realtime.state",
                &[],
            )
            .await?;
        let head: i64 = row.get(0);
        let due_in: Option<f64> = row.get(1);
        drop(client);
        Ok(Self {
            pool,
            subscriber,
            forward: None,
            delivered: head,
            stored: head,
            next_flush: due_in.map(pending::deadline_in),
            ahead: None,
        })
    }

    /// The pool the outbox writes with.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Last seq handed to the subscriber.
    pub fn delivered(&self) -> i64 {
        self.delivered
    }

    /// Whether everything delivered is in the outbox. Until it is, only
    /// the stream may take seqs (it derives the delivered ones again):
    /// explicit events and due bursts wait.
    pub fn settled(&self) -> bool {
        self.stored >= self.delivered
    }

    /// When held coalesced events must be flushed, if any are held (none
    /// while not [`settled`](Self::settled)).
    pub fn next_flush(&self) -> Option<Instant> {
        self.next_flush.filter(|_| self.settled())
    }

    /// Starts an outbox transaction: the one opened ahead, if any, or a new
    /// one on a session of the pool.
    pub async fn begin(&mut self) -> Result<OutboxTx, DbError> {
        let mut tx = match self.ahead.take() {
            // A session Postgres closed (terminated, timed out) has lost
            // its lock: the batch then waits for a fresh one.
            Some((tx, _)) if !tx.transaction().is_closed() => tx,
            _ => OutboxTx::open(self.pool.get().await?).await?,
        };
        // The head cannot have moved while the lock was held; what this
        // node delivered meanwhile (events read back, a follower's catch-up)
        // may have.
        tx.delivered = self.delivered;
        if tx.head < self.stored {
            tx.rewound(self.delivered);
        }
        Ok(tx)
    }

    /// Opens the next outbox transaction now, so that the next batch finds
    /// the state row locked and its head known, and can be delivered with
    /// no round trip to the database before the fan-out (logical capture,
    /// delivering at WAL durability). While it is open, nothing else can
    /// take a seq: every other outbox transaction of this node takes it
    /// over through [`begin`](Self::begin), and the caller
    /// [releases](Self::release) it before any other work on
    /// `realtime.state` and once it has been idle for [`AHEAD_IDLE`].
    /// `reopened` is a transaction the last commit already opened (see
    /// [`OutboxTx::commit_reopening`]).
    pub async fn prelock(&mut self, reopened: Option<OutboxTx>) -> Result<(), DbError> {
        if self.ahead.is_none() {
            let tx = match reopened {
                Some(tx) => tx,
                None => OutboxTx::open(self.pool.get().await?).await?,
            };
            self.ahead = Some((tx, Instant::now()));
        }
        Ok(())
    }

    /// When the transaction opened ahead must be released for idleness, if
    /// one is open.
    pub fn ahead_idle_at(&self) -> Option<Instant> {
        self.ahead.as_ref().map(|(_, opened)| *opened + AHEAD_IDLE)
    }

    /// Rolls back the transaction opened ahead, if any: the state row is
    /// free again (for retention, another session of this node, or the next
    /// leader).
    pub async fn release(&mut self) {
        if let Some((tx, _)) = self.ahead.take() {
            tx.rollback().await;
        }
    }

    /// Delivers the events of an open transaction before it commits: what
    /// logical capture does once the change is durable in the WAL. Their
    /// seqs follow the head the transaction locked, in stream order, so
    /// if the commit fails the stream derives the same events under the
    /// same seqs again (and those already delivered are not sent twice).
    pub fn deliver_ahead(&mut self, tx: &mut OutboxTx) {
        self.hand_on_fresh(tx.seal().to_vec());
    }

    /// Hands committed events to the subscriber, first filling any gap
    /// left by a commit whose outcome was not known (its events are read
    /// back from the table).
    pub async fn deliver(&mut self, mut committed: Committed) -> Result<(), DbError> {
        if let Some(deadline) = committed.held_until {
            self.next_flush = Some(self.next_flush.map_or(deadline, |d| d.min(deadline)));
        }
        if committed.flushed {
            self.next_flush = committed.next_flush;
        }
        let access = std::mem::take(&mut committed.access);
        self.known_stored(committed.head);
        let stored = committed.events.len();
        self.deliver_events(committed.events).await?;
        metrics::counter!("rowcast_events_stored_total").increment(stored as u64);
        if !access.is_empty() {
            self.subscriber.access_changed(access);
        }
        Ok(())
    }

    /// Hands stored events to the subscriber, in seq order, none twice
    /// (any gap before them is read from the table first); how many were
    /// new.
    async fn deliver_events(&mut self, events: Vec<Arc<StoredEvent>>) -> Result<usize, DbError> {
        let Some(first) = events.first() else {
            return Ok(0);
        };
        if first.seq > self.delivered + 1 {
            self.catch_up(first.seq - 1).await?;
            if first.seq > self.delivered + 1 {
                // Not in the outbox yet (a leader delivering at WAL
                // durability): the next head announcement brings them.
                return Ok(0);
            }
        }
        Ok(self.hand_on_fresh(events))
    }

    /// Hands on the events above the last delivered seq (in seq order,
    /// none twice); how many.
    fn hand_on_fresh(&mut self, events: Vec<Arc<StoredEvent>>) -> usize {
        let fresh: Vec<Arc<StoredEvent>> = events
            .into_iter()
            .filter(|e| e.seq > self.delivered)
            .collect();
        if let Some(last) = fresh.last() {
            tracing::debug!(events = fresh.len(), head = last.seq, "events delivered");
            self.delivered = last.seq;
            self.hand_on(&fresh);
        }
        fresh.len()
    }

    /// The outbox holds every event up to `head` (a commit, a read, or
    /// another node's announcement).
    pub fn known_stored(&mut self, head: i64) {
        if head > self.stored {
            self.stored = head;
            self.subscriber.durable(head);
        }
    }

    /// Hands events that follow the delivered ones to the subscriber (and
    /// to the forward, if any).
    fn hand_on(&self, events: &[Arc<StoredEvent>]) {
        self.subscriber.stored(events);
        if let Some(forward) = &self.forward {
            forward.stored(events);
        }
    }

    /// Delivers everything stored up to `head` that was not delivered yet
    /// (after a reconnect, or a commit whose result was lost).
    pub async fn catch_up(&mut self, head: i64) -> Result<(), DbError> {
        while self.delivered < head {
            let client = self.pool.get().await?;
            let batch = read::range(&client, self.delivered, head, 1000).await?;
            let Some(last) = batch.last() else { break };
            self.delivered = last.seq;
            self.known_stored(last.seq);
            self.hand_on(&batch);
        }
        Ok(())
    }

    /// Hands access changes another node announced to the subscriber.
    pub fn announce_access(&self, changes: Vec<AccessChange>) {
        if !changes.is_empty() {
            self.subscriber.access_changed(changes);
        }
    }

    /// Reads the stored head and delivers anything not delivered yet. A
    /// head below what this node delivered means a failover took the
    /// newest events away: a gap marker is stored above them at once.
    pub async fn resync(&mut self) -> Result<(), DbError> {
        let client = self.pool.get().await?;
        let head: i64 = client
            .query_one("SELECT head FROM realtime.state", &[])
            .await?
            .get(0);
        if head < self.stored {
            drop(client);
            let committed = self.begin().await?.commit(None).await?;
            return self.deliver(committed).await;
        }
        drop(client);
        self.known_stored(head);
        self.catch_up(head).await
    }
}

impl Drop for OutboxTx {
    fn drop(&mut self) {
        // Unfinished: the session must not go back to the pool inside the
        // transaction. Closing it makes Postgres roll back.
        if let Some(client) = self.client.take() {
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

/// What a committed outbox transaction produced.
#[derive(Debug, Default)]
pub struct Committed {
    /// The stored events, in seq order.
    pub events: Vec<Arc<StoredEvent>>,
    /// The head after it.
    head: i64,
    /// When the bursts it started holding are due.
    held_until: Option<Instant>,
    /// Whether it flushed due bursts (then `next_flush` is the new deadline).
    flushed: bool,
    /// The next deadline after a flush.
    next_flush: Option<Instant>,
    /// Changes that may have taken rights away.
    access: Vec<AccessChange>,
}

/// Longest a transaction opened ahead of the next batch stays open with
/// no batch: it holds the state row lock (retention waits for it) and a
/// transaction id (vacuum's horizon).
pub const AHEAD_IDLE: Duration = Duration::from_millis(500);

/// One outbox transaction. It owns its session, so that it can be opened
/// ahead of the batch it will store. Dropped without
/// [`commit`](Self::commit) or [`rollback`](Self::rollback) (an error on
/// the way), it closes the session instead of returning it to the pool,
/// and Postgres rolls the transaction back.
pub struct OutboxTx {
    /// The session, in an open transaction holding the state row lock
    /// (`None` once finished).
    client: Option<deadpool_postgres::Client>,
    /// Head at the start of the transaction; after [`seal`](Self::seal),
    /// the seq of the last sealed event.
    head: i64,
    /// The last seq the outbox had delivered when the transaction began.
    delivered: i64,
    /// Events given their seqs already (delivered before the commit).
    sealed: Vec<Arc<StoredEvent>>,
    /// Events to store, in order.
    events: Vec<Event>,
    /// Events of coalescing routes, to hold.
    held: Vec<Event>,
    /// Changes that may take rights away, announced after commit.
    access: Vec<AccessChange>,
    /// Whether to flush bursts whose window closed.
    flush_pending: bool,
    /// The highest position logical capture may let its slot confirm
    /// once this transaction commits.
    slot_confirmed: Option<u64>,
    /// Gaps whose markers this transaction stores, in the order of their
    /// markers among `events`.
    gaps: Vec<CaptureGap>,
    /// Events another node waits for: its token, and the event's place
    /// among the events this transaction stores.
    replies: Vec<(String, usize)>,
}

impl OutboxTx {
    /// Begins a transaction on `client` and locks the state row.
    async fn open(client: deadpool_postgres::Client) -> Result<Self, DbError> {
        let mut tx = Self::on(client, 0);
        tx.head = begin_locked(tx.transaction()).await?;
        Ok(tx)
    }

    /// The transaction on `client`, which holds the state row lock and
    /// read `head`.
    fn on(client: deadpool_postgres::Client, head: i64) -> Self {
        Self {
            client: Some(client),
            head,
            delivered: 0,
            sealed: Vec::new(),
            events: Vec::new(),
            held: Vec::new(),
            access: Vec::new(),
            flush_pending: false,
            slot_confirmed: None,
            gaps: Vec::new(),
            replies: Vec::new(),
        }
    }

    /// The session in its open transaction, for capture to consume its
    /// input in it.
    pub fn transaction(&self) -> &ClientWrapper {
        self.client
            .as_ref()
            .expect("an outbox transaction is used only while open")
    }

    /// Rolls back, and the session goes back to the pool; one that cannot
    /// roll back at once is closed (by `drop`).
    pub async fn rollback(mut self) {
        const WITHIN: Duration = Duration::from_secs(1);
        if let Some(client) = &self.client {
            let rolled_back = tokio::time::timeout(WITHIN, client.batch_execute("ROLLBACK")).await;
            if matches!(rolled_back, Ok(Ok(()))) {
                self.client = None;
            }
        }
    }

    /// Queues events; coalescing ones are held instead of stored.
    pub fn append(&mut self, events: impl IntoIterator<Item = Event>) {
        for event in events {
            if event.rooms.is_empty() {
                continue;
            }
            if event.coalesce.is_some() {
                self.held.push(event);
            } else {
                self.events.push(event);
            }
        }
    }

    /// Routes a captured change: queues its events and notes what it means
    /// for access.
    pub fn route(&mut self, router: &Router, change: &Change) {
        let queued = self.sealed.len() + self.events.len();
        self.append(router.route(change));
        if let Captured::Published(Published {
            reply: Some(token), ..
        }) = &change.captured
        {
            if self.sealed.len() + self.events.len() > queued {
                self.replies.push((token.clone(), queued));
            }
        }
        if let Some(access) = router.access(change) {
            self.access.push(access);
        }
    }

    /// Also stores held bursts whose window has closed.
    pub fn flush_due(&mut self) {
        self.flush_pending = true;
    }

    /// Records that the replication slot may confirm up to `lsn` once this
    /// transaction commits. The record comes first, so the slot can never
    /// be ahead of it: a slot found ahead was consumed by someone else.
    pub fn confirm_slot(&mut self, lsn: u64) {
        self.slot_confirmed = Some(self.slot_confirmed.map_or(lsn, |l| l.max(lsn)));
    }

    /// Gives the events queued so far their seqs, for delivery before the
    /// commit; they are stored first.
    fn seal(&mut self) -> &[Arc<StoredEvent>] {
        let start = self.sealed.len();
        let sealed = std::mem::take(&mut self.events)
            .into_iter()
            .zip(self.head + 1..)
            .map(|(event, seq)| Arc::new(StoredEvent { seq, event }));
        self.sealed.extend(sealed);
        if let Some(last) = self.sealed.last() {
            self.head = last.seq;
        }
        &self.sealed[start..]
    }

    /// Stores a gap marker for `gap`, after the events queued so far.
    pub fn capture_gap(&mut self, gap: CaptureGap) {
        metrics::counter!("rowcast_capture_gaps_total").increment(1);
        self.events.push(Event::gap_marker(&gap));
        self.gaps.push(gap);
    }

    /// The head is below what this node already delivered: the database
    /// lost the newest events (a failover to a standby that had not
    /// received them), and their seqs would be handed out again. Seqs
    /// resume above `delivered`, after a gap marker.
    fn rewound(&mut self, delivered: i64) {
        let reason = format!(
            "the outbox head went back from seq {delivered} to {}: the database lost its newest events (a failover to a standby that had not received them)",
            self.head
        );
        tracing::error!(head = self.head, delivered, "capture gap: {reason}; seqs resume above {delivered}, and clients resuming from before get gap: true");
        self.head = delivered;
        self.capture_gap(CaptureGap {
            slot: None,
            last_lsn: None,
            reason,
        });
    }

    /// Writes everything, records `position` (logical mode), and commits.
    pub async fn commit(self, position: Option<SourcePosition>) -> Result<Committed, DbError> {
        Ok(self.finish(position, false).await?.0)
    }

    /// [`commit`](Self::commit)s, and opens the next transaction on the same
    /// session in the same round trip where it can (the usual batch): the
    /// state row lock then passes straight to it. `None` when it could not
    /// be opened; the commit stands.
    pub async fn commit_reopening(
        self,
        position: Option<SourcePosition>,
    ) -> Result<(Committed, Option<OutboxTx>), DbError> {
        self.finish(position, true).await
    }

    async fn finish(
        mut self,
        position: Option<SourcePosition>,
        reopen: bool,
    ) -> Result<(Committed, Option<OutboxTx>), DbError> {
        let held_until = pending::hold(self.transaction(), &self.held).await?;
        let mut next_flush = None;
        if self.flush_pending {
            let (due, next) = pending::take_due(self.transaction()).await?;
            self.events.extend(due);
            next_flush = next;
        }
        // With nothing to send after the events (the usual batch), the
        // COMMIT goes out right behind them, in the same round trip.
        let behind = match (
            self.gaps.is_empty() && self.replies.is_empty() && self.access.is_empty(),
            reopen,
        ) {
            (false, _) => Behind::Nothing,
            (true, false) => Behind::Commit,
            (true, true) => Behind::CommitAndBegin,
        };
        let (stored, next) = self.store(position, behind).await?;
        if self.client.is_none() {
            return Ok((self.committed(stored, held_until, next_flush), next));
        }
        self.notify_replies(&stored).await?;
        if !self.access.is_empty() {
            let payload = serde_json::to_string(&self.access).unwrap_or_default();
            let payload = if payload.is_empty() || payload.len() > MAX_PAYLOAD {
                "*".to_string()
            } else {
                payload
            };
            self.notify(ACCESS_CHANNEL, &payload).await?;
        }
        self.transaction().batch_execute("COMMIT").await?;
        self.client = None;
        Ok((self.committed(stored, held_until, next_flush), None))
    }

    fn committed(
        &mut self,
        events: Vec<Arc<StoredEvent>>,
        held_until: Option<Instant>,
        next_flush: Option<Instant>,
    ) -> Committed {
        Committed {
            head: self.head,
            events,
            held_until,
            flushed: self.flush_pending,
            next_flush,
            access: std::mem::take(&mut self.access),
        }
    }

    /// Tells the nodes that handed events to this one their seqs, in
    /// notifications that fit.
    async fn notify_replies(&self, stored: &[Arc<StoredEvent>]) -> Result<(), DbError> {
        let answers: Vec<(&str, i64)> = self
            .replies
            .iter()
            .filter_map(|(token, at)| Some((token.as_str(), stored.get(*at)?.seq)))
            .collect();
        let mut start = 0;
        while start < answers.len() {
            let mut end = answers.len();
            let mut payload = serde_json::to_string(&answers[start..end]).unwrap_or_default();
            while payload.len() > MAX_PAYLOAD && end > start + 1 {
                end = start + (end - start) / 2;
                payload = serde_json::to_string(&answers[start..end]).unwrap_or_default();
            }
            self.notify(PUBLISHED_CHANNEL, &payload).await?;
            start = end;
        }
        Ok(())
    }

    async fn notify(&self, channel: &str, payload: &str) -> Result<(), DbError> {
        let notify = self
            .transaction()
            .prepare_cached("SELECT pg_notify($1, $2)")
            .await?;
        self.transaction()
            .execute(&notify, &[&channel, &payload])
            .await?;
        Ok(())
    }

    /// Stores the events and the position and tells the nodes the new
    /// head, with what `behind` says in the same flight. Unless it is
    /// [`Behind::Nothing`], the transaction is finished when this returns
    /// `Ok`, and the next one is returned when it was opened.
    async fn store(
        &mut self,
        position: Option<SourcePosition>,
        behind: Behind,
    ) -> Result<(Vec<Arc<StoredEvent>>, Option<OutboxTx>), DbError> {
        if self.sealed.is_empty() && !self.events.is_empty() && self.head < self.delivered {
            // Events were delivered under these seqs and the stream cannot
            // bring them again (a capture gap took them): seqs resume above.
            tracing::error!(
                head = self.head,
                delivered = self.delivered,
                "events delivered before their commit are lost; seqs resume above them"
            );
            self.head = self.delivered;
        }
        self.seal();
        let stored = std::mem::take(&mut self.sealed);
        if stored.is_empty() && position.is_none() && self.slot_confirmed.is_none() {
            return Ok((stored, None));
        }
        let head = stored.last().map_or(self.head, |e| e.seq);
        self.head = head;
        let columns = Columns::of(&stored);
        let session = self.transaction();
        let statement = session.prepare_cached(INSERT_EVENTS).await?;
        let (lsn, changes, done) = match position {
            Some(p) => (Some(PgLsn::from(p.lsn)), p.changes, p.done),
            None => (None, 0, true),
        };
        let confirmed = self.slot_confirmed.map(PgLsn::from);
        let announce = stored.last().map(|last| last.seq.to_string());
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 16] = [
            &columns.seq,
            &columns.event,
            &columns.rooms,
            &columns.data,
            &columns.old,
            &columns.count,
            &columns.at,
            &columns.room,
            &columns.room_seq,
            &head,
            &lsn,
            &changes,
            &done,
            &confirmed,
            &HEAD_CHANNEL,
            &announce,
        ];
        let insert = session.execute(&statement, &params);
        // Pipelined: a failed insert turns the COMMIT behind it into a
        // rollback, and its own error is what is returned.
        match behind {
            Behind::Nothing => {
                insert.await?;
                self.store_gaps(&stored).await?;
                Ok((stored, None))
            }
            Behind::Commit => {
                let (inserted, committed) = tokio::join!(insert, session.batch_execute("COMMIT"));
                inserted?;
                committed?;
                self.client = None;
                Ok((stored, None))
            }
            Behind::CommitAndBegin => {
                let (inserted, committed, begun) = tokio::join!(
                    insert,
                    session.batch_execute("COMMIT"),
                    begin_locked(session)
                );
                inserted?;
                committed?;
                let client = self.client.take().expect("committed on its session");
                let next = match begun {
                    Ok(head) => Some(OutboxTx::on(client, head)),
                    // Whatever state the session is in, it is not reused.
                    Err(_) => {
                        drop(deadpool_postgres::Object::take(client));
                        None
                    }
                };
                Ok((stored, next))
            }
        }
    }

    /// Records the gaps whose markers were just stored.
    async fn store_gaps(&mut self, stored: &[Arc<StoredEvent>]) -> Result<(), DbError> {
        let markers = stored.iter().filter(|e| e.is_gap_marker());
        for (marker, gap) in markers.zip(std::mem::take(&mut self.gaps)) {
            self.transaction()
                .execute(
                    "WITH gap AS (
                        INSERT INTO realtime.capture_gaps (seq, slot, last_lsn, reason)
                        VALUES ($1, $2, $3, $4)
                     )
                     UPDATE realtime.state SET gap_seq = greatest(gap_seq, $1)",
                    &[
                        &marker.seq,
                        &gap.slot,
                        &gap.last_lsn.map(PgLsn::from),
                        &gap.reason,
                    ],
                )
                .await?;
        }
        Ok(())
    }
}

/// What an outbox transaction's insert sends behind it, in the same flight.
#[derive(Clone, Copy)]
enum Behind {
    /// Nothing: more statements follow (gap records, notifications).
    Nothing,
    /// Its COMMIT.
    Commit,
    /// Its COMMIT, then the next transaction's BEGIN and lock.
    CommitAndBegin,
}

/// Begins a transaction on `session` and locks the state row, in one
/// round trip (pipelined); the head. If BEGIN failed, the lock was taken
/// outside a transaction and is gone, and BEGIN's error is returned: the
/// caller then closes the session rather than reuse it.
async fn begin_locked(session: &ClientWrapper) -> Result<i64, DbError> {
    let lock = session
        .prepare_cached("SELECT head FROM realtime.state FOR UPDATE")
        .await?;
    let (begun, locked) = tokio::join!(
        session.batch_execute("BEGIN"),
        session.query_one(&lock, &[])
    );
    begun?;
    Ok(locked?.get(0))
}

/// Stores events and their rooms, moves the head (and the logical
/// position, when one is given) and, when events were stored, tells the
/// nodes the new head, in one statement.
const INSERT_EVENTS: &str = "
WITH events AS (
    INSERT INTO realtime.outbox (seq, event, rooms, data, old, count, committed_at)
    SELECT s, e, r::text[], d::json, o::json, c, t
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::timestamptz[])
         AS x(s, e, r, d, o, c, t)
), rooms AS (
    INSERT INTO realtime.outbox_rooms (room, seq)
    SELECT * FROM unnest($8::text[], $9::bigint[])
), state AS (
    UPDATE realtime.state
    SET head = $10,
        source_lsn = coalesce($11::pg_lsn, source_lsn),
        source_changes = CASE WHEN $11::pg_lsn IS NULL THEN source_changes ELSE $12 END,
        source_done = CASE WHEN $11::pg_lsn IS NULL THEN source_done ELSE $13 END,
        slot_confirmed = greatest(slot_confirmed, $14::pg_lsn)
    RETURNING head
)
SELECT pg_notify($15, $16) FROM state WHERE $16::text IS NOT NULL";

/// Column arrays for the multi-row insert.
struct Columns<'e> {
    seq: Vec<i64>,
    event: Vec<&'e str>,
    rooms: Vec<String>,
    data: Vec<&'e str>,
    old: Vec<Option<&'e str>>,
    count: Vec<Option<i32>>,
    at: Vec<OffsetDateTime>,
    room: Vec<&'e str>,
    room_seq: Vec<i64>,
}

impl<'e> Columns<'e> {
    fn of(events: &'e [Arc<StoredEvent>]) -> Self {
        let mut c = Columns {
            seq: Vec::with_capacity(events.len()),
            event: Vec::with_capacity(events.len()),
            rooms: Vec::with_capacity(events.len()),
            data: Vec::with_capacity(events.len()),
            old: Vec::with_capacity(events.len()),
            count: Vec::with_capacity(events.len()),
            at: Vec::with_capacity(events.len()),
            room: Vec::new(),
            room_seq: Vec::new(),
        };
        for e in events {
            c.seq.push(e.seq);
            c.event.push(&e.name);
            c.rooms.push(array_literal(&e.rooms));
            c.data.push(&e.data);
            c.old.push(e.old.as_deref());
            c.count.push(e.count);
            c.at.push(e.at);
            for room in &e.rooms {
                c.room.push(room);
                c.room_seq.push(e.seq);
            }
        }
        c
    }
}

/// A text-array literal of room names. Room names never contain quotes,
/// backslashes, commas or braces, so quoting each element is enough (and
/// keeps a room called `NULL` a string).
pub(crate) fn array_literal(rooms: &[String]) -> String {
    let mut text = String::from("{");
    for (i, room) in rooms.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push('"');
        text.push_str(room);
        text.push('"');
    }
    text.push('}');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_arrays_quote_every_element() {
        assert_eq!(
            array_literal(&["a_1".into(), "NULL".into()]),
            r#"{"a_1","NULL"}"#
        );
        assert_eq!(array_literal(&[]), "{}");
    }
}
