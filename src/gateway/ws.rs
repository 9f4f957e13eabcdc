//! `GET /v1/ws`: refusals before the upgrade (origin 403, per-IP connect
//! rate 429, capacity 503, token 401), then one connection: a writer task
//! and the reader (this task); when the reader ends the writer is closed,
//! and aborted if it cannot finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use super::auth::{token_from, AuthError, Claims};
use super::connection::SLOW_CLOSE_GRACE;
use super::connection::{
    close, ConnQueue, ConnReader, ConnState, ConnWriter, Control, Ended, Outgoing,
};
use super::error::ApiError;
use super::limits::{CapExceeded, CapSlot};
use super::Shared;
use crate::protocol::{self, Code};
use crate::room::BROADCAST;

/// Bytes of the socket's read buffer (tungstenite allocates it up front;
/// its default of 128 KiB per connection would dominate idle memory).
const READ_BUFFER: usize = 4096;
/// Bytes written before the socket buffer is flushed without a flush call.
const WRITE_BUFFER: usize = 16 * 1024;
/// Bytes the socket buffer may hold for a client that stopped reading;
/// past this, writes wait and the send queue fills.
const MAX_WRITE_BUFFER: usize = 1024 * 1024;
/// How long a closing connection's writer may take (its own close grace,
/// and a margin).
const WRITER_GRACE: Duration = SLOW_CLOSE_GRACE.saturating_add(Duration::from_secs(2));

/// Checks an upgrade request and upgrades it.
pub(super) async fn upgrade(
    State(state): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    match admit(&state, peer, query.as_deref(), &headers) {
        Ok((claims, slot)) => {
            let max = state.config.limits.max_frame_bytes;
            ws.read_buffer_size(READ_BUFFER)
                .write_buffer_size(WRITE_BUFFER)
                .max_write_buffer_size(MAX_WRITE_BUFFER)
                .max_message_size(max)
                .max_frame_size(max)
                .on_upgrade(move |socket| connection(state, claims, slot, socket))
        }
        Err(error) => error.into_response(),
    }
}

fn admit(
    state: &Shared,
    peer: SocketAddr,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<(Claims, CapSlot), ApiError> {
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
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
    if !state.connects.allow(peer.ip()) {
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
    let token = token_from(headers, query).ok_or(AuthError::Missing);
    let claims = token
        .and_then(|t| state.verifier.verify(&t))
        .map_err(|e| ApiError::unauthorized(e.to_string()))?;
    let slot = state
        .caps
        .admit(&claims.sub, claims.service, peer.ip())
        .map_err(|cap| {
            let message = match cap {
                CapExceeded::User => "too many open connections for this user",
                CapExceeded::Ip => "too many open connections from this address",
            };
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, Code::RateLimited, message)
        })?;
    Ok((claims, slot))
}

/// Runs one connection to its end; its place under the connection caps
/// (`_slot`) is given back when it returns.
async fn connection(state: Arc<Shared>, claims: Claims, _slot: CapSlot, socket: WebSocket) {
    let (sink, stream) = socket.split();
    let conn = state.hub.next_conn();
    let (queue, rx) = ConnQueue::new(conn, state.config.limits.send_queue);
    let closer = queue.closer.clone();
    state.hub.connect(conn, queue.clone());
    let user = claims.sub.clone();
    let service = claims.service;
    tracing::debug!(conn, user = %user, service, "connection opened");
    if !service {
        state.presence.opened(&user);
    }
    let welcome = protocol::welcome(
        conn,
        &user,
        state.hub.head(),
        state.config.heartbeat.as_millis() as u64,
    );
    queue.offer(Outgoing::from(Control::Join {
        room: Arc::from(BROADCAST),
        replay: false,
    }));
    state.hub.join(BROADCAST, queue.member());
    let writer = ConnWriter::new(
        state.database.clone(),
        rx,
        closer.clone(),
        state.config.limits.send_queue,
        state.config.heartbeat,
    );
    let mut writer = tokio::spawn(writer.run(sink, welcome));
    let conn_state = ConnState::new(queue, claims);
    state.connections.insert(conn_state.clone());
    let reader = ConnReader::new(
        conn_state,
        state.hub.clone(),
        state.database.clone(),
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
    // The user is gone as soon as the connection is closing, even while a
    // close frame still waits for a slow client.
    if !service {
        state.presence.closed(&user);
    }
    if !writer_done
        && tokio::time::timeout(WRITER_GRACE, &mut writer)
            .await
            .is_err()
    {
        writer.abort();
    }
    state.connections.remove(conn);
    state.hub.disconnect(conn);
    tracing::debug!(conn, code = closer.code(), "connection closed");
}
