//! The send half of a connection. It alone writes to the socket: the welcome,
//! replies, live events from the hub, replays, heartbeats and the close
//! frame. It is generic over the `Sink`, so it is tested with channels.
//!
//! Joining with `since` loses and repeats nothing: the reader subscribes the
//! room first (live events are then held here), asks for a replay of the
//! stored events up to the head it read after subscribing, and the writer
//! sends the replay, then the held events newer than what it replayed.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::{Sink, SinkExt};
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use super::{close, Closer, Control, Outgoing};
use crate::db::DbError;
use crate::fanout::RoomFrame;
use crate::outbox::{RoomPage, Span};
use crate::protocol::{self, frame};

/// Stored history, for replays.
pub trait History: Send + Sync + 'static {
    /// A page of a replay: a room's events in `span`, and whether events
    /// after `span.after` were already removed by retention (judged in the
    /// same snapshot as the page).
    fn page(
        &self,
        room: &str,
        span: Span,
    ) -> impl Future<Output = Result<RoomPage, DbError>> + Send;
}

/// Where a joined room stands.
enum Cursor {
    /// Replay pending: live events are held, in order.
    Holding(Vec<Arc<RoomFrame>>),
    /// Live: the last seq sent.
    Live(i64),
}

fn replay_failed(room: &str, error: impl std::fmt::Display) -> Stop {
    tracing::warn!(%error, %room, "replay failed");
    Stop::Close(close::INTERNAL)
}

/// Why writing stopped.
enum Stop {
    /// Close with this code.
    Close(u16),
    /// The socket is gone.
    Gone,
}

/// Frames written in one go before a flush.
const BATCH: usize = 128;
/// How long a close frame may take to get through to a client.
const CLOSE_GRACE: Duration = Duration::from_secs(10);
/// How long the 4008 close frame may wait for a client that stopped
/// reading: it goes out behind what the socket already holds, so the client
/// sees it once it reads again. The connection's queue is freed first, so
/// waiting holds little more than the socket.
pub const SLOW_CLOSE_GRACE: Duration = Duration::from_secs(60);

/// The writer's state.
pub struct ConnWriter<H> {
    /// Stored history for replays.
    history: Arc<H>,
    /// The connection's send queue.
    queue: mpsc::Receiver<Outgoing>,
    /// Close requests from the reader, the hub and shutdown.
    closer: Arc<Closer>,
    /// Joined rooms.
    cursors: HashMap<Arc<str>, Cursor>,
    /// Most live events held per room during a replay.
    hold_limit: usize,
    /// Interval of WebSocket pings.
    heartbeat: Duration,
    /// Events per replay query.
    page: i64,
    /// An item taken from the queue during a replay, handled after it.
    deferred: Option<Outgoing>,
    /// Set once the connection is closing: writes no longer give way to
    /// the close request.
    closing: bool,
}

impl<H: History> ConnWriter<H> {
    /// A writer for one connection.
    pub fn new(
        history: Arc<H>,
        queue: mpsc::Receiver<Outgoing>,
        closer: Arc<Closer>,
        hold_limit: usize,
        heartbeat: Duration,
    ) -> Self {
        Self {
            history,
            queue,
            closer,
            cursors: HashMap::new(),
            hold_limit,
            heartbeat,
            page: 2000,
            deferred: None,
            closing: false,
        }
    }

    /// Sets how many events one replay query reads (tests use small pages).
    #[cfg(test)]
    pub fn replay_page(mut self, events: i64) -> Self {
        self.page = events.max(1);
        self
    }

    /// Writes until the connection closes.
    pub async fn run<S>(mut self, mut sink: S, welcome: Utf8Bytes)
    where
        S: Sink<Message> + Unpin,
    {
        let result = self.serve(&mut sink, welcome).await;
        let code = match result {
            Stop::Close(code) => code,
            Stop::Gone => return,
        };
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(close::reason(code)),
        };
        let grace = match code {
            close::TOO_SLOW => {
                self.forget_queued();
                SLOW_CLOSE_GRACE
            }
            _ => CLOSE_GRACE,
        };
        let _ = tokio::time::timeout(grace, async {
            // Replies still queued (a rate-limit refusal, say) go out before
            // the close frame; a client too slow to read has none left.
            self.closing = true;
            while let Ok(item) = self.queue.try_recv() {
                if self.handle(&mut sink, item).await.is_err() {
                    break;
                }
            }
            let _ = sink.send(Message::Close(Some(frame))).await;
            let _ = sink.close().await;
        })
        .await;
    }

    /// Drops everything queued or held: a client too slow to read gets
    /// only the close frame, and it rejoins with `since`.
    fn forget_queued(&mut self) {
        self.queue.close();
        while self.queue.try_recv().is_ok() {}
        self.deferred = None;
        self.cursors = HashMap::new();
    }

    async fn serve<S>(&mut self, sink: &mut S, welcome: Utf8Bytes) -> Stop
    where
        S: Sink<Message> + Unpin,
    {
        if let Err(stop) = self.write(sink, Message::Text(welcome)).await {
            return stop;
        }
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + self.heartbeat, self.heartbeat);
        loop {
            let item = match self.deferred.take() {
                Some(item) => Some(item),
                None => tokio::select! {
                    biased;
                    code = self.closer.closed() => return Stop::Close(code),
                    item = self.queue.recv() => item,
                    _ = ping.tick() => {
                        if let Err(stop) = self.write(sink, Message::Ping(Default::default())).await {
                            return stop;
                        }
                        if let Err(stop) = self.flush(sink).await {
                            return stop;
                        }
                        continue;
                    }
                },
            };
            let Some(item) = item else {
                return Stop::Close(close::GOING_AWAY);
            };
            if let Err(stop) = self.handle(sink, item).await {
                return stop;
            }
            // Write what else is waiting in one batch, then flush once.
            for _ in 0..BATCH {
                if self.deferred.is_some() {
                    break;
                }
                match self.queue.try_recv() {
                    Ok(item) => {
                        if let Err(stop) = self.handle(sink, item).await {
                            return stop;
                        }
                    }
                    Err(_) => break,
                }
            }
            if let Err(stop) = self.flush(sink).await {
                return stop;
            }
        }
    }

    async fn handle<S>(&mut self, sink: &mut S, item: Outgoing) -> Result<(), Stop>
    where
        S: Sink<Message> + Unpin,
    {
        match item {
            Outgoing::Event(event) => self.event(sink, event).await,
            Outgoing::Frame(frame) => self.write(sink, Message::Text((*frame).clone())).await,
            Outgoing::Control(control) => match *control {
                Control::Join { room, replay } => {
                    let cursor = if replay {
                        Cursor::Holding(Vec::new())
                    } else {
                        Cursor::Live(0)
                    };
                    self.cursors.insert(room, cursor);
                    Ok(())
                }
                Control::Leave(room) => {
                    self.cursors.remove(&room);
                    Ok(())
                }
                Control::Left(room) => {
                    self.cursors.remove(&room);
                    self.write(sink, Message::Text(protocol::left(&room, "forbidden")))
                        .await
                }
                Control::Replay {
                    room,
                    after,
                    until,
                    reply,
                } => {
                    // Boxed: an idle connection should not carry a replay's state.
                    Box::pin(self.replay(sink, room, after, until, reply)).await
                }
            },
        }
    }

    /// A live event: sent when its room is live and it is new, held while
    /// the room replays, dropped when the room was left.
    async fn event<S>(&mut self, sink: &mut S, event: Arc<RoomFrame>) -> Result<(), Stop>
    where
        S: Sink<Message> + Unpin,
    {
        match self.cursors.get_mut(&event.room) {
            Some(Cursor::Live(last)) if event.seq > *last => {
                *last = event.seq;
                self.write(sink, Message::Text(event.frame.clone())).await
            }
            Some(Cursor::Holding(held)) if held.len() >= self.hold_limit => {
                metrics::counter!("rowcast_queue_overflows_total").increment(1);
                Err(Stop::Close(close::TOO_SLOW))
            }
            Some(Cursor::Holding(held)) => {
                held.push(event);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Sends a room's stored events after `after` up to `until`, then the
    /// held live events newer than those, then the join reply.
    async fn replay<S>(
        &mut self,
        sink: &mut S,
        room: Arc<str>,
        after: i64,
        until: i64,
        mut reply: Map<String, Value>,
    ) -> Result<(), Stop>
    where
        S: Sink<Message> + Unpin,
    {
        let mut last = after.max(0);
        let mut replayed = 0u64;
        let mut gap = false;
        if last < until {
            let first = self
                .history
                .page(&room, Span::until(last, until, self.page))
                .await
                .map_err(|e| replay_failed(&room, e))?;
            gap = first.gap;
            let mut more = first.more;
            let mut page = first.events;
            loop {
                if let Some(event) = page.last() {
                    last = event.seq;
                }
                // Read the next page while this one is written.
                let next = (more && last < until).then(|| {
                    let (history, room, limit) = (self.history.clone(), room.clone(), self.page);
                    let span = Span::until(last, until, limit);
                    tokio::spawn(async move { history.page(&room, span).await })
                });
                for event in &page {
                    self.write(sink, Message::Text(frame::stored_frame(&room, event)))
                        .await?;
                    replayed += 1;
                }
                let Some(next) = next else { break };
                self.flush(sink).await?;
                self.take_live_events(sink).await?;
                let next = next
                    .await
                    .map_err(|e| replay_failed(&room, e))?
                    .map_err(|e| replay_failed(&room, e))?;
                // Retention may have run between pages: never a silent hole.
                gap |= next.gap;
                more = next.more;
                page = next.events;
            }
        }
        let mut sent = until.max(last);
        if let Some(Cursor::Holding(held)) = self.cursors.remove(&room) {
            for event in held {
                if event.seq > sent {
                    sent = event.seq;
                    self.write(sink, Message::Text(event.frame.clone())).await?;
                }
            }
        }
        self.cursors.insert(room, Cursor::Live(sent));
        reply.insert("replayed".into(), replayed.into());
        if gap {
            reply.insert("gap".into(), true.into());
        }
        self.write(
            sink,
            Message::Text(Utf8Bytes::from(Value::Object(reply).to_string())),
        )
        .await
    }

    /// Between replay pages, keeps the queue moving: live events are sent
    /// (or held) at once; the first other item waits until the replay ends,
    /// so replies and controls keep their order.
    async fn take_live_events<S>(&mut self, sink: &mut S) -> Result<(), Stop>
    where
        S: Sink<Message> + Unpin,
    {
        if let Some(code) = self.closer.code() {
            return Err(Stop::Close(code));
        }
        while self.deferred.is_none() {
            match self.queue.try_recv() {
                Ok(Outgoing::Event(event)) => self.event(sink, event).await?,
                Ok(other) => self.deferred = Some(other),
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// Queues a message in the socket's buffer; gives up when asked to close.
    async fn write<S>(&mut self, sink: &mut S, message: Message) -> Result<(), Stop>
    where
        S: Sink<Message> + Unpin,
    {
        if self.closing {
            return sink.feed(message).await.map_err(|_| Stop::Gone);
        }
        tokio::select! {
            biased;
            result = sink.feed(message) => result.map_err(|_| Stop::Gone),
            code = self.closer.closed() => Err(Stop::Close(code)),
        }
    }

    async fn flush<S>(&mut self, sink: &mut S) -> Result<(), Stop>
    where
        S: Sink<Message> + Unpin,
    {
        tokio::select! {
            biased;
            result = sink.flush() => result.map_err(|_| Stop::Gone),
            code = self.closer.closed() => Err(Stop::Close(code)),
        }
    }
}

/// Stored history in memory, for tests: each room's seqs and the oldest
/// seq retention kept (a page from before it answers `gap`). The room `*`
/// stands for every room not listed.
#[cfg(test)]
pub struct MemoryHistory(pub Vec<(&'static str, Vec<i64>, i64)>);

#[cfg(test)]
impl History for MemoryHistory {
    async fn page(&self, room: &str, span: Span) -> Result<RoomPage, DbError> {
        let listed = |name: &str| self.0.iter().find(|(n, ..)| *n == name);
        let Some((_, seqs, oldest)) = listed(room).or_else(|| listed("*")) else {
            return Err(DbError::Pool(format!("no room {room} in memory")));
        };
        let matching: Vec<i64> = seqs
            .iter()
            .copied()
            .filter(|seq| *seq > span.after && span.until.is_none_or(|until| *seq <= until))
            .collect();
        let events: Vec<_> = matching
            .iter()
            .take(span.limit as usize)
            .map(|seq| Arc::new(crate::event::StoredEvent::tick(*seq, room)))
            .collect();
        Ok(RoomPage {
            more: matching.len() > events.len(),
            events,
            head: span
                .until
                .unwrap_or_else(|| seqs.last().copied().unwrap_or(0)),
            gap: span.after + 1 < *oldest,
        })
    }
}

#[cfg(test)]
mod tests;
