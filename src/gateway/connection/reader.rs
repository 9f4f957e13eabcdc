//! The receive half of a connection: reads client frames, enforces the
//! limits, and answers `join`, `leave`, `emit`, `auth` and `ping`. It never
//! writes to the socket itself; everything goes through the connection's
//! send queue to its [`ConnWriter`](super::writer::ConnWriter). It is generic over
//! the `Stream` and the authorization rule, so it is tested with channels.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Message;
use futures_util::{Stream, StreamExt};
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::close;
use super::{ConnQueue, ConnState, Control, Outgoing};
use crate::config::Limits;
use crate::db::DbError;
use crate::duration::sleep_until;
use crate::fanout::Hub;
use crate::gateway::auth::{Claims, Verifier};
use crate::gateway::limits::{ConnectionLimits, Kind};
use crate::protocol::{self, Code, Refusal, Request};
use crate::room::{is_room_name, BROADCAST};

/// The SQL authorization rule (or a stand-in in tests).
pub trait Authorize: Send + Sync + 'static {
    /// Whether the token's holder may join `room`.
    fn authorize(
        &self,
        claims: &Claims,
        room: &str,
    ) -> impl Future<Output = Result<bool, DbError>> + Send;
}

/// Settings every connection shares.
pub struct ReaderConfig {
    /// Per-connection limits.
    pub limits: Limits,
    /// Heartbeat interval; two missed ones end the connection.
    pub heartbeat: Duration,
    /// Event names clients may emit.
    pub client_events: Vec<String>,
    /// Emits throttled per sender and room (typing indicators).
    pub throttled_events: Vec<String>,
}

/// A throttled emit: when the last one went out, and what waits.
struct Throttle {
    /// Last delivery.
    last: Instant,
    /// The latest held payload and how many emits it stands for.
    pending: Option<(Map<String, Value>, u32)>,
}

/// One connection's reader.
pub struct ConnReader<A> {
    /// This connection: its send queue, claims and joined rooms.
    conn: Arc<ConnState>,
    /// Its send queue (and its closer).
    queue: Arc<ConnQueue>,
    /// Verified claims (replaced by `auth`).
    claims: Claims,
    /// Rooms and fanout.
    hub: Arc<Hub>,
    /// The authorization rule.
    authorizer: Arc<A>,
    /// Token verification for `auth`.
    verifier: Arc<Verifier>,
    /// Shared settings.
    config: Arc<ReaderConfig>,
    /// Rate limiters.
    limits: ConnectionLimits,
    /// Throttled emits per (room, event).
    throttles: HashMap<(Arc<str>, String), Throttle>,
}

/// How reading ended, for the connection to finish up.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The client closed or went away.
    ByClient,
    /// The relay closes it with this code.
    Close(u16),
}

impl<A: Authorize> ConnReader<A> {
    /// The reader of a connection that is already in `broadcast`.
    pub fn new(
        conn: Arc<ConnState>,
        hub: Arc<Hub>,
        authorizer: Arc<A>,
        verifier: Arc<Verifier>,
        config: Arc<ReaderConfig>,
    ) -> Self {
        let limits = ConnectionLimits::new(&config.limits);
        Self {
            queue: conn.queue.clone(),
            claims: conn.claims(),
            conn,
            hub,
            authorizer,
            verifier,
            config,
            limits,
            throttles: HashMap::new(),
        }
    }

    /// Reads frames until the connection ends, then leaves every room.
    pub async fn run<S, E>(mut self, mut stream: S) -> Ended
    where
        S: Stream<Item = Result<Message, E>> + Unpin,
        E: Into<axum::BoxError>,
    {
        let idle = self.config.heartbeat * 2 + Duration::from_secs(5);
        let mut last_seen = Instant::now();
        let ended = loop {
            let expires = expiry(self.claims.exp);
            let flush_at = self.next_throttle_flush();
            tokio::select! {
                message = stream.next() => match message {
                    Some(Ok(Message::Text(text))) => {
                        last_seen = Instant::now();
                        if let Some(code) = self.on_text(&text).await {
                            break Ended::Close(code);
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        last_seen = Instant::now();
                        self.refuse(None, Refusal::new(Code::BadRequest, "binary frames are not supported"));
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => last_seen = Instant::now(),
                    Some(Ok(Message::Close(_))) | None => break Ended::ByClient,
                    Some(Err(e)) => {
                        break match is_too_big(e.into()) {
                            true => Ended::Close(close::TOO_BIG),
                            false => Ended::ByClient,
                        };
                    }
                },
                _ = tokio::time::sleep_until(expires) => break Ended::Close(close::TOKEN_EXPIRED),
                _ = tokio::time::sleep_until(last_seen + idle) => break Ended::ByClient,
                code = self.queue.closer.closed() => break Ended::Close(code),
                _ = sleep_until(flush_at) => self.flush_throttles(),
            }
        };
        ended
    }

    /// Handles one text frame; returns a close code when the connection
    /// must end.
    async fn on_text(&mut self, text: &str) -> Option<u16> {
        if !self.limits.allow(Kind::Frame) {
            return self.rate_limited(None);
        }
        let frame = protocol::parse(text);
        let reference = frame.reference;
        let request = match frame.request {
            Ok(request) => request,
            Err(refusal) => {
                self.refuse(reference.as_ref(), refusal);
                return None;
            }
        };
        let result = match request {
            Request::Join { room, since } => {
                // Boxed: an idle connection should not carry a query's state.
                Box::pin(self.join(reference.as_ref(), room, since)).await
            }
            Request::Leave { room } => self.leave(reference.as_ref(), &room),
            Request::Emit { room, event, data } => {
                self.emit(reference.as_ref(), &room, event, data)
            }
            Request::Auth { token } => Box::pin(self.auth(reference.as_ref(), &token)).await,
            Request::Ping => {
                self.send(protocol::pong(reference.as_ref()));
                Ok(())
            }
        };
        match result {
            Ok(()) => None,
            Err(refusal) if refusal.code == Code::RateLimited => {
                self.rate_limited(reference.as_ref())
            }
            // Probing rooms one is refused is abuse like flooding.
            Err(refusal) if refusal.code == Code::Forbidden && self.limits.strike() => {
                self.refuse(reference.as_ref(), refusal);
                Some(close::RATE_LIMITED)
            }
            Err(refusal) => {
                self.refuse(reference.as_ref(), refusal);
                None
            }
        }
    }

    fn rate_limited(&mut self, reference: Option<&Value>) -> Option<u16> {
        if self.limits.strike() {
            return Some(close::RATE_LIMITED);
        }
        self.refuse(
            reference,
            Refusal::new(Code::RateLimited, "rate limit exceeded; slow down"),
        );
        None
    }

    async fn join(
        &mut self,
        reference: Option<&Value>,
        room: String,
        since: Option<i64>,
    ) -> Result<(), Refusal> {
        if !is_room_name(&room) {
            metrics::counter!("rowcast_joins_total", "result" => "bad_request").increment(1);
            return Err(Refusal::new(
                Code::BadRequest,
                "invalid room name (1-200 characters from A-Z a-z 0-9 _ . : @ -)",
            ));
        }
        if !self.limits.allow(Kind::Join) {
            return Err(Refusal::new(Code::RateLimited, "too many joins"));
        }
        let mut fields = Map::new();
        fields.insert("room".into(), room.clone().into());
        if room == BROADCAST || self.conn.joined(&room).is_some() {
            fields.insert("head".into(), self.hub.head().into());
            fields.insert("replayed".into(), 0.into());
            self.send(protocol::ok(reference, fields));
            return Ok(());
        }
        if self.conn.room_count() >= self.config.limits.max_rooms {
            return Err(Refusal::new(Code::BadRequest, "too many rooms joined"));
        }
        match self.authorizer.authorize(&self.claims, &room).await {
            Ok(true) => {}
            Ok(false) => {
                metrics::counter!("rowcast_joins_total", "result" => "forbidden").increment(1);
                return Err(Refusal::new(
                    Code::Forbidden,
                    "not allowed to join this room",
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, "authorization failed");
                return Err(Refusal::new(
                    Code::Internal,
                    "authorization is unavailable; try again",
                ));
            }
        }
        metrics::counter!("rowcast_joins_total", "result" => "ok").increment(1);
        tracing::debug!(conn = self.queue.conn, %room, since, "joined");
        // Order matters: the writer holds the room's live events before the
        // hub can send any, and the head is read after subscribing, so the
        // replay up to it and the live events together miss nothing.
        let name: Arc<str> = Arc::from(room.as_str());
        self.control(Control::Join {
            room: name.clone(),
            replay: since.is_some(),
        });
        let name = self.hub.join(&room, self.queue.member());
        let head = self.hub.head();
        fields.insert("head".into(), head.into());
        match since {
            Some(since) => self.control(Control::Replay {
                room: name.clone(),
                after: since,
                until: head,
                reply: protocol::ok_object(reference, fields),
            }),
            None => {
                fields.insert("replayed".into(), 0.into());
                self.send(protocol::ok(reference, fields));
            }
        }
        self.conn.add_room(name);
        Ok(())
    }

    fn leave(&mut self, reference: Option<&Value>, room: &str) -> Result<(), Refusal> {
        if !is_room_name(room) {
            return Err(Refusal::new(Code::BadRequest, "invalid room name"));
        }
        let Some(name) = self.conn.take_room(room) else {
            return Err(Refusal::new(Code::NotFound, "not in this room"));
        };
        self.hub.leave(room, self.queue.conn);
        self.control(Control::Leave(name));
        let mut fields = Map::new();
        fields.insert("room".into(), room.into());
        self.send(protocol::ok(reference, fields));
        Ok(())
    }

    fn emit(
        &mut self,
        reference: Option<&Value>,
        room: &str,
        event: String,
        data: Map<String, Value>,
    ) -> Result<(), Refusal> {
        if !is_room_name(room) {
            return Err(Refusal::new(Code::BadRequest, "invalid room name"));
        }
        if !self.config.client_events.contains(&event) {
            return Err(Refusal::new(
                Code::Forbidden,
                "this event name cannot be emitted",
            ));
        }
        // Everyone is in `broadcast`; only a trusted backend may emit there.
        let broadcast = (room == BROADCAST && self.claims.service).then(|| Arc::from(room));
        let Some(name) = self.conn.joined(room).or(broadcast) else {
            return Err(Refusal::new(
                Code::Forbidden,
                "join the room before emitting to it",
            ));
        };
        if !self.limits.allow(Kind::Emit) {
            return Err(Refusal::new(Code::RateLimited, "too many emits"));
        }
        let mut fields = Map::new();
        if self.config.throttled_events.contains(&event)
            && self.hold_if_throttled(&name, &event, &data)
        {
            fields.insert("throttled".into(), true.into());
        } else {
            let frame = protocol::ephemeral(room, &event, &self.claims.sub, &data, 1);
            self.hub.emit(room, frame, self.queue.conn);
        }
        self.send(protocol::ok(reference, fields));
        Ok(())
    }

    /// Keeps a throttled emit for later when one went out recently; returns
    /// whether it was held.
    fn hold_if_throttled(
        &mut self,
        room: &Arc<str>,
        event: &str,
        data: &Map<String, Value>,
    ) -> bool {
        let window = self.config.limits.typing_throttle;
        let now = Instant::now();
        let throttle = self
            .throttles
            .entry((room.clone(), event.to_string()))
            .or_insert(Throttle {
                last: now - window,
                pending: None,
            });
        if now.duration_since(throttle.last) >= window && throttle.pending.is_none() {
            throttle.last = now;
            return false;
        }
        let count = throttle.pending.as_ref().map_or(0, |(_, c)| *c) + 1;
        throttle.pending = Some((data.clone(), count));
        true
    }

    fn next_throttle_flush(&self) -> Option<Instant> {
        let window = self.config.limits.typing_throttle;
        self.throttles
            .values()
            .filter(|t| t.pending.is_some())
            .map(|t| t.last + window)
            .min()
    }

    /// Sends held emits whose window passed, each with the latest payload
    /// and how many emits it stands for.
    fn flush_throttles(&mut self) {
        let window = self.config.limits.typing_throttle;
        let now = Instant::now();
        let mut due = Vec::new();
        for ((room, event), throttle) in self.throttles.iter_mut() {
            if throttle.pending.is_some() && now.duration_since(throttle.last) >= window {
                if let Some((data, count)) = throttle.pending.take() {
                    throttle.last = now;
                    due.push((room.clone(), event.clone(), data, count));
                }
            }
        }
        self.throttles
            .retain(|_, t| t.pending.is_some() || now.duration_since(t.last) < window);
        for (room, event, data, count) in due {
            let frame = protocol::ephemeral(&room, &event, &self.claims.sub, &data, count);
            self.hub.emit(&room, frame, self.queue.conn);
        }
    }

    async fn auth(&mut self, reference: Option<&Value>, token: &str) -> Result<(), Refusal> {
        let claims = self
            .verifier
            .verify(token)
            .map_err(|e| Refusal::new(Code::Unauthorized, e.to_string()))?;
        if claims.sub != self.claims.sub {
            return Err(Refusal::new(
                Code::Unauthorized,
                "the new token is for another user",
            ));
        }
        let mut fields = Map::new();
        fields.insert("exp".into(), claims.exp.into());
        self.conn.set_claims(claims.clone());
        self.claims = claims;
        // The new token may carry other claims: every joined room is
        // authorized again, and those refused are left.
        for room in self.conn.rooms() {
            if let Ok(false) = self.authorizer.authorize(&self.claims, &room).await {
                self.conn.revoke(&self.hub, &room);
            }
        }
        self.send(protocol::ok(reference, fields));
        Ok(())
    }

    fn refuse(&self, reference: Option<&Value>, refusal: Refusal) {
        self.send(protocol::error(reference, &refusal));
    }

    fn send(&self, frame: axum::extract::ws::Utf8Bytes) {
        self.queue.offer(Outgoing::frame(frame));
    }

    fn control(&self, control: Control) {
        self.queue.offer(Outgoing::from(control));
    }
}

impl<A> Drop for ConnReader<A> {
    /// Leaves every room, however the connection ended (also when the
    /// connection's writer failed first and the reader was dropped).
    fn drop(&mut self) {
        for room in self.conn.take_rooms() {
            self.hub.leave(&room, self.queue.conn);
        }
        self.hub.leave(BROADCAST, self.queue.conn);
    }
}

/// When a token with this `exp` expires.
pub(crate) fn expiry(exp: u64) -> Instant {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let left = (exp as f64 - now).clamp(0.0, 86_400.0 * 365.0);
    Instant::now() + Duration::from_secs_f64(left)
}

/// Whether a read error means the client sent a frame over the size limit.
fn is_too_big(error: axum::BoxError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error.as_ref());
    while let Some(e) = source {
        if let Some(tungstenite::Error::Capacity(_)) = e.downcast_ref::<tungstenite::Error>() {
            return true;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests;
