//! What every transport shares: the checks before a connection exists
//! ([`admit`]: origin, shutdown, per-IP connect rate, capacity, token,
//! connection caps) and running a connection to its end ([`run`]): its
//! send queue and writer task, its reader, its rooms, presence, and the
//! clean-up when it ends. `/v1/ws` and `/socket.io/` run their connections
//! through [`run`]; `/v1/sse` opens an [`Open`] connection and writes its
//! own stream.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Message;
use axum::http::StatusCode;
use futures_util::{Sink, Stream};
use tokio::sync::mpsc;

use super::auth::{AuthError, Claims};
use super::connection::{
    close, Closer, ConnQueue, ConnReader, ConnState, ConnWriter, Control, Ended, Outgoing,
    SLOW_CLOSE_GRACE,
};
use super::error::ApiError;
use super::limits::{CapExceeded, CapSlot};
use super::{Live, LiveState};
use crate::protocol::{self, Code};
use crate::room::BROADCAST;

/// How long a closing connection's writer may take (its own close grace,
/// and a margin).
const WRITER_GRACE: Duration = SLOW_CLOSE_GRACE.saturating_add(Duration::from_secs(2));

/// The way a client came in, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// `/v1/ws`.
    WebSocket,
    /// `/socket.io/`.
    SocketIo,
    /// `/v1/sse`.
    Sse,
}

impl Transport {
    /// The metrics label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::WebSocket => "ws",
            Self::SocketIo => "socketio",
            Self::Sse => "sse",
        }
    }
}

/// A client that passed every check: its verified claims and its place
/// under the connection caps (given back when it is dropped).
pub(crate) struct Admission {
    /// The verified token.
    pub claims: Claims,
    /// Its place under the caps.
    slot: CapSlot,
}

/// Checks a client before any connection state exists. The order is the
/// cheapest refusal first, and the token before the caps, so that an
/// invalid token never takes a user's place.
pub(crate) fn admit(
    state: &LiveState,
    ip: IpAddr,
    origin: Option<&str>,
    token: Option<String>,
) -> Result<Admission, ApiError> {
    if !state.config.cors.allows(origin) {
        return Err(ApiError::forbidden("origin not allowed"));
    }
    if state.shutdown.is_triggered() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Code::Internal,
            "shutting down",
        ));
    }
    if !state.connects.allow(ip) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            Code::RateLimited,
            "too many connections from this address",
        ));
    }
    if state.hub.connection_count() >= state.config.limits.max_connections {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Code::Internal,
            "too many connections",
        ));
    }
    let claims = token
        .ok_or(AuthError::Missing)
        .and_then(|t| state.verifier.verify(&t))
        .map_err(|e| ApiError::unauthorized(e.to_string()))?;
    let slot = state
        .caps
        .admit(&claims.sub, claims.service, ip)
        .map_err(|cap| {
            let message = match cap {
                CapExceeded::User => "too many open connections for this user",
                CapExceeded::Ip => "too many open connections from this address",
            };
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, Code::RateLimited, message)
        })?;
    Ok(Admission { claims, slot })
}

/// An open connection as the rest of the relay sees it: registered with the
/// hub (and so with shutdown), with the access re-check and with presence.
/// Dropping it leaves its rooms, and gives back its place under the caps.
pub(crate) struct Open {
    /// Everything shared.
    state: Live,
    /// The connection: queue, claims, rooms.
    pub conn: Arc<ConnState>,
    /// Presence was told the connection closed.
    gone: bool,
    /// Its place under the caps.
    _slot: CapSlot,
}

impl Open {
    /// Registers a new connection; returns it and its send queue's
    /// receiving end (for the writer).
    pub(crate) fn new(
        state: Live,
        admission: Admission,
        transport: Transport,
    ) -> (Self, mpsc::Receiver<Outgoing>) {
        let Admission { claims, slot } = admission;
        let conn = state.hub.next_conn();
        let (queue, rx) = ConnQueue::new(conn, state.config.limits.send_queue);
        state.hub.connect(conn, queue.clone());
        metrics::counter!("rowcast_connections_opened_total", "transport" => transport.as_str())
            .increment(1);
        tracing::debug!(conn, user = %claims.sub, service = claims.service, transport = transport.as_str(), "connection opened");
        if !claims.service {
            state.presence.opened(&claims.sub);
        }
        let conn = ConnState::new(queue, claims);
        state.connections.insert(conn.clone());
        let open = Self {
            state,
            conn,
            gone: false,
            _slot: slot,
        };
        (open, rx)
    }

    /// The connection's id.
    pub(crate) fn id(&self) -> u64 {
        self.conn.conn()
    }

    /// Joins `broadcast`, as every WebSocket and Socket.IO connection does.
    pub(crate) fn join_broadcast(&self) {
        let queue = &self.conn.queue;
        queue.offer(Outgoing::from(Control::Join {
            room: Arc::from(BROADCAST),
            replay: false,
        }));
        self.state.hub.join(BROADCAST, queue.member());
    }

    /// Tells presence the user's connection is gone (once): as soon as it
    /// is closing, even while a close frame still waits for a slow client.
    pub(crate) fn closing(&mut self) {
        if !std::mem::replace(&mut self.gone, true) {
            let claims = self.conn.claims();
            if !claims.service {
                self.state.presence.closed(&claims.sub);
            }
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.closing();
        let conn = self.id();
        for room in self.conn.take_rooms() {
            self.state.hub.leave(&room, conn);
        }
        self.state.hub.leave(BROADCAST, conn);
        self.state.connections.remove(conn);
        self.state.hub.disconnect(conn);
        tracing::debug!(
            conn,
            code = self.conn.queue.closer.code(),
            "connection closed"
        );
    }
}

/// Runs one connection to its end over a sink and `stream` (the socket's
/// two halves, or a transport's stand-ins that carry protocol v1 frames):
/// a writer task, and the reader in this task. When the reader ends the
/// writer is closed, and aborted if it cannot finish. `sink` makes the
/// sink given the connection's closer.
pub(crate) async fn run<S, R, E>(
    state: Live,
    admission: Admission,
    transport: Transport,
    sink: impl FnOnce(Arc<Closer>) -> S,
    stream: R,
) where
    S: Sink<Message> + Unpin + Send + 'static,
    R: Stream<Item = Result<Message, E>> + Unpin,
    E: Into<axum::BoxError>,
{
    let (mut open, rx) = Open::new(state.clone(), admission, transport);
    let closer = open.conn.queue.closer.clone();
    let claims = open.conn.claims();
    let welcome = protocol::welcome(
        open.id(),
        &claims.sub,
        state.hub.head(),
        state.config.heartbeat.as_millis() as u64,
    );
    open.join_broadcast();
    let writer = ConnWriter::new(
        state.reads.clone(),
        rx,
        closer.clone(),
        state.config.limits.send_queue,
        state.config.heartbeat,
    );
    let mut writer = tokio::spawn(writer.run(sink(closer.clone()), welcome));
    let reader = ConnReader::new(
        open.conn.clone(),
        state.hub.clone(),
        state.reads.clone(),
        state.verifier.clone(),
        state.reader.clone(),
    );
    let (ended, writer_done) = tokio::select! {
        ended = reader.run(stream) => (ended, false),
        _ = &mut writer => (Ended::ByClient, true),
    };
    match ended {
        Ended::Close(code) => closer.close(code),
        Ended::ByClient => closer.close(close::GOING_AWAY),
    }
    open.closing();
    if !writer_done
        && tokio::time::timeout(WRITER_GRACE, &mut writer)
            .await
            .is_err()
    {
        writer.abort();
    }
}
